//! Where messages come from: the SQS queue ([`sqs`]) and files for `ingest` ([`file`]).
//!
//! Both hand the pipeline the same [`crate::pipeline::InboundMessage`] and carry out the
//! [`crate::pipeline::MessageFate`] it returns.

pub mod coverage;
pub mod depth;
pub mod exceptions;
pub mod file;
pub mod reconcile;
pub mod sqs;
