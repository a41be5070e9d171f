//! The trust configuration the pipeline verifies against: a policy with its stores (or, with
//! none configured, AWS Signer's default built per registry, or the explicit absence of one),
//! the Cosign keys and the limits on what is read. Built by `config` from files at start-up;
//! here it is plain data.

use std::borrow::Cow;

use super::aws_signer;
use super::outcome::{Failure, Rejection};
use super::policy::TrustPolicyDocument;
use super::store::TrustStores;
use super::{CosignKey, Limits, policy_version};

/// The policy version recorded when no trust policy is configured.
pub const NO_POLICY_VERSION: &str = "none";

/// Why a signature cannot be trusted when no policy is configured.
pub const NO_POLICY_REASON: &str = "no trust policy configured";

/// Why a signature cannot be trusted under the default policy when the registry has no
/// managed-signing rule: the default trusts only the profiles of those rules.
pub const NO_DEFAULT_IDENTITY_REASON: &str = "no trust policy configured, and the registry has no managed-signing rule whose signing profile the default policy could trust";

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
    /// The configured policy. `None`: none configured; then [`Self::aws_signer_default`]
    /// decides between the default policy and no policy at all (Notary signatures rejected
    /// with [`Failure::NoTrustPolicy`], never trusted).
    pub policy: Option<ConfiguredPolicy>,
    /// With no configured policy, verify under AWS Signer's default
    /// ([`aws_signer::default_policy`]: the pinned roots, the registry's managed-signing
    /// profiles). Off only when the operator asked for no default.
    pub aws_signer_default: bool,
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
            aws_signer_default: false,
            cosign_keys: Vec::new(),
            limits: Limits::default(),
            max_signatures_per_digest: DEFAULT_MAX_SIGNATURES_PER_DIGEST,
        }
    }
}

impl TrustSettings {
    /// The version verdicts are recorded under: the policy's, or [`NO_POLICY_VERSION`].
    /// Cosign keys are part of it, so adding or removing a key re-verifies too.
    /// With the AWS Signer default and no managed-signing rule to build it from, the version
    /// is the default's family followed by `none`.
    pub fn version(&self) -> String {
        let policy = match (&self.policy, self.aws_signer_default) {
            (Some(p), _) => p.version.clone(),
            (None, true) => format!("{}{NO_POLICY_VERSION}", aws_signer::version_family()),
            (None, false) => NO_POLICY_VERSION.to_owned(),
        };
        if self.cosign_keys.is_empty() {
            return policy;
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

    /// The settings one registry's signatures are verified under: these, unless no policy is
    /// configured and the default is on, in which case the policy is AWS Signer's default for
    /// the profiles of the registry's managed-signing rules (`profile_arns`). With no rule
    /// there is still no policy, and the rejection says why ([`Self::no_policy_reason`]).
    pub fn for_registry<'a>(
        &self,
        profile_arns: impl IntoIterator<Item = &'a str>,
    ) -> Cow<'_, Self> {
        if self.policy.is_some() || !self.aws_signer_default {
            return Cow::Borrowed(self);
        }
        match aws_signer::default_policy(profile_arns) {
            Some(policy) => Cow::Owned(Self {
                policy: Some(policy),
                ..self.clone()
            }),
            None => Cow::Borrowed(self),
        }
    }

    /// Why a Notary signature is rejected for want of a policy (see [`Self::for_registry`]).
    pub fn no_policy_reason(&self) -> &'static str {
        if self.aws_signer_default {
            NO_DEFAULT_IDENTITY_REASON
        } else {
            NO_POLICY_REASON
        }
    }
}
