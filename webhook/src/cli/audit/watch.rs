//! `stsguard audit --watch`: the continuous audit as a long-running process
//! (the chart's `audit.mode: watch` Deployment), with `/metrics`, `/healthz` and
//! `/readyz` (ready once every StatefulSet was listed and evaluated) on
//! `--metrics-listen`. Stops on SIGTERM or Ctrl-C, after writing what is pending.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::audit::{self, AuditMetrics, Auditor, WatchOptions, WatchState, Writer};

pub async fn run(
    client: kube::Client,
    auditor: Auditor<'_>,
    writer: Option<Writer>,
    options: WatchOptions,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(AuditMetrics::default());
    let synced = Arc::new(AtomicBool::new(false));
    if let Some(address) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("could not listen on {address} (--metrics-listen)"))?;
        let router = router(metrics.clone(), synced.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "the metrics listener stopped");
            }
        });
        tracing::info!(%address, "serving /metrics, /healthz and /readyz over plain HTTP");
    }
    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut sigterm =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping the audit: writing what is pending");
            stop.store(true, Ordering::Relaxed);
        }
    });
    tracing::info!(scope = %options.scope, reports = writer.is_some(), "audit: watching StatefulSets");
    let mut state = WatchState::new(auditor.policies.modules());
    audit::watch(
        client,
        auditor,
        writer.as_ref(),
        &metrics,
        options,
        &mut state,
        |state| {
            synced.store(state.is_synced(), Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .await;
    Ok(())
}

fn router(metrics: Arc<AuditMetrics>, synced: Arc<AtomicBool>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let synced = synced.load(Ordering::Relaxed);
                async move {
                    if synced {
                        (
                            StatusCode::OK,
                            "ready: every StatefulSet listed and evaluated\n",
                        )
                            .into_response()
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: listing StatefulSets\n",
                        )
                            .into_response()
                    }
                }
            }),
        )
}
