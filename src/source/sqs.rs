//! The SQS consumer: long-poll, process batches concurrently with a bound, keep in-flight
//! messages invisible while they are worked on, delete only what was committed.
//!
//! Shutdown: only the long poll is raced against cancellation. A batch already received runs
//! to its end (commit, then delete), within the grace period; past it the process exits and
//! the unfinished messages simply become visible again. Nothing unfinished is ever deleted.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::aws::{AwsErrorClass, classify};
use crate::backoff::backoff;
use crate::parse::InputFormat;
use crate::pipeline::{InboundMessage, MessageFate, Pipeline};
use crate::telemetry::{Happened, RetryCode};

/// How the consumer polls and paces itself.
#[derive(Debug, Clone)]
pub struct SqsSettings {
    pub queue_url: String,
    /// Long-poll wait, at most 20 s.
    pub wait_time: Duration,
    /// Messages per receive, at most 10.
    pub batch_size: i32,
    /// Visibility set on receive and renewed while a batch is worked on.
    pub visibility_timeout: Duration,
    /// Batches worked on at once.
    pub max_in_flight_batches: usize,
    /// First retry delay for a message that failed transiently; doubles per receive.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long in-flight batches may take to finish after shutdown was requested.
    pub shutdown_grace: Duration,
}

impl SqsSettings {
    pub fn new(queue_url: String) -> Self {
        Self {
            queue_url,
            wait_time: Duration::from_secs(20),
            batch_size: 10,
            visibility_timeout: Duration::from_secs(60),
            max_in_flight_batches: 4,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(900),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Why the consumer stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the queue {queue_url} cannot be used: {reason}")]
    QueueUnusable { queue_url: String, reason: String },
}

pub(crate) struct SqsConsumer {
    client: aws_sdk_sqs::Client,
    settings: SqsSettings,
    pipeline: Arc<Pipeline>,
    /// Set when a batch could not reach the database: receiving pauses until it answers, so
    /// an outage does not spend the queue's receives and push messages to the DLQ.
    database_down: std::sync::atomic::AtomicBool,
}

struct Received {
    receipt_handle: String,
    receive_count: u32,
}

impl SqsConsumer {
    pub fn new(
        client: aws_sdk_sqs::Client,
        settings: SqsSettings,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        Self {
            client,
            settings,
            pipeline,
            database_down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the queue answers, for `/readyz`.
    ///
    /// # Errors
    /// The reason it does not.
    pub(crate) async fn check_queue(
        client: &aws_sdk_sqs::Client,
        queue_url: &str,
    ) -> Result<(), String> {
        client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{:?}", classify(&e)))
    }

    /// Consumes until `shutdown` is cancelled, then lets in-flight batches finish.
    ///
    /// # Errors
    /// [`SourceError::QueueUnusable`] when the queue does not exist or access is denied: a
    /// configuration error that retrying cannot fix.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SourceError> {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.settings.max_in_flight_batches));
        let tracker = TaskTracker::new();
        let mut consecutive_failures: u32 = 0;
        info!(queue.url = %this.settings.queue_url, "consuming");

        let result = loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break Ok(()),
                },
            };
            if this.database_down.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = this.wait_for_database() => {}
                }
            }
            let received = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                received = this.receive() => received,
            };
            match received {
                Ok(messages) if messages.is_empty() => consecutive_failures = 0,
                Ok(messages) => {
                    consecutive_failures = 0;
                    let consumer = Arc::clone(&this);
                    tracker.spawn(async move {
                        consumer.handle_batch(messages).await;
                        drop(permit);
                    });
                }
                Err(err) => {
                    if let Some(unusable) = this.unusable_queue(&err) {
                        break Err(unusable);
                    }
                    consecutive_failures = consecutive_failures.saturating_add(1);
                    let delay = backoff(
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                        consecutive_failures,
                    );
                    warn!(error = ?err, retry_in = ?delay, "receive failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        this.drain(tracker).await;
        result
    }

    /// A receive error that retrying cannot fix: the queue is gone or access is denied.
    fn unusable_queue(&self, err: &AwsErrorClass) -> Option<SourceError> {
        let AwsErrorClass::Service { code, message } = err else {
            return None;
        };
        let unusable = code.contains("NonExistentQueue")
            || code.contains("AccessDenied")
            || code == "QueueDoesNotExist";
        unusable.then(|| SourceError::QueueUnusable {
            queue_url: self.settings.queue_url.clone(),
            reason: format!("{code}: {message}"),
        })
    }

    /// Lets in-flight batches finish within the shutdown grace.
    async fn drain(&self, tracker: TaskTracker) {
        tracker.close();
        if tokio::time::timeout(self.settings.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                grace = ?self.settings.shutdown_grace,
                "in-flight batches did not finish within the grace period; their messages were not deleted and will be redelivered"
            );
        } else {
            info!("consumer stopped; no work in flight");
        }
    }

    /// Pings the database with backoff until it answers.
    async fn wait_for_database(&self) {
        let mut attempt = 0;
        warn!("database unavailable: receiving paused until it answers");
        while self.pipeline.store().ping().await.is_err() {
            attempt += 1;
            tokio::time::sleep(backoff(
                Duration::from_millis(500),
                Duration::from_secs(10),
                attempt,
            ))
            .await;
        }
        self.database_down
            .store(false, std::sync::atomic::Ordering::SeqCst);
        info!("database answers again: receiving resumes");
    }

    async fn receive(&self) -> Result<Vec<Message>, AwsErrorClass> {
        let wait = self.settings.wait_time.min(Duration::from_secs(20));
        // The shared SDK timeouts are shorter than a long poll. An attempt abandoned mid-poll
        // leaves the server-side poll running: it takes the next message, marks it in flight
        // and answers a closed connection, so the message vanishes for a whole visibility
        // timeout and gains a receive on its way to the DLQ. The attempt must outlast the poll.
        let attempt = wait + Duration::from_secs(10);
        let timeouts = aws_sdk_sqs::config::Builder::default().timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt)
                .operation_timeout(attempt * 3)
                .build(),
        );
        self.client
            .receive_message()
            .queue_url(&self.settings.queue_url)
            .max_number_of_messages(self.settings.batch_size)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(self.settings.visibility_timeout.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .customize()
            .config_override(timeouts)
            .send()
            .await
            .map(|output| output.messages.unwrap_or_default())
            .map_err(|e| classify(&e))
    }

    async fn handle_batch(&self, messages: Vec<Message>) {
        let span = info_span!("batch", messages = messages.len());
        async {
            let (inbound, handles) = inbound_messages(messages);
            let heartbeat = CancellationToken::new();
            let extender = tokio::spawn(extend_visibility(
                self.client.clone(),
                self.settings.queue_url.clone(),
                handles.iter().map(|h| h.receipt_handle.clone()).collect(),
                self.settings.visibility_timeout,
                heartbeat.clone(),
            ));
            let fates = self.pipeline.process_batch(&inbound).await;
            heartbeat.cancel();
            let _ = extender.await;
            self.settle(&handles, &fates).await;
        }
        .instrument(span)
        .await;
    }

    /// Deletes what is done and gives the rest back with backoff; a database outage pauses
    /// receiving.
    async fn settle(&self, handles: &[Received], fates: &[MessageFate]) {
        if fates.iter().any(|f| {
            matches!(
                f,
                MessageFate::Retry {
                    code: RetryCode::DbUnavailable,
                    ..
                }
            )
        }) {
            self.database_down
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let mut to_delete = Vec::new();
        let mut to_delay = Vec::new();
        for (handle, fate) in handles.iter().zip(fates) {
            match fate {
                MessageFate::Done(_) => to_delete.push(handle.receipt_handle.clone()),
                MessageFate::Retry { .. } | MessageFate::DeadLetter { .. } => to_delay.push((
                    handle.receipt_handle.clone(),
                    backoff(
                        self.settings.retry_base,
                        self.settings.retry_max,
                        handle.receive_count,
                    ),
                )),
            }
        }
        self.delete(to_delete).await;
        self.delay(to_delay).await;
    }

    async fn delete(&self, receipt_handles: Vec<String>) {
        if receipt_handles.is_empty() {
            return;
        }
        let failed =
            delete_messages(&self.client, &self.settings.queue_url, &receipt_handles).await;
        if failed > 0 {
            Happened::SqsDeleteFailed { count: failed }.record(self.pipeline.metrics());
        }
        debug!(deleted = receipt_handles.len() - failed, "deleted");
    }

    async fn delay(&self, handles: Vec<(String, Duration)>) {
        if handles.is_empty() {
            return;
        }
        if let Err(reason) =
            change_visibility(&self.client, &self.settings.queue_url, &handles).await
        {
            // The messages still come back when their current visibility runs out.
            warn!("could not set retry delay: {reason}");
        }
    }
}

/// Deletes messages in one batch call; returns how many were not deleted. A message whose
/// delete failed is redelivered and recognised as a duplicate, so failures are logged and
/// counted, not retried.
pub async fn delete_messages(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    receipt_handles: &[String],
) -> usize {
    let entries: Vec<DeleteMessageBatchRequestEntry> = receipt_handles
        .iter()
        .enumerate()
        .filter_map(|(i, handle)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .build()
                .ok()
        })
        .collect();
    let total = entries.len();
    match client
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(output) => {
            // HTTP 200 can still carry per-entry failures.
            for failure in output.failed() {
                warn!(
                    sqs.error_code = failure.code(),
                    "delete failed for a committed message ({}); it will be redelivered and recognised as a duplicate",
                    failure.message().unwrap_or_default()
                );
            }
            output.failed().len()
        }
        Err(err) => {
            warn!(error = ?classify(&err), "delete batch failed; {total} committed messages will be redelivered and recognised as duplicates");
            total
        }
    }
}

/// The pipeline's view of each received message, and what is needed to delete or delay it.
/// A message without a receipt handle can be neither deleted nor extended: SQS delivers it
/// again, so it is left out.
fn inbound_messages(messages: Vec<Message>) -> (Vec<InboundMessage>, Vec<Received>) {
    let mut inbound = Vec::with_capacity(messages.len());
    let mut handles = Vec::with_capacity(messages.len());
    for message in messages {
        let Some(receipt_handle) = message.receipt_handle().map(str::to_owned) else {
            continue;
        };
        let receive_count = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        // Set by SQS, not by the sender: the bound an event's own time is held to.
        let sent_at = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(chrono::DateTime::from_timestamp_millis);
        inbound.push(InboundMessage {
            source: "sqs",
            message_id: message.message_id().map(str::to_owned),
            body: message.body.unwrap_or_default().into_bytes(),
            format: InputFormat::Envelope,
            sent_at,
        });
        handles.push(Received {
            receipt_handle,
            receive_count,
        });
    }
    (inbound, handles)
}

/// Renews the visibility of a batch's messages every third of the timeout until cancelled.
pub async fn extend_visibility(
    client: aws_sdk_sqs::Client,
    queue_url: String,
    receipt_handles: Vec<String>,
    visibility: Duration,
    done: CancellationToken,
) {
    let every = (visibility / 3).max(Duration::from_secs(1));
    let changes: Vec<(String, Duration)> = receipt_handles
        .into_iter()
        .map(|h| (h, visibility))
        .collect();
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match change_visibility(&client, &queue_url, &changes).await {
            Ok(()) => debug!("extended visibility of {} messages", changes.len()),
            Err(reason) => warn!("could not extend visibility: {reason}"),
        }
    }
}

/// Sets each message's visibility timeout in one batch call; per-entry failures (reported
/// behind HTTP 200) count as failure too.
async fn change_visibility(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    changes: &[(String, Duration)],
) -> Result<(), String> {
    let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = changes
        .iter()
        .enumerate()
        .filter_map(|(i, (handle, visibility))| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(i32::MAX))
                .build()
                .ok()
        })
        .collect();
    let output = client
        .change_message_visibility_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|err| format!("{:?}", classify(&err)))?;
    match output.failed() {
        [] => Ok(()),
        failed => Err(format!(
            "{} of {} entries failed (first: {})",
            failed.len(),
            changes.len(),
            failed[0].code()
        )),
    }
}
