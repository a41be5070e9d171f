//! Verification of the stored chain, in constant memory: from the genesis, or from the
//! checkpoint retention left when it archived the chain's start.

use futures::TryStreamExt;
use sqlx::PgPool;

use super::chain::{ChainBreak, ChainVerifier, EVIDENCE_COLUMNS, EvidenceRow, GENESIS_HASH};

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

/// Walks the whole evidence chain in `seq` order, in constant memory.
///
/// The oldest stored record must be the genesis (seq 1), or retention must have left a
/// checkpoint record on the chain naming the seq and hash it continues from; the walk then
/// starts from that hash, and the checkpoint record itself is verified when the walk
/// reaches it, so its claim is as tamper-evident as any other record.
///
/// # Errors
/// When the query fails; a broken chain is a report, not an error.
pub async fn verify_database(pool: &PgPool) -> Result<ChainReport, sqlx::Error> {
    let anchor = match chain_start(pool).await? {
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
    let start = anchor.unwrap_or((0, GENESIS_HASH.to_owned()));
    let mut verifier = ChainVerifier::new(Some(start.clone()));
    let (mut last_seq, mut last_hash) = start;
    {
        let sql = format!("SELECT {EVIDENCE_COLUMNS} FROM evidence ORDER BY seq");
        let mut rows = sqlx::query_as::<_, EvidenceRow>(&sql).fetch(pool);
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
            .fetch_one(pool)
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
pub(crate) async fn chain_start(pool: &PgPool) -> Result<ChainStart, sqlx::Error> {
    let oldest: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, event_id FROM evidence ORDER BY seq LIMIT 1")
            .fetch_optional(pool)
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
    .fetch_optional(pool)
    .await?
    .flatten();
    Ok(match claimed {
        // The walk checks the oldest record's prev_hash against the claimed hash.
        Some(hash) => ChainStart::Checkpoint { seq: seq - 1, hash },
        None => ChainStart::Unanchored { seq, event_id },
    })
}
