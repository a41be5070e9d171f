//! The default trust policy: AWS Signer's published Notation roots, pinned in
//! config/trust/aws-signer/ with their fingerprints (config/trust/aws-signer/PROVENANCE.md),
//! trusted as a `signingAuthority` store, and the signing profiles of the registry's
//! managed-signing rules trusted as identities. Used when no trust policy is configured, so
//! ECR managed signing verifies out of the box and nothing else does.

use sha2::{Digest as _, Sha256};

use super::policy::{StoreKind, TrustPolicyDocument, is_signer_profile_arn};
use super::settings::ConfiguredPolicy;
use super::store::TrustStores;

/// One of AWS Signer's Notation roots as pinned in the repository.
#[derive(Debug, Clone, Copy)]
pub struct PinnedRoot {
    /// The AWS partition whose signatures chain to it.
    pub partition: &'static str,
    /// The file under config/trust/aws-signer/.
    pub file: &'static str,
    pub bytes: &'static [u8],
    /// SHA-256 of the certificate's DER, lower-case hex: what the build is checked against.
    pub der_sha256: &'static str,
    /// Where AWS publishes it.
    pub published_at: &'static str,
    /// Whether the default policy trusts it: only roots whose copy was cross-checked against
    /// an independent fingerprint (config/trust/aws-signer/PROVENANCE.md).
    pub in_default: bool,
}

/// AWS Signer's Notation roots, commercial first.
pub const PINNED_ROOTS: [PinnedRoot; 2] = [
    PinnedRoot {
        partition: "aws",
        file: "aws-signer-notation-root.cert",
        bytes: include_bytes!("../../config/trust/aws-signer/aws-signer-notation-root.cert"),
        der_sha256: "90a87d0543c3f094dbff9589b6649affe2f3d6e0f308799be2258461c686473f",
        published_at: "https://d2hvyiie56hcat.cloudfront.net/aws-signer-notation-root.cert",
        in_default: true,
    },
    PinnedRoot {
        partition: "aws-us-gov",
        file: "aws-us-gov-signer-notation-root.crt",
        bytes: include_bytes!("../../config/trust/aws-signer/aws-us-gov-signer-notation-root.crt"),
        der_sha256: "673653ab76f41a10546cdeb4107ecd6df2c15c2c9a0d32ed97d271b4436fc3e8",
        published_at: "https://d2hvyiie56hcat.cloudfront.net/aws-us-gov-signer-notation-root.cert",
        in_default: false,
    },
];

/// The default policy's name, as verdicts and evidence show it.
pub const DEFAULT_POLICY_NAME: &str = "aws-signer-default";
/// The store the default policy trusts, named as AWS's installer names it.
pub const DEFAULT_STORE_NAME: &str = "aws-signer-ts";
/// What the default policy's version starts with, so evidence tells it from a configured one.
pub const DEFAULT_VERSION_PREFIX: &str = "aws-signer-default:";

/// What every version of the default policy built by this build starts with:
/// `aws-signer-default:<16 hex of the trusted roots' SHA-256>:`. Verdicts whose version is in
/// the family need no start-up re-verification (a rule change is a new version within it,
/// caught by pushes and the schedule); a build trusting other roots is a new family.
pub fn version_family() -> String {
    let mut hasher = Sha256::new();
    for root in PINNED_ROOTS.iter().filter(|r| r.in_default) {
        hasher.update(root.der_sha256.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("{DEFAULT_VERSION_PREFIX}{}:", &digest[..16])
}

/// A pinned root whose bytes do not match its pinned fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pinned AWS Signer root {file}: DER SHA-256 {actual}, pinned {pinned}")]
pub struct PinMismatch {
    pub file: &'static str,
    pub actual: String,
    pub pinned: &'static str,
}

/// The DER SHA-256 of every certificate in a PEM file, lower-case hex.
pub fn der_fingerprints(pem: &[u8]) -> Vec<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|der| hex::encode(Sha256::digest(der.as_ref())))
        .collect()
}

/// Checks that each pinned file holds exactly one certificate, the pinned one.
///
/// # Errors
/// The first root whose bytes are not what was pinned.
pub fn check_pins() -> Result<(), PinMismatch> {
    for root in &PINNED_ROOTS {
        let fingerprints = der_fingerprints(root.bytes);
        if fingerprints.as_slice() != [root.der_sha256] {
            return Err(PinMismatch {
                file: root.file,
                actual: fingerprints.join(","),
                pinned: root.der_sha256,
            });
        }
    }
    Ok(())
}

/// The default trust policy for a registry whose managed-signing rules name `profile_arns`:
/// global scope, level `strict`, the store `signingAuthority:aws-signer-ts` holding the pinned
/// roots marked `in_default`, and those profiles as the trusted identities. `None` when no
/// rule names a profile (nothing would be trusted, so no envelope is worth reading) or when a
/// pinned root does not match its fingerprint (fail closed).
///
/// The version depends on the profiles: a rule added or removed is a new policy version, and
/// every digest is verified again under it.
pub fn default_policy<'a>(
    profile_arns: impl IntoIterator<Item = &'a str>,
) -> Option<ConfiguredPolicy> {
    check_pins().ok()?;
    let mut profiles: Vec<&str> = profile_arns
        .into_iter()
        .filter(|arn| is_signer_profile_arn(arn))
        .collect();
    profiles.sort_unstable();
    profiles.dedup();
    if profiles.is_empty() {
        return None;
    }
    let document = TrustPolicyDocument::from_json(policy_json(&profiles).as_bytes()).ok()?;
    let mut stores = TrustStores::new();
    for root in PINNED_ROOTS.iter().filter(|r| r.in_default) {
        stores
            .add(StoreKind::SigningAuthority, DEFAULT_STORE_NAME, root.bytes)
            .ok()?;
    }
    let mut policy = ConfiguredPolicy::new(document, stores);
    policy.version = format!("{}{}", version_family(), policy.version);
    Some(policy)
}

/// The policy as a Notation `trustpolicy.json`, so the default goes through the same
/// validation as a configured one.
fn policy_json(profiles: &[&str]) -> String {
    serde_json::json!({
        "version": "1.0",
        "trustPolicies": [{
            "name": DEFAULT_POLICY_NAME,
            "registryScopes": ["*"],
            "signatureVerification": {"level": "strict"},
            "trustStores": [format!("signingAuthority:{DEFAULT_STORE_NAME}")],
            "trustedIdentities": profiles,
        }]
    })
    .to_string()
}
