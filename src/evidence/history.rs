//! "As of time T": the `posture` and `images` views answered from the evidence alone.
//!
//! Every evidence record carries the verdicts after its event (`detail.repositories[]` with
//! `controls_after` and whether the write `applied`; `detail.image_after`; `detail.signatures`,
//! `detail.scans`; transition records with their `to` verdict). Replaying the records recorded
//! at or before T, in chain order, through [`AsOf`] rebuilds what ecr-audit knew at T. The
//! fold is pure and keeps one entry per repository and digest, not per record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use sqlx::PgPool;

use super::chain::{ChainedRecord, EVIDENCE_COLUMNS, EvidenceRow};
use super::detail::{
    EventDetail, EvidenceDetail, ExceptionAction, ExceptionDetail, ExceptionNote, ImageAfter,
    ImagePresenceLabel, RepositoryAfter, RepositoryStateLabel, ScanAfter,
};
use crate::domain::{ScanStatus, Verdict};
use crate::evaluate::ImageSettings;
use crate::evaluate::exception::RepositoryPattern;
use crate::readmodel::{
    ControlView, EncryptionView, ExceptionView, ImageRow, PostureRow, ScanView, SignatureView,
    UsageView,
};

type RepositoryId = (String, String, String);
type ImageId = (String, String, String, String);

#[derive(Debug, Clone, Default)]
struct RepositoryAsOf {
    present: bool,
    controls: BTreeMap<String, ControlView>,
}

#[derive(Debug, Clone, Default)]
struct ImageAsOf {
    present: bool,
    /// Event time of the push or delete that set `present`: an older event does not undo it.
    state_changed_at: Option<DateTime<Utc>>,
    tags: Vec<String>,
    pushed_at: Option<DateTime<Utc>>,
    pushed_by: Option<(DateTime<Utc>, String)>,
    artifact_of: Option<String>,
    artifact_kind: Option<String>,
    settings: Option<ImageSettings>,
    signature: Option<(String, Vec<String>, Option<String>)>,
    scan_status: Option<String>,
    scan_raw: Option<String>,
    scan_counts: Option<BTreeMap<String, i64>>,
    /// The last `usage_transition`: in use or not, and the count read with it.
    in_use: Option<(bool, Option<i64>)>,
}

/// The state rebuilt from evidence records, fed in chain order.
#[derive(Debug, Default)]
pub struct AsOf {
    repositories: BTreeMap<RepositoryId, RepositoryAsOf>,
    images: BTreeMap<ImageId, ImageAsOf>,
    /// Exceptions added and not yet revoked or recorded expired, by id (docs/EXCEPTIONS.md).
    exceptions: BTreeMap<String, ExceptionNote>,
    /// The time asked about: an exception whose expiry is not after it is no longer in force.
    at: Option<DateTime<Utc>>,
}

fn time(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn control_view(verdict: &Verdict, changed_by: Option<String>) -> ControlView {
    ControlView {
        status: verdict.status.as_str().to_owned(),
        reason: verdict.reason.clone(),
        // The verdict as recorded; `AsOf::reported` marks it EXCEPTED under an exception.
        verdict: None,
        exception: None,
        changed_by,
    }
}

impl AsOf {
    /// Applies one record; records must come in chain order.
    pub(crate) fn apply(&mut self, record: &ChainedRecord) {
        if let EvidenceDetail::Exception(detail) = record.typed_detail() {
            self.apply_exception(detail);
            return;
        }
        let (Some(account), Some(region)) = (&record.account, &record.region) else {
            return;
        };
        let scope = (account.as_str(), region.as_str());
        match record.typed_detail() {
            EvidenceDetail::Event(detail) => self.apply_event(scope, record, &detail),
            EvidenceDetail::ControlTransition(transition) => {
                let by = Some(
                    record
                        .actor
                        .clone()
                        .unwrap_or_else(|| crate::domain::UNATTRIBUTED.to_owned()),
                );
                if let Some(repository) = &record.repository {
                    self.repository(scope, repository)
                        .controls
                        .insert(transition.control, control_view(&transition.to, by));
                }
            }
            EvidenceDetail::SignatureTransition(transition) => {
                if let (Some(repository), Some(digest)) = (&record.repository, &record.digest)
                    && let Some(image) = self.images.get_mut(&image_id(scope, repository, digest))
                {
                    image.signature = Some((
                        transition.to.as_str().to_owned(),
                        transition.sources,
                        Some(transition.reason),
                    ));
                }
            }
            EvidenceDetail::UsageTransition(transition) => {
                if let (Some(repository), Some(digest)) = (&record.repository, &record.digest)
                    && let Some(image) = self.images.get_mut(&image_id(scope, repository, digest))
                {
                    image.in_use = Some((transition.to, transition.in_use_count));
                }
            }
            EvidenceDetail::Checkpoint(_)
            | EvidenceDetail::Exception(_)
            | EvidenceDetail::DeployVerdict(_)
            | EvidenceDetail::Unreadable => {}
        }
    }

    /// The repository's entry; a repository first seen in the evidence existed.
    fn repository(&mut self, (account, region): (&str, &str), name: &str) -> &mut RepositoryAsOf {
        self.repositories
            .entry((account.to_owned(), region.to_owned(), name.to_owned()))
            .or_insert_with(|| RepositoryAsOf {
                present: true,
                ..RepositoryAsOf::default()
            })
    }

    fn apply_event(&mut self, scope: (&str, &str), record: &ChainedRecord, detail: &EventDetail) {
        for write in detail.repositories.iter().flatten() {
            if write.applied {
                self.apply_repository(scope, write, record.actor.as_deref());
            }
        }
        let Some(repository) = &record.repository else {
            return;
        };
        if let (Some(digest), Some(after)) = (&record.digest, &detail.image_after) {
            self.apply_image(
                image_id(scope, repository, digest),
                record.event_time,
                after,
            );
        }
        for derived in detail.settings_at_push.iter().flatten() {
            let id = image_id(scope, &derived.repository, &derived.digest);
            if let Some(settings) = self.images.get_mut(&id).and_then(|i| i.settings.as_mut()) {
                settings.tag_immutability = Some(derived.tag_immutability.clone());
                settings.tag_protected = derived.tag_protected;
            }
        }
        for signature in detail.signatures.iter().flatten() {
            if let Some(image) =
                self.images
                    .get_mut(&image_id(scope, repository, &signature.digest))
                && image.artifact_of.is_none()
            {
                image.signature = Some((
                    signature.status.as_str().to_owned(),
                    signature.sources.clone(),
                    Some(signature.reason.clone()),
                ));
            }
        }
        for scan in detail.scans.iter().flatten() {
            if let Some(image) = self
                .images
                .get_mut(&image_id(scope, repository, &scan.digest))
                && image.artifact_of.is_none()
            {
                apply_scan(image, scan);
            }
        }
    }

    fn apply_repository(
        &mut self,
        scope: (&str, &str),
        write: &RepositoryAfter,
        actor: Option<&str>,
    ) {
        let entry = self.repository(scope, &write.repository);
        match write.state {
            RepositoryStateLabel::Present => entry.present = true,
            RepositoryStateLabel::Absent => entry.present = false,
            RepositoryStateLabel::Unreadable => {}
        }
        for (control, verdict) in write.controls_after.iter().flatten() {
            // Who changed it: the record's caller when the status moved, else whoever did before.
            let previous = entry.controls.get(control);
            let changed_by = match previous {
                Some(view) if view.status == verdict.status.as_str() => view.changed_by.clone(),
                _ => Some(actor.unwrap_or(crate::domain::UNATTRIBUTED).to_owned()),
            };
            entry
                .controls
                .insert(control.clone(), control_view(verdict, changed_by));
        }
    }

    fn apply_image(&mut self, id: ImageId, event_time: DateTime<Utc>, after: &ImageAfter) {
        let image = self.images.entry(id).or_default();
        let pushed = after.presence == ImagePresenceLabel::Pushed;
        if after.presence != ImagePresenceLabel::Unchanged
            && image.state_changed_at.is_none_or(|at| event_time >= at)
        {
            image.present = pushed;
            image.state_changed_at = Some(event_time);
        }
        if let Some(tags) = &after.tags {
            image.tags.clone_from(tags);
        }
        if image.pushed_at.is_none() {
            image.pushed_at = time(after.pushed_at.as_deref()).or(pushed.then_some(event_time));
        }
        // The earliest PutImage names who introduced the digest, as in the store.
        if let Some(by) = &after.pushed_by
            && image
                .pushed_by
                .as_ref()
                .is_none_or(|(at, _)| event_time < *at)
        {
            image.pushed_by = Some((event_time, by.clone()));
        }
        if image.artifact_of.is_none() {
            image.artifact_of.clone_from(&after.artifact_of);
            image.artifact_kind.clone_from(&after.artifact_kind);
        }
        if image.settings.is_none() {
            image.settings.clone_from(&after.settings);
        }
    }

    /// The repositories that existed, with their control verdicts (the `posture` shape).
    pub fn posture(&self, repository: Option<&str>) -> Vec<PostureRow> {
        self.repositories
            .iter()
            .filter(|((_, _, name), state)| state.present && repository.is_none_or(|r| r == name))
            .map(|(id, state)| PostureRow {
                account: id.0.clone(),
                region: id.1.clone(),
                repository: id.2.clone(),
                controls: self.reported(id, &state.controls),
            })
            .collect()
    }

    /// An exception's addition puts it in force, its revocation or expiry ends it.
    fn apply_exception(&mut self, detail: ExceptionDetail) {
        let Some(exception) = detail.exception else {
            return;
        };
        match detail.action {
            ExceptionAction::Added => {
                self.exceptions.insert(exception.id.clone(), exception);
            }
            ExceptionAction::Revoked | ExceptionAction::Expired => {
                self.exceptions.remove(&exception.id);
            }
            ExceptionAction::Applied | ExceptionAction::Reopened | ExceptionAction::FileLoaded => {}
        }
    }

    /// The exception in force at the time asked about that covers this failing control (the
    /// one expiring last), as the live views choose it.
    fn covering(
        &self,
        (account, region, repository): (&str, &str, &str),
        control: &str,
    ) -> Option<(&ExceptionNote, DateTime<Utc>)> {
        let at = self.at.unwrap_or_else(Utc::now);
        self.exceptions
            .values()
            .filter_map(|e| Some((e, time(Some(&e.expires_at))?)))
            .filter(|(e, expires)| {
                *expires > at
                    && e.control == control
                    && e.account.as_deref().is_none_or(|a| a == account)
                    && e.region.as_deref().is_none_or(|r| r == region)
                    && RepositoryPattern::parse(&e.repository).is_ok_and(|p| p.matches(repository))
            })
            .max_by(|(a, ea), (b, eb)| ea.cmp(eb).then_with(|| b.id.cmp(&a.id)))
    }

    /// A repository's controls as reported: a `FAIL` under an exception in force is `EXCEPTED`.
    fn reported(
        &self,
        id: &RepositoryId,
        controls: &BTreeMap<String, ControlView>,
    ) -> BTreeMap<String, ControlView> {
        let (account, region, name) = id;
        controls
            .iter()
            .map(|(control, view)| {
                let covering = (view.status == "FAIL")
                    .then(|| self.covering((account, region, name), control))
                    .flatten();
                let view = match covering {
                    Some((e, expires_at)) => ControlView {
                        status: "EXCEPTED".to_owned(),
                        verdict: Some(view.status.clone()),
                        exception: Some(exception_view(e, expires_at, None)),
                        ..view.clone()
                    },
                    None => view.clone(),
                };
                (control.clone(), view)
            })
            .collect()
    }

    /// The exceptions in force over a repository's failing controls (for `images`).
    fn repository_exceptions(&self, id: &RepositoryId) -> Vec<ExceptionView> {
        let Some(state) = self.repositories.get(id) else {
            return Vec::new();
        };
        self.reported(id, &state.controls)
            .into_iter()
            .filter_map(|(control, view)| {
                view.exception.map(|e| ExceptionView {
                    control: Some(control),
                    ..e
                })
            })
            .collect()
    }

    /// The digests that existed, newest push first (the `images` shape).
    pub fn images(&self, repository: Option<&str>) -> Vec<ImageRow> {
        let mut rows: Vec<ImageRow> = self
            .images
            .iter()
            .filter(|((_, _, name, _), image)| {
                image.present && repository.is_none_or(|r| r == name)
            })
            .map(|((account, region, name, digest), image)| {
                let mut row = image_row(account, region, name, digest, image);
                row.exceptions =
                    self.repository_exceptions(&(account.clone(), region.clone(), name.clone()));
                row
            })
            .collect();
        sort_newest_first(&mut rows);
        rows
    }

    /// Every digest ever recorded, deleted ones too, each with whether it still existed (the
    /// period report lists every image pushed in the period, also those deleted since).
    pub(crate) fn images_ever(&self) -> Vec<(ImageRow, bool)> {
        self.images
            .iter()
            .map(|((account, region, name, digest), image)| {
                (
                    image_row(account, region, name, digest, image),
                    image.present,
                )
            })
            .collect()
    }
}

fn sort_newest_first(rows: &mut [ImageRow]) {
    rows.sort_by(|a, b| {
        b.pushed_at.cmp(&a.pushed_at).then_with(|| {
            (&a.account, &a.region, &a.repository, &a.digest).cmp(&(
                &b.account,
                &b.region,
                &b.repository,
                &b.digest,
            ))
        })
    });
}

fn image_id((account, region): (&str, &str), repository: &str, digest: &str) -> ImageId {
    (
        account.to_owned(),
        region.to_owned(),
        repository.to_owned(),
        digest.to_owned(),
    )
}

fn apply_scan(image: &mut ImageAsOf, scan: &ScanAfter) {
    match &scan.raw_status {
        None => {
            image.scan_status = Some(ScanStatus::NotScanned.as_str().to_owned());
            image.scan_raw = None;
            image.scan_counts = None;
        }
        Some(raw) => {
            // An unknown raw status keeps the last known status, as the store does.
            if let Some(status) = ScanStatus::from_raw(raw) {
                image.scan_status = Some(status.as_str().to_owned());
            }
            image.scan_raw = Some(raw.clone());
            image.scan_counts.clone_from(&scan.severity_counts);
        }
    }
}

fn exception_view(
    e: &ExceptionNote,
    expires_at: DateTime<Utc>,
    control: Option<String>,
) -> ExceptionView {
    ExceptionView {
        id: e.id.clone(),
        control,
        repository: e.repository.clone(),
        reason: e.reason.clone(),
        approver: e.approver.clone(),
        expires_at,
        source: e.source.clone(),
    }
}

fn image_row(account: &str, region: &str, name: &str, digest: &str, image: &ImageAsOf) -> ImageRow {
    let settings = image.settings.as_ref();
    let count = |severity: &str| {
        image
            .scan_counts
            .as_ref()
            .map(|c| c.get(severity).copied().unwrap_or(0))
    };
    let artifact = image.artifact_of.is_some();
    ImageRow {
        account: account.to_owned(),
        region: region.to_owned(),
        repository: name.to_owned(),
        digest: digest.to_owned(),
        tags: image.tags.clone(),
        pushed_at: image.pushed_at,
        pushed_by: image.pushed_by.as_ref().map(|(_, by)| by.clone()),
        artifact_of: image.artifact_of.clone(),
        artifact_kind: image.artifact_kind.clone(),
        signature: SignatureView {
            status: if artifact {
                None
            } else {
                image.signature.as_ref().map(|s| s.0.clone())
            },
            sources: image
                .signature
                .as_ref()
                .map(|s| s.1.clone())
                .unwrap_or_default(),
            reason: image.signature.as_ref().and_then(|s| s.2.clone()),
            // The replay keeps status, sources and reason; the per-signature verifications
            // are in the `signature_transition` records themselves.
            policy_version: None,
            verifications: Vec::new(),
        },
        scan: ScanView {
            status: if artifact {
                None
            } else {
                image.scan_status.clone()
            },
            raw_status: image.scan_raw.clone(),
            // Inspector's coverage reason is current state only; it is not on the chain.
            reason: None,
            critical: count("CRITICAL"),
            high: count("HIGH"),
            medium: count("MEDIUM"),
        },
        tag_immutability: settings.and_then(|s| s.tag_immutability.clone()),
        tag_protected: settings.and_then(|s| s.tag_protected),
        encryption: EncryptionView {
            encryption_type: settings.and_then(|s| s.encryption_type.clone()),
            kms_key: settings.and_then(|s| s.kms_key.clone()),
            customer_managed: settings.and_then(|s| s.customer_managed_key),
        },
        // Only flips are recorded: pull times and coverage reasons are current-state facts.
        usage: UsageView {
            in_use: image.in_use.map(|(in_use, _)| in_use),
            in_use_count: image.in_use.and_then(|(_, count)| count),
            ..UsageView::default()
        },
        exceptions: Vec::new(),
    }
}

/// How much of the history the retained chain covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCoverage {
    /// When the oldest retained record was recorded; `None` when there is no evidence.
    pub oldest_recorded_at: Option<DateTime<Utc>>,
    /// Retention archived the records before the oldest retained one: subjects last written
    /// before it are missing from an answer rebuilt from the database alone.
    pub archived_before: bool,
}

/// Rebuilds the state recorded at or before `at` by replaying the stored chain.
///
/// # Errors
/// When a query fails.
pub async fn as_of(
    pool: &PgPool,
    at: DateTime<Utc>,
) -> Result<(AsOf, HistoryCoverage), sqlx::Error> {
    let oldest: Option<(i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT seq, recorded_at FROM evidence ORDER BY seq LIMIT 1")
            .fetch_optional(pool)
            .await?;
    let mut state = AsOf {
        at: Some(at),
        ..AsOf::default()
    };
    let sql =
        format!("SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE recorded_at <= $1 ORDER BY seq");
    let mut rows = sqlx::query_as::<_, EvidenceRow>(&sql).bind(at).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        state.apply(&row.into_record().0);
    }
    Ok((
        state,
        HistoryCoverage {
            oldest_recorded_at: oldest.map(|(_, at)| at),
            archived_before: oldest.is_some_and(|(seq, _)| seq > 1),
        },
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn record(seq: i64, kind: &str, digest: Option<&str>, detail: Value) -> ChainedRecord {
        ChainedRecord {
            seq,
            recorded_at: Utc::now(),
            event_id: format!("e{seq}"),
            event_time: DateTime::from_timestamp(1_700_000_000 + seq, 0).unwrap_or_default(),
            kind: crate::evidence::EvidenceKind::parse(kind),
            outcome: "processed".into(),
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
            repository: Some("app".into()),
            digest: digest.map(str::to_owned),
            tag: None,
            actor: None,
            detail,
            prev_hash: String::new(),
            format_version: None,
        }
    }

    #[test]
    fn replay_keeps_the_last_applied_verdicts_and_presence() {
        let mut state = AsOf::default();
        let controls = |ecr2: &str| {
            json!({"repositories": [{"repository": "app", "state": "present", "applied": true,
                "controls_after": {"ECR.2": {"status": ecr2, "reason": "r"}}}]})
        };
        state.apply(&record(1, "repository_changed", None, controls("PASS")));
        state.apply(&record(2, "repository_changed", None, controls("FAIL")));
        let mut stale = controls("PASS");
        stale["repositories"][0]["applied"] = json!(false);
        state.apply(&record(3, "repository_changed", None, stale));
        assert_eq!(state.posture(None)[0].controls["ECR.2"].status, "FAIL");

        let digest = "sha256:aa";
        state.apply(&record(
            4,
            "image_pushed",
            Some(digest),
            json!({"image_after": {"presence": "pushed", "tags": ["v1"], "pushed_by": "arn:me",
                   "settings": {"tag_immutability": "IMMUTABLE", "encryption_type": "KMS"}},
                   "signatures": [{"digest": digest, "status": "PENDING", "sources": []}],
                   "scans": [{"digest": digest, "raw_status": "COMPLETE", "severity_counts": {"HIGH": 2}}]}),
        ));
        state.apply(&record(
            5,
            "signature_transition",
            Some(digest),
            json!({"from": "PENDING", "to": "UNSIGNED", "reason": "grace over", "sources": []}),
        ));
        let images = state.images(None);
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].signature.status.as_deref(), Some("UNSIGNED"));
        assert_eq!(images[0].scan.status.as_deref(), Some("SCANNED"));
        assert_eq!(images[0].scan.high, Some(2));
        assert_eq!(images[0].tag_immutability.as_deref(), Some("IMMUTABLE"));
        assert_eq!(images[0].pushed_by.as_deref(), Some("arn:me"));

        state.apply(&record(
            6,
            "image_deleted",
            Some(digest),
            json!({"image_after": {"presence": "deleted", "tags": null}}),
        ));
        assert!(state.images(None).is_empty());
        let absent = json!({"repositories": [{"repository": "app", "state": "absent", "applied": true,
            "controls_after": null}]});
        state.apply(&record(7, "repository_changed", None, absent));
        assert!(state.posture(None).is_empty());
    }
}
