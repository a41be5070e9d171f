//! Outputs: the HTTP endpoints (`/metrics` renders `telemetry::Metrics`) and the CLI views (evidence files are in `evidence::export`).

pub mod api;
pub mod http;
pub mod report;
pub mod views;
