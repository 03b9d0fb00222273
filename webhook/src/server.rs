//! The HTTPS server: routes, handlers and the accept loop. What starts it, with
//! its certificate and policies, is the `start` module.
//!
//! ```text
//!   TCP ─► rustls (h2 / http1.1) ─► hyper ─► axum Router
//!     POST /mutate            whole chain      ┐  body ─► wait for policies ─► trusted?
//!     POST /mutate/{policy}   one policy       ┘  ─► parse + decide (here, or on an evaluation thread)
//!     GET  /healthz /readyz /metrics
//! ```
//!
//! Handlers read the body, then parse it ([`review::parse`]) and run
//! [`admission::decide`] where the review's policies deserve it. A policy is
//! synchronous CPU work that may run up to its timeout, so where it runs is the
//! isolation: a review of suspect policies (one has timed out, trapped or run
//! slow lately, or never run yet; see [`chain`](crate::chain)'s guard) is always
//! queued for a pool of suspect evaluation threads
//! ([`evaluators`](crate::evaluators)), so a looping policy holds up those
//! threads, never the async workers or the trusted reviews. A review
//! whose policies are all *trusted* is decided on the async worker that read it
//! when no other trusted review is evaluating (30-200 µs; at low load the
//! hand-off to a sleeping thread and back was most of the latency), and on a
//! pool of its own under load (where a thread that finishes takes the next
//! review without sleeping). One inline evaluation and the two pools' sizes
//! bound how many run at once (and so the engine's instance slots); a review
//! waiting in a queue still counts against its deadline, and one that runs out
//! of time is answered by its policies' failurePolicy, never left hanging.
//!
//! A parseable review is always answered with an AdmissionReview, never a 5xx:
//! an unreadable one gets `allowed: false` with code 400 and the reason; one
//! whose evaluation panicked gets code 500, its uid echoed, the details in the
//! log.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admission;
use crate::chain::{PolicySet, Selection};
use crate::cluster::Cluster;
use crate::config;
use crate::evaluators::Evaluators;
use crate::metrics::{Metrics, ReviewLabels};
use crate::review::{self, InvalidReview};

/// How long connections may stall, and how dead peers are found.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// To finish the TLS handshake.
    pub handshake: Duration,
    /// For an HTTP/1 client to send a request's headers, counted from when the
    /// connection starts waiting for them (so also how long a kept-alive
    /// connection may sit idle): a client that stalls mid-headers is disconnected
    /// instead of holding its connection for ever. The API server speaks HTTP/2.
    pub header_read: Duration,
    /// HTTP/2 pings on an idle connection; a peer that does not answer one within
    /// `keepalive_timeout` (a node gone, a NAT entry dropped) is disconnected.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// What a review is checked against; replaced as a whole on reload.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) policies: PolicySet,
    pub(crate) request_timeout: Duration,
    pub(crate) max_request_bytes: usize,
}

/// The server's state: cheap to clone, shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    served: watch::Sender<Option<Arc<Served>>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Evaluation threads for reviews of trusted policies, when they do not run
    /// inline.
    trusted: Evaluators,
    /// Evaluation threads for reviews of suspect policies: what a looping
    /// policy holds up.
    suspect: Evaluators,
    /// Set on SIGTERM: `/readyz` says 503 from then on, reviews are still answered.
    draining: Arc<AtomicBool>,
    /// The caches policies read the cluster from, for `/readyz`.
    cluster: Option<Arc<Cluster>>,
}

impl AppState {
    /// State with no policy set yet: `/readyz` says not ready and reviews wait
    /// (within their deadline) until [`AppState::serve`] is called.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        max_concurrent_evaluations: usize,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            served: watch::Sender::new(None),
            metrics,
            trusted: Evaluators::start("stsguard-eval", max_concurrent_evaluations),
            suspect: Evaluators::start("stsguard-suspect", max_concurrent_evaluations.div_ceil(2)),
            draining: Arc::default(),
            cluster,
        }
    }

    /// From now on `/readyz` reports not ready, so that Kubernetes takes the pod
    /// out of the Service; reviews that still arrive are answered as before.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Swaps in a new policy set. Reviews already running finish on the old one.
    pub(crate) fn serve(&self, served: Served) {
        self.metrics
            .policies_loaded
            .set(served.policies.policies().len() as i64);
        self.served.send_replace(Some(Arc::new(served)));
    }

    pub(crate) fn current(&self) -> Option<Arc<Served>> {
        self.served.borrow().clone()
    }

    /// The current set, waiting until one is loaded or `deadline` passes.
    async fn wait_for_policies(&self, deadline: Instant) -> Option<Arc<Served>> {
        if let Some(served) = self.current() {
            return Some(served);
        }
        let mut receiver = self.served.subscribe();
        let loaded = receiver.wait_for(Option::is_some);
        match tokio::time::timeout_at(deadline.into(), loaded).await {
            Ok(Ok(served)) => served.clone(),
            _ => None,
        }
    }
}

/// The plain-HTTP metrics port's routes: only `GET /metrics`, so a scraper needs
/// neither the webhook's CA nor access to the admission routes.
pub(crate) fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The routes, without transport.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate_all))
        .route("/mutate/{policy}", post(mutate_one))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn mutate_all(State(state): State<AppState>, body: Body) -> Response {
    review(state, None, body).await
}

async fn mutate_one(
    State(state): State<AppState>,
    Path(policy): Path<String>,
    body: Body,
) -> Response {
    review(state, Some(policy), body).await
}

async fn review(state: AppState, only: Option<String>, body: Body) -> Response {
    let started = Instant::now();
    // Until policies are loaded the defaults apply to the body limit and deadline.
    let current = state.current();
    let (timeout, limit) = current.as_ref().map_or(
        (
            config::DEFAULT_REQUEST_TIMEOUT,
            config::DEFAULT_MAX_REQUEST_BYTES.0 as usize,
        ),
        |served| (served.request_timeout, served.max_request_bytes),
    );
    let deadline = started + timeout;
    let bytes = match read_body(body, limit, deadline).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            state.metrics.record_review(
                &ReviewLabels::unknown("invalid"),
                started.elapsed().as_secs_f64(),
                None,
            );
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the admission review is larger than maxRequestBytes ({limit} bytes)\n"),
            )
                .into_response();
        }
        Err(BodyError::Read(error)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {error}\n"),
            )
                .into_response();
        }
    };
    let Some(served) = state.wait_for_policies(deadline).await else {
        return not_ready(&state, &bytes, started);
    };
    if let Some(name) = &only
        && served.policies.get(name).is_none()
    {
        return (
            StatusCode::NOT_FOUND,
            format!("no policy named `{name}` is configured\n"),
        )
            .into_response();
    }
    // Policies with a clean record run here, on the worker that read the body,
    // when no other trusted review is evaluating: no hand-off to a sleeping
    // thread and back. Under load they go to their own threads.
    let trusted = served.policies.trusted(only.as_deref(), Instant::now());
    if trusted && let Some(_turn) = state.trusted.inline_turn() {
        return answer(
            &state.metrics,
            &served,
            only.as_deref(),
            &bytes,
            deadline,
            started,
        );
    }
    // A suspect policy runs on threads of its own, so what it holds up is those,
    // never the workers or the trusted reviews. Waiting in a queue uses up the
    // deadline; if it runs out, the chain sees no time left and each
    // failurePolicy decides.
    let pool = if trusted {
        &state.trusted
    } else {
        &state.suspect
    };
    let metrics = state.metrics.clone();
    // Kept to name the review in the answer should the pool be gone (cheap: a
    // reference count).
    let bytes_for_uid = bytes.clone();
    let fails_closed = served.policies.fails_closed(only.as_deref());
    let evaluation = pool
        .run(move || {
            answer(
                &metrics,
                &served,
                only.as_deref(),
                &bytes,
                deadline,
                started,
            )
        })
        .await;
    evaluation.unwrap_or_else(|error| {
        tracing::error!(%error, "the evaluation pool is gone");
        let uid = review::parse(&bytes_for_uid).map(|request| request.uid);
        match uid {
            Ok(uid) => internal_error(
                &state.metrics,
                &uid,
                ReviewLabels::unknown("error"),
                fails_closed,
                started,
            ),
            Err(error) => unreadable(&state.metrics, &error, started),
        }
    })
}

/// Why a request body was not read.
enum BodyError {
    TooLarge,
    Read(String),
}

/// The body, up to `limit` bytes. A larger one is read to its end (and thrown
/// away, never held) before the 413 goes out: over HTTP/2, answering while the
/// client still sends resets the stream, and the client sees a framing error
/// instead of the answer. Reading stops at `deadline` either way.
async fn read_body(
    mut body: Body,
    limit: usize,
    deadline: Instant,
) -> Result<bytes::Bytes, BodyError> {
    use http_body_util::BodyExt;
    let mut collected = bytes::BytesMut::new();
    let mut too_large = false;
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline.into(), body.frame()).await else {
            return Err(if too_large {
                BodyError::TooLarge
            } else {
                BodyError::Read("the client did not send it in time".into())
            });
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if too_large {
            continue;
        }
        if collected.len() + data.len() > limit {
            too_large = true;
            collected = bytes::BytesMut::new();
        } else {
            collected.extend_from_slice(&data);
        }
    }
    if too_large {
        return Err(BodyError::TooLarge);
    }
    Ok(collected.freeze())
}

/// Parses, decides, records and answers one review, on the worker or an
/// evaluation thread. All of it on one thread: the review's JSON is allocated and freed there, and a free
/// from another thread costs the allocator more (it showed up under load).
fn answer(
    metrics: &Metrics,
    served: &Served,
    only: Option<&str>,
    body: &[u8],
    deadline: Instant,
    started: Instant,
) -> Response {
    let mut request = match review::parse(body) {
        Ok(request) => request,
        Err(error) => return unreadable(metrics, &error, started),
    };
    let span = tracing::info_span!(
        "review",
        uid = %request.uid,
        kind = %request.kind.kind,
        namespace = %request.namespace,
        // Not `name`: in JSON that is the span's own name (`review`).
        object = %request.name,
        operation = request.operation.as_str(),
    );
    let _span = span.enter();
    let selection = Selection::from(only);
    let mut labels = ReviewLabels {
        outcome: "error",
        operation: request.operation.as_str(),
        kind: served.policies.kind_label(&request.kind),
        dry_run: if request.dry_run { "true" } else { "false" },
    };
    // A panic is a bug in stsguard, not in a policy (a policy's trap is an
    // error value): the review still gets an answer that names it.
    let decided = std::panic::catch_unwind(AssertUnwindSafe(|| {
        admission::decide(&mut request, &served.policies, selection, deadline)
    }));
    let decision = match decided {
        Ok(decision) => decision,
        Err(panic) => {
            let panic = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%panic, "the evaluation panicked");
            let fails_closed = served.policies.fails_closed(only);
            return internal_error(metrics, &request.uid, labels, fails_closed, started);
        }
    };
    let elapsed = started.elapsed();
    let label = decision.label();
    labels.outcome = label;
    metrics.record_review(&labels, elapsed.as_secs_f64(), Some(&decision.outcome));
    let response = decision.response;
    tracing::info!(
        outcome = label,
        dry_run = request.dry_run,
        warnings = response.warnings.len(),
        elapsed_us = elapsed.as_micros() as u64,
        denial = response
            .status
            .as_ref()
            .map(|status| status.message.as_str()),
        "reviewed"
    );
    axum::Json(response).into_response()
}

/// The answer to a body that is not a usable AdmissionReview.
fn unreadable(metrics: &Metrics, error: &InvalidReview, started: Instant) -> Response {
    tracing::warn!(uid = %error.uid, %error, "unreadable admission review");
    metrics.record_review(
        &ReviewLabels::unknown("invalid"),
        started.elapsed().as_secs_f64(),
        None,
    );
    axum::Json(review::Response::invalid(error)).into_response()
}

/// The answer to a review whose evaluation failed inside stsguard: denied (500)
/// when a selected policy enforces with failurePolicy `fail`, as its own failure
/// would be; otherwise allowed unchanged with a warning. An AdmissionReview
/// either way (the API server's webhook failurePolicy applies only when the call
/// itself fails, so this answer is what decides).
fn internal_error(
    metrics: &Metrics,
    uid: &str,
    labels: ReviewLabels,
    fails_closed: bool,
    started: Instant,
) -> Response {
    metrics.record_review(&labels, started.elapsed().as_secs_f64(), None);
    let what = format!(
        "stsguard failed while evaluating this review (a bug; please report it); the \
         stsguard log has details under uid {uid}"
    );
    let response = if fails_closed {
        review::Response::unavailable(uid, 500, what)
    } else {
        review::Response::allow(uid).with_warnings(vec![format!(
            "{what}. Allowed unchanged: no policy enforces with failurePolicy fail"
        )])
    };
    axum::Json(response).into_response()
}

/// The answer while no policy set is loaded yet (rare: only right after start).
fn not_ready(state: &AppState, body: &[u8], started: Instant) -> Response {
    let uid = match review::parse(body) {
        Ok(request) => request.uid,
        Err(error) => return unreadable(&state.metrics, &error, started),
    };
    let message = "stsguard is still loading its policies; the review was not evaluated";
    tracing::warn!(%uid, message);
    state.metrics.record_review(
        &ReviewLabels::unknown("denied"),
        started.elapsed().as_secs_f64(),
        None,
    );
    axum::Json(review::Response::unavailable(uid, 503, message)).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down (still answering reviews until the drain delay ends)\n",
        )
            .into_response();
    }
    let cluster = state.cluster.as_deref();
    match state.current() {
        Some(served) => {
            // The first line for people and probes; then which module each
            // policy runs (a registry tag as the digest it was pinned to), and
            // each watched kind's cache.
            let policies = served.policies.policies();
            let unsynced = cluster.map_or(Ok(()), Cluster::readiness);
            let mut text = match &unsynced {
                Ok(()) => format!("ready: {} policies\n", policies.len()),
                Err(why) => format!("not ready: {why}\n"),
            };
            for policy in policies {
                text.push_str(&format!(
                    "policy {} {} sha256:{}",
                    policy.name(),
                    policy.source(),
                    policy.digest()
                ));
                if let Some(signer) = policy.signer() {
                    text.push_str(&format!(" signed by {signer}"));
                }
                text.push('\n');
            }
            if let Some(cluster) = cluster {
                text.push_str(&cluster.describe());
            }
            match unsynced {
                Ok(()) => text.into_response(),
                Err(_) => (StatusCode::SERVICE_UNAVAILABLE, text).into_response(),
            }
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: loading policies\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(served) = state.current() {
        state.metrics.record_policies(&served.policies);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish (up to [`DRAIN_TIMEOUT`]).
pub(crate) async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    timeouts: ConnectionTimeouts,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.keepalive_interval)
        .keep_alive_timeout(timeouts.keepalive_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls_stream =
                match tokio::time::timeout(timeouts.handshake, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight reviews");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
    }
}
