//! `stsguard serve`: the admission server, with hot reload of policies and
//! certificate, and a generated certificate when none is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::CacheArgs;
use crate::config::{ByteSize, Config};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::reload::{self, FileVersions};
use crate::server::{self, AppState};
use crate::tls::{self, CertificateFiles, ReloadingCertificate};

const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (YAML): listen address, TLS files, the policy chain. Without
    /// one, the built-in policies run in their default order. Changes to it, and
    /// to the policy modules it names, are applied without a restart.
    #[arg(long, env = "STSGUARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: the config's `listen`, else 127.0.0.1:8443].
    #[arg(long, env = "STSGUARD_LISTEN")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain to serve; reloaded when the file changes.
    #[arg(long, env = "STSGUARD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STSGUARD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where a generated CA and certificate are kept when no certificate is
    /// given [default: $XDG_STATE_HOME/stsguard/tls or ~/.local/state/stsguard/tls].
    #[arg(long, env = "STSGUARD_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Extra DNS names or IP addresses for a generated certificate (comma-separated);
    /// localhost, 127.0.0.1 and ::1 are always included.
    #[arg(long, env = "STSGUARD_TLS_SAN", value_delimiter = ',')]
    tls_san: Vec<String>,
    /// Policy evaluations that may run at once: the number of evaluation threads
    /// [default: 2 per CPU core]. Each running evaluation may hold up to its
    /// policy's memoryLimit.
    #[arg(long, env = "STSGUARD_MAX_CONCURRENT_EVALUATIONS")]
    max_concurrent_evaluations: Option<usize>,
    /// Linear memory all running policies may hold together (e.g. 128Mi): an
    /// evaluation that would go over it fails as `memory_budget`, and its
    /// failurePolicy decides, instead of the server running out of memory. Keep it
    /// well under the container's memory limit [default: 256Mi].
    #[arg(long, env = "STSGUARD_GUEST_MEMORY_BUDGET")]
    guest_memory_budget: Option<ByteSize>,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stsguard")
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config: config_path,
        listen,
        tls_cert,
        tls_key,
        tls_dir,
        tls_san,
        max_concurrent_evaluations,
        guest_memory_budget,
        cache,
    } = args;
    // File versions are recorded before each file is read, so that a change landing
    // during start-up is reloaded, not taken for the version being served.
    let mut policy_versions = FileVersions::now(config_path.clone());
    let config = Config::load_or_default(config_path.as_deref())?;
    let listen = listen
        .or(config.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default address parses"));

    let certificate_files = match (tls_cert, tls_key, &config.tls) {
        (Some(cert), Some(key), _) => Some(CertificateFiles { cert, key }),
        (_, _, Some(files)) => Some(CertificateFiles {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
        }),
        _ => None,
    };
    let (certificate_files, generated_ca) = match certificate_files {
        Some(files) => (files, None),
        None => {
            let dir = tls_dir.unwrap_or_else(default_tls_dir);
            let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            names.extend(tls_san);
            let generated = tls::self_signed(&dir, &names)?;
            (generated.files, Some(generated.ca))
        }
    };
    let certificate_versions = FileVersions::now(certificate_files.paths());
    let certificate = Arc::new(ReloadingCertificate::new(certificate_files)?);

    let mut engine_options = cache.engine_options();
    if let Some(budget) = guest_memory_budget {
        engine_options.guest_memory_budget = budget.0;
    }
    let engine = Engine::new(&engine_options)?;
    let metrics = Arc::new(Metrics::default());
    let concurrency = max_concurrent_evaluations
        .unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(2, |n| n.get()));
    let state = AppState::new(metrics, concurrency.max(1));

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen}"))?;
    let address = listener
        .local_addr()
        .context("reading the listening address")?;
    tracing::info!(%address, cache = ?engine_options.cache_dir, "listening; loading policies");
    if let Some(ca) = &generated_ca {
        print_quick_start(address, ca);
    }

    if let Some(path) = &config_path {
        policy_versions.watch(reload::policy_inputs(path, &config));
    }
    // Load the policies while already answering /healthz; a set that does not
    // load at start-up stops the server with the reason.
    let (load_failed, on_load_failure) = tokio::sync::oneshot::channel::<anyhow::Error>();
    {
        let (engine, state, config) = (engine.clone(), state.clone(), config.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let loaded =
                tokio::task::spawn_blocking(move || reload::load_served(&engine, &config)).await;
            match loaded {
                Ok(Ok(served)) => {
                    let count = served.policies.policies().len();
                    state.serve(served);
                    tracing::info!(
                        policies = count,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "ready"
                    );
                }
                Ok(Err(error)) => {
                    let _ = load_failed
                        .send(anyhow::Error::new(error).context("could not load the policies"));
                }
                Err(error) => {
                    let _ = load_failed
                        .send(anyhow::Error::new(error).context("loading the policies failed"));
                }
            }
        });
    }
    if let Some(path) = config_path {
        tokio::spawn(reload::watch_policies(
            engine.clone(),
            state.clone(),
            path,
            config.clone(),
            policy_versions,
        ));
    }
    tokio::spawn(reload::watch_certificate(
        certificate.clone(),
        state.clone(),
        config.reload_interval,
        certificate_versions,
    ));

    let failure = Arc::new(std::sync::Mutex::new(None));
    let shutdown = {
        let failure = failure.clone();
        async move {
            tokio::select! {
                () = termination() => tracing::info!("received a termination signal"),
                Ok(error) = on_load_failure => {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                }
            }
        }
    };
    server::run(
        listener,
        certificate.server_config(),
        server::router(state),
        server::ConnectionTimeouts::default(),
        shutdown,
    )
    .await;
    match failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// SIGTERM (Kubernetes stopping the Pod) or Ctrl-C.
async fn termination() {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn default_tls_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .map(|dir| dir.join("stsguard/tls"))
        .unwrap_or_else(|| PathBuf::from("stsguard-tls"))
}

/// Tells someone who just ran `stsguard serve` how to talk to it.
fn print_quick_start(address: SocketAddr, ca: &Path) {
    let host = if address.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        address.ip().to_string()
    };
    let url = format!(
        "https://{}",
        SocketAddr::new(host.parse().expect("an IP"), address.port())
    );
    let example = Path::new("webhook/tests/fixtures/reviews/lab-statefulset.create.json");
    let review = if example.is_file() {
        example.display().to_string()
    } else {
        "review.json".into()
    };
    eprintln!(
        "\nstsguard is serving {url} with a generated certificate.\n\
         CA bundle (for curl --cacert, or base64 it into a webhook's caBundle): {ca}\n\
         Try it:\n  \
         curl --cacert {ca} {url}/readyz\n  \
         curl --cacert {ca} -H 'Content-Type: application/json' --data @{review} {url}/mutate\n",
        ca = ca.display(),
    );
}
