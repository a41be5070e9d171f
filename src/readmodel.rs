//! The read models: the rows `posture` and `images` show (as tables and as JSON), whether
//! read from the current state (`store`) or replayed from the evidence (`evidence::history`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// An exception in force, as the views show it beside the verdict it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionView {
    pub id: String,
    /// The control it covers (on `images`, where a row lists its repository's exceptions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// The repository pattern it was written for.
    pub repository: String,
    pub reason: String,
    pub approver: String,
    pub expires_at: DateTime<Utc>,
    /// `cli` or `file`.
    pub source: String,
}

/// One exception as `exception list` shows it (every state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionRow {
    pub id: String,
    /// `active`, `revoked` or `expired` (an active one past its expiry shows `expired`).
    pub state: String,
    pub control: String,
    pub repository: String,
    pub account: Option<String>,
    pub region: Option<String>,
    pub reason: String,
    pub approver: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub source: String,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
    /// Failing controls of present repositories it reports `EXCEPTED` now.
    pub excepted: i64,
}

/// One control's verdict as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlView {
    /// `PASS`, `FAIL`, `UNKNOWN`, or `EXCEPTED`: a `FAIL` under an exception in force.
    pub status: String,
    /// The evaluation's reason (for `EXCEPTED`, why it fails).
    pub reason: String,
    /// The evaluation's verdict when it differs from `status` (`FAIL` under `EXCEPTED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The exception in force, when `status` is `EXCEPTED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionView>,
    /// Whose request last changed the status: the caller's ARN, or `unattributed` when no
    /// request names one (a reconcile sweep); absent for verdicts stored before it was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

/// One repository's posture (the `posture --format json` shape of docs/RUNBOOK.md).
#[derive(Debug, Clone, Serialize)]
pub struct PostureRow {
    pub account: String,
    pub region: String,
    pub repository: String,
    pub controls: BTreeMap<String, ControlView>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SignatureView {
    /// `None` for artifacts, which take no signature status.
    pub status: Option<String>,
    pub sources: Vec<String>,
    pub reason: Option<String>,
    /// The trust configuration version the verdict was reached under.
    pub policy_version: Option<String>,
    /// Each signature's verification (docs/SIGNATURES.md, "What `images` shows").
    pub verifications: Vec<crate::facts::SignatureVerification>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanView {
    /// `None` for artifacts, which take no scan status.
    pub status: Option<String>,
    pub raw_status: Option<String>,
    /// Under ENHANCED scanning, Inspector's coverage `scanStatus.reason` (`SUCCESSFUL`,
    /// `PENDING_INITIAL_SCAN`, `UNSUPPORTED_OS`, `SCAN_ELIGIBILITY_EXPIRED`, … as given).
    pub reason: Option<String>,
    pub critical: Option<i64>,
    pub high: Option<i64>,
    pub medium: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EncryptionView {
    #[serde(rename = "type")]
    pub encryption_type: Option<String>,
    pub kms_key: Option<String>,
    pub customer_managed: Option<bool>,
}

/// One digest's posture (the `images --format json` shape of docs/RUNBOOK.md).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageRow {
    pub account: String,
    pub region: String,
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub pushed_by: Option<String>,
    pub artifact_of: Option<String>,
    /// `notation_signature`, `cosign_signature`, `sbom`, `attestation` or `artifact`.
    pub artifact_kind: Option<String>,
    pub signature: SignatureView,
    pub scan: ScanView,
    pub tag_immutability: Option<String>,
    pub tag_protected: Option<bool>,
    pub encryption: EncryptionView,
    pub usage: UsageView,
    /// The exceptions in force over failing controls of the digest's repository (left out
    /// when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ExceptionView>,
}

/// Whether a digest runs and when it was pulled (docs/RUNBOOK.md, "Images in use").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageView {
    /// `None` while unknown: BASIC scanning, no coverage read yet, or no count reported.
    pub in_use: Option<bool>,
    pub in_use_count: Option<i64>,
    pub last_in_use_at: Option<DateTime<Utc>>,
    /// ECR's `lastRecordedPullTime` (or Inspector's `imagePulledAt`), the latest seen.
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// Inspector's coverage `scanStatus` under ENHANCED scanning.
    pub coverage: Option<CoverageView>,
    /// When the coverage was last read for this digest.
    pub observed_at: Option<DateTime<Utc>>,
}

/// Inspector's `scanStatus` of a digest: `statusCode` and `reason`, as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageView {
    pub status: Option<String>,
    pub reason: Option<String>,
}

/// Which rows `images` shows (`--in-use`, `--signature`, `--scan`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ImageFilter {
    /// Only digests known to be in use.
    pub in_use: bool,
    pub signature: Option<crate::domain::SignatureStatus>,
    pub scan: Option<crate::domain::ScanStatus>,
}

impl ImageFilter {
    pub(crate) fn keeps(&self, row: &ImageRow) -> bool {
        (!self.in_use || row.usage.in_use == Some(true))
            && self
                .signature
                .is_none_or(|s| row.signature.status.as_deref() == Some(s.as_str()))
            && self
                .scan
                .is_none_or(|s| row.scan.status.as_deref() == Some(s.as_str()))
    }
}
