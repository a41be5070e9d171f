//! Signing facts: managed signing's statuses and the signature artifacts next to a digest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One `signingStatuses[]` entry of `DescribeImageSigningStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedSigning {
    pub profile_arn: String,
    pub status: SigningStatus,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureKind {
    Notation,
    Cosign,
}

/// A signature artifact found next to the digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureArtifact {
    pub kind: SignatureKind,
    /// The artifact's digest, or the Cosign tag.
    pub reference: String,
    pub pushed_at: Option<DateTime<Utc>>,
}

/// `signingStatuses[].status`: a closed set today, with newer values kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum SigningStatus {
    InProgress,
    Complete,
    Failed,
    /// A value this version does not know.
    Other(String),
}

impl SigningStatus {
    /// Maps ECR's raw value; an unknown value is kept as [`SigningStatus::Other`].
    pub(crate) fn from_raw(raw: &str) -> Self {
        match raw {
            "IN_PROGRESS" => Self::InProgress,
            "COMPLETE" => Self::Complete,
            "FAILED" => Self::Failed,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Complete => "COMPLETE",
            Self::Failed => "FAILED",
            Self::Other(raw) => raw,
        }
    }
}

impl From<String> for SigningStatus {
    fn from(raw: String) -> Self {
        Self::from_raw(&raw)
    }
}

impl From<SigningStatus> for String {
    fn from(status: SigningStatus) -> Self {
        status.as_str().to_owned()
    }
}

impl std::fmt::Display for SigningStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Signer profile's status (`GetSigningProfile`): a closed set today, with newer values kept
/// verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ProfileStatus {
    Active,
    Canceled,
    Revoked,
    /// `ResourceNotFoundException`: the profile was deleted, so it vouches for nothing.
    NotFound,
    /// A value this version does not know.
    Other(String),
}

impl ProfileStatus {
    /// Maps Signer's raw value; an unknown value is kept as [`ProfileStatus::Other`].
    pub(crate) fn from_raw(raw: &str) -> Self {
        match raw {
            "Active" => Self::Active,
            "Canceled" => Self::Canceled,
            "Revoked" => Self::Revoked,
            "NotFound" => Self::NotFound,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "Active",
            Self::Canceled => "Canceled",
            Self::Revoked => "Revoked",
            Self::NotFound => "NotFound",
            Self::Other(raw) => raw,
        }
    }
}

impl From<String> for ProfileStatus {
    fn from(raw: String) -> Self {
        Self::from_raw(&raw)
    }
}

impl From<ProfileStatus> for String {
    fn from(status: ProfileStatus) -> Self {
        status.as_str().to_owned()
    }
}

impl std::fmt::Display for ProfileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_statuses_round_trip_and_unknown_values_are_kept() {
        for raw in ["IN_PROGRESS", "COMPLETE", "FAILED", "SOMETHING_NEW"] {
            assert_eq!(SigningStatus::from_raw(raw).as_str(), raw);
        }
        assert_eq!(SigningStatus::from_raw("COMPLETE"), SigningStatus::Complete);
        assert_eq!(
            SigningStatus::from_raw("PAUSED"),
            SigningStatus::Other("PAUSED".into())
        );
        for raw in ["Active", "Canceled", "Revoked", "Suspended"] {
            assert_eq!(ProfileStatus::from_raw(raw).as_str(), raw);
        }
        assert_eq!(ProfileStatus::from_raw("Active"), ProfileStatus::Active);
    }

    #[test]
    fn statuses_serialize_as_the_raw_value() {
        let json = serde_json::to_string(&SigningStatus::Complete).unwrap_or_default();
        assert_eq!(json, "\"COMPLETE\"");
        let back: ProfileStatus =
            serde_json::from_str("\"Revoked\"").unwrap_or(ProfileStatus::Active);
        assert_eq!(back, ProfileStatus::Revoked);
    }
}
