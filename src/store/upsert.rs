//! The set-based upserts of repository and image rows: one statement writes the rows of many
//! plans, each under the same versioned guards as when it was written alone.
//!
//! A flag that only steers the update (`moves`, `classifies`, `requested`, `only_if_new`) or a
//! value whose absence means "keep" is not a column of the inserted row, so the update reads it
//! from the statement's input rows (`u`) by the conflicting row's key.

use std::collections::HashSet;

use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};

use super::sets::{DigestColumns, RepositoryColumns, RepositoryRowKey, digest_row_key, rounds};
use super::{ImagePresence, ImageWrite, RepositoryWrite, StoreError};
use crate::facts::{Fact, ImageLookup, RepositoryState};

/// A repository's presence and settings as a read found them.
fn presence_and_settings(
    state: &RepositoryState,
) -> (Option<bool>, Option<&crate::facts::RepositorySettings>) {
    match state {
        RepositoryState::Present(settings) => (Some(true), Some(settings)),
        // A public repository has none of the private settings columns (ECR.4 only).
        RepositoryState::Public(_) => (Some(true), None),
        RepositoryState::Absent => (Some(false), None),
        RepositoryState::Unreadable { .. } => (None, None),
    }
}

/// The input of one repository-row statement, column by column.
#[derive(Default)]
struct RepositoryRows {
    keys: RepositoryColumns,
    arn: Vec<String>,
    present: Vec<Option<bool>>,
    tag_mutability: Vec<Option<String>>,
    exclusions: Vec<Option<Value>>,
    scan_frequency: Vec<Option<String>>,
    scan_on_push: Vec<Option<bool>>,
    lifecycle_policy: Vec<Option<bool>>,
    encryption_type: Vec<Option<String>>,
    kms_key: Vec<Option<String>>,
    kms_key_manager: Vec<Option<String>>,
    facts: Vec<Value>,
    observed_at: Vec<chrono::DateTime<chrono::Utc>>,
    only_if_new: Vec<bool>,
    requested: Vec<bool>,
}

impl RepositoryRows {
    fn push(&mut self, write: &RepositoryWrite) {
        let facts = &write.facts;
        let (present, settings) = presence_and_settings(&facts.state);
        let mutability = settings.and_then(|s| s.tag_mutability.known());
        let scanning = write.scanning.as_ref().filter(|_| settings.is_some());
        let encryption = settings.and_then(|s| s.encryption.known());
        self.keys.push(&write.key);
        self.arn
            .push(settings.map_or_else(|| write.key.arn(), |s| s.arn.clone()));
        self.present.push(present);
        self.tag_mutability.push(mutability.map(|m| m.mode.clone()));
        self.exclusions
            .push(mutability.map(|m| json!(m.exclusion_filters)));
        self.scan_frequency
            .push(scanning.map(|s| s.scan_frequency.clone()));
        self.scan_on_push.push(scanning.map(|s| s.scan_on_push));
        self.lifecycle_policy
            .push(settings.and_then(|s| s.lifecycle_policy.known().copied()));
        self.encryption_type
            .push(encryption.map(|e| e.encryption_type.clone()));
        self.kms_key
            .push(encryption.and_then(|e| e.kms_key.clone()));
        self.kms_key_manager.push(
            encryption
                .and_then(|e| e.key_manager.as_ref())
                .and_then(Fact::known)
                .cloned(),
        );
        self.facts
            .push(serde_json::to_value(facts).unwrap_or(Value::Null));
        self.observed_at.push(facts.observed_at);
        self.only_if_new.push(write.only_if_new);
        self.requested.push(write.requested);
    }
}

/// Writes each repository row unless the same read or a newer one is already stored (a push
/// served from the cache carries the stored read: rewriting it would be wasted work); the
/// writes are of distinct repositories. Returns the repositories written.
pub(super) async fn upsert_repositories(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[&RepositoryWrite],
) -> Result<HashSet<RepositoryRowKey>, StoreError> {
    if writes.is_empty() {
        return Ok(HashSet::new());
    }
    let mut rows = RepositoryRows::default();
    for write in writes {
        rows.push(write);
    }
    let written: Vec<RepositoryRowKey> = sqlx::query_as(UPSERT_REPOSITORIES)
        .bind(&rows.keys.account)
        .bind(&rows.keys.region)
        .bind(&rows.keys.repository)
        .bind(&rows.arn)
        .bind(&rows.present)
        .bind(&rows.tag_mutability)
        .bind(&rows.exclusions)
        .bind(&rows.scan_frequency)
        .bind(&rows.scan_on_push)
        .bind(&rows.lifecycle_policy)
        .bind(&rows.encryption_type)
        .bind(&rows.kms_key)
        .bind(&rows.kms_key_manager)
        .bind(&rows.facts)
        .bind(&rows.observed_at)
        .bind(&rows.only_if_new)
        .bind(&rows.requested)
        .fetch_all(&mut **tx)
        .await?;
    Ok(written.into_iter().collect())
}

/// `present` and the exclusion filters keep the stored value when the read has none; the
/// stored read is replaced only by a newer one (or by the same one when it was requested), and
/// never when the write is `only_if_new`.
const UPSERT_REPOSITORIES: &str = "WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[],
                         $7::jsonb[], $8::text[], $9::bool[], $10::bool[], $11::text[],
                         $12::text[], $13::text[], $14::jsonb[], $15::timestamptz[], $16::bool[],
                         $17::bool[])
           AS u(account, region, name, arn, present, tag_mutability, exclusions, scan_frequency,
                scan_on_push, lifecycle_policy, encryption_type, kms_key, kms_key_manager, facts,
                observed_at, only_if_new, requested))
INSERT INTO repositories AS r (account, region, name, arn, present, tag_mutability,
      tag_mutability_exclusions, scan_frequency, scan_on_push, lifecycle_policy,
      encryption_type, kms_key, kms_key_manager, facts, observed_at)
SELECT account, region, name, arn, COALESCE(present, true), tag_mutability,
       COALESCE(exclusions, '[]'::jsonb), scan_frequency, scan_on_push, lifecycle_policy,
       encryption_type, kms_key, kms_key_manager, facts, observed_at
  FROM u
 ORDER BY account, region, name
ON CONFLICT (account, region, name) DO UPDATE SET
      arn = EXCLUDED.arn,
      present = COALESCE((SELECT u.present FROM u WHERE u.account = EXCLUDED.account
                             AND u.region = EXCLUDED.region AND u.name = EXCLUDED.name),
                         r.present),
      tag_mutability = COALESCE(EXCLUDED.tag_mutability, r.tag_mutability),
      tag_mutability_exclusions = COALESCE((SELECT u.exclusions FROM u WHERE u.account = EXCLUDED.account
                                               AND u.region = EXCLUDED.region AND u.name = EXCLUDED.name),
                                           r.tag_mutability_exclusions),
      scan_frequency = COALESCE(EXCLUDED.scan_frequency, r.scan_frequency),
      scan_on_push = COALESCE(EXCLUDED.scan_on_push, r.scan_on_push),
      lifecycle_policy = COALESCE(EXCLUDED.lifecycle_policy, r.lifecycle_policy),
      encryption_type = COALESCE(EXCLUDED.encryption_type, r.encryption_type),
      kms_key = CASE WHEN EXCLUDED.encryption_type IS NULL THEN r.kms_key ELSE EXCLUDED.kms_key END,
      kms_key_manager = CASE WHEN EXCLUDED.encryption_type IS NULL THEN r.kms_key_manager
                             ELSE EXCLUDED.kms_key_manager END,
      facts = EXCLUDED.facts,
      observed_at = EXCLUDED.observed_at,
      updated_at = now()
 WHERE (r.observed_at < EXCLUDED.observed_at
        OR ((SELECT u.requested FROM u WHERE u.account = EXCLUDED.account
                AND u.region = EXCLUDED.region AND u.name = EXCLUDED.name)
            AND r.observed_at = EXCLUDED.observed_at))
   AND NOT (SELECT u.only_if_new FROM u WHERE u.account = EXCLUDED.account
               AND u.region = EXCLUDED.region AND u.name = EXCLUDED.name)
RETURNING r.account, r.region, r.name";

/// One image row, with every guard of a versioned write: presence moves only with a newer
/// push or delete, tags only with a newer read, the earliest pusher wins unless its record is
/// older than ECR's push time (`$30`, see `plan::PUSH_RECORD_SKEW`), the settings at push are
/// written once, and what the digest is (artifact or image) is what the latest read of it
/// says (`classifies`): a classification is never carried over from an earlier read.
const UPSERT_IMAGES: &str = "WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                         $6::timestamptz[], $7::jsonb[], $8::timestamptz[], $9::text[],
                         $10::timestamptz[], $11::text[], $12::text[], $13::text[], $14::text[],
                         $15::text[], $16::bigint[], $17::text[], $18::text[], $19::bool[],
                         $20::text[], $21::text[], $22::bool[], $23::bool[], $24::timestamptz[],
                         $25::text[], $26::bool[], $27::timestamptz[], $28::text[], $29::text[])
           AS u(account, region, repository, digest, present, state_changed_at, tags,
                tags_observed_at, push_tag, pushed_at, pushed_by, pushed_by_type,
                manifest_media_type, artifact_media_type, artifact_of, size_bytes, storage_class,
                tag_immutability, tag_protected, encryption_type, kms_key, kms_customer_managed,
                moves, pushed_by_at, artifact_kind, classifies, settings_observed_at,
                deleted_reason, deleted_by))
INSERT INTO images AS i (account, region, repository, digest, present, state_changed_at,
              tags, tags_observed_at, push_tag, pushed_at, pushed_by, pushed_by_type, pushed_by_at,
              manifest_media_type, artifact_media_type, artifact_of, size_bytes, storage_class,
              tag_immutability, tag_protected, encryption_type, kms_key, kms_customer_managed, artifact_kind,
              settings_observed_at, deleted_reason, deleted_by)
SELECT account, region, repository, digest, present, state_changed_at,
       ARRAY(SELECT jsonb_array_elements_text(u.tags)), tags_observed_at, push_tag, pushed_at,
       pushed_by, pushed_by_type, pushed_by_at, manifest_media_type, artifact_media_type,
       artifact_of, size_bytes, storage_class, tag_immutability, tag_protected, encryption_type,
       kms_key, kms_customer_managed, artifact_kind, settings_observed_at, deleted_reason,
       deleted_by
  FROM u
 ORDER BY account, region, repository, digest
ON CONFLICT (account, region, repository, digest) DO UPDATE SET
              present = CASE WHEN (SELECT u.moves FROM u WHERE u.account = EXCLUDED.account AND u.region = EXCLUDED.region
                   AND u.repository = EXCLUDED.repository AND u.digest = EXCLUDED.digest) AND EXCLUDED.state_changed_at >= i.state_changed_at
                             THEN EXCLUDED.present ELSE i.present END,
              state_changed_at = CASE WHEN (SELECT u.moves FROM u WHERE u.account = EXCLUDED.account AND u.region = EXCLUDED.region
                   AND u.repository = EXCLUDED.repository AND u.digest = EXCLUDED.digest) THEN GREATEST(i.state_changed_at, EXCLUDED.state_changed_at)
                                      ELSE i.state_changed_at END,
              tags = CASE WHEN EXCLUDED.tags_observed_at IS NOT NULL
                               AND (i.tags_observed_at IS NULL OR EXCLUDED.tags_observed_at >= i.tags_observed_at)
                          THEN EXCLUDED.tags ELSE i.tags END,
              tags_observed_at = GREATEST(i.tags_observed_at, EXCLUDED.tags_observed_at),
              push_tag = COALESCE(i.push_tag, EXCLUDED.push_tag),
              pushed_at = COALESCE(i.pushed_at, EXCLUDED.pushed_at),
              pushed_by = CASE WHEN (i.pushed_by_at IS NULL OR EXCLUDED.pushed_by_at < i.pushed_by_at)
                                    AND (i.pushed_at IS NULL OR EXCLUDED.pushed_by_at >= i.pushed_at - $30::interval)
                               THEN COALESCE(EXCLUDED.pushed_by, i.pushed_by) ELSE i.pushed_by END,
              pushed_by_type = CASE WHEN (i.pushed_by_at IS NULL OR EXCLUDED.pushed_by_at < i.pushed_by_at)
                                         AND (i.pushed_at IS NULL OR EXCLUDED.pushed_by_at >= i.pushed_at - $30::interval)
                                    THEN COALESCE(EXCLUDED.pushed_by_type, i.pushed_by_type) ELSE i.pushed_by_type END,
              pushed_by_at = CASE WHEN (i.pushed_at IS NULL OR EXCLUDED.pushed_by_at >= i.pushed_at - $30::interval)
                                  THEN LEAST(i.pushed_by_at, EXCLUDED.pushed_by_at) ELSE i.pushed_by_at END,
              manifest_media_type = COALESCE(EXCLUDED.manifest_media_type, i.manifest_media_type),
              artifact_media_type = COALESCE(EXCLUDED.artifact_media_type, i.artifact_media_type),
              artifact_of = CASE WHEN (SELECT u.classifies FROM u WHERE u.account = EXCLUDED.account AND u.region = EXCLUDED.region
                   AND u.repository = EXCLUDED.repository AND u.digest = EXCLUDED.digest) THEN EXCLUDED.artifact_of ELSE i.artifact_of END,
              artifact_kind = CASE WHEN (SELECT u.classifies FROM u WHERE u.account = EXCLUDED.account AND u.region = EXCLUDED.region
                   AND u.repository = EXCLUDED.repository AND u.digest = EXCLUDED.digest) THEN EXCLUDED.artifact_kind ELSE i.artifact_kind END,
              size_bytes = COALESCE(EXCLUDED.size_bytes, i.size_bytes),
              storage_class = COALESCE(EXCLUDED.storage_class, i.storage_class),
              settings_observed_at = CASE WHEN i.tag_immutability IS NULL
                                          THEN EXCLUDED.settings_observed_at
                                          ELSE i.settings_observed_at END,
              tag_immutability = COALESCE(i.tag_immutability, EXCLUDED.tag_immutability),
              tag_protected = COALESCE(i.tag_protected, EXCLUDED.tag_protected),
              encryption_type = COALESCE(i.encryption_type, EXCLUDED.encryption_type),
              kms_key = COALESCE(i.kms_key, EXCLUDED.kms_key),
              kms_customer_managed = COALESCE(i.kms_customer_managed, EXCLUDED.kms_customer_managed),
              deleted_reason = CASE WHEN NOT (SELECT u.moves FROM u WHERE u.account = EXCLUDED.account AND u.region = EXCLUDED.region
                   AND u.repository = EXCLUDED.repository AND u.digest = EXCLUDED.digest) THEN i.deleted_reason
                                    WHEN EXCLUDED.state_changed_at >= i.state_changed_at AND (EXCLUDED.present OR i.present)
                                    THEN EXCLUDED.deleted_reason
                                    WHEN NOT EXCLUDED.present AND NOT i.present
                                    THEN COALESCE(i.deleted_reason, EXCLUDED.deleted_reason)
                                    ELSE i.deleted_reason END,
              deleted_by = CASE WHEN NOT (SELECT u.moves FROM u WHERE u.account = EXCLUDED.account AND u.region = EXCLUDED.region
                   AND u.repository = EXCLUDED.repository AND u.digest = EXCLUDED.digest) THEN i.deleted_by
                                WHEN EXCLUDED.state_changed_at >= i.state_changed_at AND (EXCLUDED.present OR i.present)
                                THEN EXCLUDED.deleted_by
                                WHEN NOT EXCLUDED.present AND NOT i.present AND i.deleted_reason IS NULL
                                THEN EXCLUDED.deleted_by
                                ELSE i.deleted_by END,
              updated_at = now()";

/// [`crate::plan::PUSH_RECORD_SKEW`] as a Postgres interval.
fn push_record_skew() -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: crate::plan::PUSH_RECORD_SKEW
            .num_microseconds()
            .unwrap_or(i64::MAX),
    }
}

/// The input of one image-row statement, column by column.
#[derive(Default)]
struct ImageRows {
    keys: DigestColumns,
    present: Vec<bool>,
    state_changed_at: Vec<chrono::DateTime<chrono::Utc>>,
    tags: Vec<Option<Value>>,
    tags_observed_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    push_tag: Vec<Option<String>>,
    pushed_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    pushed_by: Vec<Option<String>>,
    pushed_by_type: Vec<Option<String>>,
    manifest_media_type: Vec<Option<String>>,
    artifact_media_type: Vec<Option<String>>,
    artifact_of: Vec<Option<String>>,
    size_bytes: Vec<Option<i64>>,
    storage_class: Vec<Option<String>>,
    tag_immutability: Vec<Option<String>>,
    tag_protected: Vec<Option<bool>>,
    encryption_type: Vec<Option<String>>,
    kms_key: Vec<Option<String>>,
    kms_customer_managed: Vec<Option<bool>>,
    moves: Vec<bool>,
    pushed_by_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    artifact_kind: Vec<Option<&'static str>>,
    classifies: Vec<bool>,
    settings_observed_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    deleted_reason: Vec<Option<String>>,
    deleted_by: Vec<Option<String>>,
}

impl ImageRows {
    fn push(&mut self, image: &ImageWrite) {
        let found = match &image.lookup {
            Some((observed_at, ImageLookup::Found(facts))) => Some((*observed_at, facts)),
            _ => None,
        };
        let settings = image.settings.as_ref();
        self.keys.push(&image.key, &image.digest);
        self.present.push(image.presence != ImagePresence::Deleted);
        self.state_changed_at.push(image.event_time);
        self.tags.push(found.map(|(_, f)| json!(f.tags)));
        self.tags_observed_at.push(found.map(|(at, _)| at));
        self.push_tag.push(image.push_tag.clone());
        self.pushed_at.push(
            found
                .and_then(|(_, f)| f.pushed_at)
                .or((image.presence == ImagePresence::Pushed).then_some(image.event_time)),
        );
        self.pushed_by
            .push(image.pushed_by.as_ref().map(|a| a.arn.clone()));
        self.pushed_by_type.push(
            image
                .pushed_by
                .as_ref()
                .and_then(|a| a.identity_type.clone()),
        );
        self.manifest_media_type
            .push(found.and_then(|(_, f)| f.manifest_media_type.clone()));
        self.artifact_media_type
            .push(found.and_then(|(_, f)| f.artifact_media_type.clone()));
        self.artifact_of.push(
            image
                .artifact
                .as_ref()
                .map(|(subject, _)| subject.to_string()),
        );
        self.size_bytes.push(found.and_then(|(_, f)| f.size_bytes));
        self.storage_class.push(image.storage_class.clone());
        self.tag_immutability
            .push(settings.and_then(|s| s.tag_immutability.clone()));
        self.tag_protected
            .push(settings.and_then(|s| s.tag_protected));
        self.encryption_type
            .push(settings.and_then(|s| s.encryption_type.clone()));
        self.kms_key.push(settings.and_then(|s| s.kms_key.clone()));
        self.kms_customer_managed
            .push(settings.and_then(|s| s.customer_managed_key));
        self.moves.push(image.presence != ImagePresence::Unchanged);
        self.pushed_by_at
            .push(image.pushed_by.as_ref().map(|_| image.event_time));
        self.artifact_kind
            .push(image.artifact.as_ref().map(|(_, kind)| kind.as_str()));
        // Only a push's full read classifies the digest (`plan::plan_present_image`); a
        // storage-class change or an unconfirmed delete reads the digest but leaves its class.
        self.classifies
            .push(found.is_some() && image.presence == ImagePresence::Pushed);
        self.settings_observed_at.push(image.settings_observed_at);
        self.deleted_reason
            .push(image.removal.as_ref().map(|note| note.reason.clone()));
        self.deleted_by
            .push(image.removal.as_ref().and_then(|note| note.cause.clone()));
    }
}

/// Writes image rows in order, one statement per round of distinct digests.
pub(super) async fn upsert_images(
    tx: &mut Transaction<'_, Postgres>,
    images: &[&ImageWrite],
) -> Result<(), StoreError> {
    for round in rounds(images.to_vec(), |i| digest_row_key(&i.key, &i.digest)) {
        let mut rows = ImageRows::default();
        for image in round {
            rows.push(image);
        }
        sqlx::query(UPSERT_IMAGES)
            .bind(&rows.keys.repository.account)
            .bind(&rows.keys.repository.region)
            .bind(&rows.keys.repository.repository)
            .bind(&rows.keys.digest)
            .bind(&rows.present)
            .bind(&rows.state_changed_at)
            .bind(&rows.tags)
            .bind(&rows.tags_observed_at)
            .bind(&rows.push_tag)
            .bind(&rows.pushed_at)
            .bind(&rows.pushed_by)
            .bind(&rows.pushed_by_type)
            .bind(&rows.manifest_media_type)
            .bind(&rows.artifact_media_type)
            .bind(&rows.artifact_of)
            .bind(&rows.size_bytes)
            .bind(&rows.storage_class)
            .bind(&rows.tag_immutability)
            .bind(&rows.tag_protected)
            .bind(&rows.encryption_type)
            .bind(&rows.kms_key)
            .bind(&rows.kms_customer_managed)
            .bind(&rows.moves)
            .bind(&rows.pushed_by_at)
            .bind(&rows.artifact_kind)
            .bind(&rows.classifies)
            .bind(&rows.settings_observed_at)
            .bind(&rows.deleted_reason)
            .bind(&rows.deleted_by)
            .bind(push_record_skew())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
