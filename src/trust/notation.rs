//! Verifying one Notary signature envelope against the subject, the user's trust policy and
//! trust stores, in the order of docs/SIGNATURES.md ("Cryptographic verification"), with the
//! policy level deciding which failures reject and which are only recorded.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::certs::{self, Chain};
use super::envelope::{self, Envelope, NotaryScheme};
use super::outcome::{Failure, Rejection, SignatureCheck, SignerIdentity, Verified};
use super::policy::{Action, Level, StoreKind, TrustPolicy, TrustPolicyDocument, TrustedIdentity};
use super::store::TrustStores;
use super::{Descriptor, Limits};

/// The trust configuration one verification runs against.
#[derive(Debug, Clone, Copy)]
pub struct Verifier<'a> {
    pub policy: &'a TrustPolicyDocument,
    pub stores: &'a TrustStores,
    pub limits: &'a Limits,
}

impl Verifier<'_> {
    /// Verifies a Notary signature envelope (`application/jose+json` or `application/cose`) of
    /// `subject`, stored in the repository `scope` (`REGISTRY/REPOSITORY`), at time `now`.
    pub fn verify_notation(
        &self,
        media_type: &str,
        envelope_bytes: &[u8],
        subject: &Descriptor,
        scope: &str,
        now: DateTime<Utc>,
    ) -> SignatureCheck {
        let Some(policy) = self.policy.policy_for(scope) else {
            return SignatureCheck::rejected(
                Failure::NoPolicyForScope,
                format!("no trust policy applies to {scope}"),
            );
        };
        if policy.enforcement.level == Level::Skip {
            return SignatureCheck::Skipped {
                policy: policy.name.clone(),
            };
        }
        if envelope_bytes.len() > self.limits.max_envelope_bytes {
            return SignatureCheck::rejected(
                Failure::EnvelopeTooLarge,
                format!(
                    "the envelope has {} bytes, more than the limit of {}",
                    envelope_bytes.len(),
                    self.limits.max_envelope_bytes
                ),
            );
        }
        match self.check(media_type, envelope_bytes, subject, policy, now) {
            Ok(verified) => SignatureCheck::Verified(Box::new(verified)),
            Err(rejection) => SignatureCheck::Rejected(rejection),
        }
    }

    fn check(
        &self,
        media_type: &str,
        envelope_bytes: &[u8],
        subject: &Descriptor,
        policy: &TrustPolicy,
        now: DateTime<Utc>,
    ) -> Result<Verified, Rejection> {
        let envelope = envelope::parse(media_type, envelope_bytes, self.limits)?;
        let chain = Chain::parse(&envelope.certificates)?;
        check_integrity(&envelope, &chain)?;
        check_target(&envelope.payload, subject)?;
        let (subject_text, subject_rdns) = certs::subject(chain.leaf());
        let mut outcome = Outcome {
            policy,
            warnings: Vec::new(),
        };
        outcome.apply(self.check_authenticity(&envelope, &chain, policy, &subject_rdns))?;
        outcome.apply(check_times(&envelope, &chain, now))?;
        outcome.apply(check_expiry(envelope.expiry, now))?;
        Ok(Verified {
            identity: SignerIdentity {
                subject: subject_text,
                signer_profile_version_arn: envelope.signer_profile_version.clone(),
                signer_job_arn: envelope.signer_job.clone(),
            },
            signing_time: Some(envelope.signing_time),
            expiry: envelope.expiry,
            scheme: envelope.scheme.into(),
            envelope_digest: format!("sha256:{}", hex::encode(Sha256::digest(envelope_bytes))),
            policy: policy.name.clone(),
            level: policy.enforcement.level,
            warnings: outcome.warnings,
        })
    }

    /// The chain leads to a root of the policy's stores of the scheme's kind, the certificates
    /// meet the specification's requirements, and the signer is a trusted identity.
    fn check_authenticity(
        &self,
        envelope: &Envelope,
        chain: &Chain<'_>,
        policy: &TrustPolicy,
        subject_rdns: &[(String, String)],
    ) -> Result<(), Rejection> {
        let kind = match envelope.scheme {
            NotaryScheme::X509 => StoreKind::Ca,
            NotaryScheme::SigningAuthority => StoreKind::SigningAuthority,
        };
        let refs: Vec<_> = policy
            .trust_stores
            .iter()
            .filter(|r| r.kind == kind)
            .collect();
        if refs.is_empty() {
            return Err(Rejection::new(
                Failure::SchemeNotTrusted,
                format!(
                    "signing scheme {} needs a {} trust store, and policy {:?} names none",
                    envelope.scheme.as_str(),
                    kind.as_str(),
                    policy.name
                ),
            ));
        }
        let mut roots = Vec::new();
        for store in refs {
            match self.stores.roots(kind, &store.name) {
                Some(certs) => roots.extend(certs.iter().cloned()),
                None => {
                    return Err(Rejection::new(
                        Failure::TrustStoreMissing,
                        format!(
                            "trust store {}:{} is not configured",
                            kind.as_str(),
                            store.name
                        ),
                    ));
                }
            }
        }
        certs::check_requirements(chain)?;
        let Some(instant) = certs::chain_instant(chain, envelope.signing_time) else {
            return Err(Rejection::new(
                Failure::UntrustedChain,
                "the certificates' validity periods never overlap",
            ));
        };
        certs::verify_chain(chain, &roots, instant)?;
        check_identity(policy, envelope, subject_rdns)
    }
}

/// Collects logged failures and turns enforced ones into the rejection.
struct Outcome<'p> {
    policy: &'p TrustPolicy,
    warnings: Vec<Rejection>,
}

impl Outcome<'_> {
    fn apply(&mut self, result: Result<(), Rejection>) -> Result<(), Rejection> {
        let Err(rejection) = result else {
            return Ok(());
        };
        match self
            .policy
            .enforcement
            .action(rejection.failure.validation())
        {
            Action::Enforce => Err(rejection),
            Action::Log => {
                self.warnings.push(rejection);
                Ok(())
            }
            Action::Skip => Ok(()),
        }
    }
}

/// The algorithm fits the leaf's key and the signature verifies: integrity, always enforced.
fn check_integrity(envelope: &Envelope, chain: &Chain<'_>) -> Result<(), Rejection> {
    let expected = certs::algorithm_for_key(chain.leaf())?;
    if expected != envelope.algorithm {
        return Err(Rejection::new(
            Failure::UnsupportedAlgorithm,
            format!(
                "alg {} does not match the signing key, which requires {}",
                envelope.algorithm.as_str(),
                expected.as_str()
            ),
        ));
    }
    certs::verify_signature(
        envelope.algorithm,
        chain.leaf(),
        &envelope.signed_bytes,
        &envelope.signature,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    target_artifact: TargetArtifact,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetArtifact {
    media_type: String,
    digest: String,
    size: u64,
}

/// The signed payload's target artifact is the subject: digest, media type and size.
fn check_target(payload: &[u8], subject: &Descriptor) -> Result<(), Rejection> {
    let payload: Payload = serde_json::from_slice(payload).map_err(|e| {
        Rejection::new(
            Failure::EnvelopeUnreadable,
            format!("the signed payload is not a Notary payload: {e}"),
        )
    })?;
    let target = payload.target_artifact;
    if target.digest != subject.digest.as_str() {
        return Err(Rejection::new(
            Failure::DigestMismatch,
            format!(
                "the signature is for {}, not {}",
                target.digest, subject.digest
            ),
        ));
    }
    if target.media_type != subject.media_type {
        return Err(Rejection::new(
            Failure::MediaTypeMismatch,
            format!(
                "the signature is for a {}, the subject is a {}",
                target.media_type, subject.media_type
            ),
        ));
    }
    if target.size != subject.size {
        return Err(Rejection::new(
            Failure::SizeMismatch,
            format!(
                "the signature is for {} bytes, the subject has {}",
                target.size, subject.size
            ),
        ));
    }
    Ok(())
}

fn check_identity(
    policy: &TrustPolicy,
    envelope: &Envelope,
    subject_rdns: &[(String, String)],
) -> Result<(), Rejection> {
    let matches = |identity: &TrustedIdentity| match identity {
        TrustedIdentity::Any => true,
        TrustedIdentity::Subject(rdns) => rdns.iter().all(|(key, value)| {
            let key = if key == "S" { "ST" } else { key.as_str() };
            subject_rdns.iter().any(|(k, v)| k == key && v == value)
        }),
        TrustedIdentity::SignerProfile(arn) => {
            envelope.scheme == NotaryScheme::SigningAuthority
                && envelope
                    .signer_profile_version
                    .as_deref()
                    .is_some_and(|version| {
                        version == arn
                            || version.strip_prefix(arn.as_str()).is_some_and(|rest| {
                                rest.starts_with('/') && !rest[1..].contains('/')
                            })
                    })
        }
    };
    if policy.trusted_identities.iter().any(matches) {
        return Ok(());
    }
    let who = envelope.signer_profile_version.clone().unwrap_or_else(|| {
        subject_rdns
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    Err(Rejection::new(
        Failure::IdentityNotTrusted,
        format!(
            "{who} is not among the trusted identities of policy {:?}",
            policy.name
        ),
    ))
}

/// The signing time is inside every certificate's validity, and for `notary.x509` (whose
/// signing time is only the signer's claim) every certificate is also valid now.
fn check_times(
    envelope: &Envelope,
    chain: &Chain<'_>,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    let signed_at = envelope.signing_time.timestamp();
    if let Some(index) = chain
        .parsed
        .iter()
        .position(|c| !certs::valid_at(c, signed_at))
    {
        return Err(Rejection::new(
            Failure::CertificateNotValidAtSigningTime,
            format!(
                "certificate {index} was not valid at the signing time {}",
                envelope.signing_time
            ),
        ));
    }
    if envelope.scheme == NotaryScheme::X509
        && let Some(index) = chain
            .parsed
            .iter()
            .position(|c| !certs::valid_at(c, now.timestamp()))
    {
        return Err(Rejection::new(
            Failure::CertificateExpired,
            format!(
                "certificate {index} is not valid now, and notary.x509 has no authentic signing time"
            ),
        ));
    }
    Ok(())
}

fn check_expiry(expiry: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<(), Rejection> {
    match expiry {
        Some(expiry) if now >= expiry => Err(Rejection::new(
            Failure::Expired,
            format!("the signature expired at {expiry}"),
        )),
        _ => Ok(()),
    }
}
