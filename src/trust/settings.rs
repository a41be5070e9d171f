//! The trust configuration the pipeline verifies against: a policy with its stores (or the
//! explicit absence of one), the Cosign keys and the limits on what is read. Built by `config`
//! from files at start-up; here it is plain data.

use super::outcome::{Failure, Rejection};
use super::policy::TrustPolicyDocument;
use super::store::TrustStores;
use super::{CosignKey, Limits, policy_version};

/// The policy version recorded when no trust policy is configured.
pub const NO_POLICY_VERSION: &str = "none";

/// Why a signature cannot be trusted when no policy is configured.
pub const NO_POLICY_REASON: &str = "no trust policy configured";

/// A Notation trust policy and the stores it names, with its version.
#[derive(Debug, Clone)]
pub struct ConfiguredPolicy {
    pub document: TrustPolicyDocument,
    pub stores: TrustStores,
    /// [`policy_version`] of the two.
    pub version: String,
}

impl ConfiguredPolicy {
    pub fn new(document: TrustPolicyDocument, stores: TrustStores) -> Self {
        let version = policy_version(&document, &stores);
        Self {
            document,
            stores,
            version,
        }
    }

    /// Stores the policy names that are not configured, as `kind:name`, so start-up can refuse
    /// a policy that could never verify anything instead of rejecting every signature later.
    pub fn missing_stores(&self) -> Vec<String> {
        let mut missing: Vec<String> = self
            .document
            .policies
            .iter()
            .flat_map(|p| p.trust_stores.iter())
            .filter(|s| self.stores.roots(s.kind, &s.name).is_none())
            .map(|s| format!("{}:{}", s.kind.as_str(), s.name))
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }
}

/// Everything signature verification is configured with.
#[derive(Debug, Clone)]
pub struct TrustSettings {
    /// `None`: no policy configured. AWS Signer's roots are not pinned in ecr-audit
    /// (docs/SIGNATURES.md), so there is no default policy: Notary signatures are then
    /// rejected with [`Failure::NoTrustPolicy`], never trusted.
    pub policy: Option<ConfiguredPolicy>,
    pub cosign_keys: Vec<CosignKey>,
    pub limits: Limits,
    /// Most signature artifacts read and verified for one image digest; further ones are
    /// counted but not read.
    pub max_signatures_per_digest: usize,
}

/// Signature artifacts verified per digest by default: far above what real images carry
/// (one managed signature, perhaps a CI signature), low enough that a flood of referrers
/// cannot make one digest cost hundreds of reads.
pub const DEFAULT_MAX_SIGNATURES_PER_DIGEST: usize = 16;

impl Default for TrustSettings {
    fn default() -> Self {
        Self {
            policy: None,
            cosign_keys: Vec::new(),
            limits: Limits::default(),
            max_signatures_per_digest: DEFAULT_MAX_SIGNATURES_PER_DIGEST,
        }
    }
}

impl TrustSettings {
    /// The version verdicts are recorded under: the policy's, or [`NO_POLICY_VERSION`].
    /// Cosign keys are part of it, so adding or removing a key re-verifies too.
    pub fn version(&self) -> String {
        let policy = self
            .policy
            .as_ref()
            .map_or(NO_POLICY_VERSION, |p| p.version.as_str());
        if self.cosign_keys.is_empty() {
            return policy.to_owned();
        }
        let mut keys: Vec<&str> = self
            .cosign_keys
            .iter()
            .map(|k| k.fingerprint.as_str())
            .collect();
        keys.sort_unstable();
        format!("{policy}+cosign:{}", keys.join(","))
    }

    /// The rejection of a Notary signature when no policy is configured.
    pub fn no_policy_rejection() -> Rejection {
        Rejection::new(Failure::NoTrustPolicy, NO_POLICY_REASON)
    }
}
