//! The closed set of evidence kinds, as written in the `kind` column and the canonical record.
//!
//! Every kind ecr-audit writes is a variant; a kind read from an older or newer database that
//! this build does not know is kept verbatim in [`EvidenceKind::Other`], so it hashes, exports
//! and verifies exactly as stored.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What an evidence record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EvidenceKind {
    /// Event records: one per audit event, named after its change (`parse::Change::kind`).
    ImagePushed,
    ImageDeleted,
    ImageStorageClassChanged,
    ImagePushRecorded,
    ReferrerChanged,
    ScanCompleted,
    FindingChanged,
    RepositoryChanged,
    RegistryChanged,
    /// An AWS Signer revocation (`RevokeSignature`, `RevokeSigningProfile`).
    SignerRevoked,
    FailedApiCall,
    /// `ECR Replication Action` in the destination registry.
    ImageReplicated,
    /// `ECR Pull Through Cache Action`.
    PullThroughCached,
    /// Lifecycle expiry or `BatchDeleteImage` (each digest it marks deleted gets an
    /// `image_deleted` record of its own).
    ImagesDeleted,
    Ignored,
    /// A control's status changed for a repository.
    ControlTransition,
    /// A digest's signature status changed.
    SignatureTransition,
    /// Whether a digest is in use changed (Inspector coverage).
    UsageTransition,
    /// Retention archived a prefix of the chain (`evidence::retention`).
    Checkpoint,
    /// An exception was added, applied, revoked, expired or re-opened, or the exceptions file
    /// was loaded (docs/EXCEPTIONS.md).
    ExceptionChanged,
    /// A deploy-time verdict, or identical ones given together (docs/ENFORCEMENT.md).
    DeployVerdict,
    /// A kind this build does not write, kept as stored.
    Other(String),
}

impl EvidenceKind {
    /// Every kind this build writes, for tests and documentation.
    pub(crate) const KNOWN: [EvidenceKind; 21] = [
        Self::ImagePushed,
        Self::ImageDeleted,
        Self::ImageStorageClassChanged,
        Self::ImagePushRecorded,
        Self::ReferrerChanged,
        Self::ScanCompleted,
        Self::FindingChanged,
        Self::RepositoryChanged,
        Self::RegistryChanged,
        Self::SignerRevoked,
        Self::FailedApiCall,
        Self::ImageReplicated,
        Self::PullThroughCached,
        Self::ImagesDeleted,
        Self::Ignored,
        Self::ControlTransition,
        Self::SignatureTransition,
        Self::UsageTransition,
        Self::Checkpoint,
        Self::ExceptionChanged,
        Self::DeployVerdict,
    ];

    /// The stored spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::ImagePushed => "image_pushed",
            Self::ImageDeleted => "image_deleted",
            Self::ImageStorageClassChanged => "image_storage_class_changed",
            Self::ImagePushRecorded => "image_push_recorded",
            Self::ReferrerChanged => "referrer_changed",
            Self::ScanCompleted => "scan_completed",
            Self::FindingChanged => "finding_changed",
            Self::RepositoryChanged => "repository_changed",
            Self::RegistryChanged => "registry_changed",
            Self::SignerRevoked => "signer_revoked",
            Self::FailedApiCall => "failed_api_call",
            Self::ImageReplicated => "image_replicated",
            Self::PullThroughCached => "pull_through_cached",
            Self::ImagesDeleted => "images_deleted",
            Self::Ignored => "ignored",
            Self::ControlTransition => "control_transition",
            Self::SignatureTransition => "signature_transition",
            Self::UsageTransition => "usage_transition",
            Self::Checkpoint => "checkpoint",
            Self::ExceptionChanged => "exception_changed",
            Self::DeployVerdict => "deploy_verdict",
            Self::Other(kind) => kind,
        }
    }

    /// Reads a stored kind; never fails (an unknown kind becomes [`EvidenceKind::Other`]).
    pub fn parse(text: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|k| k.as_str() == text)
            .unwrap_or_else(|| Self::Other(text.to_owned()))
    }

    /// Whether records of this kind carry an [`super::detail::EventDetail`]: the event kinds,
    /// and unknown kinds (read leniently as the same shape).
    pub fn is_event(&self) -> bool {
        !matches!(
            self,
            Self::ControlTransition
                | Self::SignatureTransition
                | Self::UsageTransition
                | Self::Checkpoint
                | Self::ExceptionChanged
                | Self::DeployVerdict
        )
    }
}

impl fmt::Display for EvidenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for EvidenceKind {
    fn from(text: String) -> Self {
        match Self::parse(&text) {
            Self::Other(_) => Self::Other(text),
            known => known,
        }
    }
}

impl From<&str> for EvidenceKind {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

// A plain string on the wire: the canonical serialisation of a record is unchanged.
impl Serialize for EvidenceKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EvidenceKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_kind_reads_back_as_itself() {
        for kind in EvidenceKind::KNOWN {
            assert_eq!(EvidenceKind::parse(kind.as_str()), kind);
            assert_eq!(
                serde_json::to_value(&kind).ok(),
                Some(serde_json::json!(kind.as_str()))
            );
        }
    }

    #[test]
    fn an_unknown_kind_is_kept_verbatim() {
        let kind: EvidenceKind = serde_json::from_str("\"future_kind\"")
            .unwrap_or_else(|_| EvidenceKind::Other(String::new()));
        assert_eq!(kind, EvidenceKind::Other("future_kind".into()));
        assert_eq!(
            serde_json::to_string(&kind).ok().as_deref(),
            Some("\"future_kind\"")
        );
    }

    #[test]
    fn the_event_kinds_are_the_changes_kinds() {
        use crate::parse::Change;
        let ignored = Change::Ignored {
            reason: String::new(),
        };
        assert_eq!(EvidenceKind::parse(ignored.kind()), EvidenceKind::Ignored);
        assert!(EvidenceKind::Ignored.is_event());
        assert!(!EvidenceKind::Checkpoint.is_event());
    }
}
