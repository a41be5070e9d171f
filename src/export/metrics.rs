//! The metrics catalogue: every metric ecr-audit exports, in one place.
//!
//! Each field's doc comment is its HELP text and `docs/METRICS.md` is generated from the same
//! words. Labels are enums or `&'static str` chosen by our code, never values from events, so
//! cardinality is bounded by construction: no digest, account, repository or message id.
//! Posture gauges are computed from Postgres at scrape time so every replica reports the same.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::domain::{ControlId, ControlStatus, ScanStatus, SignatureStatus};

/// What happened to one event (the `outcome` label of `ecr_audit_events_total`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[expect(
    non_camel_case_types,
    reason = "variant names are the label values Prometheus shows"
)]
pub enum EventOutcome {
    processed,
    duplicate,
    ignored,
    rejected,
    retried,
}

/// The outcome of one AWS API call after the SDK's own retries.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[expect(
    non_camel_case_types,
    reason = "variant names are the label values Prometheus shows"
)]
pub enum ApiOutcome {
    ok,
    /// Throttling, timeout, 5xx: the message is retried.
    transient,
    /// A lasting error answer (not found, access denied, …).
    service_error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControlLabels {
    control: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: &'static str,
    outcome: EventOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    operation: &'static str,
    outcome: ApiOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

/// Lag buckets from 50 ms to ~27 minutes: pushes should land within seconds, retries take minutes.
fn lag_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.05, 2.0, 16)
}

/// Every metric the process exports.
pub struct Metrics {
    registry: Registry,
    control_repositories: Family<ControlLabels, Gauge>,
    events: Family<EventLabels, Counter>,
    event_lag: Histogram,
    aws_calls: Family<ApiLabels, Counter>,
    rejected: Family<CodeLabels, Counter>,
    sqs_delete_failures: Counter,
    message_retries: Family<CodeLabels, Counter>,
    images: Family<SignatureLabels, Gauge>,
    image_scans: Family<ScanLabels, Gauge>,
    unsigned_pushes: Counter,
    recheck_backlog: Gauge,
    queue_messages: Family<QueueLabels, Gauge>,
    control_regressions: Family<SingleControlLabels, Counter>,
    last_commit: FloatGauge,
    reconcile_duration: FloatGauge,
    reconcile_last_success: FloatGauge,
    reconcile_drift: Family<KindLabels, Counter>,
    alert_events: Family<AlertLabels, Counter>,
    alert_backlog: Gauge,
}

/// Which queue a depth gauge describes.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[expect(
    non_camel_case_types,
    reason = "variant names are the label values Prometheus shows"
)]
pub enum QueueRole {
    main,
    dead_letter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: QueueRole,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SingleControlLabels {
    control: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Whether EventBridge accepted an alert event.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[expect(
    non_camel_case_types,
    reason = "variant names are the label values Prometheus shows"
)]
pub enum AlertOutcome {
    published,
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    outcome: AlertOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The `kind` values of `ecr_audit_reconcile_drift_total`.
pub const RECONCILE_DRIFT_KINDS: [&str; 5] = [
    "repository_added",
    "repository_changed",
    "repository_deleted",
    "image_added",
    "image_deleted",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignatureLabels {
    signature: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabels {
    scan: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ecr_audit");
        let control_repositories = Family::<ControlLabels, Gauge>::default();
        registry.register(
            "control_repositories",
            "Repositories per Security Hub control and status (PASS, FAIL, UNKNOWN), from stored state",
            control_repositories.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events handled by this process, by kind and outcome (processed, duplicate, ignored, rejected, retried)",
            events.clone(),
        );
        let event_lag = Histogram::new(lag_buckets());
        registry.register_with_unit(
            "event_lag",
            "Time from the event's own timestamp until its effects were committed",
            prometheus_client::registry::Unit::Seconds,
            event_lag.clone(),
        );
        let aws_calls = Family::<ApiLabels, Counter>::default();
        registry.register(
            "aws_api_calls",
            "AWS API calls made by enrichment, by operation and outcome (ok, transient, service_error)",
            aws_calls.clone(),
        );
        let rejected = Family::<CodeLabels, Counter>::default();
        registry.register(
            "rejected_messages",
            "Messages that could never be processed and were stored in rejected_messages, by reason code",
            rejected.clone(),
        );
        let sqs_delete_failures = Counter::default();
        registry.register(
            "sqs_delete_failures",
            "Messages whose effects were committed but whose SQS delete failed (they are redelivered and deduplicated)",
            sqs_delete_failures.clone(),
        );
        let message_retries = Family::<CodeLabels, Counter>::default();
        registry.register(
            "message_retries",
            "Messages left on the queue for a later retry, by error code",
            message_retries.clone(),
        );
        let images = Family::<SignatureLabels, Gauge>::default();
        registry.register(
            "images",
            "Images (not artifacts) that exist, per signature status, from stored state",
            images.clone(),
        );
        let image_scans = Family::<ScanLabels, Gauge>::default();
        registry.register(
            "image_scans",
            "Images (not artifacts) that exist, per scan status, from stored state",
            image_scans.clone(),
        );
        let unsigned_pushes = Counter::default();
        registry.register(
            "unsigned_pushes",
            "Digests that became UNSIGNED, each counted once, by the process that recorded it",
            unsigned_pushes.clone(),
        );
        let recheck_backlog = Gauge::default();
        registry.register(
            "signature_recheck_backlog",
            "Signature re-checks that are due now and not yet done, from stored state",
            recheck_backlog.clone(),
        );
        let queue_messages = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages in the main queue and its dead-letter queue (SQS approximate counts), by state (visible, in_flight)",
            queue_messages.clone(),
        );
        let control_regressions = Family::<SingleControlLabels, Counter>::default();
        registry.register(
            "control_regressions",
            "Repositories whose control went from PASS to FAIL, committed by this process",
            control_regressions.clone(),
        );
        let last_commit = FloatGauge::default();
        registry.register_with_unit(
            "last_commit_timestamp",
            "Unix time of this process's last committed batch",
            prometheus_client::registry::Unit::Seconds,
            last_commit.clone(),
        );
        let reconcile_duration = FloatGauge::default();
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of this process's last completed reconcile sweep",
            prometheus_client::registry::Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconcile_last_success = FloatGauge::default();
        registry.register_with_unit(
            "reconcile_last_success_timestamp",
            "Unix time at which the last successful reconcile sweep (by any replica) finished, from stored state; 0 before the first",
            prometheus_client::registry::Unit::Seconds,
            reconcile_last_success.clone(),
        );
        let reconcile_drift = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconcile_drift",
            "Changes a reconcile sweep found that no event had reported, by kind",
            reconcile_drift.clone(),
        );
        let alert_events = Family::<AlertLabels, Counter>::default();
        registry.register(
            "alert_events",
            "Alert events put on the EventBridge alert bus, by outcome (published, failed)",
            alert_events.clone(),
        );
        let alert_backlog = Gauge::default();
        registry.register(
            "alert_backlog",
            "Alert events recorded but not yet accepted by EventBridge, from stored state",
            alert_backlog.clone(),
        );
        registry.register(
            "build",
            "The running ecr-audit version",
            prometheus_client::metrics::info::Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        // Series that start at 0, so rate() and increase() see their first event.
        for control in ControlId::ALL {
            control_regressions
                .get_or_create(&SingleControlLabels {
                    control: control.as_str(),
                })
                .get();
        }
        for outcome in [AlertOutcome::published, AlertOutcome::failed] {
            alert_events.get_or_create(&AlertLabels { outcome }).get();
        }
        for kind in RECONCILE_DRIFT_KINDS {
            reconcile_drift.get_or_create(&KindLabels { kind }).get();
        }
        Self {
            queue_messages,
            control_regressions,
            last_commit,
            reconcile_duration,
            reconcile_last_success,
            reconcile_drift,
            alert_events,
            alert_backlog,
            images,
            image_scans,
            unsigned_pushes,
            recheck_backlog,
            registry,
            control_repositories,
            events,
            event_lag,
            aws_calls,
            rejected,
            sqs_delete_failures,
            message_retries,
        }
    }

    pub fn event(&self, kind: &'static str, outcome: EventOutcome) {
        self.events
            .get_or_create(&EventLabels { kind, outcome })
            .inc();
    }

    pub fn event_committed(&self, lag_seconds: f64) {
        self.event_lag.observe(lag_seconds.max(0.0));
    }

    pub fn aws_call(&self, operation: &'static str, outcome: ApiOutcome) {
        self.aws_calls
            .get_or_create(&ApiLabels { operation, outcome })
            .inc();
    }

    pub fn rejected(&self, code: &'static str) {
        self.rejected.get_or_create(&CodeLabels { code }).inc();
    }

    pub fn retried(&self, code: &'static str) {
        self.message_retries
            .get_or_create(&CodeLabels { code })
            .inc();
    }

    pub fn sqs_delete_failed(&self) {
        self.sqs_delete_failures.inc();
    }

    /// Replaces the control gauges with counts read from the store; combinations absent from
    /// `counts` are set to 0 so a status that emptied does not keep its last value.
    pub fn set_control_counts(&self, counts: &[(ControlId, ControlStatus, i64)]) {
        for control in ControlId::ALL {
            for status in ControlStatus::ALL {
                let value = counts
                    .iter()
                    .find(|(c, s, _)| *c == control && *s == status)
                    .map_or(0, |(_, _, n)| *n);
                self.control_repositories
                    .get_or_create(&ControlLabels {
                        control: control.as_str(),
                        status: status.as_str(),
                    })
                    .set(value);
            }
        }
    }

    pub fn unsigned_pushes(&self, first_unsigned: u64) {
        self.unsigned_pushes.inc_by(first_unsigned);
    }

    /// Replaces the per-digest gauges with counts read from the store (absent statuses → 0).
    pub fn set_image_counts(
        &self,
        signatures: &[(SignatureStatus, i64)],
        scans: &[(ScanStatus, i64)],
        recheck_backlog: i64,
    ) {
        for status in SignatureStatus::ALL {
            let n = signatures
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.images
                .get_or_create(&SignatureLabels {
                    signature: status.as_str(),
                })
                .set(n);
        }
        for status in ScanStatus::ALL {
            let n = scans
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.image_scans
                .get_or_create(&ScanLabels {
                    scan: status.as_str(),
                })
                .set(n);
        }
        self.recheck_backlog.set(recheck_backlog);
    }

    pub fn queue_depth(&self, queue: QueueRole, visible: i64, in_flight: i64) {
        self.queue_messages
            .get_or_create(&QueueLabels {
                queue,
                state: "visible",
            })
            .set(visible);
        self.queue_messages
            .get_or_create(&QueueLabels {
                queue,
                state: "in_flight",
            })
            .set(in_flight);
    }

    pub fn control_regressions(&self, controls: &[ControlId]) {
        for control in controls {
            self.control_regressions
                .get_or_create(&SingleControlLabels {
                    control: control.as_str(),
                })
                .inc();
        }
    }

    pub fn batch_committed(&self) {
        self.last_commit
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }

    pub fn reconcile_finished(&self, duration: std::time::Duration) {
        self.reconcile_duration.set(duration.as_secs_f64());
    }

    pub fn reconcile_drift(&self, kind: &'static str, count: u64) {
        self.reconcile_drift
            .get_or_create(&KindLabels { kind })
            .inc_by(count);
    }

    pub fn alert_event(&self, outcome: AlertOutcome) {
        self.alert_events
            .get_or_create(&AlertLabels { outcome })
            .inc();
    }

    /// Replaces the operational gauges read from the store.
    pub fn set_operational_counts(
        &self,
        alert_backlog: i64,
        last_reconcile: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        self.alert_backlog.set(alert_backlog);
        self.reconcile_last_success
            .set(last_reconcile.map_or(0.0, |t| t.timestamp() as f64));
    }

    /// Renders the OpenMetrics text exposition.
    ///
    /// # Errors
    /// Only if formatting into a `String` fails, which it does not in practice.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported_names(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_exported_metric_is_documented() {
        let metrics = Metrics::new();
        metrics.event("image_pushed", EventOutcome::processed);
        metrics.aws_call("ecr:DescribeImages", ApiOutcome::ok);
        metrics.rejected("invalid_json");
        metrics.retried("aws_transient");
        metrics.set_control_counts(&[]);
        metrics.set_image_counts(&[], &[], 0);
        metrics.unsigned_pushes(1);
        metrics.queue_depth(QueueRole::dead_letter, 1, 0);
        metrics.control_regressions(&[ControlId::Ecr2]);
        metrics.batch_committed();
        metrics.reconcile_finished(std::time::Duration::from_secs(3));
        metrics.reconcile_drift("image_added", 2);
        metrics.alert_event(AlertOutcome::published);
        metrics.set_operational_counts(0, None);
        let text = metrics.render().expect("render");
        let docs = include_str!("../../docs/METRICS.md");
        let names = exported_names(&text);
        assert!(names.len() >= 7, "{names:?}");
        for name in names {
            // Counters are declared without `_total` in the TYPE line of OpenMetrics.
            assert!(
                docs.contains(&format!("`{name}")),
                "{name} is not in docs/METRICS.md"
            );
        }
    }

    #[test]
    fn contract_metric_names_are_exported() {
        let metrics = Metrics::new();
        metrics.event("image_pushed", EventOutcome::duplicate);
        metrics.set_control_counts(&[(ControlId::Ecr2, ControlStatus::Fail, 3)]);
        metrics.event_committed(0.2);
        let text = metrics.render().expect("render");
        assert!(
            text.contains(r#"ecr_audit_control_repositories{control="ECR.2",status="FAIL"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ecr_audit_control_repositories{control="ECR.1",status="PASS"} 0"#)
        );
        assert!(
            text.contains(r#"ecr_audit_events_total{kind="image_pushed",outcome="duplicate"} 1"#)
        );
        assert!(text.contains("ecr_audit_event_lag_seconds_bucket"));
    }
}
