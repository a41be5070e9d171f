//! The user's trust policy in Notation's own `trustpolicy.json` format (version 1.0): parsing,
//! the validation rules users know from `notation policy`, and choosing the policy for a scope.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// Why a trust policy file was refused; each message names the policy and the rule it breaks.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("trust policy is not valid JSON: {0}")]
    Json(String),
    #[error("trust policy file is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("trust policy version {0:?} is not supported (only \"1.0\")")]
    Version(String),
    #[error("trust policy has no policies (trustPolicies is empty)")]
    Empty,
    #[error("trust policy name {0:?} is used more than once")]
    DuplicateName(String),
    #[error("trust policy has a policy with an empty name")]
    EmptyName,
    #[error("trust policy {policy:?}: {problem}")]
    Invalid { policy: String, problem: String },
    #[error("registry scope {scope:?} is in both {first:?} and {second:?}")]
    ScopeInTwoPolicies {
        scope: String,
        first: String,
        second: String,
    },
    #[error("only one trust policy may use the global scope \"*\" ({first:?} and {second:?} do)")]
    TwoGlobalPolicies { first: String, second: String },
}

/// How a verification level treats a failed check (Notation: enforced, logged or skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enforce,
    Log,
    Skip,
}

/// Notation's predefined verification levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Strict,
    Permissive,
    Audit,
    Skip,
}

impl Level {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "strict" => Some(Self::Strict),
            "permissive" => Some(Self::Permissive),
            "audit" => Some(Self::Audit),
            "skip" => Some(Self::Skip),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
            Self::Audit => "audit",
            Self::Skip => "skip",
        }
    }
}

/// The groups of checks a level (and its overrides) acts on; integrity is always enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    Integrity,
    Authenticity,
    AuthenticTimestamp,
    Expiry,
    Revocation,
}

/// A level with its overrides resolved: the action for each validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enforcement {
    pub level: Level,
    pub authenticity: Action,
    pub authentic_timestamp: Action,
    pub expiry: Action,
    pub revocation: Action,
}

impl Enforcement {
    /// The table of docs/SIGNATURES.md ("Verification levels").
    pub(crate) fn for_level(level: Level) -> Self {
        use Action::{Enforce, Log, Skip};
        let (authenticity, authentic_timestamp, expiry, revocation) = match level {
            Level::Strict => (Enforce, Enforce, Enforce, Enforce),
            Level::Permissive => (Enforce, Log, Log, Log),
            Level::Audit => (Log, Log, Log, Log),
            Level::Skip => (Skip, Skip, Skip, Skip),
        };
        Self {
            level,
            authenticity,
            authentic_timestamp,
            expiry,
            revocation,
        }
    }

    pub fn action(&self, validation: Validation) -> Action {
        match (self.level, validation) {
            (Level::Skip, _) => Action::Skip,
            (_, Validation::Integrity) => Action::Enforce,
            (_, Validation::Authenticity) => self.authenticity,
            (_, Validation::AuthenticTimestamp) => self.authentic_timestamp,
            (_, Validation::Expiry) => self.expiry,
            (_, Validation::Revocation) => self.revocation,
        }
    }
}

/// The two kinds of trust store a policy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreKind {
    /// `x509/ca/NAME`: roots for the `notary.x509` signing scheme.
    Ca,
    /// `x509/signingAuthority/NAME`: roots for `notary.x509.signingAuthority` (e.g. AWS Signer).
    SigningAuthority,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ca => "ca",
            Self::SigningAuthority => "signingAuthority",
        }
    }
}

/// `ca:NAME` or `signingAuthority:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreRef {
    pub kind: StoreKind,
    pub name: String,
}

/// One `trustedIdentities` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedIdentity {
    /// `*`: any certificate chaining to the policy's stores.
    Any,
    /// `x509.subject: C=…, ST=…, O=…`: these RDNs (all of them) must be in the leaf's subject.
    Subject(Vec<(String, String)>),
    /// An AWS Signer signing profile ARN (or profile version ARN), for `signingAuthority` stores.
    SignerProfile(String),
}

/// One entry of `trustPolicies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    pub name: String,
    pub registry_scopes: Vec<String>,
    pub enforcement: Enforcement,
    pub trust_stores: Vec<StoreRef>,
    pub trusted_identities: Vec<TrustedIdentity>,
}

/// A whole `trustpolicy.json`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicyDocument {
    pub policies: Vec<TrustPolicy>,
    /// SHA-256 of the file's bytes, hex.
    pub file_sha256: String,
}

/// The largest policy file read: far above any real one, small enough to parse at once.
pub(crate) const MAX_POLICY_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDocument {
    version: String,
    trust_policies: Vec<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPolicy {
    name: String,
    registry_scopes: Vec<String>,
    signature_verification: RawVerification,
    #[serde(default)]
    trust_stores: Vec<String>,
    #[serde(default)]
    trusted_identities: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerification {
    level: String,
    #[serde(default)]
    r#override: std::collections::BTreeMap<String, String>,
    /// Notation's `verifyTimestamp` (`always`/`afterCertExpiry`); accepted, timestamps are not
    /// read by ecr-audit.
    #[serde(default, rename = "verifyTimestamp")]
    _verify_timestamp: Option<String>,
}

impl TrustPolicyDocument {
    /// Parses and validates a `trustpolicy.json`.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the policy and the rule it breaks.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                max: MAX_POLICY_BYTES,
            });
        }
        let raw: RawDocument =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Json(e.to_string()))?;
        if raw.version != "1.0" {
            return Err(PolicyError::Version(raw.version));
        }
        if raw.trust_policies.is_empty() {
            return Err(PolicyError::Empty);
        }
        let policies = raw
            .trust_policies
            .into_iter()
            .map(validate_policy)
            .collect::<Result<Vec<_>, _>>()?;
        check_names_and_scopes(&policies)?;
        Ok(Self {
            policies,
            file_sha256: hex::encode(Sha256::digest(bytes)),
        })
    }

    /// The policy for an artifact's repository URI (`REGISTRY/REPOSITORY`): the policy that
    /// names it exactly, else the global (`*`) one, else none.
    pub(crate) fn policy_for(&self, scope: &str) -> Option<&TrustPolicy> {
        self.policies
            .iter()
            .find(|p| p.registry_scopes.iter().any(|s| s == scope))
            .or_else(|| {
                self.policies
                    .iter()
                    .find(|p| p.registry_scopes.iter().any(|s| s == "*"))
            })
    }
}

/// The repository URI ECR artifacts are scoped by: `ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME`.
pub fn ecr_scope(account: &str, region: &str, repository: &str) -> String {
    format!("{account}.dkr.ecr.{region}.amazonaws.com/{repository}")
}

fn invalid(policy: &str, problem: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        policy: policy.to_owned(),
        problem: problem.into(),
    }
}

fn validate_policy(raw: RawPolicy) -> Result<TrustPolicy, PolicyError> {
    let name = raw.name.trim().to_owned();
    if name.is_empty() {
        return Err(PolicyError::EmptyName);
    }
    validate_scopes(&name, &raw.registry_scopes)?;
    let enforcement = parse_enforcement(&name, &raw.signature_verification)?;
    if enforcement.level == Level::Skip && raw.registry_scopes.iter().any(|s| s == "*") {
        return Err(invalid(
            &name,
            "level \"skip\" cannot be used with the global scope \"*\"",
        ));
    }
    let trust_stores = raw
        .trust_stores
        .iter()
        .map(|s| parse_store_ref(&name, s))
        .collect::<Result<Vec<_>, _>>()?;
    let trusted_identities = raw
        .trusted_identities
        .iter()
        .map(|s| parse_identity(&name, s))
        .collect::<Result<Vec<_>, _>>()?;
    check_stores_and_identities(&name, enforcement.level, &trust_stores, &trusted_identities)?;
    Ok(TrustPolicy {
        name,
        registry_scopes: raw.registry_scopes,
        enforcement,
        trust_stores,
        trusted_identities,
    })
}

fn validate_scopes(name: &str, scopes: &[String]) -> Result<(), PolicyError> {
    if scopes.is_empty() {
        return Err(invalid(name, "registryScopes is empty"));
    }
    if scopes.iter().any(|s| s == "*") && scopes.len() > 1 {
        return Err(invalid(
            name,
            "the global scope \"*\" must be the only scope of its policy",
        ));
    }
    for scope in scopes.iter().filter(|s| *s != "*") {
        let well_formed = scope
            .split_once('/')
            .is_some_and(|(registry, repo)| !registry.is_empty() && !repo.is_empty())
            && !scope.contains('*')
            && !scope.chars().any(char::is_whitespace);
        if !well_formed {
            return Err(invalid(
                name,
                format!(
                    "registry scope {scope:?} must be \"*\" or REGISTRY/REPOSITORY without wildcards"
                ),
            ));
        }
    }
    Ok(())
}

fn parse_enforcement(name: &str, raw: &RawVerification) -> Result<Enforcement, PolicyError> {
    let level = Level::parse(&raw.level).ok_or_else(|| {
        invalid(
            name,
            format!(
                "verification level {:?} is not strict, permissive, audit or skip",
                raw.level
            ),
        )
    })?;
    let mut enforcement = Enforcement::for_level(level);
    if level == Level::Skip && !raw.r#override.is_empty() {
        return Err(invalid(name, "level \"skip\" cannot have overrides"));
    }
    for (validation, action) in &raw.r#override {
        let action = match action.as_str() {
            "enforce" => Action::Enforce,
            "log" => Action::Log,
            "skip" if validation == "revocation" => Action::Skip,
            _ => {
                return Err(invalid(
                    name,
                    format!("override {validation:?}: {action:?} is not allowed"),
                ));
            }
        };
        match validation.as_str() {
            "authenticity" => enforcement.authenticity = action,
            "authenticTimestamp" => enforcement.authentic_timestamp = action,
            "expiry" => enforcement.expiry = action,
            "revocation" => enforcement.revocation = action,
            "integrity" => return Err(invalid(name, "integrity cannot be overridden")),
            other => return Err(invalid(name, format!("unknown override {other:?}"))),
        }
    }
    Ok(enforcement)
}

fn parse_store_ref(name: &str, value: &str) -> Result<StoreRef, PolicyError> {
    let (kind, store) = value.split_once(':').ok_or_else(|| {
        invalid(
            name,
            format!("trust store {value:?} must be TYPE:NAME (ca:… or signingAuthority:…)"),
        )
    })?;
    let kind = match kind {
        "ca" => StoreKind::Ca,
        "signingAuthority" => StoreKind::SigningAuthority,
        other => {
            return Err(invalid(
                name,
                format!("trust store type {other:?} is not supported (ca or signingAuthority)"),
            ));
        }
    };
    if !is_store_name(store) {
        return Err(invalid(
            name,
            format!("trust store name {store:?} is not a valid directory name"),
        ));
    }
    Ok(StoreRef {
        kind,
        name: store.to_owned(),
    })
}

/// Store names become directory names: letters, digits, `.`, `_`, `-`, not `.`/`..`.
pub(crate) fn is_store_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_identity(name: &str, value: &str) -> Result<TrustedIdentity, PolicyError> {
    if value == "*" {
        return Ok(TrustedIdentity::Any);
    }
    if let Some(dn) = value.strip_prefix("x509.subject:") {
        let rdns = parse_dn(dn)
            .map_err(|problem| invalid(name, format!("identity {value:?}: {problem}")))?;
        let has = |keys: &[&str]| rdns.iter().any(|(k, _)| keys.contains(&k.as_str()));
        if !(has(&["C"]) && has(&["ST", "S"]) && has(&["O"])) {
            return Err(invalid(
                name,
                format!("identity {value:?} must contain at least C, ST (or S) and O"),
            ));
        }
        return Ok(TrustedIdentity::Subject(rdns));
    }
    if is_signer_profile_arn(value) {
        return Ok(TrustedIdentity::SignerProfile(value.to_owned()));
    }
    Err(invalid(
        name,
        format!(
            "identity {value:?} must be \"*\", \"x509.subject: …\" or an AWS Signer profile ARN"
        ),
    ))
}

/// `arn:PARTITION:signer:REGION:ACCOUNT:/signing-profiles/NAME[/VERSION]`.
pub(crate) fn is_signer_profile_arn(value: &str) -> bool {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "signer", region, account, resource]
            if partition.starts_with("aws")
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("/signing-profiles/").is_some_and(|rest| {
                    let segments: Vec<&str> = rest.split('/').collect();
                    (1..=2).contains(&segments.len()) && segments.iter().all(|s| !s.is_empty())
                })
    )
}

/// Splits `C=US, ST=WA, O=acme\, inc` into (type, value) pairs, honouring the `\` escapes.
pub(crate) fn parse_dn(dn: &str) -> Result<Vec<(String, String)>, String> {
    let mut rdns = Vec::new();
    let mut current = String::new();
    let mut chars = dn.chars();
    let mut parts = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => current.push(escaped),
                None => return Err("ends with a lone backslash".to_owned()),
            },
            ',' => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{:?} is not TYPE=VALUE", part.trim()))?;
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
            return Err(format!("{key:?} is not an attribute type"));
        }
        if rdns.iter().any(|(k, _): &(String, String)| k == key) {
            return Err(format!("attribute {key} appears twice"));
        }
        rdns.push((key.to_owned(), value.trim().to_owned()));
    }
    Ok(rdns)
}

fn check_stores_and_identities(
    name: &str,
    level: Level,
    stores: &[StoreRef],
    identities: &[TrustedIdentity],
) -> Result<(), PolicyError> {
    if level == Level::Skip {
        if !stores.is_empty() || !identities.is_empty() {
            return Err(invalid(
                name,
                "level \"skip\" must not name trustStores or trustedIdentities",
            ));
        }
        return Ok(());
    }
    if stores.is_empty() {
        return Err(invalid(name, "trustStores is empty"));
    }
    if identities.is_empty() {
        return Err(invalid(name, "trustedIdentities is empty"));
    }
    if identities.contains(&TrustedIdentity::Any) && identities.len() > 1 {
        return Err(invalid(
            name,
            "\"*\" must be the only trusted identity of its policy",
        ));
    }
    let signing_authority = stores.iter().any(|s| s.kind == StoreKind::SigningAuthority);
    if !signing_authority
        && identities
            .iter()
            .any(|i| matches!(i, TrustedIdentity::SignerProfile(_)))
    {
        return Err(invalid(
            name,
            "AWS Signer profile identities need a signingAuthority trust store",
        ));
    }
    check_no_overlap(name, identities)
}

/// Notation refuses two subject identities where one is a subset of the other: some
/// certificate would match both.
fn check_no_overlap(name: &str, identities: &[TrustedIdentity]) -> Result<(), PolicyError> {
    let subjects: Vec<&Vec<(String, String)>> = identities
        .iter()
        .filter_map(|i| match i {
            TrustedIdentity::Subject(rdns) => Some(rdns),
            _ => None,
        })
        .collect();
    for (i, a) in subjects.iter().enumerate() {
        for b in subjects.iter().skip(i + 1) {
            let subset = |x: &Vec<(String, String)>, y: &Vec<(String, String)>| {
                x.iter().all(|r| y.contains(r))
            };
            if subset(a, b) || subset(b, a) {
                return Err(invalid(
                    name,
                    "trustedIdentities overlap (one subject is part of another)",
                ));
            }
        }
    }
    Ok(())
}

fn check_names_and_scopes(policies: &[TrustPolicy]) -> Result<(), PolicyError> {
    let mut seen_scopes: Vec<(&str, &str)> = Vec::new();
    let mut global: Option<&str> = None;
    for (index, policy) in policies.iter().enumerate() {
        if policies[..index].iter().any(|p| p.name == policy.name) {
            return Err(PolicyError::DuplicateName(policy.name.clone()));
        }
        for scope in &policy.registry_scopes {
            if scope == "*" {
                if let Some(first) = global {
                    return Err(PolicyError::TwoGlobalPolicies {
                        first: first.to_owned(),
                        second: policy.name.clone(),
                    });
                }
                global = Some(&policy.name);
                continue;
            }
            if let Some((_, first)) = seen_scopes.iter().find(|(s, _)| s == scope) {
                return Err(PolicyError::ScopeInTwoPolicies {
                    scope: scope.clone(),
                    first: (*first).to_owned(),
                    second: policy.name.clone(),
                });
            }
            seen_scopes.push((scope, &policy.name));
        }
    }
    Ok(())
}
