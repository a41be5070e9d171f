//! AWS Signer revocation of a verified Notary signature: what `GetRevocationStatus` is asked
//! (profile version, job, composite certificate hashes) and what its answer does to the
//! verification under the policy's `revocation` action.

use sha2::{Digest as _, Sha384};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::facts::{Fact, RevocationQuery, SignatureVerification, VerificationResult};
use crate::trust::{Action, Limits, TrustSettings, Validation, envelope};

/// The Signer platform of Notary container signatures (the one `GetRevocationStatus` is
/// asked with; docs/EMULATOR.md, "Signatures").
pub const SIGNER_NOTATION_PLATFORM: &str = "Notation-OCI-SHA384-ECDSA";
/// The check named when AWS Signer answers that an entity of the signature is revoked.
pub const REVOKED_CHECK: &str = "revoked";
/// The check named when revocation is enforced and AWS Signer could not be asked.
pub const REVOCATION_UNKNOWN_CHECK: &str = "revocation_unknown";

/// The revocation question of a verified AWS Signer signature: `None` when the signature
/// names no Signer profile version and job (a Notation signature made elsewhere).
pub(super) fn query(
    media_type: &str,
    bytes: &[u8],
    limits: &Limits,
    result: &VerificationResult,
) -> Option<RevocationQuery> {
    let VerificationResult::Verified {
        signer_profile_version_arn: Some(profile_version_arn),
        signer_job_arn: Some(job_arn),
        signing_time: Some(signing_time),
        ..
    } = result
    else {
        return None;
    };
    let parsed = envelope::parse(media_type, bytes, limits).ok()?;
    Some(RevocationQuery {
        profile_version_arn: profile_version_arn.clone(),
        job_arn: job_arn.clone(),
        certificate_hashes: certificate_hashes(&parsed.certificates),
        signature_time: *signing_time,
        platform_id: SIGNER_NOTATION_PLATFORM.to_owned(),
    })
}

/// Signer's composite certificate hashes: hex SHA-384 of each certificate's TBS bytes
/// followed by its issuer's (the last certificate, the root, is its own issuer).
fn certificate_hashes(chain: &[Vec<u8>]) -> Vec<String> {
    let tbs_hashes: Vec<String> = chain
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok())
        .map(|(_, cert)| hex::encode(Sha384::digest(cert.tbs_certificate.as_ref())))
        .collect();
    tbs_hashes
        .iter()
        .enumerate()
        .map(|(i, own)| {
            let issuer = tbs_hashes.get(i + 1).unwrap_or(own);
            format!("{own}{issuer}")
        })
        .collect()
}

/// The policy's action for revocation in the repository `scope`; `Skip` without a policy.
pub fn revocation_action(settings: &TrustSettings, scope: &str) -> Action {
    settings
        .policy
        .as_ref()
        .and_then(|p| p.document.policy_for(scope))
        .map_or(Action::Skip, |p| {
            p.enforcement.action(Validation::Revocation)
        })
}

/// A verified signature with Signer's answer applied: a revoked entity (or no answer) rejects
/// it when revocation is enforced, and is recorded as a warning when it is only logged.
pub fn apply_revocation(
    mut verification: SignatureVerification,
    answer: &Fact<Vec<String>>,
    action: Action,
) -> SignatureVerification {
    let problem = match answer {
        Fact::Known(revoked) if revoked.is_empty() => return verification,
        Fact::Known(revoked) => (
            REVOKED_CHECK,
            format!("revoked in AWS Signer: {}", revoked.join(", ")),
        ),
        Fact::Unknown(reason) => (
            REVOCATION_UNKNOWN_CHECK,
            format!("AWS Signer revocation status could not be read: {reason}"),
        ),
    };
    match (action, &mut verification.result) {
        (Action::Skip, _) => {}
        (Action::Enforce, result) => {
            *result = VerificationResult::Rejected {
                check: problem.0.to_owned(),
                reason: problem.1,
            };
        }
        (Action::Log, VerificationResult::Verified { warnings, .. }) => {
            warnings.push(format!("{}: {}", problem.0, problem.1));
        }
        (Action::Log, _) => {}
    }
    verification
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified() -> SignatureVerification {
        SignatureVerification {
            reference: "sha256:sig".into(),
            envelope_digest: Some("sha256:env".into()),
            policy_version: "v".into(),
            result: VerificationResult::Verified {
                scheme: "notary.x509.signingAuthority".into(),
                identity: "CN=x".into(),
                signer_profile_version_arn: None,
                signer_job_arn: None,
                signing_time: None,
                expiry: None,
                warnings: Vec::new(),
            },
            revocation: None,
        }
    }

    #[test]
    fn a_revoked_entity_rejects_when_enforced_and_warns_when_logged() {
        let revoked = Fact::Known(vec!["arn:aws:signer:job".to_owned()]);
        let enforced = apply_revocation(verified(), &revoked, Action::Enforce);
        assert!(
            matches!(&enforced.result, VerificationResult::Rejected { check, reason }
                if check == REVOKED_CHECK && reason.contains("arn:aws:signer:job")),
            "{enforced:?}"
        );
        let logged = apply_revocation(verified(), &revoked, Action::Log);
        assert!(logged.is_verified());
        assert!(
            matches!(&logged.result, VerificationResult::Verified { warnings, .. } if warnings.len() == 1)
        );
        assert_eq!(
            apply_revocation(verified(), &revoked, Action::Skip),
            verified()
        );
        assert_eq!(
            apply_revocation(verified(), &Fact::Known(Vec::new()), Action::Enforce),
            verified()
        );
        let unknown = apply_revocation(
            verified(),
            &Fact::Unknown("AccessDenied".into()),
            Action::Enforce,
        );
        assert!(
            matches!(&unknown.result, VerificationResult::Rejected { check, .. } if check == REVOCATION_UNKNOWN_CHECK)
        );
    }

    #[test]
    fn composite_hashes_pair_each_certificate_with_its_issuer() {
        assert!(certificate_hashes(&[b"not a certificate".to_vec()]).is_empty());
    }
}
