//! The evidence record and its hash chain.
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

/// The chain's starting point.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One evidence record as stored, exported and verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainedRecord {
    pub seq: i64,
    #[serde(with = "micros")]
    pub recorded_at: DateTime<Utc>,
    pub event_id: String,
    #[serde(with = "micros")]
    pub event_time: DateTime<Utc>,
    pub kind: String,
    pub outcome: String,
    pub account: Option<String>,
    pub region: Option<String>,
    pub repository: Option<String>,
    pub digest: Option<String>,
    pub tag: Option<String>,
    pub actor: Option<String>,
    pub detail: Value,
    pub prev_hash: String,
}

impl ChainedRecord {
    /// The record's hash over its canonical serialisation.
    pub fn compute_hash(&self) -> String {
        // Serialising plain strings, integers and a `Value` cannot fail.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    }
}

/// Postgres keeps microseconds: hash exactly what can be read back.
pub fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    let micros = time.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(time)
}

mod micros {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
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
                    kind: "image_pushed".into(),
                    outcome: "processed".into(),
                    account: Some("123456789012".into()),
                    region: Some("us-east-1".into()),
                    repository: Some("app".into()),
                    digest: None,
                    tag: Some("v1".into()),
                    actor: None,
                    detail: json!({"b": 1, "a": [seq]}),
                    prev_hash: prev.clone(),
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
}
