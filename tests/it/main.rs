//! Integration tests: the real worker, the real Postgres, the AWS emulator.
//!
//! Needs the services of `scripts/services up` (its environment: `DATABASE_URL`,
//! `AWS_ENDPOINT_URL`, dummy credentials). Each test gets its own database, queue and
//! repository-name prefix, so tests run in parallel.

mod alerts;
mod api;
mod attacks;
mod attempts;
mod batches;
mod cli;
mod evidence;
mod exceptions;
mod failing;
mod faults;
mod fixtures;
mod harness;
mod helpers;
mod http;
mod in_use;
mod ledger;
mod managed_verdicts;
mod merkle;
mod organization;
mod pipeline;
mod public_tags;
mod reconcile;
mod report;
mod reverify;
mod roles;
mod scanning;
mod signatures;
mod source;
mod store;
mod template_drift;
mod trust;
mod trust_config;
mod upgrade;
mod verdicts;
mod verified_signatures;
mod verified_verdicts;
