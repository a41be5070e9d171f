//! `/metrics`, `/healthz` and `/readyz`.
//!
//! `/metrics` refreshes the posture gauges from Postgres on every scrape, so every replica
//! reports the same numbers. `/healthz` says the process serves; `/readyz` says the database
//! and the queue answer.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::export::metrics::Metrics;
use crate::source::sqs::SqsConsumer;
use crate::store::Store;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The queue `/readyz` checks, when the process consumes one.
    pub queue: Option<(aws_sdk_sqs::Client, String)>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match state.store.control_counts().await {
        Ok(counts) => state.metrics.set_control_counts(&counts),
        // Serve the process metrics anyway: a scrape that fails entirely hides the outage.
        Err(err) => warn!(error = %err, "could not refresh posture gauges"),
    }
    match state.store.image_counts().await {
        Ok((signatures, scans, backlog)) => {
            state.metrics.set_image_counts(&signatures, &scans, backlog)
        }
        Err(err) => warn!(error = %err, "could not refresh image gauges"),
    }
    match state.store.operational_counts().await {
        Ok((alert_backlog, last_reconcile)) => state
            .metrics
            .set_operational_counts(alert_backlog, last_reconcile),
        Err(err) => warn!(error = %err, "could not refresh operational gauges"),
    }
    match state.metrics.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if let Err(err) = state.store.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database: {err}\n"),
        )
            .into_response();
    }
    if let Some((client, url)) = &state.queue
        && let Err(err) = SqsConsumer::check_queue(client, url).await
    {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("queue: {err}\n")).into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}
