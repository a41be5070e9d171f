//! `/metrics`, `/healthz`, `/readyz` and, when on, the `/v1/` API (`src/export/api.rs`),
//! served within fixed bounds.
//!
//! `/metrics` refreshes the posture gauges from Postgres, so every replica reports the same
//! numbers; the refresh is reused for [`HttpLimits::metrics_cache`], so a scrape storm costs
//! one set of queries per interval. `/healthz` says the process serves; `/readyz` says the
//! database and the queue answer. Both database reads use a small pool of their own (built in
//! `src/worker.rs`), so the endpoints cannot starve the pipeline of connections.
//!
//! The port is open to whoever can reach it, so every connection is bounded: headers must
//! arrive within [`HttpLimits::header_read_timeout`] (an idle keep-alive connection counts as
//! waiting for headers), a request must be answered within [`HttpLimits::request_timeout`],
//! and at most [`HttpLimits::max_connections`] are served at once; further connections wait
//! in the listen backlog until one ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::source::sqs::SqsConsumer;
use crate::store::Store;
use crate::telemetry::Metrics;

/// The bounds of the HTTP endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection may take to send a request's headers (or sit idle between
    /// requests) before it is closed: a slow-loris client holds a connection no longer.
    pub header_read_timeout: Duration,
    /// How long a request may take to be answered before it gets 503.
    pub request_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long `/metrics` reuses the posture counts it read from the database.
    pub metrics_cache: Duration,
    /// Connections of the endpoints' own database pool.
    pub db_connections: u32,
}

impl Default for HttpLimits {
    /// The defaults of the `ECR_AUDIT_HTTP_*` settings (`src/config.rs`).
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 64,
            metrics_cache: Duration::from_secs(5),
            db_connections: 2,
        }
    }
}

/// What the endpoints read.
#[derive(Clone)]
pub(crate) struct HttpState {
    /// The endpoints' own small pool, apart from the pipeline's.
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The queue `/readyz` checks, when the process consumes one.
    pub queue: Option<(aws_sdk_sqs::Client, String)>,
    /// When the gauges were last refreshed from the database; the lock also makes concurrent
    /// scrapes wait for one refresh instead of each running the queries.
    pub refreshed: Arc<Mutex<Option<Instant>>>,
    pub metrics_cache: Duration,
    /// The `/v1/` API's token; `None`: the API is off and its routes do not exist.
    pub api: Option<super::api::ApiToken>,
    /// The deploy policy; `None`: the verdict routes do not exist.
    pub verdicts: Option<super::verdict::VerdictService>,
}

impl HttpState {
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        queue: Option<(aws_sdk_sqs::Client, String)>,
        metrics_cache: Duration,
    ) -> Self {
        Self {
            store,
            metrics,
            queue,
            refreshed: Arc::new(Mutex::new(None)),
            metrics_cache,
            api: None,
            verdicts: None,
        }
    }
}

pub(crate) fn router(state: HttpState, request_timeout: Duration) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if let Some(token) = state.api {
        app = app.merge(super::api::routes(token));
    }
    if state.verdicts.is_some() {
        app = app.merge(super::verdict::routes());
    }
    app.layer(middleware::from_fn(move |request: Request, next: Next| {
        answer_within(request_timeout, request, next)
    }))
    .with_state(state)
}

async fn answer_within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
    }
}

/// Serves until `shutdown` is cancelled, then lets open requests finish.
///
/// # Errors
/// Never today: a failed accept is logged and retried. The type leaves room for bind-time
/// failures.
pub(crate) async fn serve(
    listener: TcpListener,
    state: HttpState,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state, limits.request_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        // Take a slot before accepting, so connections beyond the cap stay in the backlog.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %err, "could not accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            limits.header_read_timeout,
            shutdown.clone(),
            slot,
        ));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

pub(crate) async fn serve_connection<S>(
    stream: S,
    app: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        // Timed-out and reset connections end here; they are the client's doing.
        debug!(error = %err, "HTTP connection ended with an error");
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    refresh_gauges(&state).await;
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

/// Reads the database-backed gauges unless they were read less than `metrics_cache` ago.
async fn refresh_gauges(state: &HttpState) {
    let mut refreshed = state.refreshed.lock().await;
    if refreshed.is_some_and(|at| at.elapsed() < state.metrics_cache) {
        return;
    }
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
    match state.store.in_use_counts().await {
        Ok(counts) => state.metrics.set_in_use_counts(&counts),
        Err(err) => warn!(error = %err, "could not refresh the in-use gauge"),
    }
    match state
        .store
        .oldest_signature_verdict_age(chrono::Utc::now())
        .await
    {
        Ok(age) => state.metrics.set_oldest_verdict_age(age),
        Err(err) => warn!(error = %err, "could not refresh the signature verdict age"),
    }
    match state.store.failing_counts().await {
        Ok((failing, overdue)) => state.metrics.set_failing_counts(&failing, &overdue),
        Err(err) => warn!(error = %err, "could not refresh the failing-finding gauges"),
    }
    match state.store.operational_counts().await {
        Ok((alert_backlog, last_reconcile)) => state
            .metrics
            .set_operational_counts(alert_backlog, last_reconcile),
        Err(err) => warn!(error = %err, "could not refresh operational gauges"),
    }
    *refreshed = Some(Instant::now());
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
