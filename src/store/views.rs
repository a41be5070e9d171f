//! Read models behind the CLI views (`posture`, `images`, `verify`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;

use super::{Store, StoreError};
use crate::evidence::chain::{ChainBreak, ChainVerifier, EVIDENCE_COLUMNS, EvidenceRow};

/// One control's verdict as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlView {
    pub status: String,
    pub reason: String,
}

/// One repository's posture (the `posture --format json` shape of docs/RUNBOOK.md).
#[derive(Debug, Clone, Serialize)]
pub struct PostureRow {
    pub account: String,
    pub region: String,
    pub repository: String,
    pub controls: BTreeMap<String, ControlView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignatureView {
    /// `None` for artifacts, which take no signature status.
    pub status: Option<String>,
    pub sources: Vec<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanView {
    /// `None` for artifacts, which take no scan status.
    pub status: Option<String>,
    pub raw_status: Option<String>,
    pub critical: Option<i64>,
    pub high: Option<i64>,
    pub medium: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EncryptionView {
    #[serde(rename = "type")]
    pub encryption_type: Option<String>,
    pub kms_key: Option<String>,
    pub customer_managed: Option<bool>,
}

/// One digest's posture (the `images --format json` shape of docs/RUNBOOK.md).
#[derive(Debug, Clone, Serialize)]
pub struct ImageRow {
    pub account: String,
    pub region: String,
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub pushed_by: Option<String>,
    pub artifact_of: Option<String>,
    /// `notation_signature`, `cosign_signature`, `sbom`, `attestation` or `artifact`.
    pub artifact_kind: Option<String>,
    pub signature: SignatureView,
    pub scan: ScanView,
    pub tag_immutability: Option<String>,
    pub tag_protected: Option<bool>,
    pub encryption: EncryptionView,
}

type PostureTuple = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

#[derive(sqlx::FromRow)]
struct ImageRecord {
    account: String,
    region: String,
    repository: String,
    digest: String,
    tags: Vec<String>,
    pushed_at: Option<DateTime<Utc>>,
    pushed_by: Option<String>,
    artifact_of: Option<String>,
    artifact_kind: Option<String>,
    tag_immutability: Option<String>,
    tag_protected: Option<bool>,
    encryption_type: Option<String>,
    kms_key: Option<String>,
    kms_customer_managed: Option<bool>,
    signature_status: Option<String>,
    signature_sources: Value,
    signature_reason: Option<String>,
    scan_status: Option<String>,
    scan_raw_status: Option<String>,
    scan_critical: Option<i32>,
    scan_high: Option<i32>,
    scan_medium: Option<i32>,
}

/// Where the stored chain starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainStart {
    Empty,
    /// The oldest stored record is seq 1.
    Genesis,
    /// Retention archived every record up to `seq`, whose hash was `hash`.
    Checkpoint {
        seq: i64,
        hash: String,
    },
    /// The oldest stored record is not seq 1 and no checkpoint explains why.
    Unanchored {
        seq: i64,
        event_id: String,
    },
}

/// The outcome of verifying the stored chain.
#[derive(Debug)]
pub enum ChainReport {
    Valid {
        records: u64,
        head_hash: String,
        /// The seq of the last archived record, when retention has archived the chain's start.
        continues_from: Option<i64>,
    },
    Broken(ChainBreak),
    /// Every record verified, but the head row names another end of the chain.
    HeadMismatch {
        records: u64,
        last_seq: i64,
        head_seq: i64,
    },
}

impl Store {
    /// Every existing repository with its control verdicts, ordered by account, region, name.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn posture(&self, repository: Option<&str>) -> Result<Vec<PostureRow>, StoreError> {
        let rows: Vec<PostureTuple> = sqlx::query_as(
            "SELECT r.account, r.region, r.name, c.control, c.status, c.reason
                   FROM repositories r
                   LEFT JOIN control_results c
                     ON c.account = r.account AND c.region = r.region AND c.repository = r.name
                  WHERE r.present AND ($1::text IS NULL OR r.name = $1)
                  ORDER BY r.account, r.region, r.name, c.control",
        )
        .bind(repository)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<PostureRow> = Vec::new();
        for (account, region, name, control, status, reason) in rows {
            let same = out.last().is_some_and(|last| {
                last.account == account && last.region == region && last.repository == name
            });
            if !same {
                out.push(PostureRow {
                    account,
                    region,
                    repository: name,
                    controls: BTreeMap::new(),
                });
            }
            if let (Some(row), Some(control), Some(status), Some(reason)) =
                (out.last_mut(), control, status, reason)
            {
                row.controls.insert(control, ControlView { status, reason });
            }
        }
        Ok(out)
    }

    /// Every digest that still exists, newest push first.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn images(&self, repository: Option<&str>) -> Result<Vec<ImageRow>, StoreError> {
        let rows: Vec<ImageRecord> = sqlx::query_as(
            "SELECT account, region, repository, digest, tags, pushed_at, pushed_by, artifact_of,
                    artifact_kind, tag_immutability, tag_protected, encryption_type, kms_key,
                    kms_customer_managed, signature_status, signature_sources, signature_reason,
                    scan_status, scan_raw_status, scan_critical, scan_high, scan_medium
               FROM images
              WHERE present AND ($1::text IS NULL OR repository = $1)
              ORDER BY pushed_at DESC NULLS LAST, account, region, repository, digest",
        )
        .bind(repository)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ImageRow {
                account: r.account,
                region: r.region,
                repository: r.repository,
                digest: r.digest,
                tags: r.tags,
                pushed_at: r.pushed_at,
                pushed_by: r.pushed_by,
                artifact_of: r.artifact_of,
                artifact_kind: r.artifact_kind,
                signature: SignatureView {
                    status: r.signature_status,
                    sources: serde_json::from_value(r.signature_sources).unwrap_or_default(),
                    reason: r.signature_reason,
                },
                scan: ScanView {
                    status: r.scan_status,
                    raw_status: r.scan_raw_status,
                    critical: r.scan_critical.map(i64::from),
                    high: r.scan_high.map(i64::from),
                    medium: r.scan_medium.map(i64::from),
                },
                tag_immutability: r.tag_immutability,
                tag_protected: r.tag_protected,
                encryption: EncryptionView {
                    encryption_type: r.encryption_type,
                    kms_key: r.kms_key,
                    customer_managed: r.kms_customer_managed,
                },
            })
            .collect())
    }

    /// Walks the whole evidence chain in `seq` order, in constant memory.
    ///
    /// The oldest stored record must be the genesis (seq 1), or retention must have left a
    /// checkpoint record on the chain naming the seq and hash it continues from; the walk then
    /// starts from that hash, and the checkpoint record itself is verified when the walk
    /// reaches it, so its claim is as tamper-evident as any other record.
    ///
    /// # Errors
    /// When the query fails; a broken chain is a report, not an error.
    pub async fn verify_chain(&self) -> Result<ChainReport, StoreError> {
        let anchor = match self.chain_start().await? {
            ChainStart::Empty | ChainStart::Genesis => None,
            ChainStart::Checkpoint { seq, hash } => Some((seq, hash)),
            ChainStart::Unanchored { seq, event_id } => {
                return Ok(ChainReport::Broken(ChainBreak::Unanchored {
                    seq,
                    event_id,
                }));
            }
        };
        let continues_from = anchor.as_ref().map(|(seq, _)| *seq);
        // From the genesis the first record must be seq 1 naming 64 zeros.
        let start = anchor.unwrap_or((0, crate::evidence::chain::GENESIS_HASH.to_owned()));
        let mut verifier = ChainVerifier::new(Some(start.clone()));
        let (mut last_seq, mut last_hash) = start;
        {
            let sql = format!("SELECT {EVIDENCE_COLUMNS} FROM evidence ORDER BY seq");
            let mut rows = sqlx::query_as::<_, EvidenceRow>(&sql).fetch(self.pool());
            while let Some(row) = rows.try_next().await? {
                let (record, hash) = row.into_record();
                if let Err(broken) = verifier.check(&record, &hash) {
                    return Ok(ChainReport::Broken(broken));
                }
                last_seq = record.seq;
                last_hash = hash;
            }
        }
        let (head_seq, head_hash): (i64, String) =
            sqlx::query_as("SELECT seq, hash FROM evidence_chain_head WHERE id = 1")
                .fetch_one(self.pool())
                .await?;
        if head_seq != last_seq || head_hash != last_hash {
            return Ok(ChainReport::HeadMismatch {
                records: verifier.verified,
                last_seq,
                head_seq,
            });
        }
        Ok(ChainReport::Valid {
            records: verifier.verified,
            head_hash,
            continues_from,
        })
    }

    /// Where the stored chain starts: at the genesis, or after the records a checkpoint
    /// archived.
    ///
    /// # Errors
    /// When a query fails.
    pub(crate) async fn chain_start(&self) -> Result<ChainStart, StoreError> {
        let oldest: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, event_id FROM evidence ORDER BY seq LIMIT 1")
                .fetch_optional(self.pool())
                .await?;
        let Some((seq, event_id)) = oldest else {
            return Ok(ChainStart::Empty);
        };
        if seq == 1 {
            return Ok(ChainStart::Genesis);
        }
        let claimed: Option<String> = sqlx::query_scalar(
            "SELECT detail->'continues_from'->>'hash' FROM evidence
              WHERE kind = 'checkpoint'
                AND (detail->'continues_from'->>'seq')::bigint = $1
              ORDER BY seq DESC LIMIT 1",
        )
        .bind(seq - 1)
        .fetch_optional(self.pool())
        .await?
        .flatten();
        Ok(match claimed {
            // The walk checks the oldest record's prev_hash against the claimed hash.
            Some(hash) => ChainStart::Checkpoint { seq: seq - 1, hash },
            None => ChainStart::Unanchored { seq, event_id },
        })
    }
}
