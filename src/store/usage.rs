//! Whether digests run and when they were pulled: Inspector coverage and ECR pull times
//! written onto `images`, with a `usage_transition` evidence record whenever a digest starts or
//! stops being in use.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::{Store, StoreError};
use crate::domain::{AccountId, Digest, Region, RepositoryName};
use crate::evidence::EvidenceKind;
use crate::evidence::chain::{ChainedRecord, truncate_to_micros};
use crate::evidence::detail::{UsageTransitionDetail, to_detail_value};
use crate::evidence::write::{PendingRecord, append};
use crate::facts::CoveredImage;

/// What one coverage write changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// Stored digests the coverage named.
    pub covered: u64,
    /// Digests whose use flipped (each with its evidence record).
    pub flipped: u64,
    /// Digests whose use became unknown because the coverage no longer names them.
    pub forgotten: u64,
}

/// `evidence.detail.source` of a usage transition.
const COVERAGE_SOURCE: &str = "inspector2:ListCoverage";

/// (repository, digest) → stored `in_use`, for the rows the coverage names, locked.
async fn lock_stored(
    tx: &mut Transaction<'_, Postgres>,
    account: &AccountId,
    region: &Region,
    covered: &[CoveredImage],
) -> Result<HashMap<(String, String), Option<bool>>, StoreError> {
    let repositories: Vec<&str> = covered.iter().map(|c| c.repository.as_str()).collect();
    let digests: Vec<&str> = covered.iter().map(|c| c.digest.as_str()).collect();
    // FOR UPDATE: another replica writing the same coverage waits and then sees this answer,
    // so a flip is recorded once.
    let rows: Vec<(String, String, Option<bool>)> = sqlx::query_as(
        "SELECT i.repository, i.digest, i.in_use FROM images i
           JOIN UNNEST($3::text[], $4::text[]) AS c(repository, digest)
             ON i.repository = c.repository AND i.digest = c.digest
          WHERE i.account = $1 AND i.region = $2 AND i.present
          ORDER BY i.repository, i.digest
            FOR UPDATE OF i",
    )
    .bind(account.as_str())
    .bind(region.as_str())
    .bind(&repositories)
    .bind(&digests)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(r, d, u)| ((r, d), u)).collect())
}

/// Writes the coverage onto the digests it names (pull times only move forward).
async fn write_covered(
    tx: &mut Transaction<'_, Postgres>,
    account: &AccountId,
    region: &Region,
    covered: &[CoveredImage],
    observed_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let column = |f: &dyn Fn(&CoveredImage) -> Option<String>| -> Vec<Option<String>> {
        covered.iter().map(f).collect()
    };
    sqlx::query(
        "UPDATE images i
            SET in_use = c.in_use, in_use_count = c.in_use_count,
                last_in_use_at = c.last_in_use_at,
                last_pulled_at = GREATEST(i.last_pulled_at, c.pulled_at),
                coverage_status = c.status, coverage_reason = c.reason,
                usage_observed_at = $11
           FROM UNNEST($3::text[], $4::text[], $5::boolean[], $6::bigint[], $7::timestamptz[],
                       $8::timestamptz[], $9::text[], $10::text[])
                AS c(repository, digest, in_use, in_use_count, last_in_use_at, pulled_at, status, reason)
          WHERE i.account = $1 AND i.region = $2
            AND i.repository = c.repository AND i.digest = c.digest",
    )
    .bind(account.as_str())
    .bind(region.as_str())
    .bind(column(&|c| Some(c.repository.to_string())))
    .bind(column(&|c| Some(c.digest.to_string())))
    .bind(covered.iter().map(CoveredImage::in_use).collect::<Vec<_>>())
    .bind(covered.iter().map(|c| c.in_use_count).collect::<Vec<_>>())
    .bind(covered.iter().map(|c| c.last_in_use_at).collect::<Vec<_>>())
    .bind(covered.iter().map(|c| c.pulled_at).collect::<Vec<_>>())
    .bind(column(&|c| c.status_code.clone()))
    .bind(column(&|c| c.reason.clone()))
    .bind(observed_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The evidence of a digest starting or stopping to be in use.
fn usage_record(
    account: &AccountId,
    region: &Region,
    image: &CoveredImage,
    from: Option<bool>,
    to: bool,
    observed_at: DateTime<Utc>,
) -> ChainedRecord {
    let event_time = truncate_to_micros(observed_at);
    let detail = UsageTransitionDetail {
        from,
        to,
        in_use_count: image.in_use_count,
        last_in_use_at: image.last_in_use_at.map(|t| t.to_rfc3339()),
        source: COVERAGE_SOURCE.to_owned(),
    };
    ChainedRecord {
        seq: 0,
        recorded_at: truncate_to_micros(Utc::now()),
        event_id: format!(
            "usage/{account}/{region}/{}/{}/{}",
            image.repository,
            image.digest,
            event_time.format("%Y-%m-%dT%H:%M:%S%.6fZ")
        ),
        event_time,
        kind: EvidenceKind::UsageTransition,
        outcome: "processed".to_owned(),
        account: Some(account.to_string()),
        region: Some(region.to_string()),
        repository: Some(image.repository.to_string()),
        digest: Some(image.digest.to_string()),
        tag: None,
        actor: None,
        detail: to_detail_value(&detail),
        prev_hash: String::new(),
        format_version: None,
    }
}

/// A flip worth a record: a known answer that differs from the last known one. Unknown → not in
/// use is no news (every digest starts unknown), and an answer going missing is not a flip.
fn flipped(before: Option<bool>, after: Option<bool>) -> Option<bool> {
    let after = after?;
    (before.unwrap_or(false) != after).then_some(after)
}

impl Store {
    /// Writes a registry's coverage as read at `observed_at`: each named digest's use, pull time
    /// and Inspector scan status; digests of the registry it no longer names become unknown
    /// (an empty coverage, as under BASIC scanning, makes them all unknown). A flip of `in_use`
    /// is recorded on the evidence chain in the same transaction.
    ///
    /// # Errors
    /// When a statement fails; nothing is written then.
    pub async fn record_coverage(
        &self,
        account: &AccountId,
        region: &Region,
        covered: &[CoveredImage],
        observed_at: DateTime<Utc>,
    ) -> Result<UsageReport, StoreError> {
        let mut tx = self.pool().begin().await?;
        let stored = lock_stored(&mut tx, account, region, covered).await?;
        write_covered(&mut tx, account, region, covered, observed_at).await?;
        let mut pending = Vec::new();
        for image in covered {
            let key = (image.repository.to_string(), image.digest.to_string());
            let Some(before) = stored.get(&key) else {
                continue;
            };
            if let Some(to) = flipped(*before, image.in_use()) {
                pending.push(PendingRecord {
                    group: pending.len(),
                    is_lead: true,
                    record: usage_record(account, region, image, *before, to, observed_at),
                });
            }
        }
        let flips = pending.len() as u64;
        if !pending.is_empty() {
            append(&mut tx, pending).await?;
        }
        let forgotten = sqlx::query(
            "UPDATE images
                SET in_use = NULL, in_use_count = NULL, coverage_status = NULL,
                    coverage_reason = NULL, usage_observed_at = $3
              WHERE account = $1 AND region = $2 AND present
                AND usage_observed_at < $3",
        )
        .bind(account.as_str())
        .bind(region.as_str())
        .bind(observed_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(UsageReport {
            covered: stored.len() as u64,
            flipped: flips,
            forgotten,
        })
    }

    /// Records ECR's `lastRecordedPullTime` of listed digests (it only moves forward).
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn record_pulls(
        &self,
        account: &AccountId,
        region: &Region,
        pulls: &[(RepositoryName, Digest, DateTime<Utc>)],
    ) -> Result<u64, StoreError> {
        if pulls.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE images i SET last_pulled_at = GREATEST(i.last_pulled_at, p.pulled_at)
               FROM UNNEST($3::text[], $4::text[], $5::timestamptz[]) AS p(repository, digest, pulled_at)
              WHERE i.account = $1 AND i.region = $2
                AND i.repository = p.repository AND i.digest = p.digest
                AND i.last_pulled_at IS DISTINCT FROM GREATEST(i.last_pulled_at, p.pulled_at)",
        )
        .bind(account.as_str())
        .bind(region.as_str())
        .bind(pulls.iter().map(|p| p.0.to_string()).collect::<Vec<_>>())
        .bind(pulls.iter().map(|p| p.1.to_string()).collect::<Vec<_>>())
        .bind(pulls.iter().map(|p| p.2).collect::<Vec<_>>())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// When a registry's coverage was last written (by any replica); `None` when never.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn coverage_read_at(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT max(usage_observed_at) FROM images WHERE account = $1 AND region = $2",
        )
        .bind(account.as_str())
        .bind(region.as_str())
        .fetch_one(self.pool())
        .await?)
    }

    /// Existing images (not artifacts) in use, per signature status.
    ///
    /// # Errors
    /// When the query fails.
    pub(crate) async fn in_use_counts(
        &self,
    ) -> Result<Vec<(crate::domain::SignatureStatus, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT signature_status, count(*) FROM images
              WHERE present AND artifact_of IS NULL AND in_use AND signature_status IS NOT NULL
              GROUP BY signature_status",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((crate::domain::SignatureStatus::from_str_opt(&s)?, n)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::flipped;

    #[test]
    fn only_a_change_of_a_known_answer_is_a_flip() {
        assert_eq!(flipped(None, Some(true)), Some(true));
        assert_eq!(flipped(Some(false), Some(true)), Some(true));
        assert_eq!(flipped(Some(true), Some(false)), Some(false));
        assert_eq!(flipped(None, Some(false)), None);
        assert_eq!(flipped(Some(true), Some(true)), None);
        assert_eq!(flipped(Some(true), None), None);
    }
}
