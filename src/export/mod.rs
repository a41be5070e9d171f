//! Outputs: Prometheus metrics, the HTTP endpoints and the CLI views (evidence files are in `evidence::export`).

pub mod http;
pub mod metrics;
pub mod views;
