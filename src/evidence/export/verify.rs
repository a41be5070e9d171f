//! Offline verification of an evidence file: no database, constant memory.
//!
//! The format is recognised from the file (the closing manifest names it; without one, the
//! first line). The manifest is read first (the file's last line), so the walk knows whether
//! the export must be contiguous (`full`, `range`) or may skip records (`filtered`), and which
//! filters every record must satisfy. Then every record is checked in order: its hash against
//! its content, its `prev_hash` against the record before it wherever the two are consecutive,
//! its seq strictly after the previous one, and (OCSF) its mapped attributes against the
//! mapping of the record it carries. The first problem is reported with its line, seq and
//! event id.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

use super::jsonl::{self, ManifestLine};
use super::ocsf::OcsfLine;
use super::{ChainPoint, ExportFormat, Manifest, ManifestBuilder, Scope, csv};
use crate::evidence::chain::{
    ChainedRecord, EvidenceFilter, GENESIS_HASH, checkpoint_continues_from, known_format,
};

/// What is wrong at a record (or at the end of the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Problem {
    #[error("not a readable record: {0}")]
    Malformed(String),
    #[error("its hash does not match its content: the record was edited")]
    HashMismatch,
    #[error(
        "its format version {0} is not one this build writes or ever wrote (1..={max}); verify it with the release that wrote it",
        max = crate::evidence::chain::FORMAT_VERSION
    )]
    UnknownFormat(i16),
    #[error(
        "its prev_hash does not match the hash of the record before it (seq {before}): a record was edited and re-hashed, or inserted"
    )]
    Broken { before: i64 },
    #[error(
        "its seq is not after the previous record's ({after}): records were reordered or duplicated"
    )]
    OutOfOrder { after: i64 },
    #[error("expected seq {expected}: records were removed before it")]
    Missing { expected: i64 },
    #[error("it does not continue the previous file, which ends at seq {seq} with hash {hash}")]
    DoesNotContinue { seq: i64, hash: String },
    #[error("it does not satisfy the export's filters: it was inserted")]
    NotSelected,
    #[error("its OCSF attributes differ from the mapping of the chained record it carries: {0}")]
    MappingMismatch(String),
    #[error(
        "the export starts at seq {seq}, but neither the genesis nor a checkpoint record in it accounts for the records before"
    )]
    Unanchored { seq: i64 },
    #[error("the manifest does not match the records: {0}")]
    ManifestMismatch(String),
    #[error("the file has no closing manifest: it was truncated, or the manifest was removed")]
    NoManifest,
    #[error("content after the manifest")]
    TrailingData,
    #[error("{0}")]
    Tree(String),
}

/// The first bad record of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {problem}")]
pub(crate) struct BadRecord {
    pub location: String,
    /// The record's line number (1-based; for CSV, the line its row starts on).
    pub line: u64,
    pub seq: Option<i64>,
    pub event_id: Option<String>,
    pub problem: Problem,
}

/// Why a file could not be verified at all (as opposed to being found altered).
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an ecr-audit evidence export (neither CSV, JSON Lines nor OCSF)")]
    UnknownFormat { path: String },
    #[error(
        "{path}: its last line is over {limit_mib} MiB, more than any manifest this verifier reads (a manifest is a few KiB)"
    )]
    ManifestTooLarge { path: String, limit_mib: u64 },
}

/// Where a verified file's chain starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// At seq 1, from the genesis hash.
    Genesis,
    /// After a checkpoint record in the file that names the hash it continues from.
    Checkpoint {
        checkpoint_seq: i64,
    },
    /// Where the previous file given ended.
    PreviousFile,
    /// After records outside the file: seq and hash it continues from (an archive slice whose
    /// predecessor was not given).
    Continues {
        seq: i64,
        hash: String,
    },
    /// A filtered export: a subset, so where it starts proves nothing about the rest.
    Subset,
    Empty,
}

/// A file that verified.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub format: ExportFormat,
    pub manifest: Manifest,
    pub start: Start,
    /// Places where a filtered export skips records (their seqs are not in the file).
    pub gaps: u64,
    /// What the file proved against its tree head.
    pub tree: TreeSummary,
    /// What the next file of the chain continues from.
    pub carry: TreeCarry,
}

/// What a file proved against the tree head in its manifest (signatures are checked by the
/// caller, who holds the public key).
#[derive(Debug, Clone, Default)]
pub struct TreeSummary {
    /// Records whose inclusion proof verified (a filtered export).
    pub proven: u64,
    /// Records after the head (appended after it was made): not covered by it.
    pub uncovered: u64,
    /// The records from the head's first leaf re-hashed into the head's root (full, range).
    pub root_verified: bool,
    /// The kept head (`--since-head`) re-computed from the records: the log only grew since.
    pub kept_verified: bool,
    /// Heads of earlier files' manifests (verified as one chain with this one) that this
    /// file's records, with theirs, re-hashed to.
    pub earlier_heads_verified: u64,
}

/// The tree state one file hands to the next when files are verified as one chain (an
/// archive, the next archive, then the current export): the frontier of every leaf so far and
/// the heads of earlier files' manifests their records did not reach. An archive's head is
/// its snapshot's, newer than its last record, so it is reached in a later file.
#[derive(Debug, Clone, Default)]
pub struct TreeCarry {
    /// The log's first leaf seq and the frontier of the leaves from it.
    frontier: Option<(i64, crate::evidence::merkle::Frontier)>,
    pending: Vec<crate::evidence::heads::TreeHead>,
}

/// The tree side of the walk, in constant memory: a frontier of one hash per level for full
/// and range exports; for a filtered export, the proof each record carries.
#[derive(Default)]
struct TreeWalk {
    head: Option<crate::evidence::heads::TreeHead>,
    kept: Option<crate::evidence::heads::TreeHead>,
    carry: TreeCarry,
    summary: TreeSummary,
}

impl TreeWalk {
    fn new(
        manifest: Option<&Manifest>,
        kept: Option<crate::evidence::heads::TreeHead>,
        carry: TreeCarry,
    ) -> Self {
        let head = manifest
            .and_then(|m| m.tree_head.as_ref())
            .map(|h| h.head.clone());
        Self {
            head,
            kept,
            carry,
            ..Self::default()
        }
    }

    /// `inclusion`: a filtered export's record checked against the head with its proof, where
    /// the line was read ([`RecordFacts::of`]); `None` when the head does not cover it.
    fn record(
        &mut self,
        scope: Scope,
        seq: i64,
        hash: &str,
        inclusion: Option<Result<(), Problem>>,
    ) -> Result<(), Problem> {
        if self.head.as_ref().is_some_and(|head| seq > head.last_seq()) {
            self.summary.uncovered += 1;
        }
        if scope == Scope::Filtered {
            if let Some(result) = inclusion {
                result?;
                self.summary.proven += 1;
            }
            return Ok(());
        }
        self.grow(seq, hash)
    }

    /// Adds a contiguous record's leaf to the frontier (started at the log's first leaf, or
    /// carried from the file before) and checks every head whose size it reaches.
    fn grow(&mut self, seq: i64, hash: &str) -> Result<(), Problem> {
        let first_leaf = self
            .head
            .as_ref()
            .or(self.kept.as_ref())
            .map(|h| h.first_seq);
        if self.carry.frontier.is_none() && first_leaf == Some(seq) {
            self.carry.frontier = Some((seq, crate::evidence::merkle::Frontier::default()));
        }
        let Some((first, frontier)) = self.carry.frontier.as_mut() else {
            return Ok(());
        };
        if i64::try_from(frontier.size).ok().map(|size| *first + size) != Some(seq) {
            // Not the next leaf (a filtered file came between): nothing more can be re-hashed.
            self.carry.frontier = None;
            return Ok(());
        }
        let first = *first;
        let leaf = crate::evidence::tree::record_leaf(seq, hash)
            .map_err(|e| Problem::Tree(e.to_string()))?;
        frontier.push(leaf);
        let size = frontier.size;
        let reached = |head: &crate::evidence::heads::TreeHead| {
            head.first_seq == first && head.tree_size == size
        };
        let due = self.kept.as_ref().is_some_and(reached)
            || self.head.as_ref().is_some_and(reached)
            || self.carry.pending.iter().any(reached);
        if !due {
            return Ok(());
        }
        // The root is computed only at a size some head has: O(log n) hashes, not per record.
        let root = hex::encode(frontier.root());
        if let Some(kept) = self.kept.as_ref().filter(|h| reached(h)) {
            if root != kept.root_hash {
                return Err(Problem::Tree(format!(
                    "the records up to here do not hash to the kept head of size {} (root {}): the log was rewritten since that head",
                    kept.tree_size, kept.root_hash
                )));
            }
            self.summary.kept_verified = true;
        }
        if let Some(head) = self.head.as_ref().filter(|h| reached(h)) {
            if root != head.root_hash {
                return Err(Problem::Tree(format!(
                    "the records up to here do not hash to the root of the manifest's tree head of size {}: they were rewritten",
                    head.tree_size
                )));
            }
            self.summary.root_verified = true;
        }
        if let Some(earlier) = self.carry.pending.iter().find(|h| reached(h)) {
            if root != earlier.root_hash {
                return Err(Problem::Tree(format!(
                    "the records up to here, with those of the files before, do not hash to the root of the tree head of size {} in an earlier file's manifest: they were rewritten",
                    earlier.tree_size
                )));
            }
            self.summary.earlier_heads_verified += 1;
            self.carry.pending.retain(|h| !reached(h));
        }
        Ok(())
    }

    /// What the next file of the chain continues from: the frontier, and the heads not yet
    /// reached (this file's included).
    fn into_carry(mut self, scope: Scope) -> TreeCarry {
        if scope == Scope::Filtered {
            return TreeCarry::default();
        }
        if let Some(head) = self.head.filter(|_| !self.summary.root_verified) {
            self.carry.pending.push(head);
        }
        self.carry
    }
}

/// Checks a filtered export's record against the manifest's head with the proof it carries.
fn prove_inclusion(
    head: &crate::evidence::heads::TreeHead,
    seq: i64,
    hash: &str,
    proof: Option<Vec<String>>,
) -> Result<(), Problem> {
    let Some(path) = proof else {
        return Err(Problem::Tree(
            "it carries no inclusion proof under the manifest's tree head: it was inserted"
                .to_owned(),
        ));
    };
    let proof = crate::evidence::proof::InclusionProof {
        seq,
        leaf_index: u64::try_from(seq - head.first_seq).unwrap_or(u64::MAX),
        tree_size: head.tree_size,
        record_hash: hash.to_owned(),
        path,
    };
    crate::evidence::proof::check_inclusion(head, &proof).map_err(|e| Problem::Tree(e.to_string()))
}

/// Verifies one file; `previous` is the last position of the file before it when several
/// files are verified as one chain.
///
/// # Errors
/// [`VerifyError`] when the file cannot be read or is not an export; `Ok(Err(_))` names the
/// first bad record of an export that was altered.
pub(crate) fn verify_file(
    path: &Path,
    previous: Option<&ChainPoint>,
) -> Result<Result<FileReport, BadRecord>, VerifyError> {
    verify_file_since(path, previous, None, TreeCarry::default())
}

/// [`verify_file`], and the records must also hash to `kept`, a head kept earlier, when the
/// file holds the records it covers; `carry` is what the file before handed on
/// ([`FileReport::carry`]), so the files re-hash together into each other's heads.
///
/// # Errors
/// As [`verify_file`].
pub(crate) fn verify_file_since(
    path: &Path,
    previous: Option<&ChainPoint>,
    kept: Option<crate::evidence::heads::TreeHead>,
    carry: TreeCarry,
) -> Result<Result<FileReport, BadRecord>, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let last = match last_line(&mut file, MAX_LAST_LINE).map_err(io)? {
        LastLine::Found(line) => Some(line),
        LastLine::Empty => None,
        LastLine::TooLong => {
            return Err(VerifyError::ManifestTooLarge {
                path: path.display().to_string(),
                limit_mib: MAX_LAST_LINE >> 20,
            });
        }
    };
    let manifest = last.as_deref().and_then(read_manifest);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let format = match &manifest {
        Some((format, _)) => *format,
        None => sniff(&mut file)
            .map_err(io)?
            .ok_or_else(|| VerifyError::UnknownFormat {
                path: path.display().to_string(),
            })?,
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let manifest = manifest.map(|(_, m)| m);
    let mut walk = Walk::new(manifest.clone(), previous.cloned(), format);
    walk.tree = TreeWalk::new(manifest.as_ref(), kept, carry);
    let reader = BufReader::with_capacity(1 << 16, file);
    let outcome = match format {
        ExportFormat::Csv => walk_csv(reader, &mut walk),
        ExportFormat::Jsonl | ExportFormat::Ocsf => walk_lines(reader, format, &mut walk),
    };
    let outcome = match outcome {
        Ok(Ok(())) => walk.finish(),
        Ok(Err(bad)) => Err(bad),
        Err(err) => return Err(io(err)),
    };
    let tree = walk.tree.summary.clone();
    let scope = walk.scope();
    let carry = std::mem::take(&mut walk.tree).into_carry(scope);
    Ok(outcome.map(|(start, gaps)| FileReport {
        format,
        manifest: manifest.unwrap_or_else(|| placeholder_manifest(format)),
        start,
        gaps,
        tree,
        carry,
    }))
}

/// An empty manifest: `finish` fails without a real one, so a report never shows this.
fn placeholder_manifest(format: ExportFormat) -> Manifest {
    Manifest {
        manifest_version: super::MANIFEST_VERSION,
        producer: String::new(),
        format,
        ocsf_version: None,
        exported_at: chrono::DateTime::UNIX_EPOCH,
        scope: Scope::Filtered,
        filters: Default::default(),
        count: 0,
        first: None,
        last: None,
        recorded_at: None,
        event_time: None,
        chain_head: ChainPoint {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        },
        chain_continues_from: None,
        tree_head: None,
    }
}

/// The longest last line read as a manifest: a manifest holds counts, filters and one tree
/// head (about 2 KiB), so this only bounds what a hostile file costs.
const MAX_LAST_LINE: u64 = 16 * 1024 * 1024;

/// What the end of a file holds.
enum LastLine {
    Found(String),
    Empty,
    TooLong,
}

/// The last non-empty line: found by scanning backwards from the end in fixed chunks (at most
/// `limit` bytes of it), then read once.
fn last_line(file: &mut File, limit: u64) -> std::io::Result<LastLine> {
    const CHUNK: u64 = 64 * 1024;
    let len = file.seek(SeekFrom::End(0))?;
    let mut buffer = vec![0u8; usize::try_from(CHUNK).unwrap_or(65_536)];
    let mut position = len;
    // Just past the last byte that is not whitespace, once seen.
    let mut content_end: Option<u64> = None;
    while position > 0 {
        let step = CHUNK.min(position);
        position -= step;
        file.seek(SeekFrom::Start(position))?;
        let chunk = &mut buffer[..usize::try_from(step).unwrap_or(0)];
        file.read_exact(chunk)?;
        for (i, &byte) in chunk.iter().enumerate().rev() {
            let at = position + i as u64;
            match content_end {
                None if !byte.is_ascii_whitespace() => content_end = Some(at + 1),
                Some(end) if byte == b'\n' => return read_span(file, at + 1, end, limit),
                _ => {}
            }
        }
        if content_end.is_some_and(|end| end - position > limit) {
            return Ok(LastLine::TooLong);
        }
    }
    match content_end {
        Some(end) => read_span(file, 0, end, limit),
        None => Ok(LastLine::Empty),
    }
}

fn read_span(file: &mut File, start: u64, end: u64, limit: u64) -> std::io::Result<LastLine> {
    if end - start > limit {
        return Ok(LastLine::TooLong);
    }
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = vec![0; usize::try_from(end - start).unwrap_or(0)];
    file.read_exact(&mut bytes)?;
    Ok(LastLine::Found(
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// The manifest on a last line, in whichever format.
fn read_manifest(line: &str) -> Option<(ExportFormat, Manifest)> {
    if let Ok(value) = serde_json::from_str::<Value>(line) {
        if let Ok(ManifestLine { manifest }) = serde_json::from_value(value.clone()) {
            return Some((ExportFormat::Jsonl, manifest));
        }
        if let Ok(OcsfLine::Manifest(manifest)) = super::ocsf::read_line(&value) {
            return Some((ExportFormat::Ocsf, *manifest));
        }
        return None;
    }
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    let row = reader.records().next()?.ok()?;
    if row.get(0) != Some("manifest") {
        return None;
    }
    let manifest = serde_json::from_str(row.get(13)?).ok()?;
    Some((ExportFormat::Csv, manifest))
}

/// The format of a file without a manifest, from its first line.
fn sniff(file: &mut File) -> std::io::Result<Option<ExportFormat>> {
    let mut first = String::new();
    BufReader::new(file.take(16 * 1024 * 1024)).read_line(&mut first)?;
    if first.starts_with(csv::HEADER[0]) {
        return Ok(Some(ExportFormat::Csv));
    }
    Ok(match serde_json::from_str::<Value>(&first) {
        Ok(value) if value.get("class_uid").is_some() => Some(ExportFormat::Ocsf),
        Ok(value) if value.get("seq").is_some() => Some(ExportFormat::Jsonl),
        _ => None,
    })
}

/// Lines read before they are checked in parallel, and the bytes they may hold together (so a
/// file of huge lines costs at most this much more).
const LINE_BATCH: usize = 2048;
const LINE_BATCH_BYTES: usize = 16 << 20;

fn walk_lines<R: BufRead>(
    mut reader: R,
    format: ExportFormat,
    walk: &mut Walk,
) -> std::io::Result<Result<(), BadRecord>> {
    let threads = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(1)
        .clamp(1, 8);
    let context = LineContext::of(walk);
    // The line buffers are kept from batch to batch: no allocation per line once warm.
    let mut lines: Vec<String> = Vec::with_capacity(LINE_BATCH);
    let mut number = 0u64;
    loop {
        let mut used = 0;
        let mut bytes = 0;
        while used < LINE_BATCH && bytes < LINE_BATCH_BYTES {
            if used == lines.len() {
                lines.push(String::new());
            }
            let line = &mut lines[used];
            line.clear();
            if reader.read_line(line)? == 0 {
                break;
            }
            bytes += line.len();
            used += 1;
        }
        if used == 0 {
            return Ok(Ok(()));
        }
        // Parsing, the OCSF mapping, the hash and the filters of a line depend on that line
        // alone: they are done on every core, and the record is dropped where it was parsed;
        // linking the records to each other is done in order after.
        let read = read_lines_parallel(&lines[..used], format, &context, threads);
        for line in read {
            number += 1;
            if let Err(bad) = walk_read_line(line, number, walk) {
                return Ok(Err(bad));
            }
        }
    }
}

fn read_lines_parallel(
    lines: &[String],
    format: ExportFormat,
    context: &LineContext,
    threads: usize,
) -> Vec<ReadLine> {
    let chunk = lines.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = lines
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|l| read_line(l, format, context))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker.join().unwrap_or_else(|_| {
                    vec![ReadLine::Bad {
                        record: None,
                        problem: Problem::Malformed("the line could not be read".to_owned()),
                    }]
                })
            })
            .collect()
    })
}

/// A line read and checked on its own, before the walk links it to the others.
enum ReadLine {
    Blank,
    Manifest,
    Record(Box<RecordFacts>),
    Bad {
        /// The record's seq and event id, when it could be read.
        record: Option<(i64, String)>,
        problem: Problem,
    },
}

fn read_line(line: &str, format: ExportFormat, context: &LineContext) -> ReadLine {
    let text = line.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return ReadLine::Blank;
    }
    let read = match format {
        ExportFormat::Ocsf => read_ocsf(text),
        _ => read_jsonl(text),
    };
    match read {
        Ok(Some((record, hash, proof))) => ReadLine::Record(Box::new(RecordFacts::of(
            record, hash, proof, None, context,
        ))),
        Ok(None) => ReadLine::Manifest,
        Err(bad) => bad,
    }
}

fn malformed(problem: String) -> ReadLine {
    ReadLine::Bad {
        record: None,
        problem: Problem::Malformed(problem),
    }
}

/// An OCSF line: a record (`Some`), the manifest (`None`), or why it is bad.
fn read_ocsf(text: &str) -> Result<Option<super::ReadRecord>, ReadLine> {
    let line = match super::ocsf::read_exact_record(text) {
        Some(line) => line,
        None => {
            let value: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
            super::ocsf::read_line(&value).map_err(malformed)?
        }
    };
    match line {
        OcsfLine::Manifest(_) => Ok(None),
        OcsfLine::Record {
            record,
            mapping_mismatch: Some(difference),
            ..
        } => Err(ReadLine::Bad {
            record: Some((record.seq, record.event_id)),
            problem: Problem::MappingMismatch(difference),
        }),
        OcsfLine::Record {
            record,
            hash,
            proof,
            mapping_mismatch: None,
        } => Ok(Some((*record, hash, proof))),
    }
}

/// A JSON Lines line: a record (`Some`), the manifest (`None`), or why it is bad.
fn read_jsonl(text: &str) -> Result<Option<super::ReadRecord>, ReadLine> {
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    if value.get("manifest").is_some() {
        return Ok(None);
    }
    jsonl::read_record(value).map(Some).map_err(malformed)
}

fn walk_read_line(line: ReadLine, number: u64, walk: &mut Walk) -> Result<(), BadRecord> {
    if matches!(line, ReadLine::Blank) {
        return Ok(());
    }
    if walk.manifest_seen {
        return Err(walk.bad(number, None, Problem::TrailingData));
    }
    match line {
        ReadLine::Blank => Ok(()),
        ReadLine::Manifest => walk.manifest_line(number),
        ReadLine::Record(facts) => walk.check(number, *facts),
        ReadLine::Bad { record, problem } => Err(walk.bad(
            number,
            record
                .as_ref()
                .map(|(seq, event_id)| (*seq, event_id.as_str())),
            problem,
        )),
    }
}

fn walk_csv<R: Read>(reader: R, walk: &mut Walk) -> std::io::Result<Result<(), BadRecord>> {
    let context = LineContext::of(walk);
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    match reader.headers() {
        Ok(header) if csv::is_header(header) => {}
        Ok(_) => {
            return Ok(Err(walk.bad(
                1,
                None,
                Problem::Malformed(format!("the header row is not {}", csv::HEADER.join(","))),
            )));
        }
        Err(err) => return Ok(Err(walk.bad(1, None, Problem::Malformed(err.to_string())))),
    }
    let mut row = ::csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut row) {
            Ok(false) => return Ok(Ok(())),
            Ok(true) => {}
            Err(err) => {
                if let ::csv::ErrorKind::Io(_) = err.kind() {
                    return Err(std::io::Error::other(err));
                }
                return Ok(Err(walk.bad(
                    line,
                    None,
                    Problem::Malformed(err.to_string()),
                )));
            }
        }
        if walk.manifest_seen {
            return Ok(Err(walk.bad(line, None, Problem::TrailingData)));
        }
        if let Err(bad) = walk_csv_row(&row, line, walk, &context) {
            return Ok(Err(bad));
        }
    }
}

/// One CSV row after the header: a record, or the closing manifest.
fn walk_csv_row(
    row: &::csv::StringRecord,
    line: u64,
    walk: &mut Walk,
    context: &LineContext,
) -> Result<(), BadRecord> {
    match row.get(0) {
        Some("manifest") => walk.manifest_line(line),
        Some("evidence") => {
            let (record, hash, proof) = csv::read_record(row)
                .map_err(|err| walk.bad(line, None, Problem::Malformed(err.to_string())))?;
            let readings = Some(csv::empty_string_readings as Readings);
            walk.check(
                line,
                RecordFacts::of(record, hash, proof, readings, context),
            )
        }
        other => Err(walk.bad(
            line,
            None,
            Problem::Malformed(format!("unknown record_type {other:?}")),
        )),
    }
}

/// The walk's state: constant size whatever the file's length.
struct Walk {
    manifest: Option<Manifest>,
    previous_file: Option<ChainPoint>,
    manifest_seen: bool,
    /// The last record's seq, hash, event id and line.
    last: Option<(i64, String, String, u64)>,
    /// What the records read so far add up to, built as the exporter builds its manifest.
    seen: ManifestBuilder,
    gaps: u64,
    anchored_by: Option<i64>,
    tree: TreeWalk,
}

type Readings = fn(&ChainedRecord) -> Vec<ChainedRecord>;

/// A record this build cannot read (an unknown format version) or whose hash is not its
/// content's (under any reading the format allows).
fn content_problem(
    record: &ChainedRecord,
    hash: &str,
    readings: Option<Readings>,
) -> Option<Problem> {
    if let Some(version) = record.format_version
        && !known_format(record.format_version)
    {
        return Some(Problem::UnknownFormat(version));
    }
    let hash_ok = record.compute_hash() == hash
        || readings.is_some_and(|r| r(record).iter().any(|c| c.compute_hash() == hash));
    (!hash_ok).then_some(Problem::HashMismatch)
}

/// What the walk needs of a record once it was read and checked on its own: small, so the
/// record itself is dropped on the thread that parsed it.
struct RecordFacts {
    seq: i64,
    prev_hash: String,
    event_id: String,
    recorded_at: chrono::DateTime<chrono::Utc>,
    event_time: chrono::DateTime<chrono::Utc>,
    hash: String,
    /// In a filtered export, its inclusion proof checked against the manifest's head; `None`
    /// when the head does not cover it (or the export is not filtered).
    inclusion: Option<Result<(), Problem>>,
    /// What is wrong with the record's content alone (its hash, its format version).
    content: Option<Problem>,
    /// Whether the manifest's filters select it (true without a manifest).
    selected: bool,
    /// A checkpoint's claim: the seq and hash it continues from.
    continues_from: Option<(i64, String)>,
}

impl RecordFacts {
    fn of(
        record: ChainedRecord,
        hash: String,
        proof: Option<Vec<String>>,
        readings: Option<Readings>,
        context: &LineContext,
    ) -> Self {
        let inclusion = context
            .prove_under
            .as_ref()
            .filter(|head| record.seq <= head.last_seq())
            .map(|head| prove_inclusion(head, record.seq, &hash, proof));
        Self {
            content: content_problem(&record, &hash, readings),
            selected: context.filters.as_ref().is_none_or(|f| f.matches(&record)),
            continues_from: checkpoint_continues_from(&record),
            seq: record.seq,
            recorded_at: record.recorded_at,
            event_time: record.event_time,
            prev_hash: record.prev_hash,
            event_id: record.event_id,
            hash,
            inclusion,
        }
    }
}

/// What reading a line on its own needs from the manifest: its filters and, for a filtered
/// export, the head its records' proofs lead to.
struct LineContext {
    filters: Option<EvidenceFilter>,
    prove_under: Option<crate::evidence::heads::TreeHead>,
}

impl LineContext {
    fn of(walk: &Walk) -> Self {
        Self {
            filters: walk.manifest.as_ref().map(|m| m.filters.clone()),
            prove_under: walk
                .tree
                .head
                .clone()
                .filter(|_| walk.scope() == Scope::Filtered),
        }
    }
}

impl Walk {
    fn new(
        manifest: Option<Manifest>,
        previous_file: Option<ChainPoint>,
        format: ExportFormat,
    ) -> Self {
        Self {
            manifest,
            previous_file,
            manifest_seen: false,
            last: None,
            seen: ManifestBuilder {
                manifest: placeholder_manifest(format),
            },
            gaps: 0,
            anchored_by: None,
            tree: TreeWalk::default(),
        }
    }

    fn scope(&self) -> Scope {
        // Without a manifest the walk is as strict as it can be; `finish` fails anyway.
        self.manifest.as_ref().map_or(Scope::Full, |m| m.scope)
    }

    fn bad(&self, line: u64, record: Option<(i64, &str)>, problem: Problem) -> BadRecord {
        let location = match record {
            Some((seq, event_id)) => format!("line {line}, record seq {seq} (event {event_id})"),
            None => format!("line {line}"),
        };
        BadRecord {
            location,
            line,
            seq: record.map(|(seq, _)| seq),
            event_id: record.map(|(_, event_id)| event_id.to_owned()),
            problem,
        }
    }

    fn manifest_line(&mut self, line: u64) -> Result<(), BadRecord> {
        // The manifest read from the end must be this line: anything after it is extra.
        self.manifest_seen = true;
        if self.manifest.is_none() {
            return Err(self.bad(line, None, Problem::TrailingData));
        }
        Ok(())
    }

    /// Whether the record follows the one before it (or the file before), as the scope
    /// demands; counts the gaps a filtered export may have.
    fn link_problem(&mut self, record: &RecordFacts, scope: Scope) -> Option<Problem> {
        match (&self.last, &self.previous_file) {
            (Some((seq, last_hash, _, _)), _) => {
                if record.seq <= *seq {
                    return Some(Problem::OutOfOrder { after: *seq });
                }
                if record.seq == seq + 1 {
                    if record.prev_hash != *last_hash {
                        return Some(Problem::Broken { before: *seq });
                    }
                } else if scope == Scope::Filtered {
                    self.gaps += 1;
                } else {
                    return Some(Problem::Missing { expected: seq + 1 });
                }
            }
            (None, Some(previous)) if scope != Scope::Filtered => {
                if record.seq != previous.seq + 1 || record.prev_hash != previous.hash {
                    return Some(Problem::DoesNotContinue {
                        seq: previous.seq,
                        hash: previous.hash.clone(),
                    });
                }
            }
            (None, _) => {
                if record.seq == 1 && record.prev_hash != GENESIS_HASH {
                    return Some(Problem::Broken { before: 0 });
                }
            }
        }
        None
    }

    fn check(&mut self, line: u64, record: RecordFacts) -> Result<(), BadRecord> {
        macro_rules! fail {
            ($problem:expr) => {
                Err(self.bad(line, Some((record.seq, &record.event_id)), $problem))
            };
        }
        if let Some(problem) = record.content {
            return fail!(problem);
        }
        let scope = self.scope();
        if let Some(problem) = self.link_problem(&record, scope) {
            return fail!(problem);
        }
        if self.manifest.is_some() && !record.selected {
            return fail!(Problem::NotSelected);
        }
        if let Err(problem) = self
            .tree
            .record(scope, record.seq, &record.hash, record.inclusion)
        {
            return fail!(problem);
        }
        self.seen.observe_parts(
            record.seq,
            &record.hash,
            &record.prev_hash,
            record.recorded_at,
            record.event_time,
        );
        if let (Some(first), Some((seq, claimed))) =
            (&self.seen.manifest.first, &record.continues_from)
            && *seq == first.seq - 1
            && *claimed == first.prev_hash
        {
            self.anchored_by = Some(record.seq);
        }
        self.last = Some((record.seq, record.hash, record.event_id, line));
        Ok(())
    }

    fn finish(&self) -> Result<(Start, u64), BadRecord> {
        let Some(manifest) = self.manifest.as_ref().filter(|_| self.manifest_seen) else {
            return Err(self.at_end(Problem::NoManifest));
        };
        let last = self.last.as_ref().map(|(seq, hash, _, _)| ChainPoint {
            seq: *seq,
            hash: hash.clone(),
        });
        let mismatch = |what| self.at_end(Problem::ManifestMismatch(what));
        if let Some(what) = self.manifest_mismatch(manifest, last.as_ref()) {
            return Err(mismatch(what));
        }
        let start = self.start(manifest).map_err(|p| self.at_end(p))?;
        if let Some(what) = self.chain_start_mismatch(manifest) {
            return Err(mismatch(what));
        }
        Ok((start, self.gaps))
    }

    /// A problem found after the last record, located there.
    fn at_end(&self, problem: Problem) -> BadRecord {
        let (line, location, seq, event_id) = match &self.last {
            Some((seq, _, event_id, line)) => (
                *line,
                format!("after line {line}, the last record seq {seq} (event {event_id})"),
                Some(*seq),
                Some(event_id.clone()),
            ),
            None => (0, "the file".to_owned(), None, None),
        };
        BadRecord {
            location,
            line,
            seq,
            event_id,
            problem,
        }
    }

    /// How the manifest's claims differ from the records seen, if they do.
    fn manifest_mismatch(&self, manifest: &Manifest, last: Option<&ChainPoint>) -> Option<String> {
        let seen = &self.seen.manifest;
        if manifest.first != seen.first {
            return Some(format!(
                "it names the first record {:?}, the file starts with {:?}",
                manifest.first.as_ref().map(|f| f.seq),
                seen.first.as_ref().map(|f| f.seq)
            ));
        }
        if manifest.last.as_ref() != last {
            return Some(format!(
                "it names the last record {:?}, the file ends with {:?}: records were removed from the end",
                manifest.last.as_ref().map(|l| l.seq),
                last.map(|l| l.seq)
            ));
        }
        if manifest.count != seen.count {
            return Some(format!(
                "it counts {} records, the file holds {}",
                manifest.count, seen.count
            ));
        }
        if manifest.recorded_at != seen.recorded_at || manifest.event_time != seen.event_time {
            return Some("its time ranges differ from the records'".to_owned());
        }
        Self::end_mismatch(manifest, last, seen.count)
    }

    /// A full export ends at the chain head, an archive at its `through_seq`.
    fn end_mismatch(manifest: &Manifest, last: Option<&ChainPoint>, count: u64) -> Option<String> {
        match manifest.scope {
            Scope::Full if last != Some(&manifest.chain_head) && count > 0 => Some(format!(
                "a full export must end at the chain head (seq {}), the file ends at seq {:?}",
                manifest.chain_head.seq,
                last.map(|l| l.seq)
            )),
            Scope::Range if last.map(|l| l.seq) != manifest.filters.through_seq => Some(format!(
                "an archive must end at seq {:?}, the file ends at seq {:?}",
                manifest.filters.through_seq,
                last.map(|l| l.seq)
            )),
            _ => None,
        }
    }

    /// A full export names where the chain starts: the first record's predecessor.
    fn chain_start_mismatch(&self, manifest: &Manifest) -> Option<String> {
        if manifest.scope != Scope::Full {
            return None;
        }
        let expected = self
            .seen
            .manifest
            .first
            .as_ref()
            .filter(|f| f.seq > 1)
            .map(|f| ChainPoint {
                seq: f.seq - 1,
                hash: f.prev_hash.clone(),
            });
        (manifest.chain_continues_from != expected)
            .then(|| "its chain start differs from the first record's".to_owned())
    }

    /// Where the file's records start from.
    fn start(&self, manifest: &Manifest) -> Result<Start, Problem> {
        Ok(match (&self.seen.manifest.first, manifest.scope) {
            (None, _) => Start::Empty,
            (Some(_), Scope::Filtered) => Start::Subset,
            (Some(_), _) if self.previous_file.is_some() => Start::PreviousFile,
            (Some(first), _) if first.seq == 1 => Start::Genesis,
            (Some(first), scope) => match self.anchored_by {
                Some(checkpoint_seq) => Start::Checkpoint { checkpoint_seq },
                None if scope == Scope::Full => {
                    return Err(Problem::Unanchored { seq: first.seq });
                }
                None => Start::Continues {
                    seq: first.seq - 1,
                    hash: first.prev_hash.clone(),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use chrono::Utc;
    use serde_json::json;

    use super::super::{EvidenceWriter, csv::CsvWriter, jsonl::JsonlWriter};
    use super::*;
    use crate::evidence::chain::{EvidenceFilter, truncate_to_micros};

    fn last_line_of(bytes: &[u8], limit: u64) -> LastLine {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(bytes).expect("write");
        last_line(&mut file, limit).expect("read")
    }

    fn found(line: LastLine) -> Option<String> {
        match line {
            LastLine::Found(text) => Some(text),
            LastLine::Empty | LastLine::TooLong => None,
        }
    }

    #[test]
    fn the_last_line_is_found_across_chunks_and_a_longer_one_is_named() {
        assert_eq!(
            found(last_line_of(b"a\nb\n\n  \r\n", 100)),
            Some("b".into())
        );
        assert_eq!(found(last_line_of(b"only", 100)), Some("only".into()));
        assert!(matches!(last_line_of(b" \n\n", 100), LastLine::Empty));
        // A last line of 300 KiB spans five 64 KiB chunks.
        let long = "x".repeat(300 * 1024);
        let text = format!("first\n{long}\n");
        assert_eq!(found(last_line_of(text.as_bytes(), 1 << 20)), Some(long));
        assert!(matches!(
            last_line_of(text.as_bytes(), 200 * 1024),
            LastLine::TooLong
        ));
        assert!(matches!(
            last_line_of(format!("{}\n", "y".repeat(150)).as_bytes(), 100),
            LastLine::TooLong
        ));
    }

    fn chain(n: i64, detail_bytes: usize) -> Vec<(ChainedRecord, String)> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let record = ChainedRecord {
                    seq,
                    recorded_at: truncate_to_micros(Utc::now()),
                    event_id: format!("e{seq}"),
                    event_time: truncate_to_micros(Utc::now()),
                    kind: "image_pushed".into(),
                    outcome: "processed".into(),
                    account: Some("123456789012".into()),
                    region: None,
                    repository: Some("app".into()),
                    digest: None,
                    tag: (seq == 2).then(String::new),
                    actor: None,
                    detail: json!({"padding": "x".repeat(detail_bytes), "n": seq}),
                    prev_hash: prev.clone(),
                    format_version: None,
                };
                let hash = record.compute_hash();
                prev = hash.clone();
                (record, hash)
            })
            .collect()
    }

    fn write(format: ExportFormat, records: &[(ChainedRecord, String)]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("tempfile");
        let mut builder = ManifestBuilder {
            manifest: placeholder_manifest(format),
        };
        builder.manifest.scope = Scope::Full;
        builder.manifest.filters = EvidenceFilter::default();
        {
            let mut writer: Box<dyn EvidenceWriter> = match format {
                ExportFormat::Csv => Box::new(CsvWriter::new(file.as_file_mut()).expect("csv")),
                _ => Box::new(JsonlWriter::new(file.as_file_mut())),
            };
            for (record, hash) in records {
                builder.observe(record, hash);
                writer.record(record, hash, None).expect("write");
            }
            if let Some((record, hash)) = records.last() {
                builder.manifest.chain_head = ChainPoint {
                    seq: record.seq,
                    hash: hash.clone(),
                };
            }
            writer.finish(&builder.manifest).expect("finish");
        }
        file.as_file_mut().flush().expect("flush");
        file
    }

    #[test]
    fn a_manifest_behind_long_record_lines_is_found_from_the_end() {
        // Records longer than the 64 KiB read-back chunk, and a trailing blank line.
        let records = chain(3, 100_000);
        let file = write(ExportFormat::Jsonl, &records);
        std::fs::OpenOptions::new()
            .append(true)
            .open(file.path())
            .and_then(|mut f| f.write_all(b"\n\n"))
            .expect("append");
        let report = verify_file(file.path(), None)
            .expect("read")
            .expect("verifies");
        assert_eq!(report.manifest.count, 3);
        assert_eq!(report.start, Start::Genesis);
    }

    #[test]
    fn csv_keeps_an_empty_string_apart_from_null_through_the_hash() {
        // Record 2 has tag = "" (not null); CSV writes both as an empty cell.
        let records = chain(4, 10);
        let file = write(ExportFormat::Csv, &records);
        let report = verify_file(file.path(), None)
            .expect("read")
            .expect("verifies");
        assert_eq!(report.format, ExportFormat::Csv);
        assert_eq!(report.manifest.last.map(|l| l.seq), Some(4));
    }

    #[test]
    fn a_csv_file_written_before_inline_proofs_still_verifies() {
        let records = chain(5, 10);
        let file = write(ExportFormat::Csv, &records);
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(file.path())
            .expect("open");
        let mut older = tempfile::NamedTempFile::new().expect("tempfile");
        {
            let mut writer = ::csv::WriterBuilder::new()
                .terminator(::csv::Terminator::CRLF)
                .from_writer(older.as_file_mut());
            for row in reader.records() {
                let row = row.expect("row");
                assert_eq!(row.len(), csv::HEADER.len());
                writer
                    .write_record(row.iter().take(csv::HEADER.len() - 1))
                    .expect("write");
            }
            writer.flush().expect("flush");
        }
        let report = verify_file(older.path(), None)
            .expect("read")
            .expect("verifies");
        assert_eq!(report.manifest.last.map(|l| l.seq), Some(5));
    }

    #[test]
    fn a_file_without_records_or_manifest_is_not_an_export() {
        let mut file = tempfile::NamedTempFile::new().expect("tempfile");
        file.write_all(b"hello\n").expect("write");
        assert!(matches!(
            verify_file(file.path(), None),
            Err(VerifyError::UnknownFormat { .. })
        ));
    }
}
