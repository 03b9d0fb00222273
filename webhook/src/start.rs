//! The one way to start the webhook, used by `stsguard serve`, `stsguard bench`
//! and the tests: so the order of start-up lives in one place.
//!
//! ```text
//!   record config versions ─► read config ─► certificate (given, config's, or
//!   generated) ─► record its versions, load it ─► engine ─► bind ─► serve:
//!       /healthz at once; /readyz 503 until the first policy load (the first
//!       reload) is in; watchers poll config, modules and certificate
//!   shutdown future ─► /readyz 503, reviews still answered for the drain delay
//!       ─► stop accepting, finish in-flight reviews ─► return
//!   a first load that fails ─► the same stop, at once, with the error
//! ```
//!
//! Why the drain delay: the API server keeps sending reviews to a pod until the
//! endpoint update that removes it reaches the API server, which takes a moment
//! after the pod is told to stop. A server that stopped listening at SIGTERM
//! failed those reviews (`connection refused`), and with `failurePolicy: Fail`
//! every one of them was a failed write somewhere in the cluster.
//!
//! File versions are recorded before each file is read, so that a change
//! landing during start-up (a Secret or ConfigMap updated during a slow start)
//! is reloaded at the first poll instead of becoming the baseline.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{self, ClusterOptions};
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryOptions};
use crate::reload::{self, FileVersions, FirstLoad, FirstLoadError, PolicySource};
use crate::server::{self, AppState, ConnectionTimeouts};
use crate::tls::{self, CertificateFiles, GeneratedCertificate, ReloadingCertificate, TlsError};

/// The address served when neither `--listen` nor the config's `listen` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// How to start the webhook.
#[derive(Debug)]
pub struct Options {
    /// The config file; `None` runs the built-in policies with the defaults.
    pub config: Option<PathBuf>,
    /// Overrides the config's `listen`.
    pub listen: Option<SocketAddr>,
    pub certificate: Certificate,
    pub engine: EngineOptions,
    /// Evaluation threads; at least one.
    pub max_concurrent_evaluations: usize,
    pub timeouts: ConnectionTimeouts,
    /// How long to keep answering after a [`Stop::Drain`], reporting not ready.
    pub drain_delay: Duration,
    /// Also serve `GET /metrics` over plain HTTP here (for scrapers that do not
    /// speak the webhook's TLS).
    pub metrics_listen: Option<SocketAddr>,
    /// How `oci://` modules are pulled.
    pub registry: RegistryOptions,
    /// How often the tags of `oci://` modules are asked where they point now;
    /// a moved tag reloads the policy set. `None`: only when the config changes.
    pub tag_recheck_interval: Option<Duration>,
    /// Whether (and how) policies read the cluster.
    pub cluster: ClusterOptions,
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum Certificate {
    /// These files (they win over the config's `tls`).
    Files(CertificateFiles),
    /// The config's `tls` files; without them, a CA and certificate generated
    /// into `dir` for localhost, 127.0.0.1, ::1 and `extra_names`.
    ConfigOrGenerated {
        dir: PathBuf,
        extra_names: Vec<String>,
    },
}

impl Certificate {
    /// The config's files, else generated into the user's state directory
    /// (`$XDG_STATE_HOME/stsguard/tls` or `~/.local/state/stsguard/tls`).
    pub fn config_or_generated(dir: Option<PathBuf>, extra_names: Vec<String>) -> Self {
        Self::ConfigOrGenerated {
            dir: dir.unwrap_or_else(default_tls_dir),
            extra_names,
        }
    }
}

/// How the webhook stops once its shutdown future completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Report not ready at once, keep answering for [`Options::drain_delay`], then
    /// stop accepting and finish in-flight reviews: what a pod told to stop needs.
    Drain,
    /// Stop accepting at once and finish in-flight reviews (Ctrl-C, tests).
    Now,
}

/// Why the webhook could not start or stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("could not listen on {address}: {cause}")]
    Listen {
        address: SocketAddr,
        cause: std::io::Error,
    },
    #[error("registry options: {0}")]
    Registry(String),
    #[error(transparent)]
    Policies(Arc<FirstLoadError>),
    #[error("the server stopped before its policies were loaded")]
    Stopped,
}

/// A webhook that is serving (or still loading its first policy set).
#[derive(Debug)]
pub struct Running {
    address: SocketAddr,
    generated: Option<GeneratedCertificate>,
    first_load: watch::Receiver<FirstLoad>,
    task: JoinHandle<Result<(), StartError>>,
}

impl Running {
    /// Where it listens (the real port when asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The generated CA and certificate, when no certificate was given.
    pub fn generated(&self) -> Option<&GeneratedCertificate> {
        self.generated.as_ref()
    }

    /// Waits until the first policy set is served; the number of its policies.
    /// Fails with the reason when it could not be loaded (the server then stops).
    pub async fn ready(&self) -> Result<usize, StartError> {
        let mut first = self.first_load.clone();
        let outcome = first
            .wait_for(|first| !matches!(first, FirstLoad::Pending))
            .await
            .map(|first| first.clone());
        match outcome {
            Ok(FirstLoad::Ready(count)) => Ok(count),
            Ok(FirstLoad::Failed(error)) => Err(StartError::Policies(error)),
            Ok(FirstLoad::Pending) | Err(_) => Err(StartError::Stopped),
        }
    }

    /// Waits until the server has stopped: after the shutdown future completed
    /// and in-flight requests finished, or after the first load failed.
    pub async fn stopped(self) -> Result<(), StartError> {
        self.task
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
    }
}

/// Starts the webhook: returns once it listens, with the first policy set
/// loading in the background (see [`Running::ready`]). It serves until
/// `shutdown` completes, and then stops as that says.
pub async fn start(
    options: Options,
    shutdown: impl Future<Output = Stop> + Send + 'static,
) -> Result<Running, StartError> {
    let Options {
        config: config_path,
        listen,
        certificate,
        engine,
        max_concurrent_evaluations,
        timeouts,
        drain_delay,
        metrics_listen,
        registry,
        tag_recheck_interval,
        cluster,
    } = options;
    let policy_versions = FileVersions::now(config_path.clone());
    let config = Config::load_or_default(config_path.as_deref())?;
    let listen = listen
        .or(config.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default address parses"));
    let (files, generated) = certificate_files(certificate, &config)?;
    let certificate_versions = FileVersions::now(files.paths());
    let certificate = Arc::new(ReloadingCertificate::new(files)?);
    let engine_options = engine;
    let engine = Engine::new(&engine_options)?;
    let registry = Registry::new(registry).map_err(StartError::Registry)?;
    let cluster = cluster::connect(cluster).await;
    let state = AppState::new(
        Arc::new(Metrics::new(cluster.as_ref())),
        max_concurrent_evaluations.max(1),
        cluster.clone(),
    );
    let listener = bind(listen).await?;
    let address = listener.local_addr().map_err(|cause| StartError::Listen {
        address: listen,
        cause,
    })?;
    tracing::info!(%address, cache = ?engine_options.cache_dir, "listening; loading policies");
    let metrics_server = match metrics_listen {
        Some(listen) => {
            let listener = bind(listen).await?;
            tracing::info!(address = %listen, "serving /metrics over plain HTTP");
            let router = server::metrics_router(state.clone());
            Some(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::warn!(%error, "the metrics listener stopped");
                }
            }))
        }
        None => None,
    };

    let mut versions = policy_versions;
    if let Some(path) = &config_path {
        versions.watch(reload::policy_inputs(path, &config));
    }
    let reload_interval = config.reload_interval;
    let source = PolicySource {
        path: config_path,
        config,
        versions,
        registry,
        tag_recheck_interval,
        cluster,
    };
    let (first_load, first_loaded) = watch::channel(FirstLoad::Pending);
    let policies = tokio::spawn(reload::serve_policies(
        engine,
        state.clone(),
        source,
        first_load,
    ));
    let certificates = tokio::spawn(reload::watch_certificate(
        certificate.clone(),
        state.clone(),
        reload_interval,
        certificate_versions,
    ));

    let task = tokio::spawn({
        let (router, tls) = (server::router(state.clone()), certificate.server_config());
        let mut first = first_loaded.clone();
        async move {
            let failed = first.wait_for(|first| matches!(first, FirstLoad::Failed(_)));
            let mut failure = None;
            server::run(listener, tls, router, timeouts, async {
                let stop = tokio::select! {
                    stop = shutdown => stop,
                    Ok(first) = failed => {
                        if let FirstLoad::Failed(error) = &*first {
                            failure = Some(error.clone());
                        }
                        return;
                    }
                };
                state.start_draining();
                if stop == Stop::Drain && !drain_delay.is_zero() {
                    tracing::info!(
                        drain_delay = %humantime::format_duration(drain_delay),
                        "shutting down: not ready from now on, still answering reviews until \
                         the drain delay ends"
                    );
                    tokio::time::sleep(drain_delay).await;
                }
            })
            .await;
            policies.abort();
            certificates.abort();
            if let Some(metrics_server) = metrics_server {
                metrics_server.abort();
            }
            failure.map_or(Ok(()), |error| Err(StartError::Policies(error)))
        }
    });
    Ok(Running {
        address,
        generated,
        first_load: first_loaded,
        task,
    })
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|cause| StartError::Listen { address, cause })
}

/// The files to serve, and the generated certificate when there are none.
fn certificate_files(
    certificate: Certificate,
    config: &Config,
) -> Result<(CertificateFiles, Option<GeneratedCertificate>), TlsError> {
    match (certificate, &config.tls) {
        (Certificate::Files(files), _) => Ok((files, None)),
        (Certificate::ConfigOrGenerated { .. }, Some(tls)) => Ok((
            CertificateFiles {
                cert: tls.cert_file.clone(),
                key: tls.key_file.clone(),
            },
            None,
        )),
        (Certificate::ConfigOrGenerated { dir, extra_names }, None) => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            names.extend(extra_names);
            let generated = tls::self_signed(&dir, &names)?;
            Ok((generated.files.clone(), Some(generated)))
        }
    }
}

fn default_tls_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .map(|dir| dir.join("stsguard/tls"))
        .unwrap_or_else(|| Path::new("stsguard-tls").to_path_buf())
}
