//! `stsguard serve`: the admission server, with hot reload of policies and
//! certificate, and a generated certificate when none is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::registry::RegistryArgs;
use super::{CacheArgs, ClusterArgs};
use crate::config::ByteSize;
use crate::server::ConnectionTimeouts;
use crate::start::{self, Certificate, Stop};
use crate::tls::CertificateFiles;

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
    /// Evaluation threads for reviews of trusted policies [default: 2 per CPU
    /// core]; a review of trusted policies runs on the async worker that read it
    /// instead while none of these is busy. Reviews of suspect policies (ones
    /// that timed out, trapped or ran slow lately, or never ran yet) get threads
    /// of their own, half as many. Each running evaluation may hold up to its
    /// policy's memoryLimit.
    #[arg(long, env = "STSGUARD_MAX_CONCURRENT_EVALUATIONS")]
    max_concurrent_evaluations: Option<usize>,
    /// Linear memory all running policies may hold together (e.g. 128Mi): an
    /// evaluation that would go over it fails as `memory_budget`, and its
    /// failurePolicy decides, instead of the server running out of memory. Keep it
    /// well under the container's memory limit [default: 256Mi].
    #[arg(long, env = "STSGUARD_GUEST_MEMORY_BUDGET")]
    guest_memory_budget: Option<ByteSize>,
    /// After SIGTERM, how long to keep accepting and answering reviews while
    /// /readyz already says 503, so that the API server stops sending reviews
    /// here before the server stops listening (e.g. 10s; 0s stops at once).
    /// Then in-flight reviews get up to 25 s to finish.
    /// Ctrl-C at a terminal stops at once.
    #[arg(long, env = "STSGUARD_DRAIN_DELAY", default_value = "10s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// Also serve GET /metrics over plain HTTP on this address (e.g.
    /// 0.0.0.0:9090), for scrapers that do not trust the webhook's CA. The HTTPS
    /// port serves /metrics too.
    #[arg(long, env = "STSGUARD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// How often the tags of `oci://` modules are asked where they point now
    /// (a HEAD request per tag); a moved tag reloads the policies. `0s`: only
    /// when the config changes.
    #[arg(long, env = "STSGUARD_TAG_RECHECK_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    tag_recheck_interval: Duration,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
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
        config,
        listen,
        tls_cert,
        tls_key,
        tls_dir,
        tls_san,
        max_concurrent_evaluations,
        guest_memory_budget,
        drain_delay,
        metrics_listen,
        tag_recheck_interval,
        cache,
        registry,
        cluster,
    } = args;
    let certificate = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Certificate::Files(CertificateFiles { cert, key }),
        _ => Certificate::config_or_generated(tls_dir, tls_san),
    };
    let registry = registry.options(&cache)?;
    let mut engine = cache.engine_options();
    if let Some(budget) = guest_memory_budget {
        engine.guest_memory_budget = budget.0;
    }
    let options = start::Options {
        config,
        listen,
        certificate,
        engine,
        max_concurrent_evaluations: max_concurrent_evaluations
            .unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(2, |n| n.get())),
        timeouts: ConnectionTimeouts::default(),
        drain_delay,
        metrics_listen,
        registry,
        tag_recheck_interval: Some(tag_recheck_interval).filter(|interval| !interval.is_zero()),
        cluster: cluster.options(),
    };
    let running = start::start(options, termination()).await?;
    if let Some(generated) = running.generated() {
        print_quick_start(running.address(), &generated.ca);
    }
    running.stopped().await?;
    Ok(())
}

/// SIGTERM (Kubernetes stopping the Pod: drain first) or Ctrl-C (at once).
async fn termination() -> Stop {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = sigterm.recv() => {
            tracing::info!("received SIGTERM");
            Stop::Drain
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("received Ctrl-C");
            Stop::Now
        }
    }
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
