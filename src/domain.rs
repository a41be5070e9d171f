//! Identifiers and vocabulary shared by every pipeline stage.
//!
//! Identifiers are newtypes validated once, where data enters (parse, enrich), and trusted
//! afterwards. The vocabulary enums carry the exact strings of the README.md and docs/ contract
//! (`PASS`, `FAIL`, `UNKNOWN`, control ids), so their `as_str` is what users see.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a raw identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {value:?}")]
pub struct InvalidIdentifier {
    pub kind: &'static str,
    pub value: String,
}

fn invalid(kind: &'static str, value: &str) -> InvalidIdentifier {
    // Bodies can be huge and hostile: keep only a bounded prefix in errors and logs.
    InvalidIdentifier {
        kind,
        value: value.chars().take(80).collect(),
    }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A 12-digit AWS account id.
    AccountId
);
string_newtype!(
    /// An AWS region name such as `us-east-1`.
    Region
);
string_newtype!(
    /// An ECR repository name (namespaces included, e.g. `team/app`).
    RepositoryName
);
string_newtype!(
    /// An image manifest digest, always `sha256:` followed by 64 lowercase hex digits.
    Digest
);

impl AccountId {
    /// # Errors
    /// When `value` is not exactly twelve ASCII digits.
    pub fn parse(value: &str) -> Result<Self, InvalidIdentifier> {
        if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid("account id", value))
        }
    }
}

/// The region under which ECR Public repositories are kept: ECR Public is one registry per
/// account (its API answers in us-east-1 only), so its repositories are keyed, stored and
/// shown with this pseudo-region, apart from the private repositories of us-east-1.
pub const ECR_PUBLIC_REGION: &str = "ecr-public";

impl Region {
    /// The pseudo-region of ECR Public repositories ([`ECR_PUBLIC_REGION`]).
    pub fn ecr_public() -> Self {
        Self(ECR_PUBLIC_REGION.to_owned())
    }

    /// Whether this is the pseudo-region of ECR Public repositories.
    pub fn is_ecr_public(&self) -> bool {
        self.0 == ECR_PUBLIC_REGION
    }

    /// # Errors
    /// When `value` is not shaped like a region (`xx-word-N`, lowercase).
    pub fn parse(value: &str) -> Result<Self, InvalidIdentifier> {
        let well_formed = (4..=32).contains(&value.len())
            && value.contains('-')
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !value.starts_with('-')
            && !value.ends_with('-');
        if well_formed {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid("region", value))
        }
    }
}

impl RepositoryName {
    /// Accepts ECR's documented pattern: lowercase components of `[a-z0-9]` separated by
    /// `.`, `_` or `-`, joined by `/`, 2 to 256 characters.
    ///
    /// # Errors
    /// When `value` does not match the pattern.
    pub fn parse(value: &str) -> Result<Self, InvalidIdentifier> {
        let component_ok = |component: &str| {
            let bytes = component.as_bytes();
            !bytes.is_empty()
                && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && !bytes
                    .windows(2)
                    .any(|w| !w[0].is_ascii_alphanumeric() && !w[1].is_ascii_alphanumeric())
        };
        if (2..=256).contains(&value.len()) && value.split('/').all(component_ok) {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid("repository name", value))
        }
    }

    /// Takes the name out of a repository ARN (`arn:aws:ecr:REGION:ACCOUNT:repository/NAME`).
    ///
    /// # Errors
    /// When `arn` has no `:repository/` part or the name is invalid.
    pub(crate) fn from_arn(arn: &str) -> Result<Self, InvalidIdentifier> {
        match arn.split_once(":repository/") {
            Some((_, name)) => Self::parse(name),
            None => Err(invalid("repository ARN", arn)),
        }
    }
}

impl Digest {
    /// # Errors
    /// When `value` is not `sha256:` followed by 64 lowercase hex digits.
    pub fn parse(value: &str) -> Result<Self, InvalidIdentifier> {
        match value.strip_prefix("sha256:") {
            Some(hex)
                if hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Self(value.to_owned()))
            }
            _ => Err(invalid("image digest", value)),
        }
    }
}

/// Where a repository lives: the unit of caching, posture and control results.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RepositoryKey {
    pub account: AccountId,
    pub region: Region,
    pub name: RepositoryName,
}

impl RepositoryKey {
    pub fn arn(&self) -> String {
        if self.region.is_ecr_public() {
            return format!(
                "arn:aws:ecr-public::{}:repository/{}",
                self.account, self.name
            );
        }
        format!(
            "arn:aws:ecr:{}:{}:repository/{}",
            self.region, self.account, self.name
        )
    }
}

impl fmt::Display for RepositoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.region, self.name)
    }
}

/// A control ecr-audit evaluates per repository: the Security Hub ECR controls, and the
/// `ECRA.*` checks of its own from the ECR security practices (docs/CONTROLS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ControlId {
    #[serde(rename = "ECR.1")]
    Ecr1,
    #[serde(rename = "ECR.2")]
    Ecr2,
    #[serde(rename = "ECR.3")]
    Ecr3,
    /// ECR Public repositories should be tagged (judged for public repositories only).
    #[serde(rename = "ECR.4")]
    Ecr4,
    #[serde(rename = "ECR.5")]
    Ecr5,
    /// The repository policy grants access to any principal (`"Principal": "*"`).
    #[serde(rename = "ECRA.1")]
    PublicPolicy,
    /// The repository policy grants another account access without `aws:PrincipalOrgID`.
    #[serde(rename = "ECRA.2")]
    CrossAccountWithoutOrg,
    /// No managed-signing rule covers the repository.
    #[serde(rename = "ECRA.3")]
    SigningCoverage,
    /// The repository was created by a pull-through cache rule that no repository creation
    /// template covers.
    #[serde(rename = "ECRA.4")]
    PullThroughTemplate,
    /// The repository differs from the repository creation template that applies to it.
    #[serde(rename = "ECRA.5")]
    TemplateDrift,
}

impl ControlId {
    pub const ALL: [ControlId; 10] = [
        Self::Ecr1,
        Self::Ecr2,
        Self::Ecr3,
        Self::Ecr4,
        Self::Ecr5,
        Self::PublicPolicy,
        Self::CrossAccountWithoutOrg,
        Self::SigningCoverage,
        Self::PullThroughTemplate,
        Self::TemplateDrift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ecr1 => "ECR.1",
            Self::Ecr2 => "ECR.2",
            Self::Ecr3 => "ECR.3",
            Self::Ecr4 => "ECR.4",
            Self::Ecr5 => "ECR.5",
            Self::PublicPolicy => "ECRA.1",
            Self::CrossAccountWithoutOrg => "ECRA.2",
            Self::SigningCoverage => "ECRA.3",
            Self::PullThroughTemplate => "ECRA.4",
            Self::TemplateDrift => "ECRA.5",
        }
    }

    pub(crate) fn from_str_opt(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
    }
}

impl fmt::Display for ControlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one control for one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ControlStatus {
    Pass,
    Fail,
    /// A fact the control needs could not be read; never reported as a pass.
    Unknown,
}

impl ControlStatus {
    pub const ALL: [ControlStatus; 3] = [Self::Pass, Self::Fail, Self::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Unknown => "UNKNOWN",
        }
    }

    pub(crate) fn from_str_opt(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
    }
}

impl fmt::Display for ControlStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control's status as reported (views, gauges, dashboards): the evaluation's status, except
/// that a `FAIL` under an exception in force is reported `EXCEPTED` (docs/EXCEPTIONS.md). The
/// verdict itself stays `FAIL`; only the reporting changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportedStatus {
    Pass,
    Fail,
    Unknown,
    /// `FAIL`, with an accepted risk in force (approver, reason, expiry).
    Excepted,
}

impl ReportedStatus {
    pub const ALL: [ReportedStatus; 4] = [Self::Pass, Self::Fail, Self::Unknown, Self::Excepted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Unknown => "UNKNOWN",
            Self::Excepted => "EXCEPTED",
        }
    }

    pub(crate) fn from_str_opt(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// The end reason of an exception whose expiry passed (evidence `end_reason`; the alert is
/// then `EXCEPTION_EXPIRED`, any other end reason is a revocation).
pub const EXCEPTION_EXPIRED_REASON: &str = "expired";

/// A control status with the human-readable reason behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub status: ControlStatus,
    pub reason: String,
}

impl Verdict {
    pub fn pass(reason: impl Into<String>) -> Self {
        Self {
            status: ControlStatus::Pass,
            reason: reason.into(),
        }
    }
    pub fn fail(reason: impl Into<String>) -> Self {
        Self {
            status: ControlStatus::Fail,
            reason: reason.into(),
        }
    }
    pub fn unknown(reason: impl Into<String>) -> Self {
        Self {
            status: ControlStatus::Unknown,
            reason: reason.into(),
        }
    }
}

/// The actor of a change no request can be tied to (a reconcile sweep found it, or the event
/// that revealed it names no caller): said explicitly, never borrowed from another event.
pub const UNATTRIBUTED: &str = "unattributed";

/// Who made a change, from CloudTrail's `userIdentity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The identity ARN: the assumed-role session, IAM user or service principal.
    pub arn: String,
    /// CloudTrail's identity type (`IAMUser`, `AssumedRole`, `AWSService`, …), kept as data.
    pub identity_type: Option<String>,
    /// For assumed roles, the role behind the session.
    pub issuer_arn: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_ecr_pattern() {
        for ok in ["ab", "team/app", "a.b_c-d/e1", "x/y/z0"] {
            assert!(RepositoryName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "Team/app", "/app", "app/", "a//b", "a..b", "-ab", "ab-", "a b",
        ] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Digest::parse(&good).is_ok());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert!(Digest::parse("sha256:abc").is_err());
    }

    #[test]
    fn repository_name_from_arn() {
        let name =
            RepositoryName::from_arn("arn:aws:ecr:us-east-1:123456789012:repository/team/app");
        assert_eq!(name.map(|n| n.0), Ok("team/app".to_owned()));
        assert!(RepositoryName::from_arn("team/app").is_err());
    }

    #[test]
    fn account_and_region_validation() {
        assert!(AccountId::parse("123456789012").is_ok());
        assert!(AccountId::parse("12345678901").is_err());
        assert!(Region::parse("eu-central-1").is_ok());
        assert!(Region::parse("EU").is_err());
    }
}

/// The signature status of a digest (vocabulary of docs/SIGNATURES.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SignatureStatus {
    /// A trusted signature exists.
    Signed,
    /// Inside the grace window, or managed signing still `IN_PROGRESS`.
    Pending,
    /// Grace window over and no signature.
    Unsigned,
    /// Managed signing reported `FAILED`.
    Failed,
    /// Only signatures whose signing profile is revoked or canceled.
    Untrusted,
}

impl SignatureStatus {
    pub const ALL: [SignatureStatus; 5] = [
        Self::Signed,
        Self::Pending,
        Self::Unsigned,
        Self::Failed,
        Self::Untrusted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signed => "SIGNED",
            Self::Pending => "PENDING",
            Self::Unsigned => "UNSIGNED",
            Self::Failed => "FAILED",
            Self::Untrusted => "UNTRUSTED",
        }
    }

    pub(crate) fn from_str_opt(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The statuses worth a page (docs/ALERTS.md); the OCSF export maps the same set to Fail.
    pub(crate) const PAGING: [SignatureStatus; 3] = [Self::Unsigned, Self::Failed, Self::Untrusted];

    /// Whether a digest reaching this status pages.
    pub fn pages(self) -> bool {
        Self::PAGING.contains(&self)
    }
}

/// The scan status of a digest (vocabulary of docs/SIGNATURES.md); the raw ECR/Inspector status is kept
/// beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ScanStatus {
    Scanned,
    Pending,
    Failed,
    Unsupported,
    Expired,
    Unavailable,
    NotScanned,
}

impl ScanStatus {
    pub const ALL: [ScanStatus; 7] = [
        Self::Scanned,
        Self::Pending,
        Self::Failed,
        Self::Unsupported,
        Self::Expired,
        Self::Unavailable,
        Self::NotScanned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scanned => "SCANNED",
            Self::Pending => "PENDING",
            Self::Failed => "FAILED",
            Self::Unsupported => "UNSUPPORTED",
            Self::Expired => "EXPIRED",
            Self::Unavailable => "UNAVAILABLE",
            Self::NotScanned => "NOT_SCANNED",
        }
    }

    pub(crate) fn from_str_opt(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Maps a raw ECR `imageScanStatus.status` (or Inspector scan status); `None` for a value
    /// this version does not know, which callers keep as raw data.
    pub(crate) fn from_raw(raw: &str) -> Option<Self> {
        Some(match raw {
            "COMPLETE" | "ACTIVE" | "INITIAL_SCAN_COMPLETE" => Self::Scanned,
            "IN_PROGRESS" | "PENDING" => Self::Pending,
            "FAILED" => Self::Failed,
            "UNSUPPORTED_IMAGE" => Self::Unsupported,
            "SCAN_ELIGIBILITY_EXPIRED" => Self::Expired,
            "FINDINGS_UNAVAILABLE" | "LIMIT_EXCEEDED" | "IMAGE_ARCHIVED" => Self::Unavailable,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod vocabulary_tests {
    use super::*;

    #[test]
    fn raw_scan_statuses_map_to_the_vocabulary() {
        let cases = [
            ("COMPLETE", Some(ScanStatus::Scanned)),
            ("ACTIVE", Some(ScanStatus::Scanned)),
            ("IN_PROGRESS", Some(ScanStatus::Pending)),
            ("PENDING", Some(ScanStatus::Pending)),
            ("FAILED", Some(ScanStatus::Failed)),
            ("UNSUPPORTED_IMAGE", Some(ScanStatus::Unsupported)),
            ("SCAN_ELIGIBILITY_EXPIRED", Some(ScanStatus::Expired)),
            ("FINDINGS_UNAVAILABLE", Some(ScanStatus::Unavailable)),
            ("LIMIT_EXCEEDED", Some(ScanStatus::Unavailable)),
            ("IMAGE_ARCHIVED", Some(ScanStatus::Unavailable)),
            ("BRAND_NEW", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(ScanStatus::from_raw(raw), expected, "{raw}");
        }
        // Never "scanned, no findings" for these.
        for raw in [
            "UNSUPPORTED_IMAGE",
            "SCAN_ELIGIBILITY_EXPIRED",
            "FINDINGS_UNAVAILABLE",
        ] {
            assert_ne!(ScanStatus::from_raw(raw), Some(ScanStatus::Scanned));
        }
    }

    #[test]
    fn vocabulary_round_trips() {
        for s in SignatureStatus::ALL {
            assert_eq!(SignatureStatus::from_str_opt(s.as_str()), Some(s));
        }
        for s in ScanStatus::ALL {
            assert_eq!(ScanStatus::from_str_opt(s.as_str()), Some(s));
        }
    }
}

/// What a failing image gets at deploy time in a deploy policy's scope (docs/ENFORCEMENT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementMode {
    /// Admit, warn, record.
    Audit,
    /// Deny.
    Strict,
}

impl EnforcementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Strict => "strict",
        }
    }
}
