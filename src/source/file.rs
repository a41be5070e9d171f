//! `ecr-audit ingest`: the pipeline over a file of events instead of the queue.
//!
//! Accepted inputs: JSON Lines of EventBridge envelopes (streamed line by line), a JSON array
//! of envelopes, or a CloudTrail log file (`{"Records": […]}`, each record taken as a
//! CloudTrail event). A line or element that cannot be parsed is rejected like a poison queue
//! message; a transient failure is retried with backoff and, if it persists, counted as failed.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tracing::warn;

use crate::backoff::backoff;
use crate::parse::InputFormat;
use crate::pipeline::{InboundMessage, MessageFate, Pipeline};
use crate::store::Committed;

/// Events per transaction when ingesting a file.
pub(crate) const INGEST_BATCH: usize = 100;
const MAX_ATTEMPTS: u32 = 5;

/// What an ingest run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestCounts {
    pub processed: u64,
    pub ignored: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// Kept failing transiently (or refused by the database) after every retry.
    pub failed: u64,
}

impl IngestCounts {
    fn add(&mut self, fate: &MessageFate) {
        match fate {
            MessageFate::Done(Committed::Processed) => self.processed += 1,
            MessageFate::Done(Committed::Ignored) => self.ignored += 1,
            MessageFate::Done(Committed::Duplicate) => self.duplicate += 1,
            MessageFate::Done(Committed::Rejected) => self.rejected += 1,
            MessageFate::Retry { .. } | MessageFate::DeadLetter { .. } => self.failed += 1,
        }
    }
}

/// Why a file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Ingests everything `reader` holds; `name` labels messages (`NAME:N`).
///
/// # Errors
/// [`IngestError::Read`] when the input cannot be read; bad content is counted, not an error.
pub async fn ingest<R: AsyncRead + Unpin>(
    pipeline: &Pipeline,
    reader: R,
    name: &str,
    mut on_progress: impl FnMut(&IngestCounts),
) -> Result<IngestCounts, IngestError> {
    let read_error = |source| IngestError::Read {
        name: name.to_owned(),
        source,
    };
    let mut reader = BufReader::new(reader);
    let mut counts = IngestCounts::default();
    let Some(first) = first_non_blank_line(&mut reader)
        .await
        .map_err(read_error)?
    else {
        return Ok(counts);
    };
    // The first non-blank line tells JSON Lines (an event per line) from one whole document.
    let first_line_is_event = serde_json::from_slice::<Value>(&first)
        .is_ok_and(|v| v.is_object() && v.get("Records").is_none());
    if first_line_is_event {
        ingest_lines(
            pipeline,
            &mut reader,
            name,
            first,
            &mut counts,
            &mut on_progress,
        )
        .await
        .map_err(read_error)?;
        return Ok(counts);
    }
    let mut document = first;
    reader
        .read_to_end(&mut document)
        .await
        .map_err(read_error)?;
    let messages = split_document(name, &document);
    for chunk in messages.chunks(INGEST_BATCH) {
        run_batch(pipeline, chunk.to_vec(), &mut counts).await;
        on_progress(&counts);
    }
    Ok(counts)
}

/// The first line that is not blank, or `None` at the end of the input.
async fn first_non_blank_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(line));
        }
    }
}

/// JSON Lines: `first` is line 1; every later non-blank line is one envelope, run in batches.
async fn ingest_lines<R: AsyncRead + Unpin>(
    pipeline: &Pipeline,
    reader: &mut BufReader<R>,
    name: &str,
    first: Vec<u8>,
    counts: &mut IngestCounts,
    on_progress: &mut impl FnMut(&IngestCounts),
) -> std::io::Result<()> {
    let mut batch = vec![message(name, 1, first, InputFormat::Envelope)];
    let mut line_number = 1;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        line_number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        batch.push(message(
            name,
            line_number,
            line.clone(),
            InputFormat::Envelope,
        ));
        if batch.len() >= INGEST_BATCH {
            run_batch(pipeline, std::mem::take(&mut batch), counts).await;
            on_progress(counts);
        }
    }
    run_batch(pipeline, batch, counts).await;
    on_progress(counts);
    Ok(())
}

fn message(name: &str, index: usize, body: Vec<u8>, format: InputFormat) -> InboundMessage {
    InboundMessage {
        source: "file",
        message_id: Some(format!("{name}:{index}")),
        body,
        format,
        sent_at: None,
    }
}

/// Splits a whole document into messages; a document that is neither an array nor a
/// CloudTrail log becomes one message, which the parser then judges.
fn split_document(name: &str, document: &[u8]) -> Vec<InboundMessage> {
    match serde_json::from_slice::<Value>(document) {
        Ok(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                message(
                    name,
                    i + 1,
                    item.to_string().into_bytes(),
                    InputFormat::Envelope,
                )
            })
            .collect(),
        Ok(Value::Object(object)) if object.get("Records").is_some_and(Value::is_array) => object
            .get("Records")
            .and_then(Value::as_array)
            .map(|records| {
                records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        message(
                            name,
                            i + 1,
                            r.to_string().into_bytes(),
                            InputFormat::CloudTrailRecord,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![message(name, 1, document.to_vec(), InputFormat::Envelope)],
    }
}

async fn run_batch(pipeline: &Pipeline, mut batch: Vec<InboundMessage>, counts: &mut IngestCounts) {
    let mut attempt = 1;
    while !batch.is_empty() {
        let fates = pipeline.process_batch(&batch).await;
        let mut again = Vec::new();
        for (message, fate) in batch.into_iter().zip(fates) {
            match fate {
                MessageFate::Retry { .. } if attempt < MAX_ATTEMPTS => again.push(message),
                fate => {
                    if matches!(
                        fate,
                        MessageFate::Retry { .. } | MessageFate::DeadLetter { .. }
                    ) {
                        warn!(
                            message.id = message.message_id.as_deref().unwrap_or("-"),
                            "giving up on message after {attempt} attempts"
                        );
                    }
                    counts.add(&fate);
                }
            }
        }
        batch = again;
        if !batch.is_empty() {
            tokio::time::sleep(backoff(
                Duration::from_millis(200),
                Duration::from_secs(5),
                attempt,
            ))
            .await;
            attempt += 1;
        }
    }
}
