//! HTTP: the routes, the middleware every response goes through, and the serve loop with
//! graceful shutdown.
//!
//! Why the split: [`router`] is the whole HTTP behaviour and needs no socket (tests call it
//! directly or bind port 0); [`run`] owns nothing but the accept loop, and takes the listener
//! and the shutdown future from its caller. Handlers are thin: counting lives in
//! [`crate::counter`], the page in [`crate::page`].
//!
//! | route | counts a visit | answers |
//! |---|---|---|
//! | `GET /` | yes | HTML: time, visit number, pod (503 if the visit could not be stored) |
//! | `HEAD /` | no | headers only |
//! | `GET /visits` | no | the count as text, or `{"visits": N, "pod": ".."}` for `Accept: application/json` |
//! | `GET /healthz` | no | 200 while the commit threads run |
//! | `GET /readyz` | no | 200 once the count can be written; it writes it to find out |
//! | `GET /metrics` | no | Prometheus (OpenMetrics) text |
//!
//! Every response, errors and 404s included, carries the serving pod in `x-pod-name`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, VARY};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::counter::{CommitError, Counter};
use crate::metrics::{self, Metrics};
use crate::page::Page;
use crate::pod::{self, Pod};

/// How long `/readyz` waits for its test write before calling the disk too slow: under the
/// chart's probe timeout (2 s), so the kubelet gets an answer with a reason.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything a request needs. Cheap to clone: one shared allocation (axum clones the state
/// for every extractor and middleware, thousands of times a second).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Parts>);

#[derive(Debug)]
struct Parts {
    counter: Counter,
    clock: Clock,
    pod: Pod,
    metrics: Metrics,
    /// Set when shutdown begins: readiness fails from then on.
    draining: AtomicBool,
}

impl AppState {
    /// Bundles the parts; `metrics` must be the set whose storage part `counter` updates.
    pub fn new(counter: Counter, clock: Clock, pod: Pod, metrics: Metrics) -> Self {
        Self(Arc::new(Parts {
            counter,
            clock,
            pod,
            metrics,
            draining: AtomicBool::new(false),
        }))
    }

    /// The counter.
    pub fn counter(&self) -> &Counter {
        &self.0.counter
    }
}

/// Serving failed.
#[derive(Debug, thiserror::Error)]
#[error("serving HTTP on {addr} failed: {cause}")]
pub struct ServeError {
    /// The listening address.
    pub addr: String,
    /// The cause.
    pub cause: std::io::Error,
}

/// The app's routes, with the pod header and request metrics on every response.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(visit).head(visit_head))
        .route("/visits", get(visits))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), stamp))
        .with_state(state)
}

/// Serves `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish (each visit among them answered only once durable), and closes the
/// counter, which finishes any queued commit. Logs `listening` with the bound address.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map(|addr| addr.to_string())
        .unwrap_or_else(|_| "an unknown address".to_owned());
    tracing::info!(address = %addr, pod = state.0.pod.name(), "listening");
    let draining = state.clone();
    let signal = async move {
        shutdown.await;
        draining.0.draining.store(true, Ordering::Release);
        tracing::info!("shutting down: no new connections; finishing requests in flight");
    };
    let listener = listener.tap_io(|tcp| {
        // Small responses on keep-alive connections: do not let Nagle delay them.
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(signal)
        .await;
    state.0.counter.close().await;
    served.map_err(|cause| ServeError { addr, cause })
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::error!("cannot listen for SIGTERM; stopping only on Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Adds the pod header and records the request in the metrics.
async fn stamp(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |path| route_label(path.as_str()));
    let started = Instant::now();
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        HeaderName::from_static(pod::HEADER),
        state.0.pod.header().clone(),
    );
    state.0.metrics.observe_request(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// A `'static` label for a matched route (metric labels must not grow without bound).
fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/visits" => "/visits",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

const NO_STORE: (HeaderName, HeaderValue) = (CACHE_CONTROL, HeaderValue::from_static("no-store"));

async fn visit(State(state): State<AppState>) -> Response {
    match state.0.counter.visit().await {
        Ok(number) => {
            let time = state.0.clock.now();
            let page = Page {
                visit: number,
                pod: state.0.pod.name(),
                time: &time,
                zone: state.0.clock.zone_name(),
            };
            ([NO_STORE], Html(page.render())).into_response()
        }
        Err(error) => not_recorded(&error, state.0.counter.count()),
    }
}

/// `HEAD /` must not count: monitors and link checkers send it.
async fn visit_head() -> impl IntoResponse {
    (
        [
            NO_STORE,
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
        ],
        (),
    )
}

/// 503 for a visit that was not stored, with what went wrong and what happens next.
fn not_recorded(error: &CommitError, count: u64) -> Response {
    let mut body = format!("visit not recorded: {}\n", error);
    if let Some(hint) = error.hint() {
        body.push_str(hint);
        body.push('\n');
    }
    body.push_str(&format!(
        "the count stays at {count}; counting resumes as soon as the count can be written again\n"
    ));
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [NO_STORE, (RETRY_AFTER, HeaderValue::from_static("5"))],
        body,
    )
        .into_response()
}

#[derive(serde::Serialize)]
struct VisitsJson<'a> {
    visits: u64,
    pod: &'a str,
}

async fn visits(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let count = state.0.counter.count();
    let vary = (VARY, HeaderValue::from_static("accept"));
    if wants_json(&headers) {
        let body = VisitsJson {
            visits: count,
            pod: state.0.pod.name(),
        };
        ([NO_STORE, vary], axum::Json(body)).into_response()
    } else {
        ([NO_STORE, vary], format!("{count}\n")).into_response()
    }
}

/// Whether `Accept` prefers `application/json` to plain text. A missing header, `*/*` or
/// a tie broken by a higher `q` for text all mean text: `curl host/visits` prints a number.
fn wants_json(headers: &HeaderMap) -> bool {
    let mut json = 0.0_f32;
    let mut text = 0.0_f32;
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/json" => json = json.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
    }
    json > 0.0 && json >= text
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.0.counter.is_healthy() {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: a commit thread has stopped; restart the app\n",
        )
            .into_response()
    }
}

/// Ready when a write of the count succeeds now. It rides along with any visits being
/// committed, so probing costs nothing under load; when idle it is one small write.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.0.draining.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    match tokio::time::timeout(READY_TIMEOUT, state.0.counter.probe()).await {
        Ok(Ok(count)) => format!(
            "ready: count {count} stored in {}\n",
            state.0.counter.path().display()
        )
        .into_response(),
        Ok(Err(error)) => {
            let mut body = format!("not ready: {}\n", error);
            if let Some(hint) = error.hint() {
                body.push_str(hint);
                body.push('\n');
            }
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: writing the count to {} took longer than {READY_TIMEOUT:?}\n",
                state.0.counter.path().display()
            ),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        state.0.metrics.encode(state.0.counter.count()),
    )
        .into_response()
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "not found: GET / counts a visit; GET /visits shows the count\n",
    )
}

/// Binding the listen address failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {cause}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The cause.
    pub cause: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn json_only_when_preferred() {
        assert!(!wants_json(&HeaderMap::new()));
        assert!(!wants_json(&accept("*/*")));
        assert!(!wants_json(&accept("text/plain")));
        assert!(wants_json(&accept("application/json")));
        assert!(wants_json(&accept("Application/JSON; charset=utf-8")));
        assert!(wants_json(&accept("application/json, text/plain;q=0.5")));
        assert!(wants_json(&accept("text/html, application/json")));
        assert!(!wants_json(&accept("application/json;q=0.5, text/plain")));
        assert!(!wants_json(&accept("application/json;q=0")));
        assert!(!wants_json(&accept("text/html")));
    }

    #[test]
    fn route_labels_are_bounded() {
        assert_eq!(route_label("/"), "/");
        assert_eq!(route_label("/readyz"), "/readyz");
        assert_eq!(route_label("/anything/else"), "other");
    }
}
