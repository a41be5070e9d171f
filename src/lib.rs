//! ecr-audit: an event-driven compliance auditor for Amazon ECR.
//!
//! For every image digest pushed to ECR it answers, within seconds and with evidence, how the
//! digest was stored (tag immutability, encryption), whether it was signed and scanned, and who
//! pushed it; for every repository, whether it passes Security Hub's ECR controls and
//! ecr-audit's own checks.
//!
//! docs/ARCHITECTURE.md is the map: the stages, what each module owns, the layers imports must
//! follow (`tests/architecture.rs` enforces them) and recipes for common changes.
//!
//! # The library API
//! The crate is a library so that the binary (`src/main.rs`), the integration tests, the
//! benchmarks and the fuzz targets drive the same code. What they use is `pub`; everything
//! else is `pub(crate)` or private. The entry points:
//! - [`cli::run`] runs a parsed [`config::Command`];
//! - [`pipeline::Pipeline::builder`] wires a pipeline over a [`enrich::Registry`] and a
//!   [`store::Store`];
//! - [`parse`], [`evaluate`], [`plan`] and [`trust`] are pure and can be called on their own;
//! - [`evidence`] verifies and exports the evidence log, also without a database.

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
pub mod readmodel;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod trust;
pub mod worker;
