//! Telemetry, a leaf that imports nothing but `domain`: logging set-up, the metrics
//! catalogue and registry (`/metrics` and docs/METRICS.md come from the one catalogue), and
//! the typed events that write a log line and bump a counter together.

pub mod catalogue;
pub mod events;
pub mod logging;
pub mod metrics;

pub use events::{
    AccountChange, AlertOutcome, AnchorOutcome, ApiOutcome, AwsOperation, DeployDecision,
    DeployMode, DistrustedHint, DriftKind, EventKind, EventOutcome, ExceptionEnd, FindingClass,
    Happened, HeadOutcome, OnDemandOutcome, QueueRole, QueueState, RejectionCode, RetryCode,
    ReverifyCause, RevocationOutcome, ScanningDisagreement, SkipReason, VerdictRecord,
    VerificationCheck, VerificationOutcome, ViewReload,
};
pub use logging::{LogFormat, init};
pub use metrics::Metrics;
