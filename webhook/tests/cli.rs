//! The `stsguard` binary as a user runs it: start-up refusals, graceful shutdown,
//! and `eval` on the example manifests.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{config_text, fixture, repo, stsguard};

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(&path, config_text(yaml)).unwrap();
    path
}

/// Runs `stsguard serve` with this config in `dir`, expecting it to refuse to
/// start; returns what it said.
fn serve_refusal(dir: &Path, yaml: &str) -> String {
    let config = write_config(dir, yaml);
    let output = stsguard()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-dir"])
        .arg(dir.join("tls"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_refuses_to_start_with_invalid_settings_naming_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = serve_refusal(
        dir.path(),
        "policies: [{name: picky, module: SCRIPTED, settings: {behaviour: dance}}]",
    );
    assert!(
        stderr.contains("policy `picky`") && stderr.contains("unknown behaviour `dance`"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_module_that_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("junk.wasm"),
        b"\0asm\x01\0\0\0 but nothing else",
    )
    .unwrap();
    let stderr = serve_refusal(dir.path(), "policies: [{name: junk, module: junk.wasm}]");
    assert!(
        stderr.contains("policy `junk`")
            && stderr.contains("not a stsguard policy: it is not valid WebAssembly"),
        "{stderr}"
    );
}

#[test]
fn serve_rejects_a_bad_config_file_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "policies: {oops");
    let output = stsguard()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
}

/// A running `stsguard serve` and the port it chose.
struct Serving {
    child: Child,
    port: u16,
    ca: PathBuf,
}

/// Runs `stsguard serve` with this config in `dir` and these extra arguments.
fn serve(dir: &Path, yaml: &str, extra: &[&str]) -> Serving {
    let config = write_config(dir, yaml);
    let tls = dir.join("tls");
    let mut child = stsguard()
        .args([
            "serve",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
        ])
        .arg(&tls)
        .arg("--config")
        .arg(&config)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && let Some(address) = event["address"].as_str()
            {
                let _ = sender.send(address.rsplit(':').next().unwrap().parse::<u16>().unwrap());
            }
        }
    });
    let port = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs its address");
    Serving {
        child,
        port,
        ca: tls.join("ca.crt"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_reviews_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut serving = serve(
        dir.path(),
        "policies: [{name: slow, module: SCRIPTED, timeout: 1s, failurePolicy: ignore, settings: {behaviour: loop}}]",
        &["--drain-delay", "0s"],
    );
    let client = support::client_trusting(&serving.ca, false);
    let url = format!("https://127.0.0.1:{}", serving.port);
    support::eventually("the server is ready", || async {
        matches!(client.get(format!("{url}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    let review = fixture("reviews/lab-statefulset.create.json");
    let in_flight = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(format!("{url}/mutate"))
                .json(&review)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &serving.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let answer = in_flight
        .await
        .unwrap()
        .expect("the in-flight review is answered");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], true);
    let status = tokio::task::spawn_blocking(move || serving.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// What a roll-out needs: on SIGTERM the pod turns not ready at once, but goes
/// on accepting connections and answering reviews for the drain delay (the API
/// server sends reviews until the endpoint update reaches it), then exits 0.
/// The order is asserted, not the times.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_turns_not_ready_answers_through_the_drain_delay_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut serving = serve(
        dir.path(),
        "policies: [{name: labeller, module: SCRIPTED, settings: {behaviour: label, key: team, value: storage}}]",
        &["--drain-delay", "5s"],
    );
    let url = format!("https://127.0.0.1:{}", serving.port);
    let client = support::client_trusting(&serving.ca, false);
    let readyz = || async {
        match client.get(format!("{url}/readyz")).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    };
    support::eventually("the server is ready", || async { readyz().await == 200 }).await;
    let kill = Command::new("kill")
        .args(["-TERM", &serving.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    support::eventually("/readyz says 503", || async { readyz().await == 503 }).await;

    // A new connection, and a review on it, are still answered.
    let fresh = support::client_trusting(&serving.ca, false);
    let review = fixture("reviews/lab-statefulset.create.json");
    let answer = fresh
        .post(format!("{url}/mutate"))
        .json(&review)
        .send()
        .await
        .expect("a review sent during the drain delay is answered");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"]["patch"].is_string(), "{body}");

    let status = tokio::task::spawn_blocking(move || serving.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exits cleanly after the drain delay"
    );
}

/// `stsguard compile` fills a cache ahead of time (what an image build runs), and
/// a server started with an empty cache and `--cache-seed` copies it in.
#[tokio::test(flavor = "multi_thread")]
async fn compile_fills_a_cache_that_seeds_a_server_started_cold() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "policies: [{name: rule, module: SCRIPTED, settings: {behaviour: allow}}]";
    let config = write_config(dir.path(), yaml);
    let seed = dir.path().join("seed");
    let output = stsguard()
        .args(["compile", "--config"])
        .arg(&config)
        .arg("--cache-dir")
        .arg(&seed)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("compiled rule into"), "{stdout}");
    let entries = |dir: &Path| -> Vec<String> {
        let mut names = Vec::new();
        for version in std::fs::read_dir(dir.join("modules")).into_iter().flatten() {
            for entry in std::fs::read_dir(version.unwrap().path()).unwrap() {
                names.push(entry.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        names
    };
    let compiled = entries(&seed);
    assert!(!compiled.is_empty(), "compile wrote no cache entry");
    // A marker no compilation writes: if it reaches the cache, the seed was copied.
    let version = std::fs::read_dir(seed.join("modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(version.join("seeded-marker"), "x").unwrap();

    let cache = dir.path().join("cache");
    let (cache_arg, seed_arg) = (cache.display().to_string(), seed.display().to_string());
    let mut serving = serve(
        dir.path(),
        yaml,
        &[
            "--cache-dir",
            &cache_arg,
            "--cache-seed",
            &seed_arg,
            "--drain-delay",
            "0s",
        ],
    );
    let client = support::client_trusting(&serving.ca, false);
    let url = format!("https://127.0.0.1:{}/readyz", serving.port);
    support::eventually("the seeded server is ready", || async {
        matches!(client.get(&url).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    let cached = entries(&cache);
    assert!(cached.contains(&"seeded-marker".to_string()), "{cached:?}");
    assert!(
        compiled.iter().all(|entry| cached.contains(entry)),
        "{compiled:?} / {cached:?}"
    );
    serving.child.kill().unwrap();
    let _ = serving.child.wait();

    let refused = stsguard().args(["compile", "--no-cache"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("give --cache-dir"));
}

/// Runs `stsguard eval` and returns (exit code, objects printed, stderr).
fn eval(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let output = stsguard()
        .current_dir(repo())
        .arg("eval")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let objects = serde_yaml::Deserializer::from_str(&stdout)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .filter(|value: &Value| !value.is_null())
        .collect();
    (
        output.status.code(),
        objects,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn manifest(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect()
}

#[test]
fn eval_fixes_the_lab_statefulset_and_explains_each_change() {
    let (code, objects, stderr) = eval(&["deploy/examples/lab-statefulset.yaml"]);
    assert_eq!(code, Some(0), "{stderr}");
    let input = manifest("deploy/examples/lab-statefulset.yaml");
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0], input[0], "the Service passes untouched");
    let sts = &objects[1];
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["readinessProbe"]["tcpSocket"].is_object(),
        "{container}"
    );
    assert!(
        container["livenessProbe"]["tcpSocket"].is_object(),
        "{container}"
    );
    // Exactly those changes: remove them and the input comes back.
    let mut reverted = sts.clone();
    reverted["spec"]
        .as_object_mut()
        .unwrap()
        .remove("podManagementPolicy");
    let reverted_container = reverted["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap();
    reverted_container.remove("readinessProbe");
    reverted_container.remove("livenessProbe");
    assert_eq!(reverted, input[1]);
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("stsguard/probes: ")
            && stderr.contains("stsguard/parallel: "),
        "{stderr}"
    );
}

/// A PodDisruptionBudget for the lab StatefulSet's pods, as a context file.
fn lab_budget(dir: &std::path::Path) -> String {
    let path = dir.join("budget.yaml");
    std::fs::write(
        &path,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: counter}\n\
         spec: {maxUnavailable: 1, selector: {matchLabels: {app: counter}}}\n",
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn eval_output_is_a_fixed_point() {
    let dir = tempfile::tempdir().unwrap();
    let context = format!("deploy/examples/cluster.yaml,{}", lab_budget(dir.path()));
    let (_, first, _) = eval(&[
        "--context",
        &context,
        "deploy/examples/lab-statefulset.yaml",
    ]);
    let fixed = dir.path().join("fixed.yaml");
    let text: String = first
        .iter()
        .map(|object| format!("---\n{}", serde_yaml::to_string(object).unwrap()))
        .collect();
    std::fs::write(&fixed, text).unwrap();
    let (code, second, stderr) = eval(&["--context", &context, fixed.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(second, first, "the chain changes nothing on its own output");
    assert!(
        !stderr.contains("stsguard/"),
        "no change, so nothing to explain: {stderr}"
    );
}

#[test]
fn eval_leaves_a_compliant_statefulset_alone() {
    let (code, objects, stderr) = eval(&["deploy/examples/compliant-statefulset.yaml"]);
    assert_eq!(code, Some(0), "{stderr}");
    let input: Vec<Value> = manifest("deploy/examples/compliant-statefulset.yaml")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(objects, input);
}

#[test]
fn eval_denies_a_statefulset_without_claim_templates_and_exits_1() {
    let (code, objects, stderr) = eval(&["deploy/examples/no-volume-claim-templates.yaml"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        objects.iter().all(|o| o["kind"] != "StatefulSet"),
        "denied objects are not printed"
    );
    assert!(
        stderr.contains("denied: ") && stderr.contains("policy volume-claims denied StatefulSet"),
        "{stderr}"
    );
    assert!(stderr.contains("volumeClaimTemplates"), "{stderr}");
}

#[test]
fn eval_treats_a_matching_old_object_as_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let mut sts = manifest("deploy/examples/lab-statefulset.yaml").remove(1);
    sts["spec"]["podManagementPolicy"] = "OrderedReady".into();
    let old = dir.path().join("old.yaml");
    std::fs::write(&old, serde_yaml::to_string(&sts).unwrap()).unwrap();
    sts["spec"]["replicas"] = 5.into();
    let new = dir.path().join("new.yaml");
    std::fs::write(&new, serde_yaml::to_string(&sts).unwrap()).unwrap();
    let (code, objects, stderr) = eval(&["--old", old.to_str().unwrap(), new.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        objects,
        [sts],
        "a scale changes nothing else: the template and podManagementPolicy stay"
    );
    assert!(
        stderr.contains("stsguard/probes"),
        "the probes that would be added are named: {stderr}"
    );
}

#[test]
fn eval_reports_unreadable_input_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: [unclosed").unwrap();
    let (code, _, stderr) = eval(&[bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    let (code, _, stderr) = eval(&["/nonexistent/manifest.yaml"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/manifest.yaml"), "{stderr}");
    std::fs::write(&bad, "just: a mapping").unwrap();
    let (code, _, stderr) = eval(&[bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no apiVersion and kind"), "{stderr}");
}

/// `stsguard bench` with no server of its own: it starts one in-process and
/// loads it. Without a warm-up the first reviews are measured too, and are
/// answered (a zero warm-up once failed as "no review succeeded").
#[test]
fn bench_loads_an_in_process_server_over_http1_without_a_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let output = stsguard()
        .args(["bench", "--http1", "--concurrency", "2", "--warmup", "0s"])
        .args(["--duration", "1s"])
        .env("XDG_STATE_HOME", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let answered = stdout
        .lines()
        .find_map(|line| line.strip_prefix("reviews:"))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("a count of answered reviews: {stdout}"));
    assert!(answered > 0, "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(stderr.contains("over HTTP/1.1"), "{stderr}");
    // Server and client share this process here: both show in its use.
    let cpu = stdout
        .lines()
        .find(|line| line.starts_with("cpu:"))
        .unwrap_or_else(|| panic!("a cpu line: {stdout}"));
    assert!(cpu.contains("µs per review"), "{cpu}");
    let switches = cpu
        .split(", ")
        .find_map(|part| part.strip_suffix(" context switches per review"))
        .and_then(|count| count.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("context switches per review: {cpu}"));
    assert!(switches > 0.0, "{cpu}");
}

#[test]
fn bench_refuses_a_server_pid_it_cannot_measure() {
    let output = stsguard()
        .args(["bench", "--url", "https://127.0.0.1:9/mutate"])
        .args(["--server-pid", "4294967295"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--server-pid 4294967295: no process to measure"),
        "{stderr}"
    );
}

#[test]
fn eval_reads_the_cluster_from_context_files_and_the_manifests_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let sts = dir.path().join("sts.yaml");
    let lab = manifest("deploy/examples/lab-statefulset.yaml");
    std::fs::write(&sts, serde_yaml::to_string(&lab[1]).unwrap()).unwrap();
    let warned = |stderr: &str, policy: &str| stderr.contains(&format!("stsguard/{policy}: "));

    // No context: an empty cluster.
    let (code, _, stderr) = eval(&[sts.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("names no Service in default"), "{stderr}");
    assert!(
        stderr.contains("the cluster has no StorageClass at all"),
        "{stderr}"
    );
    assert!(warned(&stderr, "disruption-budget"), "{stderr}");

    // The Service in the same manifest file counts; the default class and the
    // budget come from context files.
    let context = format!("deploy/examples/cluster.yaml,{}", lab_budget(dir.path()));
    let (code, _, stderr) = eval(&[
        "--context",
        &context,
        "deploy/examples/lab-statefulset.yaml",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    for policy in ["headless-service", "storage-class", "disruption-budget"] {
        assert!(!warned(&stderr, policy), "{policy}: {stderr}");
    }

    // A context object that cannot be placed is an error naming it.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Service\nmetadata: {}\n").unwrap();
    let (code, _, stderr) = eval(&["--context", bad.to_str().unwrap(), sts.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml#1: cannot be a context object"),
        "{stderr}"
    );
}
