//! Alert events: transitions worth a page, put on the operator's EventBridge bus.
//!
//! The store queues one outbox row per transition in the same transaction as its evidence;
//! this publisher drains the outbox with `PutEvents`. EventBridge can accept an event and the
//! acknowledgement still be lost, so delivery is at least once: consumers deduplicate on
//! `detail.alert_id`, which is the evidence record's event id. A failed put never blocks the
//! pipeline: the row waits with a growing delay (visible as `ecr_audit_alert_backlog`).
//! The publisher wakes when Postgres notifies `ecr_audit_alerts` (a trigger on the outbox, sent at
//! commit) and otherwise polls, so a lost listener connection only slows alerts down.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};

use super::outbox::{self, AlertDelivery, PendingAlert};
use crate::backoff::backoff;
use crate::telemetry::{Happened, Metrics};

/// `source` of every alert event (EventBridge reserves `aws.*` for AWS).
pub const ALERT_SOURCE: &str = "ecr-audit";
/// `PutEvents` takes at most ten entries.
const PUT_EVENTS_MAX: i64 = 10;
/// The channel the outbox trigger notifies at commit (migrations/20261203000900_alert_outbox_notify.sql).
const ALERTS_CHANNEL: &str = "ecr_audit_alerts";

pub struct AlertPublisher {
    pool: PgPool,
    client: aws_sdk_eventbridge::Client,
    bus: String,
    metrics: Arc<Metrics>,
}

impl AlertPublisher {
    pub fn new(
        pool: PgPool,
        client: aws_sdk_eventbridge::Client,
        bus: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            client,
            bus,
            metrics,
        }
    }

    /// Publishes up to ten due alerts; returns how many were claimed.
    ///
    /// # Errors
    /// When the database fails; the claimed alerts are released and published later.
    pub(crate) async fn publish_due(&self) -> Result<usize, sqlx::Error> {
        let (tx, alerts) = outbox::claim_due(&self.pool, PUT_EVENTS_MAX).await?;
        if alerts.is_empty() {
            let _ = tx.rollback().await;
            return Ok(0);
        }
        let entries: Vec<PutEventsRequestEntry> =
            alerts.iter().map(|alert| self.entry(alert)).collect();
        let result = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await;
        let results: Vec<(i64, AlertDelivery)> = match result {
            Ok(output) => alerts
                .iter()
                .enumerate()
                .map(|(i, alert)| {
                    // PutEvents answers entry by entry, in request order, behind HTTP 200.
                    let failure = match output.entries().get(i) {
                        Some(entry) if entry.error_code().is_none() => None,
                        Some(entry) => Some(format!(
                            "{}: {}",
                            entry.error_code().unwrap_or_default(),
                            entry.error_message().unwrap_or_default()
                        )),
                        None => Some("no result for the entry".to_owned()),
                    };
                    (alert.id, self.delivery(alert, failure))
                })
                .collect(),
            Err(err) => {
                let reason = format!("{:?}", crate::aws::classify(&err));
                alerts
                    .iter()
                    .map(|alert| (alert.id, self.delivery(alert, Some(reason.clone()))))
                    .collect()
            }
        };
        let count = results.len();
        outbox::finish(tx, &results).await?;
        Ok(count)
    }

    fn entry(&self, alert: &PendingAlert) -> PutEventsRequestEntry {
        let resource = match (
            alert.detail.get("account").and_then(|v| v.as_str()),
            alert.detail.get("region").and_then(|v| v.as_str()),
            alert.detail.get("repository").and_then(|v| v.as_str()),
        ) {
            (Some(account), Some(region), Some(repository)) => Some(format!(
                "arn:aws:ecr:{region}:{account}:repository/{repository}"
            )),
            _ => None,
        };
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(ALERT_SOURCE)
            .detail_type(&alert.detail_type)
            .detail(alert.detail.to_string())
            .set_resources(resource.map(|r| vec![r]))
            .build()
    }

    fn delivery(&self, alert: &PendingAlert, failure: Option<String>) -> AlertDelivery {
        match failure {
            None => {
                Happened::AlertPublished { alert_id: alert.id }.record(&self.metrics);
                AlertDelivery::Published
            }
            Some(error) => {
                let attempt = u32::try_from(alert.attempts).unwrap_or(0) + 1;
                let delay = backoff(Duration::from_secs(2), Duration::from_secs(600), attempt);
                Happened::AlertFailed {
                    alert_id: alert.id,
                    attempt,
                    delay,
                    error: &error,
                }
                .record(&self.metrics);
                AlertDelivery::Failed {
                    error,
                    retry_at: Utc::now()
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
                }
            }
        }
    }

    /// Publishes until none is due, then waits for a commit's notification or `poll`, whichever
    /// comes first; stops at `shutdown`.
    pub async fn run(self, poll: Duration, shutdown: CancellationToken) {
        let mut listener = self.listen().await;
        loop {
            match self.publish_due().await {
                Ok(n) if n as i64 == PUT_EVENTS_MAX && !shutdown.is_cancelled() => continue,
                Ok(_) => {}
                Err(err) => warn!(error = %err, "alert outbox unavailable; alerts stay queued"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(poll) => {}
                woken = notified(listener.as_mut()) => {
                    if let Err(err) = woken {
                        // sqlx reconnects on the next receive; until then the poll carries on.
                        // The outage itself is logged by `publish_due`'s failure above.
                        debug!(error = %err, "alert notifications interrupted; polling meanwhile");
                        tokio::time::sleep(poll).await;
                    }
                }
            }
        }
    }

    /// Listens on the alerts channel over a connection of its own (a listener holds its
    /// connection for good, which must not shrink the pipeline's pool); without it (a
    /// connection refused) the publisher only polls.
    async fn listen(&self) -> Option<PgListener> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut listener = match PgListener::connect_with(&own).await {
            Ok(listener) => listener,
            Err(err) => {
                warn!(error = %err, "alert notifications unavailable; polling only");
                return None;
            }
        };
        match listener.listen(ALERTS_CHANNEL).await {
            Ok(()) => Some(listener),
            Err(err) => {
                warn!(error = %err, "alert notifications unavailable; polling only");
                None
            }
        }
    }
}

/// The next notification, or never when there is no listener.
async fn notified(listener: Option<&mut PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}
