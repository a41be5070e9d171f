//! One batch through the stages: receive → parse → invalidate caches → read facts → plan →
//! commit → fates.
//!
//! Orchestration only: what an event means is decided by the planner (`crate::plan`), what is
//! true now is read through the registry (`reads.rs`), and the pipeline decides each
//! message's fate ([`MessageFate`]), leaving carrying it out to the source (delete from SQS,
//! change visibility, count a line of a file). Its effects are committed in one transaction
//! per batch before any fate says "delete".

mod builder;
mod reads;
mod rereads;
mod verify;

pub use builder::PipelineBuilder;

use std::sync::Arc;

use chrono::Utc;
use tracing::warn;

use crate::domain::{AccountId, Digest, Region, RepositoryKey};
use crate::enrich::cache::CachedRegistry;
use crate::enrich::{EnrichError, Registry};
use crate::evaluate::ControlPolicy;
use crate::facts::{ListedRepository, RegistryFacts};
use crate::parse::{self, AuditEvent, Change, InputFormat, ParseContext};
use crate::plan::{self, EventPlan, Plan, Planner, RejectedMessage, SignatureReads};
use crate::store::{BatchOutcome, Committed, Store, StoreError};
use crate::telemetry::{EventKind, Happened, Metrics, RetryCode, ReverifyCause};

/// One message as a source hands it over.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// `sqs` or `file`: kept with rejected messages.
    pub source: &'static str,
    /// The SQS message id or `FILE:LINE`, for logs and rejected records.
    pub message_id: Option<String>,
    pub body: Vec<u8>,
    pub format: InputFormat,
    /// When the queue received the message (SQS `SentTimestamp`), which the sender cannot
    /// choose; `None` for files. An event dated far from it is clamped
    /// ([`parse::bound_event_time`]).
    pub sent_at: Option<chrono::DateTime<Utc>>,
}

/// What the source must do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageFate {
    /// Effects committed (or none needed): delete the message.
    Done(Committed),
    /// A transient failure: keep the message and try again after a backoff.
    Retry { code: RetryCode, reason: String },
    /// A failure that retrying will not fix: keep the message so SQS redrives it to the DLQ.
    DeadLetter { code: RetryCode, reason: String },
}

/// The stages, wired; built with [`Pipeline::builder`].
pub struct Pipeline {
    registry: CachedRegistry<Arc<dyn Registry>>,
    store: Store,
    metrics: Arc<Metrics>,
    parse_context: ParseContext,
    planner: Planner,
    /// What signatures are verified against (`crate::trust`).
    trust: Arc<crate::trust::TrustSettings>,
}

enum Prepared {
    Plan(Plan),
    Failed(EnrichError),
}

impl Pipeline {
    /// Starts wiring a pipeline that reads through `registry` (cached) and writes to `store`.
    pub fn builder(registry: Arc<dyn Registry>, store: Store) -> PipelineBuilder {
        PipelineBuilder::new(registry, store)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn policy(&self) -> &ControlPolicy {
        &self.planner.policy
    }

    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// The trust configuration signatures are verified against.
    pub fn trust(&self) -> &crate::trust::TrustSettings {
        &self.trust
    }

    /// Drops every cached fact of one registry (a sweep is about to read it afresh).
    pub(crate) fn forget_registry(&self, account: &AccountId, region: &Region) {
        self.registry.invalidate_registry(account, region);
    }

    /// Lets the event path reuse what a sweep read at `started` (see
    /// [`CachedRegistry::remember`]).
    pub(crate) fn remember_sweep(
        &self,
        registry: (&AccountId, &Region, &RegistryFacts),
        repositories: &[ListedRepository],
        started: std::time::Instant,
    ) {
        self.registry.remember(registry, repositories, started);
    }

    /// Plans one event (read facts + plan) without committing it.
    ///
    /// # Errors
    /// [`EnrichError`] when AWS could not answer for now.
    pub async fn plan(&self, event: AuditEvent) -> Result<EventPlan, EnrichError> {
        self.invalidate_for(&event);
        self.plan_event(event).await
    }

    /// The same pipeline writing through `store` (e.g. one that queues alert events).
    #[must_use]
    pub(crate) fn with_store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether ECR holds `digest` in a repository now (`DescribeImages`, not cached).
    ///
    /// # Errors
    /// [`EnrichError`] when AWS could not answer for now.
    pub(crate) async fn image_exists(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<bool, EnrichError> {
        Ok(matches!(
            self.registry.image(key, digest).await?,
            crate::facts::ImageLookup::Found(_)
        ))
    }

    /// Runs a batch; the fates are in the order of `messages`.
    pub async fn process_batch(&self, messages: &[InboundMessage]) -> Vec<MessageFate> {
        let parsed: Vec<Result<AuditEvent, RejectedMessage>> =
            messages.iter().map(|m| self.parse(m)).collect();
        // Invalidate before any read of the batch, so a push batched with a settings change
        // sees the new settings.
        for event in parsed.iter().flatten() {
            self.invalidate_for(event);
        }
        let prepared: Vec<Prepared> =
            futures::future::join_all(parsed.into_iter().map(|p| self.prepare(p))).await;
        let plans = Self::attribute_repository_changes(&prepared);
        let committed = self.commit(&plans).await;
        let fates = Self::fates(&prepared, committed);
        for ((message, prepared), fate) in messages.iter().zip(&prepared).zip(&fates) {
            self.observe(message, prepared, fate);
        }
        fates
    }

    fn parse(&self, message: &InboundMessage) -> Result<AuditEvent, RejectedMessage> {
        let mut event =
            parse::parse(&message.body, message.format, &self.parse_context).map_err(|err| {
                RejectedMessage {
                    source: message.source,
                    message_id: message.message_id.clone(),
                    code: err.rejection_code(),
                    reason: err.to_string(),
                    body: message.body.clone(),
                }
            })?;
        // Counted with the plan's other distrusted claims once it is committed (`observe`).
        if let Some(sent_at) = message.sent_at {
            parse::bound_event_time(&mut event, sent_at);
        }
        Ok(event)
    }

    async fn prepare(&self, parsed: Result<AuditEvent, RejectedMessage>) -> Prepared {
        match parsed {
            Err(rejected) => Prepared::Plan(Plan::Rejected(rejected)),
            Ok(event) => match self.plan_event(event).await {
                Ok(plan) => Prepared::Plan(Plan::Event(Box::new(plan))),
                Err(err) => Prepared::Failed(err),
            },
        }
    }

    /// One fate per message: a failed read retries, the others take their commit's result.
    fn fates(prepared: &[Prepared], committed: Vec<MessageFate>) -> Vec<MessageFate> {
        let mut committed = committed.into_iter();
        prepared
            .iter()
            .map(|p| match p {
                Prepared::Failed(err) => MessageFate::Retry {
                    code: err.code(),
                    reason: err.to_string(),
                },
                Prepared::Plan(_) => committed.next().unwrap_or(MessageFate::Retry {
                    code: RetryCode::Internal,
                    reason: "no commit result".to_owned(),
                }),
            })
            .collect()
    }

    /// The plans to commit, with repository reads of events that may not move control state
    /// marked as such ([`plan::attribute_repository_changes`]).
    fn attribute_repository_changes(prepared: &[Prepared]) -> Vec<Plan> {
        prepared
            .iter()
            .filter_map(|p| match p {
                Prepared::Plan(Plan::Event(plan)) => {
                    let mut plan = plan.clone();
                    plan::attribute_repository_changes(&mut plan);
                    Some(Plan::Event(plan))
                }
                Prepared::Plan(plan) => Some(plan.clone()),
                Prepared::Failed(_) => None,
            })
            .collect()
    }

    /// Commits the batch; when the database refuses it, commits plan by plan so that one bad
    /// message does not hold back the others.
    async fn commit(&self, plans: &[Plan]) -> Vec<MessageFate> {
        if plans.is_empty() {
            return Vec::new();
        }
        match self.commit_plans(plans).await {
            Ok(outcome) => outcome
                .committed
                .into_iter()
                .map(MessageFate::Done)
                .collect(),
            Err(err) if !err.is_transient() && plans.len() > 1 => {
                let mut fates = Vec::with_capacity(plans.len());
                for plan in plans {
                    fates.push(match self.commit_plans(std::slice::from_ref(plan)).await {
                        Ok(outcome) => MessageFate::Done(
                            outcome
                                .committed
                                .first()
                                .copied()
                                .unwrap_or(Committed::Duplicate),
                        ),
                        Err(err) => store_fate(&err),
                    });
                }
                fates
            }
            Err(err) => plans.iter().map(|_| store_fate(&err)).collect(),
        }
    }

    /// Commits plans in one transaction and counts what they did: the one commit path of
    /// event batches and of the reconcile sweep.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails or refuses the batch; nothing is committed.
    pub(crate) async fn commit_plans(&self, plans: &[Plan]) -> Result<BatchOutcome, StoreError> {
        let outcome = self.store.commit_batch(plans).await?;
        self.record_commit(&outcome);
        self.record_scanning_disagreements(plans);
        Ok(outcome)
    }

    /// Counts each committed repository judgement where AWS's scanning answer differed from
    /// the registry rules as evaluated here.
    fn record_scanning_disagreements(&self, plans: &[Plan]) {
        let writes = plans.iter().filter_map(|plan| match plan {
            Plan::Event(event) => Some(&event.repositories),
            Plan::Rejected(_) => None,
        });
        for write in writes.flatten() {
            for fact in &write.scanning_disagreements {
                Happened::ScanningDisagreed {
                    fact: *fact,
                    repository: write.key.name.as_str(),
                }
                .record(&self.metrics);
            }
        }
    }

    /// Counts what a committed batch did.
    pub(crate) fn record_commit(&self, outcome: &BatchOutcome) {
        Happened::BatchCommitted {
            first_unsigned: outcome.first_unsigned,
            regressions: &outcome.regressions,
            blinded: &outcome.blinded,
            restored: &outcome.restored,
            evidence_lock_held: outcome.evidence_lock_held,
        }
        .record(&self.metrics);
        if outcome.reverify_scheduled > 0 {
            Happened::ReverifyScheduled {
                cause: ReverifyCause::Revocation,
                count: outcome.reverify_scheduled,
            }
            .record(&self.metrics);
        }
    }

    /// Makes the signature re-check of up to `limit` current digests whose verdict is older
    /// than `interval` due now (scheduled re-verification); returns how many.
    ///
    /// # Errors
    /// When the database fails; the digests stay stale and are chosen next time.
    pub async fn schedule_stale_reverifications(
        &self,
        interval: std::time::Duration,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let now = chrono::Utc::now();
        let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        let stale_before = now.checked_sub_signed(interval).unwrap_or(now);
        let count = self
            .store
            .schedule_stale_reverifications(stale_before, limit, now)
            .await?;
        if count > 0 {
            Happened::ReverifyScheduled {
                cause: ReverifyCause::Schedule,
                count,
            }
            .record(&self.metrics);
        }
        Ok(count)
    }

    /// Runs up to `limit` due signature re-checks; returns how many were claimed.
    ///
    /// # Errors
    /// When the database fails; the claims are released and run again later.
    pub async fn run_due_rechecks(&self, limit: i64) -> Result<usize, StoreError> {
        let (tx, claims) = self.store.claim_rechecks(limit).await?;
        // The claim's transaction stays open across the AWS reads below; keep it small.
        if claims.is_empty() {
            let _ = tx.rollback().await;
            return Ok(0);
        }
        let count = claims.len();
        let mut results = Vec::with_capacity(count);
        for claim in claims {
            let attempts = u32::try_from(claim.attempts).unwrap_or(0) + 1;
            let reads = SignatureReads::new(
                claim.key.clone(),
                claim.digest.clone(),
                claim.pushed_at,
                attempts,
                true,
                (Utc::now(), self.planner.signing_grace),
            );
            let result = match self.read_signatures(reads).await {
                Ok(write) => Ok(write),
                Err(err) => {
                    warn!(image.digest = %claim.digest, repository.name = %claim.key.name, "signature re-check failed, retrying later: {err}");
                    Err(Utc::now() + chrono::Duration::seconds(30))
                }
            };
            results.push((claim, result));
        }
        let first_unsigned = self.store.finish_rechecks(tx, results).await?;
        Happened::RechecksCommitted { first_unsigned }.record(&self.metrics);
        Ok(count)
    }

    /// Re-verifies, through the re-check queue, every current digest whose verdict was
    /// reached under another trust configuration than this pipeline's; returns how many.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn requeue_for_trust_change(&self) -> Result<u64, StoreError> {
        let version = self.trust.version();
        // The default policy's version depends on each registry's rules: any version of this
        // build's default family is current (a rule change is caught by pushes and the schedule).
        let requeued = if self.trust.aws_signer_default {
            let family = crate::trust::aws_signer::version_family();
            self.store
                .requeue_signatures_outside_family(&family)
                .await?
        } else {
            self.store.requeue_signatures_for_policy(&version).await?
        };
        if requeued > 0 {
            tracing::info!(
                policy_version = %version,
                digests = requeued,
                "trust configuration differs from the one current verdicts were reached under: re-verifying"
            );
        }
        Ok(requeued)
    }

    /// Records what happened to one message: its log line and its counters.
    fn observe(&self, message: &InboundMessage, prepared: &Prepared, fate: &MessageFate) {
        let (kind, event_time) = match prepared {
            Prepared::Plan(Plan::Event(plan)) => {
                (plan.event.change.event_kind(), Some(plan.event.time))
            }
            Prepared::Plan(Plan::Rejected(_)) => (EventKind::Unparseable, None),
            Prepared::Failed(_) => (EventKind::Unknown, None),
        };
        let message_id = message.message_id.as_deref().unwrap_or("-");
        if let (Prepared::Plan(Plan::Event(plan)), MessageFate::Done(Committed::Processed)) =
            (prepared, fate)
        {
            for distrusted in plan.all_distrusted() {
                Happened::Distrusted {
                    hint: distrusted.hint,
                    message_id,
                    note: &distrusted.note,
                }
                .record(&self.metrics);
            }
        }
        let happened = match fate {
            MessageFate::Done(Committed::Processed) => Happened::Processed {
                kind,
                lag: event_time.map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0),
            },
            MessageFate::Done(Committed::Ignored) => Happened::Ignored { kind },
            MessageFate::Done(Committed::Duplicate) => Happened::Duplicate { kind },
            MessageFate::Done(Committed::Rejected) => match prepared {
                Prepared::Plan(Plan::Rejected(rejected)) => Happened::Rejected {
                    kind,
                    code: rejected.code,
                    message_id,
                    reason: &rejected.reason,
                },
                // A rejection is only ever committed for a rejected plan.
                _ => return,
            },
            MessageFate::Retry { code, reason } | MessageFate::DeadLetter { code, reason } => {
                Happened::Retried {
                    kind,
                    code: *code,
                    message_id,
                    reason,
                }
            }
        };
        happened.record(&self.metrics);
    }

    fn invalidate_for(&self, event: &AuditEvent) {
        match &event.change {
            Change::RepositoryChanged { repository, .. } => {
                self.registry
                    .invalidate(&plan::repository_key(event, repository));
            }
            Change::RegistryChanged { .. } => {
                self.registry
                    .invalidate_registry(&event.account, &event.region);
            }
            _ => {}
        }
    }
}

fn store_fate(err: &StoreError) -> MessageFate {
    if err.is_transient() {
        MessageFate::Retry {
            code: err.code(),
            reason: err.to_string(),
        }
    } else {
        MessageFate::DeadLetter {
            code: err.code(),
            reason: err.to_string(),
        }
    }
}
