//! The alert outbox: transitions worth a page, written with their evidence, published later.
//!
//! `store::write` calls [`alert_kind`] and [`enqueue_all`] inside the batch transaction; the
//! [`super::publisher`] drains the rows.
//!
//! An alert row is inserted in the transaction that appends the transition's evidence record,
//! keyed by that record's event id, so each transition yields exactly one alert and a failed
//! `PutEvents` can never lose one: the row stays until EventBridge has accepted it.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::domain::{ControlId, SignatureStatus};
use crate::evidence::ChainedRecord;
use crate::evidence::detail::{
    ControlTransitionDetail, EvidenceDetail, ExceptionAction, ExceptionDetail, ExceptionNote,
};
use crate::evidence::timeline::AlertNote;

/// `detail-type` of an alert about a digest's signature.
pub const SIGNATURE_ALERT: &str = "ECR Audit Signature Alert";
/// `detail-type` of an alert about a control that went from PASS to FAIL.
pub const CONTROL_REGRESSION_ALERT: &str = "ECR Audit Control Regression";
/// `detail-type` of an alert about a control that went from PASS to UNKNOWN.
pub const CONTROL_UNKNOWN_ALERT: &str = "ECR Audit Control Unknown";
/// `detail-type` of an alert about a control that went PASS → FAIL and back FAIL → PASS within
/// `ECR_AUDIT_RESTORED_WINDOW`.
pub const CONTROL_RESTORED_ALERT: &str = "ECR Audit Control Regressed And Restored";
/// `detail-type` of an alert about a control failing longer than `ECR_AUDIT_FAILING_GRACE`.
pub const CONTROL_FAILING_ALERT: &str = "ECR Audit Control Failing";
/// `detail-type` of an alert about a failing control whose exception ended (expired or
/// revoked): the finding is open again.
pub const EXCEPTION_ENDED_ALERT: &str = "ECR Audit Exception Ended";
/// Version of the `detail` schema documented in docs/ALERTS.md.
pub const ALERT_SCHEMA_VERSION: &str = "1";

/// Who pushed a digest, with which tag, when.
type PushRecord = (Option<String>, Option<String>, Option<DateTime<Utc>>);

/// What one evidence record means for paging, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertKind {
    /// A digest's signature went to a status that pages.
    Signature {
        status: SignatureStatus,
        previous: Option<SignatureStatus>,
        reason: String,
    },
    /// A control went from PASS to FAIL.
    Regression {
        control: String,
        reason: String,
        previous_reason: String,
    },
    /// A control went from PASS to UNKNOWN: ecr-audit can no longer read what it needs.
    Blinded {
        control: String,
        reason: String,
        previous_reason: String,
    },
    /// A control went back from FAIL to PASS within the window of its PASS → FAIL: the
    /// weakening was undone, and whatever happened meanwhile (an overwritten tag) was not.
    Restored {
        control: String,
        reason: String,
        restored: crate::evidence::detail::RegressedAndRestored,
    },
    /// The exception covering a failing control ended: the finding is open again.
    ExceptionEnded {
        reason: String,
        exception: Box<ExceptionNote>,
        /// `expired`, or the revocation's reason.
        end_reason: String,
    },
}

impl AlertKind {
    /// The control that regressed, when it is one this build evaluates (for the metrics).
    pub(crate) fn regressed_control(&self) -> Option<ControlId> {
        match self {
            Self::Regression { control, .. } => ControlId::from_str_opt(control),
            Self::Signature { .. }
            | Self::Blinded { .. }
            | Self::Restored { .. }
            | Self::ExceptionEnded { .. } => None,
        }
    }

    /// The control that became unreadable, when it is one this build evaluates.
    pub(crate) fn blinded_control(&self) -> Option<ControlId> {
        match self {
            Self::Blinded { control, .. } => ControlId::from_str_opt(control),
            Self::Signature { .. }
            | Self::Regression { .. }
            | Self::Restored { .. }
            | Self::ExceptionEnded { .. } => None,
        }
    }

    /// The control regressed and restored within the window, when this build evaluates it.
    pub(crate) fn restored_control(&self) -> Option<ControlId> {
        match self {
            Self::Restored { control, .. } => ControlId::from_str_opt(control),
            Self::Signature { .. }
            | Self::Regression { .. }
            | Self::Blinded { .. }
            | Self::ExceptionEnded { .. } => None,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Signature { reason, .. }
            | Self::Regression { reason, .. }
            | Self::Blinded { reason, .. }
            | Self::Restored { reason, .. }
            | Self::ExceptionEnded { reason, .. } => reason,
        }
    }
}

/// Whether (and how) a record pages, from its typed detail.
pub fn alert_kind(record: &ChainedRecord) -> Option<AlertKind> {
    match record.typed_detail() {
        EvidenceDetail::SignatureTransition(detail) if detail.to.pages() => {
            Some(AlertKind::Signature {
                status: detail.to,
                previous: detail.from,
                reason: detail.reason,
            })
        }
        // A regression under an exception in force is recorded, reported EXCEPTED, and does
        // not page (docs/ALERTS.md).
        EvidenceDetail::ControlTransition(detail) if detail.is_unexcepted_regression() => {
            Some(AlertKind::Regression {
                previous_reason: detail.from.map(|f| f.reason).unwrap_or_default(),
                control: detail.control,
                reason: detail.to.reason,
            })
        }
        EvidenceDetail::ControlTransition(ControlTransitionDetail {
            control,
            to,
            regressed_and_restored: Some(restored),
            ..
        }) => Some(AlertKind::Restored {
            control,
            reason: to.reason,
            restored,
        }),
        EvidenceDetail::ControlTransition(detail) if detail.is_blinding() => {
            Some(AlertKind::Blinded {
                previous_reason: detail.from.map(|f| f.reason).unwrap_or_default(),
                control: detail.control,
                reason: detail.to.reason,
            })
        }
        EvidenceDetail::Exception(ExceptionDetail {
            action: ExceptionAction::Reopened,
            exception: Some(exception),
            verdict: Some(verdict),
            end_reason,
            ..
        }) => Some(AlertKind::ExceptionEnded {
            reason: verdict.reason,
            exception: Box::new(exception),
            end_reason: end_reason.unwrap_or_default(),
        }),
        _ => None,
    }
}

/// Queues the alert for a chained record (its `seq` and `hash` final).
///
/// # Errors
/// When a statement fails.
pub async fn enqueue(
    conn: &mut PgConnection,
    record: &ChainedRecord,
    hash: &str,
    kind: AlertKind,
) -> Result<(), sqlx::Error> {
    enqueue_all(conn, vec![(record, hash, kind)]).await
}

/// Queues the alerts of a batch's chained records in two statements whatever their number:
/// they run under the chain head lock, which every other batch waits for, so a storm of
/// unsigned pushes must not add two round trips per alert (docs/PERFORMANCE.md, "A shorter
/// hold").
///
/// # Errors
/// When a statement fails.
pub async fn enqueue_all(
    conn: &mut PgConnection,
    alerts: Vec<(&ChainedRecord, &str, AlertKind)>,
) -> Result<(), sqlx::Error> {
    if alerts.is_empty() {
        return Ok(());
    }
    let signed: Vec<&ChainedRecord> = alerts
        .iter()
        .filter(|(_, _, kind)| matches!(kind, AlertKind::Signature { .. }))
        .map(|(record, ..)| *record)
        .collect();
    let pushed = pushed_records(conn, &signed).await?;
    let mut rows = OutboxRows::default();
    for (record, hash, kind) in alerts {
        let mut detail = common_detail(record, hash, &kind);
        let (detail_type, specific) = match kind {
            AlertKind::Signature {
                status, previous, ..
            } => {
                let push = pushed.get(&image_key(record)).cloned().unwrap_or_default();
                (
                    SIGNATURE_ALERT,
                    signature_detail(record, status, previous, push),
                )
            }
            control => control_detail(control),
        };
        if let (Value::Object(detail), Value::Object(specific)) = (&mut detail, specific) {
            detail.extend(specific);
        }
        rows.event_id.push(record.event_id.clone());
        rows.seq.push(record.seq);
        rows.hash.push(hash.to_owned());
        rows.detail_type.push(detail_type);
        rows.detail.push(detail);
    }
    sqlx::query(
        "INSERT INTO alert_outbox (evidence_event_id, evidence_seq, evidence_hash, detail_type, detail)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[])
         ON CONFLICT (evidence_event_id) DO NOTHING",
    )
    .bind(&rows.event_id)
    .bind(&rows.seq)
    .bind(&rows.hash)
    .bind(&rows.detail_type)
    .bind(&rows.detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The outbox rows of one insert, column by column.
#[derive(Default)]
struct OutboxRows {
    event_id: Vec<String>,
    seq: Vec<i64>,
    hash: Vec<String>,
    detail_type: Vec<&'static str>,
    detail: Vec<Value>,
}

/// The type and members of an alert about a control (`enqueue_all` handles signature alerts,
/// which read the image row; given one here, it adds no members).
fn control_detail(kind: AlertKind) -> (&'static str, Value) {
    match kind {
        AlertKind::Signature { .. } => (SIGNATURE_ALERT, json!({})),
        AlertKind::Regression {
            control,
            previous_reason,
            ..
        } => (
            CONTROL_REGRESSION_ALERT,
            json!({
                "alert": "CONTROL_REGRESSION",
                "control": control,
                "status": "FAIL",
                "previous_status": "PASS",
                "previous_reason": previous_reason,
            }),
        ),
        AlertKind::Blinded {
            control,
            previous_reason,
            ..
        } => (
            CONTROL_UNKNOWN_ALERT,
            json!({
                "alert": "CONTROL_UNKNOWN",
                "control": control,
                "status": "UNKNOWN",
                "previous_status": "PASS",
                "previous_reason": previous_reason,
            }),
        ),
        AlertKind::Restored {
            control, restored, ..
        } => (
            CONTROL_RESTORED_ALERT,
            json!({
                "alert": "CONTROL_REGRESSED_AND_RESTORED",
                "control": control,
                "status": "PASS",
                "previous_status": "FAIL",
                "regressed_by": restored.regressed_by,
                "regressed_at": restored.regressed_at,
                "restored_by": restored.restored_by,
                "seconds": restored.seconds,
            }),
        ),
        AlertKind::ExceptionEnded {
            exception,
            end_reason,
            ..
        } => (
            EXCEPTION_ENDED_ALERT,
            exception_ended_detail(&exception, &end_reason),
        ),
    }
}

/// A control failing beyond the grace period (`store::failing`).
#[derive(Debug, Clone)]
pub struct FailingFinding<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub repository: &'a str,
    pub control: &'a str,
    pub reason: &'a str,
    /// When the status became FAIL.
    pub since: DateTime<Utc>,
    /// Whose request made it FAIL (`unattributed` when none named one).
    pub changed_by: Option<&'a str>,
}

/// Queues the one `CONTROL_FAILING` alert of a failure, pointing at the evidence record
/// (`seq`, `hash`, `event_id`) of the transition that started it. Keyed by that record, so a
/// failure alerts once, and a later failure of the same control (a new transition) again.
///
/// # Errors
/// When the statement fails.
pub async fn enqueue_failing(
    conn: &mut PgConnection,
    finding: &FailingFinding<'_>,
    (seq, hash, event_id): (i64, &str, &str),
) -> Result<(), sqlx::Error> {
    let alert_id = format!("failing/{event_id}");
    let detail = json!({
        "schema_version": ALERT_SCHEMA_VERSION,
        "alert_id": alert_id,
        "account": finding.account,
        "region": finding.region,
        "repository": finding.repository,
        "reason": finding.reason,
        "actor": finding.changed_by,
        "event_time": finding.since.to_rfc3339(),
        "recorded_at": Utc::now().to_rfc3339(),
        "evidence": {"seq": seq, "hash": hash},
        "alert": "CONTROL_FAILING",
        "control": finding.control,
        "status": "FAIL",
        "failing_since": finding.since.to_rfc3339(),
        "failing_seconds": (Utc::now() - finding.since).num_seconds(),
        "class": "new",
    });
    sqlx::query(
        "INSERT INTO alert_outbox (evidence_event_id, evidence_seq, evidence_hash, detail_type, detail)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (evidence_event_id) DO NOTHING",
    )
    .bind(&alert_id)
    .bind(seq)
    .bind(hash)
    .bind(CONTROL_FAILING_ALERT)
    .bind(&detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The members of an alert about an ended exception: the finding fails again.
fn exception_ended_detail(exception: &ExceptionNote, end_reason: &str) -> Value {
    let alert = if end_reason == crate::domain::EXCEPTION_EXPIRED_REASON {
        "EXCEPTION_EXPIRED"
    } else {
        "EXCEPTION_REVOKED"
    };
    json!({
        "alert": alert,
        "control": exception.control,
        "status": "FAIL",
        "previous_status": "EXCEPTED",
        "exception": {
            "id": exception.id,
            "repository": exception.repository,
            "reason": exception.reason,
            "approver": exception.approver,
            "expires_at": exception.expires_at,
            "source": exception.source,
            "end_reason": end_reason,
        },
    })
}

/// The members every alert has (docs/ALERTS.md).
fn common_detail(record: &ChainedRecord, hash: &str, kind: &AlertKind) -> Value {
    json!({
        "schema_version": ALERT_SCHEMA_VERSION,
        "alert_id": record.event_id,
        "account": record.account,
        "region": record.region,
        "repository": record.repository,
        "reason": kind.reason(),
        "actor": record.actor,
        "event_time": record.event_time.to_rfc3339(),
        "recorded_at": record.recorded_at.to_rfc3339(),
        "evidence": {"seq": record.seq, "hash": hash},
    })
}

/// An image row's key, as a record names it.
type ImageKey = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn image_key(record: &ChainedRecord) -> ImageKey {
    (
        record.account.clone(),
        record.region.clone(),
        record.repository.clone(),
        record.digest.clone(),
    )
}

/// Who pushed each digest, with which tag, when (from the image rows the batch just wrote),
/// in one statement.
async fn pushed_records(
    conn: &mut PgConnection,
    records: &[&ChainedRecord],
) -> Result<std::collections::HashMap<ImageKey, PushRecord>, sqlx::Error> {
    if records.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let column = |get: fn(&ChainedRecord) -> &Option<String>| -> Vec<Option<&str>> {
        records.iter().map(|r| get(r).as_deref()).collect()
    };
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        // One lookup by the images key per record (`OFFSET 0` keeps it one), as the settings
        // at push are derived (src/store/history.rs): never a join the planner could hash.
        "SELECT k.account, k.region, k.repository, k.digest, i.pushed_by, i.push_tag, i.pushed_at
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
                AS k(account, region, repository, digest)
          CROSS JOIN LATERAL (
                SELECT i.pushed_by, i.push_tag, i.pushed_at FROM images i
                 WHERE i.account = k.account AND i.region = k.region
                   AND i.repository = k.repository AND i.digest = k.digest
                OFFSET 0) i",
    )
    .bind(column(|r| &r.account))
    .bind(column(|r| &r.region))
    .bind(column(|r| &r.repository))
    .bind(column(|r| &r.digest))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(account, region, repository, digest, by, tag, at)| {
            ((account, region, repository, digest), (by, tag, at))
        })
        .collect())
}

/// The members of a signature alert.
fn signature_detail(
    record: &ChainedRecord,
    status: SignatureStatus,
    previous: Option<SignatureStatus>,
    (pushed_by, tag, pushed_at): PushRecord,
) -> Value {
    json!({
        "alert": match status {
            SignatureStatus::Failed => "SIGNING_FAILED",
            other => other.as_str(),
        },
        "digest": record.digest,
        "tag": tag,
        "status": status,
        "previous_status": previous,
        "pushed_by": pushed_by,
        "pushed_at": pushed_at.map(|t| t.to_rfc3339()),
        "explain": explain_command(record),
    })
}

/// The one-line command that prints the digest's history (`ecr-audit explain`), so whoever is
/// paged starts from the evidence; `None` when the record names no digest.
fn explain_command(record: &ChainedRecord) -> Option<String> {
    let (Some(repository), Some(digest)) = (&record.repository, &record.digest) else {
        return None;
    };
    let mut command = format!("ecr-audit explain {repository}@{digest}");
    if let Some(account) = &record.account {
        command.push_str(&format!(" --account {account}"));
    }
    if let Some(region) = &record.region {
        command.push_str(&format!(" --region {region}"));
    }
    Some(command)
}

/// The alerts queued for these evidence records, sent or not (`ecr-audit explain`).
///
/// # Errors
/// When the query fails.
pub async fn sent_for(pool: &PgPool, seqs: &[i64]) -> Result<Vec<AlertNote>, sqlx::Error> {
    type Row = (
        i64,
        Option<String>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        i32,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT evidence_seq, detail->>'alert', created_at, published_at, attempts, last_error
           FROM alert_outbox WHERE evidence_seq = ANY($1) ORDER BY evidence_seq, id",
    )
    .bind(seqs)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(seq, alert, queued_at, published_at, attempts, last_error)| AlertNote {
                seq,
                alert: alert.unwrap_or_else(|| "(unnamed)".to_owned()),
                queued_at,
                published_at,
                attempts,
                last_error,
            },
        )
        .collect())
}

/// An alert claimed for publishing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PendingAlert {
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

/// Claims up to `limit` alerts due for publishing (`FOR UPDATE SKIP LOCKED`, so replicas
/// share the outbox); finish with [`finish`].
///
/// # Errors
/// When the database fails.
pub(crate) async fn claim_due(
    pool: &PgPool,
    limit: i64,
) -> Result<(Transaction<'static, Postgres>, Vec<PendingAlert>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query_as(
        "SELECT id, detail_type, detail, attempts FROM alert_outbox
          WHERE published_at IS NULL AND next_attempt_at <= now()
          ORDER BY id
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok((tx, claimed))
}

/// Records what publishing did and commits.
///
/// # Errors
/// When the database fails; the alerts are then published again later.
pub async fn finish(
    mut tx: Transaction<'static, Postgres>,
    results: &[(i64, AlertDelivery)],
) -> Result<(), sqlx::Error> {
    for (id, delivery) in results {
        record_delivery(&mut tx, *id, delivery).await?;
    }
    tx.commit().await
}

async fn record_delivery(
    conn: &mut PgConnection,
    id: i64,
    delivery: &AlertDelivery,
) -> Result<(), sqlx::Error> {
    match delivery {
        AlertDelivery::Published => {
            sqlx::query(
                "UPDATE alert_outbox SET published_at = now(), attempts = attempts + 1,
                        last_error = NULL
                  WHERE id = $1",
            )
            .bind(id)
            .execute(conn)
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
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::evidence::kind::EvidenceKind;

    fn record(kind: EvidenceKind, detail: Value) -> ChainedRecord {
        ChainedRecord {
            seq: 1,
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            event_id: "e1".into(),
            event_time: chrono::DateTime::UNIX_EPOCH,
            kind,
            outcome: "processed".into(),
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
            repository: Some("team/app".into()),
            digest: None,
            tag: None,
            actor: None,
            detail,
            prev_hash: "0".repeat(64),
            format_version: None,
        }
    }

    fn exception() -> Value {
        json!({"id": "EX-1", "control": "ECR.2", "repository": "team/*", "account": null,
               "region": null, "reason": "r", "approver": "sec@example.com",
               "expires_at": "2027-03-31T00:00:00.000000Z", "source": "cli"})
    }

    #[test]
    fn a_regression_under_an_exception_does_not_page_and_its_end_does() {
        let mut regression = json!({"control": "ECR.2", "from": {"status": "PASS", "reason": "ok"},
                                    "to": {"status": "FAIL", "reason": "MUTABLE"}});
        assert!(matches!(
            alert_kind(&record(EvidenceKind::ControlTransition, regression.clone())),
            Some(AlertKind::Regression { .. })
        ));
        regression["exception"] = exception();
        assert_eq!(
            alert_kind(&record(EvidenceKind::ControlTransition, regression)),
            None
        );

        for (end_reason, alert) in [
            ("expired", "EXCEPTION_EXPIRED"),
            ("the tool was fixed", "EXCEPTION_REVOKED"),
        ] {
            let reopened = json!({"action": "reopened", "exception": exception(),
                                  "verdict": {"status": "FAIL", "reason": "MUTABLE"},
                                  "end_reason": end_reason});
            let kind = alert_kind(&record(EvidenceKind::ExceptionChanged, reopened))
                .expect("the end of an exception pages");
            let (detail_type, detail) = control_detail(kind);
            assert_eq!(detail_type, EXCEPTION_ENDED_ALERT);
            assert_eq!(detail["alert"], alert);
            assert_eq!(detail["previous_status"], "EXCEPTED");
            assert_eq!(detail["exception"]["approver"], "sec@example.com");
        }
        let applied = json!({"action": "applied", "exception": exception(),
                             "verdict": {"status": "FAIL", "reason": "MUTABLE"}});
        assert_eq!(
            alert_kind(&record(EvidenceKind::ExceptionChanged, applied)),
            None
        );
    }
}
