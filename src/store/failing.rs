//! Alerts on state: controls that have been failing longer than the grace period.
//!
//! A control's failure is classed when its status becomes FAIL (`write::upsert_controls`):
//! `baseline` when a reconcile sweep found it as history (the first sweep of the registry, or a
//! repository no event had shown), `new` otherwise. A `new` failure still failing after
//! `ECR_AUDIT_FAILING_GRACE` gets one `CONTROL_FAILING` alert, queued in the alert outbox and
//! pointing at the evidence record of the transition that started it; `failing_overdue_at`
//! makes that happen once per failure, whichever replica looks first.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use tracing::{info, warn};

use super::{Store, StoreError};
use crate::alerts::outbox::{FailingFinding, enqueue_failing};
use crate::domain::ControlId;
use crate::telemetry::FindingClass;

/// Findings handled per transaction; a full claim means more may be due.
pub const FAILING_CLAIM: i64 = 100;

/// A failing control as stored: account, region, repository, control, reason, since, by.
type FailingRow = (
    String,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<String>,
);

impl Store {
    /// Marks the `new` failures older than `grace` as overdue and queues their alert (when
    /// alerts are on); returns how many were found.
    ///
    /// # Errors
    /// When the database fails; nothing of the claim is then marked.
    pub async fn raise_overdue_failures(
        &self,
        grace: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let cutoff = Utc::now()
            .checked_sub_signed(grace)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut tx = self.pool.begin().await?;
        let rows: Vec<FailingRow> = sqlx::query_as(
            "SELECT c.account, c.region, c.repository, c.control, c.reason, c.failing_since,
                    c.changed_by
               FROM control_results c
               JOIN repositories r
                 ON r.account = c.account AND r.region = c.region AND r.name = c.repository
              WHERE c.status = 'FAIL' AND c.failing_class = 'new'
                AND c.failing_overdue_at IS NULL AND c.failing_since <= $1 AND r.present
              ORDER BY c.failing_since
              LIMIT $2
                FOR UPDATE OF c SKIP LOCKED",
        )
        .bind(cutoff)
        .bind(FAILING_CLAIM)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            self.raise_one(&mut tx, row).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn raise_one(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        (account, region, repository, control, reason, since, by): &FailingRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE control_results SET failing_overdue_at = now()
              WHERE account = $1 AND region = $2 AND repository = $3 AND control = $4",
        )
        .bind(account)
        .bind(region)
        .bind(repository)
        .bind(control)
        .execute(&mut **tx)
        .await?;
        info!(account = %account, region = %region, repository = %repository, control = %control, "control failing beyond the grace period");
        if !self.settings.alerts {
            return Ok(());
        }
        // The record of the transition that started the failure: the alert points at it.
        let evidence: Option<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, hash, event_id FROM evidence
              WHERE account = $1 AND region = $2 AND repository = $3
                AND kind = 'control_transition' AND detail->>'control' = $4
              ORDER BY seq DESC LIMIT 1",
        )
        .bind(account)
        .bind(region)
        .bind(repository)
        .bind(control)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((seq, hash, event_id)) = evidence else {
            warn!(repository = %repository, control = %control, "no evidence record of the failure (archived?); no alert queued");
            return Ok(());
        };
        let finding = FailingFinding {
            account,
            region,
            repository,
            control,
            reason,
            since: *since,
            changed_by: by.as_deref(),
        };
        enqueue_failing(tx, &finding, (seq, &hash, &event_id)).await?;
        Ok(())
    }

    /// Failing repositories per control and class, and the overdue ones per control.
    ///
    /// # Errors
    /// When the query fails.
    #[allow(
        clippy::type_complexity,
        reason = "two plain count lists, read together"
    )]
    pub async fn failing_counts(
        &self,
    ) -> Result<(Vec<(ControlId, FindingClass, i64)>, Vec<(ControlId, i64)>), StoreError> {
        let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT c.control, c.failing_class, count(*),
                    count(*) FILTER (WHERE c.failing_overdue_at IS NOT NULL)
               FROM control_results c
               JOIN repositories r
                 ON r.account = c.account AND r.region = c.region AND r.name = c.repository
              WHERE r.present AND c.status = 'FAIL'
              GROUP BY c.control, c.failing_class",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut failing = Vec::new();
        let mut overdue = Vec::new();
        for (control, class, count, late) in rows {
            let Some(control) = ControlId::from_str_opt(&control) else {
                continue;
            };
            // A failure without a class is older than classing: history.
            let class = match class.as_deref() {
                Some("new") => FindingClass::New,
                _ => FindingClass::Baseline,
            };
            failing.push((control, class, count));
            if late > 0 {
                overdue.push((control, late));
            }
        }
        Ok((failing, overdue))
    }

    /// Records that a sweep finished the registry: what later sweeps find there is no longer
    /// history.
    ///
    /// # Errors
    /// When the statement fails.
    pub(crate) async fn mark_registry_swept(
        &self,
        account: &crate::domain::AccountId,
        region: &crate::domain::Region,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reconcile_registries (account, region) VALUES ($1, $2)
             ON CONFLICT (account, region) DO NOTHING",
        )
        .bind(account.as_str())
        .bind(region.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
