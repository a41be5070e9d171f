//! Trust configuration flags (`ECR_AUDIT_TRUST_*`, `ECR_AUDIT_COSIGN_KEYS`, the read limits)
//! and their start-up loading into [`TrustSettings`], with errors that name the setting.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use thiserror::Error;

use crate::trust::settings::DEFAULT_MAX_SIGNATURES_PER_DIGEST;
use crate::trust::{
    ConfiguredPolicy, CosignKey, CosignKeyError, Limits, PolicyError, StoreError,
    TrustPolicyDocument, TrustSettings, TrustStores,
};

/// Largest envelope cap accepted: a bound on the operator's setting, so a typo cannot make
/// every hostile blob a memory hazard. Real envelopes are 2–8 KiB (docs/SIGNATURES.md).
const MAX_ENVELOPE_CAP: usize = 4 * 1024 * 1024;
/// Largest signatures-per-digest cap accepted.
const MAX_SIGNATURES_CAP: usize = 1000;
/// Largest chain length accepted.
const MAX_CHAIN_CAP: usize = 32;
/// Largest Cosign public key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// How signatures are verified (docs/SIGNATURES.md, "Cryptographic verification").
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// Notation `trustpolicy.json` (version 1.0). Unset: the policy named by
    /// `ECR_AUDIT_DEFAULT_TRUST_POLICY`.
    #[arg(long, env = "ECR_AUDIT_TRUST_POLICY")]
    pub trust_policy: Option<PathBuf>,
    /// The policy used when `ECR_AUDIT_TRUST_POLICY` is unset: `aws-signer` trusts AWS
    /// Signer's pinned root (config/trust/aws-signer/) for the signing profiles of the
    /// registry's managed-signing rules; `none` trusts no Notary signature at all.
    #[arg(long, env = "ECR_AUDIT_DEFAULT_TRUST_POLICY", value_enum, default_value_t = DefaultTrustPolicy::AwsSigner)]
    pub default_trust_policy: DefaultTrustPolicy,
    /// Trust store directory in Notation's layout (`x509/ca/NAME/`, `x509/signingAuthority/NAME/`).
    #[arg(long, env = "ECR_AUDIT_TRUST_STORE")]
    pub trust_store: Option<PathBuf>,
    /// Cosign public keys (PEM files, comma-separated) whose key-based signatures are trusted.
    #[arg(long, env = "ECR_AUDIT_COSIGN_KEYS", value_delimiter = ',')]
    pub cosign_keys: Vec<PathBuf>,
    /// Largest signature envelope (or Cosign payload) read, in bytes.
    #[arg(long, env = "ECR_AUDIT_MAX_ENVELOPE_BYTES", default_value_t = Limits::default().max_envelope_bytes)]
    pub max_envelope_bytes: usize,
    /// Most signature artifacts read and verified per image digest.
    #[arg(long, env = "ECR_AUDIT_MAX_SIGNATURES_PER_DIGEST", default_value_t = DEFAULT_MAX_SIGNATURES_PER_DIGEST)]
    pub max_signatures_per_digest: usize,
    /// Most certificates in a signature's chain.
    #[arg(long, env = "ECR_AUDIT_MAX_CHAIN_CERTIFICATES", default_value_t = Limits::default().max_chain_certificates)]
    pub max_chain_certificates: usize,
}

/// What stands in for a trust policy when none is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DefaultTrustPolicy {
    /// AWS Signer's pinned roots and the registry's managed-signing profiles.
    AwsSigner,
    /// No policy: every Notary signature is `UNTRUSTED` ("no trust policy configured").
    None,
}

/// Why the trust configuration was refused at start-up; each names the setting to fix.
#[derive(Debug, Error)]
pub enum TrustConfigError {
    #[error("ECR_AUDIT_TRUST_POLICY {path}: {source}")]
    ReadPolicy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ECR_AUDIT_TRUST_POLICY {path}: {source}")]
    Policy {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("ECR_AUDIT_TRUST_STORE {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("ECR_AUDIT_TRUST_STORE {path} is not a directory")]
    StoreNotDirectory { path: PathBuf },
    #[error(
        "ECR_AUDIT_TRUST_STORE is set but ECR_AUDIT_TRUST_POLICY is not: stores trust nothing without a policy"
    )]
    StoreWithoutPolicy,
    #[error(
        "ECR_AUDIT_TRUST_POLICY names trust stores that ECR_AUDIT_TRUST_STORE does not hold: {0}"
    )]
    MissingStores(String),
    #[error("ECR_AUDIT_COSIGN_KEYS {path}: {problem}")]
    CosignKey { path: PathBuf, problem: String },
    #[error("ECR_AUDIT_DEFAULT_TRUST_POLICY aws-signer: {0}")]
    PinnedRoot(#[source] crate::trust::aws_signer::PinMismatch),
    #[error("{setting} must be between 1 and {max} (got {value})")]
    OutOfRange {
        setting: &'static str,
        value: usize,
        max: usize,
    },
}

impl TrustArgs {
    /// Reads and validates the policy, the stores and the keys.
    ///
    /// # Errors
    /// A [`TrustConfigError`] naming the setting and what is wrong with it.
    pub fn load(&self) -> Result<TrustSettings, TrustConfigError> {
        let limits = self.limits()?;
        let max_signatures_per_digest = in_range(
            "ECR_AUDIT_MAX_SIGNATURES_PER_DIGEST",
            self.max_signatures_per_digest,
            MAX_SIGNATURES_CAP,
        )?;
        let policy = match (&self.trust_policy, &self.trust_store) {
            (None, None) => None,
            (None, Some(_)) => return Err(TrustConfigError::StoreWithoutPolicy),
            (Some(path), store) => Some(load_policy(path, store.as_deref(), &limits)?),
        };
        let cosign_keys = self
            .cosign_keys
            .iter()
            .map(|path| load_cosign_key(path))
            .collect::<Result<Vec<_>, _>>()?;
        let aws_signer_default =
            policy.is_none() && self.default_trust_policy == DefaultTrustPolicy::AwsSigner;
        if aws_signer_default {
            crate::trust::aws_signer::check_pins().map_err(TrustConfigError::PinnedRoot)?;
        }
        Ok(TrustSettings {
            policy,
            aws_signer_default,
            cosign_keys,
            limits,
            max_signatures_per_digest,
        })
    }

    fn limits(&self) -> Result<Limits, TrustConfigError> {
        Ok(Limits {
            max_envelope_bytes: in_range(
                "ECR_AUDIT_MAX_ENVELOPE_BYTES",
                self.max_envelope_bytes,
                MAX_ENVELOPE_CAP,
            )?,
            max_chain_certificates: in_range(
                "ECR_AUDIT_MAX_CHAIN_CERTIFICATES",
                self.max_chain_certificates,
                MAX_CHAIN_CAP,
            )?,
            ..Limits::default()
        })
    }
}

fn in_range(setting: &'static str, value: usize, max: usize) -> Result<usize, TrustConfigError> {
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(TrustConfigError::OutOfRange {
            setting,
            value,
            max,
        })
    }
}

fn load_policy(
    path: &Path,
    store_dir: Option<&Path>,
    limits: &Limits,
) -> Result<ConfiguredPolicy, TrustConfigError> {
    let bytes =
        read_bounded(path, crate::trust::policy::MAX_POLICY_BYTES as u64).map_err(|source| {
            TrustConfigError::ReadPolicy {
                path: path.to_owned(),
                source,
            }
        })?;
    let document =
        TrustPolicyDocument::from_json(&bytes).map_err(|source| TrustConfigError::Policy {
            path: path.to_owned(),
            source,
        })?;
    let stores = match store_dir {
        Some(dir) => load_stores(dir, limits)?,
        None => TrustStores::new(),
    };
    let policy = ConfiguredPolicy::new(document, stores);
    let missing = policy.missing_stores();
    if !missing.is_empty() {
        return Err(TrustConfigError::MissingStores(missing.join(", ")));
    }
    Ok(policy)
}

fn load_stores(dir: &Path, limits: &Limits) -> Result<TrustStores, TrustConfigError> {
    if !dir.is_dir() {
        return Err(TrustConfigError::StoreNotDirectory {
            path: dir.to_owned(),
        });
    }
    TrustStores::load(dir, limits).map_err(|source| TrustConfigError::Store {
        path: dir.to_owned(),
        source,
    })
}

fn load_cosign_key(path: &Path) -> Result<CosignKey, TrustConfigError> {
    let problem = |problem: String| TrustConfigError::CosignKey {
        path: path.to_owned(),
        problem,
    };
    let bytes = read_bounded(path, MAX_KEY_FILE_BYTES).map_err(|e| problem(e.to_string()))?;
    CosignKey::from_pem(&bytes).map_err(|e: CosignKeyError| problem(e.to_string()))
}

/// Reads a file of at most `max` bytes; a larger one is an error, not a truncation.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
