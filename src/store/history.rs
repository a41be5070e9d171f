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

use super::{RepositoryWrite, StoreError};
use crate::evidence::detail::SettingsAtPush;
use crate::facts::RepositoryState;

/// Keeps the tag mutability of a repository write in the history: a requested state always (it
/// held at its time even when a newer one is stored), a read when it was written.
pub(super) async fn record(
    tx: &mut Transaction<'_, Postgres>,
    write: &RepositoryWrite,
    applied: bool,
    changed_by: &str,
) -> Result<Vec<SettingsAtPush>, StoreError> {
    let RepositoryState::Present(settings) = &write.facts.state else {
        return Ok(Vec::new());
    };
    let (Some(mutability), true) = (settings.tag_mutability.known(), write.requested || applied)
    else {
        return Ok(Vec::new());
    };
    let key = &write.key;
    sqlx::query(
        "INSERT INTO tag_mutability_history (account, region, repository, changed_at, mode,
              exclusion_filters, changed_by, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (account, region, repository, changed_at, mode) DO NOTHING",
    )
    .bind(key.account.as_str())
    .bind(key.region.as_str())
    .bind(key.name.as_str())
    .bind(write.facts.observed_at)
    .bind(&mutability.mode)
    .bind(json!(mutability.exclusion_filters))
    .bind(write.requested.then_some(changed_by))
    .bind(if write.requested { "request" } else { "read" })
    .execute(&mut **tx)
    .await?;
    derive(tx, key, None).await
}

/// Re-derives the settings at push of a repository's images (or of one digest) whose settings
/// came from a state with a recorded change between it and the push: they take the last
/// recorded state at or before the push. A read made after the push that merely disagrees with
/// the history is kept: the change it saw may be one whose event has not arrived yet, and that
/// event re-derives the image when it does. Only plain `MUTABLE`/`IMMUTABLE` states are derived
/// (whether a tag is protected under exclusion filters is judged by `evaluate`, not here).
pub(super) async fn derive(
    tx: &mut Transaction<'_, Postgres>,
    key: &crate::domain::RepositoryKey,
    digest: Option<&crate::domain::Digest>,
) -> Result<Vec<SettingsAtPush>, StoreError> {
    Ok(sqlx::query_as(DERIVE_SETTINGS_AT_PUSH)
        .bind(key.account.as_str())
        .bind(key.region.as_str())
        .bind(key.name.as_str())
        .bind(digest.map(crate::domain::Digest::as_str))
        .fetch_all(&mut **tx)
        .await?)
}

/// `$4` = one digest, or `NULL` for every image of the repository.
const DERIVE_SETTINGS_AT_PUSH: &str = "WITH due AS (
    SELECT i.account, i.region, i.repository, i.digest, h.mode, h.changed_at
      FROM images i
      CROSS JOIN LATERAL (
          SELECT mode, exclusion_filters, changed_at FROM tag_mutability_history h
           WHERE h.account = i.account AND h.region = i.region AND h.repository = i.repository
             AND h.changed_at <= i.pushed_at
           ORDER BY h.changed_at DESC, h.id DESC
           LIMIT 1) h
     WHERE i.account = $1 AND i.region = $2 AND i.repository = $3
       AND ($4::text IS NULL OR i.digest = $4)
       AND i.pushed_at IS NOT NULL AND i.settings_observed_at IS NOT NULL
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
 RETURNING i.repository, i.digest, i.tag_immutability, i.tag_protected,
           to_char(i.settings_observed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS state_at";
