//! The alert outbox: transitions worth a page, written with their evidence, published later.
//!
//! An alert row is inserted in the transaction that appends the transition's evidence record,
//! keyed by that record's event id, so each transition yields exactly one alert and a failed
//! `PutEvents` can never lose one: the row stays until EventBridge has accepted it.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};

use super::StoreError;
use super::evidence::ChainedRecord;

/// `detail-type` of an alert about a digest's signature.
pub const SIGNATURE_ALERT: &str = "ECR Audit Signature Alert";
/// `detail-type` of an alert about a control that went from PASS to FAIL.
pub const CONTROL_REGRESSION_ALERT: &str = "ECR Audit Control Regression";
/// Version of the `detail` schema documented in docs/ALERTS.md.
pub const ALERT_SCHEMA_VERSION: &str = "1";

/// Who pushed a digest, with which tag, when.
type PushRecord = (Option<String>, Option<String>, Option<DateTime<Utc>>);

/// What one evidence record means for paging, if anything.
pub(super) enum AlertKind {
    Signature { status: String },
    Regression { control: String },
}

pub(super) fn alert_kind(record: &ChainedRecord) -> Option<AlertKind> {
    match record.kind.as_str() {
        "signature_transition" => {
            let to = record.detail.get("to")?.as_str()?;
            matches!(to, "UNSIGNED" | "UNTRUSTED" | "FAILED").then(|| AlertKind::Signature {
                status: to.to_owned(),
            })
        }
        "control_transition" => {
            let from = record.detail.pointer("/from/status")?.as_str()?;
            let to = record.detail.pointer("/to/status")?.as_str()?;
            let control = record.detail.get("control")?.as_str()?;
            (from == "PASS" && to == "FAIL").then(|| AlertKind::Regression {
                control: control.to_owned(),
            })
        }
        _ => None,
    }
}

/// Queues the alert for a chained record (its `seq` and `hash` final).
pub(super) async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    record: &ChainedRecord,
    hash: &str,
    kind: AlertKind,
) -> Result<(), StoreError> {
    let common = json!({
        "schema_version": ALERT_SCHEMA_VERSION,
        "alert_id": record.event_id,
        "account": record.account,
        "region": record.region,
        "repository": record.repository,
        "reason": record.detail.get("reason").cloned()
            .or_else(|| record.detail.pointer("/to/reason").cloned()),
        "actor": record.actor,
        "event_time": record.event_time.to_rfc3339(),
        "recorded_at": record.recorded_at.to_rfc3339(),
        "evidence": {"seq": record.seq, "hash": hash},
    });
    let (detail_type, specific) = match kind {
        AlertKind::Signature { status } => {
            let pushed: Option<PushRecord> = sqlx::query_as(
                "SELECT pushed_by, push_tag, pushed_at FROM images
                      WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4",
            )
            .bind(&record.account)
            .bind(&record.region)
            .bind(&record.repository)
            .bind(&record.digest)
            .fetch_optional(&mut **tx)
            .await?;
            let (pushed_by, tag, pushed_at) = pushed.unwrap_or_default();
            (
                SIGNATURE_ALERT,
                json!({
                    "alert": match status.as_str() {
                        "FAILED" => "SIGNING_FAILED",
                        other => other,
                    },
                    "digest": record.digest,
                    "tag": tag,
                    "status": status,
                    "previous_status": record.detail.get("from"),
                    "pushed_by": pushed_by,
                    "pushed_at": pushed_at.map(|t| t.to_rfc3339()),
                }),
            )
        }
        AlertKind::Regression { control } => (
            CONTROL_REGRESSION_ALERT,
            json!({
                "alert": "CONTROL_REGRESSION",
                "control": control,
                "status": "FAIL",
                "previous_status": "PASS",
                "previous_reason": record.detail.pointer("/from/reason"),
            }),
        ),
    };
    let mut detail = common;
    if let (Value::Object(detail), Value::Object(specific)) = (&mut detail, specific) {
        detail.extend(specific);
    }
    sqlx::query(
        "INSERT INTO alert_outbox (evidence_event_id, evidence_seq, evidence_hash, detail_type, detail)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (evidence_event_id) DO NOTHING",
    )
    .bind(&record.event_id)
    .bind(record.seq)
    .bind(hash)
    .bind(detail_type)
    .bind(&detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An alert claimed for publishing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingAlert {
    pub id: i64,
    pub detail_type: String,
    pub detail: Value,
    pub attempts: i32,
}

/// What happened to a claimed alert.
#[derive(Debug, Clone)]
pub enum AlertDelivery {
    Published,
    /// Not accepted; try again at the given time.
    Failed {
        error: String,
        retry_at: DateTime<Utc>,
    },
}

pub(super) async fn claim_due(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<PendingAlert>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, detail_type, detail, attempts FROM alert_outbox
          WHERE published_at IS NULL AND next_attempt_at <= now()
          ORDER BY id
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

pub(super) async fn finish(
    tx: &mut Transaction<'_, Postgres>,
    results: &[(i64, AlertDelivery)],
) -> Result<(), StoreError> {
    for (id, delivery) in results {
        match delivery {
            AlertDelivery::Published => {
                sqlx::query(
                    "UPDATE alert_outbox SET published_at = now(), attempts = attempts + 1,
                            last_error = NULL
                      WHERE id = $1",
                )
                .bind(id)
                .execute(&mut **tx)
                .await?;
            }
            AlertDelivery::Failed { error, retry_at } => {
                sqlx::query(
                    "UPDATE alert_outbox SET attempts = attempts + 1, last_error = $2,
                            next_attempt_at = $3
                      WHERE id = $1",
                )
                .bind(id)
                .bind(error)
                .bind(retry_at)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(())
}
