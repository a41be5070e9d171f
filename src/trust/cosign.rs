//! Cosign signatures: key-based simple signing (the payload names the manifest digest, the
//! signature is ECDSA P-256 over the payload with a configured key) and Sigstore bundles,
//! which are refused until keyless verification is configured.

use aws_lc_rs::signature as sig;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::Limits;
use super::outcome::{Failure, Rejection, SignatureCheck, SignerIdentity, SigningScheme, Verified};
use super::policy::Level;
use crate::domain::Digest;

/// Why a configured Cosign public key was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CosignKeyError {
    #[error("not a PEM PUBLIC KEY block")]
    NotPem,
    #[error("not an ECDSA P-256 public key (cosign's key type)")]
    NotP256,
}

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";

/// A trusted Cosign public key (ECDSA P-256, as `cosign generate-key-pair` makes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignKey {
    point: Vec<u8>,
    /// `sha256:` of the SubjectPublicKeyInfo DER: names the key in verdicts.
    pub fingerprint: String,
}

impl CosignKey {
    /// Reads a `cosign.pub` (PEM SubjectPublicKeyInfo).
    ///
    /// # Errors
    /// When the PEM holds no P-256 public key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CosignKeyError> {
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|_| CosignKeyError::NotPem)?;
        let (_, spki) =
            SubjectPublicKeyInfo::from_der(der.as_ref()).map_err(|_| CosignKeyError::NotP256)?;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.to_id_string());
        if spki.algorithm.algorithm.to_id_string() != EC_PUBLIC_KEY
            || curve.as_deref() != Some(P256)
        {
            return Err(CosignKeyError::NotP256);
        }
        Ok(Self {
            point: spki.subject_public_key.data.to_vec(),
            fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(der.as_ref()))),
        })
    }
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

/// Verifies a Cosign simple-signing signature: `payload` is the signature layer's blob,
/// `signature_b64` its `dev.cosignproject.cosign/signature` annotation.
pub fn verify_cosign_simple_signing(
    payload: &[u8],
    signature_b64: &str,
    subject_digest: &Digest,
    keys: &[CosignKey],
    limits: &Limits,
) -> SignatureCheck {
    match check_simple_signing(payload, signature_b64, subject_digest, keys, limits) {
        Ok(verified) => SignatureCheck::Verified(Box::new(verified)),
        Err(rejection) => SignatureCheck::Rejected(rejection),
    }
}

fn check_sizes(payload: &[u8], signature_b64: &str, limits: &Limits) -> Result<(), Rejection> {
    if payload.len() > limits.max_envelope_bytes || signature_b64.len() > limits.max_envelope_bytes
    {
        return Err(Rejection::new(
            Failure::EnvelopeTooLarge,
            format!(
                "the Cosign payload or signature is larger than {} bytes",
                limits.max_envelope_bytes
            ),
        ));
    }
    Ok(())
}

/// The first configured key whose ECDSA P-256 signature over the payload verifies.
fn trusted_key_for<'k>(
    payload: &[u8],
    signature: &[u8],
    keys: &'k [CosignKey],
) -> Result<&'k CosignKey, Rejection> {
    if keys.is_empty() {
        return Err(Rejection::new(
            Failure::UntrustedKey,
            "no Cosign public key is configured",
        ));
    }
    keys.iter()
        .find(|key| {
            sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_ASN1, &key.point)
                .verify(payload, signature)
                .is_ok()
        })
        .ok_or_else(|| {
            Rejection::new(
                Failure::UntrustedKey,
                format!(
                    "none of the {} configured Cosign keys verifies the signature",
                    keys.len()
                ),
            )
        })
}

fn check_simple_signing(
    payload: &[u8],
    signature_b64: &str,
    subject_digest: &Digest,
    keys: &[CosignKey],
    limits: &Limits,
) -> Result<Verified, Rejection> {
    check_sizes(payload, signature_b64, limits)?;
    let document: SimpleSigning = serde_json::from_slice(payload).map_err(|e| {
        Rejection::new(
            Failure::EnvelopeUnreadable,
            format!("not a simple-signing payload: {e}"),
        )
    })?;
    if document.critical.kind != SIMPLE_SIGNING_TYPE {
        return Err(Rejection::new(
            Failure::EnvelopeUnreadable,
            format!(
                "simple-signing type {:?} is not {SIMPLE_SIGNING_TYPE:?}",
                document.critical.kind
            ),
        ));
    }
    let signature = STANDARD.decode(signature_b64.trim()).map_err(|_| {
        Rejection::new(
            Failure::EnvelopeUnreadable,
            "the Cosign signature is not base64",
        )
    })?;
    let key = trusted_key_for(payload, &signature, keys)?;
    let signed_digest = document.critical.image.docker_manifest_digest;
    if signed_digest != subject_digest.as_str() {
        return Err(Rejection::new(
            Failure::DigestMismatch,
            format!("the signature is for {signed_digest}, not {subject_digest}"),
        ));
    }
    Ok(Verified {
        identity: SignerIdentity {
            subject: format!("cosign key {}", key.fingerprint),
            signer_profile_version_arn: None,
            signer_job_arn: None,
        },
        signing_time: None,
        expiry: None,
        scheme: SigningScheme::CosignKey,
        envelope_digest: format!("sha256:{}", hex::encode(Sha256::digest(payload))),
        policy: format!("cosign ({})", document.critical.identity.docker_reference),
        level: Level::Strict,
        warnings: Vec::new(),
    })
}

/// A Sigstore bundle (keyless: Fulcio certificate, Rekor entry). Verifying those needs the
/// Sigstore trust root and an identity policy, which ecr-audit does not configure yet.
pub fn verify_sigstore_bundle(_bundle: &[u8]) -> SignatureCheck {
    SignatureCheck::rejected(
        Failure::KeylessNotConfigured,
        "keyless verification not configured",
    )
}
