//! Cryptographic verification of image signatures: Notary Project signatures in
//! JWS and COSE envelopes against the user's Notation trust policy and trust stores, and Cosign
//! key-based signatures. Pure apart from [`TrustStores::load`]; no AWS, database or async.
//! docs/SIGNATURES.md ("Cryptographic verification") describes the checks and the limits.

pub mod aws_signer;
mod certs;
pub mod cosign;
pub mod envelope;
pub mod notation;
pub mod outcome;
pub mod policy;
pub mod settings;
pub mod store;

#[cfg(test)]
mod tests;

use sha2::{Digest as _, Sha256};

pub use cosign::{CosignKey, CosignKeyError, verify_cosign_simple_signing, verify_sigstore_bundle};
pub use notation::Verifier;
pub use outcome::{Failure, Rejection, SignatureCheck, SignerIdentity, SigningScheme, Verified};
pub use policy::{
    Action, Enforcement, Level, PolicyError, StoreKind, StoreRef, TrustPolicy, TrustPolicyDocument,
    TrustedIdentity, Validation, ecr_scope,
};
pub use settings::{ConfiguredPolicy, TrustSettings};
pub use store::{StoreError, TrustStores};

use crate::domain::Digest;

/// The artifact a signature must name: the subject manifest's descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// Bounds on hostile input. Real envelopes are a few KiB (three certificates and a payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest envelope (or Cosign payload) read: 64 KiB.
    pub max_envelope_bytes: usize,
    /// Most certificates in an envelope's chain: 10.
    pub max_chain_certificates: usize,
    /// Largest certificate file in a trust store: 256 KiB.
    pub max_store_file_bytes: u64,
    /// Most certificate files in one named store: 100.
    pub max_store_files: usize,
    /// Most named stores: 64.
    pub max_trust_stores: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 64 * 1024,
            max_chain_certificates: 10,
            max_store_file_bytes: 256 * 1024,
            max_store_files: 100,
            max_trust_stores: 64,
        }
    }
}

/// The version of a trust configuration: SHA-256 over the policy file's digest and the
/// stores' digest, so a verdict can name exactly what it was judged against.
pub fn policy_version(policy: &TrustPolicyDocument, stores: &TrustStores) -> String {
    let mut hasher = Sha256::new();
    hasher.update(policy.file_sha256.as_bytes());
    hasher.update(b"\n");
    hasher.update(stores.digest().as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}
