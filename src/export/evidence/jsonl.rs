//! JSON Lines: each line is the canonical record with its `hash` appended, the last line is
//! `{"manifest": {…}}`.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EvidenceWriter, Manifest};
use crate::store::evidence::{ChainedRecord, micros};

/// A record line as written: the canonical fields in their canonical order, then `hash`.
#[derive(Serialize)]
struct RecordLine<'a> {
    #[serde(flatten)]
    record: &'a ChainedRecord,
    hash: &'a str,
}

/// A record line as read back; unknown members are refused, so nothing can be slipped in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadLine {
    seq: i64,
    #[serde(with = "micros")]
    recorded_at: DateTime<Utc>,
    event_id: String,
    #[serde(with = "micros")]
    event_time: DateTime<Utc>,
    kind: String,
    outcome: String,
    account: Option<String>,
    region: Option<String>,
    repository: Option<String>,
    digest: Option<String>,
    tag: Option<String>,
    actor: Option<String>,
    detail: Value,
    prev_hash: String,
    hash: String,
}

impl ReadLine {
    pub(super) fn into_record(self) -> (ChainedRecord, String) {
        (
            ChainedRecord {
                seq: self.seq,
                recorded_at: self.recorded_at,
                event_id: self.event_id,
                event_time: self.event_time,
                kind: self.kind,
                outcome: self.outcome,
                account: self.account,
                region: self.region,
                repository: self.repository,
                digest: self.digest,
                tag: self.tag,
                actor: self.actor,
                detail: self.detail,
                prev_hash: self.prev_hash,
            },
            self.hash,
        )
    }
}

/// The manifest line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestLine {
    pub(super) manifest: Manifest,
}

pub(super) struct JsonlWriter<W: Write> {
    out: W,
}

impl<W: Write> JsonlWriter<W> {
    pub(super) fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> EvidenceWriter for JsonlWriter<W> {
    fn record(&mut self, record: &ChainedRecord, hash: &str) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, &RecordLine { record, hash })?;
        self.out.write_all(b"\n")
    }

    fn finish(&mut self, manifest: &Manifest) -> std::io::Result<()> {
        serde_json::to_writer(
            &mut self.out,
            &ManifestLine {
                manifest: manifest.clone(),
            },
        )?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
