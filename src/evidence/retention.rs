//! Retention: dropping an archived prefix of the evidence chain without breaking it.
//!
//! The chain can only lose its oldest records, and only after a checkpoint record on the chain
//! names the last record archived (its seq and hash). The remaining chain then starts at the
//! next seq, whose `prev_hash` is that hash: `verify` starts from the checkpoint's claim and
//! checks the checkpoint record itself when it reaches it. The database enforces the rule
//! (migration `20261123000010`): a `DELETE` on `evidence` fails unless it removes a prefix
//! that the newest checkpoint covers, and `UPDATE`/`TRUNCATE` stay forbidden. The worker's
//! role cannot `DELETE` at all: it retires a prefix through `evidence_retire` (migration
//! `20261203000200`), which refuses a cut-off in the future or younger than the minimum age
//! the owner set in `evidence_settings` (90 days unless changed).

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgPool;

use super::chain::{ChainedRecord, FORMAT_VERSION, hash_canonical, truncate_to_micros};
use super::detail::{ArchivedRange, ChainPoint, CheckpointDetail, to_detail_value};
use super::kind::EvidenceKind;

/// Why retention refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RetentionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The chain's oldest record or the archived record changed since the archive was
    /// written (another archive ran): nothing was dropped.
    #[error(
        "the chain changed since the archive was written (expected the oldest record at seq {expected_first} and seq {last_seq} with the archived hash): nothing was dropped"
    )]
    Moved { expected_first: i64, last_seq: i64 },
    /// A cut-off in the future would archive records still being written about.
    #[error(
        "refused: --before {before} is in the future; retention archives only records older than {min_age_days} days (evidence_settings.retention_min_age)"
    )]
    FutureCutOff { before: String, min_age_days: i64 },
    /// A cut-off younger than the owner's minimum age.
    #[error(
        "refused: --before {before} is newer than the minimum age of {min_age_days} days (evidence_settings.retention_min_age, set by the database owner); give a cut-off before {oldest_allowed}"
    )]
    TooRecent {
        before: String,
        min_age_days: i64,
        oldest_allowed: String,
    },
}

/// Refuses a cut-off in the future or younger than the minimum age, before anything is
/// written; `evidence_retire` checks the same again in the database, which is what holds.
///
/// # Errors
/// [`RetentionError::FutureCutOff`], [`RetentionError::TooRecent`], or a failed query.
pub(crate) async fn check_cut_off(
    pool: &PgPool,
    before: DateTime<Utc>,
) -> Result<(), RetentionError> {
    let (min_age_seconds, now): (i64, DateTime<Utc>) = sqlx::query_as(
        "SELECT extract(epoch FROM retention_min_age)::bigint, now() FROM evidence_settings WHERE id = 1",
    )
    .fetch_one(pool)
    .await?;
    let min_age_days = min_age_seconds / 86_400;
    let show = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if before > now {
        return Err(RetentionError::FutureCutOff {
            before: show(before),
            min_age_days,
        });
    }
    let oldest_allowed = now - chrono::Duration::seconds(min_age_seconds);
    if before > oldest_allowed {
        return Err(RetentionError::TooRecent {
            before: show(before),
            min_age_days,
            oldest_allowed: show(oldest_allowed),
        });
    }
    Ok(())
}

/// The records an archive covers: a prefix of the stored chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivablePrefix {
    pub first_seq: i64,
    pub last_seq: i64,
}

/// What the checkpoint record says about the archive it stands for.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub prefix: ArchivablePrefix,
    /// The hash of the last archived record: where the remaining chain continues from.
    pub last_hash: String,
    /// The cut-off the operator asked for.
    pub before: DateTime<Utc>,
    /// The archive file's name (not its path: the file may move), format and SHA-256.
    pub archive_name: String,
    pub archive_format: String,
    pub archive_sha256: String,
}

/// The longest prefix of the stored chain whose records were all recorded before
/// `before`; `None` when there is nothing to archive.
///
/// A prefix, not "every record older than `before`": `recorded_at` is not strictly
/// increasing along the chain (concurrent batches), and only a prefix can be removed
/// without breaking it.
///
/// # Errors
/// When a query fails.
pub(crate) async fn archivable_prefix(
    pool: &PgPool,
    before: DateTime<Utc>,
) -> Result<Option<ArchivablePrefix>, sqlx::Error> {
    let (first, first_kept): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT min(seq) FROM evidence),
                    (SELECT min(seq) FROM evidence WHERE recorded_at >= $1)",
    )
    .bind(before)
    .fetch_one(pool)
    .await?;
    let Some(first_seq) = first else {
        return Ok(None);
    };
    let last_seq = match first_kept {
        Some(kept) => kept - 1,
        None => {
            sqlx::query_scalar::<_, i64>("SELECT max(seq) FROM evidence")
                .fetch_one(pool)
                .await?
        }
    };
    Ok((last_seq >= first_seq).then_some(ArchivablePrefix {
        first_seq,
        last_seq,
    }))
}

/// Appends the checkpoint record and drops the archived prefix, in one transaction;
/// returns the checkpoint's seq and the number of records dropped.
///
/// # Errors
/// [`RetentionError::Moved`] when the chain's start or the archived record no longer
/// match (nothing is dropped then); database errors.
pub(crate) async fn drop_archived(
    pool: &PgPool,
    checkpoint: &Checkpoint,
) -> Result<(i64, u64), RetentionError> {
    let mut tx = pool.begin().await?;
    let prefix = &checkpoint.prefix;
    let (first, last_hash): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT (SELECT min(seq) FROM evidence), (SELECT hash FROM evidence WHERE seq = $1)",
    )
    .bind(prefix.last_seq)
    .fetch_one(&mut *tx)
    .await?;
    if first != Some(prefix.first_seq) || last_hash.as_deref() != Some(&checkpoint.last_hash) {
        return Err(RetentionError::Moved {
            expected_first: prefix.first_seq,
            last_seq: prefix.last_seq,
        });
    }
    // The checkpoint takes the next place on the chain; the head stays locked until commit.
    let (head_seq, head_hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM evidence_lock_head()")
            .fetch_one(&mut *tx)
            .await?;
    let mut record = checkpoint_record(checkpoint);
    record.seq = head_seq + 1;
    record.prev_hash = head_hash;
    record.format_version = Some(FORMAT_VERSION);
    let canonical = record.canonical();
    // A checkpoint is never worth a page: no alert is queued beside it.
    let dropped: i64 = sqlx::query_scalar("SELECT evidence_retire($1, $2)")
        .bind(&canonical)
        .bind(hash_canonical(&canonical))
        .fetch_one(&mut *tx)
        .await?;
    let checkpoint_seq = record.seq;
    let dropped = u64::try_from(dropped).unwrap_or_default();
    tx.commit().await?;
    Ok((checkpoint_seq, dropped))
}

/// The record that stands for an archived prefix on the chain.
fn checkpoint_record(checkpoint: &Checkpoint) -> ChainedRecord {
    let prefix = &checkpoint.prefix;
    let detail = CheckpointDetail {
        continues_from: ChainPoint {
            seq: prefix.last_seq,
            hash: checkpoint.last_hash.clone(),
        },
        archived: ArchivedRange {
            first_seq: prefix.first_seq,
            last_seq: prefix.last_seq,
            count: prefix.last_seq - prefix.first_seq + 1,
            before: checkpoint
                .before
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            file: checkpoint.archive_name.clone(),
            format: checkpoint.archive_format.clone(),
            sha256: checkpoint.archive_sha256.clone(),
        },
    };
    let now = truncate_to_micros(Utc::now());
    ChainedRecord {
        seq: 0,
        recorded_at: now,
        event_id: format!("checkpoint/{}/{}", prefix.last_seq, checkpoint.last_hash),
        event_time: now,
        kind: EvidenceKind::Checkpoint,
        outcome: "processed".to_owned(),
        account: None,
        region: None,
        repository: None,
        digest: None,
        tag: None,
        actor: None,
        detail: to_detail_value(&detail),
        prev_hash: String::new(),
        format_version: None,
    }
}
