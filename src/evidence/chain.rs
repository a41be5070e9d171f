//! The evidence record, its canonical form and hash, and the chain verifier.
//!
//! `hash = hex(SHA-256(canonical JSON of the record))`, where the canonical JSON is the
//! [`ChainedRecord`] serialised with its fields in declaration order, `detail` with object keys
//! sorted, times as RFC 3339 UTC with microseconds, and `prev_hash` included. Each record
//! names the hash of the one before it (the first names 64 zeros), so editing, removing,
//! inserting or reordering any record breaks every hash after it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::kind::EvidenceKind;

/// The chain's starting point.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One evidence record as stored, exported and verified. Reading one refuses unknown members,
/// so nothing can ride along in an export unhashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainedRecord {
    pub seq: i64,
    #[serde(with = "micros")]
    pub recorded_at: DateTime<Utc>,
    pub event_id: String,
    #[serde(with = "micros")]
    pub event_time: DateTime<Utc>,
    pub kind: EvidenceKind,
    pub outcome: String,
    pub account: Option<String>,
    pub region: Option<String>,
    pub repository: Option<String>,
    pub digest: Option<String>,
    pub tag: Option<String>,
    pub actor: Option<String>,
    pub detail: Value,
    pub prev_hash: String,
    /// The record's format version (docs/UPGRADES.md). Absent means version 1: every record
    /// written before versions existed, whose canonical form (and hash) stays exactly as it
    /// was. [`append`](super::write::append) stamps [`FORMAT_VERSION`] on what it writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<i16>,
}

/// The format version this build writes: version 1 plus the `format_version` member.
pub const FORMAT_VERSION: i16 = 2;

/// Whether this build knows how to verify a record of this format version: version 1
/// (absent) and every version since, never an explicit 1 (no writer produced one) nor a
/// version from a newer build.
pub fn known_format(version: Option<i16>) -> bool {
    version.is_none_or(|v| (2..=FORMAT_VERSION).contains(&v))
}

impl ChainedRecord {
    /// The record's canonical serialisation: the text its hash is computed over, and what
    /// the database's append function is given (it stores the columns read from this text).
    pub fn canonical(&self) -> String {
        // Serialising plain strings, integers and a `Value` cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The record's hash over its canonical serialisation.
    pub fn compute_hash(&self) -> String {
        hash_canonical(&self.canonical())
    }
}

/// The hash of a canonical text: hex SHA-256 of its UTF-8 bytes.
pub(crate) fn hash_canonical(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Postgres keeps microseconds: hash exactly what can be read back.
pub(crate) fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    let micros = time.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(time)
}

pub(crate) mod micros {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// Where a chain stops being valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record seq {seq} (event {event_id}): its hash does not match its content")]
    HashMismatch { seq: i64, event_id: String },
    #[error(
        "record seq {seq} (event {event_id}): format version {version} is not one this build writes or ever wrote (1..={FORMAT_VERSION}); verify it with the release that wrote it"
    )]
    UnknownFormat {
        seq: i64,
        event_id: String,
        version: i16,
    },
    #[error("record seq {seq} (event {event_id}): prev_hash does not match the record before it")]
    Broken { seq: i64, event_id: String },
    #[error(
        "record seq {seq} (event {event_id}): expected seq {expected}: a record was removed, inserted or moved"
    )]
    OutOfSequence {
        seq: i64,
        event_id: String,
        expected: i64,
    },
    /// The oldest stored record is not the genesis and no checkpoint on the chain says which
    /// hash it continues from: records were removed from the start outside retention.
    #[error(
        "record seq {seq} (event {event_id}) is the oldest stored record, but no checkpoint accounts for the records before it: they were removed outside retention"
    )]
    Unanchored { seq: i64, event_id: String },
}

/// Checks records one at a time, in order, in constant memory.
pub struct ChainVerifier {
    expected_prev: Option<String>,
    expected_seq: Option<i64>,
    pub verified: u64,
}

impl ChainVerifier {
    /// Starts at the genesis, or at a known hash and seq when verifying a slice of the chain.
    pub fn new(start: Option<(i64, String)>) -> Self {
        match start {
            Some((seq, hash)) => Self {
                expected_prev: Some(hash),
                expected_seq: Some(seq + 1),
                verified: 0,
            },
            None => Self {
                expected_prev: None,
                expected_seq: None,
                verified: 0,
            },
        }
    }

    /// Checks the next record and its stored hash.
    ///
    /// # Errors
    /// The first [`ChainBreak`] found.
    pub fn check(&mut self, record: &ChainedRecord, stored_hash: &str) -> Result<(), ChainBreak> {
        if let Some(expected) = self.expected_seq
            && record.seq != expected
        {
            return Err(ChainBreak::OutOfSequence {
                seq: record.seq,
                event_id: record.event_id.clone(),
                expected,
            });
        }
        if let Some(version) = record.format_version
            && !known_format(record.format_version)
        {
            return Err(ChainBreak::UnknownFormat {
                seq: record.seq,
                event_id: record.event_id.clone(),
                version,
            });
        }
        if record.compute_hash() != stored_hash {
            return Err(ChainBreak::HashMismatch {
                seq: record.seq,
                event_id: record.event_id.clone(),
            });
        }
        let prev_ok = match &self.expected_prev {
            Some(prev) => *prev == record.prev_hash,
            // An unanchored export slice starts wherever it starts; the database starts at genesis.
            None => record.seq != 1 || record.prev_hash == GENESIS_HASH,
        };
        if !prev_ok {
            return Err(ChainBreak::Broken {
                seq: record.seq,
                event_id: record.event_id.clone(),
            });
        }
        self.expected_prev = Some(stored_hash.to_owned());
        self.expected_seq = Some(record.seq + 1);
        self.verified += 1;
        Ok(())
    }
}

/// An evidence row as selected by the chain queries (`SELECT` [`EVIDENCE_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct EvidenceRow {
    seq: i64,
    recorded_at: DateTime<Utc>,
    event_id: String,
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
    format_version: Option<i16>,
}

/// The columns [`EvidenceRow`] reads, in table order.
pub(crate) const EVIDENCE_COLUMNS: &str = "seq, recorded_at, event_id, event_time, kind, outcome, account, region, \
     repository, digest, tag, actor, detail, prev_hash, hash, format_version";

impl EvidenceRow {
    /// The record and its stored hash.
    pub(crate) fn into_record(self) -> (ChainedRecord, String) {
        (
            ChainedRecord {
                seq: self.seq,
                recorded_at: self.recorded_at,
                event_id: self.event_id,
                event_time: self.event_time,
                kind: EvidenceKind::from(self.kind),
                outcome: self.outcome,
                account: self.account,
                region: self.region,
                repository: self.repository,
                digest: self.digest,
                tag: self.tag,
                actor: self.actor,
                detail: self.detail,
                prev_hash: self.prev_hash,
                format_version: self.format_version,
            },
            self.hash,
        )
    }
}

/// Which records an export or archive selects. Empty: the whole stored chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceFilter {
    /// Records recorded at or after this time (`recorded_at`, not the event time: a late
    /// event lands in the export of the day it was recorded, so consecutive exports neither
    /// miss nor repeat a record).
    #[serde(with = "micros_opt")]
    pub since: Option<DateTime<Utc>>,
    /// Records recorded before this time.
    #[serde(with = "micros_opt")]
    pub until: Option<DateTime<Utc>>,
    pub repository: Option<String>,
    /// Only the transitions of this control (`control_transition` records naming it).
    pub control: Option<String>,
    /// Only records up to this seq (retention archives a prefix of the chain).
    pub through_seq: Option<i64>,
    /// Only records about this digest (`digest` column: its push, verdicts, use, deletion).
    /// Left out of a manifest when unused, so manifests of other exports are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl EvidenceFilter {
    /// Whether the filter selects the whole chain.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the filter keeps a subset that may skip records (anything but a prefix).
    pub(crate) fn is_subset(&self) -> bool {
        self.since.is_some()
            || self.until.is_some()
            || self.repository.is_some()
            || self.control.is_some()
            || self.digest.is_some()
    }

    /// The same test the export query applies, for checking an export offline.
    pub fn matches(&self, record: &ChainedRecord) -> bool {
        self.since.is_none_or(|t| record.recorded_at >= t)
            && self.until.is_none_or(|t| record.recorded_at < t)
            && self
                .repository
                .as_ref()
                .is_none_or(|r| record.repository.as_ref() == Some(r))
            && self.control.as_ref().is_none_or(|c| {
                record
                    .control_transition()
                    .is_some_and(|transition| transition.control == *c)
            })
            && self.through_seq.is_none_or(|s| record.seq <= s)
            && self
                .digest
                .as_ref()
                .is_none_or(|d| record.digest.as_ref() == Some(d))
    }
}

pub(crate) mod micros_opt {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        time: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => super::micros::serialize(time, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|text| {
            DateTime::parse_from_rfc3339(&text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// Where a checkpoint record says the retained chain continues from: the last archived record.
pub(crate) fn checkpoint_continues_from(record: &ChainedRecord) -> Option<(i64, String)> {
    let from = record.checkpoint()?.continues_from;
    Some((from.seq, from.hash))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chain(n: i64) -> Vec<(ChainedRecord, String)> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let record = ChainedRecord {
                    seq,
                    recorded_at: truncate_to_micros(Utc::now()),
                    event_id: format!("event-{seq}"),
                    event_time: truncate_to_micros(Utc::now()),
                    kind: EvidenceKind::ImagePushed,
                    outcome: "processed".into(),
                    account: Some("123456789012".into()),
                    region: Some("us-east-1".into()),
                    repository: Some("app".into()),
                    digest: None,
                    tag: Some("v1".into()),
                    actor: None,
                    detail: json!({"b": 1, "a": [seq]}),
                    prev_hash: prev.clone(),
                    format_version: None,
                };
                let hash = record.compute_hash();
                prev = hash.clone();
                (record, hash)
            })
            .collect()
    }

    fn verify(records: &[(ChainedRecord, String)]) -> Result<u64, ChainBreak> {
        let mut verifier = ChainVerifier::new(None);
        for (record, hash) in records {
            verifier.check(record, hash)?;
        }
        Ok(verifier.verified)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
    }

    #[test]
    fn an_edit_is_located() {
        let mut records = chain(5);
        records[2].0.tag = Some("v2".into());
        assert!(matches!(
            verify(&records),
            Err(ChainBreak::HashMismatch { seq: 3, .. })
        ));
    }

    #[test]
    fn a_removal_or_reorder_is_located() {
        let mut removed = chain(5);
        removed.remove(1);
        assert!(matches!(
            verify(&removed),
            Err(ChainBreak::OutOfSequence {
                seq: 3,
                expected: 2,
                ..
            })
        ));

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert!(matches!(
            verify(&reordered),
            Err(ChainBreak::OutOfSequence { seq: 3, .. })
        ));
    }

    #[test]
    fn a_rehashed_edit_still_breaks_the_link() {
        let mut records = chain(4);
        records[1].0.outcome = "ignored".into();
        records[1].1 = records[1].0.compute_hash();
        assert!(matches!(
            verify(&records),
            Err(ChainBreak::Broken { seq: 3, .. })
        ));
    }

    #[test]
    fn canonical_form_survives_a_json_round_trip() {
        let (record, hash) = chain(1).remove(0);
        let text = serde_json::to_string(&record).expect("serialise");
        let back: ChainedRecord = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.compute_hash(), hash);
    }

    #[test]
    fn a_version_1_record_hashes_without_the_member_and_version_2_with_it() {
        let (mut record, v1_hash) = chain(1).remove(0);
        assert!(!record.canonical().contains("format_version"));
        record.format_version = Some(FORMAT_VERSION);
        assert!(record.canonical().ends_with(",\"format_version\":2}"));
        assert_ne!(record.compute_hash(), v1_hash);
        let mut verifier = ChainVerifier::new(None);
        assert_eq!(verifier.check(&record, &record.compute_hash()), Ok(()));
    }

    #[test]
    fn a_format_version_this_build_never_wrote_is_refused() {
        for version in [1, FORMAT_VERSION + 1] {
            let (mut record, _) = chain(1).remove(0);
            record.format_version = Some(version);
            let hash = record.compute_hash();
            assert!(matches!(
                ChainVerifier::new(None).check(&record, &hash),
                Err(ChainBreak::UnknownFormat { seq: 1, version: v, .. }) if v == version
            ));
        }
    }
}
