//! The ordered tag mutability history and the settings at push derived from it.
//!
//! A push's settings are first taken from the repository read made for it, which may come
//! from a per-replica cache older than a change, or from a read made after the change was
//! reverted. Each state ecr-audit learns is kept in `tag_mutability_history`, dated when it
//! held; when a recorded change lies between the push and the state its settings came from,
//! the settings become the last recorded state at or before the push. Events may arrive in any
//! order: each new history row re-derives the images whose push it falls next to.

use serde_json::json;
use sqlx::{Postgres, Transaction};

use super::sets::RepositoryColumns;
use super::{RepositoryWrite, StoreError};
use crate::evidence::detail::SettingsAtPush;
use crate::facts::RepositoryState;

/// A repository write of one batch statement, and who caused it.
pub(super) struct HistoryWrite<'a> {
    pub write: &'a RepositoryWrite,
    pub applied: bool,
    pub changed_by: &'a str,
}

/// Keeps the tag mutability of repository writes (of distinct repositories) in the history: a
/// requested state always (it held at its time even when a newer one is stored), a read when
/// it was written. Returns the settings at push re-derived in the repositories that got a row,
/// with each one's account and region.
pub(super) async fn record(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[HistoryWrite<'_>],
) -> Result<Vec<Derived>, StoreError> {
    let mut keys = RepositoryColumns::default();
    let mut recorded = Vec::new();
    let (mut changed_at, mut mode, mut filters, mut changed_by, mut source) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for HistoryWrite {
        write,
        applied,
        changed_by: by,
    } in writes
    {
        let RepositoryState::Present(settings) = &write.facts.state else {
            continue;
        };
        let (Some(mutability), true) =
            (settings.tag_mutability.known(), write.requested || *applied)
        else {
            continue;
        };
        keys.push(&write.key);
        recorded.push((&write.key, None));
        changed_at.push(write.facts.observed_at);
        mode.push(mutability.mode.clone());
        filters.push(json!(mutability.exclusion_filters));
        changed_by.push(write.requested.then_some(*by));
        source.push(if write.requested { "request" } else { "read" });
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(
        "INSERT INTO tag_mutability_history (account, region, repository, changed_at, mode,
              exclusion_filters, changed_by, source)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                              $6::jsonb[], $7::text[], $8::text[])
         ON CONFLICT (account, region, repository, changed_at, mode) DO NOTHING",
    )
    .bind(&keys.account)
    .bind(&keys.region)
    .bind(&keys.repository)
    .bind(&changed_at)
    .bind(&mode)
    .bind(&filters)
    .bind(&changed_by)
    .bind(&source)
    .execute(&mut **tx)
    .await?;
    derive(tx, &recorded).await
}

/// Settings at push re-derived for an image, and the account and region it lives in.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct Derived {
    pub account: String,
    pub region: String,
    #[sqlx(flatten)]
    pub settings: SettingsAtPush,
}

/// Re-derives the settings at push of the images of each target (a repository's images, or
/// one digest) whose settings came from a state with a recorded change between it and the
/// push: they take the last recorded state at or before the push. A read made after the push
/// that merely disagrees with the history is kept: the change it saw may be one whose event has
/// not arrived yet, and that event re-derives the image when it does. Only plain
/// `MUTABLE`/`IMMUTABLE` states are derived (whether a tag is protected under exclusion filters
/// is judged by `evaluate`, not here).
pub(super) async fn derive(
    tx: &mut Transaction<'_, Postgres>,
    targets: &[(
        &crate::domain::RepositoryKey,
        Option<&crate::domain::Digest>,
    )],
) -> Result<Vec<Derived>, StoreError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys = RepositoryColumns::default();
    let mut digests = Vec::with_capacity(targets.len());
    for (key, digest) in targets {
        keys.push(key);
        digests.push(digest.map(crate::domain::Digest::as_str));
    }
    Ok(sqlx::query_as(DERIVE_SETTINGS_AT_PUSH)
        .bind(&keys.account)
        .bind(&keys.region)
        .bind(&keys.repository)
        .bind(&digests)
        .fetch_all(&mut **tx)
        .await?)
}

/// The targets: a repository with a `NULL` digest means every image of the repository. A
/// digest's target is looked up by the images key, one lookup per target (`OFFSET 0` keeps the
/// planner from flattening the lookup into a join): planned as a join, a table whose
/// statistics lag behind its size was read through its `pushed_at` index and hashed, every
/// image of the table for each batch (docs/PERFORMANCE.md, "Settings at push by key").
const DERIVE_SETTINGS_AT_PUSH: &str = "WITH t AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
           AS t(account, region, repository, digest)),
hit AS (
    SELECT i.* FROM t CROSS JOIN LATERAL (
        SELECT i.account, i.region, i.repository, i.digest, i.pushed_at, i.settings_observed_at
          FROM images i
         WHERE i.account = t.account AND i.region = t.region AND i.repository = t.repository
           AND i.digest = t.digest
        OFFSET 0) i
    UNION ALL
    SELECT i.account, i.region, i.repository, i.digest, i.pushed_at, i.settings_observed_at
      FROM t
      JOIN images i
        ON i.account = t.account AND i.region = t.region AND i.repository = t.repository
     WHERE t.digest IS NULL),
due AS (
    SELECT DISTINCT i.account, i.region, i.repository, i.digest, h.mode, h.changed_at
      FROM hit i
      CROSS JOIN LATERAL (
          SELECT mode, exclusion_filters, changed_at FROM tag_mutability_history h
           WHERE h.account = i.account AND h.region = i.region AND h.repository = i.repository
             AND h.changed_at <= i.pushed_at
           ORDER BY h.changed_at DESC, h.id DESC
           LIMIT 1) h
     WHERE i.pushed_at IS NOT NULL AND i.settings_observed_at IS NOT NULL
       AND i.settings_observed_at <> h.changed_at
       AND h.mode IN ('MUTABLE', 'IMMUTABLE') AND h.exclusion_filters = '[]'::jsonb
       AND EXISTS (
           SELECT 1 FROM tag_mutability_history c
            WHERE c.account = i.account AND c.region = i.region AND c.repository = i.repository
              AND c.changed_at > LEAST(i.settings_observed_at, i.pushed_at)
              AND c.changed_at <= GREATEST(i.settings_observed_at, i.pushed_at)))
UPDATE images AS i
   SET tag_immutability = due.mode,
       tag_protected = CASE WHEN i.push_tag IS NULL THEN NULL ELSE due.mode = 'IMMUTABLE' END,
       settings_observed_at = due.changed_at,
       updated_at = now()
  FROM due
 WHERE i.account = due.account AND i.region = due.region AND i.repository = due.repository
   AND i.digest = due.digest
 RETURNING i.account, i.region, i.repository, i.digest, i.tag_immutability, i.tag_protected,
           to_char(i.settings_observed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS state_at";
