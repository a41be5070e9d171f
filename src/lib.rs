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
//! - [`facts`]: the contract between reading and judging: every fact type, depending on
//!   [`domain`] only.
//! - [`enrich`]: authoritative state from ECR and KMS behind the [`enrich::Registry`] trait.
//! - [`evaluate`]: pure; facts → control verdicts and a digest's settings.
//! - [`evidence`]: the hash-chained evidence record, its kinds and typed details, appends.
//! - [`alerts`]: the alert outbox written beside the evidence, and its publisher.
//! - [`plan`]: pure; an event and the facts read for it → the writes of one event.
//! - [`store`]: Postgres; one transaction per batch, evidence on a hash chain.
//! - [`export`]: metrics, HTTP endpoints, CLI views.
//! - [`pipeline`] orchestrates one batch (built with [`pipeline::Pipeline::builder`]);
//!   [`worker`] runs the consumer and HTTP server;
//!   [`cli`] and [`config`] are the command line.

pub mod alerts;
pub mod aws;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod domain;
pub mod enrich;
pub mod evaluate;
pub mod evidence;
pub mod export;
pub mod facts;
pub mod parse;
pub mod pipeline;
pub mod plan;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod trust;
pub mod worker;
