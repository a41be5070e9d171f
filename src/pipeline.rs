//! One batch through the stages: parse → enrich → evaluate → store.
//!
//! The pipeline decides each message's fate ([`MessageFate`]) and leaves carrying it out to
//! the source (delete from SQS, change visibility, count a line of a file). Its effects are
//! committed in one transaction per batch before any fate says "delete".

use std::sync::Arc;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use tracing::{info, warn};

use crate::domain::{Digest, RepositoryKey, SignatureStatus};
use crate::enrich::cache::CachedRegistry;
use crate::enrich::{EnrichError, Fact, ImageLookup, Registry, RepositoryFacts};
use crate::evaluate::artifact::artifact_subject;
use crate::evaluate::signature::{SignatureFacts, signature_verdict};
use crate::evaluate::{self, ControlPolicy};
use crate::export::metrics::{EventOutcome, Metrics};
use crate::parse::{self, AuditEvent, Change, InputFormat, ParseContext};
use crate::store::{
    Committed, EventPlan, ImagePresence, ImageWrite, Plan, RejectedMessage, RepositoryWrite,
    ScanWrite, SignatureWrite, Store, StoreError,
};

/// How many repositories a registry-wide change re-reads at once.
const REGISTRY_FANOUT: usize = 8;

/// One message as a source hands it over.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// `sqs` or `file`: kept with rejected messages.
    pub source: &'static str,
    /// The SQS message id or `FILE:LINE`, for logs and rejected records.
    pub message_id: Option<String>,
    pub body: Vec<u8>,
    pub format: InputFormat,
}

/// What the source must do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageFate {
    /// Effects committed (or none needed): delete the message.
    Done(Committed),
    /// A transient failure: keep the message and try again after a backoff.
    Retry { code: &'static str, reason: String },
    /// A failure that retrying will not fix: keep the message so SQS redrives it to the DLQ.
    DeadLetter { code: &'static str, reason: String },
}

/// The stages, wired.
pub struct Pipeline {
    registry: CachedRegistry<Arc<dyn Registry>>,
    store: Store,
    metrics: Arc<Metrics>,
    parse_context: ParseContext,
    policy: ControlPolicy,
    signing_grace: chrono::Duration,
}

/// The pipeline's judgement settings.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub parse_context: ParseContext,
    pub policy: ControlPolicy,
    /// How long a push may stay unsigned before it counts as `UNSIGNED`.
    pub signing_grace: chrono::Duration,
}

/// What [`Pipeline::plan_present_image`] found.
struct PresentImage {
    image: ImageWrite,
    repository: RepositoryWrite,
    signatures: Vec<SignatureWrite>,
    scans: Vec<ScanWrite>,
    /// Whether ECR still has the digest.
    exists: bool,
}

enum Prepared {
    Plan(Plan),
    Failed(EnrichError),
}

impl Pipeline {
    pub fn new(
        registry: CachedRegistry<Arc<dyn Registry>>,
        store: Store,
        metrics: Arc<Metrics>,
        settings: PipelineSettings,
    ) -> Self {
        Self {
            registry,
            store,
            metrics,
            parse_context: settings.parse_context,
            policy: settings.policy,
            signing_grace: settings.signing_grace,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn policy(&self) -> &ControlPolicy {
        &self.policy
    }

    /// Drops every cached fact of one registry (a sweep is about to read it afresh).
    pub fn forget_registry(
        &self,
        account: &crate::domain::AccountId,
        region: &crate::domain::Region,
    ) {
        self.registry.invalidate_registry(account, region);
    }

    /// Plans one event (enrich + evaluate) without committing it.
    ///
    /// # Errors
    /// [`EnrichError`] when AWS could not answer for now.
    pub async fn plan(&self, event: AuditEvent) -> Result<EventPlan, EnrichError> {
        self.invalidate_for(&event);
        self.plan_event(event).await
    }

    /// The same pipeline writing through `store` (e.g. one that queues alert events).
    #[must_use]
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs a batch; the fates are in the order of `messages`.
    pub async fn process_batch(&self, messages: &[InboundMessage]) -> Vec<MessageFate> {
        let parsed: Vec<Result<AuditEvent, RejectedMessage>> = messages
            .iter()
            .map(|m| {
                parse::parse(&m.body, m.format, &self.parse_context).map_err(|err| {
                    RejectedMessage {
                        source: m.source,
                        message_id: m.message_id.clone(),
                        code: err.code(),
                        reason: err.to_string(),
                        body: m.body.clone(),
                    }
                })
            })
            .collect();

        // Invalidate before any read of the batch, so a push batched with a settings change
        // sees the new settings.
        for event in parsed.iter().flatten() {
            self.invalidate_for(event);
        }

        let prepared: Vec<Prepared> =
            futures::future::join_all(parsed.into_iter().map(|p| async {
                match p {
                    Err(rejected) => Prepared::Plan(Plan::Rejected(rejected)),
                    Ok(event) => match self.plan_event(event).await {
                        Ok(plan) => Prepared::Plan(Plan::Event(Box::new(plan))),
                        Err(err) => Prepared::Failed(err),
                    },
                }
            }))
            .await;

        let plans = Self::attribute_repository_changes(&prepared);
        let committed = self.commit(&plans).await;

        let mut committed = committed.into_iter();
        let fates: Vec<MessageFate> = prepared
            .iter()
            .map(|p| match p {
                Prepared::Failed(err) => MessageFate::Retry {
                    code: err.code(),
                    reason: err.to_string(),
                },
                Prepared::Plan(_) => committed.next().unwrap_or(MessageFate::Retry {
                    code: "internal",
                    reason: "no commit result".to_owned(),
                }),
            })
            .collect();

        for ((message, prepared), fate) in messages.iter().zip(&prepared).zip(&fates) {
            self.observe(message, prepared, fate);
        }
        fates
    }

    /// Only the events that change a repository's settings (CloudTrail calls, with their
    /// caller), a repository's first sighting, and reconcile move its control state. A push or
    /// a scan reads the repository too, and may read a change whose own event has not been
    /// processed yet: recording the transition there would attribute it to the push, with no
    /// caller. So such reads of a known repository are used for the image (settings at push)
    /// but written only if the repository is not stored yet (decided inside the transaction,
    /// so concurrent batches cannot race it); the change's own event (or, if it is lost, the
    /// next reconcile sweep) records the transition.
    fn attribute_repository_changes(prepared: &[Prepared]) -> Vec<Plan> {
        prepared
            .iter()
            .filter_map(|p| match p {
                Prepared::Plan(Plan::Event(plan))
                    if !matches!(
                        plan.event.change,
                        Change::RepositoryChanged { .. } | Change::RegistryChanged { .. }
                    ) =>
                {
                    let mut plan = plan.clone();
                    for write in &mut plan.repositories {
                        write.only_if_new = true;
                    }
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
        match self.store.commit_batch(plans).await {
            Ok(outcome) => {
                self.record_commit(&outcome);
                outcome
                    .committed
                    .into_iter()
                    .map(MessageFate::Done)
                    .collect()
            }
            Err(err) if !err.is_transient() && plans.len() > 1 => {
                let mut fates = Vec::with_capacity(plans.len());
                for plan in plans {
                    fates.push(
                        match self.store.commit_batch(std::slice::from_ref(plan)).await {
                            Ok(outcome) => {
                                self.record_commit(&outcome);
                                MessageFate::Done(
                                    outcome
                                        .committed
                                        .first()
                                        .copied()
                                        .unwrap_or(Committed::Duplicate),
                                )
                            }
                            Err(err) => store_fate(&err),
                        },
                    );
                }
                fates
            }
            Err(err) => plans.iter().map(|_| store_fate(&err)).collect(),
        }
    }

    /// Counts what a committed batch did (also for batches committed by the reconcile sweep).
    pub fn record_commit(&self, outcome: &crate::store::BatchOutcome) {
        self.metrics.unsigned_pushes(outcome.first_unsigned);
        self.metrics.control_regressions(&outcome.regressions);
        self.metrics.batch_committed();
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
            let result = match self
                .signature_write(&claim.key, &claim.digest, claim.pushed_at, attempts, true)
                .await
            {
                Ok(write) => Ok(write),
                Err(err) => {
                    warn!(image.digest = %claim.digest, repository.name = %claim.key.name, "signature re-check failed, retrying later: {err}");
                    Err(Utc::now() + chrono::Duration::seconds(30))
                }
            };
            results.push((claim, result));
        }
        let first_unsigned = self.store.finish_rechecks(tx, results).await?;
        self.metrics.unsigned_pushes(first_unsigned);
        Ok(count)
    }

    /// Reads the signature sources of a digest and judges it, with the next re-check.
    /// `every_source` is false only for a digest's own push event (see below).
    async fn signature_write(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
        pushed_at: DateTime<Utc>,
        attempts: u32,
        every_source: bool,
    ) -> Result<SignatureWrite, EnrichError> {
        // Inside the grace window the verdict cannot be UNSIGNED, so the Cosign tag look-up
        // (a third call) is left to the re-checks and to the signature's own push event; once
        // the window is over every source is read, as a missed signature would be a false
        // UNSIGNED.
        let cosign_tag = every_source || Utc::now() >= pushed_at + self.signing_grace;
        let (managed, artifacts) = tokio::join!(
            self.registry.signing_statuses(key, digest),
            self.registry.signature_artifacts(key, digest, cosign_tag)
        );
        let managed = managed?;
        let artifacts = artifacts?;
        let mut profiles = BTreeMap::new();
        if let Fact::Known(entries) = &managed {
            for entry in entries.iter().filter(|m| m.status == "COMPLETE") {
                if !profiles.contains_key(&entry.profile_arn) {
                    let status = self.registry.profile_status(&entry.profile_arn).await?;
                    profiles.insert(entry.profile_arn.clone(), status);
                }
            }
        }
        let facts = SignatureFacts {
            managed,
            artifacts,
            profiles,
        };
        let checked_at = Utc::now();
        let verdict = signature_verdict(&facts, pushed_at, checked_at, self.signing_grace);
        let next_check = next_signature_check(
            verdict.status,
            pushed_at + self.signing_grace,
            checked_at,
            attempts,
        );
        Ok(SignatureWrite {
            key: key.clone(),
            digest: digest.clone(),
            pushed_at,
            verdict,
            checked_at,
            next_check,
        })
    }

    fn observe(&self, message: &InboundMessage, prepared: &Prepared, fate: &MessageFate) {
        let (kind, event_time) = match prepared {
            Prepared::Plan(Plan::Event(plan)) => (plan.event.change.kind(), Some(plan.event.time)),
            Prepared::Plan(Plan::Rejected(_)) => ("unparseable", None),
            Prepared::Failed(_) => ("unknown", None),
        };
        let id = message.message_id.as_deref().unwrap_or("-");
        match fate {
            MessageFate::Done(Committed::Processed) => {
                self.metrics.event(kind, EventOutcome::processed);
                if let Some(time) = event_time {
                    let lag = (Utc::now() - time).num_milliseconds() as f64 / 1000.0;
                    self.metrics.event_committed(lag);
                }
            }
            MessageFate::Done(Committed::Ignored) => {
                self.metrics.event(kind, EventOutcome::ignored)
            }
            MessageFate::Done(Committed::Duplicate) => {
                self.metrics.event(kind, EventOutcome::duplicate);
            }
            MessageFate::Done(Committed::Rejected) => {
                self.metrics.event(kind, EventOutcome::rejected);
                if let Prepared::Plan(Plan::Rejected(rejected)) = prepared {
                    self.metrics.rejected(rejected.code);
                    warn!(
                        message.id = id,
                        rejection.code = rejected.code,
                        "rejected message {id}: {}",
                        rejected.reason
                    );
                }
            }
            MessageFate::Retry { code, reason } | MessageFate::DeadLetter { code, reason } => {
                self.metrics.event(kind, EventOutcome::retried);
                self.metrics.retried(code);
                warn!(
                    message.id = id,
                    error.code = *code,
                    "message {id} left on the queue: {reason}"
                );
            }
        }
    }

    fn invalidate_for(&self, event: &AuditEvent) {
        match &event.change {
            Change::RepositoryChanged { repository, .. } => {
                self.registry.invalidate(&RepositoryKey {
                    account: event.account.clone(),
                    region: event.region.clone(),
                    name: repository.clone(),
                })
            }
            Change::RegistryChanged { .. } => {
                self.registry
                    .invalidate_registry(&event.account, &event.region);
            }
            _ => {}
        }
    }

    fn key(event: &AuditEvent, repository: &crate::domain::RepositoryName) -> RepositoryKey {
        RepositoryKey {
            account: event.account.clone(),
            region: event.region.clone(),
            name: repository.clone(),
        }
    }

    async fn repository_write(&self, key: RepositoryKey) -> Result<RepositoryWrite, EnrichError> {
        let (facts, registry) = tokio::join!(
            self.registry.repository(&key),
            self.registry.registry(&key.account, &key.region)
        );
        let facts: RepositoryFacts = facts?;
        let registry = registry?;
        Ok(repository_write(key, facts, &registry, &self.policy))
    }

    async fn plan_event(&self, event: AuditEvent) -> Result<EventPlan, EnrichError> {
        let mut plan = EventPlan {
            ignored: false,
            repositories: Vec::new(),
            image: None,
            signatures: Vec::new(),
            scans: Vec::new(),
            event,
        };
        let event = &plan.event;
        match &event.change {
            Change::ImagePushed {
                repository,
                digest,
                tag,
                ..
            }
            | Change::ImagePushRecorded {
                repository,
                digest,
                tag,
            } => {
                let key = Self::key(event, repository);
                // The CloudTrail record of a push whose image action was already evaluated only
                // adds who pushed: no AWS call (either event may be lost, so whichever comes
                // first does the full evaluation).
                if let Change::ImagePushRecorded { tag, .. } = &event.change {
                    let evaluated = self.image_evaluated(&key, digest).await?;
                    if evaluated {
                        plan.image = Some(ImageWrite {
                            key,
                            digest: digest.clone(),
                            presence: ImagePresence::Pushed,
                            event_time: event.time,
                            lookup: None,
                            push_tag: tag.clone(),
                            settings: None,
                            pushed_by: event.actor.clone(),
                            storage_class: None,
                            artifact: None,
                        });
                        return Ok(plan);
                    }
                }
                let pushed_by = match &event.change {
                    Change::ImagePushRecorded { .. } => event.actor.clone(),
                    _ => None,
                };
                let found = self
                    .plan_present_image(event, key, digest, tag.clone(), pushed_by)
                    .await?;
                plan.image = Some(found.image);
                plan.repositories.push(found.repository);
                plan.signatures.extend(found.signatures);
                plan.scans.extend(found.scans);
            }
            Change::ImageDeleted {
                repository, digest, ..
            } => {
                plan.image = Some(ImageWrite {
                    key: Self::key(event, repository),
                    digest: digest.clone(),
                    presence: ImagePresence::Deleted,
                    event_time: event.time,
                    lookup: None,
                    push_tag: None,
                    settings: None,
                    pushed_by: None,
                    storage_class: None,
                    artifact: None,
                });
            }
            Change::ImageStorageClassChanged {
                repository,
                digest,
                storage_class,
            } => {
                let key = Self::key(event, repository);
                let lookup = self.registry.image(&key, digest).await?;
                plan.image = Some(ImageWrite {
                    key,
                    digest: digest.clone(),
                    presence: ImagePresence::Unchanged,
                    event_time: event.time,
                    lookup: Some((Utc::now(), lookup)),
                    push_tag: None,
                    settings: None,
                    pushed_by: None,
                    storage_class: storage_class.clone(),
                    artifact: None,
                });
            }
            Change::ReferrerChanged {
                repository, digest, ..
            } => {
                let key = Self::key(event, repository);
                if let ImageLookup::Found(facts) = self.registry.image(&key, digest).await?
                    && let Some((subject, _)) = artifact_subject(
                        facts.artifact_media_type.as_deref(),
                        facts.subject_digest.as_ref(),
                        &facts.tags,
                    )
                    && let Some(write) = self.subject_signature_write(&key, &subject).await?
                {
                    plan.signatures.push(write);
                }
            }
            Change::ScanCompleted {
                repository, digest, ..
            }
            | Change::FindingChanged {
                repository, digest, ..
            } => {
                let key = Self::key(event, repository);
                // Events arrive in any order: a scan result about a digest whose push is not
                // recorded yet (still in flight in another batch, or lost) evaluates the
                // image in full, so the result has a row to land on and a slower push
                // carrying an older scan state cannot overwrite it.
                let evaluated = self.image_evaluated(&key, digest).await?;
                if !evaluated {
                    let found = self
                        .plan_present_image(event, key.clone(), digest, None, None)
                        .await?;
                    if found.exists {
                        plan.image = Some(found.image);
                        plan.repositories.push(found.repository);
                        plan.signatures.extend(found.signatures);
                    }
                }
                // The event is a hint: the scan state is read back, whatever the event said.
                let checked_at = Utc::now();
                if let Fact::Known(facts) = self.registry.scan(&key, digest).await? {
                    plan.scans.push(ScanWrite {
                        key,
                        digest: digest.clone(),
                        facts,
                        checked_at,
                    });
                }
            }
            Change::RepositoryChanged { repository, .. } => {
                let write = self.repository_write(Self::key(event, repository)).await?;
                plan.repositories.push(write);
            }
            Change::RegistryChanged { .. } => {
                let keys = match self
                    .store
                    .known_repositories(&event.account, &event.region)
                    .await
                {
                    Ok(keys) => keys,
                    Err(err) => {
                        return Err(EnrichError::Transient {
                            operation: "store:known_repositories",
                            target: format!("{}/{}", event.account, event.region),
                            message: err.to_string(),
                        });
                    }
                };
                info!(
                    repositories = keys.len(),
                    "registry-wide change in {}/{}: re-reading every known repository",
                    event.account,
                    event.region
                );
                let writes: Vec<Result<RepositoryWrite, EnrichError>> = stream::iter(keys)
                    .map(|key| self.repository_write(key))
                    .buffered(REGISTRY_FANOUT)
                    .collect()
                    .await;
                plan.repositories = writes.into_iter().collect::<Result<_, _>>()?;
            }
            Change::FailedApiCall { .. } => {}
            Change::Ignored { .. } => plan.ignored = true,
        }
        Ok(plan)
    }

    /// Re-judges the subject of a signature artifact, when the subject still exists.
    /// Whether the digest was already evaluated; a database failure retries the message.
    async fn image_evaluated(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<bool, EnrichError> {
        self.store
            .image_evaluated(key, digest)
            .await
            .map_err(|err| EnrichError::Transient {
                operation: "store:image_evaluated",
                target: key.to_string(),
                message: err.to_string(),
            })
    }

    /// Everything a digest that exists now means: the image row (settings at push, artifact
    /// or not), its repository, its signature verdict and the scan state `DescribeImages`
    /// reports.
    async fn plan_present_image(
        &self,
        event: &AuditEvent,
        key: RepositoryKey,
        digest: &Digest,
        tag: Option<String>,
        pushed_by: Option<crate::domain::Actor>,
    ) -> Result<PresentImage, EnrichError> {
        // Dated before the reads: a read is as old as its request, not its slowest sibling.
        let observed_at = Utc::now();
        let (repository_write, lookup) = tokio::join!(
            self.repository_write(key.clone()),
            self.registry.image(&key, digest)
        );
        let repository_write = repository_write?;
        let lookup = lookup?;
        // The tag this push wrote: the event's, or for an untagged event the only tag ECR
        // knows, if there is exactly one.
        let push_tag = tag.or_else(|| match &lookup {
            ImageLookup::Found(facts) if facts.tags.len() == 1 => facts.tags.first().cloned(),
            _ => None,
        });
        let settings = evaluate::image_settings(&repository_write.facts, push_tag.as_deref());
        let mut signatures = Vec::new();
        let mut scans = Vec::new();
        let mut artifact = None;
        if let ImageLookup::Found(facts) = &lookup {
            artifact = artifact_subject(
                facts.artifact_media_type.as_deref(),
                facts.subject_digest.as_ref(),
                &facts.tags,
            );
            match &artifact {
                // A signature arrived: its subject may have just become signed.
                Some((subject, kind)) if kind.is_signature() => {
                    if let Some(write) = self.subject_signature_write(&key, subject).await? {
                        signatures.push(write);
                    }
                }
                Some(_) => {}
                None => {
                    let pushed_at = facts.pushed_at.unwrap_or(event.time);
                    signatures.push(
                        self.signature_write(&key, digest, pushed_at, 0, false)
                            .await?,
                    );
                    scans.push(ScanWrite {
                        key: key.clone(),
                        digest: digest.clone(),
                        facts: facts.scan.clone(),
                        checked_at: observed_at,
                    });
                }
            }
        }
        let exists = matches!(lookup, ImageLookup::Found(_));
        Ok(PresentImage {
            image: ImageWrite {
                key,
                digest: digest.clone(),
                presence: ImagePresence::Pushed,
                event_time: event.time,
                lookup: Some((observed_at, lookup)),
                push_tag,
                settings: Some(settings),
                pushed_by,
                storage_class: None,
                artifact,
            },
            repository: repository_write,
            signatures,
            scans,
            exists,
        })
    }

    async fn subject_signature_write(
        &self,
        key: &RepositoryKey,
        subject: &Digest,
    ) -> Result<Option<SignatureWrite>, EnrichError> {
        match self.registry.image(key, subject).await? {
            ImageLookup::Found(facts) => {
                let pushed_at = facts.pushed_at.unwrap_or_else(Utc::now);
                Ok(Some(
                    self.signature_write(key, subject, pushed_at, 0, true)
                        .await?,
                ))
            }
            ImageLookup::NotFound | ImageLookup::Unreadable { .. } => Ok(None),
        }
    }
}

/// When to look at a digest's signatures again.
///
/// `PENDING`: soon and more slowly each time, but never later than the end of the grace
/// window, so `UNSIGNED` is declared on time. `UNSIGNED`, `FAILED`, `UNTRUSTED`: a few
/// widening checks (1 h, 2 h, 4 h, …) in case a signature arrives without an event; after
/// that the signature's own push event is what moves the digest. `SIGNED`: never.
pub fn next_signature_check(
    status: SignatureStatus,
    grace_deadline: DateTime<Utc>,
    now: DateTime<Utc>,
    attempts: u32,
) -> Option<DateTime<Utc>> {
    let doubling = |base_seconds: i64, cap_seconds: i64| {
        chrono::Duration::seconds((base_seconds << attempts.min(20)).min(cap_seconds))
    };
    match status {
        SignatureStatus::Signed => None,
        SignatureStatus::Pending if now < grace_deadline => {
            Some((now + doubling(2, 300)).min(grace_deadline + chrono::Duration::milliseconds(10)))
        }
        SignatureStatus::Pending => Some(now + doubling(30, 3600)),
        SignatureStatus::Unsigned | SignatureStatus::Failed | SignatureStatus::Untrusted => {
            (attempts < 6).then(|| now + doubling(3600, 86_400))
        }
    }
}

/// Evaluates one repository read against its registry's settings.
pub fn repository_write(
    key: RepositoryKey,
    facts: RepositoryFacts,
    registry: &crate::enrich::RegistryFacts,
    policy: &ControlPolicy,
) -> RepositoryWrite {
    let controls = evaluate::repository_controls(&facts, registry, policy);
    let scanning = match &facts.state {
        crate::enrich::RepositoryState::Present(settings) => evaluate::effective_scanning(
            &registry.scanning,
            key.name.as_str(),
            settings.scan_on_push,
        )
        .known()
        .cloned(),
        _ => None,
    };
    RepositoryWrite {
        key,
        facts,
        scanning,
        controls,
        only_if_new: false,
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

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;

    #[test]
    fn pending_rechecks_never_pass_the_end_of_the_grace_window() {
        let now = Utc::now();
        let deadline = now + Duration::seconds(3);
        for attempts in 0..10 {
            let due = next_signature_check(SignatureStatus::Pending, deadline, now, attempts)
                .expect("pending is re-checked");
            assert!(
                due > now && due <= deadline + Duration::milliseconds(10),
                "attempt {attempts}: {due}"
            );
        }
        let long = now + Duration::hours(1);
        assert_eq!(
            next_signature_check(SignatureStatus::Pending, long, now, 0),
            Some(now + Duration::seconds(2))
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Pending, long, now, 3),
            Some(now + Duration::seconds(16))
        );
    }

    #[test]
    fn settled_statuses_are_checked_a_few_more_times_then_left_to_events() {
        let now = Utc::now();
        let past = now - Duration::minutes(1);
        assert_eq!(
            next_signature_check(SignatureStatus::Signed, past, now, 0),
            None
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Unsigned, past, now, 0),
            Some(now + Duration::hours(1))
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Unsigned, past, now, 2),
            Some(now + Duration::hours(4))
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Untrusted, past, now, 6),
            None
        );
        assert_eq!(
            next_signature_check(SignatureStatus::Pending, past, now, 1),
            Some(now + Duration::seconds(60)),
            "managed signing still in progress after the window"
        );
    }
}
