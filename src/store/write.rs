//! The batch transaction behind [`super::Store::commit_batch`].

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::{PgPool, Postgres, Transaction};

use super::digest::{apply_scan, apply_signature, postpone};
use super::{
    BatchOutcome, Committed, EventPlan, ImagePresence, ImageWrite, Plan, RecheckClaim,
    RejectedMessage, RepositoryWrite, SignatureChange, SignatureWrite, StoreError,
};
use crate::alerts::outbox::{alert_kind, enqueue};
use crate::domain::{ControlId, ControlStatus, RepositoryKey, Verdict};
use crate::evidence::chain::{ChainedRecord, truncate_to_micros};
use crate::evidence::detail::{
    ControlTransitionDetail, EventDetail, ImageAfter, ImagePresenceLabel, RegressedAndRestored,
    RepositoryAfter, RepositoryStateLabel, ScanAfter, SettingsAtPush, SignatureAfter,
    SignatureTransitionDetail, to_detail_value,
};
use crate::evidence::kind::EvidenceKind;
use crate::evidence::write::{PendingRecord, append};
use crate::facts::{Disguise, Fact, ImageLookup, RepositoryState};
use crate::telemetry::FindingClass;

/// A control whose status an event changed: repository, control, old and new verdicts.
type ControlChange = (
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

pub(super) async fn commit_batch(
    pool: &PgPool,
    plans: &[Plan],
    settings: super::CommitSettings,
) -> Result<BatchOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let already = already_recorded(&mut tx, plans).await?;

    // Lock rows in one global order (repository, then event time) so that concurrent batches
    // touching the same repositories cannot deadlock on each other.
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by(|&a, &b| sort_key(&plans[a]).cmp(&sort_key(&plans[b])));

    let mut outcomes = vec![Committed::Duplicate; plans.len()];
    let mut first_unsigned = 0;
    let mut reverify_scheduled = 0;
    let mut pending = Vec::new();
    let mut seen = HashSet::new();
    let recorded_at = truncate_to_micros(Utc::now());

    for index in order {
        match &plans[index] {
            Plan::Rejected(rejected) => {
                insert_rejected(&mut tx, rejected).await?;
                outcomes[index] = Committed::Rejected;
            }
            Plan::Event(plan) => {
                if already.contains(&plan.event.id) || !seen.insert(plan.event.id.clone()) {
                    outcomes[index] = Committed::Duplicate;
                    continue;
                }
                let (records, newly_unsigned) =
                    apply_event(&mut tx, plan, recorded_at, settings.restored_window).await?;
                first_unsigned += newly_unsigned;
                if let Some(reverify) = &plan.reverify {
                    reverify_scheduled +=
                        super::reverify::schedule(&mut tx, reverify, recorded_at).await?;
                }
                pending.extend(pending_records(index, records));
                outcomes[index] = if plan.ignored {
                    Committed::Ignored
                } else {
                    Committed::Processed
                };
            }
        }
    }

    let mut paged = PagedControls::default();
    // The head is locked at the start of the append and released by the commit: every other
    // appender waits for this span (docs/PERFORMANCE.md, "Many workers").
    let locked_at = (!pending.is_empty()).then(std::time::Instant::now);
    if !pending.is_empty() {
        paged = append_to_chain(&mut tx, pending, &mut outcomes, settings.alerts).await?;
    }
    tx.commit().await?;
    let evidence_lock_held = locked_at.map(|at| at.elapsed());
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
    let mut first_unsigned = 0;
    let mut pending = Vec::new();
    for (claim, result) in results {
        match result {
            Err(retry_at) => postpone(&mut tx, &claim, retry_at).await?,
            Ok(write) => {
                if let Some(change) = apply_signature(&mut tx, &write, true).await? {
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
                            &write,
                            &change,
                            recorded_at,
                            None,
                        ),
                    });
                }
            }
        }
    }
    if !pending.is_empty() {
        let mut ignored = vec![Committed::Processed; pending.len()];
        append_to_chain(&mut tx, pending, &mut ignored, alerts).await?;
    }
    tx.commit().await?;
    Ok(first_unsigned)
}

async fn lock_recheck(
    tx: &mut Transaction<'_, Postgres>,
    write: &SignatureWrite,
) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT 1 FROM signature_rechecks
          WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4
          FOR UPDATE",
    )
    .bind(write.key.account.as_str())
    .bind(write.key.region.as_str())
    .bind(write.key.name.as_str())
    .bind(write.digest.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(())
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

fn sort_key(plan: &Plan) -> (Option<&RepositoryKey>, Option<DateTime<Utc>>) {
    match plan {
        // Scan-only and signature-only plans follow the same repository order as the rest.
        Plan::Event(p) => (
            p.repositories
                .first()
                .map(|r| &r.key)
                .or(p.image.as_ref().map(|i| &i.key))
                .or(p.deletions.first().map(|d| &d.key))
                .or(p.scans.first().map(|s| &s.key))
                .or(p.signatures.first().map(|s| &s.key)),
            Some(p.event.time),
        ),
        Plan::Rejected(_) => (None, None),
    }
}

async fn insert_rejected(
    tx: &mut Transaction<'_, Postgres>,
    rejected: &RejectedMessage,
) -> Result<(), StoreError> {
    let body_sha256 = hex::encode(Sha256::digest(&rejected.body));
    sqlx::query(
        "INSERT INTO rejected_messages (body_sha256, source, message_id, code, reason, body)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (body_sha256) DO NOTHING",
    )
    .bind(body_sha256)
    .bind(rejected.source)
    .bind(&rejected.message_id)
    .bind(rejected.code.as_str())
    .bind(&rejected.reason)
    .bind(&rejected.body)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies one event's state changes; returns its evidence records (its own first, then one
/// per control transition it caused), not yet chained.
async fn apply_event(
    tx: &mut Transaction<'_, Postgres>,
    plan: &EventPlan,
    recorded_at: DateTime<Utc>,
    restored_window: chrono::Duration,
) -> Result<(Vec<ChainedRecord>, u64), StoreError> {
    // Lock order, shared with the re-check path: a digest's re-check row before its image row.
    // Re-checks claim their rows first and then update the image; taking the image row first
    // here would let the two transactions wait on each other.
    for signature in &plan.signatures {
        lock_recheck(tx, signature).await?;
    }
    let (repositories, transitions, mut derived) =
        apply_repositories(tx, plan, restored_window).await?;
    if let Some(image) = &plan.image {
        upsert_image(tx, image).await?;
        if image.settings_observed_at.is_some() {
            derived.extend(super::history::derive(tx, &image.key, Some(&image.digest)).await?);
        }
    }
    // In digest order, as every other batch touching the same rows takes them.
    let mut deletions: Vec<&ImageWrite> = plan.deletions.iter().collect();
    deletions.sort_by(|a, b| (&a.key, &a.digest).cmp(&(&b.key, &b.digest)));
    for image in deletions {
        upsert_image(tx, image).await?;
    }
    for scan in &plan.scans {
        apply_scan(tx, scan).await?;
    }
    let mut signature_changes = Vec::new();
    for signature in &plan.signatures {
        if let Some(change) = apply_signature(tx, signature, false).await? {
            signature_changes.push((signature, change));
        }
    }

    let mut detail = event_detail(plan, repositories);
    detail.settings_at_push = (!derived.is_empty()).then_some(derived);
    let base = event_record(plan, &detail, recorded_at);
    let mut records = vec![base.clone()];
    records.extend(
        transitions
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
    for (write, change) in signature_changes {
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
    Ok((records, first_unsigned))
}

/// What an event's repository writes did, the controls whose status changed, and the images
/// whose settings at push the new history re-derived.
type RepositoriesApplied = (
    Vec<RepositoryAfter>,
    Vec<ControlChange>,
    Vec<SettingsAtPush>,
);

/// Writes the event's repository reads and their controls; returns what each write did, the
/// controls whose status changed and the settings at push re-derived.
async fn apply_repositories(
    tx: &mut Transaction<'_, Postgres>,
    plan: &EventPlan,
    restored_window: chrono::Duration,
) -> Result<RepositoriesApplied, StoreError> {
    let mut derived = Vec::new();
    let mut transitions = Vec::new();
    let mut repositories = Vec::new();
    let mut requested_applied = false;
    for write in &plan.repositories {
        // The re-read behind a requested state counts only when the requested state was older
        // than what is stored (see `RepositoryWrite::fallback`).
        let applied = if write.fallback && requested_applied {
            false
        } else {
            upsert_repository(tx, write).await?
        };
        requested_applied = write.requested && applied;
        derived.extend(super::history::record(tx, write, applied, changed_by(&plan.event)).await?);
        super::rereads::schedule_or_clear(tx, write, applied).await?;
        repositories.push(RepositoryAfter {
            repository: write.key.name.to_string(),
            state: repository_state_label(&write.facts.state),
            facts_observed_at: write.facts.observed_at.to_rfc3339(),
            applied,
            controls_after: write.controls.as_ref().map(|controls| {
                controls
                    .iter()
                    .map(|(c, v)| (c.as_str().to_owned(), v.clone()))
                    .collect()
            }),
        });
        if let (Some(controls), true) = (&write.controls, applied) {
            let cause = Cause {
                by: changed_by(&plan.event),
                at: plan.event.time,
                restored_window,
                observed: is_observation(&plan.event),
            };
            for (control, from, to, restored) in upsert_controls(tx, write, controls, cause).await?
            {
                transitions.push((write.key.name.to_string(), control, from, to, restored));
            }
        }
    }
    Ok((repositories, transitions, derived))
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
fn changed_by(event: &crate::parse::AuditEvent) -> &str {
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
fn presence_and_settings(
    state: &RepositoryState,
) -> (Option<bool>, Option<&crate::facts::RepositorySettings>) {
    match state {
        RepositoryState::Present(settings) => (Some(true), Some(settings)),
        // A public repository has none of the private settings columns (ECR.4 only).
        RepositoryState::Public(_) => (Some(true), None),
        RepositoryState::Absent => (Some(false), None),
        RepositoryState::Unreadable { .. } => (None, None),
    }
}

fn repository_state_label(state: &RepositoryState) -> RepositoryStateLabel {
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

/// Writes the repository row unless the same read or a newer one is already stored (a push
/// served from the cache carries the stored read: rewriting it would be wasted work); says
/// whether it wrote.
async fn upsert_repository(
    tx: &mut Transaction<'_, Postgres>,
    write: &RepositoryWrite,
) -> Result<bool, StoreError> {
    let facts = &write.facts;
    let (present, settings) = presence_and_settings(&facts.state);
    let mutability = settings.and_then(|s| s.tag_mutability.known());
    let scanning = write.scanning.as_ref().filter(|_| settings.is_some());
    let encryption = settings.and_then(|s| s.encryption.known());
    let key_manager = encryption
        .and_then(|e| e.key_manager.as_ref())
        .and_then(Fact::known)
        .cloned();
    let written = sqlx::query_scalar::<_, bool>(
        "INSERT INTO repositories AS r (account, region, name, arn, present, tag_mutability,
              tag_mutability_exclusions, scan_frequency, scan_on_push, lifecycle_policy,
              encryption_type, kms_key, kms_key_manager, facts, observed_at)
         VALUES ($1, $2, $3, $4, COALESCE($5, true), $6, COALESCE($7, '[]'::jsonb), $8, $9, $10,
                 $11, $12, $13, $14, $15)
         ON CONFLICT (account, region, name) DO UPDATE SET
              arn = EXCLUDED.arn,
              present = COALESCE($5, r.present),
              tag_mutability = COALESCE($6, r.tag_mutability),
              tag_mutability_exclusions = COALESCE($7, r.tag_mutability_exclusions),
              scan_frequency = COALESCE($8, r.scan_frequency),
              scan_on_push = COALESCE($9, r.scan_on_push),
              lifecycle_policy = COALESCE($10, r.lifecycle_policy),
              encryption_type = COALESCE($11, r.encryption_type),
              kms_key = CASE WHEN $11 IS NULL THEN r.kms_key ELSE $12 END,
              kms_key_manager = CASE WHEN $11 IS NULL THEN r.kms_key_manager ELSE $13 END,
              facts = EXCLUDED.facts,
              observed_at = EXCLUDED.observed_at,
              updated_at = now()
         WHERE (r.observed_at < EXCLUDED.observed_at
                OR ($17 AND r.observed_at = EXCLUDED.observed_at))
           AND NOT $16
         RETURNING true",
    )
    .bind(write.key.account.as_str())
    .bind(write.key.region.as_str())
    .bind(write.key.name.as_str())
    .bind(settings.map_or_else(|| write.key.arn(), |s| s.arn.clone()))
    .bind(present)
    .bind(mutability.map(|m| m.mode.clone()))
    .bind(mutability.map(|m| json!(m.exclusion_filters)))
    .bind(scanning.map(|s| s.scan_frequency.clone()))
    .bind(scanning.map(|s| s.scan_on_push))
    .bind(settings.and_then(|s| s.lifecycle_policy.known().copied()))
    .bind(encryption.map(|e| e.encryption_type.clone()))
    .bind(encryption.and_then(|e| e.kms_key.clone()))
    .bind(key_manager)
    .bind(serde_json::to_value(facts).unwrap_or(Value::Null))
    .bind(facts.observed_at)
    .bind(write.only_if_new)
    .bind(write.requested)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(written.unwrap_or(false))
}

/// Who caused an event's control writes, when, and how soon a FAIL → PASS must follow a
/// PASS → FAIL to be "regressed and restored".
#[derive(Debug, Clone, Copy)]
struct Cause<'a> {
    by: &'a str,
    at: DateTime<Utc>,
    restored_window: chrono::Duration,
    /// A sweep (or a re-read) observed it, no AWS event reported it.
    observed: bool,
}

/// Whether no AWS event reported the change: a reconcile sweep or a re-read observed it.
fn is_observation(event: &crate::parse::AuditEvent) -> bool {
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

/// Whether no reconcile sweep has finished the repository's registry yet.
async fn registry_unswept(
    tx: &mut Transaction<'_, Postgres>,
    key: &crate::domain::RepositoryKey,
) -> Result<bool, StoreError> {
    let swept: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM reconcile_registries WHERE account = $1 AND region = $2")
            .bind(key.account.as_str())
            .bind(key.region.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(swept.is_none())
}

/// A control's last PASS → FAIL, when and by whom, while it lasts.
type StoredRegression = (Option<DateTime<Utc>>, Option<String>);

/// A control's stored row: status, reason, and its last PASS → FAIL (when and by whom).
type ControlRow = (
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// A control whose status an event changed: the old and new verdicts, and the regression it
/// undoes when it is one ([`RegressedAndRestored`]).
type ChangedControl = (
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

/// Writes the control verdicts; returns the controls whose status changed, with the old and
/// new verdicts (the old is `None` the first time a repository is evaluated).
async fn upsert_controls(
    tx: &mut Transaction<'_, Postgres>,
    write: &RepositoryWrite,
    controls: &BTreeMap<ControlId, Verdict>,
    cause: Cause<'_>,
) -> Result<Vec<ChangedControl>, StoreError> {
    let key = &write.key;
    let current: Vec<ControlRow> = sqlx::query_as(
        "SELECT control, status, reason, regressed_at, regressed_by FROM control_results
          WHERE account = $1 AND region = $2 AND repository = $3
          ORDER BY control
          FOR UPDATE",
    )
    .bind(key.account.as_str())
    .bind(key.region.as_str())
    .bind(key.name.as_str())
    .fetch_all(&mut **tx)
    .await?;

    let first_sweep = cause.observed && registry_unswept(tx, key).await?;
    let mut transitions = Vec::new();
    for (control, verdict) in controls {
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
        sqlx::query(UPSERT_CONTROL)
            .bind(key.account.as_str())
            .bind(key.region.as_str())
            .bind(key.name.as_str())
            .bind(control.as_str())
            .bind(verdict.status.as_str())
            .bind(&verdict.reason)
            .bind(write.facts.observed_at)
            .bind(cause.by)
            .bind(regressed_at)
            .bind(regressed_by)
            .bind(cause.at)
            .bind(class)
            .execute(&mut **tx)
            .await?;
    }
    Ok(transitions)
}

/// One control verdict; `changed_at` and `changed_by` move only with the status. A failure
/// keeps its start, class and overdue mark while it lasts; `$12` is its class if it starts now.
const UPSERT_CONTROL: &str = "INSERT INTO control_results AS c (account, region, repository,
      control, status, reason, observed_at, changed_at, changed_by, regressed_at, regressed_by,
      failing_since, failing_class)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10,
         CASE WHEN $5 = 'FAIL' THEN $11::timestamptz END, $12)
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

/// One image row, with every guard of a versioned write: presence moves only with a newer
/// push or delete, tags only with a newer read, the earliest pusher wins unless its record is
/// older than ECR's push time (`$27`, see `plan::PUSH_RECORD_SKEW`), the settings at push are
/// written once, and what the digest is (artifact or image) is what the latest read of it
/// says (`$26`): a classification is never carried over from an earlier read.
const UPSERT_IMAGE: &str = "INSERT INTO images AS i (account, region, repository, digest, present, state_changed_at,
              tags, tags_observed_at, push_tag, pushed_at, pushed_by, pushed_by_type, pushed_by_at,
              manifest_media_type, artifact_media_type, artifact_of, size_bytes, storage_class,
              tag_immutability, tag_protected, encryption_type, kms_key, kms_customer_managed, artifact_kind,
              settings_observed_at, deleted_reason, deleted_by)
         VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, '{}'::text[]), $8, $9, $10, $11, $12, $24,
                 $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $25, $28, $29, $30)
         ON CONFLICT (account, region, repository, digest) DO UPDATE SET
              present = CASE WHEN $23 AND EXCLUDED.state_changed_at >= i.state_changed_at
                             THEN EXCLUDED.present ELSE i.present END,
              state_changed_at = CASE WHEN $23 THEN GREATEST(i.state_changed_at, EXCLUDED.state_changed_at)
                                      ELSE i.state_changed_at END,
              tags = CASE WHEN $8::timestamptz IS NOT NULL
                               AND (i.tags_observed_at IS NULL OR $8 >= i.tags_observed_at)
                          THEN EXCLUDED.tags ELSE i.tags END,
              tags_observed_at = GREATEST(i.tags_observed_at, $8),
              push_tag = COALESCE(i.push_tag, EXCLUDED.push_tag),
              pushed_at = COALESCE(i.pushed_at, EXCLUDED.pushed_at),
              pushed_by = CASE WHEN (i.pushed_by_at IS NULL OR EXCLUDED.pushed_by_at < i.pushed_by_at)
                                    AND (i.pushed_at IS NULL OR EXCLUDED.pushed_by_at >= i.pushed_at - $27::interval)
                               THEN COALESCE(EXCLUDED.pushed_by, i.pushed_by) ELSE i.pushed_by END,
              pushed_by_type = CASE WHEN (i.pushed_by_at IS NULL OR EXCLUDED.pushed_by_at < i.pushed_by_at)
                                         AND (i.pushed_at IS NULL OR EXCLUDED.pushed_by_at >= i.pushed_at - $27::interval)
                                    THEN COALESCE(EXCLUDED.pushed_by_type, i.pushed_by_type) ELSE i.pushed_by_type END,
              pushed_by_at = CASE WHEN (i.pushed_at IS NULL OR EXCLUDED.pushed_by_at >= i.pushed_at - $27::interval)
                                  THEN LEAST(i.pushed_by_at, EXCLUDED.pushed_by_at) ELSE i.pushed_by_at END,
              manifest_media_type = COALESCE(EXCLUDED.manifest_media_type, i.manifest_media_type),
              artifact_media_type = COALESCE(EXCLUDED.artifact_media_type, i.artifact_media_type),
              artifact_of = CASE WHEN $26 THEN EXCLUDED.artifact_of ELSE i.artifact_of END,
              artifact_kind = CASE WHEN $26 THEN EXCLUDED.artifact_kind ELSE i.artifact_kind END,
              size_bytes = COALESCE(EXCLUDED.size_bytes, i.size_bytes),
              storage_class = COALESCE(EXCLUDED.storage_class, i.storage_class),
              settings_observed_at = CASE WHEN i.tag_immutability IS NULL
                                          THEN EXCLUDED.settings_observed_at
                                          ELSE i.settings_observed_at END,
              tag_immutability = COALESCE(i.tag_immutability, EXCLUDED.tag_immutability),
              tag_protected = COALESCE(i.tag_protected, EXCLUDED.tag_protected),
              encryption_type = COALESCE(i.encryption_type, EXCLUDED.encryption_type),
              kms_key = COALESCE(i.kms_key, EXCLUDED.kms_key),
              kms_customer_managed = COALESCE(i.kms_customer_managed, EXCLUDED.kms_customer_managed),
              deleted_reason = CASE WHEN NOT $23 THEN i.deleted_reason
                                    WHEN EXCLUDED.state_changed_at >= i.state_changed_at AND (EXCLUDED.present OR i.present)
                                    THEN EXCLUDED.deleted_reason
                                    WHEN NOT EXCLUDED.present AND NOT i.present
                                    THEN COALESCE(i.deleted_reason, EXCLUDED.deleted_reason)
                                    ELSE i.deleted_reason END,
              deleted_by = CASE WHEN NOT $23 THEN i.deleted_by
                                WHEN EXCLUDED.state_changed_at >= i.state_changed_at AND (EXCLUDED.present OR i.present)
                                THEN EXCLUDED.deleted_by
                                WHEN NOT EXCLUDED.present AND NOT i.present AND i.deleted_reason IS NULL
                                THEN EXCLUDED.deleted_by
                                ELSE i.deleted_by END,
              updated_at = now()";

/// [`crate::plan::PUSH_RECORD_SKEW`] as a Postgres interval.
fn push_record_skew() -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: crate::plan::PUSH_RECORD_SKEW
            .num_microseconds()
            .unwrap_or(i64::MAX),
    }
}

async fn upsert_image(
    tx: &mut Transaction<'_, Postgres>,
    image: &ImageWrite,
) -> Result<(), StoreError> {
    let found = match &image.lookup {
        Some((observed_at, ImageLookup::Found(facts))) => Some((*observed_at, facts)),
        _ => None,
    };
    let settings = image.settings.as_ref();
    let pushed_at = found
        .and_then(|(_, f)| f.pushed_at)
        .or((image.presence == ImagePresence::Pushed).then_some(image.event_time));
    sqlx::query(UPSERT_IMAGE)
        .bind(image.key.account.as_str())
        .bind(image.key.region.as_str())
        .bind(image.key.name.as_str())
        .bind(image.digest.as_str())
        .bind(image.presence != ImagePresence::Deleted)
        .bind(image.event_time)
        .bind(found.map(|(_, f)| f.tags.clone()))
        .bind(found.map(|(at, _)| at))
        .bind(&image.push_tag)
        .bind(pushed_at)
        .bind(image.pushed_by.as_ref().map(|a| a.arn.clone()))
        .bind(
            image
                .pushed_by
                .as_ref()
                .and_then(|a| a.identity_type.clone()),
        )
        .bind(found.and_then(|(_, f)| f.manifest_media_type.clone()))
        .bind(found.and_then(|(_, f)| f.artifact_media_type.clone()))
        .bind(
            image
                .artifact
                .as_ref()
                .map(|(subject, _)| subject.to_string()),
        )
        .bind(found.and_then(|(_, f)| f.size_bytes))
        .bind(&image.storage_class)
        .bind(settings.and_then(|s| s.tag_immutability.clone()))
        .bind(settings.and_then(|s| s.tag_protected))
        .bind(settings.and_then(|s| s.encryption_type.clone()))
        .bind(settings.and_then(|s| s.kms_key.clone()))
        .bind(settings.and_then(|s| s.customer_managed_key))
        .bind(image.presence != ImagePresence::Unchanged)
        .bind(image.pushed_by.as_ref().map(|_| image.event_time))
        .bind(image.artifact.as_ref().map(|(_, kind)| kind.as_str()))
        // Only a push's full read classifies the digest (`plan::plan_present_image`); a
        // storage-class change or an unconfirmed delete reads the digest but leaves its class.
        .bind(found.is_some() && image.presence == ImagePresence::Pushed)
        .bind(push_record_skew())
        .bind(image.settings_observed_at)
        .bind(image.removal.as_ref().map(|note| note.reason.clone()))
        .bind(image.removal.as_ref().and_then(|note| note.cause.clone()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The control transitions of a batch that page, for the metrics.
#[derive(Default)]
struct PagedControls {
    /// PASS → FAIL.
    regressions: Vec<ControlId>,
    /// PASS → UNKNOWN.
    blinded: Vec<ControlId>,
    /// FAIL → PASS within the window of its PASS → FAIL.
    restored: Vec<ControlId>,
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
    let mut paged = PagedControls::default();
    for (record, hash) in &appended.chained {
        let Some(kind) = alert_kind(record) else {
            continue;
        };
        paged.regressions.extend(kind.regressed_control());
        paged.blinded.extend(kind.blinded_control());
        paged.restored.extend(kind.restored_control());
        if alerts {
            enqueue(tx, record, hash, kind).await?;
        }
    }
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
