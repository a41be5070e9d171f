//! Verifying a digest's signature artifacts: for each one within the per-digest cap, its
//! manifest, the envelope layer `plan::verify` picks, the verification kept in Postgres (by
//! artifact digest or envelope digest, under the trust configuration's version) or else the
//! envelope's download and `trust`'s verdict on it, then AWS Signer's revocation answer.

use chrono::Utc;

use super::Pipeline;
use crate::domain::{Digest, RepositoryKey};
use crate::enrich::{EnrichError, Registry};
use crate::facts::{
    BlobRead, Fact, SignatureArtifact, SignatureManifest, SignatureVerification, VerificationResult,
};
use crate::plan::SignatureReads;
use crate::plan::verify::{self, SignatureRead};
use crate::store::StoreError;
use crate::store::verifications::VerificationKey;
use crate::telemetry::{
    Happened, Metrics, RevocationOutcome, VerificationCheck, VerificationOutcome,
};
use crate::trust::{TrustSettings, ecr_scope};

/// One digest's signature artifact to verify, with where it lives and what it is verified
/// against (the configured policy, or AWS Signer's default for its registry).
struct Target<'a> {
    trust: &'a TrustSettings,
    key: &'a RepositoryKey,
    subject: &'a Digest,
    scope: &'a str,
    artifact: &'a SignatureArtifact,
}

impl Pipeline {
    /// Verifies the signature artifacts of `reads.digest` that were listed, within the cap.
    pub(super) async fn verify_artifacts(
        &self,
        trust: &TrustSettings,
        reads: &SignatureReads,
        artifacts: &Fact<Vec<SignatureArtifact>>,
    ) -> Result<Vec<SignatureVerification>, EnrichError> {
        let Some(artifacts) = artifacts.known() else {
            return Ok(Vec::new());
        };
        let (kept, _) = verify::signatures_within_cap(artifacts, trust);
        let key = &reads.key;
        let scope = ecr_scope(key.account.as_str(), key.region.as_str(), key.name.as_str());
        let mut verifications = Vec::with_capacity(kept.len());
        for artifact in kept {
            let target = Target {
                trust,
                key,
                subject: &reads.digest,
                scope: &scope,
                artifact,
            };
            let verification = self.verify_artifact(&target).await?;
            let verification = self
                .checked_for_revocation(trust, verification, &scope)
                .await?;
            record_verification(&self.metrics, &verification);
            verifications.push(verification);
        }
        Ok(verifications)
    }

    /// One artifact's verification: kept, or read and verified (and then kept).
    async fn verify_artifact(
        &self,
        target: &Target<'_>,
    ) -> Result<SignatureVerification, EnrichError> {
        let reference = target.artifact.reference.as_str();
        // A digest names the manifest's bytes, so what was concluded about it still holds;
        // a Cosign tag can move, so its manifest is read each time.
        if Digest::parse(reference).is_ok()
            && let Some(kept) = self.kept_for_artifact(target).await?
        {
            return Ok(kept);
        }
        let manifest = match self
            .registry
            .signature_manifest(target.key, reference)
            .await?
        {
            Fact::Known(manifest) => manifest,
            Fact::Unknown(reason) => {
                return Ok(verify::unreadable(
                    target.trust,
                    reference,
                    None,
                    "signature manifest",
                    &reason,
                ));
            }
        };
        self.verify_manifest(target, &manifest).await
    }

    /// Verifies the envelope a signature manifest names: kept, or downloaded and verified.
    async fn verify_manifest(
        &self,
        target: &Target<'_>,
        manifest: &SignatureManifest,
    ) -> Result<SignatureVerification, EnrichError> {
        let (kind, reference) = (target.artifact.kind, target.artifact.reference.as_str());
        let layer = match verify::envelope_layer(target.trust, kind, reference, manifest) {
            Ok(layer) => layer,
            Err(rejected) => {
                self.keep(target, &rejected).await?;
                return Ok(*rejected);
            }
        };
        if let Some(mut kept) = self.kept_for_envelope(target, &layer.digest).await? {
            kept.reference = reference.to_owned();
            return Ok(kept);
        }
        let max_bytes = target.trust.limits.max_envelope_bytes;
        let blob = match self
            .registry
            .blob(target.key, &layer.digest, max_bytes)
            .await?
        {
            Fact::Known(blob) => blob,
            Fact::Unknown(reason) => {
                let layer = Some(layer);
                return Ok(verify::unreadable(
                    target.trust,
                    reference,
                    layer,
                    "envelope",
                    &reason,
                ));
            }
        };
        let subject = verify::subject_descriptor(target.subject, manifest, None);
        let read = SignatureRead {
            kind,
            reference,
            layer,
            blob: &blob,
        };
        let verification =
            verify::verify_read(target.trust, read, &subject, target.scope, Utc::now());
        // Bytes served that do not hash to their digest say nothing about the envelope.
        if !matches!(blob, BlobRead::DigestMismatch { .. }) {
            self.keep(target, &verification).await?;
        }
        Ok(verification)
    }

    /// AWS Signer's answer on a verified Signer signature, applied as the policy says.
    async fn checked_for_revocation(
        &self,
        trust: &TrustSettings,
        verification: SignatureVerification,
        scope: &str,
    ) -> Result<SignatureVerification, EnrichError> {
        if !verify::needs_revocation(trust, &verification, scope) {
            return Ok(verification);
        }
        let Some(query) = verification.revocation.clone() else {
            return Ok(verification);
        };
        let answer = self.registry.revoked_entities(&query).await?;
        let outcome = match &answer {
            Fact::Known(revoked) if revoked.is_empty() => RevocationOutcome::NotRevoked,
            Fact::Known(_) => RevocationOutcome::Revoked,
            Fact::Unknown(_) => RevocationOutcome::Unknown,
        };
        Happened::RevocationChecked { outcome }.record(&self.metrics);
        let action = verify::revocation_action(trust, scope);
        Ok(verify::apply_revocation(verification, &answer, action))
    }

    async fn kept_for_artifact(
        &self,
        target: &Target<'_>,
    ) -> Result<Option<SignatureVerification>, EnrichError> {
        self.store
            .signature_verification_of_artifact(
                &target.artifact.reference,
                &target.trust.version(),
                target.subject,
                target.scope,
                Utc::now(),
            )
            .await
            .map_err(store_failure)
    }

    async fn kept_for_envelope(
        &self,
        target: &Target<'_>,
        envelope_digest: &str,
    ) -> Result<Option<SignatureVerification>, EnrichError> {
        let version = target.trust.version();
        let key = VerificationKey {
            envelope_digest,
            policy_version: &version,
            subject: target.subject,
            scope: target.scope,
        };
        self.store
            .signature_verification(key, Utc::now())
            .await
            .map_err(store_failure)
    }

    /// Keeps a conclusion about an envelope (only one that names its envelope digest).
    async fn keep(
        &self,
        target: &Target<'_>,
        verification: &SignatureVerification,
    ) -> Result<(), EnrichError> {
        let Some(envelope_digest) = verification.envelope_digest.as_deref() else {
            return Ok(());
        };
        let key = VerificationKey {
            envelope_digest,
            policy_version: &verification.policy_version,
            subject: target.subject,
            scope: target.scope,
        };
        self.store
            .record_signature_verification(key, verification)
            .await
            .map_err(store_failure)
    }
}

fn store_failure(err: StoreError) -> EnrichError {
    EnrichError::Transient {
        operation: "store:signature_verifications",
        target: "signature_verifications".to_owned(),
        message: err.to_string(),
    }
}

/// Counts one signature's final verification (after Signer's answer) by result and check.
fn record_verification(metrics: &Metrics, verification: &SignatureVerification) {
    let (outcome, check) = match &verification.result {
        VerificationResult::Verified { .. } => {
            (VerificationOutcome::Verified, VerificationCheck::None)
        }
        VerificationResult::Skipped { .. } => {
            (VerificationOutcome::Skipped, VerificationCheck::None)
        }
        VerificationResult::Rejected { check, .. } => (
            VerificationOutcome::Rejected,
            VerificationCheck::from_check(check),
        ),
    };
    Happened::SignatureVerified { outcome, check }.record(metrics);
}
