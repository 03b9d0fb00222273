//! Helpers shared by the integration tests: a small HTTP client, the app served in-process
//! on a free port, and the real binary as a child process.

// Each test file uses a different subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use counter_app::counter::{Counter, CounterConfig, Storage};
use counter_app::metrics::Metrics;
use counter_app::server::ServeError;
use counter_app::{AppState, clock::Clock, pod::Pod};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A response, body as text.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// A keep-alive HTTP/1.1 client for one server.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
    pub addr: SocketAddr,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            addr,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(20), self.client.request(request))
            .await
            .map_err(|_| format!("GET {path}: no answer in 20 s"))?
            .map_err(|e| format!("{path}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[]).await.unwrap()
    }

    /// `GET /visits` as a number.
    pub async fn count(&self) -> u64 {
        let reply = self.get("/visits").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.body.trim().parse().unwrap()
    }
}

/// The visit number shown on a page.
pub fn visit_number(page: &str) -> u64 {
    let start = page
        .find(r#"<strong id="visit">"#)
        .expect("no visit number on the page")
        + 19;
    let end = start + page[start..].find('<').unwrap();
    page[start..end].parse().unwrap()
}

/// The visits file's count, read directly.
pub fn stored(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{} holds {text:?}", path.display()))
}

/// The app served in-process on 127.0.0.1 with a free port.
pub struct InProcess {
    pub http: Http,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), ServeError>>>,
}

impl InProcess {
    pub async fn start(visits: &Path, storage: Storage, pod: &str) -> Self {
        let metrics = Metrics::new();
        let counter = Counter::open(
            CounterConfig {
                path: visits.to_owned(),
                storage,
                commit_threads: 4,
            },
            metrics.storage.clone(),
        )
        .unwrap();
        let state = AppState::new(
            counter,
            Clock::new("Europe/Moscow").unwrap(),
            Pod::new(pod.to_owned()).unwrap(),
            metrics,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(counter_app::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            http: Http::new(addr),
            state,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(20), served)
                .await
                .expect("run did not return within 20 s of shutdown")
                .unwrap()
                .unwrap();
        }
    }
}

/// The real `counter-app` binary running as a child process.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    pub http: Http,
    log: Arc<Mutex<String>>,
}

/// How a start attempt ended.
pub enum Started {
    Serving(Box<Process>),
    Exited { status: ExitStatus, output: String },
}

pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_counter-app"));
    command
        .env_remove("COUNTER_LISTEN")
        .env_remove("COUNTER_VISITS_FILE")
        .env_remove("COUNTER_TIME_ZONE")
        .env_remove("COUNTER_STORAGE")
        .env_remove("POD_NAME")
        .env("COUNTER_LOG", "info")
        .env("NO_COLOR", "1");
    command
}

/// Starts the binary on 127.0.0.1, a free port, and `visits`.
pub fn start_binary(visits: &Path, extra: &[&str]) -> Started {
    let mut command = binary();
    command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--visits-file")
        .arg(visits)
        .args(extra);
    start(command)
}

pub fn start(mut command: Command) -> Started {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run counter-app");
    let log = Arc::new(Mutex::new(String::new()));
    let (found, address) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stdout_log = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening")
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("address="))
            {
                let _ = found.send(addr.parse::<SocketAddr>().unwrap());
            }
            let mut log = stdout_log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_log = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        stderr_log.lock().unwrap().push_str(&text);
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = address.recv_timeout(Duration::from_millis(20)) {
            return Started::Serving(Box::new(Process {
                child,
                addr,
                http: Http::new(addr),
                log,
            }));
        }
        if let Some(status) = child.try_wait().unwrap() {
            // Let the reader threads drain the pipes.
            std::thread::sleep(Duration::from_millis(100));
            let output = log.lock().unwrap().clone();
            return Started::Exited { status, output };
        }
        assert!(
            Instant::now() < deadline,
            "counter-app did not start in 30 s"
        );
    }
}

impl Started {
    pub fn serving(self) -> Process {
        match self {
            Self::Serving(process) => *process,
            Self::Exited { status, output } => {
                panic!("counter-app exited ({status}) instead of serving:\n{output}")
            }
        }
    }

    pub fn exited(self) -> (ExitStatus, String) {
        match self {
            Self::Exited { status, output } => (status, output),
            Self::Serving(process) => panic!(
                "counter-app started serving on {} but should have refused",
                process.addr
            ),
        }
    }
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM (std has no API for it; kill(1) does).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "counter-app did not exit within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Never leave a server behind when a test fails.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
