//! The stored Merkle tree (`evidence_tree`): grown by the database's append function
//! (migrations/20261205000100_evidence_tree_one_insert.sql), read here for roots and proofs in
//! `O(log n)` rows (docs/EVIDENCE.md, "The Merkle tree").

use std::collections::{BTreeSet, HashMap};

use sqlx::PgConnection;

use super::merkle::{self, Hash, Node, ProofError, Recorder, Subtrees};

/// Why the stored tree could not answer.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("evidence tree query failed: {0}")]
    Sql(#[from] sqlx::Error),
    /// A node the tree must hold at this size is missing: the tree and the chain disagree.
    #[error(
        "the evidence tree lacks node (level {level}, index {index}): it does not hold {size} leaves"
    )]
    Missing { level: u32, index: u64, size: u64 },
    #[error("a stored chain hash is not 64 hex digits (seq {seq})")]
    BadChainHash { seq: i64 },
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// The leaf hash of a record: `SHA-256(0x00 || its chain hash's 32 bytes)`.
///
/// # Errors
/// When the chain hash is not 64 hex digits.
pub fn record_leaf(seq: i64, chain_hash: &str) -> Result<Hash, TreeError> {
    let bytes: [u8; 32] = hex::decode(chain_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(TreeError::BadChainHash { seq })?;
    Ok(merkle::leaf_hash(&bytes))
}

fn level_i16(node: Node) -> i16 {
    // Levels are below 64 by construction.
    i16::try_from(node.level).unwrap_or(i16::MAX)
}

fn index_i64(node: Node) -> i64 {
    i64::try_from(node.index).unwrap_or(i64::MAX)
}

/// Reads the stored hashes of `nodes` in one query.
///
/// # Errors
/// When the query fails or a node is missing.
async fn fetch(
    conn: &mut PgConnection,
    nodes: &BTreeSet<Node>,
    size: u64,
) -> Result<HashMap<Node, Hash>, TreeError> {
    let levels: Vec<i16> = nodes.iter().map(|n| level_i16(*n)).collect();
    let indexes: Vec<i64> = nodes.iter().map(|n| index_i64(*n)).collect();
    let rows: Vec<(i16, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT t.level, t.idx, t.hash FROM evidence_tree t
           JOIN UNNEST($1::smallint[], $2::bigint[]) AS w(level, idx)
             ON t.level = w.level AND t.idx = w.idx",
    )
    .bind(&levels)
    .bind(&indexes)
    .fetch_all(&mut *conn)
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for (level, idx, hash) in rows {
        let node = Node {
            level: u32::try_from(level).unwrap_or(u32::MAX),
            index: u64::try_from(idx).unwrap_or(u64::MAX),
        };
        if let Ok(hash) = <[u8; 32]>::try_from(hash) {
            found.insert(node, hash);
        }
    }
    if let Some(missing) = nodes.iter().find(|n| !found.contains_key(n)) {
        return Err(TreeError::Missing {
            level: missing.level,
            index: missing.index,
            size,
        });
    }
    Ok(found)
}

/// Nodes fetched from the table; every node asked for was fetched first (via [`Recorder`]).
struct Fetched(HashMap<Node, Hash>);

impl Subtrees for Fetched {
    fn hash(&mut self, node: Node) -> Hash {
        self.0.get(&node).copied().unwrap_or([0u8; 32])
    }
}

/// Runs a pure algorithm against the stored tree: once to learn which nodes it reads, then,
/// after one query for them, for real.
async fn run<T>(
    conn: &mut PgConnection,
    size: u64,
    algorithm: impl Fn(&mut dyn FnMut(Node) -> Hash) -> T,
) -> Result<T, TreeError> {
    let mut recorder = Recorder::default();
    algorithm(&mut |n| recorder.hash(n));
    let mut fetched = Fetched(fetch(conn, &recorder.nodes, size).await?);
    Ok(algorithm(&mut |n| fetched.hash(n)))
}

/// Adapts a closure to [`Subtrees`].
struct Via<'a>(&'a mut dyn FnMut(Node) -> Hash);

impl Subtrees for Via<'_> {
    fn hash(&mut self, node: Node) -> Hash {
        (self.0)(node)
    }
}

/// The log's identity and how many records precede the tree's first leaf (records retention
/// archived before the tree existed; 0 otherwise). Leaf `i` is the record with
/// `seq = base + i + 1`.
///
/// # Errors
/// When the query fails.
pub async fn log_identity(conn: &mut PgConnection) -> Result<(String, i64), TreeError> {
    Ok(
        sqlx::query_as("SELECT log_id::text, tree_base FROM evidence_log")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// How many leaves the stored tree holds.
///
/// # Errors
/// When the query fails.
pub async fn size(conn: &mut PgConnection) -> Result<u64, TreeError> {
    let n: Option<i64> =
        sqlx::query_scalar("SELECT max(idx) + 1 FROM evidence_tree WHERE level = 0")
            .fetch_one(&mut *conn)
            .await?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

/// The root hash of the first `size` leaves.
///
/// # Errors
/// When the query fails or the tree is smaller than `size`.
pub async fn root(conn: &mut PgConnection, size: u64) -> Result<Hash, TreeError> {
    run(conn, size, |f| merkle::root(&mut Via(f), size)).await
}

/// The hash of leaf `index` and its inclusion proof in the tree of `size` leaves.
///
/// # Errors
/// When the query fails, the tree is smaller than `size`, or `index >= size`.
pub async fn inclusion(
    conn: &mut PgConnection,
    index: u64,
    size: u64,
) -> Result<(Hash, Vec<Hash>), TreeError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size }.into());
    }
    let leaf = Node { level: 0, index };
    let (leaf, proof) = run(conn, size, |f| {
        let leaf = f(leaf);
        (leaf, merkle::inclusion_proof(&mut Via(f), index, size))
    })
    .await?;
    Ok((leaf, proof?))
}

/// The inclusion proofs of many leaves in the tree of `size` leaves, from one query for the
/// nodes all of them read (an export proves its records a thousand at a time).
///
/// # Errors
/// When the query fails, the tree is smaller than `size`, or an index is `>= size`.
pub async fn inclusion_many(
    conn: &mut PgConnection,
    indexes: &[u64],
    size: u64,
) -> Result<Vec<Vec<Hash>>, TreeError> {
    if let Some(&index) = indexes.iter().find(|&&i| i >= size) {
        return Err(ProofError::OutOfRange { index, size }.into());
    }
    let proofs = run(conn, size, |f| {
        let mut via = Via(f);
        indexes
            .iter()
            .map(|&index| merkle::inclusion_proof(&mut via, index, size))
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(proofs.into_iter().collect::<Result<Vec<_>, _>>()?)
}

/// The consistency proof from the tree of `first` leaves to the tree of `second`.
///
/// # Errors
/// When the query fails, the tree is smaller than `second`, or `first > second`.
pub async fn consistency(
    conn: &mut PgConnection,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, TreeError> {
    Ok(run(conn, second, |f| {
        merkle::consistency_proof(&mut Via(f), first, second)
    })
    .await??)
}
