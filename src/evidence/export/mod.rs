//! Evidence files: streamed exports in CSV, JSON Lines and OCSF, and their offline verification.
//!
//! [`snapshot`] reads the chain out of Postgres in one consistent snapshot.
//!
//! Every format carries, for each record, the full canonical record (the fields the hash
//! covers) and its `hash`, then closes with a [`Manifest`]: how many records, the first and
//! last chain positions, the time range, the filters, and the chain head at the moment of the
//! export. [`verify`] checks a file with no database: recomputes every hash, follows the links,
//! checks the manifest against what it read. See `docs/EVIDENCE.md` for what an auditor can and
//! cannot conclude from a filtered export.

mod csv;
mod jsonl;
pub mod ocsf;
pub mod snapshot;
pub mod verify;

use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::evidence::chain::{ChainedRecord, EvidenceFilter, micros};
use crate::evidence::heads::SignedHead;
use snapshot::{EvidenceSnapshot, StreamError};

/// The version of the manifest's shape.
pub(crate) const MANIFEST_VERSION: u32 = 1;

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// RFC 4180 CSV: one row per record, then a manifest row.
    Csv,
    /// JSON Lines: one canonical record (plus its hash) per line, then a manifest line.
    Jsonl,
    /// OCSF 1.3.0 Compliance Finding (class 2003) per record, then a Base Event manifest.
    Ocsf,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Ocsf => "ocsf",
        }
    }
}

/// What an export covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every stored record, from the oldest to the chain head at the export: contiguous, and
    /// its last record is the head.
    Full,
    /// A prefix of the stored chain up to `filters.through_seq` (a retention archive):
    /// contiguous.
    Range,
    /// A subset picked by time, repository or control: records may be skipped between two
    /// exported ones.
    Filtered,
}

/// A position on the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPoint {
    pub seq: i64,
    pub hash: String,
}

/// The first exported record: its position and the hash it continues from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstRecord {
    pub seq: i64,
    pub hash: String,
    pub prev_hash: String,
}

/// An inclusive time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    #[serde(with = "micros")]
    pub from: DateTime<Utc>,
    #[serde(with = "micros")]
    pub to: DateTime<Utc>,
}

impl TimeRange {
    fn widen(range: &mut Option<Self>, time: DateTime<Utc>) {
        match range {
            Some(r) => {
                r.from = r.from.min(time);
                r.to = r.to.max(time);
            }
            None => {
                *range = Some(Self {
                    from: time,
                    to: time,
                })
            }
        }
    }
}

/// The closing manifest of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub manifest_version: u32,
    pub producer: String,
    pub format: ExportFormat,
    /// The OCSF schema version of an OCSF export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsf_version: Option<String>,
    #[serde(with = "micros")]
    pub exported_at: DateTime<Utc>,
    pub scope: Scope,
    pub filters: EvidenceFilter,
    pub count: u64,
    pub first: Option<FirstRecord>,
    pub last: Option<ChainPoint>,
    /// `recorded_at` of the earliest and latest exported record.
    pub recorded_at: Option<TimeRange>,
    /// `event_time` of the earliest and latest exported record.
    pub event_time: Option<TimeRange>,
    /// The chain head when the export's snapshot was taken.
    pub chain_head: ChainPoint,
    /// Where the stored chain started at the export: the last record retention archived
    /// (`None` when the chain still starts at the genesis).
    pub chain_continues_from: Option<ChainPoint>,
    /// The newest tree head at the snapshot (docs/EVIDENCE.md, "Proofs in exports"); absent in
    /// files written before the tree, or when no head was made yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_head: Option<SignedHead>,
}

/// A record read back from a file: the record, its hash and its inclusion proof, if it
/// carries one.
type ReadRecord = (ChainedRecord, String, Option<Vec<String>>);

/// A format's writer: records in chain order, then the manifest.
trait EvidenceWriter {
    /// `proof`: in a filtered export, the record's audit path under the manifest's
    /// `tree_head`, lowercase hex hashes from leaf to root (RFC 9162 section 2.1.3).
    fn record(
        &mut self,
        record: &ChainedRecord,
        hash: &str,
        proof: Option<&[String]>,
    ) -> std::io::Result<()>;
    fn finish(&mut self, manifest: &Manifest) -> std::io::Result<()>;
}

/// Accumulates the manifest while records stream past.
struct ManifestBuilder {
    manifest: Manifest,
}

impl ManifestBuilder {
    fn observe(&mut self, record: &ChainedRecord, hash: &str) {
        self.observe_parts(
            record.seq,
            hash,
            &record.prev_hash,
            record.recorded_at,
            record.event_time,
        );
    }

    /// [`Self::observe`] from the fields it reads.
    fn observe_parts(
        &mut self,
        seq: i64,
        hash: &str,
        prev_hash: &str,
        recorded_at: DateTime<Utc>,
        event_time: DateTime<Utc>,
    ) {
        let m = &mut self.manifest;
        m.count += 1;
        if m.first.is_none() {
            m.first = Some(FirstRecord {
                seq,
                hash: hash.to_owned(),
                prev_hash: prev_hash.to_owned(),
            });
        }
        m.last = Some(ChainPoint {
            seq,
            hash: hash.to_owned(),
        });
        TimeRange::widen(&mut m.recorded_at, recorded_at);
        TimeRange::widen(&mut m.event_time, event_time);
    }
}

/// The producer string written into manifests and OCSF metadata.
pub(crate) fn producer() -> String {
    format!("ecr-audit {}", env!("CARGO_PKG_VERSION"))
}

/// Formats a time the way the canonical serialisation does.
pub(crate) fn canonical_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The manifest before any record is seen: shape, filters, the snapshot's head and tree head.
fn opening_manifest(
    snapshot: &EvidenceSnapshot,
    filter: &EvidenceFilter,
    format: ExportFormat,
    scope: Scope,
) -> Manifest {
    let chain_continues_from = snapshot
        .oldest
        .as_ref()
        .filter(|oldest| oldest.seq > 1)
        .map(|oldest| ChainPoint {
            seq: oldest.seq - 1,
            hash: oldest.hash.clone(),
        });
    Manifest {
        manifest_version: MANIFEST_VERSION,
        producer: producer(),
        format,
        ocsf_version: (format == ExportFormat::Ocsf).then(|| ocsf::OCSF_VERSION.to_owned()),
        exported_at: crate::evidence::chain::truncate_to_micros(Utc::now()),
        scope,
        filters: filter.clone(),
        count: 0,
        first: None,
        last: None,
        recorded_at: None,
        event_time: None,
        chain_head: ChainPoint {
            seq: snapshot.head.seq,
            hash: snapshot.head.hash.clone(),
        },
        chain_continues_from,
        tree_head: snapshot.tree_head.clone(),
    }
}

/// Streams the snapshot's records into `out` in `format` and closes with the manifest;
/// `progress` is called once per record. Returns the manifest written.
///
/// # Errors
/// The first database or write error; the output is then incomplete and has no manifest.
pub(crate) async fn write_export<W: Write>(
    snapshot: EvidenceSnapshot,
    filter: &EvidenceFilter,
    format: ExportFormat,
    out: W,
    mut progress: impl FnMut(),
) -> Result<Manifest, StreamError<std::io::Error>> {
    let scope = if filter.is_subset() {
        Scope::Filtered
    } else if filter.through_seq.is_some() {
        Scope::Range
    } else {
        Scope::Full
    };
    let mut builder = ManifestBuilder {
        manifest: opening_manifest(&snapshot, filter, format, scope),
    };
    // A filtered export proves each record the head covers, beside the record.
    let prove_under = builder
        .manifest
        .tree_head
        .clone()
        .filter(|_| scope == Scope::Filtered);
    let mut writer: Box<dyn EvidenceWriter> = match format {
        ExportFormat::Csv => Box::new(csv::CsvWriter::new(out).map_err(StreamError::Sink)?),
        ExportFormat::Jsonl => Box::new(jsonl::JsonlWriter::new(out)),
        ExportFormat::Ocsf => Box::new(ocsf::OcsfWriter::new(out)),
    };
    match &prove_under {
        None => {
            snapshot
                .for_each(|record, hash| {
                    builder.observe(&record, &hash);
                    progress();
                    writer.record(&record, &hash, None)
                })
                .await?;
        }
        Some(head) => {
            write_proven(snapshot, head, &mut builder, writer.as_mut(), &mut progress).await?;
        }
    }
    writer
        .finish(&builder.manifest)
        .map_err(StreamError::Sink)?;
    Ok(builder.manifest)
}

/// A filtered export's records with their proofs: a thousand records at a time are read (the
/// next thousand meanwhile, on a task), proved with one tree query, then written.
async fn write_proven(
    snapshot: EvidenceSnapshot,
    head: &SignedHead,
    builder: &mut ManifestBuilder,
    writer: &mut dyn EvidenceWriter,
    progress: &mut impl FnMut(),
) -> Result<(), StreamError<std::io::Error>> {
    let pool = snapshot.pool.clone();
    let mut chunks = snapshot.spawn_chunks(PROOF_BATCH);
    while let Some(batch) = chunks.next().await {
        let mut proofs = prove_batch(&pool, head, &batch)
            .await
            .map_err(StreamError::Sink)?;
        for (record, hash) in batch {
            builder.observe(&record, &hash);
            progress();
            let proof = proofs.remove(&record.seq);
            writer
                .record(&record, &hash, proof.as_deref())
                .map_err(StreamError::Sink)?;
        }
    }
    // A database error ends the stream early: the file must not close as complete.
    chunks.finish().await?;
    Ok(())
}

/// How many records one tree query proves (and a filtered export holds twice over at most).
const PROOF_BATCH: usize = 1000;

/// The inclusion proofs under `head` of the records of `batch` it covers, by seq, in one
/// query (the tree nodes under a head never change, so they need not come from the snapshot).
async fn prove_batch(
    pool: &sqlx::PgPool,
    head: &SignedHead,
    batch: &[(ChainedRecord, String)],
) -> std::io::Result<HashMap<i64, Vec<String>>> {
    let failed = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let seqs: Vec<i64> = batch
        .iter()
        .map(|(record, _)| record.seq)
        .filter(|&seq| seq <= head.head.last_seq())
        .collect();
    if seqs.is_empty() {
        return Ok(HashMap::new());
    }
    let indexes = seqs
        .iter()
        .map(|&seq| u64::try_from(seq - head.head.first_seq))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|e| failed(&e))?;
    let mut conn = pool.acquire().await.map_err(|e| failed(&e))?;
    let paths = crate::evidence::tree::inclusion_many(&mut conn, &indexes, head.head.tree_size)
        .await
        .map_err(|e| failed(&e))?;
    Ok(seqs
        .into_iter()
        .zip(paths)
        .map(|(seq, path)| (seq, path.iter().map(hex::encode).collect()))
        .collect())
}

/// Reads a time flag: RFC 3339 (`2026-10-01T00:00:00Z`) or a date (`2026-10-01`, midnight UTC).
///
/// # Errors
/// When the text is neither.
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{text:?} is not a time: write 2026-10-01 or 2026-10-01T12:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_dates_or_rfc3339() {
        assert_eq!(
            parse_time("2026-10-01").map(canonical_time),
            Ok("2026-10-01T00:00:00.000000Z".to_owned())
        );
        assert_eq!(
            parse_time("2026-10-01T12:30:00+02:00").map(canonical_time),
            Ok("2026-10-01T10:30:00.000000Z".to_owned())
        );
        assert!(parse_time("yesterday").is_err());
    }
}
