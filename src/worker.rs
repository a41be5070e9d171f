//! The long-running worker: the SQS consumer and the HTTP endpoints under one shutdown.
//!
//! Tests start it with a listener bound to port 0 and their own cancellation token, so the
//! real worker runs in-process and stops deterministically.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::export::http::{self, HttpState};
use crate::pipeline::Pipeline;
use crate::source::sqs::{SourceError, SqsConsumer, SqsSettings};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs until `shutdown` is cancelled (or the queue turns out to be unusable).
///
/// # Errors
/// [`WorkerError`] when the queue cannot be used or the HTTP server fails.
pub async fn run(
    pipeline: Arc<Pipeline>,
    sqs: aws_sdk_sqs::Client,
    settings: SqsSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let state = HttpState {
        store: pipeline.store().clone(),
        metrics: Arc::clone(pipeline.metrics()),
        queue: Some((sqs.clone(), settings.queue_url.clone())),
    };
    if let Ok(addr) = listener.local_addr() {
        info!(http.addr = %addr, "serving /metrics, /healthz, /readyz");
    }
    let http_shutdown = shutdown.child_token();
    let server = tokio::spawn(http::serve(listener, state, http_shutdown.clone()));

    let consumed = SqsConsumer::new(sqs, settings, pipeline)
        .run(shutdown)
        .await;
    // The endpoints stay up until the consumer has drained, so the last scrape sees it all.
    http_shutdown.cancel();
    let served = server.await.unwrap_or(Ok(()));
    consumed?;
    served?;
    Ok(())
}
