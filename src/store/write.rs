//! The batch transaction behind [`super::Store::commit_batch`].

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::{PgPool, Postgres, Transaction};

use super::digest::{apply_signatures, lock_rechecks, postpone};
use super::sets::{RepositoryColumns, RepositoryRowKey, repository_row_key};
use super::wave::{Effects, apply_wave, waves};
use super::{
    BatchOutcome, Committed, EventPlan, ImagePresence, ImageWrite, Plan, RecheckClaim,
    RejectedMessage, RepositoryWrite, SignatureChange, SignatureWrite, StoreError,
};
use crate::alerts::outbox::{alert_kind, enqueue_all};
use crate::domain::{ControlId, ControlStatus, RepositoryKey, Verdict};
use crate::evidence::chain::{ChainedRecord, truncate_to_micros};
use crate::evidence::detail::{
    ControlTransitionDetail, EventDetail, ImageAfter, ImagePresenceLabel, RegressedAndRestored,
    RepositoryAfter, RepositoryStateLabel, ScanAfter, SignatureAfter, SignatureTransitionDetail,
    to_detail_value,
};
use crate::evidence::kind::EvidenceKind;
use crate::evidence::write::{PendingRecord, append};
use crate::facts::{Disguise, ImageLookup, RepositoryState};
use crate::telemetry::FindingClass;

/// A control whose status an event changed: repository, control, old and new verdicts.
pub(super) type ControlChange = (
    String,
    ControlId,
    Option<Verdict>,
    Verdict,
    Option<RegressedAndRestored>,
);

/// The event ids of the batch that an earlier transaction already recorded.
async fn already_recorded(
    tx: &mut Transaction<'_, Postgres>,
    plans: &[Plan],
) -> Result<HashSet<String>, StoreError> {
    let event_ids: Vec<String> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Event(e) => Some(e.event.id.clone()),
            Plan::Rejected(_) => None,
        })
        .collect();
    Ok(
        sqlx::query_scalar::<_, String>("SELECT event_id FROM evidence WHERE event_id = ANY($1)")
            .bind(&event_ids)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect(),
    )
}

/// The records of plan `index`, the first one leading its group.
fn pending_records(
    index: usize,
    records: Vec<ChainedRecord>,
) -> impl Iterator<Item = PendingRecord> {
    records
        .into_iter()
        .enumerate()
        .map(move |(i, record)| PendingRecord {
            group: index,
            is_lead: i == 0,
            record,
        })
}

/// Starts a batch transaction (events, or signature re-checks). Every statement of a batch finds its rows by key, joined to the
/// batch's input rows; where a table's statistics lag behind its size (a new deployment's first
/// minutes, a large first sweep) the planner would scan the whole table for each statement
/// instead (docs/PERFORMANCE.md, "Set-based writes"). Without sequential scans the planner's
/// costs for the few small tables read whole (the evidence log's one row) pass the JIT
/// threshold, and compiling costs 40 ms for a statement of microseconds: no JIT either. For
/// this transaction only.
pub(super) const BEGIN_BATCH: &str = "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL jit = off";

/// A batch sorted by what becomes of each plan.
struct Partition<'a> {
    /// Rejected messages are `Rejected`; the rest `Duplicate` until applied.
    outcomes: Vec<Committed>,
    rejected: Vec<&'a RejectedMessage>,
    /// The events to apply (not recorded before, each id once), with their place in the batch.
    live: Vec<(usize, &'a EventPlan)>,
}

fn partition<'a>(plans: &'a [Plan], already: &HashSet<String>) -> Partition<'a> {
    let mut outcomes = vec![Committed::Duplicate; plans.len()];
    let mut rejected = Vec::new();
    let mut live = Vec::new();
    let mut seen = HashSet::new();
    for (index, plan) in plans.iter().enumerate() {
        match plan {
            Plan::Rejected(message) => {
                rejected.push(message);
                outcomes[index] = Committed::Rejected;
            }
            Plan::Event(plan) => {
                if !already.contains(&plan.event.id) && seen.insert(plan.event.id.as_str()) {
                    live.push((index, plan.as_ref()));
                }
            }
        }
    }
    Partition {
        outcomes,
        rejected,
        live,
    }
}

/// Applies a batch of plans in one transaction, as if each plan were committed alone in the
/// order the plans came (see `wave.rs`): rejected messages, then the events in waves of plans
/// that share no repository, each wave written with one statement per table.
pub(super) async fn commit_batch(
    pool: &PgPool,
    plans: &[Plan],
    settings: super::CommitSettings,
) -> Result<BatchOutcome, StoreError> {
    let mut tx = pool.begin_with(BEGIN_BATCH).await?;
    let already = already_recorded(&mut tx, plans).await?;
    let Partition {
        mut outcomes,
        rejected,
        live,
    } = partition(plans, &already);
    insert_rejected(&mut tx, &rejected).await?;
    let signatures: Vec<&SignatureWrite> = live.iter().flat_map(|(_, p)| &p.signatures).collect();
    lock_rechecks(&mut tx, &signatures).await?;

    let recorded_at = truncate_to_micros(Utc::now());
    let mut first_unsigned = 0;
    let mut reverify_scheduled = 0;
    let mut records: BTreeMap<usize, Vec<ChainedRecord>> = BTreeMap::new();
    for wave in waves(live) {
        let effects = apply_wave(&mut tx, &wave, settings.restored_window).await?;
        for (&(index, plan), effects) in wave.iter().zip(effects) {
            if let Some(reverify) = &plan.reverify {
                reverify_scheduled +=
                    super::reverify::schedule(&mut tx, reverify, recorded_at).await?;
            }
            let (plan_records, newly_unsigned) = plan_records(plan, effects, recorded_at);
            first_unsigned += newly_unsigned;
            records.insert(index, plan_records);
            outcomes[index] = if plan.ignored {
                Committed::Ignored
            } else {
                Committed::Processed
            };
        }
    }
    // In the order the plans came, as committing them one at a time would chain them.
    let pending: Vec<PendingRecord> = records
        .into_iter()
        .flat_map(|(index, records)| pending_records(index, records))
        .collect();

    let mut paged = PagedControls::default();
    if !pending.is_empty() {
        paged = append_to_chain(&mut tx, pending, &mut outcomes, settings.alerts).await?;
    }
    tx.commit().await?;
    // The head is locked in the append and released by the commit: every other appender waits
    // for this span (docs/PERFORMANCE.md, "Many workers"). Waiting for the lock is not in it.
    let evidence_lock_held = paged.locked_at.map(|at| at.elapsed());
    Ok(BatchOutcome {
        committed: outcomes,
        first_unsigned,
        regressions: paged.regressions,
        blinded: paged.blinded,
        restored: paged.restored,
        reverify_scheduled,
        evidence_lock_held,
    })
}

pub(super) async fn finish_rechecks(
    mut tx: Transaction<'static, Postgres>,
    results: Vec<(RecheckClaim, Result<SignatureWrite, DateTime<Utc>>)>,
    alerts: bool,
) -> Result<u64, StoreError> {
    let recorded_at = truncate_to_micros(Utc::now());
    let mut judged = Vec::new();
    for (claim, result) in &results {
        match result {
            Err(retry_at) => postpone(&mut tx, claim, *retry_at).await?,
            Ok(write) => judged.push((claim, write)),
        }
    }
    let writes: Vec<&SignatureWrite> = judged.iter().map(|(_, w)| *w).collect();
    let changes = apply_signatures(&mut tx, &writes, true).await?;
    let mut first_unsigned = 0;
    let mut pending = Vec::new();
    for ((claim, write), change) in judged.into_iter().zip(changes) {
        let Some(change) = change else {
            continue;
        };
        first_unsigned += u64::from(change.first_unsigned);
        let event_id = format!(
            "recheck/{}/{}/{}/{}/{}",
            claim.key.account,
            claim.key.region,
            claim.key.name,
            claim.digest,
            claim.attempts + 1
        );
        pending.push(PendingRecord {
            group: pending.len(),
            is_lead: false,
            record: signature_transition_record(
                &event_id,
                "signature_recheck",
                write,
                &change,
                recorded_at,
                None,
            ),
        });
    }
    if !pending.is_empty() {
        let mut ignored = vec![Committed::Processed; pending.len()];
        append_to_chain(&mut tx, pending, &mut ignored, alerts).await?;
    }
    tx.commit().await?;
    Ok(first_unsigned)
}

/// The evidence of a digest's signature status changing.
fn signature_transition_record(
    event_id: &str,
    cause_kind: &str,
    write: &SignatureWrite,
    change: &SignatureChange,
    recorded_at: DateTime<Utc>,
    actor: Option<String>,
) -> ChainedRecord {
    let detail = SignatureTransitionDetail {
        from: change.from,
        to: change.to,
        reason: write.verdict.reason.clone(),
        sources: write.verdict.sources.clone(),
        first_unsigned: change.first_unsigned,
        cause_kind: cause_kind.to_owned(),
        policy_version: write.verdict.policy_version.clone(),
        verifications: write.verdict.verifications.clone(),
    };
    ChainedRecord {
        seq: 0,
        recorded_at,
        event_id: event_id.to_owned(),
        event_time: truncate_to_micros(write.checked_at),
        kind: EvidenceKind::SignatureTransition,
        outcome: "processed".to_owned(),
        account: Some(write.key.account.to_string()),
        region: Some(write.key.region.to_string()),
        repository: Some(write.key.name.to_string()),
        digest: Some(write.digest.to_string()),
        tag: None,
        actor,
        detail: to_detail_value(&detail),
        prev_hash: String::new(),
        format_version: None,
    }
}

/// Keeps rejected messages, each body once.
async fn insert_rejected(
    tx: &mut Transaction<'_, Postgres>,
    rejected: &[&RejectedMessage],
) -> Result<(), StoreError> {
    if rejected.is_empty() {
        return Ok(());
    }
    let (mut digest, mut source, mut message_id, mut code, mut reason, mut body) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for message in rejected {
        digest.push(hex::encode(Sha256::digest(&message.body)));
        source.push(message.source);
        message_id.push(message.message_id.as_deref());
        code.push(message.code.as_str());
        reason.push(message.reason.as_str());
        body.push(message.body.as_slice());
    }
    sqlx::query(
        "INSERT INTO rejected_messages (body_sha256, source, message_id, code, reason, body)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
         ON CONFLICT (body_sha256) DO NOTHING",
    )
    .bind(&digest)
    .bind(&source)
    .bind(&message_id)
    .bind(&code)
    .bind(&reason)
    .bind(&body)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An event's evidence records (its own first, then one per control transition, removed
/// digest and signature transition it caused), not yet chained, from what applying it did;
/// and how many digests it made `UNSIGNED` for the first time.
fn plan_records(
    plan: &EventPlan,
    effects: Effects<'_>,
    recorded_at: DateTime<Utc>,
) -> (Vec<ChainedRecord>, u64) {
    let mut detail = event_detail(plan, effects.repositories);
    detail.settings_at_push = (!effects.derived.is_empty()).then_some(effects.derived);
    let base = event_record(plan, &detail, recorded_at);
    let mut records = vec![base.clone()];
    records.extend(
        effects
            .transitions
            .into_iter()
            .map(|change| control_transition_record(&base, plan, change)),
    );
    records.extend(
        plan.deletions
            .iter()
            .map(|image| removal_record(&base, plan, image)),
    );
    let event = &plan.event;
    let mut first_unsigned = 0;
    for (write, change) in effects.signature_changes {
        first_unsigned += u64::from(change.first_unsigned);
        records.push(signature_transition_record(
            &format!("{}/{}/signature", event.id, write.digest),
            event.change.kind(),
            write,
            &change,
            recorded_at,
            base.actor.clone(),
        ));
    }
    (records, first_unsigned)
}

/// The detail of an event's own record: what it wrote, as the history (`--at`) replays it.
fn event_detail(plan: &EventPlan, repositories: Vec<RepositoryAfter>) -> EventDetail {
    let scans = plan
        .scans
        .iter()
        .map(|s| ScanAfter {
            digest: s.digest.to_string(),
            raw_status: s.facts.as_ref().map(|f| f.raw_status.clone()),
            severity_counts: s.facts.as_ref().map(|f| f.severity_counts.clone()),
        })
        .collect::<Vec<_>>();
    let signatures = plan
        .signatures
        .iter()
        .map(|s| SignatureAfter {
            digest: s.digest.to_string(),
            status: s.verdict.status,
            reason: s.verdict.reason.clone(),
            sources: s.verdict.sources.clone(),
            policy_version: s.verdict.policy_version.clone(),
            verifications: s.verdict.verifications.clone(),
        })
        .collect::<Vec<_>>();
    EventDetail {
        detail_type: plan.event.detail_type.clone(),
        change: serde_json::to_value(&plan.event.change).unwrap_or(Value::Null),
        repositories: (!repositories.is_empty()).then_some(repositories),
        image_after: plan.image.as_ref().map(image_after),
        scans: (!scans.is_empty()).then_some(scans),
        signatures: (!signatures.is_empty()).then_some(signatures),
        distrusted: (!plan.distrusted.is_empty())
            .then(|| plan.distrusted.iter().map(|d| d.note.clone()).collect()),
        settings_at_push: None,
    }
}

/// The event's own record, not yet chained.
fn event_record(
    plan: &EventPlan,
    detail: &EventDetail,
    recorded_at: DateTime<Utc>,
) -> ChainedRecord {
    let event = &plan.event;
    ChainedRecord {
        seq: 0,
        recorded_at,
        event_id: event.id.clone(),
        event_time: truncate_to_micros(event.time),
        kind: EvidenceKind::parse(event.change.kind()),
        outcome: if plan.ignored { "ignored" } else { "processed" }.to_owned(),
        account: Some(event.account.to_string()),
        region: Some(event.region.to_string()),
        repository: event
            .change
            .repository()
            .map(ToString::to_string)
            .or_else(|| match plan.repositories.as_slice() {
                [only] => Some(only.key.name.to_string()),
                _ => None,
            }),
        digest: event.change.digest().map(ToString::to_string),
        tag: event.change.tag().map(str::to_owned),
        actor: event.actor.as_ref().map(|a| a.arn.clone()),
        detail: to_detail_value(detail),
        prev_hash: String::new(),
        format_version: None,
    }
}

/// Who a control transition is attributed to: the caller of the request that caused it, or
/// `unattributed` when the event names none (a reconcile sweep): never another event's caller.
pub(super) fn changed_by(event: &crate::parse::AuditEvent) -> &str {
    event
        .actor
        .as_ref()
        .map_or(crate::domain::UNATTRIBUTED, |a| a.arn.as_str())
}

/// The record of one digest a multi-digest event (or a deleted repository) removed or left in
/// place: an `image_deleted` record of that digest, so `images --at` replays it, naming who or
/// what deleted it; shares the event record's times, account and region.
fn removal_record(base: &ChainedRecord, plan: &EventPlan, image: &ImageWrite) -> ChainedRecord {
    let event = &plan.event;
    let detail = EventDetail {
        detail_type: event.detail_type.clone(),
        change: serde_json::json!({"cause_event_id": event.id, "cause_kind": event.change.kind()}),
        repositories: None,
        image_after: Some(image_after(image)),
        scans: None,
        signatures: None,
        distrusted: None,
        settings_at_push: None,
    };
    ChainedRecord {
        event_id: format!("{}/{}/{}", event.id, image.key.name, image.digest),
        repository: Some(image.key.name.to_string()),
        kind: EvidenceKind::ImageDeleted,
        outcome: "processed".to_owned(),
        digest: Some(image.digest.to_string()),
        tag: None,
        actor: image
            .removal
            .as_ref()
            .and_then(|note| note.cause.clone())
            .or_else(|| base.actor.clone()),
        detail: to_detail_value(&detail),
        ..base.clone()
    }
}

/// The record of a control transition an event caused; shares the event record's times,
/// account and region; its actor is [`changed_by`].
fn control_transition_record(
    base: &ChainedRecord,
    plan: &EventPlan,
    (repository, control, from, to, regressed_and_restored): ControlChange,
) -> ChainedRecord {
    let event = &plan.event;
    let detail = ControlTransitionDetail {
        control: control.as_str().to_owned(),
        from,
        to,
        cause_event_id: event.id.clone(),
        cause_kind: event.change.kind().to_owned(),
        regressed_and_restored,
        exception: None,
    };
    ChainedRecord {
        event_id: format!("{}/{}/{}", event.id, repository, control.as_str()),
        repository: Some(repository),
        kind: EvidenceKind::ControlTransition,
        outcome: "processed".to_owned(),
        digest: None,
        tag: None,
        detail: to_detail_value(&detail),
        actor: Some(changed_by(event).to_owned()),
        ..base.clone()
    }
}

/// Whether the repository exists (`None`: unknown) and its private settings, if it has them.
pub(super) fn repository_state_label(state: &RepositoryState) -> RepositoryStateLabel {
    match state {
        RepositoryState::Present(_) | RepositoryState::Public(_) => RepositoryStateLabel::Present,
        RepositoryState::Absent => RepositoryStateLabel::Absent,
        RepositoryState::Unreadable { .. } => RepositoryStateLabel::Unreadable,
    }
}

fn image_after(image: &ImageWrite) -> ImageAfter {
    let presence = match image.presence {
        ImagePresence::Pushed => ImagePresenceLabel::Pushed,
        ImagePresence::Deleted => ImagePresenceLabel::Deleted,
        ImagePresence::Unchanged => ImagePresenceLabel::Unchanged,
    };
    let found = match &image.lookup {
        Some((_, ImageLookup::Found(facts))) => Some(facts),
        _ => None,
    };
    let pushed_at = found
        .and_then(|facts| facts.pushed_at)
        .or((image.presence == ImagePresence::Pushed).then_some(image.event_time));
    // `pushed_at` and the artifact fields let `images --at` answer from the evidence alone.
    ImageAfter {
        presence,
        tags: found.map(|facts| facts.tags.clone()),
        settings: image.settings.clone(),
        pushed_by: image.pushed_by.as_ref().map(|a| a.arn.clone()),
        pushed_at: pushed_at
            .map(|t| truncate_to_micros(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        storage_class: image.storage_class.clone(),
        artifact_of: image
            .artifact
            .as_ref()
            .map(|(subject, _)| subject.to_string()),
        artifact_kind: image
            .artifact
            .as_ref()
            .map(|(_, kind)| kind.as_str().to_owned()),
        disguise: image.disguise.as_ref().map(Disguise::describe),
        deleted_reason: image.removal.as_ref().map(|note| note.reason.clone()),
        deleted_by: image.removal.as_ref().and_then(|note| note.cause.clone()),
    }
}

/// Who caused an event's control writes, when, and how soon a FAIL → PASS must follow a
/// PASS → FAIL to be "regressed and restored".
#[derive(Debug, Clone, Copy)]
pub(super) struct Cause<'a> {
    pub by: &'a str,
    pub at: DateTime<Utc>,
    pub restored_window: chrono::Duration,
    /// A sweep (or a re-read) observed it, no AWS event reported it.
    pub observed: bool,
}

/// Whether no AWS event reported the change: a reconcile sweep or a re-read observed it.
pub(super) fn is_observation(event: &crate::parse::AuditEvent) -> bool {
    matches!(
        event.change,
        crate::parse::Change::RepositoryChanged {
            call: crate::parse::RepositoryCall::ObservedByReconcile,
            ..
        }
    )
}

/// The class a failure starting now gets: history (`baseline`) when a sweep found it on a
/// control never evaluated before or in a registry no sweep has finished yet; else `new`.
fn failing_class(cause: Cause<'_>, first_evaluation: bool, first_sweep: bool) -> FindingClass {
    if cause.observed && (first_evaluation || first_sweep) {
        FindingClass::Baseline
    } else {
        FindingClass::New
    }
}

/// The registries (account, region) among `keys` that a reconcile sweep has finished.
async fn swept_registries(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[&RepositoryKey],
) -> Result<HashSet<(String, String)>, StoreError> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let columns: RepositoryColumns = keys.iter().copied().collect();
    let swept: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.account, r.region FROM reconcile_registries r
          WHERE (r.account, r.region) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(&columns.account)
    .bind(&columns.region)
    .fetch_all(&mut **tx)
    .await?;
    Ok(swept.into_iter().collect())
}

/// A control's last PASS → FAIL, when and by whom, while it lasts.
type StoredRegression = (Option<DateTime<Utc>>, Option<String>);

/// A control's stored row: control, status, reason, and its last PASS → FAIL (when and by
/// whom).
type ControlRow = (
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// A control whose status an event changed: the old and new verdicts, and the regression it
/// undoes when it is one ([`RegressedAndRestored`]).
pub(super) type ChangedControl = (
    ControlId,
    Option<Verdict>,
    Verdict,
    Option<RegressedAndRestored>,
);

/// The stored last regression after a write, and what a FAIL → PASS undoes: a PASS → FAIL
/// starts a regression by the cause's caller, another change ends it, no change keeps it.
fn next_regression(
    old: Option<ControlStatus>,
    new: ControlStatus,
    row: Option<&ControlRow>,
    cause: Cause<'_>,
) -> (StoredRegression, Option<RegressedAndRestored>) {
    let stored = row.map_or((None, None), |r| (r.3, r.4.clone()));
    if old == Some(new) {
        return (stored, None);
    }
    if old == Some(ControlStatus::Pass) && new == ControlStatus::Fail {
        return ((Some(cause.at), Some(cause.by.to_owned())), None);
    }
    let restored = match (old, new, stored) {
        (Some(ControlStatus::Fail), ControlStatus::Pass, (Some(at), by))
            if at <= cause.at && cause.at - at <= cause.restored_window =>
        {
            Some(RegressedAndRestored {
                regressed_by: by.unwrap_or_else(|| crate::domain::UNATTRIBUTED.to_owned()),
                regressed_at: at.to_rfc3339(),
                restored_by: cause.by.to_owned(),
                seconds: (cause.at - at).num_seconds(),
            })
        }
        _ => None,
    };
    ((None, None), restored)
}

/// One repository's control verdicts to write, and what caused them.
pub(super) struct ControlWrite<'a> {
    pub write: &'a RepositoryWrite,
    pub controls: &'a BTreeMap<ControlId, Verdict>,
    pub cause: Cause<'a>,
}

/// The input of the control-row statement, column by column.
#[derive(Default)]
struct ControlRows<'a> {
    keys: RepositoryColumns,
    control: Vec<&'static str>,
    status: Vec<&'static str>,
    reason: Vec<&'a str>,
    observed_at: Vec<DateTime<Utc>>,
    changed_by: Vec<&'a str>,
    regressed_at: Vec<Option<DateTime<Utc>>>,
    regressed_by: Vec<Option<String>>,
    cause_at: Vec<DateTime<Utc>>,
    class: Vec<Option<&'static str>>,
}

/// Writes the control verdicts of repositories (distinct ones) in one statement, their stored
/// rows read and locked first in key order. Returns, for each write, the controls whose status
/// changed, with the old and new verdicts (the old is `None` the first time a repository is
/// evaluated).
pub(super) async fn upsert_controls(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[ControlWrite<'_>],
) -> Result<Vec<Vec<ChangedControl>>, StoreError> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let current = stored_controls(tx, writes).await?;
    let observed: Vec<&RepositoryKey> = writes
        .iter()
        .filter(|item| item.cause.observed)
        .map(|item| &item.write.key)
        .collect();
    let swept = swept_registries(tx, &observed).await?;

    let mut rows = ControlRows::default();
    let mut changed = Vec::with_capacity(writes.len());
    for item in writes {
        let key = &item.write.key;
        let first_sweep = item.cause.observed
            && !swept.contains(&(
                key.account.as_str().to_owned(),
                key.region.as_str().to_owned(),
            ));
        let current = current
            .get(&repository_row_key(key))
            .map_or(&[][..], Vec::as_slice);
        changed.push(control_rows(item, current, first_sweep, &mut rows));
    }
    sqlx::query(UPSERT_CONTROLS)
        .bind(&rows.keys.account)
        .bind(&rows.keys.region)
        .bind(&rows.keys.repository)
        .bind(&rows.control)
        .bind(&rows.status)
        .bind(&rows.reason)
        .bind(&rows.observed_at)
        .bind(&rows.changed_by)
        .bind(&rows.regressed_at)
        .bind(&rows.regressed_by)
        .bind(&rows.cause_at)
        .bind(&rows.class)
        .execute(&mut **tx)
        .await?;
    Ok(changed)
}

/// A stored control row of one repository.
#[derive(sqlx::FromRow)]
struct StoredControl {
    account: String,
    region: String,
    repository: String,
    control: String,
    status: String,
    reason: String,
    regressed_at: Option<DateTime<Utc>>,
    regressed_by: Option<String>,
}

/// The stored control rows of the written repositories, read and locked in key order.
async fn stored_controls(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[ControlWrite<'_>],
) -> Result<HashMap<RepositoryRowKey, Vec<ControlRow>>, StoreError> {
    let keys: RepositoryColumns = writes.iter().map(|item| &item.write.key).collect();
    let stored: Vec<StoredControl> = sqlx::query_as(
        "SELECT c.account, c.region, c.repository, c.control, c.status, c.reason,
                c.regressed_at, c.regressed_by
           FROM control_results c
           JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS u(account, region, repository)
             ON c.account = u.account AND c.region = u.region AND c.repository = u.repository
          ORDER BY c.account, c.region, c.repository, c.control
          FOR UPDATE OF c",
    )
    .bind(&keys.account)
    .bind(&keys.region)
    .bind(&keys.repository)
    .fetch_all(&mut **tx)
    .await?;
    let mut current: HashMap<RepositoryRowKey, Vec<ControlRow>> = HashMap::new();
    for row in stored {
        current
            .entry((row.account, row.region, row.repository))
            .or_default()
            .push((
                row.control,
                row.status,
                row.reason,
                row.regressed_at,
                row.regressed_by,
            ));
    }
    Ok(current)
}

/// Adds one repository's control rows to the statement's input; returns the controls whose
/// status changed.
fn control_rows<'a>(
    item: &ControlWrite<'a>,
    current: &[ControlRow],
    first_sweep: bool,
    rows: &mut ControlRows<'a>,
) -> Vec<ChangedControl> {
    let cause = item.cause;
    let mut transitions = Vec::new();
    for (control, verdict) in item.controls {
        let row = current.iter().find(|r| r.0 == control.as_str());
        let class = (verdict.status == ControlStatus::Fail)
            .then(|| failing_class(cause, row.is_none(), first_sweep).as_str());
        let old = row.and_then(|(_, status, reason, _, _)| {
            Some(Verdict {
                status: ControlStatus::from_str_opt(status)?,
                reason: reason.clone(),
            })
        });
        let ((regressed_at, regressed_by), restored) =
            next_regression(old.as_ref().map(|v| v.status), verdict.status, row, cause);
        if old.as_ref().map(|v| v.status) != Some(verdict.status) {
            transitions.push((*control, old, verdict.clone(), restored));
        }
        rows.keys.push(&item.write.key);
        rows.control.push(control.as_str());
        rows.status.push(verdict.status.as_str());
        rows.reason.push(&verdict.reason);
        rows.observed_at.push(item.write.facts.observed_at);
        rows.changed_by.push(cause.by);
        rows.regressed_at.push(regressed_at);
        rows.regressed_by.push(regressed_by);
        rows.cause_at.push(cause.at);
        rows.class.push(class);
    }
    transitions
}

/// Control verdicts; `changed_at` and `changed_by` move only with the status. A failure keeps
/// its start, class and overdue mark while it lasts; `failing_class` is its class if it starts
/// now.
const UPSERT_CONTROLS: &str = "INSERT INTO control_results AS c (account, region, repository,
      control, status, reason, observed_at, changed_at, changed_by, regressed_at, regressed_by,
      failing_since, failing_class)
 SELECT account, region, repository, control, status, reason, observed_at, observed_at,
        changed_by, regressed_at, regressed_by,
        CASE WHEN status = 'FAIL' THEN cause_at END, failing_class
   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
               $7::timestamptz[], $8::text[], $9::timestamptz[], $10::text[], $11::timestamptz[],
               $12::text[])
        AS u(account, region, repository, control, status, reason, observed_at, changed_by,
             regressed_at, regressed_by, cause_at, failing_class)
  ORDER BY account, region, repository, control
 ON CONFLICT (account, region, repository, control) DO UPDATE SET
      status = EXCLUDED.status,
      reason = EXCLUDED.reason,
      observed_at = EXCLUDED.observed_at,
      changed_at = CASE WHEN c.status = EXCLUDED.status THEN c.changed_at
                        ELSE EXCLUDED.changed_at END,
      changed_by = CASE WHEN c.status = EXCLUDED.status THEN c.changed_by
                        ELSE EXCLUDED.changed_by END,
      regressed_at = EXCLUDED.regressed_at,
      regressed_by = EXCLUDED.regressed_by,
      failing_since = CASE WHEN EXCLUDED.status <> 'FAIL' THEN NULL
                           WHEN c.status = 'FAIL' THEN c.failing_since
                           ELSE EXCLUDED.failing_since END,
      failing_class = CASE WHEN EXCLUDED.status <> 'FAIL' THEN NULL
                           WHEN c.status = 'FAIL' THEN c.failing_class
                           ELSE EXCLUDED.failing_class END,
      failing_overdue_at = CASE WHEN EXCLUDED.status = 'FAIL' AND c.status = 'FAIL'
                                THEN c.failing_overdue_at END";

/// The control transitions of a batch that page, for the metrics.
#[derive(Default)]
struct PagedControls {
    /// PASS → FAIL.
    regressions: Vec<ControlId>,
    /// PASS → UNKNOWN.
    blinded: Vec<ControlId>,
    /// FAIL → PASS within the window of its PASS → FAIL.
    restored: Vec<ControlId>,
    /// When the append locked the chain head.
    locked_at: Option<std::time::Instant>,
}

/// Puts the pending records on the chain (`evidence::write::append`); a plan whose own record
/// another transaction recorded first becomes a duplicate. Transitions worth a page get their
/// alert row here, beside their evidence; the controls that went from PASS to FAIL or to
/// UNKNOWN are returned for the metrics.
async fn append_to_chain(
    tx: &mut Transaction<'_, Postgres>,
    mut pending: Vec<PendingRecord>,
    outcomes: &mut [Committed],
    alerts: bool,
) -> Result<PagedControls, StoreError> {
    super::exceptions::mark_excepted(tx, &mut pending).await?;
    let appended = append(tx, pending).await?;
    if let Some(event_id) = appended.collisions.into_iter().next() {
        return Err(StoreError::IdCollision { event_id });
    }
    for group in &appended.duplicate_groups {
        outcomes[*group] = Committed::Duplicate;
    }
    let mut paged = PagedControls {
        locked_at: appended.locked_at,
        ..PagedControls::default()
    };
    let mut queued = Vec::new();
    for (record, hash) in &appended.chained {
        let Some(kind) = alert_kind(record) else {
            continue;
        };
        paged.regressions.extend(kind.regressed_control());
        paged.blinded.extend(kind.blinded_control());
        paged.restored.extend(kind.restored_control());
        if alerts {
            queued.push((record, hash.as_str(), kind));
        }
    }
    enqueue_all(tx, queued).await?;
    Ok(paged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(observed: bool) -> Cause<'static> {
        Cause {
            by: crate::domain::UNATTRIBUTED,
            at: Utc::now(),
            restored_window: chrono::Duration::hours(1),
            observed,
        }
    }

    #[test]
    fn only_what_a_sweep_finds_as_history_is_baseline() {
        // A sweep: the first of its registry, or a control never evaluated before.
        assert_eq!(
            failing_class(cause(true), false, true),
            FindingClass::Baseline
        );
        assert_eq!(
            failing_class(cause(true), true, false),
            FindingClass::Baseline
        );
        // A later sweep seeing a known control fail: a regression nobody reported.
        assert_eq!(failing_class(cause(true), false, false), FindingClass::New);
        // An event (CreateRepository, PutImageTagMutability): new, even on a first sight.
        assert_eq!(failing_class(cause(false), true, true), FindingClass::New);
        assert_eq!(failing_class(cause(false), false, false), FindingClass::New);
    }
}
