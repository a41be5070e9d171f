//! Per-digest signature and scan state, and the signature re-check queue.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Postgres, Transaction};

use super::{ScanWrite, SignatureWrite, StoreError};
use crate::domain::{Digest, RepositoryKey, ScanStatus, SignatureStatus};

/// What applying a signature verdict changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureChange {
    pub from: Option<SignatureStatus>,
    pub to: SignatureStatus,
    /// The digest became `UNSIGNED` for the first time ever.
    pub first_unsigned: bool,
}

/// A claimed re-check.
#[derive(Debug, Clone)]
pub struct RecheckClaim {
    pub key: RepositoryKey,
    pub digest: Digest,
    pub pushed_at: DateTime<Utc>,
    pub attempts: i32,
}

/// Current signature status, whether it was never UNSIGNED, last check time, is-artifact.
type SignatureRow = (Option<String>, bool, Option<DateTime<Utc>>, bool);

/// The digest's next signature re-check: due at `write.next_check`, or none any more.
async fn schedule_recheck(
    tx: &mut Transaction<'_, Postgres>,
    write: &SignatureWrite,
    from_recheck: bool,
) -> Result<(), StoreError> {
    let key = &write.key;
    match write.next_check {
        Some(due_at) => {
            sqlx::query(
                "INSERT INTO signature_rechecks (account, region, repository, digest, pushed_at, due_at, attempts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (account, region, repository, digest) DO UPDATE SET
                      due_at = EXCLUDED.due_at,
                      attempts = signature_rechecks.attempts + $7",
            )
            .bind(key.account.as_str())
            .bind(key.region.as_str())
            .bind(key.name.as_str())
            .bind(write.digest.as_str())
            .bind(write.pushed_at)
            .bind(due_at)
            .bind(i32::from(from_recheck))
            .execute(&mut **tx)
            .await?;
        }
        None => {
            sqlx::query(
                "DELETE FROM signature_rechecks
                  WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4",
            )
            .bind(key.account.as_str())
            .bind(key.region.as_str())
            .bind(key.name.as_str())
            .bind(write.digest.as_str())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Applies a verdict unless a newer check is stored or the digest is an artifact or unknown;
/// returns the status change, if any.
pub(super) async fn apply_signature(
    tx: &mut Transaction<'_, Postgres>,
    write: &SignatureWrite,
    from_recheck: bool,
) -> Result<Option<SignatureChange>, StoreError> {
    let key = &write.key;
    let current: Option<SignatureRow> = sqlx::query_as(
        "SELECT signature_status, first_unsigned_at IS NULL, signature_checked_at, artifact_of IS NOT NULL
           FROM images
          WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4
          FOR UPDATE",
    )
    .bind(key.account.as_str())
    .bind(key.region.as_str())
    .bind(key.name.as_str())
    .bind(write.digest.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    // The image's own push event creates the row and evaluates it; artifacts take no status.
    let Some((old_status, never_unsigned, checked_at, is_artifact)) = current else {
        return Ok(None);
    };
    if is_artifact || checked_at.is_some_and(|at| at > write.checked_at) {
        return Ok(None);
    }
    let status = write.verdict.status;
    sqlx::query(
        "UPDATE images SET
              signature_status = $5,
              signature_sources = $6,
              signature_reason = $7,
              signature_checked_at = $8,
              signature_verifications = $9,
              signature_policy_version = $10,
              signed_at = CASE WHEN $5 = 'SIGNED' THEN COALESCE(signed_at, $8) ELSE signed_at END,
              first_unsigned_at = CASE WHEN $5 IN ('UNSIGNED', 'UNTRUSTED')
                                       THEN COALESCE(first_unsigned_at, $8) ELSE first_unsigned_at END,
              updated_at = now()
          WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4",
    )
    .bind(key.account.as_str())
    .bind(key.region.as_str())
    .bind(key.name.as_str())
    .bind(write.digest.as_str())
    .bind(status.as_str())
    .bind(json!(write.verdict.sources))
    .bind(&write.verdict.reason)
    .bind(write.checked_at)
    .bind(json!(write.verdict.verifications))
    .bind(write.verdict.policy_version.as_deref())
    .execute(&mut **tx)
    .await?;

    schedule_recheck(tx, write, from_recheck).await?;

    let from = old_status
        .as_deref()
        .and_then(SignatureStatus::from_str_opt);
    if from == Some(status) {
        return Ok(None);
    }
    Ok(Some(SignatureChange {
        from,
        to: status,
        first_unsigned: lacks_trusted_signature(status) && never_unsigned,
    }))
}

/// Whether a status means the digest has no trusted signature, for the unsigned-push count: a
/// forged or failing signature must not silence the alert, so `UNTRUSTED` counts like
/// `UNSIGNED` (the first of either, once per digest).
fn lacks_trusted_signature(status: SignatureStatus) -> bool {
    matches!(
        status,
        SignatureStatus::Unsigned | SignatureStatus::Untrusted
    )
}

pub(super) async fn apply_scan(
    tx: &mut Transaction<'_, Postgres>,
    write: &ScanWrite,
) -> Result<(), StoreError> {
    let (status, raw) = match &write.facts {
        None => (Some(ScanStatus::NotScanned), None),
        Some(facts) => (
            ScanStatus::from_raw(&facts.raw_status),
            Some(facts.raw_status.clone()),
        ),
    };
    let count = |severity: &str| {
        write
            .facts
            .as_ref()
            .map(|f| f.severity_counts.get(severity).copied().unwrap_or(0))
            .and_then(|n| i32::try_from(n).ok())
    };
    // A raw status this version does not know is kept raw, with the last known status.
    sqlx::query(
        "UPDATE images SET
              scan_status = COALESCE($5, scan_status),
              scan_raw_status = $6,
              scan_critical = $7, scan_high = $8, scan_medium = $9, scan_low = $10,
              scan_checked_at = $11,
              updated_at = now()
          WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4
            AND artifact_of IS NULL
            AND (scan_checked_at IS NULL OR scan_checked_at <= $11)",
    )
    .bind(write.key.account.as_str())
    .bind(write.key.region.as_str())
    .bind(write.key.name.as_str())
    .bind(write.digest.as_str())
    .bind(status.map(ScanStatus::as_str))
    .bind(raw)
    .bind(count("CRITICAL"))
    .bind(count("HIGH"))
    .bind(count("MEDIUM"))
    .bind(count("LOW"))
    .bind(write.checked_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes every current digest whose verdict was reached under another trust configuration
/// version (or before verdicts named one) due for a re-check now; returns how many.
pub(super) async fn requeue_other_policy_versions(
    pool: &sqlx::PgPool,
    version: &str,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO signature_rechecks (account, region, repository, digest, pushed_at, due_at, attempts)
         SELECT account, region, repository, digest, COALESCE(pushed_at, now()), now(), 0
           FROM images
          WHERE present AND artifact_of IS NULL AND signature_status IS NOT NULL
            AND signature_policy_version IS DISTINCT FROM $1
         ON CONFLICT (account, region, repository, digest) DO UPDATE SET
              due_at = LEAST(signature_rechecks.due_at, EXCLUDED.due_at)",
    )
    .bind(version)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(super) async fn claim_due(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<RecheckClaim>, StoreError> {
    let rows: Vec<(String, String, String, String, DateTime<Utc>, i32)> = sqlx::query_as(
        "SELECT account, region, repository, digest, pushed_at, attempts
           FROM signature_rechecks
          WHERE due_at <= now()
          ORDER BY due_at
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(account, region, repository, digest, pushed_at, attempts)| {
                Some(RecheckClaim {
                    key: RepositoryKey {
                        account: crate::domain::AccountId::parse(&account).ok()?,
                        region: crate::domain::Region::parse(&region).ok()?,
                        name: crate::domain::RepositoryName::parse(&repository).ok()?,
                    },
                    digest: Digest::parse(&digest).ok()?,
                    pushed_at,
                    attempts,
                })
            },
        )
        .collect())
}

pub(super) async fn postpone(
    tx: &mut Transaction<'_, Postgres>,
    claim: &RecheckClaim,
    due_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE signature_rechecks SET due_at = $5, attempts = attempts + 1
          WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4",
    )
    .bind(claim.key.account.as_str())
    .bind(claim.key.region.as_str())
    .bind(claim.key.name.as_str())
    .bind(claim.digest.as_str())
    .bind(due_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
