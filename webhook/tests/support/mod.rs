//! A real server for tests, started the way `stsguard serve` starts it
//! (`start::start`) on a free local port, with a generated CA, and an HTTPS
//! client that trusts it.

#![allow(dead_code)] // each test file uses a different part of this module

pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use serde_json::Value;
use stsguard_webhook::engine::{Engine, EngineOptions};
use stsguard_webhook::registry::RegistryOptions;
use stsguard_webhook::server::ConnectionTimeouts;
use stsguard_webhook::start::{self, Certificate, Running};
use stsguard_webhook::testing;
use stsguard_webhook::tls::GeneratedCertificate;
use tokio::sync::oneshot;

pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Engine options with the compilation cache the tests share.
pub fn engine_options() -> EngineOptions {
    EngineOptions {
        cache_dir: Some(testing::cache_dir()),
        ..EngineOptions::default()
    }
}

/// One engine per test binary, with the shared compilation cache.
pub fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| Engine::new(&engine_options()).unwrap())
        .clone()
}

/// The `stsguard` binary, with the tests' compilation cache and no config
/// from the environment.
pub fn stsguard() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stsguard"));
    command
        .env_remove("STSGUARD_CONFIG")
        .env("STSGUARD_CACHE_DIR", testing::cache_dir())
        // A cluster this machine's kubeconfig names is not the test's.
        .env("STSGUARD_CLUSTER_ACCESS", "off");
    command
}

/// The repository's root folder.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A config with `SCRIPTED` standing for the scripted test policy's path.
pub fn config_text(yaml: &str) -> String {
    yaml.replace(
        "SCRIPTED",
        &testing::scripted_policy().display().to_string(),
    )
}

pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

pub struct TestServer {
    pub url: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub certificate: GeneratedCertificate,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<Running>,
}

impl TestServer {
    /// Starts a server with this config (YAML, `SCRIPTED` replaced), reloading
    /// config and certificate every 50 ms, and waits until it is ready.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, 16, ConnectionTimeouts::default()).await
    }

    pub async fn start_with(
        yaml: &str,
        max_concurrent_evaluations: usize,
        timeouts: ConnectionTimeouts,
    ) -> Self {
        Self::start_pulling(
            yaml,
            max_concurrent_evaluations,
            timeouts,
            RegistryOptions::default(),
            None,
        )
        .await
    }

    /// [`Self::start_with`], with `oci://` modules pulled with `registry` and
    /// their tags rechecked every `tag_recheck_interval`.
    pub async fn start_pulling(
        yaml: &str,
        max_concurrent_evaluations: usize,
        timeouts: ConnectionTimeouts,
        registry: RegistryOptions,
        tag_recheck_interval: Option<Duration>,
    ) -> Self {
        install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        let yaml = config_text(yaml);
        let yaml = if yaml.contains("reloadInterval") {
            yaml
        } else {
            format!("reloadInterval: 50ms\n{yaml}")
        };
        std::fs::write(&config_path, yaml).unwrap();
        let options = start::Options {
            config: Some(config_path.clone()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            certificate: Certificate::ConfigOrGenerated {
                dir: dir.path().join("tls"),
                extra_names: Vec::new(),
            },
            engine: engine_options(),
            max_concurrent_evaluations,
            timeouts,
            drain_delay: Duration::ZERO,
            metrics_listen: None,
            registry,
            tag_recheck_interval,
            // Whatever cluster this machine's kubeconfig names is not the test's.
            cluster: stsguard_webhook::cluster::ClusterOptions {
                access: stsguard_webhook::cluster::Access::Off,
                ..Default::default()
            },
        };
        let (shutdown, on_shutdown) = oneshot::channel::<()>();
        let running = start::start(options, async {
            let _ = on_shutdown.await;
            start::Stop::Now
        })
        .await
        .unwrap();
        running.ready().await.unwrap();
        let certificate = running.generated().unwrap().clone();
        Self {
            url: format!("https://127.0.0.1:{}", running.address().port()),
            client: client_trusting(&certificate.ca, false),
            dir,
            config_path,
            certificate,
            shutdown: Some(shutdown),
            running: Some(running),
        }
    }

    /// POSTs a body to `path` and returns the status and the body as JSON
    /// (or as a JSON string when it is not JSON).
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (reqwest::StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends an AdmissionReview and returns its `response`.
    pub async fn review(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self.post(path, serde_json::to_vec(review).unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        body["response"].clone()
    }

    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Stops accepting and waits for in-flight requests.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(running) = self.running.take() {
            running.stopped().await.unwrap();
        }
    }
}

/// An HTTPS client that trusts only `ca`.
pub fn client_trusting(ca: &Path, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30));
    let builder = if http1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().unwrap()
}

/// Polls `check` every 25 ms for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Applies a base64 JSON Patch from a response to `object`.
pub fn apply_patch(object: &Value, response: &Value) -> Value {
    use base64::Engine as _;
    let mut object = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}
