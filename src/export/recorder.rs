//! Every deploy verdict as evidence (docs/ENFORCEMENT.md, "Every decision recorded"), written
//! off the answer's path.
//!
//! A verdict hands a [`VerdictNote`] to a bounded queue and answers; the recorder folds
//! identical decisions (same asker, image, answer, reasons, cited record and policy) into one
//! aggregate with a count and the first and last time, and appends the aggregates of each
//! interval as `deploy_verdict` records in one transaction. An admission storm of one
//! Deployment's Pods is then a handful of records a second, not thousands, and every decision
//! is still counted. When the database cannot take them, the aggregates wait for the next
//! interval; past [`MAX_AGGREGATES`] (or a full queue) decisions are dropped and counted in
//! `ecr_audit_deploy_verdict_records_total{outcome="dropped"}`, never silently.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::evidence::chain::{ChainedRecord, truncate_to_micros};
use crate::evidence::detail::{DeployVerdictDetail, GivenVerdict, to_detail_value};
use crate::evidence::kind::EvidenceKind;
use crate::evidence::write::{PendingRecord, append};
use crate::store::Store;
use crate::telemetry::{Metrics, VerdictRecord};

/// Notes waiting for the recorder; a burst beyond this is dropped (and counted).
pub const QUEUE_CAPACITY: usize = 8192;
/// Distinct aggregates held while the database cannot take them.
pub const MAX_AGGREGATES: usize = 10_000;
/// How often aggregates are appended: a decision is on the chain within this, and the
/// same decisions within it are one record.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// What makes two decisions the same record: the decision and the image it names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NoteKey {
    pub verdict: GivenVerdict,
    pub account: Option<String>,
    pub region: Option<String>,
    pub repository: Option<String>,
    pub digest: Option<String>,
    pub tag: Option<String>,
}

/// One decision, as the verdict hands it over.
#[derive(Debug, Clone)]
pub struct VerdictNote {
    pub key: NoteKey,
    pub at: DateTime<Utc>,
}

struct Aggregate {
    count: u64,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
}

/// The verdicts' end of the queue.
#[derive(Clone)]
pub struct VerdictRecorder {
    sender: mpsc::Sender<VerdictNote>,
    metrics: Arc<Metrics>,
}

impl VerdictRecorder {
    /// Starts the recorder appending to `store` every `interval` until `shutdown`, when what
    /// is queued is appended one last time.
    pub fn start(
        store: Store,
        metrics: Arc<Metrics>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            store,
            metrics: Arc::clone(&metrics),
            pending: HashMap::new(),
            instance: super::instance_token(),
            next: AtomicU64::new(0),
        };
        let task = tokio::spawn(writer.run(receiver, interval, shutdown));
        (Self { sender, metrics }, task)
    }

    /// Queues one decision; never waits.
    pub fn note(&self, note: VerdictNote) {
        if self.sender.try_send(note).is_err() {
            self.metrics
                .deploy_verdict_records(VerdictRecord::Dropped, 1);
        }
    }
}

struct Writer {
    store: Store,
    metrics: Arc<Metrics>,
    pending: HashMap<NoteKey, Aggregate>,
    /// Tells this process's record ids from another worker's.
    instance: String,
    next: AtomicU64,
}

impl Writer {
    async fn run(
        mut self,
        mut receiver: mpsc::Receiver<VerdictNote>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                note = receiver.recv() => match note {
                    Some(note) => self.fold(note),
                    None => break,
                },
                _ = ticker.tick() => self.flush().await,
            }
        }
        receiver.close();
        while let Some(note) = receiver.recv().await {
            self.fold(note);
        }
        self.flush().await;
    }

    fn fold(&mut self, note: VerdictNote) {
        if let Some(aggregate) = self.pending.get_mut(&note.key) {
            aggregate.count += 1;
            aggregate.first_at = aggregate.first_at.min(note.at);
            aggregate.last_at = aggregate.last_at.max(note.at);
        } else if self.pending.len() < MAX_AGGREGATES {
            self.pending.insert(
                note.key,
                Aggregate {
                    count: 1,
                    first_at: note.at,
                    last_at: note.at,
                },
            );
        } else {
            self.metrics
                .deploy_verdict_records(VerdictRecord::Dropped, 1);
        }
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let records: Vec<PendingRecord> = self
            .pending
            .iter()
            .enumerate()
            .map(|(group, (key, aggregate))| PendingRecord {
                group,
                is_lead: true,
                record: self.record(key, aggregate),
            })
            .collect();
        match self.append(records).await {
            Ok(()) => {
                let count = self.pending.values().map(|a| a.count).sum();
                self.metrics
                    .deploy_verdict_records(VerdictRecord::Recorded, count);
                self.pending.clear();
            }
            // Kept for the next interval; a lasting outage ends in counted drops.
            Err(err) => {
                warn!(error = %err, aggregates = self.pending.len(), "deploy verdicts not recorded yet; retrying")
            }
        }
    }

    async fn append(&self, records: Vec<PendingRecord>) -> Result<(), sqlx::Error> {
        let mut tx = self.store.pool().begin().await?;
        append(&mut tx, records).await?;
        tx.commit().await
    }

    fn record(&self, key: &NoteKey, aggregate: &Aggregate) -> ChainedRecord {
        let detail = DeployVerdictDetail {
            verdict: key.verdict.clone(),
            count: aggregate.count,
            first_at: truncate_to_micros(aggregate.first_at),
            last_at: truncate_to_micros(aggregate.last_at),
        };
        let asked_by = &key.verdict.asked_by;
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        ChainedRecord {
            seq: 0,
            recorded_at: truncate_to_micros(Utc::now()),
            event_id: format!("deploy-verdict/{}/{number}", self.instance),
            event_time: truncate_to_micros(aggregate.first_at),
            kind: EvidenceKind::DeployVerdict,
            outcome: "processed".to_owned(),
            account: key.account.clone(),
            region: key.region.clone(),
            repository: key.repository.clone(),
            digest: key.digest.clone(),
            tag: key.tag.clone(),
            actor: asked_by.user.clone().or_else(|| asked_by.service.clone()),
            detail: to_detail_value(&detail),
            prev_hash: String::new(),
            format_version: None,
        }
    }
}
