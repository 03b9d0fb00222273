//! `counter-load`: a small HTTP/1.1 load generator for benchmarking the app.
//!
//! Why our own: the claim to check is "N durable visits per second at concurrency C, with
//! this p99", and also that the server counted exactly the visits it acknowledged. So it
//! opens C keep-alive connections, each sending one request at a time for the duration,
//! records every latency (no sampling), and reads `GET /visits` before and after to compare
//! the server's count with the number of 200 responses.
//!
//! It speaks plain HTTP only, and is meant for a server on the same machine or network.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// Loads a counter-app with keep-alive HTTP/1.1 clients and reports visits/s and latency.
#[derive(Debug, Clone, Parser)]
#[command(name = "counter-load", version, max_term_width = 100)]
pub struct LoadArgs {
    /// The URL every client requests (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8080/")]
    pub url: Uri,

    /// Number of connections, each with one request in flight at a time.
    #[arg(long, short, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// How long to send requests, e.g. `10s`.
    #[arg(long, short, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// The load could not be run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL is not `http://host[:port]/path`.
    #[error("{url} is not a plain http:// URL with a host")]
    Url {
        /// The URL given.
        url: Uri,
    },
    /// A connection could not be made or used before the load started.
    #[error("cannot connect to {addr}: {cause}")]
    Connect {
        /// host:port.
        addr: String,
        /// The cause.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The URL loaded.
    pub url: Uri,
    /// Connections.
    pub concurrency: u16,
    /// From the start of the load until the last response.
    pub elapsed: Duration,
    /// Requests started (each was written, or attempted, once).
    pub sent: u64,
    /// Responses with status 200.
    pub ok: u64,
    /// Responses with any other status.
    pub other_status: u64,
    /// Requests that got no response (connection errors).
    pub errors: u64,
    /// Latency of every response, sorted, in microseconds.
    pub latencies_us: Vec<u32>,
    /// `GET /visits` before and after, if both answered with a number.
    pub server_count: Option<(u64, u64)>,
}

impl Report {
    /// 200 responses per second.
    pub fn ok_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile latency (nearest rank), `p` in 0..=100.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.latencies_us, p).map(|us| Duration::from_micros(u64::from(us)))
    }
}

fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        writeln!(
            f,
            "{} keep-alive HTTP/1.1 connections to {} for {:.2} s",
            self.concurrency,
            self.url,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "responses  {} x 200, {} other status, {} without response ({} sent)",
            self.ok, self.other_status, self.errors, self.sent
        )?;
        writeln!(
            f,
            "rate       {:.0} visits/s (200 responses)",
            self.ok_per_second()
        )?;
        writeln!(
            f,
            "latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.percentile(100.0)),
        )?;
        match self.server_count {
            Some((before, after)) => {
                let delta = after.saturating_sub(before);
                let verdict = if delta == self.ok {
                    "equals the 200 responses"
                } else {
                    "DIFFERS from the 200 responses (other clients, or a counting bug)"
                };
                writeln!(
                    f,
                    "count      GET /visits {before} -> {after}: +{delta}, {verdict}"
                )
            }
            None => writeln!(f, "count      GET /visits did not answer with a number"),
        }
    }
}

#[derive(Debug, Default)]
struct ClientStats {
    sent: u64,
    ok: u64,
    other_status: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

/// Runs the load and returns what it measured.
pub async fn run(args: LoadArgs) -> Result<Report, LoadError> {
    let LoadArgs {
        url,
        concurrency,
        duration,
    } = args;
    let target = Target::new(&url)?;
    let before = target.count().await;

    // Connect everyone first, so connection set-up is not measured.
    let mut senders = Vec::with_capacity(usize::from(concurrency));
    for _ in 0..concurrency {
        senders.push(target.connect().await?);
    }
    let start = Arc::new(Barrier::new(usize::from(concurrency) + 1));
    let mut tasks = Vec::with_capacity(senders.len());
    for sender in senders {
        let target = target.clone();
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            target.hammer(sender, Instant::now() + duration).await
        }));
    }
    start.wait().await;
    let started = Instant::now();
    let mut total = ClientStats::default();
    for task in tasks {
        // A client task only ends by returning its stats.
        if let Ok(stats) = task.await {
            total.sent += stats.sent;
            total.ok += stats.ok;
            total.other_status += stats.other_status;
            total.errors += stats.errors;
            total.latencies_us.extend(stats.latencies_us);
        }
    }
    let elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    let after = target.count().await;
    Ok(Report {
        url,
        concurrency,
        elapsed,
        sent: total.sent,
        ok: total.ok,
        other_status: total.other_status,
        errors: total.errors,
        latencies_us: total.latencies_us,
        server_count: before.zip(after),
    })
}

/// Where requests go.
#[derive(Debug, Clone)]
struct Target {
    addr: String,
    host: http::HeaderValue,
    path: Uri,
}

impl Target {
    fn new(url: &Uri) -> Result<Self, LoadError> {
        let bad = || LoadError::Url { url: url.clone() };
        if url.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = url.authority().ok_or_else(bad)?;
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let host = authority.as_str().parse().map_err(|_| bad())?;
        let path = url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| bad())?;
        Ok(Self { addr, host, path })
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, LoadError> {
        let error = |cause: Box<dyn std::error::Error + Send + Sync>| LoadError::Connect {
            addr: self.addr.clone(),
            cause,
        };
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| error(e.into()))?;
        stream.set_nodelay(true).map_err(|e| error(e.into()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| error(e.into()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn request(&self, path: Uri) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = path;
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        request
    }

    /// One client: one request at a time on one connection until `deadline`; reconnects
    /// after an error.
    async fn hammer(&self, sender: SendRequest<Empty<Bytes>>, deadline: Instant) -> ClientStats {
        let mut stats = ClientStats::default();
        let mut sender = Some(sender);
        while Instant::now() < deadline {
            let mut current = match sender.take() {
                Some(current) => current,
                None => match self.connect().await {
                    Ok(fresh) => fresh,
                    Err(_) => {
                        stats.errors += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            if current.ready().await.is_err() {
                continue;
            }
            stats.sent += 1;
            let began = Instant::now();
            let response = match current.send_request(self.request(self.path.clone())).await {
                Ok(response) => response,
                Err(_) => {
                    stats.errors += 1;
                    continue;
                }
            };
            let status = response.status();
            if response.into_body().collect().await.is_err() {
                stats.errors += 1;
                continue;
            }
            let micros = u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX);
            stats.latencies_us.push(micros);
            if status == http::StatusCode::OK {
                stats.ok += 1;
            } else {
                stats.other_status += 1;
            }
            sender = Some(current);
        }
        stats
    }

    /// The server's count from `GET /visits`, if it answers with a number.
    async fn count(&self) -> Option<u64> {
        let mut sender = self.connect().await.ok()?;
        let response = sender
            .send_request(self.request(Uri::from_static("/visits")))
            .await
            .ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        std::str::from_utf8(&body).ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50));
        assert_eq!(percentile(&sorted, 99.0), Some(99));
        assert_eq!(percentile(&sorted, 100.0), Some(100));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn only_plain_http_urls() {
        let target = Target::new(&"http://127.0.0.1:8080/".parse().unwrap()).unwrap();
        assert_eq!(target.addr, "127.0.0.1:8080");
        assert_eq!(target.path, "/");
        let target = Target::new(&"http://localhost/x?y=1".parse().unwrap()).unwrap();
        assert_eq!(target.addr, "localhost:80");
        assert_eq!(target.path, "/x?y=1");
        assert!(Target::new(&"https://127.0.0.1/".parse().unwrap()).is_err());
        assert!(Target::new(&"/visits".parse().unwrap()).is_err());
    }
}
