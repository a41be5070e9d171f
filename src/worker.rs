//! The long-running worker: the SQS consumer and the HTTP endpoints under one shutdown.
//!
//! Tests start it with a listener bound to port 0 and their own cancellation token, so the
//! real worker runs in-process and stops deterministically.

use std::sync::Arc;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    recheck_poll: Duration,
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
    // Not a child of `shutdown`: the endpoints stay up while the consumer drains.
    let http_shutdown = CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, state, http_shutdown.clone()));

    let rechecks_stop = shutdown.child_token();
    let rechecks = tokio::spawn(run_rechecks(
        Arc::clone(&pipeline),
        recheck_poll,
        rechecks_stop.clone(),
    ));
    let consumed = SqsConsumer::new(sqs, settings, pipeline)
        .run(shutdown)
        .await;
    rechecks_stop.cancel();
    let _ = rechecks.await;
    // The endpoints stay up until the consumer has drained, so the last scrape sees it all.
    http_shutdown.cancel();
    let served = server.await.unwrap_or(Ok(()));
    consumed?;
    served?;
    Ok(())
}

/// Claims due signature re-checks in small batches until none is due, then sleeps `poll`.
/// A claim in progress is finished before shutdown; an unfinished one is rolled back and
/// claimed again by any worker.
async fn run_rechecks(pipeline: Arc<Pipeline>, poll: Duration, shutdown: CancellationToken) {
    const CLAIM: i64 = 20;
    loop {
        match pipeline.run_due_rechecks(CLAIM).await {
            Ok(n) if n as i64 == CLAIM && !shutdown.is_cancelled() => continue,
            Ok(_) => {}
            Err(err) => warn!(error = %err, "signature re-checks failed; they stay due"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}
