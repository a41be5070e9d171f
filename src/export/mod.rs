//! Outputs: Prometheus metrics, the HTTP endpoints, the CLI views, and evidence files.

pub mod evidence;
pub mod http;
pub mod metrics;
pub mod views;
