//! Alerts (docs/ALERTS.md): transitions worth a page, queued beside their evidence and put on
//! the operator's EventBridge bus.
//!
//! - [`outbox`]: which records page, the alert row written in the batch transaction, claiming
//!   and finishing rows.
//! - [`publisher`]: drains the outbox with `PutEvents`.
//!
//! Sits below `store`: it uses `sqlx` directly and never imports `store`, `source` or
//! `pipeline`; it counts what it publishes through the `telemetry` leaf.

pub mod outbox;
pub mod publisher;

pub use outbox::{ALERT_SCHEMA_VERSION, CONTROL_REGRESSION_ALERT, SIGNATURE_ALERT};
pub use publisher::{ALERT_SOURCE, AlertPublisher};
