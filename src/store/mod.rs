//! Postgres: the one place where posture and evidence are written and read.
//!
//! [`Store::commit_batch`] applies a batch of plans in one transaction: repository state,
//! control results (with a transition record whenever a status changes), image records, the
//! evidence records on the hash chain, and rejected messages. It leaves what committing the
//! plans one at a time, in the order they came, would leave, with one statement per table for
//! many plans (`wave.rs`). It is idempotent on the event's own id: an id already in `evidence`
//! makes the whole plan a duplicate that changes nothing.
//! Writes are guarded by versions (`observed_at` for repository reads, the event time for
//! image presence), so an older event or a slower worker never overwrites newer state.

mod digest;
mod failing;
pub use failing::FAILING_CLAIM;
pub mod exceptions;
mod history;
mod rereads;
mod reverify;
pub mod roles;
mod sets;
mod upsert;
mod usage;
pub mod verdict;
pub mod verifications;
pub mod views;
mod wave;
mod write;

pub use digest::{RecheckClaim, SignatureChange};
pub use reverify::REVOCATION_SETTLE;
pub use usage::UsageReport;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::domain::{ControlId, Digest, ReportedStatus, RepositoryKey};
use crate::telemetry::RetryCode;
// The writes a plan carries are the planner's types; store submodules reach them as `super::`.
use crate::plan::{
    EventPlan, ImagePresence, ImageWrite, Plan, RejectedMessage, RepositoryWrite, ScanWrite,
    SignatureWrite,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What a database failure means for the messages of the batch.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connection lost, pool exhausted, deadlock, serialization failure: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused the data itself (a constraint or data exception): retrying the
    /// same write cannot succeed, so the message is left for the dead-letter queue.
    #[error("database refused the write: {0}")]
    Refused(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A record the batch makes has an id another record already holds, though its event is
    /// new: refused (and so dead-lettered, kept for a person) instead of dropped.
    #[error("evidence id already taken: {event_id}")]
    IdCollision { event_id: String },
}

impl StoreError {
    pub fn code(&self) -> RetryCode {
        match self {
            Self::Unavailable(_) => RetryCode::DbUnavailable,
            Self::Refused(_) => RetryCode::DbRefused,
            Self::Migrate(_) => RetryCode::DbMigrate,
            Self::IdCollision { .. } => RetryCode::IdCollision,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// A deadlock, a serialization failure or an event recorded by another transaction
    /// meanwhile: the same transaction, run again at once, will most likely succeed.
    pub(crate) fn is_conflict(&self) -> bool {
        match self {
            Self::Unavailable(err) => err.as_database_error().is_some_and(|db| {
                db.code()
                    .is_some_and(|code| code == "40P01" || code == "40001")
                    || is_recorded_meanwhile(db)
            }),
            _ => false,
        }
    }
}

/// The chain already holds an event id this append brings: the ids on the chain are read
/// before the head is locked (`evidence::write::append`), so another transaction can record
/// the same event in between. Run again, the batch finds it and treats it as a duplicate.
fn is_recorded_meanwhile(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.code().is_some_and(|code| code == "23505") && db.constraint() == Some(EVENT_ID_UNIQUE)
}

/// The unique index on `evidence.event_id` (migrations/20261123000001_create_posture_tables.sql).
const EVENT_ID_UNIQUE: &str = "evidence_event_id_key";

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        let deterministic = err
            .as_database_error()
            // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation),
            // but for an event recorded by another transaction meanwhile.
            .is_some_and(|db| {
                db.code()
                    .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
                    && !is_recorded_meanwhile(db)
            });
        if deterministic {
            Self::Refused(err)
        } else {
            Self::Unavailable(err)
        }
    }
}

/// What committing a plan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    Processed,
    Ignored,
    /// The event id was already recorded: nothing changed.
    Duplicate,
    Rejected,
}

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// One per plan, in order.
    pub committed: Vec<Committed>,
    /// Digests that became `UNSIGNED` for the first time in this batch.
    pub first_unsigned: u64,
    /// Digests whose signature re-check an AWS Signer revocation made due now.
    pub reverify_scheduled: u64,
    /// Controls that went from PASS to FAIL in this batch (one entry per repository).
    pub regressions: Vec<ControlId>,
    /// Controls that went from PASS to UNKNOWN in this batch (one entry per repository).
    pub blinded: Vec<ControlId>,
    /// Controls that went from FAIL back to PASS within the window of their PASS → FAIL.
    pub restored: Vec<ControlId>,
    /// From locking the evidence head to commit; `None` when the batch appended nothing.
    pub evidence_lock_held: Option<std::time::Duration>,
}

/// The Postgres store.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    settings: CommitSettings,
}

/// How a batch is committed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitSettings {
    /// Whether transitions worth a page are queued in `alert_outbox` (an alert bus is set).
    pub alerts: bool,
    /// How soon a FAIL → PASS must follow its PASS → FAIL to be recorded, counted and alerted
    /// as "regressed and restored" (`ECR_AUDIT_RESTORED_WINDOW`).
    pub restored_window: chrono::Duration,
}

/// The default of `ECR_AUDIT_RESTORED_WINDOW`: one hour.
pub const DEFAULT_RESTORED_WINDOW_SECONDS: i64 = 3600;

impl Default for CommitSettings {
    fn default() -> Self {
        Self {
            alerts: false,
            restored_window: chrono::Duration::seconds(DEFAULT_RESTORED_WINDOW_SECONDS),
        }
    }
}

impl Store {
    /// Connects eagerly so that a wrong `DATABASE_URL` fails at start-up.
    ///
    /// # Errors
    /// When the URL is invalid or the server cannot be reached.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options: PgConnectOptions = database_url.parse().map_err(StoreError::Unavailable)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.application_name("ecr-audit"))
            .await?;
        Ok(Self {
            pool,
            settings: CommitSettings::default(),
        })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            settings: CommitSettings::default(),
        }
    }

    /// Queue alert events for transitions worth a page (when an alert bus is configured).
    #[must_use]
    pub fn with_alerts(mut self, enabled: bool) -> Self {
        self.settings.alerts = enabled;
        self
    }

    /// How soon a FAIL → PASS must follow its PASS → FAIL to count as "regressed and
    /// restored" (default [`DEFAULT_RESTORED_WINDOW_SECONDS`]).
    #[must_use]
    pub fn with_restored_window(mut self, window: chrono::Duration) -> Self {
        self.settings.restored_window = window;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/`, then states the worker role's privileges
    /// ([`roles`]).
    ///
    /// # Errors
    /// When a migration fails, a landed migration was edited, or a grant fails.
    pub async fn migrate(&self) -> Result<roles::WorkerRole, StoreError> {
        MIGRATOR.run(&self.pool).await?;
        roles::grant_worker(&self.pool).await
    }

    /// Makes the user `login` a member of the worker role (see [`roles::admit_login`]).
    ///
    /// # Errors
    /// When the grant fails.
    pub async fn admit_worker_login(&self, login: &str) -> Result<bool, StoreError> {
        roles::admit_login(&self.pool, login).await
    }

    /// Whether the database answers.
    ///
    /// # Errors
    /// When it does not.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies a batch of plans in one transaction; see the module docs.
    ///
    /// # Errors
    /// [`StoreError`]; on error nothing of the batch is committed.
    pub async fn commit_batch(&self, plans: &[Plan]) -> Result<BatchOutcome, StoreError> {
        // Concurrent batches touching the same digests can deadlock despite the lock order
        // (Postgres then aborts one); retrying in place keeps such a batch from spending
        // SQS receives, which would otherwise send it to the dead-letter queue.
        let mut attempt = 0;
        loop {
            match write::commit_batch(&self.pool, plans, self.settings).await {
                Err(err) if err.is_conflict() && attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * (1 << attempt))).await;
                }
                result => return result,
            }
        }
    }

    /// Claims up to `limit` due signature re-checks. The claim holds row locks (`FOR UPDATE
    /// SKIP LOCKED`) until [`Store::finish_rechecks`] commits, so other workers skip them and a
    /// crash releases them.
    ///
    /// # Errors
    /// When the database fails.
    pub(crate) async fn claim_rechecks(
        &self,
        limit: i64,
    ) -> Result<
        (
            sqlx::Transaction<'static, sqlx::Postgres>,
            Vec<RecheckClaim>,
        ),
        StoreError,
    > {
        // The re-checks are applied in this transaction, with the statements of a batch.
        let mut tx = self.pool.begin_with(write::BEGIN_BATCH).await?;
        let claims = digest::claim_due(&mut tx, limit).await?;
        Ok((tx, claims))
    }

    /// Makes every current digest judged under another trust configuration version (or
    /// before verdicts named one) due for a signature re-check now, so a changed trust policy
    /// re-verifies them; returns how many.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn requeue_signatures_for_policy(&self, version: &str) -> Result<u64, StoreError> {
        digest::requeue_other_policy_versions(&self.pool, version).await
    }

    /// Applies re-check results (a verdict, or a later due time after a transient failure)
    /// with their transition evidence, and commits; returns how many digests became
    /// `UNSIGNED` for the first time.
    ///
    /// # Errors
    /// When the database fails; nothing is committed then.
    pub(crate) async fn finish_rechecks(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        results: Vec<(RecheckClaim, Result<SignatureWrite, DateTime<Utc>>)>,
    ) -> Result<u64, StoreError> {
        write::finish_rechecks(tx, results, self.settings.alerts).await
    }

    /// Claims up to `limit` repositories due to be read again after an incomplete read (see
    /// `rereads.rs`), with the attempt number of this claim.
    ///
    /// # Errors
    /// When the database fails.
    pub(crate) async fn claim_rereads(
        &self,
        limit: i64,
    ) -> Result<Vec<(RepositoryKey, i32)>, StoreError> {
        rereads::claim_due(&self.pool, limit).await
    }

    /// Repositories per control and reported status (`EXCEPTED` for a `FAIL` under an
    /// exception in force), over repositories that still exist.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn control_counts(
        &self,
    ) -> Result<Vec<(ControlId, ReportedStatus, i64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT control, reported_status, count(*)
               FROM reported_controls
              GROUP BY control, reported_status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(control, status, n)| {
                Some((
                    ControlId::from_str_opt(&control)?,
                    ReportedStatus::from_str_opt(&status)?,
                    n,
                ))
            })
            .collect())
    }
}

/// What is stored about one registry, for a reconcile sweep to compare with.
#[derive(Debug, Default)]
pub(crate) struct ReconcileSnapshot {
    /// Repository name → (present, control → status).
    pub repositories: std::collections::HashMap<String, (bool, BTreeMap<String, String>)>,
    /// Repository name → digests stored as present.
    pub images: std::collections::HashMap<String, std::collections::HashSet<String>>,
}

/// Held while this process sweeps; other replicas skip their sweep meanwhile.
pub(crate) struct ReconcileLock {
    connection: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

/// Arbitrary but fixed: the advisory lock key of the reconcile sweep.
const RECONCILE_LOCK_KEY: i64 = 0x0ec2_a0d1;

impl ReconcileLock {
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(RECONCILE_LOCK_KEY)
            .execute(&mut *self.connection)
            .await;
    }
}

impl Store {
    /// Takes the sweep lock unless another replica holds it or finished a sweep less than
    /// `fresh_for` ago.
    ///
    /// # Errors
    /// When the database fails.
    pub(crate) async fn try_reconcile_lock(
        &self,
        fresh_for: Duration,
    ) -> Result<Option<ReconcileLock>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RECONCILE_LOCK_KEY)
            .fetch_one(&mut *connection)
            .await?;
        if !locked {
            return Ok(None);
        }
        let lock = ReconcileLock { connection };
        let (_, last) = self.operational_counts().await?;
        let fresh = last.is_some_and(|at| {
            Utc::now()
                .signed_duration_since(at)
                .to_std()
                .unwrap_or_default()
                < fresh_for
        });
        if fresh {
            lock.release().await;
            return Ok(None);
        }
        Ok(Some(lock))
    }

    /// # Errors
    /// When the database fails.
    pub(crate) async fn start_reconcile_run(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO reconcile_runs (started_at) VALUES (now()) RETURNING id",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// # Errors
    /// When the database fails.
    pub(crate) async fn finish_reconcile_run(
        &self,
        run: i64,
        succeeded: bool,
        repositories: u64,
        images: u64,
        changes: u64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let count = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        sqlx::query(
            "UPDATE reconcile_runs SET finished_at = now(), succeeded = $2, repositories = $3,
                    images = $4, changes = $5, error = $6
              WHERE id = $1",
        )
        .bind(run)
        .bind(succeeded)
        .bind(count(repositories))
        .bind(count(images))
        .bind(count(changes))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// # Errors
    /// When the database fails.
    pub(crate) async fn reconcile_snapshot(
        &self,
        account: &crate::domain::AccountId,
        region: &crate::domain::Region,
    ) -> Result<ReconcileSnapshot, StoreError> {
        let mut snapshot = ReconcileSnapshot::default();
        let repositories: Vec<(String, bool)> = sqlx::query_as(
            "SELECT name, present FROM repositories WHERE account = $1 AND region = $2",
        )
        .bind(account.as_str())
        .bind(region.as_str())
        .fetch_all(&self.pool)
        .await?;
        for (name, present) in repositories {
            snapshot
                .repositories
                .insert(name, (present, BTreeMap::new()));
        }
        let controls: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT repository, control, status FROM control_results
              WHERE account = $1 AND region = $2",
        )
        .bind(account.as_str())
        .bind(region.as_str())
        .fetch_all(&self.pool)
        .await?;
        for (repository, control, status) in controls {
            if let Some((_, map)) = snapshot.repositories.get_mut(&repository) {
                map.insert(control, status);
            }
        }
        let images: Vec<(String, String)> = sqlx::query_as(
            "SELECT repository, digest FROM images
              WHERE account = $1 AND region = $2 AND present",
        )
        .bind(account.as_str())
        .bind(region.as_str())
        .fetch_all(&self.pool)
        .await?;
        for (repository, digest) in images {
            snapshot
                .images
                .entry(repository)
                .or_default()
                .insert(digest);
        }
        Ok(snapshot)
    }

    /// Alerts not yet accepted by EventBridge, and the end time of the last successful
    /// reconcile sweep.
    ///
    /// # Errors
    /// When a query fails.
    pub(crate) async fn operational_counts(
        &self,
    ) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let backlog: i64 =
            sqlx::query_scalar("SELECT count(*) FROM alert_outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        let last_reconcile: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(finished_at) FROM reconcile_runs WHERE succeeded")
                .fetch_one(&self.pool)
                .await?;
        Ok((backlog, last_reconcile))
    }

    /// Existing images (not artifacts) per signature status and per scan status, and the
    /// number of signature re-checks due now.
    ///
    /// # Errors
    /// When a query fails.
    pub(crate) async fn image_counts(
        &self,
    ) -> Result<
        (
            Vec<(crate::domain::SignatureStatus, i64)>,
            Vec<(crate::domain::ScanStatus, i64)>,
            i64,
        ),
        StoreError,
    > {
        let signatures: Vec<(String, i64)> = sqlx::query_as(
            "SELECT signature_status, count(*) FROM images
              WHERE present AND artifact_of IS NULL AND signature_status IS NOT NULL
              GROUP BY signature_status",
        )
        .fetch_all(&self.pool)
        .await?;
        let scans: Vec<(String, i64)> = sqlx::query_as(
            "SELECT scan_status, count(*) FROM images
              WHERE present AND artifact_of IS NULL AND scan_status IS NOT NULL
              GROUP BY scan_status",
        )
        .fetch_all(&self.pool)
        .await?;
        let backlog: i64 =
            sqlx::query_scalar("SELECT count(*) FROM signature_rechecks WHERE due_at <= now()")
                .fetch_one(&self.pool)
                .await?;
        Ok((
            signatures
                .into_iter()
                .filter_map(|(s, n)| Some((crate::domain::SignatureStatus::from_str_opt(&s)?, n)))
                .collect(),
            scans
                .into_iter()
                .filter_map(|(s, n)| Some((crate::domain::ScanStatus::from_str_opt(&s)?, n)))
                .collect(),
            backlog,
        ))
    }

    /// Whether a digest was already evaluated (its signature judged or its artifact subject
    /// recorded), so a later hint about the same push needs no AWS read.
    ///
    /// # Errors
    /// When the query fails.
    pub(crate) async fn image_evaluated(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM images
                 WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4
                   AND (signature_checked_at IS NOT NULL OR artifact_of IS NOT NULL))",
        )
        .bind(key.account.as_str())
        .bind(key.region.as_str())
        .bind(key.name.as_str())
        .bind(digest.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    /// The digests stored as present in one repository (marked deleted when the repository
    /// is read back absent).
    ///
    /// # Errors
    /// When the query fails.
    pub(crate) async fn present_digests(
        &self,
        key: &RepositoryKey,
    ) -> Result<Vec<Digest>, StoreError> {
        let digests: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM images
              WHERE account = $1 AND region = $2 AND repository = $3 AND present ORDER BY digest",
        )
        .bind(key.account.as_str())
        .bind(key.region.as_str())
        .bind(key.name.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(digests
            .iter()
            .filter_map(|digest| Digest::parse(digest).ok())
            .collect())
    }

    /// The repositories known to exist in one registry, for re-evaluation after a
    /// registry-wide change.
    ///
    /// # Errors
    /// When the query fails.
    pub(crate) async fn known_repositories(
        &self,
        account: &crate::domain::AccountId,
        region: &crate::domain::Region,
    ) -> Result<Vec<RepositoryKey>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM repositories WHERE account = $1 AND region = $2 AND present ORDER BY name",
        )
        .bind(account.as_str())
        .bind(region.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(names
            .into_iter()
            .filter_map(|name| {
                Some(RepositoryKey {
                    account: account.clone(),
                    region: region.clone(),
                    name: crate::domain::RepositoryName::parse(&name).ok()?,
                })
            })
            .collect())
    }
}
