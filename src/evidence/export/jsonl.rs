//! JSON Lines: each line is the canonical record with its `hash` appended (and, in a filtered
//! export, its inclusion `proof`), the last line is `{"manifest": {…}}`.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EvidenceWriter, Manifest, ReadRecord};
use crate::evidence::chain::ChainedRecord;

/// A record line as written: the canonical fields in their canonical order, then `hash`.
#[derive(Serialize)]
struct RecordLine<'a> {
    #[serde(flatten)]
    record: &'a ChainedRecord,
    hash: &'a str,
    /// The audit path under the manifest's tree head, in a filtered export.
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<&'a [String]>,
}

/// Reads a record line back: the canonical record (no other member allowed), its hash and
/// its proof.
///
/// # Errors
/// What is malformed.
pub(super) fn read_record(mut value: Value) -> Result<ReadRecord, String> {
    let members = value.as_object_mut().ok_or("not an object")?;
    let hash = members
        .remove("hash")
        .and_then(|hash| hash.as_str().map(str::to_owned))
        .ok_or("no hash member")?;
    let proof = members
        .remove("proof")
        .map(|proof| serde_json::from_value(proof).map_err(|e| format!("proof: {e}")))
        .transpose()?;
    let record = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok((record, hash, proof))
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
    fn record(
        &mut self,
        record: &ChainedRecord,
        hash: &str,
        proof: Option<&[String]>,
    ) -> std::io::Result<()> {
        serde_json::to_writer(
            &mut self.out,
            &RecordLine {
                record,
                hash,
                proof,
            },
        )?;
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
