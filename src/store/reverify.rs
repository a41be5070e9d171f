//! Judging current digests again without an event about them: when AWS Signer revokes a job or
//! a profile version (the digests whose stored verifications name it), and on a schedule (the
//! digests whose signature verdict is older than `ECR_AUDIT_REVERIFY_INTERVAL`). Both only make
//! the digest's signature re-check due now; the re-check path (`signature_rechecks`, claimed
//! with `FOR UPDATE SKIP LOCKED`) does the reading and judging, paced like any other.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::{Store, StoreError};
use crate::plan::Reverify;

/// How long after a Signer revocation its digests are judged again: longer than any worker
/// keeps a Signer revocation answer (60 s, src/enrich/cache.rs), so whichever worker claims the
/// re-check asks Signer afresh and sees the revocation.
pub const REVOCATION_SETTLE: chrono::Duration = chrono::Duration::seconds(61);

/// Re-checks made due for the digests a [`Reverify`] names; returns how many.
///
/// Only present images that are not artifacts are chosen; they are due
/// [`REVOCATION_SETTLE`] after `now`. A digest already due earlier keeps its time; one due
/// later is brought forward. Rows are written in key order, the order every other writer of
/// `signature_rechecks` locks them in.
pub(super) async fn schedule(
    tx: &mut Transaction<'_, Postgres>,
    reverify: &Reverify,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let Reverify::NamingSigner { arn } = reverify;
    let now = now + REVOCATION_SETTLE;
    let done = sqlx::query(
        "INSERT INTO signature_rechecks (account, region, repository, digest, pushed_at, due_at, attempts)
         SELECT DISTINCT i.account, i.region, i.repository, i.digest,
                COALESCE(i.pushed_at, i.first_seen_at), $2::timestamptz, 0
           FROM signature_verifications v
           JOIN images i
             ON i.digest = v.subject_digest
            AND v.scope = i.account || '.dkr.ecr.' || i.region || '.amazonaws.com/' || i.repository
          WHERE i.present AND i.artifact_of IS NULL
            AND (v.detail ->> 'signer_job_arn' = $1 OR v.detail ->> 'signer_profile_version_arn' = $1)
          ORDER BY 1, 2, 3, 4
         ON CONFLICT (account, region, repository, digest) DO UPDATE
            SET due_at = LEAST(signature_rechecks.due_at, EXCLUDED.due_at)",
    )
    .bind(arn)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

impl Store {
    /// Makes the signature re-check of at most `limit` current digests due now: those with a
    /// signature verdict (`SIGNED` or `UNTRUSTED`) judged before `stale_before` and no re-check
    /// already pending, oldest verdict first. Returns how many were scheduled.
    ///
    /// Certificates expire and revocations happen without an event reaching ecr-audit; this
    /// bounds how long a verdict can stand unexamined. `limit` paces the work.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn schedule_stale_reverifications(
        &self,
        stale_before: DateTime<Utc>,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO signature_rechecks (account, region, repository, digest, pushed_at, due_at, attempts)
             SELECT account, region, repository, digest, pushed_at, $3::timestamptz, 0
               FROM (SELECT i.account, i.region, i.repository, i.digest,
                            COALESCE(i.pushed_at, i.first_seen_at) AS pushed_at
                       FROM images i
                      WHERE i.present AND i.artifact_of IS NULL
                        AND i.signature_status IN ('SIGNED', 'UNTRUSTED')
                        AND i.signature_checked_at < $1
                        AND NOT EXISTS (SELECT 1 FROM signature_rechecks r
                                         WHERE r.account = i.account AND r.region = i.region
                                           AND r.repository = i.repository AND r.digest = i.digest)
                      ORDER BY i.signature_checked_at
                      LIMIT $2) stale
              ORDER BY 1, 2, 3, 4
             ON CONFLICT (account, region, repository, digest) DO NOTHING",
        )
        .bind(stale_before)
        .bind(limit)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Makes due the re-check of every current digest with a signature verdict whose trust
    /// configuration version does not start with `family` (AWS Signer's default policy, whose
    /// versions differ per registry); returns how many.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn requeue_signatures_outside_family(&self, family: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO signature_rechecks (account, region, repository, digest, pushed_at, due_at, attempts)
             SELECT account, region, repository, digest, COALESCE(pushed_at, now()), now(), 0
               FROM images
              WHERE present AND artifact_of IS NULL AND signature_status IS NOT NULL
                AND (signature_policy_version IS NULL
                     OR left(signature_policy_version, length($1)) <> $1)
             ON CONFLICT (account, region, repository, digest) DO UPDATE SET
                  due_at = LEAST(signature_rechecks.due_at, EXCLUDED.due_at)",
        )
        .bind(family)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// The age in seconds of the oldest signature verdict among current images with
    /// signatures (`SIGNED`, `UNTRUSTED`), for `ecr_audit_signature_oldest_verdict_age_seconds`;
    /// `None` when there is none. (How many digests each verdict covers is
    /// `ecr_audit_images{signature}`.)
    ///
    /// # Errors
    /// When the query fails.
    pub async fn oldest_signature_verdict_age(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<f64>, StoreError> {
        let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(signature_checked_at) FROM images
              WHERE present AND artifact_of IS NULL
                AND signature_status IN ('SIGNED', 'UNTRUSTED')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(oldest.map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0))
    }
}
