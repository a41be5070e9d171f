//! Signature verifications kept by envelope digest, trust configuration version, subject and
//! repository scope (migrations/20261201000001_signature_verifications.sql), so an envelope
//! already judged costs neither a download nor cryptography.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::Digest;
use crate::facts::{SignatureVerification, VerificationResult};

/// What identifies one stored verification.
#[derive(Debug, Clone, Copy)]
pub struct VerificationKey<'a> {
    pub envelope_digest: &'a str,
    pub policy_version: &'a str,
    pub subject: &'a Digest,
    /// The repository URI the policy was chosen by (`trust::ecr_scope`).
    pub scope: &'a str,
}

impl Store {
    /// The verification stored under `key`, if one is and it still holds at `now`: a verified
    /// signature whose expiry has passed is judged again (it would now be `expired`).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn signature_verification(
        &self,
        key: VerificationKey<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<SignatureVerification>, StoreError> {
        let row: Option<(
            sqlx::types::Json<SignatureVerification>,
            Option<DateTime<Utc>>,
        )> = sqlx::query_as(
            "SELECT detail, expiry FROM signature_verifications
                  WHERE envelope_digest = $1 AND policy_version = $2
                    AND subject_digest = $3 AND scope = $4",
        )
        .bind(key.envelope_digest)
        .bind(key.policy_version)
        .bind(key.subject.as_str())
        .bind(key.scope)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .filter(|(_, expiry)| expiry.is_none_or(|expiry| expiry > now))
            .map(|(detail, _)| detail.0))
    }

    /// The verification kept for a signature artifact by its manifest digest (`reference`)
    /// under `policy_version`, for `subject` in `scope`, if it still holds at `now`: a
    /// manifest digest fixes its envelope, so this saves even reading the manifest.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn signature_verification_of_artifact(
        &self,
        reference: &str,
        policy_version: &str,
        subject: &Digest,
        scope: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SignatureVerification>, StoreError> {
        let row: Option<(
            sqlx::types::Json<SignatureVerification>,
            Option<DateTime<Utc>>,
        )> = sqlx::query_as(
            "SELECT detail, expiry FROM signature_verifications
                  WHERE subject_digest = $1 AND reference = $2 AND policy_version = $3
                    AND scope = $4
                  ORDER BY verified_at DESC
                  LIMIT 1",
        )
        .bind(subject.as_str())
        .bind(reference)
        .bind(policy_version)
        .bind(scope)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .filter(|(_, expiry)| expiry.is_none_or(|expiry| expiry > now))
            .map(|(detail, _)| detail.0))
    }

    /// Keeps a verification; one already kept under the same key stays as it was.
    ///
    /// # Errors
    /// When the write fails.
    pub async fn record_signature_verification(
        &self,
        key: VerificationKey<'_>,
        verification: &SignatureVerification,
    ) -> Result<(), StoreError> {
        let (result, failure, identity, signing_time, expiry) = columns(&verification.result);
        sqlx::query(
            "INSERT INTO signature_verifications
                 (envelope_digest, policy_version, subject_digest, scope, reference, result,
                  failure, identity, signing_time, expiry, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT DO NOTHING",
        )
        .bind(key.envelope_digest)
        .bind(key.policy_version)
        .bind(key.subject.as_str())
        .bind(key.scope)
        .bind(&verification.reference)
        .bind(result)
        .bind(failure)
        .bind(identity)
        .bind(signing_time)
        .bind(expiry)
        .bind(sqlx::types::Json(verification))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

type Columns<'a> = (
    &'static str,
    Option<&'a str>,
    Option<&'a str>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// The queryable columns of a result: kind, failed check, identity, signing time, expiry.
fn columns(result: &VerificationResult) -> Columns<'_> {
    match result {
        VerificationResult::Verified {
            identity,
            signing_time,
            expiry,
            ..
        } => ("verified", None, Some(identity), *signing_time, *expiry),
        VerificationResult::Skipped { .. } => ("skipped", None, None, None, None),
        VerificationResult::Rejected { check, .. } => ("rejected", Some(check), None, None, None),
    }
}
