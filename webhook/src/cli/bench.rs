//! `stsguard bench`: a load generator for the admission endpoint.
//!
//! Sends one AdmissionReview over and over, over TLS with HTTP/2 (or HTTP/1.1),
//! from `--concurrency` workers, for `--duration`, and reports throughput and
//! latency percentiles. Two ways to load:
//! - closed loop (default): each worker sends its next review when the last one is
//!   answered, which finds the saturation throughput;
//! - open loop (`--rate N`): reviews are due at a fixed rate. A review that is
//!   due while its worker still waits for the previous answer is timed from when
//!   it was due, so a stalled server shows up as latency instead of quietly
//!   lowering the load (no coordinated omission). One sent on time is timed from
//!   when it was sent: tokio's timer wakes up to a millisecond late, and that
//!   lateness is the load generator's, not the server's.
//!
//! Without `--url` it starts a server in this process (built-in policies,
//! generated certificate) and loads that; client and server then share the CPU.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::CacheArgs;
use crate::registry::RegistryOptions;
use crate::{server, start, tls};

/// A realistic review: a course-lab StatefulSet as the API server sends it.
const DEFAULT_REVIEW: &str =
    include_str!("../../tests/fixtures/reviews/lab-statefulset.create.json");

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The endpoint to load, e.g. https://127.0.0.1:8443/mutate [default: start a
    /// server in this process with the built-in policies].
    #[arg(long, env = "STSGUARD_BENCH_URL")]
    url: Option<String>,
    /// CA certificate that signed the server's certificate (with --url).
    #[arg(long, env = "STSGUARD_BENCH_CA", requires = "url")]
    ca: Option<PathBuf>,
    /// AdmissionReview JSON to send [default: a lab-style StatefulSet CREATE].
    #[arg(long, env = "STSGUARD_BENCH_REVIEW")]
    review: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, env = "STSGUARD_BENCH_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// TCP connections the workers share (HTTP/2 multiplexes over them).
    #[arg(long, env = "STSGUARD_BENCH_CONNECTIONS", default_value_t = 4)]
    connections: usize,
    /// How long to measure, after the warm-up.
    #[arg(long, env = "STSGUARD_BENCH_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before measuring (compiles, fills caches and pools).
    #[arg(long, env = "STSGUARD_BENCH_WARMUP", default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Send at this fixed rate (reviews/s) instead of as fast as answered.
    #[arg(long, env = "STSGUARD_BENCH_RATE")]
    rate: Option<f64>,
    /// Use HTTP/1.1 (a connection per worker) instead of HTTP/2.
    #[arg(long, env = "STSGUARD_BENCH_HTTP1")]
    http1: bool,
    /// Also load this path of the same server during the warm-up and the
    /// measurement (e.g. `/mutate/looper`, the route of a policy that
    /// misbehaves), from --beside-concurrency workers on connections of their
    /// own, and report it apart: what the measured route keeps while another
    /// policy loops, traps or times out.
    #[arg(long, env = "STSGUARD_BENCH_BESIDE")]
    beside: Option<String>,
    /// Workers (reviews in flight) loading --beside.
    #[arg(
        long,
        env = "STSGUARD_BENCH_BESIDE_CONCURRENCY",
        default_value_t = 4,
        requires = "beside"
    )]
    beside_concurrency: usize,
    /// Report this process's resident memory, and its CPU time and context
    /// switches per review (the server's PID, with --url).
    #[arg(long, env = "STSGUARD_BENCH_SERVER_PID")]
    server_pid: Option<u32>,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(bench(args))
}

/// Where to send the load, and how to trust it.
struct Target {
    address: SocketAddr,
    host: String,
    path: String,
    roots: rustls::RootCertStore,
    _tls_dir: Option<RemovedOnDrop>,
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        url,
        ca,
        review,
        concurrency,
        connections,
        duration,
        warmup,
        rate,
        http1,
        beside,
        beside_concurrency,
        server_pid,
        cache,
    } = args;
    if concurrency == 0 || connections == 0 || beside_concurrency == 0 {
        bail!("--concurrency, --connections and --beside-concurrency must be at least 1");
    }
    if let Some(path) = beside.as_deref().filter(|path| !path.starts_with('/')) {
        bail!("--beside takes a path of the same server, e.g. /mutate/looper (not {path:?})");
    }
    // Checked first: a wrong PID would otherwise end the run without its figures.
    if let Some(pid) = server_pid
        && crate::metrics::cpu_seconds(&pid.to_string()).is_none()
    {
        bail!(
            "--server-pid {pid}: no process to measure (/proc/{pid}/stat cannot be read); \
             give the PID of the running `stsguard serve`, e.g. from `pgrep -f 'stsguard serve'`"
        );
    }
    let body = match &review {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?
        }
        // Compact, as the API server writes it (the fixture is indented for people).
        None => serde_json::from_str::<serde_json::Value>(DEFAULT_REVIEW)
            .map(|review| review.to_string().into_bytes())
            .context("the built-in review is JSON")?,
    };
    crate::review::parse(&body)
        .map_err(|e| anyhow::anyhow!("the review to send is not valid: {e}"))?;
    let body = Bytes::from(body);

    let target = match url {
        Some(url) => external_target(&url, ca)?,
        None => in_process_server(cache).await?,
    };
    let protocol = if http1 { "HTTP/1.1" } else { "HTTP/2" };
    eprintln!(
        "loading https://{}{} over {protocol} with TLS: concurrency {concurrency}, {}",
        target.address,
        target.path,
        match rate {
            Some(rate) => format!("open loop at {rate} reviews/s"),
            None => "closed loop (as fast as answered)".into(),
        }
    );

    let mut tls_config = rustls::ClientConfig::builder()
        .with_root_certificates(target.roots.clone())
        .with_no_client_auth();
    tls_config.alpn_protocols = vec![if http1 {
        b"http/1.1".to_vec()
    } else {
        b"h2".to_vec()
    }];
    let tls_config = Arc::new(tls_config);
    let senders = if http1 {
        concurrency
    } else {
        connections.min(concurrency)
    };
    let mut connections_made = Vec::with_capacity(senders);
    for _ in 0..senders {
        connections_made.push(connect(&target, tls_config.clone(), http1).await?);
    }
    let main_route = Route {
        host: target.host.clone(),
        path: target.path.clone(),
    };
    let beside_route = beside.map(|path| Route {
        host: target.host.clone(),
        path,
    });
    let mut beside_connections = Vec::new();
    if beside_route.is_some() {
        for _ in 0..if http1 { beside_concurrency } else { 1 } {
            beside_connections.push(connect(&target, tls_config.clone(), http1).await?);
        }
    }
    let main_load = Load {
        senders: &connections_made,
        route: &main_route,
        concurrency,
        rate,
    };
    let beside_load = beside_route.as_ref().map(|route| Load {
        senders: &beside_connections,
        route,
        concurrency: beside_concurrency,
        rate: None,
    });

    // Warm up (unless `--warmup 0s`), then measure.
    if !warmup.is_zero() {
        let (warm, _) = load(&main_load, beside_load.as_ref(), &body, warmup).await;
        if warm.ok == 0 {
            bail!(
                "no review succeeded during the warm-up: {}",
                warm.first_error.unwrap_or_else(|| format!(
                    "none was answered within {}; try a longer --warmup",
                    humantime::format_duration(warmup)
                ))
            );
        }
    }
    let pid = server_pid.map_or_else(|| "self".to_string(), |pid| pid.to_string());
    let before = Usage::of(&pid);
    let (measured, beside) = load(&main_load, beside_load.as_ref(), &body, duration).await;
    let used = Usage::of(&pid).since(&before);
    let answered = measured.ok + beside.as_ref().map_or(0, |tally| tally.ok);
    report(&measured, duration);
    report_resources(answered, duration, server_pid, &used, beside.is_some());
    if let Some(error) = &measured.first_error {
        eprintln!("first error: {error}");
    }
    if let (Some(tally), Some(route)) = (&beside, &beside_route) {
        println!(
            "beside:     {} ({beside_concurrency} in flight, closed loop)",
            route.path
        );
        report(tally, duration);
    }
    Ok(())
}

fn external_target(url: &str, ca: Option<PathBuf>) -> anyhow::Result<Target> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--url must be https://");
    }
    let host = uri
        .host()
        .context("--url has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .with_context(|| format!("could not resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let ca =
        ca.context("--ca is needed with --url: the CA that signed the server's certificate")?;
    let roots = tls::trust_roots(&ca)?;
    Ok(Target {
        address,
        host,
        path: uri.path().to_string(),
        roots,
        _tls_dir: None,
    })
}

/// Starts the real server, with the built-in policies, on a free local port,
/// with a certificate generated for this run (never the one `serve` keeps, which
/// a local webhook may trust).
async fn in_process_server(cache: CacheArgs) -> anyhow::Result<Target> {
    let started = Instant::now();
    let tls_dir =
        RemovedOnDrop(std::env::temp_dir().join(format!("stsguard-bench-{}", std::process::id())));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let options = start::Options {
        config: None,
        listen: Some("127.0.0.1:0".parse().expect("an address")),
        certificate: start::Certificate::config_or_generated(Some(tls_dir.0.clone()), Vec::new()),
        engine: cache.engine_options(),
        max_concurrent_evaluations: 2 * cores,
        timeouts: server::ConnectionTimeouts::default(),
        drain_delay: Duration::ZERO,
        metrics_listen: None,
        registry: RegistryOptions::default(),
        tag_recheck_interval: None,
        // The default chain as it runs without a cluster: what was measured so far.
        cluster: crate::cluster::ClusterOptions {
            access: crate::cluster::Access::Off,
            ..Default::default()
        },
    };
    // Serves until the process ends with the benchmark.
    let running = start::start(options, std::future::pending::<start::Stop>()).await?;
    running.ready().await?;
    eprintln!(
        "in-process server ready in {} ms",
        started.elapsed().as_millis()
    );
    let ca = &running
        .generated()
        .context("the in-process server generates its certificate")?
        .ca;
    let roots = tls::trust_roots(ca)?;
    Ok(Target {
        address: running.address(),
        host: "127.0.0.1".into(),
        path: "/mutate".into(),
        roots,
        _tls_dir: Some(tls_dir),
    })
}

/// A directory of this run, removed when the benchmark ends.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A request sender over one connection.
#[derive(Clone)]
enum Sender {
    Http1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
    http1: bool,
) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(target.address)
        .await
        .with_context(|| format!("could not connect to {}", target.address))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(target.host.clone())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake with the server failed")?;
    let io = TokioIo::new(stream);
    if http1 {
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        Ok(Sender::Http1(Arc::new(tokio::sync::Mutex::new(sender))))
    } else {
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        Ok(Sender::Http2(sender))
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

/// Where one load goes on the server.
struct Route {
    host: String,
    path: String,
}

/// One load: its connections, route, workers and rate (`None`: closed loop).
struct Load<'a> {
    senders: &'a [Sender],
    route: &'a Route,
    concurrency: usize,
    rate: Option<f64>,
}

impl Load<'_> {
    async fn run(&self, body: &Bytes, duration: Duration) -> Tally {
        run_workers(
            self.senders,
            self.route,
            body,
            self.concurrency,
            duration,
            self.rate,
        )
        .await
    }
}

/// The route under test and the one beside it (if any), at the same time.
async fn load(
    main: &Load<'_>,
    beside: Option<&Load<'_>>,
    body: &Bytes,
    duration: Duration,
) -> (Tally, Option<Tally>) {
    let beside = async {
        match beside {
            Some(beside) => Some(beside.run(body, duration).await),
            None => None,
        }
    };
    tokio::join!(main.run(body, duration), beside)
}

async fn run_workers(
    senders: &[Sender],
    target: &Route,
    body: &Bytes,
    concurrency: usize,
    duration: Duration,
    rate: Option<f64>,
) -> Tally {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let sender = senders[worker % senders.len()].clone();
        let (host, path, body) = (target.host.clone(), target.path.clone(), body.clone());
        // Open loop: worker w sends at start + (w + k * concurrency) / rate.
        let interval = rate.map(|rate| Duration::from_secs_f64(concurrency as f64 / rate));
        let offset = rate.map(|rate| Duration::from_secs_f64(worker as f64 / rate));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut due = start + offset.unwrap_or_default();
            while due < end {
                // When this review's latency starts; see the module docs.
                let timed_from = if interval.is_some() && Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else if interval.is_some() {
                    due
                } else {
                    due = Instant::now();
                    due
                };
                let request = Request::post(&path)
                    .header(hyper::header::HOST, &host)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()))
                    .expect("a valid request");
                match send(&sender, request).await {
                    Ok(()) => {
                        tally.ok += 1;
                        tally
                            .latencies_us
                            .push(timed_from.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Err(error) => {
                        tally.failed += 1;
                        tally.first_error.get_or_insert(error);
                    }
                }
                if let Some(interval) = interval {
                    due += interval;
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.ok += tally.ok;
            total.failed += tally.failed;
            total.latencies_us.extend(tally.latencies_us);
            if total.first_error.is_none() {
                total.first_error = tally.first_error;
            }
        }
    }
    total
}

/// Sends one review and checks that an AdmissionReview came back.
async fn send(sender: &Sender, request: Request<Full<Bytes>>) -> Result<(), String> {
    let response = match sender {
        Sender::Http1(sender) => sender.lock().await.send_request(request).await,
        Sender::Http2(sender) => sender.clone().send_request(request).await,
    }
    .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let review: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
    if review["response"]["uid"].is_null() {
        return Err("the answer is not an AdmissionReview response".into());
    }
    Ok(())
}

/// Answers, throughput and latency of one route.
fn report(tally: &Tally, duration: Duration) {
    let mut latencies = tally.latencies_us.clone();
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index] as f64 / 1000.0
    };
    let throughput = tally.ok as f64 / duration.as_secs_f64();
    println!(
        "reviews:    {} answered, {} failed in {:.1} s",
        tally.ok,
        tally.failed,
        duration.as_secs_f64()
    );
    println!("throughput: {throughput:.0} reviews/s");
    println!(
        "latency:    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        percentile(0.999),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

/// What a process has used so far: CPU time, and context switches (each one a
/// thread that slept or was preempted: hand-offs between threads show here).
#[derive(Debug, Default)]
struct Usage {
    cpu_seconds: Option<f64>,
    context_switches: Option<u64>,
}

impl Usage {
    /// Of `self` or a PID.
    fn of(pid: &str) -> Self {
        Self {
            cpu_seconds: crate::metrics::cpu_seconds(pid),
            context_switches: crate::metrics::context_switches(pid),
        }
    }

    /// What was used between `before` and this reading.
    fn since(self, before: &Self) -> Self {
        Self {
            cpu_seconds: self
                .cpu_seconds
                .zip(before.cpu_seconds)
                .map(|(now, then)| now - then),
            context_switches: self
                .context_switches
                .zip(before.context_switches)
                .map(|(now, then)| now.saturating_sub(then)),
        }
    }
}

/// The server's memory, and its CPU time and context switches per review
/// answered (on every route).
fn report_resources(
    answered: u64,
    duration: Duration,
    server_pid: Option<u32>,
    used: &Usage,
    routes: bool,
) {
    let pid = server_pid.map_or_else(|| "self".to_string(), |pid| pid.to_string());
    let whose = if server_pid.is_some() {
        "server"
    } else {
        "this process (server and client)"
    };
    if let Some(rss) = crate::metrics::resident_bytes(&pid) {
        println!(
            "memory:     {whose} resident {:.1} MiB",
            rss as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(cpu) = used.cpu_seconds.filter(|_| answered > 0) {
        let switches = used
            .context_switches
            .map(|switches| {
                format!(
                    ", {:.2} context switches per review",
                    switches as f64 / answered as f64
                )
            })
            .unwrap_or_default();
        println!(
            "cpu:        {whose} {:.0} µs per review{} ({:.2} cores busy){switches}",
            cpu * 1e6 / answered as f64,
            if routes { " of both routes" } else { "" },
            cpu / duration.as_secs_f64()
        );
    }
}
