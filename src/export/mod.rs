//! Outputs: the HTTP endpoints (`/metrics` renders `telemetry::Metrics`) and the CLI views (evidence files are in `evidence::export`).

pub mod admission;
pub mod api;
pub mod deploy_policy;
pub mod http;
pub mod on_demand;
pub mod recorder;
pub mod report;
pub mod tls;
pub mod verdict;
pub mod view;
pub mod views;

/// A random token per process, in hex: tells this worker's heartbeats and record ids from
/// another's. A failed draw falls back to the start time in microseconds, which two workers
/// share only if they start in the same microsecond.
pub(crate) fn instance_token() -> String {
    let mut bytes = [0_u8; 8];
    let token = if aws_lc_rs::rand::fill(&mut bytes).is_ok() {
        u64::from_le_bytes(bytes)
    } else {
        chrono::Utc::now().timestamp_micros().unsigned_abs()
    };
    format!("{token:016x}")
}
