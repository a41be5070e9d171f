//! Exceptions in Postgres (docs/EXCEPTIONS.md): adding, revoking, listing, the worker's
//! settling of ended exceptions (expiry, revocation → the findings re-open and alert), the
//! exceptions file's synchronisation, and marking control transitions that fail under one.
//!
//! Every change is an `exception_changed` evidence record appended in the transaction that
//! makes it; a re-opened finding's record gets its alert row there too.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{PgConnection, Postgres, Transaction};

use super::{Store, StoreError};
use crate::alerts::outbox::{alert_kind, enqueue_all};
use crate::evaluate::exception::{ExceptionSource, LoadedFile, RepositoryPattern, ValidException};
use crate::evidence::ChainedRecord;
use crate::evidence::chain::truncate_to_micros;
use crate::evidence::detail::{
    ControlTransitionDetail, ExceptionAction, ExceptionDetail, ExceptionFileNote, ExceptionNote,
    to_detail_value,
};
use crate::evidence::kind::EvidenceKind;
use crate::evidence::write::{PendingRecord, append};
use crate::readmodel::ExceptionRow;

/// Why the end of an exception by expiry is recorded (also the alert's `EXCEPTION_EXPIRED`).
pub const EXPIRED: &str = crate::domain::EXCEPTION_EXPIRED_REASON;
/// Why a file exception ended when its entry left the file (or changed).
pub const REMOVED_FROM_FILE: &str = "removed from the exceptions file";

/// One stored exception.
#[derive(Debug, Clone, sqlx::FromRow)]
struct ExceptionRecord {
    id: String,
    source: String,
    account: Option<String>,
    region: Option<String>,
    repository_pattern: String,
    control: String,
    reason: String,
    approver: String,
    expires_at: DateTime<Utc>,
    end_reason: Option<String>,
}

const COLUMNS: &str = "id, source, account, region, repository_pattern, control, reason, \
                       approver, expires_at, end_reason";

impl ExceptionRecord {
    fn note(&self) -> ExceptionNote {
        ExceptionNote {
            id: self.id.clone(),
            control: self.control.clone(),
            repository: self.repository_pattern.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
            reason: self.reason.clone(),
            approver: self.approver.clone(),
            expires_at: self.expires_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            source: self.source.clone(),
        }
    }

    fn covers(&self, account: &str, region: &str, repository: &str, control: &str) -> bool {
        self.control == control
            && self.account.as_deref().is_none_or(|a| a == account)
            && self.region.as_deref().is_none_or(|r| r == region)
            && RepositoryPattern::parse(&self.repository_pattern)
                .is_ok_and(|p| p.matches(repository))
    }
}

/// What the worker's settling did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Exceptions whose expiry passed and that were marked expired.
    pub expired: u64,
    /// Ended exceptions (expired or revoked) whose findings were re-opened.
    pub settled_revoked: u64,
    /// Findings re-opened (one alert each when alerts are on).
    pub reopened: u64,
}

/// What loading the exceptions file changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSync {
    pub added: Vec<String>,
    pub revoked: Vec<String>,
    /// Whether a `file_loaded` record was written (the file differs from the last recorded).
    pub recorded: bool,
}

/// A record about an exception; `repository` set for `applied`/`reopened`.
struct RecordSpec<'a> {
    action: ExceptionAction,
    exception: &'a ExceptionRecord,
    at: DateTime<Utc>,
    actor: Option<String>,
    place: Option<(String, String, String)>,
    verdict: Option<crate::domain::Verdict>,
}

fn exception_record(spec: RecordSpec<'_>) -> ChainedRecord {
    let RecordSpec {
        action,
        exception,
        at,
        actor,
        place,
        verdict,
    } = spec;
    let detail = ExceptionDetail {
        action,
        exception: Some(exception.note()),
        verdict,
        end_reason: matches!(
            action,
            ExceptionAction::Revoked | ExceptionAction::Expired | ExceptionAction::Reopened
        )
        .then(|| exception.end_reason.clone())
        .flatten(),
        file: None,
    };
    let (account, region, repository) = match place {
        Some((account, region, repository)) => (Some(account), Some(region), Some(repository)),
        None => (exception.account.clone(), exception.region.clone(), None),
    };
    let event_id = match &repository {
        Some(name) => format!(
            "exception/{}/{}/{}/{}/{name}",
            exception.id,
            action.as_str(),
            account.as_deref().unwrap_or("-"),
            region.as_deref().unwrap_or("-"),
        ),
        None => format!("exception/{}/{}", exception.id, action.as_str()),
    };
    let now = truncate_to_micros(Utc::now());
    ChainedRecord {
        seq: 0,
        recorded_at: now,
        event_id,
        event_time: truncate_to_micros(at),
        kind: EvidenceKind::ExceptionChanged,
        outcome: "processed".to_owned(),
        account,
        region,
        repository,
        digest: None,
        tag: None,
        actor,
        detail: to_detail_value(&detail),
        prev_hash: String::new(),
        format_version: None,
    }
}

/// Present repositories whose control the exception matches and that fail; with
/// `unexcepted_only`, only those no exception in force covers now.
async fn failing_matches(
    conn: &mut PgConnection,
    exception: &ExceptionRecord,
    unexcepted_only: bool,
) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
    let like = RepositoryPattern::parse(&exception.repository_pattern)
        .map(|p| p.to_like())
        .unwrap_or_default();
    sqlx::query_as(
        "SELECT account, region, repository, reason FROM reported_controls
          WHERE control = $1 AND status = 'FAIL'
            AND ($2::text IS NULL OR account = $2) AND ($3::text IS NULL OR region = $3)
            AND repository LIKE $4 ESCAPE '\\'
            AND (NOT $5 OR exception_id IS NULL)
          ORDER BY account, region, repository",
    )
    .bind(&exception.control)
    .bind(&exception.account)
    .bind(&exception.region)
    .bind(like)
    .bind(unexcepted_only)
    .fetch_all(conn)
    .await
}

/// The per-repository records of `action` (`applied` or `reopened`) for an exception.
async fn per_repository(
    conn: &mut PgConnection,
    exception: &ExceptionRecord,
    action: ExceptionAction,
) -> Result<Vec<ChainedRecord>, sqlx::Error> {
    let unexcepted_only = action == ExceptionAction::Reopened;
    let matches = failing_matches(conn, exception, unexcepted_only).await?;
    Ok(matches
        .into_iter()
        .map(|(account, region, repository, reason)| {
            exception_record(RecordSpec {
                action,
                exception,
                at: Utc::now(),
                actor: None,
                place: Some((account, region, repository)),
                verdict: Some(crate::domain::Verdict::fail(reason)),
            })
        })
        .collect())
}

async fn insert_exception(
    conn: &mut PgConnection,
    id: &str,
    source: ExceptionSource,
    valid: &ValidException,
) -> Result<ExceptionRecord, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO control_exceptions (id, source, account, region, repository_pattern,
                repository_like, control, reason, approver, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(source.as_str())
    .bind(valid.account.as_ref().map(|a| a.as_str().to_owned()))
    .bind(valid.region.as_ref().map(|r| r.as_str().to_owned()))
    .bind(valid.pattern.as_str())
    .bind(valid.pattern.to_like())
    .bind(valid.control.as_str())
    .bind(&valid.reason)
    .bind(&valid.approver)
    .bind(valid.expires_at)
    .fetch_one(conn)
    .await
}

/// The `added` record and one `applied` record per repository it now excepts.
async fn added_records(
    conn: &mut PgConnection,
    exception: &ExceptionRecord,
) -> Result<Vec<ChainedRecord>, sqlx::Error> {
    let mut records = vec![exception_record(RecordSpec {
        action: ExceptionAction::Added,
        exception,
        at: Utc::now(),
        actor: Some(exception.approver.clone()),
        place: None,
        verdict: None,
    })];
    records.extend(per_repository(conn, exception, ExceptionAction::Applied).await?);
    Ok(records)
}

/// Appends records (each its own group: one already on the chain is skipped, not fatal) and
/// queues the alerts they carry when `alerts` is on; returns how many alerts were queued.
async fn append_all(
    tx: &mut Transaction<'_, Postgres>,
    records: Vec<ChainedRecord>,
    alerts: bool,
) -> Result<u64, sqlx::Error> {
    // Nothing to append: the chain head is not locked (the worker settles every interval,
    // mostly with nothing to do, and must not queue behind the pipeline for nothing).
    if records.is_empty() {
        return Ok(0);
    }
    let pending = records
        .into_iter()
        .enumerate()
        .map(|(group, record)| PendingRecord {
            group,
            is_lead: true,
            record,
        })
        .collect();
    let appended = append(tx, pending).await?;
    let paging: Vec<_> = appended
        .chained
        .iter()
        .filter_map(|(record, hash)| Some((record, hash.as_str(), alert_kind(record)?)))
        .collect();
    let queued = u64::try_from(paging.len()).unwrap_or(u64::MAX);
    if alerts {
        enqueue_all(tx, paging).await?;
    }
    Ok(queued)
}

impl Store {
    /// Adds an exception from the command line (`EX-<n>`), with its `added` record and an
    /// `applied` record per failing repository it covers; returns its id and that count.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn add_exception(
        &self,
        valid: &ValidException,
    ) -> Result<(String, usize), StoreError> {
        let mut tx = self.pool.begin().await?;
        let number: i64 = sqlx::query_scalar("SELECT nextval('control_exception_numbers')")
            .fetch_one(&mut *tx)
            .await?;
        let id = format!("EX-{number}");
        let exception = insert_exception(&mut tx, &id, ExceptionSource::Cli, valid).await?;
        let records = added_records(&mut tx, &exception).await?;
        let applied = records.len() - 1;
        append_all(&mut tx, records, false).await?;
        tx.commit().await?;
        Ok((id, applied))
    }

    /// Revokes an exception in force; `false` when no active exception has this id. The
    /// findings it covered re-open (and alert) when the worker next settles exceptions.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn revoke_exception(
        &self,
        id: &str,
        reason: &str,
        by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revoked: Option<ExceptionRecord> = sqlx::query_as(&format!(
            "UPDATE control_exceptions
                SET state = 'revoked', ended_at = now(), end_reason = $2, ended_by = $3
              WHERE id = $1 AND state = 'active'
              RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(reason)
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(exception) = revoked else {
            return Ok(false);
        };
        let record = exception_record(RecordSpec {
            action: ExceptionAction::Revoked,
            exception: &exception,
            at: Utc::now(),
            actor: by.map(str::to_owned),
            place: None,
            verdict: None,
        });
        append_all(&mut tx, vec![record], false).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Exceptions for `exception list`: those in force, or every one with `all`.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn exceptions(&self, all: bool) -> Result<Vec<ExceptionRow>, StoreError> {
        let rows: Vec<ExceptionColumns> = sqlx::query_as(
            "SELECT e.id,
                    CASE WHEN e.state = 'active' AND e.expires_at <= now() THEN 'expired'
                         ELSE e.state END,
                    e.control, e.repository_pattern, e.account, e.region, e.reason, e.approver,
                    e.expires_at, e.created_at, e.source, e.ended_at, e.end_reason, e.ended_by,
                    (SELECT count(*) FROM reported_controls rc WHERE rc.exception_id = e.id)
               FROM control_exceptions e
              WHERE $1 OR (e.state = 'active' AND e.expires_at > now())
              ORDER BY e.created_at DESC, e.id",
        )
        .bind(all)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(exception_row).collect())
    }

    /// The worker's periodic step: marks exceptions past their expiry `expired` (an
    /// `expired` record each), then re-opens the findings of every ended exception not yet
    /// settled (a `reopened` record per repository that now fails unexcepted, with its
    /// alert). Replicas share the work (`SKIP LOCKED`).
    ///
    /// # Errors
    /// When the database fails; nothing is marked then, and the next step tries again.
    pub async fn settle_exceptions(&self) -> Result<Settled, StoreError> {
        let mut tx = self.pool.begin().await?;
        let expiring: Vec<ExceptionRecord> = sqlx::query_as(&format!(
            "UPDATE control_exceptions SET state = 'expired', ended_at = now(), end_reason = $1
              WHERE id IN (SELECT id FROM control_exceptions
                            WHERE state = 'active' AND expires_at <= now()
                            FOR UPDATE SKIP LOCKED)
              RETURNING {COLUMNS}"
        ))
        .bind(EXPIRED)
        .fetch_all(&mut *tx)
        .await?;
        let unsettled: Vec<ExceptionRecord> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM control_exceptions
              WHERE state <> 'active' AND settled_at IS NULL
              ORDER BY ended_at, id
              FOR UPDATE SKIP LOCKED"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut records: Vec<ChainedRecord> = expiring
            .iter()
            .map(|exception| {
                exception_record(RecordSpec {
                    action: ExceptionAction::Expired,
                    exception,
                    at: exception.expires_at,
                    actor: None,
                    place: None,
                    verdict: None,
                })
            })
            .collect();
        for exception in &unsettled {
            records.extend(per_repository(&mut tx, exception, ExceptionAction::Reopened).await?);
        }
        if !unsettled.is_empty() {
            let ids: Vec<&str> = unsettled.iter().map(|e| e.id.as_str()).collect();
            sqlx::query("UPDATE control_exceptions SET settled_at = now() WHERE id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
        }
        let reopened = append_all(&mut tx, records, self.settings.alerts).await?;
        tx.commit().await?;
        let revoked = unsettled
            .iter()
            .filter(|e| e.end_reason.as_deref() != Some(EXPIRED))
            .count();
        Ok(Settled {
            expired: expiring.len() as u64,
            settled_revoked: revoked as u64,
            reopened,
        })
    }

    /// Makes the file's entries the set of file exceptions in force: new entries are added,
    /// active file exceptions no longer in it are revoked, and a `file_loaded` record names
    /// the file's SHA-256 — unless the file is the one last recorded and nothing changed
    /// (a restart). Replicas take turns (a transaction-scoped advisory lock).
    ///
    /// # Errors
    /// When the database fails; nothing changes then.
    pub async fn sync_exceptions_file(
        &self,
        path: &str,
        loaded: &LoadedFile,
    ) -> Result<FileSync, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ecr-audit exceptions file'))")
            .execute(&mut *tx)
            .await?;
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT sha256 FROM exception_file_state WHERE path = $1")
                .bind(path)
                .fetch_optional(&mut *tx)
                .await?;
        let wanted: Vec<&str> = loaded
            .entries
            .iter()
            .map(|e| e.stored_id.as_str())
            .collect();
        let mut sync = FileSync::default();
        let mut records = add_file_entries(&mut tx, loaded, &mut sync).await?;
        let revoked = revoke_unlisted(&mut tx, &wanted).await?;
        for exception in &revoked {
            records.push(exception_record(RecordSpec {
                action: ExceptionAction::Revoked,
                exception,
                at: Utc::now(),
                actor: None,
                place: None,
                verdict: None,
            }));
            sync.revoked.push(exception.id.clone());
        }
        let changed = !sync.added.is_empty() || !sync.revoked.is_empty();
        if changed || recorded.as_deref() != Some(loaded.sha256.as_str()) {
            records.push(file_loaded_record(path, loaded, &sync));
            sync.recorded = true;
            sqlx::query(
                "INSERT INTO exception_file_state (path, sha256, loaded_at) VALUES ($1, $2, now())
                 ON CONFLICT (path) DO UPDATE SET sha256 = EXCLUDED.sha256, loaded_at = now()",
            )
            .bind(path)
            .bind(&loaded.sha256)
            .execute(&mut *tx)
            .await?;
        }
        append_all(&mut tx, records, false).await?;
        tx.commit().await?;
        Ok(sync)
    }
}

/// Adds the file's entries not stored yet (an entry already expired is not added), with
/// their `added` and `applied` records.
async fn add_file_entries(
    conn: &mut PgConnection,
    loaded: &LoadedFile,
    sync: &mut FileSync,
) -> Result<Vec<ChainedRecord>, sqlx::Error> {
    let wanted: Vec<&str> = loaded
        .entries
        .iter()
        .map(|e| e.stored_id.as_str())
        .collect();
    let existing: HashSet<String> =
        sqlx::query_scalar("SELECT id FROM control_exceptions WHERE id = ANY($1)")
            .bind(&wanted)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let mut records = Vec::new();
    for entry in &loaded.entries {
        if existing.contains(&entry.stored_id) || entry.already_expired {
            continue;
        }
        let exception = insert_exception(
            &mut *conn,
            &entry.stored_id,
            ExceptionSource::File,
            &entry.exception,
        )
        .await?;
        records.extend(added_records(&mut *conn, &exception).await?);
        sync.added.push(entry.stored_id.clone());
    }
    Ok(records)
}

/// Revokes the active file exceptions the file no longer lists.
async fn revoke_unlisted(
    conn: &mut PgConnection,
    wanted: &[&str],
) -> Result<Vec<ExceptionRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE control_exceptions
            SET state = 'revoked', ended_at = now(), end_reason = $2
          WHERE source = 'file' AND state = 'active' AND NOT (id = ANY($1))
          RETURNING {COLUMNS}"
    ))
    .bind(wanted)
    .bind(REMOVED_FROM_FILE)
    .fetch_all(conn)
    .await
}

fn file_loaded_record(path: &str, loaded: &LoadedFile, sync: &FileSync) -> ChainedRecord {
    let detail = ExceptionDetail {
        action: ExceptionAction::FileLoaded,
        exception: None,
        verdict: None,
        end_reason: None,
        file: Some(ExceptionFileNote {
            path: path.to_owned(),
            sha256: loaded.sha256.clone(),
            entries: loaded.entries.len(),
            added: sync.added.clone(),
            revoked: sync.revoked.clone(),
        }),
    };
    let now = truncate_to_micros(Utc::now());
    ChainedRecord {
        seq: 0,
        recorded_at: now,
        // The same content loaded again after another version is a new load: the time keeps
        // the id unique.
        event_id: format!(
            "exception-file/{}/{}",
            loaded.sha256,
            now.to_rfc3339_opts(SecondsFormat::Micros, true)
        ),
        event_time: now,
        kind: EvidenceKind::ExceptionChanged,
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

/// An exception's row as `exceptions` selects it (and `exception_row` reads it), column by column.
type ExceptionColumns = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    i64,
);

fn exception_row(
    (
        id,
        state,
        control,
        repository,
        account,
        region,
        reason,
        approver,
        expires_at,
        created_at,
        source,
        ended_at,
        end_reason,
        ended_by,
        excepted,
    ): ExceptionColumns,
) -> ExceptionRow {
    ExceptionRow {
        id,
        state,
        control,
        repository,
        account,
        region,
        reason,
        approver,
        expires_at,
        created_at,
        source,
        ended_at,
        end_reason,
        ended_by,
        excepted,
    }
}

/// Marks, before they are appended, the control transitions to FAIL that an exception in
/// force covers: their detail names it, so they are reported `EXCEPTED`, map to a suppressed
/// OCSF finding, and do not page (`alerts::outbox::alert_kind`).
///
/// # Errors
/// When the query fails.
pub(super) async fn mark_excepted(
    conn: &mut PgConnection,
    pending: &mut [PendingRecord],
) -> Result<(), sqlx::Error> {
    let failing = |p: &PendingRecord| {
        p.record
            .control_transition()
            .filter(|t| t.to.status == crate::domain::ControlStatus::Fail)
    };
    if !pending.iter().any(|p| failing(p).is_some()) {
        return Ok(());
    }
    let in_force: Vec<ExceptionRecord> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM control_exceptions
          WHERE state = 'active' AND expires_at > now()
          ORDER BY expires_at DESC, id"
    ))
    .fetch_all(conn)
    .await?;
    for p in pending.iter_mut() {
        let Some(transition) = failing(p) else {
            continue;
        };
        let record = &p.record;
        let covering = in_force.iter().find(|e| {
            e.covers(
                record.account.as_deref().unwrap_or_default(),
                record.region.as_deref().unwrap_or_default(),
                record.repository.as_deref().unwrap_or_default(),
                &transition.control,
            )
        });
        if let Some(exception) = covering {
            let marked = ControlTransitionDetail {
                exception: Some(exception.note()),
                ..transition
            };
            p.record.detail = to_detail_value(&marked);
        }
    }
    Ok(())
}
