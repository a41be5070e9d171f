//! The metrics registry: every metric ecr-audit exports, registered from the one catalogue
//! (`catalogue.rs`) that also renders the table of docs/METRICS.md.
//!
//! Labels are enums chosen by our code (`as_str()`), never values from events, so cardinality
//! is bounded by construction: no digest, account, repository or message id. Counters are
//! bumped only through [`super::Happened::record`]; gauges are set from plain numbers that
//! their owners (`store` via `export::http`, `source::depth`) hand over.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::domain::{ControlId, ReportedStatus, ScanStatus, SignatureStatus};

use super::catalogue::{self as cat, MetricSpec, MetricUnit};
use super::events::{
    AccountChange, AlertOutcome, AnchorOutcome, ApiOutcome, AwsOperation, DeployDecision,
    DeployMode, DistrustedHint, DriftKind, EventKind, EventOutcome, ExceptionEnd, FindingClass,
    HeadOutcome, OnDemandOutcome, QueueRole, QueueState, RejectionCode, RetryCode, ReverifyCause,
    RevocationOutcome, ScanningDisagreement, SkipReason, VerdictRecord, VerificationCheck,
    VerificationOutcome, ViewReload,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControlLabels {
    control: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SingleControlLabels {
    control: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FactLabels {
    fact: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HintLabels {
    hint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    control: &'static str,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    change: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeployLabels {
    decision: &'static str,
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabels {
    what: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignatureLabels {
    signature: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerificationLabels {
    result: &'static str,
    check: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabels {
    scan: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Lag buckets from 50 ms to ~27 minutes: pushes should land within seconds, retries take minutes.
fn lag_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.05, 2.0, 16)
}

/// 0.25 ms to 8 s: a hold is a few milliseconds, one that reaches seconds is a stall.
fn lock_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 16)
}

/// Registers `metric` under its catalogue entry's name, HELP text and unit.
/// `ecr_audit_build_info{version}`.
fn register_build(registry: &mut Registry) {
    register_spec(
        registry,
        &cat::BUILD,
        Info::new(VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        }),
    );
}

fn register_spec(registry: &mut Registry, spec: &MetricSpec, metric: impl Metric) {
    match spec.unit {
        MetricUnit::None => registry.register(spec.name, spec.help, metric),
        MetricUnit::Seconds => {
            registry.register_with_unit(spec.name, spec.help, Unit::Seconds, metric);
        }
    }
}

/// Registers a handle of `metric` (see [`register_spec`]) and returns the metric.
fn register<M: Metric + Clone>(registry: &mut Registry, spec: &MetricSpec, metric: M) -> M {
    register_spec(registry, spec, metric.clone());
    metric
}

/// Every metric the process exports.
pub struct Metrics {
    control_repositories: Family<ControlLabels, Gauge>,
    images: Family<SignatureLabels, Gauge>,
    image_scans: Family<ScanLabels, Gauge>,
    images_in_use: Family<SignatureLabels, Gauge>,
    unsigned_pushes: Counter,
    recheck_backlog: Gauge,
    oldest_verdict_age: FloatGauge,
    signature_verifications: Family<VerificationLabels, Counter>,
    revocation_checks: Family<OutcomeLabels, Counter>,
    reverifications: Family<CauseLabels, Counter>,
    events: Family<EventLabels, Counter>,
    event_lag: Histogram,
    evidence_lock_held: Histogram,
    aws_calls: Family<ApiLabels, Counter>,
    rejected: Family<CodeLabels, Counter>,
    message_retries: Family<CodeLabels, Counter>,
    sqs_delete_failures: Counter,
    distrusted_hints: Family<HintLabels, Counter>,
    queue_messages: Family<QueueLabels, Gauge>,
    control_regressions: Family<SingleControlLabels, Counter>,
    control_blinded: Family<SingleControlLabels, Counter>,
    control_restored: Family<SingleControlLabels, Counter>,
    aws_access_denied: Family<OperationLabels, Counter>,
    aws_unavailable: Family<OperationLabels, Counter>,
    last_commit: FloatGauge,
    reconcile_duration: FloatGauge,
    reconcile_last_success: FloatGauge,
    reconcile_drift: Family<KindLabels, Counter>,
    scanning_disagreements: Family<FactLabels, Counter>,
    reconcile_skipped: Family<ReasonLabels, Counter>,
    alert_events: Family<OutcomeLabels, Counter>,
    deploy_verdicts: Family<DeployLabels, Counter>,
    alert_backlog: Gauge,
    failing_findings: Family<ClassLabels, Gauge>,
    failing_overdue: Family<SingleControlLabels, Gauge>,
    organization_accounts: Gauge,
    organization_changes: Family<ChangeLabels, Counter>,
    exceptions_ended: Family<CauseLabels, Counter>,
    exceptions_file_errors: Counter,
    deploy_verdict_records: Family<OutcomeLabels, Counter>,
    verdict_view_fresh: FloatGauge,
    verdict_view_images: Gauge,
    verdict_view_reloads: Family<WhatLabels, Counter>,
    on_demand_evaluations: Family<OutcomeLabels, Counter>,
    evidence_heads: Family<OutcomeLabels, Counter>,
    evidence_head_anchors: Family<OutcomeLabels, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric of the catalogue, in its order.
    #[allow(
        clippy::too_many_lines,
        reason = "one registration per catalogue entry, in its order: a declarative table"
    )]
    pub fn new() -> Self {
        let mut r = Registry::with_prefix(cat::PREFIX);
        let mut metrics = Self {
            control_repositories: register(&mut r, &cat::CONTROL_REPOSITORIES, Family::default()),
            images: register(&mut r, &cat::IMAGES, Family::default()),
            image_scans: register(&mut r, &cat::IMAGE_SCANS, Family::default()),
            images_in_use: register(&mut r, &cat::IMAGES_IN_USE, Family::default()),
            unsigned_pushes: register(&mut r, &cat::UNSIGNED_PUSHES, Counter::default()),
            recheck_backlog: register(&mut r, &cat::RECHECK_BACKLOG, Gauge::default()),
            oldest_verdict_age: register(
                &mut r,
                &cat::SIGNATURE_OLDEST_VERDICT_AGE,
                FloatGauge::default(),
            ),
            signature_verifications: register(
                &mut r,
                &cat::SIGNATURE_VERIFICATIONS,
                Family::default(),
            ),
            revocation_checks: register(&mut r, &cat::SIGNER_REVOCATION_CHECKS, Family::default()),
            reverifications: register(&mut r, &cat::SIGNATURE_REVERIFICATIONS, Family::default()),
            events: register(&mut r, &cat::EVENTS, Family::default()),
            event_lag: register(&mut r, &cat::EVENT_LAG, Histogram::new(lag_buckets())),
            evidence_lock_held: register(
                &mut r,
                &cat::EVIDENCE_LOCK_HELD,
                Histogram::new(lock_buckets()),
            ),
            aws_calls: register(&mut r, &cat::AWS_API_CALLS, Family::default()),
            rejected: register(&mut r, &cat::REJECTED_MESSAGES, Family::default()),
            message_retries: register(&mut r, &cat::MESSAGE_RETRIES, Family::default()),
            sqs_delete_failures: register(&mut r, &cat::SQS_DELETE_FAILURES, Counter::default()),
            distrusted_hints: register(&mut r, &cat::DISTRUSTED_HINTS, Family::default()),
            queue_messages: register(&mut r, &cat::QUEUE_MESSAGES, Family::default()),
            control_regressions: register(&mut r, &cat::CONTROL_REGRESSIONS, Family::default()),
            control_blinded: register(&mut r, &cat::CONTROL_BLINDED, Family::default()),
            control_restored: register(&mut r, &cat::CONTROL_RESTORED, Family::default()),
            aws_access_denied: register(&mut r, &cat::AWS_ACCESS_DENIED, Family::default()),
            aws_unavailable: register(&mut r, &cat::AWS_UNAVAILABLE, Family::default()),
            last_commit: register(&mut r, &cat::LAST_COMMIT, FloatGauge::default()),
            reconcile_duration: register(&mut r, &cat::RECONCILE_DURATION, FloatGauge::default()),
            reconcile_last_success: register(
                &mut r,
                &cat::RECONCILE_LAST_SUCCESS,
                FloatGauge::default(),
            ),
            reconcile_drift: register(&mut r, &cat::RECONCILE_DRIFT, Family::default()),
            scanning_disagreements: register(
                &mut r,
                &cat::SCANNING_DISAGREEMENTS,
                Family::default(),
            ),
            reconcile_skipped: register(&mut r, &cat::RECONCILE_SKIPPED, Family::default()),
            alert_events: register(&mut r, &cat::ALERT_EVENTS, Family::default()),
            deploy_verdicts: register(&mut r, &cat::DEPLOY_VERDICTS, Family::default()),
            alert_backlog: register(&mut r, &cat::ALERT_BACKLOG, Gauge::default()),
            failing_findings: register(&mut r, &cat::FAILING_FINDINGS, Family::default()),
            failing_overdue: register(&mut r, &cat::FAILING_FINDINGS_OVERDUE, Family::default()),
            organization_accounts: register(&mut r, &cat::ORGANIZATION_ACCOUNTS, Gauge::default()),
            organization_changes: register(
                &mut r,
                &cat::ORGANIZATION_ACCOUNT_CHANGES,
                Family::default(),
            ),
            exceptions_ended: register(&mut r, &cat::EXCEPTIONS_ENDED, Family::default()),
            exceptions_file_errors: register(
                &mut r,
                &cat::EXCEPTIONS_FILE_ERRORS,
                Counter::default(),
            ),
            deploy_verdict_records: register(
                &mut r,
                &cat::DEPLOY_VERDICT_RECORDS,
                Family::default(),
            ),
            verdict_view_fresh: register(&mut r, &cat::VERDICT_VIEW_FRESH, FloatGauge::default()),
            verdict_view_images: register(&mut r, &cat::VERDICT_VIEW_IMAGES, Gauge::default()),
            verdict_view_reloads: register(&mut r, &cat::VERDICT_VIEW_RELOADS, Family::default()),
            on_demand_evaluations: register(&mut r, &cat::ON_DEMAND_EVALUATIONS, Family::default()),
            evidence_heads: register(&mut r, &cat::EVIDENCE_HEADS, Family::default()),
            evidence_head_anchors: register(&mut r, &cat::EVIDENCE_HEAD_ANCHORS, Family::default()),
            registry: r,
        };
        register_build(&mut metrics.registry);
        metrics.start_series_at_zero();
        metrics
    }

    fn start_head_series_at_zero(&self) {
        for outcome in HeadOutcome::ALL {
            self.evidence_heads
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .get();
        }
        for outcome in AnchorOutcome::ALL {
            self.evidence_head_anchors
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .get();
        }
    }

    fn start_verdict_series_at_zero(&self) {
        for outcome in VerdictRecord::ALL {
            self.deploy_verdict_records
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .get();
        }
        for outcome in OnDemandOutcome::ALL {
            self.on_demand_evaluations
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .get();
        }
        for decision in DeployDecision::ALL {
            for mode in DeployMode::ALL {
                self.deploy_verdicts
                    .get_or_create(&DeployLabels {
                        decision: decision.as_str(),
                        mode: mode.as_str(),
                    })
                    .get();
            }
        }
    }

    /// Series that start at 0, so rate() and increase() see their first event.
    fn start_series_at_zero(&self) {
        for control in ControlId::ALL {
            let labels = SingleControlLabels {
                control: control.as_str(),
            };
            self.control_regressions.get_or_create(&labels).get();
            self.control_blinded.get_or_create(&labels).get();
            self.control_restored.get_or_create(&labels).get();
        }
        for operation in AwsOperation::ALL {
            let labels = OperationLabels {
                operation: operation.as_str(),
            };
            self.aws_access_denied.get_or_create(&labels).get();
            self.aws_unavailable.get_or_create(&labels).get();
        }
        for reason in SkipReason::ALL {
            self.reconcile_skipped
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .get();
        }
        for change in AccountChange::ALL {
            self.organization_changes
                .get_or_create(&ChangeLabels {
                    change: change.as_str(),
                })
                .get();
        }
        self.set_failing_counts(&[], &[]);
        for outcome in AlertOutcome::ALL {
            self.alert_events
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .get();
        }
        for cause in ExceptionEnd::ALL {
            self.exceptions_ended
                .get_or_create(&CauseLabels {
                    cause: cause.as_str(),
                })
                .get();
        }
        self.start_verdict_series_at_zero();
        self.start_head_series_at_zero();
        self.start_doubt_series_at_zero();
        self.set_in_use_counts(&[]);
        for kind in DriftKind::ALL {
            self.reconcile_drift
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .get();
        }
    }

    /// The series of answers not taken as given (disagreements, distrusted hints) and of
    /// signature re-judgements, at 0.
    fn start_doubt_series_at_zero(&self) {
        for fact in ScanningDisagreement::ALL {
            self.scanning_disagreements
                .get_or_create(&FactLabels {
                    fact: fact.as_str(),
                })
                .get();
        }
        for hint in DistrustedHint::ALL {
            self.distrusted_hints
                .get_or_create(&HintLabels {
                    hint: hint.as_str(),
                })
                .get();
        }
        for outcome in RevocationOutcome::ALL {
            self.revocation_checks
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .get();
        }
        for cause in ReverifyCause::ALL {
            self.reverifications
                .get_or_create(&CauseLabels {
                    cause: cause.as_str(),
                })
                .get();
        }
    }

    pub(super) fn event(&self, kind: EventKind, outcome: EventOutcome) {
        self.events
            .get_or_create(&EventLabels {
                kind: kind.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(super) fn event_committed(&self, lag_seconds: f64) {
        self.event_lag.observe(lag_seconds.max(0.0));
    }

    pub(super) fn aws_call(&self, operation: AwsOperation, outcome: ApiOutcome) {
        self.aws_calls
            .get_or_create(&ApiLabels {
                operation: operation.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(super) fn rejected(&self, code: RejectionCode) {
        self.rejected
            .get_or_create(&CodeLabels {
                code: code.as_str(),
            })
            .inc();
    }

    pub(super) fn retried(&self, code: RetryCode) {
        self.message_retries
            .get_or_create(&CodeLabels {
                code: code.as_str(),
            })
            .inc();
    }

    pub(super) fn sqs_delete_failed(&self, count: usize) {
        self.sqs_delete_failures
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    pub(super) fn distrusted(&self, hint: DistrustedHint) {
        self.distrusted_hints
            .get_or_create(&HintLabels {
                hint: hint.as_str(),
            })
            .inc();
    }

    pub(super) fn unsigned_pushes(&self, first_unsigned: u64) {
        self.unsigned_pushes.inc_by(first_unsigned);
    }

    pub(super) fn control_regressions(&self, controls: &[ControlId]) {
        for control in controls {
            self.control_regressions
                .get_or_create(&SingleControlLabels {
                    control: control.as_str(),
                })
                .inc();
        }
    }

    pub(super) fn control_blinded(&self, controls: &[ControlId]) {
        for control in controls {
            self.control_blinded
                .get_or_create(&SingleControlLabels {
                    control: control.as_str(),
                })
                .inc();
        }
    }

    pub(super) fn control_restored(&self, controls: &[ControlId]) {
        for control in controls {
            self.control_restored
                .get_or_create(&SingleControlLabels {
                    control: control.as_str(),
                })
                .inc();
        }
    }

    pub(super) fn aws_access_denied(&self, operation: AwsOperation) {
        self.aws_access_denied
            .get_or_create(&OperationLabels {
                operation: operation.as_str(),
            })
            .inc();
    }

    pub(super) fn aws_unavailable(&self, operation: AwsOperation) {
        self.aws_unavailable
            .get_or_create(&OperationLabels {
                operation: operation.as_str(),
            })
            .inc();
    }

    pub(super) fn reconcile_skipped(&self, reason: SkipReason) {
        self.reconcile_skipped
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The controls a committed batch moved: PASS → FAIL, PASS → UNKNOWN, restored.
    pub(super) fn batch_transitions(
        &self,
        regressions: &[ControlId],
        blinded: &[ControlId],
        restored: &[ControlId],
    ) {
        self.control_regressions(regressions);
        self.control_blinded(blinded);
        self.control_restored(restored);
    }

    pub(super) fn batch_committed(&self, evidence_lock_held: Option<std::time::Duration>) {
        self.last_commit
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        if let Some(held) = evidence_lock_held {
            self.evidence_lock_held.observe(held.as_secs_f64());
        }
    }

    pub(super) fn reconcile_finished(&self, duration: std::time::Duration) {
        self.reconcile_duration.set(duration.as_secs_f64());
    }

    pub(super) fn reconcile_drift(&self, kind: DriftKind, count: u64) {
        self.reconcile_drift
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc_by(count);
    }

    pub(super) fn scanning_disagreement(&self, fact: ScanningDisagreement) {
        self.scanning_disagreements
            .get_or_create(&FactLabels {
                fact: fact.as_str(),
            })
            .inc();
    }

    pub(super) fn signature_verified(
        &self,
        outcome: VerificationOutcome,
        check: VerificationCheck,
    ) {
        self.signature_verifications
            .get_or_create(&VerificationLabels {
                result: outcome.as_str(),
                check: check.as_str(),
            })
            .inc();
    }

    pub(super) fn revocation_checked(&self, outcome: RevocationOutcome) {
        self.revocation_checks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(super) fn reverify_scheduled(&self, cause: ReverifyCause, count: u64) {
        self.reverifications
            .get_or_create(&CauseLabels {
                cause: cause.as_str(),
            })
            .inc_by(count);
    }

    /// Sets the age of the oldest signature verdict the store read (`None`: no image has a
    /// signature, so nothing is stale).
    pub(crate) fn set_oldest_verdict_age(&self, seconds: Option<f64>) {
        self.oldest_verdict_age.set(seconds.unwrap_or(0.0));
    }

    /// Counts an attempt to make an evidence tree head.
    pub fn evidence_head(&self, outcome: HeadOutcome) {
        self.evidence_heads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts an attempt to write a signed head to the S3 anchor.
    pub fn evidence_head_anchor(&self, outcome: AnchorOutcome) {
        self.evidence_head_anchors
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts deploy verdicts recorded in the evidence, or lost.
    pub(crate) fn deploy_verdict_records(&self, outcome: VerdictRecord, count: u64) {
        self.deploy_verdict_records
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc_by(count);
    }

    /// The verdict view read `what` again and now holds `images`.
    pub(crate) fn verdict_view_reloaded(&self, what: ViewReload, images: usize) {
        self.verdict_view_reloads
            .get_or_create(&WhatLabels {
                what: what.as_str(),
            })
            .inc();
        self.verdict_view_images
            .set(i64::try_from(images).unwrap_or(i64::MAX));
    }

    /// The verdict view holds every change committed up to `at`.
    pub(crate) fn set_verdict_view_fresh(&self, at: chrono::DateTime<chrono::Utc>) {
        self.verdict_view_fresh
            .set(at.timestamp_millis() as f64 / 1000.0);
    }

    pub(crate) fn on_demand_evaluation(&self, outcome: OnDemandOutcome) {
        self.on_demand_evaluations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(super) fn deploy_verdict(&self, decision: DeployDecision, mode: DeployMode) {
        self.deploy_verdicts
            .get_or_create(&DeployLabels {
                decision: decision.as_str(),
                mode: mode.as_str(),
            })
            .inc();
    }

    pub(super) fn alert_event(&self, outcome: AlertOutcome) {
        self.alert_events
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(super) fn exceptions_ended(&self, cause: ExceptionEnd, count: u64) {
        self.exceptions_ended
            .get_or_create(&CauseLabels {
                cause: cause.as_str(),
            })
            .inc_by(count);
    }

    pub(super) fn exceptions_file_error(&self) {
        self.exceptions_file_errors.inc();
    }

    /// Replaces the control gauges with counts the store read; combinations absent from
    /// `counts` are set to 0 so a status that emptied does not keep its last value.
    pub(crate) fn set_control_counts(&self, counts: &[(ControlId, ReportedStatus, i64)]) {
        for control in ControlId::ALL {
            for status in ReportedStatus::ALL {
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

    /// Replaces the per-digest gauges with counts the store read (absent statuses → 0).
    pub(crate) fn set_image_counts(
        &self,
        signatures: &[(SignatureStatus, i64)],
        scans: &[(ScanStatus, i64)],
        recheck_backlog: i64,
    ) {
        for status in SignatureStatus::ALL {
            let n = count_of(signatures, status);
            self.images
                .get_or_create(&SignatureLabels {
                    signature: status.as_str(),
                })
                .set(n);
        }
        for status in ScanStatus::ALL {
            let n = count_of(scans, status);
            self.image_scans
                .get_or_create(&ScanLabels {
                    scan: status.as_str(),
                })
                .set(n);
        }
        self.recheck_backlog.set(recheck_backlog);
    }

    /// Replaces the in-use gauge with counts the store read (absent statuses → 0).
    pub(crate) fn set_in_use_counts(&self, signatures: &[(SignatureStatus, i64)]) {
        for status in SignatureStatus::ALL {
            self.images_in_use
                .get_or_create(&SignatureLabels {
                    signature: status.as_str(),
                })
                .set(count_of(signatures, status));
        }
    }

    pub fn queue_depth(&self, queue: QueueRole, visible: i64, in_flight: i64) {
        for (state, value) in [
            (QueueState::Visible, visible),
            (QueueState::InFlight, in_flight),
        ] {
            self.queue_messages
                .get_or_create(&QueueLabels {
                    queue: queue.as_str(),
                    state: state.as_str(),
                })
                .set(value);
        }
    }

    /// Replaces the operational gauges read from the store.
    pub(crate) fn set_operational_counts(
        &self,
        alert_backlog: i64,
        last_reconcile: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        self.alert_backlog.set(alert_backlog);
        self.reconcile_last_success
            .set(last_reconcile.map_or(0.0, |t| t.timestamp() as f64));
    }

    /// Replaces the failing-finding gauges with counts the store read (absent → 0).
    pub(crate) fn set_failing_counts(
        &self,
        failing: &[(ControlId, FindingClass, i64)],
        overdue: &[(ControlId, i64)],
    ) {
        for control in ControlId::ALL {
            for class in FindingClass::ALL {
                let value = failing
                    .iter()
                    .find(|(c, k, _)| *c == control && k == class)
                    .map_or(0, |(_, _, n)| *n);
                self.failing_findings
                    .get_or_create(&ClassLabels {
                        control: control.as_str(),
                        class: class.as_str(),
                    })
                    .set(value);
            }
            self.failing_overdue
                .get_or_create(&SingleControlLabels {
                    control: control.as_str(),
                })
                .set(count_of(overdue, control));
        }
    }

    pub(super) fn accounts_discovered(&self, active: usize, joined: usize, left: usize) {
        self.organization_accounts
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        for (change, count) in [(AccountChange::Joined, joined), (AccountChange::Left, left)] {
            self.organization_changes
                .get_or_create(&ChangeLabels {
                    change: change.as_str(),
                })
                .inc_by(count as u64);
        }
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

fn count_of<S: PartialEq + Copy>(counts: &[(S, i64)], status: S) -> i64 {
    counts
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Happened;

    #[test]
    fn contract_metric_names_and_label_values_are_unchanged() {
        let metrics = Metrics::new();
        Happened::Duplicate {
            kind: EventKind::ImagePushed,
        }
        .record(&metrics);
        Happened::Processed {
            kind: EventKind::ImagePushed,
            lag: Some(0.2),
        }
        .record(&metrics);
        Happened::AwsCalled {
            operation: AwsOperation::EcrDescribeImages,
            outcome: ApiOutcome::ServiceError,
        }
        .record(&metrics);
        metrics.set_control_counts(&[(ControlId::Ecr2, ReportedStatus::Fail, 3)]);
        metrics.queue_depth(QueueRole::DeadLetter, 4, 1);
        let text = metrics.render().unwrap_or_default();
        for line in [
            r#"ecr_audit_control_repositories{control="ECR.2",status="FAIL"} 3"#,
            r#"ecr_audit_control_repositories{control="ECR.1",status="PASS"} 0"#,
            r#"ecr_audit_events_total{kind="image_pushed",outcome="duplicate"} 1"#,
            r#"ecr_audit_aws_api_calls_total{operation="ecr:DescribeImages",outcome="service_error"} 1"#,
            r#"ecr_audit_queue_messages{queue="dead_letter",state="visible"} 4"#,
            r#"ecr_audit_queue_messages{queue="dead_letter",state="in_flight"} 1"#,
            r#"ecr_audit_alert_events_total{outcome="failed"} 0"#,
            r#"ecr_audit_control_regressions_total{control="ECRA.1"} 0"#,
            "ecr_audit_event_lag_seconds_count 1",
            "# TYPE ecr_audit_build info",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
