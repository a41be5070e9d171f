//! ecr-audit: an event-driven compliance auditor for Amazon ECR.
//!
//! For every image digest pushed to ECR it answers, within seconds and with evidence, how the
//! digest was stored (tag immutability, encryption) and who pushed it; for every repository,
//! whether it passes Security Hub controls ECR.1, ECR.2, ECR.3 and ECR.5.
//!
//! ```text
//!  EventBridge ──► SQS (+DLQ) ──► source ──► parse ──► enrich ──► evaluate ──► store ──► export
//!  file (ingest) ───────────────────┘         pure     AWS APIs     pure      Postgres   metrics,
//!                                                                                       CLI views
//! ```
//!
//! # Layout
//! - [`source`]: the SQS consumer and the file reader for `ingest`.
//! - [`parse`]: pure; bytes → [`parse::AuditEvent`], or a reason to reject.
//! - [`enrich`]: authoritative state from ECR and KMS behind the [`enrich::Registry`] trait.
//! - [`evaluate`]: pure; facts → control verdicts and a digest's settings.
//! - [`store`]: Postgres; one transaction per batch, evidence on a hash chain.
//! - [`export`]: metrics, HTTP endpoints, CLI views.
//! - [`pipeline`] wires the stages for one batch; [`worker`] runs the consumer and HTTP server;
//!   [`cli`] and [`config`] are the command line.

pub mod cli;
pub mod config;
pub mod domain;
pub mod enrich;
pub mod evaluate;
pub mod export;
pub mod parse;
pub mod pipeline;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod trust;
pub mod worker;
