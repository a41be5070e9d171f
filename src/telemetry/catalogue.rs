//! The metrics catalogue: one static entry per metric (name, type, labels with their values,
//! HELP text, meaning, example query). `Metrics::new` registers each entry with its HELP text
//! and [`markdown_table`] renders the table of docs/METRICS.md, so the two cannot drift
//! (the test `telemetry::catalogue::tests::docs_table_matches_the_catalogue` checks it).

use crate::domain::{ControlId, ControlStatus, ScanStatus, SignatureStatus};

use super::events::{
    AlertOutcome, ApiOutcome, AwsOperation, DriftKind, EventKind, EventOutcome, QueueRole,
    QueueState, RejectionCode, RetryCode,
};

/// The prefix of every exported name.
pub const PREFIX: &str = "ecr_audit";

/// How Prometheus types a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    /// A constant gauge of 1 whose labels carry the information.
    Info,
}

impl MetricType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Info => "gauge (info)",
        }
    }
}

/// The unit suffix of a metric's exported name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricUnit {
    None,
    Seconds,
}

/// The values a label may take.
#[derive(Debug, Clone, Copy)]
pub enum LabelValues {
    /// A closed set: the values of an enum (`as_str()`).
    Closed(fn() -> Vec<&'static str>),
    /// One value per process, described in words (e.g. the version).
    Described(&'static str),
}

/// One label of a metric.
#[derive(Debug, Clone, Copy)]
pub struct LabelSpec {
    pub name: &'static str,
    pub values: LabelValues,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// The registered name, without prefix, unit or `_total`.
    pub name: &'static str,
    pub kind: MetricType,
    pub unit: MetricUnit,
    pub labels: &'static [LabelSpec],
    /// The HELP text of `/metrics` and the first sentence of the docs' meaning column.
    pub help: &'static str,
    /// What the docs add to the HELP text (may be empty).
    pub details: &'static str,
    /// An example PromQL query.
    pub query: &'static str,
}

impl MetricSpec {
    /// The name Prometheus shows for the metric's samples (counters end in `_total`).
    pub fn exported_name(&self) -> String {
        let unit = match self.unit {
            MetricUnit::None => "",
            MetricUnit::Seconds => "_seconds",
        };
        let suffix = match self.kind {
            MetricType::Counter => "_total",
            MetricType::Info => "_info",
            MetricType::Gauge | MetricType::Histogram => "",
        };
        format!("{PREFIX}_{}{unit}{suffix}", self.name)
    }
}

fn control_ids() -> Vec<&'static str> {
    ControlId::ALL.iter().map(|c| c.as_str()).collect()
}

fn control_statuses() -> Vec<&'static str> {
    ControlStatus::ALL.iter().map(|s| s.as_str()).collect()
}

fn signature_statuses() -> Vec<&'static str> {
    SignatureStatus::ALL.iter().map(|s| s.as_str()).collect()
}

fn scan_statuses() -> Vec<&'static str> {
    ScanStatus::ALL.iter().map(|s| s.as_str()).collect()
}

const fn closed(name: &'static str, values: fn() -> Vec<&'static str>) -> LabelSpec {
    LabelSpec {
        name,
        values: LabelValues::Closed(values),
    }
}

const CONTROL: LabelSpec = closed("control", control_ids);

pub const CONTROL_REPOSITORIES: MetricSpec = MetricSpec {
    name: "control_repositories",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[CONTROL, closed("status", control_statuses)],
    help: "Repositories per Security Hub control and status (PASS, FAIL, UNKNOWN), from stored state",
    details: "Repositories that exist, per control (Security Hub's `ECR.*` and ecr-audit's own `ECRA.*` checks, see docs/CONTROLS.md) and current status.",
    query: r#"max by (control) (ecr_audit_control_repositories{status="FAIL"})"#,
};

pub const IMAGES: MetricSpec = MetricSpec {
    name: "images",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[closed("signature", signature_statuses)],
    help: "Images (not artifacts) that exist, per signature status, from stored state",
    details: "Artifacts (signatures, SBOMs, attestations) are not images and are not counted.",
    query: r#"max(ecr_audit_images{signature="UNSIGNED"})"#,
};

pub const IMAGE_SCANS: MetricSpec = MetricSpec {
    name: "image_scans",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[closed("scan", scan_statuses)],
    help: "Images (not artifacts) that exist, per scan status, from stored state",
    details: "",
    query: "max by (scan) (ecr_audit_image_scans)",
};

pub const UNSIGNED_PUSHES: MetricSpec = MetricSpec {
    name: "unsigned_pushes",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[],
    help: "Digests that became UNSIGNED, each counted once, by the process that recorded it",
    details: "Only the transaction that first records the digest as `UNSIGNED` (column `images.first_unsigned_at`) counts it, whatever the redeliveries and replicas.",
    query: "sum(increase(ecr_audit_unsigned_pushes_total[15m])) > 0",
};

pub const RECHECK_BACKLOG: MetricSpec = MetricSpec {
    name: "signature_recheck_backlog",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[],
    help: "Signature re-checks that are due now and not yet done, from stored state",
    details: "`signature_rechecks` rows with `due_at <= now()`; it should stay near 0.",
    query: "max(ecr_audit_signature_recheck_backlog) > 100",
};

pub const EVENTS: MetricSpec = MetricSpec {
    name: "events",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[
        closed("kind", EventKind::values),
        closed("outcome", EventOutcome::values),
    ],
    help: "Events handled by this process, by kind and outcome (processed, duplicate, ignored, rejected, retried)",
    details: "`retried` counts each time a message was left on the queue for a later attempt; `unparseable` and `unknown` are messages whose kind could not be read.",
    query: "sum by (outcome) (rate(ecr_audit_events_total[5m]))",
};

pub const EVENT_LAG: MetricSpec = MetricSpec {
    name: "event_lag",
    kind: MetricType::Histogram,
    unit: MetricUnit::Seconds,
    labels: &[],
    help: "Time from the event's own timestamp until its effects were committed",
    details: "The event's own timestamp is CloudTrail `eventTime` or the envelope `time`.",
    query: "histogram_quantile(0.99, sum by (le) (rate(ecr_audit_event_lag_seconds_bucket[5m])))",
};

pub const AWS_API_CALLS: MetricSpec = MetricSpec {
    name: "aws_api_calls",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[
        closed("operation", AwsOperation::values),
        closed("outcome", ApiOutcome::values),
    ],
    help: "AWS API calls made by enrichment, by operation and outcome (ok, transient, service_error)",
    details: "Counted after the SDK's own retries. `transient` means throttling, a timeout or a 5xx outlasted the retries; `service_error` is a lasting answer such as not-found or access denied.",
    query: r#"sum by (operation) (rate(ecr_audit_aws_api_calls_total{outcome!="ok"}[5m]))"#,
};

pub const REJECTED_MESSAGES: MetricSpec = MetricSpec {
    name: "rejected_messages",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("code", RejectionCode::values)],
    help: "Messages that could never be processed and were stored in rejected_messages, by reason code",
    details: "Each is stored verbatim in the `rejected_messages` table with its reason, then deleted from the queue.",
    query: "sum by (code) (increase(ecr_audit_rejected_messages_total[1h]))",
};

pub const MESSAGE_RETRIES: MetricSpec = MetricSpec {
    name: "message_retries",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("code", RetryCode::values)],
    help: "Messages left on the queue for a later retry, by error code",
    details: "After the queue's `maxReceiveCount` SQS moves such a message to the dead-letter queue; `db_refused` and `db_migrate` are left for exactly that.",
    query: "sum by (code) (rate(ecr_audit_message_retries_total[5m]))",
};

pub const SQS_DELETE_FAILURES: MetricSpec = MetricSpec {
    name: "sqs_delete_failures",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[],
    help: "Messages whose effects were committed but whose SQS delete failed (they are redelivered and deduplicated)",
    details: "They are recognised as duplicates, so this is noise, not loss.",
    query: "increase(ecr_audit_sqs_delete_failures_total[1h])",
};

pub const QUEUE_MESSAGES: MetricSpec = MetricSpec {
    name: "queue_messages",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[
        closed("queue", QueueRole::values),
        closed("state", QueueState::values),
    ],
    help: "Messages in the main queue and its dead-letter queue (SQS approximate counts), by state (visible, in_flight)",
    details: "The dead-letter queue is the one named by the main queue's redrive policy; polled every `ECR_AUDIT_QUEUE_METRICS_INTERVAL` (15 s).",
    query: r#"max(ecr_audit_queue_messages{queue="dead_letter",state="visible"}) > 0"#,
};

pub const CONTROL_REGRESSIONS: MetricSpec = MetricSpec {
    name: "control_regressions",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[CONTROL],
    help: "Repositories whose control went from PASS to FAIL, committed by this process",
    details: "Each transition is counted once, by the process that committed it.",
    query: "sum by (control) (increase(ecr_audit_control_regressions_total[15m])) > 0",
};

pub const LAST_COMMIT: MetricSpec = MetricSpec {
    name: "last_commit_timestamp",
    kind: MetricType::Gauge,
    unit: MetricUnit::Seconds,
    labels: &[],
    help: "Unix time of this process's last committed batch",
    details: "With a non-empty queue, an old value means the pipeline is stalled.",
    query: "time() - max(ecr_audit_last_commit_timestamp_seconds)",
};

pub const RECONCILE_DURATION: MetricSpec = MetricSpec {
    name: "reconcile_duration",
    kind: MetricType::Gauge,
    unit: MetricUnit::Seconds,
    labels: &[],
    help: "Duration of this process's last completed reconcile sweep",
    details: "",
    query: "max(ecr_audit_reconcile_duration_seconds)",
};

pub const RECONCILE_LAST_SUCCESS: MetricSpec = MetricSpec {
    name: "reconcile_last_success_timestamp",
    kind: MetricType::Gauge,
    unit: MetricUnit::Seconds,
    labels: &[],
    help: "Unix time at which the last successful reconcile sweep (by any replica) finished, from stored state; 0 before the first",
    details: "Read from the `reconcile_runs` table.",
    query: "time() - max(ecr_audit_reconcile_last_success_timestamp_seconds) > 3 * 3600",
};

pub const RECONCILE_DRIFT: MetricSpec = MetricSpec {
    name: "reconcile_drift",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("kind", DriftKind::values)],
    help: "Changes a reconcile sweep found that no event had reported, by kind",
    details: "Each is recorded as evidence observed by reconcile.",
    query: "sum by (kind) (increase(ecr_audit_reconcile_drift_total[1d]))",
};

pub const ALERT_EVENTS: MetricSpec = MetricSpec {
    name: "alert_events",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("outcome", AlertOutcome::values)],
    help: "Alert events put on the EventBridge alert bus, by outcome (published, failed)",
    details: "The bus is `ECR_AUDIT_ALERT_BUS`; `failed` attempts are retried with backoff.",
    query: r#"sum(rate(ecr_audit_alert_events_total{outcome="failed"}[5m]))"#,
};

pub const ALERT_BACKLOG: MetricSpec = MetricSpec {
    name: "alert_backlog",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[],
    help: "Alert events recorded but not yet accepted by EventBridge, from stored state",
    details: "Rows of `alert_outbox` not yet published.",
    query: "max(ecr_audit_alert_backlog) > 0",
};

pub const BUILD: MetricSpec = MetricSpec {
    name: "build",
    kind: MetricType::Info,
    unit: MetricUnit::None,
    labels: &[LabelSpec {
        name: "version",
        values: LabelValues::Described("the running version"),
    }],
    help: "The running ecr-audit version",
    details: "Its value is 1.",
    query: "count by (version) (ecr_audit_build_info)",
};

/// Every metric, in the order of docs/METRICS.md.
pub const CATALOGUE: &[MetricSpec] = &[
    CONTROL_REPOSITORIES,
    IMAGES,
    IMAGE_SCANS,
    UNSIGNED_PUSHES,
    RECHECK_BACKLOG,
    EVENTS,
    EVENT_LAG,
    AWS_API_CALLS,
    REJECTED_MESSAGES,
    MESSAGE_RETRIES,
    SQS_DELETE_FAILURES,
    QUEUE_MESSAGES,
    CONTROL_REGRESSIONS,
    LAST_COMMIT,
    RECONCILE_DURATION,
    RECONCILE_LAST_SUCCESS,
    RECONCILE_DRIFT,
    ALERT_EVENTS,
    ALERT_BACKLOG,
    BUILD,
];

fn render_labels(labels: &[LabelSpec]) -> String {
    if labels.is_empty() {
        return "none".to_owned();
    }
    let rendered: Vec<String> = labels
        .iter()
        .map(|label| match label.values {
            LabelValues::Closed(values) => {
                let values: Vec<String> = values().iter().map(|v| format!("`{v}`")).collect();
                format!("`{}` ({})", label.name, values.join(", "))
            }
            LabelValues::Described(words) => format!("`{}` ({words})", label.name),
        })
        .collect();
    rendered.join(", ")
}

fn render_row(spec: &MetricSpec) -> String {
    let meaning = if spec.details.is_empty() {
        format!("{}.", spec.help)
    } else {
        format!("{}. {}", spec.help, spec.details)
    };
    format!(
        "| `{}` | {} | {} | {} | `{}` |",
        spec.exported_name(),
        spec.kind.as_str(),
        render_labels(spec.labels),
        meaning.replace('|', "\\|"),
        spec.query,
    )
}

/// The Markdown table of docs/METRICS.md (between its `metrics:begin`/`metrics:end` markers).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| name | type | labels (values) | meaning (HELP text first) | example query |\n|---|---|---|---|---|\n",
    );
    for spec in CATALOGUE {
        out.push_str(&render_row(spec));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
