//! The read models: the rows `posture` and `images` show (as tables and as JSON), whether
//! read from the current state (`store`) or replayed from the evidence (`evidence::history`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One control's verdict as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlView {
    pub status: String,
    pub reason: String,
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

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct ScanView {
    /// `None` for artifacts, which take no scan status.
    pub status: Option<String>,
    pub raw_status: Option<String>,
    pub critical: Option<i64>,
    pub high: Option<i64>,
    pub medium: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EncryptionView {
    #[serde(rename = "type")]
    pub encryption_type: Option<String>,
    pub kms_key: Option<String>,
    pub customer_managed: Option<bool>,
}

/// One digest's posture (the `images --format json` shape of docs/RUNBOOK.md).
#[derive(Debug, Clone, Serialize)]
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
}
