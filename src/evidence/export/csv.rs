//! CSV (RFC 4180, CRLF line ends, written by the `csv` crate): a header row, one row per record,
//! then one manifest row.
//!
//! Columns: `record_type` (`evidence` or `manifest`), the canonical fields in canonical order
//! (`detail` as its canonical JSON text), then `hash`, then `format_version` (empty for a
//! version 1 record), then `proof` (in a filtered export, the record's inclusion proof: hex
//! hashes from leaf to root separated by spaces; empty otherwise). An empty cell is a null; the
//! manifest row has its JSON in the `detail` column and every other cell empty. Files written
//! before format versions have no `format_version` column and read as version 1 throughout;
//! files written before inline proofs have no `proof` column.

use std::io::Write;

use serde_json::Value;

use super::{EvidenceWriter, Manifest, ReadRecord, canonical_time};
use crate::evidence::chain::ChainedRecord;

/// The header row.
pub(super) const HEADER: [&str; 18] = [
    "record_type",
    "seq",
    "recorded_at",
    "event_id",
    "event_time",
    "kind",
    "outcome",
    "account",
    "region",
    "repository",
    "digest",
    "tag",
    "actor",
    "detail",
    "prev_hash",
    "hash",
    "format_version",
    "proof",
];

/// The header, or the header of files written before inline proofs (every column but the
/// last) or before format versions (every column but the last two).
pub(super) fn is_header(header: &::csv::StringRecord) -> bool {
    (HEADER.len() - 2..=HEADER.len()).any(|n| header.iter().eq(HEADER[..n].iter().copied()))
}

/// The columns that may be null, by index; an empty cell there reads as null.
pub(super) const NULLABLE: [usize; 6] = [7, 8, 9, 10, 11, 12];

pub(super) struct CsvWriter<W: Write> {
    out: ::csv::Writer<W>,
}

impl<W: Write> CsvWriter<W> {
    pub(super) fn new(out: W) -> std::io::Result<Self> {
        let mut out = ::csv::WriterBuilder::new()
            .terminator(::csv::Terminator::CRLF)
            .from_writer(out);
        out.write_record(HEADER).map_err(std::io::Error::other)?;
        Ok(Self { out })
    }
}

impl<W: Write> EvidenceWriter for CsvWriter<W> {
    fn record(
        &mut self,
        record: &ChainedRecord,
        hash: &str,
        proof: Option<&[String]>,
    ) -> std::io::Result<()> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let detail = serde_json::to_string(&record.detail)?;
        self.out
            .write_record([
                "evidence".to_owned(),
                record.seq.to_string(),
                canonical_time(record.recorded_at),
                record.event_id.clone(),
                canonical_time(record.event_time),
                record.kind.as_str().to_owned(),
                record.outcome.clone(),
                opt(&record.account),
                opt(&record.region),
                opt(&record.repository),
                opt(&record.digest),
                opt(&record.tag),
                opt(&record.actor),
                detail,
                record.prev_hash.clone(),
                hash.to_owned(),
                record
                    .format_version
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                proof.map(|path| path.join(" ")).unwrap_or_default(),
            ])
            .map_err(std::io::Error::other)
    }

    fn finish(&mut self, manifest: &Manifest) -> std::io::Result<()> {
        let mut row = vec![String::new(); HEADER.len()];
        row[0] = "manifest".to_owned();
        row[13] = serde_json::to_string(manifest)?;
        self.out.write_record(&row).map_err(std::io::Error::other)?;
        self.out.flush()
    }
}

/// Why a CSV row is not a record.
#[derive(Debug, thiserror::Error)]
pub(super) enum RowError {
    #[error("expected {expected} columns, found {found}")]
    Width { expected: usize, found: usize },
    #[error("column {column}: {problem}")]
    Column {
        column: &'static str,
        problem: String,
    },
}

/// Reads a record row back; returns the record (empty nullable cells read as null), its hash
/// and its proof (none when the cell is empty or absent).
pub(super) fn read_record(row: &::csv::StringRecord) -> Result<ReadRecord, RowError> {
    if !(HEADER.len() - 2..=HEADER.len()).contains(&row.len()) {
        return Err(RowError::Width {
            expected: HEADER.len(),
            found: row.len(),
        });
    }
    let cell = |i: usize| row.get(i).unwrap_or_default();
    let bad = |i: usize, problem: String| RowError::Column {
        column: HEADER[i],
        problem,
    };
    let time = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(cell(i))
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| bad(i, e.to_string()))
    };
    let nullable = |i: usize| (!cell(i).is_empty()).then(|| cell(i).to_owned());
    let detail: Value = serde_json::from_str(cell(13)).map_err(|e| bad(13, e.to_string()))?;
    let format_version = nullable(16)
        .map(|v| v.parse::<i16>().map_err(|e| bad(16, e.to_string())))
        .transpose()?;
    Ok((
        ChainedRecord {
            seq: cell(1).parse().map_err(|e| bad(1, format!("{e}")))?,
            recorded_at: time(2)?,
            event_id: cell(3).to_owned(),
            event_time: time(4)?,
            kind: crate::evidence::EvidenceKind::parse(cell(5)),
            outcome: cell(6).to_owned(),
            account: nullable(7),
            region: nullable(8),
            repository: nullable(9),
            digest: nullable(10),
            tag: nullable(11),
            actor: nullable(12),
            detail,
            prev_hash: cell(14).to_owned(),
            format_version,
        },
        cell(15).to_owned(),
        nullable(17).map(|path| path.split(' ').map(str::to_owned).collect()),
    ))
}

/// CSV has no null: an empty cell is read as null. Should a record have held an empty string
/// in a nullable column (this version writes none), its hash says so; try those readings
/// before calling the row altered.
pub(super) fn empty_string_readings(record: &ChainedRecord) -> Vec<ChainedRecord> {
    let fields: Vec<usize> = NULLABLE
        .iter()
        .copied()
        .filter(|&i| field(record, i).is_none())
        .collect();
    let mut out = Vec::new();
    for mask in 1u32..(1 << fields.len()) {
        let mut candidate = record.clone();
        for (bit, &i) in fields.iter().enumerate() {
            if mask & (1 << bit) != 0 {
                *field_mut(&mut candidate, i) = Some(String::new());
            }
        }
        out.push(candidate);
    }
    out
}

fn field(record: &ChainedRecord, i: usize) -> Option<&String> {
    match i {
        7 => record.account.as_ref(),
        8 => record.region.as_ref(),
        9 => record.repository.as_ref(),
        10 => record.digest.as_ref(),
        11 => record.tag.as_ref(),
        _ => record.actor.as_ref(),
    }
}

fn field_mut(record: &mut ChainedRecord, i: usize) -> &mut Option<String> {
    match i {
        7 => &mut record.account,
        8 => &mut record.region,
        9 => &mut record.repository,
        10 => &mut record.digest,
        11 => &mut record.tag,
        _ => &mut record.actor,
    }
}
