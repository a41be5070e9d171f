//! The typed `detail` of each evidence kind, as docs/EVIDENCE.md lists it.
//!
//! The writer builds these and stores their JSON; readers (history, alerts, every export
//! format) deserialize them from a record's stored `detail`. The stored JSON stays the hashed
//! form: a record is never re-serialised from these types before hashing, so a detail written
//! by an older build (or with members this build does not know) verifies unchanged. Members
//! that were written as `null` are `Option` without `skip_serializing_if`; members that were
//! left out when empty skip `None`, so the JSON the writer produces is the JSON it always did.
//! Descriptive members nobody reads back default when missing, so a sparse older detail still
//! reads as its type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chain::ChainedRecord;
use super::kind::EvidenceKind;
use crate::domain::{SignatureStatus, Verdict};
use crate::evaluate::ImageSettings;
use crate::facts::SignatureVerification;

/// The detail of an event record (every kind that names a `parse::Change`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDetail {
    /// The EventBridge `detail-type` the event arrived with.
    #[serde(default)]
    pub detail_type: String,
    /// The parsed change, in `parse::Change`'s own serialisation.
    #[serde(default)]
    pub change: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<RepositoryAfter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_after: Option<ImageAfter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scans: Option<Vec<ScanAfter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Vec<SignatureAfter>>,
    /// What the message claimed that was not taken on trust (a clamped event time, a delete
    /// ECR does not confirm, a push record older than the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distrusted: Option<Vec<String>>,
    /// Images whose settings at push this event re-derived from the ordered tag mutability
    /// history (a recorded change lay between the push and the state they came from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_at_push: Option<Vec<SettingsAtPush>>,
}

/// An image's tag mutability at push, re-derived from the ordered history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SettingsAtPush {
    pub repository: String,
    pub digest: String,
    pub tag_immutability: String,
    /// Whether the tag it was pushed with was protected; `null` when pushed without a tag.
    pub tag_protected: Option<bool>,
    /// When the recorded state it now describes began (RFC 3339).
    pub state_at: String,
}

/// What an event wrote for one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryAfter {
    pub repository: String,
    pub state: RepositoryStateLabel,
    /// RFC 3339, as written (kept as text so it reads back exactly).
    #[serde(default)]
    pub facts_observed_at: String,
    /// Whether the write was newer than the stored read and so applied.
    pub applied: bool,
    /// Control id → verdict after the event; `null` when the controls were not evaluated.
    pub controls_after: Option<BTreeMap<String, Verdict>>,
}

/// Whether a repository read found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryStateLabel {
    Present,
    Absent,
    Unreadable,
}

/// An image's recorded state after an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAfter {
    pub presence: ImagePresenceLabel,
    pub tags: Option<Vec<String>>,
    pub settings: Option<ImageSettings>,
    pub pushed_by: Option<String>,
    /// RFC 3339 UTC with microseconds.
    pub pushed_at: Option<String>,
    pub storage_class: Option<String>,
    pub artifact_of: Option<String>,
    pub artifact_kind: Option<String>,
    /// Why a digest judged as an image looks like an artifact (`facts::Disguise`); left out
    /// when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disguise: Option<String>,
    /// Why the digest was deleted (`expired by lifecycle policy`, `deleted by
    /// BatchDeleteImage`, `repository deleted`, `repository no longer exists`); left out when
    /// the event does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_reason: Option<String>,
    /// Who or what deleted it: the caller's ARN, or the lifecycle rule; left out when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
}

/// What the event did to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImagePresenceLabel {
    Pushed,
    Deleted,
    Unchanged,
}

/// A scan result an event carried; `raw_status` `null` means not scanned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanAfter {
    pub digest: String,
    pub raw_status: Option<String>,
    pub severity_counts: Option<BTreeMap<String, i64>>,
}

/// A signature verdict an event carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureAfter {
    pub digest: String,
    pub status: SignatureStatus,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub sources: Vec<String>,
    /// The trust configuration version the verdict was reached under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Each signature's verification behind the verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verifications: Vec<SignatureVerification>,
}

/// The detail of a `control_transition` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlTransitionDetail {
    pub control: String,
    /// `null` the first time the repository is evaluated.
    pub from: Option<Verdict>,
    pub to: Verdict,
    #[serde(default)]
    pub cause_event_id: String,
    #[serde(default)]
    pub cause_kind: String,
    /// On a FAIL → PASS transition that undoes a PASS → FAIL within the window
    /// (`ECR_AUDIT_RESTORED_WINDOW`): who regressed it, when, and how long it stayed failed.
    /// Absent otherwise, and from records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regressed_and_restored: Option<RegressedAndRestored>,
    /// The exception in force when a control went to FAIL under it: the transition is
    /// recorded, reported `EXCEPTED`, and does not page. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionNote>,
}

/// A control that went PASS → FAIL and back FAIL → PASS within the window: both changes are
/// transitions of their own, each by its caller; this names both on the restoring one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegressedAndRestored {
    /// The caller of the PASS → FAIL change, or `unattributed`.
    pub regressed_by: String,
    /// Event time of the PASS → FAIL change (RFC 3339).
    pub regressed_at: String,
    /// The caller of the FAIL → PASS change (the record's own actor), or `unattributed`.
    pub restored_by: String,
    /// Seconds between the two event times.
    pub seconds: i64,
}

impl ControlTransitionDetail {
    /// PASS → FAIL: the transition that pages.
    pub(crate) fn is_regression(&self) -> bool {
        use crate::domain::ControlStatus::{Fail, Pass};
        self.from.as_ref().is_some_and(|f| f.status == Pass) && self.to.status == Fail
    }

    /// PASS → FAIL with no exception in force: a regression that pages.
    pub(crate) fn is_unexcepted_regression(&self) -> bool {
        self.is_regression() && self.exception.is_none()
    }

    /// PASS → UNKNOWN: a fact the control needs became unreadable (a policy that denies the
    /// audit role, an API outage). It pages too, or making a control unreadable would hide
    /// its failure.
    pub(crate) fn is_blinding(&self) -> bool {
        use crate::domain::ControlStatus::{Pass, Unknown};
        self.from.as_ref().is_some_and(|f| f.status == Pass) && self.to.status == Unknown
    }
}

/// The detail of a `signature_transition` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureTransitionDetail {
    pub from: Option<SignatureStatus>,
    pub to: SignatureStatus,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub sources: Vec<String>,
    /// Whether this is the first time the digest is found unsigned.
    #[serde(default)]
    pub first_unsigned: bool,
    /// The event kind (or `signature_recheck`) that caused the transition.
    #[serde(default)]
    pub cause_kind: String,
    /// The trust configuration version the new verdict was reached under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Each signature's verification behind the new verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verifications: Vec<SignatureVerification>,
}

/// The detail of a `usage_transition` record: Inspector's coverage says a digest started or
/// stopped running (docs/EVIDENCE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTransitionDetail {
    /// `None` when use was not known before.
    pub from: Option<bool>,
    pub to: bool,
    /// `inUseCount` as read.
    pub in_use_count: Option<i64>,
    /// `lastInUseAt` as read, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_in_use_at: Option<String>,
    /// Where the answer came from: `inspector2:ListCoverage`.
    pub source: String,
}

/// The detail of a `checkpoint` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointDetail {
    pub continues_from: ChainPoint,
    pub archived: ArchivedRange,
}

/// A record on the chain, by seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    pub seq: i64,
    pub hash: String,
}

/// The prefix a checkpoint archived and the file it went to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRange {
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: i64,
    /// The operator's cut-off, RFC 3339 UTC with microseconds.
    pub before: String,
    pub file: String,
    pub format: String,
    pub sha256: String,
}

/// An exception as the evidence names it (docs/EXCEPTIONS.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionNote {
    pub id: String,
    pub control: String,
    /// The repository pattern (`*` for any run of characters).
    pub repository: String,
    pub account: Option<String>,
    pub region: Option<String>,
    pub reason: String,
    pub approver: String,
    /// RFC 3339 UTC with microseconds.
    pub expires_at: String,
    /// `cli` or `file`.
    pub source: String,
}

/// What an `exception_changed` record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionAction {
    /// The exception was added (one record, about the exception).
    Added,
    /// At its addition, it covered this repository's failing control (one record per
    /// repository): the finding is reported `EXCEPTED` from here.
    Applied,
    /// Revoked by a person, or removed from the exceptions file.
    Revoked,
    /// Its expiry passed.
    Expired,
    /// After it ended, this repository's control fails again unexcepted (one record per
    /// repository; alerted).
    Reopened,
    /// The exceptions file was (re)loaded: its SHA-256 and what changed.
    FileLoaded,
}

impl ExceptionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Applied => "applied",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Reopened => "reopened",
            Self::FileLoaded => "file_loaded",
        }
    }

    /// Whether the finding is suppressed from here (OCSF `status_id` 3), rather than open.
    pub fn suppresses(self) -> bool {
        matches!(self, Self::Added | Self::Applied)
    }
}

/// The exceptions file a `file_loaded` record is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionFileNote {
    /// The path as configured.
    pub path: String,
    pub sha256: String,
    /// Entries in the file.
    pub entries: usize,
    /// Stored ids added and revoked by this load.
    pub added: Vec<String>,
    pub revoked: Vec<String>,
}

/// The detail of an `exception_changed` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionDetail {
    pub action: ExceptionAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionNote>,
    /// The control's verdict (FAIL, with its reason) for `applied` and `reopened`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why it ended (the revocation's reason, `expired`, or `removed from the exceptions file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<ExceptionFileNote>,
}

/// What a deploy verdict answered: `warn` is an image admitted although it fails the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictDecision {
    Allow,
    Warn,
    Deny,
}

/// Who asked for a deploy verdict, as the request said (nothing here is authenticated by
/// ecr-audit: the caller's own authentication is the webhook's TLS and the network).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VerdictAsker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The ECS service of a deployment hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The Kubernetes user of an admission review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The evidence record a verdict cites: the latest record of the image's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CitedRecord {
    pub seq: i64,
    pub hash: String,
}

/// One deploy verdict as given: what was answered, to whom, under which policy. Identical decisions
/// are one record (the recorder folds them by this).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GivenVerdict {
    pub decision: VerdictDecision,
    pub mode: crate::domain::EnforcementMode,
    pub scope: String,
    /// SHA-256 of the policy file the verdict was given under.
    pub policy_version: String,
    /// The reference as asked (a tag reference names the digest judged in the record).
    pub image: String,
    /// Whether the ledger knew the image.
    pub known: bool,
    /// Whether the answer came from a view older than its bound.
    pub stale: bool,
    pub reasons: Vec<String>,
    pub asked_by: VerdictAsker,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cites: Option<CitedRecord>,
}

/// The detail of a `deploy_verdict` record: one decision, or `count` identical decisions
/// given between `first_at` and `last_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployVerdictDetail {
    #[serde(flatten)]
    pub verdict: GivenVerdict,
    pub count: u64,
    pub first_at: chrono::DateTime<chrono::Utc>,
    pub last_at: chrono::DateTime<chrono::Utc>,
}

/// A record's detail read as the type of its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum EvidenceDetail {
    Event(Box<EventDetail>),
    ControlTransition(ControlTransitionDetail),
    SignatureTransition(SignatureTransitionDetail),
    UsageTransition(UsageTransitionDetail),
    Checkpoint(CheckpointDetail),
    Exception(ExceptionDetail),
    DeployVerdict(Box<DeployVerdictDetail>),
    /// The stored detail does not have its kind's shape (a record this build did not write):
    /// it still hashes and verifies, but says nothing to history, alerts or the mappings.
    Unreadable,
}

impl ChainedRecord {
    /// The record's detail as the type of its kind.
    pub fn typed_detail(&self) -> EvidenceDetail {
        let detail = &self.detail;
        let typed = match self.kind {
            EvidenceKind::ControlTransition => {
                ControlTransitionDetail::deserialize(detail).map(EvidenceDetail::ControlTransition)
            }
            EvidenceKind::SignatureTransition => SignatureTransitionDetail::deserialize(detail)
                .map(EvidenceDetail::SignatureTransition),
            EvidenceKind::UsageTransition => {
                UsageTransitionDetail::deserialize(detail).map(EvidenceDetail::UsageTransition)
            }
            EvidenceKind::Checkpoint => {
                CheckpointDetail::deserialize(detail).map(EvidenceDetail::Checkpoint)
            }
            EvidenceKind::ExceptionChanged => {
                ExceptionDetail::deserialize(detail).map(EvidenceDetail::Exception)
            }
            EvidenceKind::DeployVerdict => DeployVerdictDetail::deserialize(detail)
                .map(|d| EvidenceDetail::DeployVerdict(Box::new(d))),
            _ => EventDetail::deserialize(detail).map(|d| EvidenceDetail::Event(Box::new(d))),
        };
        typed.unwrap_or(EvidenceDetail::Unreadable)
    }

    /// The control transition this record is, if it is one.
    pub fn control_transition(&self) -> Option<ControlTransitionDetail> {
        match self.typed_detail() {
            EvidenceDetail::ControlTransition(detail) => Some(detail),
            _ => None,
        }
    }

    /// The signature transition this record is, if it is one.
    pub fn signature_transition(&self) -> Option<SignatureTransitionDetail> {
        match self.typed_detail() {
            EvidenceDetail::SignatureTransition(detail) => Some(detail),
            _ => None,
        }
    }

    /// The checkpoint this record is, if it is one.
    pub fn checkpoint(&self) -> Option<CheckpointDetail> {
        match self.typed_detail() {
            EvidenceDetail::Checkpoint(detail) => Some(detail),
            _ => None,
        }
    }
}

/// A typed detail as the JSON stored and hashed. Serialising these plain structs cannot fail.
pub(crate) fn to_detail_value<T: Serialize>(detail: &T) -> Value {
    serde_json::to_value(detail).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::ControlStatus;

    /// The JSON the typed details produce is the JSON the writer produced before them:
    /// `null` where a member was `null`, absent where it was left out.
    #[test]
    fn typed_details_serialise_as_the_untyped_writer_did() {
        let transition = ControlTransitionDetail {
            control: "ECR.2".into(),
            from: None,
            to: Verdict {
                status: ControlStatus::Fail,
                reason: "r".into(),
            },
            cause_event_id: "e1".into(),
            cause_kind: "repository_changed".into(),
            regressed_and_restored: None,
            exception: None,
        };
        assert_eq!(
            to_detail_value(&transition),
            json!({"control": "ECR.2", "from": null, "to": {"status": "FAIL", "reason": "r"},
                   "cause_event_id": "e1", "cause_kind": "repository_changed"})
        );
        let event = EventDetail {
            detail_type: "ECR Image Action".into(),
            change: json!({"ImagePushed": {}}),
            repositories: None,
            image_after: Some(ImageAfter {
                presence: ImagePresenceLabel::Deleted,
                tags: None,
                settings: None,
                pushed_by: None,
                pushed_at: None,
                storage_class: None,
                artifact_of: None,
                artifact_kind: None,
                disguise: None,
                deleted_reason: None,
                deleted_by: None,
            }),
            scans: None,
            signatures: None,
            distrusted: None,
            settings_at_push: None,
        };
        assert_eq!(
            to_detail_value(&event),
            json!({"detail_type": "ECR Image Action", "change": {"ImagePushed": {}},
                   "image_after": {"presence": "deleted", "tags": null, "settings": null,
                                   "pushed_by": null, "pushed_at": null, "storage_class": null,
                                   "artifact_of": null, "artifact_kind": null}})
        );
    }

    #[test]
    fn pass_to_fail_regresses_and_pass_to_unknown_blinds() {
        use ControlStatus::{Fail, Pass, Unknown};
        let transition = |from: Option<ControlStatus>, to| ControlTransitionDetail {
            control: "ECR.3".into(),
            from: from.map(|status| Verdict {
                status,
                reason: "before".into(),
            }),
            to: Verdict {
                status: to,
                reason: "after".into(),
            },
            cause_event_id: String::new(),
            cause_kind: String::new(),
            regressed_and_restored: None,
            exception: None,
        };
        let cases = [
            (Some(Pass), Fail, true, false),
            (Some(Pass), Unknown, false, true),
            (Some(Fail), Unknown, false, false),
            (Some(Unknown), Fail, false, false),
            (Some(Unknown), Pass, false, false),
            (None, Unknown, false, false),
            (None, Fail, false, false),
        ];
        for (from, to, regression, blinding) in cases {
            let detail = transition(from, to);
            assert_eq!(detail.is_regression(), regression, "{from:?} → {to:?}");
            assert_eq!(detail.is_blinding(), blinding, "{from:?} → {to:?}");
        }
    }

    #[test]
    fn a_detail_without_its_kinds_shape_is_unreadable_not_an_error() {
        let record = ChainedRecord {
            seq: 1,
            recorded_at: chrono::Utc::now(),
            event_id: "e".into(),
            event_time: chrono::Utc::now(),
            kind: EvidenceKind::SignatureTransition,
            outcome: "processed".into(),
            account: None,
            region: None,
            repository: None,
            digest: None,
            tag: None,
            actor: None,
            detail: json!({"to": "SOMETHING_NEW"}),
            prev_hash: String::new(),
            format_version: None,
        };
        assert_eq!(record.typed_detail(), EvidenceDetail::Unreadable);
        assert!(record.signature_transition().is_none());
    }
}
