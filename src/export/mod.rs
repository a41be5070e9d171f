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
