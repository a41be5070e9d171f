//! Evidence: the hash-chained record of every change ecr-audit saw (docs/EVIDENCE.md).
//!
//! - [`chain`]: the record, its canonical serialisation and hash, the chain verifier, filters.
//! - [`kind`] and [`detail`]: the closed set of kinds and the typed detail of each.
//! - [`write`]: appending records at the head of the chain, inside the caller's transaction.
//! - [`timeline`]: one digest's history, line by line (`explain`).
//! - [`period`]: the auditor's period report (`report`), replayed from the chain.
//! - [`retention`]: archiving a prefix of the chain behind a checkpoint record.
//! - [`export`]: the snapshot stream, the CSV, JSON Lines and OCSF files, their manifest and
//!   offline verification.
//!
//! This layer sits below `store`: it talks to Postgres through `sqlx` directly and never
//! imports `store`, `source`, `export` or `pipeline`.

pub mod anchor;
pub mod chain;
pub mod database;
pub mod detail;
pub mod export;
pub mod heads;
pub mod history;
pub mod kind;
pub mod merkle;
pub mod period;
pub mod proof;
pub mod retention;
pub mod timeline;
pub mod tree;
pub mod write;

pub use chain::{ChainBreak, ChainVerifier, ChainedRecord, EvidenceFilter, GENESIS_HASH};
pub use database::{ChainReport, verify_database};
pub use detail::EvidenceDetail;
pub use kind::EvidenceKind;
