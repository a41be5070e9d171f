//! Scheduled repository re-reads: a repository read that lacked a fact because AWS did not
//! answer left some controls `UNKNOWN` and a row in `repository_rechecks` (src/store/rereads.rs).
//! Each due row becomes a synthetic re-read event (`detail_type` [`REREAD_DETAIL_TYPE`], no
//! actor) planned and committed like a reconcile observation, so the `UNKNOWN`s resolve by
//! themselves once the API answers again, with evidence of when and why.

use chrono::Utc;
use tracing::warn;

use super::Pipeline;
use crate::domain::RepositoryKey;
use crate::parse::{AuditEvent, Change, RepositoryCall};
use crate::plan::Plan;
use crate::store::StoreError;

/// `detail_type` of the events a scheduled re-read synthesises.
pub(crate) const REREAD_DETAIL_TYPE: &str = "ecr-audit Re-read";

impl Pipeline {
    /// Reads again up to `limit` repositories whose last read was incomplete; returns how many
    /// were claimed. A re-read that fails again stays scheduled (the claim already pushed its
    /// next attempt back).
    ///
    /// # Errors
    /// When the database fails to claim or commit.
    pub async fn run_due_rereads(&self, limit: i64) -> Result<usize, StoreError> {
        let claims = self.store.claim_rereads(limit).await?;
        let count = claims.len();
        let mut plans = Vec::with_capacity(count);
        for (key, attempt) in claims {
            match self.plan(reread_event(&key, attempt)).await {
                Ok(plan) => plans.push(Plan::Event(Box::new(plan))),
                Err(err) => {
                    warn!(repository.name = %key.name, "scheduled re-read of {key} failed, trying later: {err}");
                }
            }
        }
        if !plans.is_empty() {
            self.commit_plans(&plans).await?;
        }
        Ok(count)
    }
}

/// The synthetic event of one re-read; its id is unique per claim (the claim's time), so a
/// later outage of the same repository records its own re-reads.
fn reread_event(key: &RepositoryKey, attempt: i32) -> AuditEvent {
    let now = Utc::now();
    AuditEvent {
        id: format!(
            "reread/{}/{}/{}/{}/{attempt}",
            key.account,
            key.region,
            key.name,
            now.timestamp_micros()
        ),
        time: now,
        claimed_time: None,
        account: key.account.clone(),
        region: key.region.clone(),
        detail_type: REREAD_DETAIL_TYPE.to_owned(),
        actor: None,
        change: Change::RepositoryChanged {
            repository: key.name.clone(),
            call: RepositoryCall::ObservedByReconcile,
        },
    }
}
