//! The repository re-read schedule (`repository_rechecks`): repositories whose last applied
//! read lacked a fact because AWS did not answer (an outage) are read again, with a doubling
//! delay, until a complete read is applied. The pipeline claims due rows and plans a synthetic
//! re-read event for each (src/pipeline/rereads.rs).

use sqlx::{PgPool, Postgres, Transaction};

use super::sets::RepositoryColumns;
use super::{RepositoryWrite, StoreError};
use crate::domain::{AccountId, Region, RepositoryKey, RepositoryName};

/// The first re-read comes this soon after the incomplete read (seconds); each later one
/// doubles the delay, up to [`MAX_DELAY_SECONDS`].
const FIRST_DELAY_SECONDS: f64 = 5.0;
/// An outage that lasts is asked about every 10 minutes; the reconcile sweep also reads it.
const MAX_DELAY_SECONDS: f64 = 600.0;

/// Schedules a re-read after each incomplete read, or ends the schedule once a complete read
/// was applied; `writes` are of distinct repositories, each with whether it was applied. An
/// incomplete read that was not applied (a push's read of a stored repository) still schedules
/// one: the stored controls may be the ones that need it.
///
/// # Errors
/// When a statement fails.
pub(super) async fn schedule_or_clear(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[(&RepositoryWrite, bool)],
) -> Result<(), StoreError> {
    let mut due = RepositoryColumns::default();
    let mut done = RepositoryColumns::default();
    for (write, applied) in writes {
        if write.reread {
            due.push(&write.key);
        } else if *applied {
            done.push(&write.key);
        }
    }
    if !due.is_empty() {
        sqlx::query(
            "INSERT INTO repository_rechecks (account, region, repository, due_at)
             SELECT account, region, repository, now() + make_interval(secs => $4)
               FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(account, region, repository)
              ORDER BY account, region, repository
             ON CONFLICT (account, region, repository) DO NOTHING",
        )
        .bind(&due.account)
        .bind(&due.region)
        .bind(&due.repository)
        .bind(FIRST_DELAY_SECONDS)
        .execute(&mut **tx)
        .await?;
    }
    if !done.is_empty() {
        sqlx::query(
            "DELETE FROM repository_rechecks r
              USING UNNEST($1::text[], $2::text[], $3::text[]) AS u(account, region, repository)
              WHERE r.account = u.account AND r.region = u.region AND r.repository = u.repository",
        )
        .bind(&done.account)
        .bind(&done.region)
        .bind(&done.repository)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Claims up to `limit` due re-reads: each row's next attempt is pushed back (doubling) in the
/// same statement, so replicas never claim one twice and a re-read that fails is tried again
/// later without further bookkeeping. Returns the repositories with the claim's attempt number.
///
/// # Errors
/// When the query fails.
pub(super) async fn claim_due(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<(RepositoryKey, i32)>, StoreError> {
    let rows: Vec<(String, String, String, i32)> = sqlx::query_as(
        "UPDATE repository_rechecks r
            SET attempts = r.attempts + 1,
                due_at = now() + make_interval(secs => LEAST($2 * power(2, r.attempts + 1), $3))
          WHERE (r.account, r.region, r.repository) IN (
                SELECT account, region, repository FROM repository_rechecks
                 WHERE due_at <= now()
                 ORDER BY due_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
          RETURNING r.account, r.region, r.repository, r.attempts",
    )
    .bind(limit)
    .bind(FIRST_DELAY_SECONDS)
    .bind(MAX_DELAY_SECONDS)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(account, region, name, attempts)| {
            Some((
                RepositoryKey {
                    account: AccountId::parse(&account).ok()?,
                    region: Region::parse(&region).ok()?,
                    name: RepositoryName::parse(&name).ok()?,
                },
                attempts,
            ))
        })
        .collect())
}
