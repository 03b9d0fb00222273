//! The real `counter-app` binary as a child process: start-up refusals, SIGTERM, SIGKILL in
//! the middle of a load, and storage failures.
//!
//! Storage failures are injected from outside the process, for real, with no test hook in
//! the app (tests run as root, which ignores permission bits, so `chmod -w` proves nothing):
//!
//! * **Directory gone** (works for any user): the data directory is renamed away and a
//!   plain file put in its place, so every write of the count fails with `ENOTDIR`, as when
//!   a volume disappears under the app; putting the directory back is the recovery.
//! * **Disk full and read-only volume** (needs `CAP_SYS_ADMIN`, else skipped with a
//!   message): the data directory is a small tmpfs mount; filling it gives `ENOSPC`,
//!   `mount -o remount,ro` gives `EROFS`, exactly the errors a real PVC produces.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Http, binary, start, start_binary, stored, visit_number};
use http::{Method, StatusCode};

#[test]
fn help_lists_every_flag_and_its_environment_variable() {
    let output = binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for text in [
        "--listen",
        "COUNTER_LISTEN",
        "--visits-file",
        "COUNTER_VISITS_FILE",
        "--time-zone",
        "COUNTER_TIME_ZONE",
        "POD_NAME",
        "naive",
    ] {
        assert!(help.contains(text), "{text} missing from --help:\n{help}");
    }
}

fn assert_refused_and_untouched(path: &Path, contents: &[u8], expect: &[&str]) {
    let started = start_binary(path, &[]);
    let (status, output) = started.exited();
    assert!(!status.success(), "{status}");
    assert!(
        output.contains(&path.display().to_string()),
        "the message does not name {}:\n{output}",
        path.display()
    );
    for text in expect {
        assert!(output.contains(text), "{text:?} missing from:\n{output}");
    }
    assert_eq!(fs::read(path).unwrap(), contents, "the file was modified");
}

#[test]
fn corrupt_or_unreadable_file_stops_start_up_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let visits = dir.path().join("visits");
    for (contents, expect) in [
        (&b"12abc\n"[..], "12abc"),
        (b"", "empty"),
        (b"99999999999999999999999\n", "larger than"),
        (b"\x00\x01\x02\x03", "\\x00"),
    ] {
        fs::write(&visits, contents).unwrap();
        assert_refused_and_untouched(&visits, contents, &[expect, "left untouched"]);
    }

    // A directory where the file should be cannot be read, even by root.
    fs::remove_file(&visits).unwrap();
    fs::create_dir(&visits).unwrap();
    let (status, output) = start_binary(&visits, &[]).exited();
    assert!(!status.success());
    assert!(
        output.contains("cannot read the visit count from"),
        "{output}"
    );
    assert!(output.contains(&visits.display().to_string()), "{output}");
    assert!(visits.is_dir());
}

#[test]
fn missing_data_directory_stops_start_up_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let unmounted = dir.path().join("data");
    let (status, output) = start_binary(&unmounted.join("visits"), &[]).exited();
    assert!(!status.success());
    assert!(
        output.contains(&unmounted.display().to_string()),
        "{output}"
    );
    assert!(output.contains("does not exist"), "{output}");
    assert!(!unmounted.exists());
}

#[test]
fn unknown_time_zone_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (status, output) = start_binary(
        &dir.path().join("visits"),
        &["--time-zone", "Europe/Atlantis"],
    )
    .exited();
    assert!(!status.success());
    assert!(output.contains("Europe/Atlantis"), "{output}");
}

#[test]
fn configured_by_environment_and_sigterm_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let visits = dir.path().join("visits");
    let mut command = binary();
    command
        .env("COUNTER_LISTEN", "127.0.0.1:0")
        .env("COUNTER_VISITS_FILE", &visits)
        .env("COUNTER_TIME_ZONE", "Asia/Tokyo")
        .env("POD_NAME", "web-3");
    let app = start(command).serving();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for expected in 1..=3 {
            let page = app.http.get("/").await;
            assert_eq!(visit_number(&page.body), expected);
            assert!(page.body.contains("Asia/Tokyo"), "{}", page.body);
            assert_eq!(page.headers["x-pod-name"], "web-3");
        }
    });
    app.terminate();
    let (status, log) = app.wait(Duration::from_secs(20));
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("visit count flushed"), "{log}");
    assert_eq!(stored(&visits), 3);
}

/// Loads `http` with `clients` tasks until `stop`; counts requests sent and 200s received.
fn load(
    runtime: &tokio::runtime::Runtime,
    http: &Http,
    clients: usize,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
    ok: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let http = Http::new(http.addr);
            let (stop, sent, ok) = (Arc::clone(stop), Arc::clone(sent), Arc::clone(ok));
            runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    match http.send(Method::GET, "/", &[]).await {
                        Ok(reply) if reply.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(reply) => panic!("unexpected answer {reply:?}"),
                        // The server was killed.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect()
}

#[test]
fn sigkill_mid_load_never_loses_an_acknowledged_visit() {
    let dir = tempfile::tempdir().unwrap();
    let visits = dir.path().join("visits");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    for round in 1..=3 {
        let app = start_binary(&visits, &[]).serving();
        let before = runtime.block_on(app.http.count());
        let stop = Arc::new(AtomicBool::new(false));
        let ok_before = ok.load(Ordering::SeqCst);
        let clients = load(&runtime, &app.http, 32, &stop, &sent, &ok);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ok.load(Ordering::SeqCst) < ok_before + 300 {
            assert!(std::time::Instant::now() < deadline, "no load got through");
            std::thread::sleep(Duration::from_millis(2));
        }
        app.kill();
        stop.store(true, Ordering::SeqCst);
        runtime.block_on(async {
            for client in clients {
                client.await.unwrap();
            }
        });

        // The file is whole (the restart below would refuse a torn one) and within bounds.
        let count = stored(&visits);
        let (ok, sent) = (ok.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
        assert!(
            ok <= count && count <= sent,
            "round {round}: stored {count}, but {ok} visits got 200 and {sent} were sent"
        );
        assert!(count > before, "round {round}: nothing stored");
    }
    let app = start_binary(&visits, &[]).serving();
    assert_eq!(runtime.block_on(app.http.count()), stored(&visits));
}

/// Checks that visits and readiness fail with `expect` in the message while `broken`, the
/// count stays put, and both recover after `repair`.
fn fails_then_recovers(
    runtime: &tokio::runtime::Runtime,
    http: &Http,
    visits: &Path,
    expect: &str,
    broken: &dyn Fn(),
    repair: &dyn Fn(),
) {
    runtime.block_on(async {
        let count = http.count().await;
        assert_eq!(http.get("/readyz").await.status, StatusCode::OK);
        broken();
        for _ in 0..3 {
            let refused = http.get("/").await;
            assert_eq!(
                refused.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{refused:?}"
            );
            assert!(
                refused.body.contains(expect),
                "{expect:?} not in {}",
                refused.body
            );
            assert!(
                refused.body.contains(&format!("stays at {count}")),
                "{}",
                refused.body
            );
            assert!(refused.headers.contains_key("x-pod-name"));
        }
        let ready = http.get("/readyz").await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
        assert!(ready.body.contains(expect), "{}", ready.body);
        // Liveness is about the process, not the disk: restarting would not help.
        assert_eq!(http.get("/healthz").await.status, StatusCode::OK);
        assert_eq!(http.count().await, count, "a failed visit was counted");

        repair();
        assert_eq!(http.get("/readyz").await.status, StatusCode::OK);
        let page = http.get("/").await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        assert_eq!(visit_number(&page.body), count + 1);
        assert_eq!(stored(visits), count + 1);
    });
}

#[test]
fn data_directory_gone_gives_503_then_recovers() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let moved = root.path().join("data.moved");
    fs::create_dir(&data).unwrap();
    let visits = data.join("visits");
    let app = start_binary(&visits, &[]).serving();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(app.http.get("/"));

    fails_then_recovers(
        &runtime,
        &app.http,
        &visits,
        "Not a directory",
        &|| {
            fs::rename(&data, &moved).unwrap();
            fs::write(&data, "not a directory").unwrap();
        },
        &|| {
            fs::remove_file(&data).unwrap();
            fs::rename(&moved, &data).unwrap();
        },
    );
    assert!(app.log().contains("storage recovered"), "{}", app.log());
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Option<Self> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "counter-app-test"])
            .arg(at)
            .output()
            .ok()?;
        mounted.status.success().then(|| Self(at.to_owned()))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status();
        if !matches!(unmounted, Ok(status) if status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn full_or_read_only_volume_gives_503_then_recovers() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    fs::create_dir(&data).unwrap();
    let Some(volume) = Tmpfs::mount(&data) else {
        eprintln!(
            "SKIPPED full_or_read_only_volume_gives_503_then_recovers: cannot mount a tmpfs \
             (needs root with CAP_SYS_ADMIN); data_directory_gone_gives_503_then_recovers \
             covers the failure path without privileges"
        );
        return;
    };
    let visits = data.join("visits");
    let filler = data.join("filler");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    {
        let app = start_binary(&visits, &[]).serving();
        runtime.block_on(app.http.get("/"));

        fails_then_recovers(
            &runtime,
            &app.http,
            &visits,
            "No space left on device",
            &|| {
                use std::io::Write;
                let mut file = fs::File::create(&filler).unwrap();
                let block = [b'x'; 4096];
                while file.write_all(&block).is_ok() {}
                let _ = file.sync_all();
            },
            &|| fs::remove_file(&filler).unwrap(),
        );
        fails_then_recovers(
            &runtime,
            &app.http,
            &visits,
            "Read-only file system",
            &|| volume.remount("ro"),
            &|| volume.remount("rw"),
        );
        runtime.block_on(async {
            let metrics = app.http.get("/metrics").await.body;
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with("counter_app_commit_failures_total ")
                        && !l.ends_with(" 0")),
                "{metrics}"
            );
        });
        app.terminate();
        let (status, log) = app.wait(Duration::from_secs(20));
        assert!(status.success(), "{log}");
        assert!(log.contains("the data volume is full"), "{log}");
    }
    drop(volume);
}
