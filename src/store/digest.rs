//! Per-digest signature and scan state, and the signature re-check queue.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Postgres, Transaction};

use super::sets::{DigestColumns, DigestRowKey, digest_row_key, rounds};
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

/// A digest's stored signature status, whether it was never UNSIGNED, its last check time
/// and whether it is an artifact.
#[derive(sqlx::FromRow)]
struct SignatureRow {
    account: String,
    region: String,
    repository: String,
    digest: String,
    status: Option<String>,
    never_unsigned: bool,
    checked_at: Option<DateTime<Utc>>,
    is_artifact: bool,
}

/// Locks the re-check rows of `writes` in key order. Lock order, shared with the re-check
/// path: a digest's re-check row before its image row. Re-checks claim their rows first and
/// then update the image; taking the image row first here would let the two wait on each other.
pub(super) async fn lock_rechecks(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[&SignatureWrite],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let keys: DigestColumns = writes.iter().map(|w| (&w.key, &w.digest)).collect();
    sqlx::query(
        "SELECT 1 FROM signature_rechecks r
           JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(account, region, repository, digest)
             ON r.account = u.account AND r.region = u.region AND r.repository = u.repository
            AND r.digest = u.digest
          ORDER BY r.account, r.region, r.repository, r.digest
          FOR UPDATE OF r",
    )
    .bind(&keys.repository.account)
    .bind(&keys.repository.region)
    .bind(&keys.repository.repository)
    .bind(&keys.digest)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The digests' next signature re-checks: due at `write.next_check`, or none any more.
async fn schedule_rechecks(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[&SignatureWrite],
    from_recheck: bool,
) -> Result<(), StoreError> {
    let mut due = DigestColumns::default();
    let (mut pushed_at, mut due_at) = (Vec::new(), Vec::new());
    let mut done = DigestColumns::default();
    for write in writes {
        match write.next_check {
            Some(at) => {
                due.push(&write.key, &write.digest);
                pushed_at.push(write.pushed_at);
                due_at.push(at);
            }
            None => done.push(&write.key, &write.digest),
        }
    }
    if !due.is_empty() {
        sqlx::query(
            "INSERT INTO signature_rechecks (account, region, repository, digest, pushed_at, due_at, attempts)
             SELECT account, region, repository, digest, pushed_at, due_at, $7
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[])
                    AS u(account, region, repository, digest, pushed_at, due_at)
              ORDER BY account, region, repository, digest
             ON CONFLICT (account, region, repository, digest) DO UPDATE SET
                  due_at = EXCLUDED.due_at,
                  attempts = signature_rechecks.attempts + EXCLUDED.attempts",
        )
        .bind(&due.repository.account)
        .bind(&due.repository.region)
        .bind(&due.repository.repository)
        .bind(&due.digest)
        .bind(&pushed_at)
        .bind(&due_at)
        .bind(i32::from(from_recheck))
        .execute(&mut **tx)
        .await?;
    }
    if !done.is_empty() {
        sqlx::query(
            "DELETE FROM signature_rechecks r
              USING UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(account, region, repository, digest)
              WHERE r.account = u.account AND r.region = u.region AND r.repository = u.repository
                AND r.digest = u.digest",
        )
        .bind(&done.repository.account)
        .bind(&done.repository.region)
        .bind(&done.repository.repository)
        .bind(&done.digest)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Applies signature verdicts, in order: each unless a newer check is stored or the digest is
/// an artifact or unknown. Returns, for each write, the status change it made, if any.
pub(super) async fn apply_signatures(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[&SignatureWrite],
    from_recheck: bool,
) -> Result<Vec<Option<SignatureChange>>, StoreError> {
    let mut changes = vec![None; writes.len()];
    let indexed: Vec<(usize, &SignatureWrite)> = writes.iter().copied().enumerate().collect();
    for round in rounds(indexed, |(_, w)| digest_row_key(&w.key, &w.digest)) {
        let round_writes: Vec<&SignatureWrite> = round.iter().map(|(_, w)| *w).collect();
        let found = apply_signature_round(tx, &round_writes, from_recheck).await?;
        for ((index, _), change) in round.into_iter().zip(found) {
            changes[index] = change;
        }
    }
    Ok(changes)
}

/// [`apply_signatures`] for writes of distinct digests: one read of the rows (locked in key
/// order), one update, one re-check schedule.
async fn apply_signature_round(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[&SignatureWrite],
    from_recheck: bool,
) -> Result<Vec<Option<SignatureChange>>, StoreError> {
    let keys: DigestColumns = writes.iter().map(|w| (&w.key, &w.digest)).collect();
    let rows: Vec<SignatureRow> =
        sqlx::query_as(
            "SELECT i.account, i.region, i.repository, i.digest, i.signature_status AS status,
                    i.first_unsigned_at IS NULL AS never_unsigned,
                    i.signature_checked_at AS checked_at, i.artifact_of IS NOT NULL AS is_artifact
               FROM images i
               JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(account, region, repository, digest)
                 ON i.account = u.account AND i.region = u.region AND i.repository = u.repository
                AND i.digest = u.digest
              ORDER BY i.account, i.region, i.repository, i.digest
              FOR UPDATE OF i",
        )
        .bind(&keys.repository.account)
        .bind(&keys.repository.region)
        .bind(&keys.repository.repository)
        .bind(&keys.digest)
        .fetch_all(&mut **tx)
        .await?;
    let stored: HashMap<DigestRowKey, SignatureRow> = rows
        .into_iter()
        .map(|row| {
            let key = (
                row.account.clone(),
                row.region.clone(),
                row.repository.clone(),
                row.digest.clone(),
            );
            (key, row)
        })
        .collect();
    let mut applied = Vec::new();
    let mut changes = Vec::with_capacity(writes.len());
    for write in writes {
        let row = stored.get(&digest_row_key(&write.key, &write.digest));
        match row.and_then(|row| signature_change(row, write)) {
            Some(change) => {
                applied.push(*write);
                changes.push(change);
            }
            None => changes.push(None),
        }
    }
    if !applied.is_empty() {
        update_signatures(tx, &applied).await?;
        schedule_rechecks(tx, &applied, from_recheck).await?;
    }
    Ok(changes)
}

/// Whether `write` applies over the stored `row` (`None`: it does not), and the status change
/// it makes (`Some(None)`: it applies without changing the status).
fn signature_change(row: &SignatureRow, write: &SignatureWrite) -> Option<Option<SignatureChange>> {
    // The image's own push event creates the row and evaluates it; artifacts take no status.
    if row.is_artifact || row.checked_at.is_some_and(|at| at > write.checked_at) {
        return None;
    }
    let status = write.verdict.status;
    let from = row
        .status
        .as_deref()
        .and_then(SignatureStatus::from_str_opt);
    if from == Some(status) {
        return Some(None);
    }
    Some(Some(SignatureChange {
        from,
        to: status,
        first_unsigned: lacks_trusted_signature(status) && row.never_unsigned,
    }))
}

/// Writes the verdicts of distinct digests in one statement.
async fn update_signatures(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[&SignatureWrite],
) -> Result<(), StoreError> {
    let mut keys = DigestColumns::default();
    let (mut status, mut sources, mut reason, mut checked_at, mut verifications, mut policy) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for write in writes {
        keys.push(&write.key, &write.digest);
        status.push(write.verdict.status.as_str());
        sources.push(json!(write.verdict.sources));
        reason.push(write.verdict.reason.as_str());
        checked_at.push(write.checked_at);
        verifications.push(json!(write.verdict.verifications));
        policy.push(write.verdict.policy_version.as_deref());
    }
    sqlx::query(
        "UPDATE images i SET
              signature_status = u.status,
              signature_sources = u.sources,
              signature_reason = u.reason,
              signature_checked_at = u.checked_at,
              signature_verifications = u.verifications,
              signature_policy_version = u.policy_version,
              signed_at = CASE WHEN u.status = 'SIGNED' THEN COALESCE(i.signed_at, u.checked_at)
                               ELSE i.signed_at END,
              first_unsigned_at = CASE WHEN u.status IN ('UNSIGNED', 'UNTRUSTED')
                                       THEN COALESCE(i.first_unsigned_at, u.checked_at)
                                       ELSE i.first_unsigned_at END,
              updated_at = now()
          FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                      $7::text[], $8::timestamptz[], $9::jsonb[], $10::text[])
               AS u(account, region, repository, digest, status, sources, reason, checked_at,
                    verifications, policy_version)
         WHERE i.account = u.account AND i.region = u.region AND i.repository = u.repository
           AND i.digest = u.digest",
    )
    .bind(&keys.repository.account)
    .bind(&keys.repository.region)
    .bind(&keys.repository.repository)
    .bind(&keys.digest)
    .bind(&status)
    .bind(&sources)
    .bind(&reason)
    .bind(&checked_at)
    .bind(&verifications)
    .bind(&policy)
    .execute(&mut **tx)
    .await?;
    Ok(())
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

/// Writes scan results, in order, each unless a newer one is stored or the digest is an
/// artifact; one statement per round of distinct digests.
pub(super) async fn apply_scans(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[&ScanWrite],
) -> Result<(), StoreError> {
    for round in rounds(writes.to_vec(), |w| digest_row_key(&w.key, &w.digest)) {
        apply_scan_round(tx, &round).await?;
    }
    Ok(())
}

async fn apply_scan_round(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[&ScanWrite],
) -> Result<(), StoreError> {
    let mut keys = DigestColumns::default();
    let (mut status, mut raw, mut checked_at) = (Vec::new(), Vec::new(), Vec::new());
    let mut counts: [Vec<Option<i32>>; 4] = Default::default();
    for write in writes {
        keys.push(&write.key, &write.digest);
        let (known, raw_status) = match &write.facts {
            None => (Some(ScanStatus::NotScanned), None),
            Some(facts) => (
                ScanStatus::from_raw(&facts.raw_status),
                Some(facts.raw_status.clone()),
            ),
        };
        status.push(known.map(ScanStatus::as_str));
        raw.push(raw_status);
        checked_at.push(write.checked_at);
        for (column, severity) in counts.iter_mut().zip(["CRITICAL", "HIGH", "MEDIUM", "LOW"]) {
            column.push(
                write
                    .facts
                    .as_ref()
                    .map(|f| f.severity_counts.get(severity).copied().unwrap_or(0))
                    .and_then(|n| i32::try_from(n).ok()),
            );
        }
    }
    // A raw status this version does not know is kept raw, with the last known status.
    sqlx::query(
        "UPDATE images i SET
              scan_status = COALESCE(u.status, i.scan_status),
              scan_raw_status = u.raw,
              scan_critical = u.critical, scan_high = u.high, scan_medium = u.medium,
              scan_low = u.low,
              scan_checked_at = u.checked_at,
              updated_at = now()
          FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                      $7::int[], $8::int[], $9::int[], $10::int[], $11::timestamptz[])
               AS u(account, region, repository, digest, status, raw, critical, high, medium,
                    low, checked_at)
         WHERE i.account = u.account AND i.region = u.region AND i.repository = u.repository
           AND i.digest = u.digest
           AND i.artifact_of IS NULL
           AND (i.scan_checked_at IS NULL OR i.scan_checked_at <= u.checked_at)",
    )
    .bind(&keys.repository.account)
    .bind(&keys.repository.region)
    .bind(&keys.repository.repository)
    .bind(&keys.digest)
    .bind(&status)
    .bind(&raw)
    .bind(&counts[0])
    .bind(&counts[1])
    .bind(&counts[2])
    .bind(&counts[3])
    .bind(&checked_at)
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
