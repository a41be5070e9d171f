//! The deploy policy (`ECR_AUDIT_DEPLOY_POLICY`, docs/ENFORCEMENT.md): what an image needs to
//! be admitted, and per cluster / namespace / account scope whether a failure denies
//! (`strict`) or only warns (`audit`). Parsed and validated once at start-up; pure judgement
//! of one image's ledger row against it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::domain::{ControlId, ScanStatus, SignatureStatus};
use crate::readmodel::{ImageRow, PostureRow};

/// Why the deploy policy could not be used; start-up stops with it.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading the deploy policy: {0}")]
    Read(#[from] std::io::Error),
    /// Unknown fields, unknown controls, unknown modes and bad types all end here, with
    /// serde's line and column.
    #[error("the deploy policy is not valid: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error(
        "the deploy policy: signature status {0:?} is not one of SIGNED, PENDING, UNSIGNED, FAILED, UNTRUSTED"
    )]
    SignatureStatus(String),
    #[error(
        "the deploy policy: scan status {0:?} is not one of SCANNED, PENDING, FAILED, UNSUPPORTED, EXPIRED, UNAVAILABLE, NOT_SCANNED"
    )]
    ScanStatus(String),
    #[error("the deploy policy: severity {0:?} is not one of critical, high, medium")]
    Severity(String),
    #[error(
        "the deploy policy: scope {later:?} can never match, scope {earlier:?} before it covers it (scopes are tried in order, the first match wins)"
    )]
    Shadowed { earlier: String, later: String },
    #[error("the deploy policy: two scopes are named {0:?}")]
    DuplicateScope(String),
}

/// What a failing image gets in a scope. It lives in `domain` because a deploy verdict's
/// evidence record names it too.
pub use crate::domain::EnforcementMode as Mode;

/// The answer for an image the ledger has never seen (or a reference that is not ECR's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownAnswer {
    /// Admit with a warning.
    Warn,
    Deny,
}

/// What to do when the ledger cannot answer (the database is unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaleAnswer {
    FailOpen,
    FailClosed,
}

/// Whether an image may be deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// The signature requirement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    #[serde(default = "signed")]
    status: Vec<String>,
    /// Signer sources (`signer:ARN`, `cosign`, …, as `images --format json` shows in
    /// `signature.sources`) or verified identities (`signature.verifications[].identity`);
    /// empty: any.
    #[serde(default)]
    identities: Vec<String>,
}

fn signed() -> Vec<String> {
    vec!["SIGNED".to_owned()]
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanFile {
    /// Empty: any scan status.
    #[serde(default)]
    status: Vec<String>,
    /// `critical`, `high`, `medium` → the most findings admitted.
    #[serde(default)]
    max_findings: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementsFile {
    #[serde(default)]
    signature: Option<SignatureFile>,
    #[serde(default)]
    scan: Option<ScanFile>,
    #[serde(default)]
    controls: Vec<ControlId>,
    #[serde(default)]
    max_verification_age_seconds: Option<u64>,
    /// Whether a reference must name a digest: a tag can be moved after the verdict.
    #[serde(default = "yes")]
    require_digest: bool,
}

fn yes() -> bool {
    true
}

/// One scope: where it applies and how it answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub name: String,
    /// Empty: every cluster (likewise namespaces and accounts).
    #[serde(default)]
    pub clusters: BTreeSet<String>,
    #[serde(default)]
    pub namespaces: BTreeSet<String>,
    /// The image's registry account.
    #[serde(default)]
    pub accounts: BTreeSet<String>,
    pub mode: Mode,
    /// Default: `warn` in audit, `deny` in strict.
    #[serde(default)]
    pub unknown: Option<UnknownAnswer>,
    #[serde(default = "fail_open")]
    pub stale: StaleAnswer,
}

fn fail_open() -> StaleAnswer {
    StaleAnswer::FailOpen
}

impl Scope {
    pub fn unknown_answer(&self) -> UnknownAnswer {
        self.unknown.unwrap_or(match self.mode {
            Mode::Audit => UnknownAnswer::Warn,
            Mode::Strict => UnknownAnswer::Deny,
        })
    }

    fn matches(&self, at: &Where<'_>) -> bool {
        let hit = |set: &BTreeSet<String>, value: Option<&str>| {
            set.is_empty() || value.is_some_and(|v| set.contains(v))
        };
        hit(&self.clusters, at.cluster)
            && hit(&self.namespaces, at.namespace)
            && hit(&self.accounts, at.account)
    }

    /// Whether every request this scope's `later` could match is matched by `self` first.
    fn covers(&self, later: &Self) -> bool {
        let covers = |mine: &BTreeSet<String>, theirs: &BTreeSet<String>| {
            mine.is_empty() || (!theirs.is_empty() && theirs.is_subset(mine))
        };
        covers(&self.clusters, &later.clusters)
            && covers(&self.namespaces, &later.namespaces)
            && covers(&self.accounts, &later.accounts)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    requirements: RequirementsFile,
    #[serde(default)]
    scopes: Vec<Scope>,
    /// The scope of requests no scope matches; default `audit`.
    #[serde(default)]
    default: Option<DefaultScope>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultScope {
    mode: Mode,
    #[serde(default)]
    unknown: Option<UnknownAnswer>,
    #[serde(default = "fail_open")]
    stale: StaleAnswer,
}

/// Where a deployment goes: what selects the scope.
#[derive(Debug, Clone, Copy, Default)]
pub struct Where<'a> {
    pub cluster: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub account: Option<&'a str>,
}

/// The validated policy.
#[derive(Debug, Clone)]
pub struct DeployPolicy {
    signature_status: Option<BTreeSet<SignatureStatus>>,
    identities: Vec<String>,
    scan_status: BTreeSet<ScanStatus>,
    max_findings: Vec<(Severity, i64)>,
    controls: Vec<ControlId>,
    max_age: Option<chrono::Duration>,
    scopes: Vec<Scope>,
    default: Scope,
    /// Whether a tag reference is itself a failure.
    pub require_digest: bool,
    /// Hex SHA-256 of the file's bytes.
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Critical,
    High,
    Medium,
}

impl Severity {
    fn parse(name: &str) -> Result<Self, PolicyError> {
        match name.to_ascii_lowercase().as_str() {
            "critical" => Ok(Self::Critical),
            "high" => Ok(Self::High),
            "medium" => Ok(Self::Medium),
            _ => Err(PolicyError::Severity(name.to_owned())),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Medium => "medium",
        }
    }

    fn count(self, row: &ImageRow) -> Option<i64> {
        match self {
            Self::Critical => row.scan.critical,
            Self::High => row.scan.high,
            Self::Medium => row.scan.medium,
        }
    }
}

impl DeployPolicy {
    /// # Errors
    /// When the file cannot be read or is not a valid policy.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        Self::parse(&std::fs::read(path)?)
    }

    /// # Errors
    /// When the bytes are not a valid policy (docs/ENFORCEMENT.md).
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_json::from_slice(bytes)?;
        let version = hex::encode(Sha256::digest(bytes));
        let requirements = file.requirements;
        let signature_status = match &requirements.signature {
            Some(s) => Some(parse_all(&s.status, |v| {
                SignatureStatus::from_str_opt(v)
                    .ok_or_else(|| PolicyError::SignatureStatus(v.to_owned()))
            })?),
            None => None,
        };
        let scan = requirements.scan.unwrap_or_default();
        let scan_status = parse_all(&scan.status, |v| {
            ScanStatus::from_str_opt(v).ok_or_else(|| PolicyError::ScanStatus(v.to_owned()))
        })?;
        let max_findings = scan
            .max_findings
            .iter()
            .map(|(name, max)| Ok((Severity::parse(name)?, *max)))
            .collect::<Result<Vec<_>, PolicyError>>()?;
        check_scopes(&file.scopes)?;
        let default = file.default.map_or(
            Scope::any("default", Mode::Audit, None, StaleAnswer::FailOpen),
            |d| Scope::any("default", d.mode, d.unknown, d.stale),
        );
        Ok(Self {
            signature_status,
            identities: requirements
                .signature
                .map(|s| s.identities)
                .unwrap_or_default(),
            scan_status,
            max_findings,
            controls: requirements.controls,
            max_age: requirements
                .max_verification_age_seconds
                .and_then(|s| i64::try_from(s).ok())
                .map(chrono::Duration::seconds),
            require_digest: requirements.require_digest,
            scopes: file.scopes,
            default,
            version,
        })
    }

    /// The first scope that matches, else the default.
    pub fn scope(&self, at: &Where<'_>) -> &Scope {
        self.scopes
            .iter()
            .find(|s| s.matches(at))
            .unwrap_or(&self.default)
    }

    /// Every requirement the image fails, as sentences; empty: it passes.
    pub fn failures(
        &self,
        image: &ImageRow,
        checked_at: Option<DateTime<Utc>>,
        posture: Option<&PostureRow>,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let mut out = self.signature_failures(image);
        out.extend(self.scan_failures(image));
        for control in &self.controls {
            let status = posture
                .and_then(|p| p.controls.get(control.as_str()))
                .map(|c| (c.status.as_str(), c.reason.as_str()));
            match status {
                Some(("PASS", _)) => {}
                Some((status, reason)) => out.push(format!(
                    "repository control {} is {status}: {reason}",
                    control.as_str()
                )),
                None => out.push(format!(
                    "repository control {} has not been evaluated",
                    control.as_str()
                )),
            }
        }
        if let Some(max) = self.max_age {
            match checked_at {
                Some(at) if now - at <= max => {}
                Some(at) => out.push(format!(
                    "the signature was last verified at {}, more than {}s ago",
                    at.to_rfc3339(),
                    max.num_seconds()
                )),
                None => out.push("the signature has never been verified".to_owned()),
            }
        }
        out
    }

    fn signature_failures(&self, image: &ImageRow) -> Vec<String> {
        let mut out = Vec::new();
        let status = image.signature.status.as_deref().unwrap_or("NONE");
        if let Some(allowed) = &self.signature_status
            && !allowed.iter().any(|s| s.as_str() == status)
        {
            let reason = image
                .signature
                .reason
                .as_deref()
                .unwrap_or("no reason given");
            out.push(format!("signature is {status} ({reason})"));
        }
        if !self.identities.is_empty() {
            let identities: Vec<&str> = image
                .signature
                .sources
                .iter()
                .map(String::as_str)
                .chain(
                    image
                        .signature
                        .verifications
                        .iter()
                        .filter_map(|v| match &v.result {
                            crate::facts::VerificationResult::Verified { identity, .. } => {
                                Some(identity.as_str())
                            }
                            _ => None,
                        }),
                )
                .collect();
            if !identities
                .iter()
                .any(|i| self.identities.iter().any(|a| a == i))
            {
                out.push(format!(
                    "no signature from an allowed identity (signed by: {})",
                    if identities.is_empty() {
                        "nobody".to_owned()
                    } else {
                        identities.join(", ")
                    }
                ));
            }
        }
        out
    }

    fn scan_failures(&self, image: &ImageRow) -> Vec<String> {
        let mut out = Vec::new();
        let status = image.scan.status.as_deref().unwrap_or("NONE");
        if !self.scan_status.is_empty() && !self.scan_status.iter().any(|s| s.as_str() == status) {
            out.push(format!("scan is {status}"));
        }
        for (severity, max) in &self.max_findings {
            match severity.count(image) {
                Some(n) if n <= *max => {}
                Some(n) => out.push(format!(
                    "{n} {} findings (at most {max} allowed)",
                    severity.as_str()
                )),
                None => out.push(format!(
                    "no {} finding count (the image has no completed scan)",
                    severity.as_str()
                )),
            }
        }
        out
    }
}

impl Scope {
    fn any(name: &str, mode: Mode, unknown: Option<UnknownAnswer>, stale: StaleAnswer) -> Self {
        Self {
            name: name.to_owned(),
            clusters: BTreeSet::new(),
            namespaces: BTreeSet::new(),
            accounts: BTreeSet::new(),
            mode,
            unknown,
            stale,
        }
    }
}

fn parse_all<T: Ord>(
    values: &[String],
    parse: impl Fn(&str) -> Result<T, PolicyError>,
) -> Result<BTreeSet<T>, PolicyError> {
    values
        .iter()
        .map(|v| parse(&v.to_ascii_uppercase()))
        .collect()
}

/// Scopes are tried in order and the first match wins, so a scope covered by an earlier
/// one would never apply: that is a mistake in the file, refused rather than ignored.
fn check_scopes(scopes: &[Scope]) -> Result<(), PolicyError> {
    let mut names = BTreeSet::new();
    for (i, later) in scopes.iter().enumerate() {
        if !names.insert(later.name.as_str()) {
            return Err(PolicyError::DuplicateScope(later.name.clone()));
        }
        if let Some(earlier) = scopes[..i].iter().find(|e| e.covers(later)) {
            return Err(PolicyError::Shadowed {
                earlier: earlier.name.clone(),
                later: later.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{
      "requirements": {
        "signature": {"status": ["SIGNED"]},
        "scan": {"status": ["SCANNED"], "max_findings": {"critical": 0}},
        "controls": ["ECR.2"]
      },
      "scopes": [
        {"name": "prod", "clusters": ["prod"], "mode": "strict", "stale": "fail-closed"},
        {"name": "dev", "namespaces": ["dev"], "mode": "audit", "unknown": "deny"}
      ]
    }"#;

    #[test]
    fn scopes_are_tried_in_order_and_the_default_is_audit() {
        let policy = DeployPolicy::parse(POLICY.as_bytes()).expect("valid");
        assert_eq!(policy.version.len(), 64);
        let prod = policy.scope(&Where {
            cluster: Some("prod"),
            namespace: Some("dev"),
            account: None,
        });
        assert_eq!((prod.name.as_str(), prod.mode), ("prod", Mode::Strict));
        assert_eq!(prod.unknown_answer(), UnknownAnswer::Deny);
        let dev = policy.scope(&Where {
            namespace: Some("dev"),
            ..Where::default()
        });
        assert_eq!(dev.unknown_answer(), UnknownAnswer::Deny);
        let other = policy.scope(&Where::default());
        assert_eq!((other.name.as_str(), other.mode), ("default", Mode::Audit));
        assert_eq!(other.unknown_answer(), UnknownAnswer::Warn);
    }

    #[test]
    fn mistakes_are_refused_with_what_is_wrong() {
        let cases = [
            (POLICY.replace("ECR.2", "ECR.9"), "unknown variant `ECR.9`"),
            (POLICY.replace("critical", "severe"), "severity \"severe\""),
            (
                POLICY.replace("\"strict\"", "\"enforce\""),
                "unknown variant `enforce`",
            ),
            (
                POLICY.replace("[\"SCANNED\"]", "[\"DONE\"]"),
                "scan status \"DONE\"",
            ),
            (
                POLICY.replace("[\"SIGNED\"]", "[\"OK\"]"),
                "signature status \"OK\"",
            ),
            (
                POLICY.replace("\"namespaces\": [\"dev\"], ", "\"clusters\": [\"prod\"], "),
                "scope \"dev\" can never match",
            ),
            (
                POLICY.replace("\"dev\", \"namespaces\"", "\"prod\", \"namespaces\""),
                "two scopes",
            ),
            (
                POLICY.replace("\"controls\"", "\"contrls\""),
                "unknown field `contrls`",
            ),
        ];
        for (text, expected) in cases {
            let err = DeployPolicy::parse(text.as_bytes())
                .expect_err(expected)
                .to_string();
            assert!(err.contains(expected), "{err} should say {expected}");
        }
    }
}
