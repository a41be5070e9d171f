//! Proofs a reader can check with the public key alone: a record's inclusion proof against a
//! signed head, the consistency proof between two heads, and the database's tree checked
//! against its records and its signed heads (docs/EVIDENCE.md, "Proofs", "Verify").

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::heads::{self, HeadError, SignatureProblem, SignedHead, TreeHead};
use super::merkle::{self, Hash, ProofError};
use super::tree::{self, TreeError};

/// A record's inclusion proof: its chain hash is leaf `leaf_index` of the tree of `tree_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    pub seq: i64,
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The record's chain hash (the leaf's bytes).
    pub record_hash: String,
    /// The audit path, lowercase hex, leaf to root (RFC 9162 section 2.1.3).
    pub path: Vec<String>,
}

/// The consistency proof between two heads (RFC 9162 section 2.1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub from: SignedHead,
    pub to: SignedHead,
    pub path: Vec<String>,
}

/// What `evidence prove` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proven {
    pub head: SignedHead,
    pub proof: InclusionProof,
}

/// Why a proof or the stored tree does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofProblem {
    #[error(
        "record seq {seq}: its inclusion proof does not lead to the root of the head of size {tree_size}: the record or the proof was altered"
    )]
    Inclusion { seq: i64, tree_size: u64 },
    #[error(
        "record seq {seq}: the proof places it at leaf {leaf_index}, but the head's first seq {first_seq} puts it at leaf {expected}"
    )]
    Position {
        seq: i64,
        leaf_index: u64,
        first_seq: i64,
        expected: i64,
    },
    #[error(
        "the heads of size {from} and {to} do not extend each other: the log was rewritten or forked between them"
    )]
    Inconsistent { from: u64, to: u64 },
    #[error("the heads belong to different logs ({0} and {1})")]
    OtherLog(String, String),
    #[error("a proof hash is not 64 hex digits")]
    BadHex,
    #[error("head of size {size}: {problem}")]
    Signature {
        size: u64,
        problem: SignatureProblem,
    },
    #[error(
        "record seq {seq}: its hash is not the tree's leaf for it: the record was rewritten after the tree held it"
    )]
    LeafMismatch { seq: i64 },
    #[error(
        "the tree holds {leaves} leaves but the chain has {records} records after seq {base}: the tree and the chain disagree"
    )]
    SizeMismatch {
        leaves: u64,
        records: u64,
        base: i64,
    },
    #[error(
        "the head of size {size} (signed {at}) is larger than the log ({leaves} leaves): the log was rolled back to an earlier prefix"
    )]
    RolledBack { size: u64, at: String, leaves: u64 },
    #[error(
        "the head of size {size} (signed {at}) has root {head_root}, but the log's tree at that size has root {tree_root}: the log was rewritten after the head was made"
    )]
    Rewritten {
        size: u64,
        at: String,
        head_root: String,
        tree_root: String,
    },
}

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("evidence query failed: {0}")]
    Sql(#[from] sqlx::Error),
}

fn unhex(text: &str) -> Result<Hash, ProofProblem> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ProofProblem::BadHex)
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// Checks an inclusion proof against a head (whose signature is checked separately).
///
/// # Errors
/// When the proof does not place `record_hash` at its seq under the head's root.
pub fn check_inclusion(head: &TreeHead, proof: &InclusionProof) -> Result<(), ProofProblem> {
    let expected = proof.seq - head.first_seq;
    if i64::try_from(proof.leaf_index).ok() != Some(expected) || proof.tree_size != head.tree_size {
        return Err(ProofProblem::Position {
            seq: proof.seq,
            leaf_index: proof.leaf_index,
            first_seq: head.first_seq,
            expected,
        });
    }
    let leaf =
        tree::record_leaf(proof.seq, &proof.record_hash).map_err(|_| ProofProblem::BadHex)?;
    let path = proof
        .path
        .iter()
        .map(|h| unhex(h))
        .collect::<Result<Vec<_>, _>>()?;
    let root = unhex(&head.root_hash)?;
    merkle::verify_inclusion(proof.leaf_index, proof.tree_size, &leaf, &path, &root).map_err(
        |_: ProofError| ProofProblem::Inclusion {
            seq: proof.seq,
            tree_size: proof.tree_size,
        },
    )
}

/// Checks that `proof.to` extends `proof.from` (signatures are checked separately).
///
/// # Errors
/// When the heads belong to different logs or the proof does not link them.
pub fn check_consistency(proof: &ConsistencyProof) -> Result<(), ProofProblem> {
    let (from, to) = (&proof.from.head, &proof.to.head);
    if from.log_id != to.log_id {
        return Err(ProofProblem::OtherLog(
            from.log_id.clone(),
            to.log_id.clone(),
        ));
    }
    let path = proof
        .path
        .iter()
        .map(|h| unhex(h))
        .collect::<Result<Vec<_>, _>>()?;
    merkle::verify_consistency(
        from.tree_size,
        to.tree_size,
        &unhex(&from.root_hash)?,
        &unhex(&to.root_hash)?,
        &path,
    )
    .map_err(|_| ProofProblem::Inconsistent {
        from: from.tree_size,
        to: to.tree_size,
    })
}

/// The inclusion proof of the record `seq` against the head `head`, from the stored tree.
///
/// # Errors
/// When the record is not under the head or the tree cannot answer.
pub async fn prove(
    pool: &PgPool,
    head: &TreeHead,
    seq: i64,
) -> Result<InclusionProof, VerifyError> {
    let index = u64::try_from(seq - head.first_seq).map_err(|_| {
        TreeError::Proof(ProofError::OutOfRange {
            index: 0,
            size: head.tree_size,
        })
    })?;
    let mut conn = pool.acquire().await?;
    let (leaf, path) = tree::inclusion(&mut conn, index, head.tree_size).await?;
    let record_hash: Option<String> =
        sqlx::query_scalar("SELECT hash FROM evidence WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&mut *conn)
            .await?;
    // An archived record is no longer in the table; its chain hash is not needed to prove it
    // (the reader has the record), but the proof names it when it is at hand.
    let record_hash = record_hash.unwrap_or_default();
    let _ = leaf;
    Ok(InclusionProof {
        seq,
        leaf_index: index,
        tree_size: head.tree_size,
        record_hash,
        path: hexes(&path),
    })
}

/// The consistency proof between two stored heads.
///
/// # Errors
/// When the tree cannot answer.
pub async fn consistency(
    pool: &PgPool,
    from: SignedHead,
    to: SignedHead,
) -> Result<ConsistencyProof, VerifyError> {
    let mut conn = pool.acquire().await?;
    let path = tree::consistency(&mut conn, from.head.tree_size, to.head.tree_size).await?;
    Ok(ConsistencyProof {
        from,
        to,
        path: hexes(&path),
    })
}

/// What the database's tree and heads showed.
#[derive(Debug, Default)]
pub struct TreeReport {
    pub leaves: u64,
    pub heads: usize,
    pub signed: usize,
    pub unsigned: usize,
    /// The newest head, when there is one.
    pub newest: Option<SignedHead>,
    /// Whether signatures were checked (a public key was at hand).
    pub signatures_checked: bool,
    /// The first problem found; `None` when everything holds.
    pub problem: Option<ProofProblem>,
}

/// Every stored record's hash must be its leaf in the tree, and the tree must end where the
/// chain does; streamed in constant memory.
async fn check_leaves(pool: &PgPool, base: i64) -> Result<Result<u64, ProofProblem>, VerifyError> {
    let mut rows = sqlx::query_as::<_, (i64, String, Option<Vec<u8>>)>(
        "SELECT e.seq, e.hash, t.hash FROM evidence e
           LEFT JOIN evidence_tree t ON t.level = 0 AND t.idx = e.seq - 1 - $1
          WHERE e.seq > $1 ORDER BY e.seq",
    )
    .bind(base)
    .fetch(pool);
    while let Some((seq, hash, leaf)) = rows.try_next().await? {
        let expected = tree::record_leaf(seq, &hash)?;
        if leaf.as_deref() != Some(expected.as_slice()) {
            return Ok(Err(ProofProblem::LeafMismatch { seq }));
        }
    }
    drop(rows);
    let mut conn = pool.acquire().await?;
    let leaves = tree::size(&mut conn).await?;
    let head_seq: i64 = sqlx::query_scalar("SELECT seq FROM evidence_chain_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let records = u64::try_from(head_seq - base).unwrap_or(0);
    if leaves != records {
        return Ok(Err(ProofProblem::SizeMismatch {
            leaves,
            records,
            base,
        }));
    }
    Ok(Ok(leaves))
}

/// Checks one head against the stored tree (and its signature when a key is at hand).
async fn check_head(
    pool: &PgPool,
    head: &SignedHead,
    leaves: u64,
    point: Option<&[u8]>,
) -> Result<Result<(), ProofProblem>, VerifyError> {
    let h = &head.head;
    if let Some(point) = point {
        match heads::verify_signature(head, point) {
            Ok(()) | Err(SignatureProblem::Unsigned) => {}
            Err(problem) => {
                return Ok(Err(ProofProblem::Signature {
                    size: h.tree_size,
                    problem,
                }));
            }
        }
    }
    let at = h.timestamp.to_rfc3339();
    if h.tree_size > leaves {
        return Ok(Err(ProofProblem::RolledBack {
            size: h.tree_size,
            at,
            leaves,
        }));
    }
    let mut conn = pool.acquire().await?;
    let root = hex::encode(tree::root(&mut conn, h.tree_size).await?);
    if root != h.root_hash {
        return Ok(Err(ProofProblem::Rewritten {
            size: h.tree_size,
            at,
            head_root: h.root_hash.clone(),
            tree_root: root,
        }));
    }
    Ok(Ok(()))
}

/// Verifies the stored tree against the records and against every head: the database's own
/// heads and any `extra` ones (a head kept by an auditor, the heads anchored in S3).
///
/// # Errors
/// When a query fails; what does not hold is the report's `problem`.
pub async fn verify_tree(
    pool: &PgPool,
    point: Option<&[u8]>,
    extra: &[SignedHead],
) -> Result<TreeReport, VerifyError> {
    let mut conn = pool.acquire().await?;
    let (log_id, base) = tree::log_identity(&mut conn).await?;
    drop(conn);
    let mut report = TreeReport {
        signatures_checked: point.is_some(),
        ..TreeReport::default()
    };
    report.leaves = match check_leaves(pool, base).await? {
        Ok(leaves) => leaves,
        Err(problem) => {
            report.problem = Some(problem);
            return Ok(report);
        }
    };
    let stored = heads::all(pool).await?;
    for head in stored.iter().chain(extra) {
        if head.head.log_id != log_id {
            report.problem = Some(ProofProblem::OtherLog(head.head.log_id.clone(), log_id));
            return Ok(report);
        }
        if let Err(problem) = check_head(pool, head, report.leaves, point).await? {
            report.problem = Some(problem);
            return Ok(report);
        }
        if head.signature.is_some() {
            report.signed += 1;
        } else {
            report.unsigned += 1;
        }
    }
    report.heads = stored.len() + extra.len();
    report.newest = stored
        .into_iter()
        .chain(extra.iter().cloned())
        .max_by_key(|h| h.head.tree_size);
    Ok(report)
}
