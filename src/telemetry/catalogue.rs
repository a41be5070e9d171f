//! The metrics catalogue: one static entry per metric (name, type, labels with their values,
//! HELP text, meaning, example query). `Metrics::new` registers each entry with its HELP text
//! and [`markdown_table`] renders the table of docs/METRICS.md, so the two cannot drift
//! (the test `telemetry::catalogue::tests::docs_table_matches_the_catalogue` checks it).

use crate::domain::{ControlId, ReportedStatus, ScanStatus, SignatureStatus};

use super::events::{
    AccountChange, AlertOutcome, AnchorOutcome, ApiOutcome, AwsOperation, DeployDecision,
    DeployMode, DistrustedHint, DriftKind, EventKind, EventOutcome, ExceptionEnd, FindingClass,
    HeadOutcome, OnDemandOutcome, QueueRole, QueueState, RejectionCode, RetryCode, ReverifyCause,
    RevocationOutcome, ScanningDisagreement, SkipReason, VerdictRecord, VerificationCheck,
    VerificationOutcome, ViewReload,
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
    ReportedStatus::ALL.iter().map(|s| s.as_str()).collect()
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
    help: "Repositories per Security Hub control and status (PASS, FAIL, UNKNOWN, EXCEPTED), from stored state",
    details: "Repositories that exist, per control (Security Hub's `ECR.*` and ecr-audit's own `ECRA.*` checks, see docs/CONTROLS.md) and current status as reported: a `FAIL` under an exception in force counts as `EXCEPTED`, not `FAIL` (docs/EXCEPTIONS.md).",
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

pub const IMAGES_IN_USE: MetricSpec = MetricSpec {
    name: "images_in_use",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[closed("signature", signature_statuses)],
    help: "Images (not artifacts) that exist and Inspector reports in use (inUseCount > 0), per signature status, from stored state",
    details: "Known only under ENHANCED scanning, from the coverage sweep (`ECR_AUDIT_COVERAGE_INTERVAL`, docs/RUNBOOK.md \"Images in use\"); an image whose use is unknown is not counted. A failed coverage read leaves the last answer in place and moves `ecr_audit_aws_api_calls_total{operation=\"inspector2:ListCoverage\"}` (and `ecr_audit_aws_access_denied_total` when refused).",
    query: r#"max by (signature) (ecr_audit_images_in_use{signature=~"UNSIGNED|UNTRUSTED|FAILED"}) > 0"#,
};

pub const UNSIGNED_PUSHES: MetricSpec = MetricSpec {
    name: "unsigned_pushes",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[],
    help: "Digests that first had no trusted signature (UNSIGNED or UNTRUSTED), each counted once, by the process that recorded it",
    details: "Only the transaction that first records the digest as `UNSIGNED` or `UNTRUSTED` (column `images.first_unsigned_at`) counts it, whatever the redeliveries and replicas: a forged or failing signature raises the same alert as none.",
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

pub const SIGNATURE_OLDEST_VERDICT_AGE: MetricSpec = MetricSpec {
    name: "signature_oldest_verdict_age",
    kind: MetricType::Gauge,
    unit: MetricUnit::Seconds,
    labels: &[],
    help: "Age of the oldest signature verdict among images with signatures (SIGNED, UNTRUSTED), from stored state",
    details: "`now - min(images.signature_checked_at)`; scheduled re-verification keeps it below `ECR_AUDIT_REVERIFY_INTERVAL` plus the time to work through the backlog (docs/SIGNATURES.md). 0 when no image has a signature.",
    query: "max(ecr_audit_signature_oldest_verdict_age_seconds) > 2 * 86400",
};

pub const SIGNATURE_VERIFICATIONS: MetricSpec = MetricSpec {
    name: "signature_verifications",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[
        closed("result", VerificationOutcome::values),
        closed("check", VerificationCheck::values),
    ],
    help: "Signatures verified by this process, by result (verified, skipped, rejected) and the check that failed",
    details: "Counted each time a signature is judged, whether its verification was computed or read back from `signature_verifications`. `check` is `none` when nothing failed.",
    query: r#"sum by (check) (rate(ecr_audit_signature_verifications_total{result="rejected"}[1h]))"#,
};

pub const SIGNER_REVOCATION_CHECKS: MetricSpec = MetricSpec {
    name: "signer_revocation_checks",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("outcome", RevocationOutcome::values)],
    help: "AWS Signer revocation answers (GetRevocationStatus) about verified signatures, by outcome",
    details: "`unknown`: Signer could not be asked or did not answer; under an enforced `revocation` check the signature is then `UNTRUSTED` (`revocation_unknown`).",
    query: r#"sum(rate(ecr_audit_signer_revocation_checks_total{outcome="unknown"}[15m])) > 0"#,
};

pub const SIGNATURE_REVERIFICATIONS: MetricSpec = MetricSpec {
    name: "signature_reverifications",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("cause", ReverifyCause::values)],
    help: "Current digests made due for judging their signatures again, by cause (revocation, schedule)",
    details: "`revocation`: a CloudTrail `RevokeSignature`/`RevokeSigningProfile` named the signer of a stored verification; `schedule`: the verdict was older than `ECR_AUDIT_REVERIFY_INTERVAL`.",
    query: "sum by (cause) (increase(ecr_audit_signature_reverifications_total[1d]))",
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

pub const EVIDENCE_LOCK_HELD: MetricSpec = MetricSpec {
    name: "evidence_lock_held",
    kind: MetricType::Histogram,
    unit: MetricUnit::Seconds,
    labels: &[],
    help: "Time each committed batch held the evidence head lock, from locking the head to commit",
    details: "Every appender of one database waits for this lock in turn, so one evidence sequence commits at most 1 / (mean hold) batches per second whatever the number of workers (docs/PERFORMANCE.md, \"Many workers\"). Batches that append no record take no lock and are not observed.",
    query: "sum(rate(ecr_audit_evidence_lock_held_seconds_sum[5m]))",
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

pub const DISTRUSTED_HINTS: MetricSpec = MetricSpec {
    name: "distrusted_hints",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("hint", DistrustedHint::values)],
    help: "Claims of committed messages or pushed manifests that were not taken on trust, by hint",
    details: "Each is also written in the event's evidence (`distrusted`, or `image_after.disguise`). `subject_on_image`, `missing_subject`, `signature_tag` and `runnable_content` are images dressed as artifacts: judged as images; `delete_unconfirmed` is a delete ECR did not confirm; `event_time_clamped` an event dated outside the queue's own timestamps; `push_record_too_old` a pusher dated before the image.",
    query: r#"sum by (hint) (increase(ecr_audit_distrusted_hints_total[1h])) > 0"#,
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

pub const CONTROL_BLINDED: MetricSpec = MetricSpec {
    name: "control_blinded",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[CONTROL],
    help: "Repositories whose control went from PASS to UNKNOWN, committed by this process",
    details: "A fact the control needs became unreadable (a policy that denies the audit role, an API outage): the control can no longer be judged, so a failure would go unseen. Each transition is counted once, by the process that committed it.",
    query: "sum by (control) (increase(ecr_audit_control_blinded_total[15m])) > 0",
};

pub const CONTROL_RESTORED: MetricSpec = MetricSpec {
    name: "control_regressed_and_restored",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[CONTROL],
    help: "Repositories whose control went from PASS to FAIL and back to PASS within ECR_AUDIT_RESTORED_WINDOW, committed by this process",
    details: "Counted at the FAIL → PASS transition, whose evidence names both callers and the seconds between them (`regressed_and_restored`). A control weakened and restored within seconds hides a change made meanwhile (a tag overwritten while tags were mutable) from anyone who only looks at the current posture.",
    query: "sum by (control) (increase(ecr_audit_control_regressed_and_restored_total[15m])) > 0",
};

pub const AWS_ACCESS_DENIED: MetricSpec = MetricSpec {
    name: "aws_access_denied",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("operation", AwsOperation::values)],
    help: "AWS reads refused to the audit role (AccessDenied and its variants), by operation",
    details: "Also counted as `service_error` in `ecr_audit_aws_api_calls_total`. A refused read makes the facts it carries `UNKNOWN`; a resource policy that denies the audit role is how an adversary blinds the auditor.",
    query: "sum by (operation) (increase(ecr_audit_aws_access_denied_total[15m])) > 0",
};

pub const AWS_UNAVAILABLE: MetricSpec = MetricSpec {
    name: "aws_unavailable",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("operation", AwsOperation::values)],
    help: "AWS reads that got no answer after the retries and were recorded as UNKNOWN instead of stopping the event, by operation",
    details: "Only reads an event can be judged without (registry settings, lifecycle and repository policies, key ownership, signing statuses, referrers, signing profiles): the checks that need them are `UNKNOWN` and read again later, everything else is recorded. A steady rate for one operation is an outage of that API.",
    query: "sum by (operation) (rate(ecr_audit_aws_unavailable_total[5m])) > 0",
};

pub const RECONCILE_SKIPPED: MetricSpec = MetricSpec {
    name: "reconcile_skipped_repositories",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("reason", SkipReason::values)],
    help: "Repositories a reconcile sweep could not read and skipped, by reason (unreadable, transient)",
    details: "The sweep logs the repository and the reason and goes on with the others; the next sweep tries it again.",
    query: "sum by (reason) (increase(ecr_audit_reconcile_skipped_repositories_total[1d]))",
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

pub const SCANNING_DISAGREEMENTS: MetricSpec = MetricSpec {
    name: "scanning_disagreements",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("fact", ScanningDisagreement::values)],
    help: "Repository judgements where AWS's BatchGetRepositoryScanningConfiguration answer differed from the registry rules as evaluated here, by fact",
    details: "ECR.1 follows AWS's answer; a disagreement is a bug in the rules' evaluation to report, not a verdict.",
    query: "sum by (fact) (increase(ecr_audit_scanning_disagreements_total[1d])) > 0",
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

pub const FAILING_FINDINGS: MetricSpec = MetricSpec {
    name: "failing_findings",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[CONTROL, closed("class", FindingClass::values)],
    help: "Repositories currently failing a control, per control and class (baseline: history found by a first sweep; new: failing since ecr-audit watches), from stored state",
    details: "A `baseline` finding never pages; a `new` one raises a `CONTROL_FAILING` alert event once it has failed longer than `ECR_AUDIT_FAILING_GRACE` (docs/ALERTS.md).",
    query: r#"sum by (control) (ecr_audit_failing_findings{class="baseline"})"#,
};

pub const FAILING_FINDINGS_OVERDUE: MetricSpec = MetricSpec {
    name: "failing_findings_overdue",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[CONTROL],
    help: "Repositories failing a control (class new) longer than ECR_AUDIT_FAILING_GRACE, per control, from stored state",
    details: "Each was reported once as a `CONTROL_FAILING` alert event; the count falls when the control passes again or the repository is deleted.",
    query: "sum by (control) (ecr_audit_failing_findings_overdue) > 0",
};

pub const ORGANIZATION_ACCOUNTS: MetricSpec = MetricSpec {
    name: "organization_accounts",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[],
    help: "Active accounts the last AWS Organizations discovery found in scope (ECR_AUDIT_ORGANIZATION); 0 without discovery",
    details: "Discovery runs at the start of every reconcile sweep.",
    query: "max(ecr_audit_organization_accounts)",
};

pub const ORGANIZATION_ACCOUNT_CHANGES: MetricSpec = MetricSpec {
    name: "organization_account_changes",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("change", AccountChange::values)],
    help: "Accounts that joined or left the discovered organization scope since start-up, by change",
    details: "An account that leaves is no longer read; its stored state and evidence are kept. The log names the account.",
    query: r#"sum(increase(ecr_audit_organization_account_changes_total{change="left"}[1d])) > 0"#,
};

pub const EXCEPTIONS_ENDED: MetricSpec = MetricSpec {
    name: "exceptions_ended",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("cause", ExceptionEnd::values)],
    help: "Exceptions that ended (expired, or revoked) and whose findings the worker re-opened, settled by this process",
    details: "Each ended exception is counted once, by the worker that re-opened its findings (one `EXCEPTION_EXPIRED` or `EXCEPTION_REVOKED` alert per failing repository it covered, docs/ALERTS.md).",
    query: r#"sum(increase(ecr_audit_exceptions_ended_total{cause="expired"}[15m])) > 0"#,
};

pub const EXCEPTIONS_FILE_ERRORS: MetricSpec = MetricSpec {
    name: "exceptions_file_errors",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[],
    help: "Versions of the exceptions file (ECR_AUDIT_EXCEPTIONS_FILE) refused as unreadable or invalid",
    details: "The exceptions in force are kept when the file is refused; the error is logged naming the entry.",
    query: "increase(ecr_audit_exceptions_file_errors_total[15m]) > 0",
};

pub const DEPLOY_VERDICTS: MetricSpec = MetricSpec {
    name: "deploy_verdicts",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[
        closed("decision", DeployDecision::values),
        closed("mode", DeployMode::values),
    ],
    help: "Deploy-time verdicts given under the deploy policy, one per image, by decision (allow, warn, deny) and the scope's mode",
    details: "`/v1/verdict`, `/v1/admission` and `/v1/gatekeeper` (docs/ENFORCEMENT.md). `warn` is an image admitted although it fails the policy (audit mode, or an unknown image a scope admits with a warning): a would-be denial.",
    query: r#"sum by (mode, decision) (rate(ecr_audit_deploy_verdicts_total{decision!="allow"}[5m]))"#,
};

pub const DEPLOY_VERDICT_RECORDS: MetricSpec = MetricSpec {
    name: "deploy_verdict_records",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("outcome", VerdictRecord::values)],
    help: "Deploy verdicts put on the evidence chain (recorded) or lost (dropped), counted per verdict",
    details: "Verdicts are queued off the answer's path and appended in batches of identical decisions (`deploy_verdict` records with a count, docs/ENFORCEMENT.md). `dropped` means the recorder fell behind and decisions are missing from the evidence: any increase needs attention.",
    query: r#"increase(ecr_audit_deploy_verdict_records_total{outcome="dropped"}[15m]) > 0"#,
};

pub const VERDICT_VIEW_FRESH: MetricSpec = MetricSpec {
    name: "verdict_view_fresh_timestamp",
    kind: MetricType::Gauge,
    unit: MetricUnit::Seconds,
    labels: &[],
    help: "Unix time up to which the verdict view is known to hold every committed change",
    details: "Moved by the view's heartbeat through Postgres notifications (docs/ENFORCEMENT.md, \"The view\"). Verdicts given while it is older than ECR_AUDIT_VERDICT_MAX_STALENESS say so and follow the scope's `stale` choice.",
    query: "time() - max(ecr_audit_verdict_view_fresh_timestamp_seconds)",
};

pub const VERDICT_VIEW_IMAGES: MetricSpec = MetricSpec {
    name: "verdict_view_images",
    kind: MetricType::Gauge,
    unit: MetricUnit::None,
    labels: &[],
    help: "Images the verdict view holds in memory",
    details: "Every present image (not signatures or other artifacts) of the ledger; its memory is in docs/PERFORMANCE.md.",
    query: "max(ecr_audit_verdict_view_images)",
};

pub const VERDICT_VIEW_RELOADS: MetricSpec = MetricSpec {
    name: "verdict_view_reloads",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("what", ViewReload::values)],
    help: "Reads of the ledger by the verdict view, by what was read",
    details: "`full` at start and after each lost notification connection; a rising `full` rate means the connection keeps dropping.",
    query: "sum by (what) (rate(ecr_audit_verdict_view_reloads_total[5m]))",
};

pub const ON_DEMAND_EVALUATIONS: MetricSpec = MetricSpec {
    name: "on_demand_evaluations",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("outcome", OnDemandOutcome::values)],
    help: "Evaluations of images a verdict was asked about and the ledger did not know, by outcome",
    details: "A digest reference the ledger has never seen is looked up in ECR and, when it exists, read and committed like a push (docs/ENFORCEMENT.md). A digest is asked about at most once a minute per worker.",
    query: "sum by (outcome) (rate(ecr_audit_on_demand_evaluations_total[5m]))",
};

pub const EVIDENCE_HEADS: MetricSpec = MetricSpec {
    name: "evidence_heads",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("outcome", HeadOutcome::values)],
    help: "Evidence tree heads this worker made, signed or unsigned, and attempts that failed",
    details: "A head every ECR_AUDIT_EVIDENCE_HEAD_RECORDS records or ECR_AUDIT_EVIDENCE_HEAD_INTERVAL while records are appended (docs/EVIDENCE.md, \"Signed tree heads\"). `failed` without `signed` means new records are not covered by any signed head: the log can be rewritten undetectably since the last one.",
    query: "sum by (outcome) (increase(ecr_audit_evidence_heads_total[1h]))",
};

pub const EVIDENCE_HEAD_ANCHORS: MetricSpec = MetricSpec {
    name: "evidence_head_anchors",
    kind: MetricType::Counter,
    unit: MetricUnit::None,
    labels: &[closed("outcome", AnchorOutcome::values)],
    help: "Signed evidence tree heads written to the S3 anchor under Object Lock, or not",
    details: "With ECR_AUDIT_EVIDENCE_BUCKET set (docs/EVIDENCE.md, \"The anchor in S3\"). A head that failed is not retried; the next anchored head vouches for it by consistency.",
    query: r#"increase(ecr_audit_evidence_head_anchors_total{outcome="failed"}[1h])"#,
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
    IMAGES_IN_USE,
    UNSIGNED_PUSHES,
    RECHECK_BACKLOG,
    SIGNATURE_OLDEST_VERDICT_AGE,
    SIGNATURE_VERIFICATIONS,
    SIGNER_REVOCATION_CHECKS,
    SIGNATURE_REVERIFICATIONS,
    EVENTS,
    EVENT_LAG,
    EVIDENCE_LOCK_HELD,
    AWS_API_CALLS,
    REJECTED_MESSAGES,
    MESSAGE_RETRIES,
    SQS_DELETE_FAILURES,
    DISTRUSTED_HINTS,
    QUEUE_MESSAGES,
    CONTROL_REGRESSIONS,
    CONTROL_BLINDED,
    CONTROL_RESTORED,
    AWS_ACCESS_DENIED,
    AWS_UNAVAILABLE,
    LAST_COMMIT,
    RECONCILE_DURATION,
    RECONCILE_LAST_SUCCESS,
    RECONCILE_DRIFT,
    SCANNING_DISAGREEMENTS,
    RECONCILE_SKIPPED,
    ALERT_EVENTS,
    ALERT_BACKLOG,
    FAILING_FINDINGS,
    FAILING_FINDINGS_OVERDUE,
    ORGANIZATION_ACCOUNTS,
    ORGANIZATION_ACCOUNT_CHANGES,
    EXCEPTIONS_ENDED,
    EXCEPTIONS_FILE_ERRORS,
    DEPLOY_VERDICTS,
    DEPLOY_VERDICT_RECORDS,
    VERDICT_VIEW_FRESH,
    VERDICT_VIEW_IMAGES,
    VERDICT_VIEW_RELOADS,
    ON_DEMAND_EVALUATIONS,
    EVIDENCE_HEADS,
    EVIDENCE_HEAD_ANCHORS,
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
