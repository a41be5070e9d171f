//! Verifying signature artifacts: which layer of a signature manifest is
//! worth reading — none when the verdict is already certain (no policy, no key, declared too
//! large) — and what `trust` concludes about the bytes read, as a fact to store and show.

use chrono::{DateTime, Utc};

use crate::facts::signature_content::COSIGN_SIGNATURE_ANNOTATION;
use crate::facts::{
    BlobRead, LayerDescriptor, SignatureArtifact, SignatureKind, SignatureManifest,
    SignatureVerification, VerificationResult,
};
use crate::trust::{
    Action, Descriptor, Failure, Rejection, SignatureCheck, TrustSettings, Verifier,
    verify_cosign_simple_signing,
};

mod revocation;

pub use revocation::{
    REVOCATION_UNKNOWN_CHECK, REVOKED_CHECK, SIGNER_NOTATION_PLATFORM, apply_revocation,
    revocation_action,
};

/// Notary Project envelope media types (JWS, COSE).
pub const NOTATION_ENVELOPE_TYPES: [&str; 2] = ["application/jose+json", "application/cose"];
/// Cosign's simple-signing payload layer.
pub const COSIGN_PAYLOAD_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// One signature artifact and what was read of it.
#[derive(Debug, Clone, Copy)]
pub struct SignatureRead<'a> {
    pub kind: SignatureKind,
    /// The artifact's digest, or the Cosign tag.
    pub reference: &'a str,
    pub layer: &'a LayerDescriptor,
    pub blob: &'a BlobRead,
}

/// The signature artifacts of a digest that are read and verified, and how many are left out
/// by `ECR_AUDIT_MAX_SIGNATURES_PER_DIGEST` (in the order the registry listed them).
pub fn signatures_within_cap<'a>(
    artifacts: &'a [SignatureArtifact],
    settings: &TrustSettings,
) -> (&'a [SignatureArtifact], usize) {
    let kept = artifacts.len().min(settings.max_signatures_per_digest);
    (&artifacts[..kept], artifacts.len() - kept)
}

/// The layer of a signature manifest to download, or the verification that makes the
/// download pointless (saving `GetDownloadUrlForLayer` and the GET).
///
/// # Errors
/// The rejected [`SignatureVerification`] when no read could change the outcome.
pub fn envelope_layer<'m>(
    settings: &TrustSettings,
    kind: SignatureKind,
    reference: &str,
    manifest: &'m SignatureManifest,
) -> Result<&'m LayerDescriptor, Box<SignatureVerification>> {
    let rejected = |layer: Option<&LayerDescriptor>, rejection: Rejection| {
        Box::new(rejected(settings, reference, layer, &rejection))
    };
    let layer = match kind {
        SignatureKind::Notation => manifest
            .layers
            .iter()
            .find(|l| NOTATION_ENVELOPE_TYPES.contains(&l.media_type.as_str())),
        SignatureKind::Cosign => manifest.layers.iter().find(|l| {
            l.media_type == COSIGN_PAYLOAD_TYPE
                && l.annotations.contains_key(COSIGN_SIGNATURE_ANNOTATION)
        }),
    };
    let Some(layer) = layer else {
        return Err(rejected(None, no_layer(kind)));
    };
    if let Some(rejection) = certain_rejection(settings, kind) {
        return Err(rejected(Some(layer), rejection));
    }
    if layer.size > settings.limits.max_envelope_bytes as u64 {
        return Err(rejected(
            Some(layer),
            too_large(layer.size, settings.limits.max_envelope_bytes),
        ));
    }
    Ok(layer)
}

fn no_layer(kind: SignatureKind) -> Rejection {
    match kind {
        SignatureKind::Notation => Rejection::new(
            Failure::UnsupportedEnvelope,
            "the signature manifest has no application/jose+json or application/cose layer",
        ),
        SignatureKind::Cosign => Rejection::new(
            Failure::EnvelopeUnreadable,
            format!(
                "no {COSIGN_PAYLOAD_TYPE} layer with a {COSIGN_SIGNATURE_ANNOTATION} annotation"
            ),
        ),
    }
}

/// A rejection that holds whatever the bytes are: nothing configured to trust.
fn certain_rejection(settings: &TrustSettings, kind: SignatureKind) -> Option<Rejection> {
    match kind {
        SignatureKind::Notation if settings.policy.is_none() => Some(Rejection::new(
            Failure::NoTrustPolicy,
            settings.no_policy_reason(),
        )),
        SignatureKind::Cosign if settings.cosign_keys.is_empty() => Some(Rejection::new(
            Failure::UntrustedKey,
            "no Cosign public key configured (ECR_AUDIT_COSIGN_KEYS)",
        )),
        _ => None,
    }
}

fn too_large(size: u64, limit: usize) -> Rejection {
    Rejection::new(
        Failure::EnvelopeTooLarge,
        format!("the envelope has {size} bytes, more than the limit of {limit}"),
    )
}

/// Verifies what was read of one signature of `subject`, in the repository `scope`.
pub fn verify_read(
    settings: &TrustSettings,
    read: SignatureRead<'_>,
    subject: &Descriptor,
    scope: &str,
    now: DateTime<Utc>,
) -> SignatureVerification {
    let bytes = match read.blob {
        BlobRead::Bytes(bytes) => bytes,
        BlobRead::TooLarge { limit } => {
            let rejection = too_large(read.layer.size.max(*limit as u64 + 1), *limit);
            return rejected(settings, read.reference, Some(read.layer), &rejection);
        }
        BlobRead::DigestMismatch { actual } => {
            let rejection = Rejection::new(
                Failure::EnvelopeUnreadable,
                format!(
                    "the blob served for {} hashes to {actual}",
                    read.layer.digest
                ),
            );
            return rejected(settings, read.reference, Some(read.layer), &rejection);
        }
    };
    if let Some(rejection) = certain_rejection(settings, read.kind) {
        return rejected(settings, read.reference, Some(read.layer), &rejection);
    }
    let check = check_bytes(settings, read, bytes, subject, scope, now);
    let result = result_of(check);
    let revocation = match (&read.kind, &result) {
        (SignatureKind::Notation, VerificationResult::Verified { .. }) => {
            revocation::query(&read.layer.media_type, bytes, &settings.limits, &result)
        }
        _ => None,
    };
    SignatureVerification {
        reference: read.reference.to_owned(),
        envelope_digest: Some(read.layer.digest.clone()),
        policy_version: settings.version(),
        result,
        revocation,
    }
}

fn check_bytes(
    settings: &TrustSettings,
    read: SignatureRead<'_>,
    bytes: &[u8],
    subject: &Descriptor,
    scope: &str,
    now: DateTime<Utc>,
) -> SignatureCheck {
    match (read.kind, &settings.policy) {
        (SignatureKind::Notation, Some(policy)) => Verifier {
            policy: &policy.document,
            stores: &policy.stores,
            limits: &settings.limits,
        }
        .verify_notation(&read.layer.media_type, bytes, subject, scope, now),
        (SignatureKind::Notation, None) => {
            SignatureCheck::rejected(Failure::NoTrustPolicy, settings.no_policy_reason())
        }
        (SignatureKind::Cosign, _) => {
            let signature = read
                .layer
                .annotations
                .get(COSIGN_SIGNATURE_ANNOTATION)
                .map_or("", String::as_str);
            verify_cosign_simple_signing(
                bytes,
                signature,
                &subject.digest,
                &settings.cosign_keys,
                &settings.limits,
            )
        }
    }
}

fn rejected(
    settings: &TrustSettings,
    reference: &str,
    layer: Option<&LayerDescriptor>,
    rejection: &Rejection,
) -> SignatureVerification {
    SignatureVerification {
        reference: reference.to_owned(),
        envelope_digest: layer.map(|l| l.digest.clone()),
        policy_version: settings.version(),
        result: VerificationResult::Rejected {
            check: rejection.failure.as_str().to_owned(),
            reason: rejection.reason.clone(),
        },
        revocation: None,
    }
}

/// A rejection of a signature that could not be read (its manifest or its envelope is gone or
/// refused): `envelope_unreadable`, not kept, since a later read may succeed.
pub fn unreadable(
    settings: &TrustSettings,
    reference: &str,
    layer: Option<&LayerDescriptor>,
    what: &str,
    reason: &str,
) -> SignatureVerification {
    let rejection = Rejection::new(
        Failure::EnvelopeUnreadable,
        format!("the {what} could not be read: {reason}"),
    );
    rejected(settings, reference, layer, &rejection)
}

/// The descriptor a signature of `digest` must name: the digest is the real subject's (the
/// one ECR listed the signature for); media type and size are taken from the signature
/// manifest's own `subject` descriptor, or the image's manifest media type. Those two cannot
/// let a signature through on their own: the digest already fixes the manifest's bytes, so
/// a payload naming this digest with another size or type names no real artifact.
pub fn subject_descriptor(
    digest: &crate::domain::Digest,
    manifest: &SignatureManifest,
    image_media_type: Option<&str>,
) -> Descriptor {
    let own = manifest.subject.as_deref() == Some(digest.as_str());
    let media_type = own
        .then(|| manifest.subject_media_type.clone())
        .flatten()
        .or_else(|| image_media_type.map(str::to_owned))
        .unwrap_or_default();
    Descriptor {
        media_type,
        digest: digest.clone(),
        size: if own {
            manifest.subject_size.unwrap_or(0)
        } else {
            0
        },
    }
}

/// Whether a revocation answer is needed: a verified signature that names Signer entities,
/// under a policy that does not skip revocation.
pub fn needs_revocation(
    settings: &TrustSettings,
    verification: &SignatureVerification,
    scope: &str,
) -> bool {
    verification.is_verified()
        && verification.revocation.is_some()
        && revocation_action(settings, scope) != Action::Skip
}

/// The stored form of a `trust` outcome.
pub fn result_of(check: SignatureCheck) -> VerificationResult {
    match check {
        SignatureCheck::Verified(verified) => VerificationResult::Verified {
            scheme: verified.scheme.as_str().to_owned(),
            identity: verified.identity.subject,
            signer_profile_version_arn: verified.identity.signer_profile_version_arn,
            signer_job_arn: verified.identity.signer_job_arn,
            signing_time: verified.signing_time,
            expiry: verified.expiry,
            warnings: verified.warnings.iter().map(ToString::to_string).collect(),
        },
        SignatureCheck::Skipped { policy } => VerificationResult::Skipped { policy },
        SignatureCheck::Rejected(rejection) => VerificationResult::Rejected {
            check: rejection.failure.as_str().to_owned(),
            reason: rejection.reason,
        },
    }
}

#[cfg(test)]
mod tests;
