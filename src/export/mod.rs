//! Outputs: Prometheus metrics, the HTTP endpoints, and the CLI views.

pub mod alerts;
pub mod http;
pub mod metrics;
pub mod views;
