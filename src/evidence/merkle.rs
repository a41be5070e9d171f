//! Pure RFC 9162 Merkle tree algorithms over the evidence log: roots, inclusion and consistency
//! proofs and their verification, computed from the hashes of complete aligned subtrees.
//!
//! A leaf's hash is `SHA-256(0x00 || leaf)`, an interior node's `SHA-256(0x01 || left || right)`
//! (RFC 9162 section 2.1.1). Leaf `i` (0-based) is the record with `seq = i + 1`; its bytes are
//! the 32 bytes of the record's chain hash (docs/EVIDENCE.md, "The Merkle tree").
//!
//! Every range the RFC's recursive definitions touch splits into complete subtrees aligned to
//! their size ([`Node`]: `2^level` leaves starting at `index * 2^level`), so a proof needs at
//! most `O(log n)` stored nodes and never the leaves themselves. The algorithms take a
//! [`Subtrees`] source: in memory for tests, stored nodes for the database (`tree`).

use sha2::{Digest as _, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// A complete subtree aligned to its size: the `2^level` leaves from `index * 2^level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub level: u32,
    pub index: u64,
}

/// Where the algorithms find the hash of a complete aligned subtree.
pub trait Subtrees {
    /// The hash of `node`; the algorithms only ask for nodes inside the tree they work on.
    fn hash(&mut self, node: Node) -> Hash;
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not inside a tree of {size} leaves")]
    OutOfRange { index: u64, size: u64 },
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("size {first} cannot be a prefix of size {second}")]
    SizesDecrease { first: u64, second: u64 },
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree: `SHA-256()` (RFC 9162 section 2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The complete aligned subtrees that make up the leaves `lo..hi`, left to right: the binary
/// decomposition of the range's size, which is aligned for every range the RFC's recursion
/// produces (and for every prefix `0..n`).
pub fn subtrees(lo: u64, hi: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut at = lo;
    let size = hi.saturating_sub(lo);
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            nodes.push(Node {
                level,
                index: at >> level,
            });
            at += 1u64 << level;
        }
    }
    nodes
}

/// The Merkle tree hash of the leaves `lo..hi` (`lo < hi`), from its complete subtrees:
/// RFC 9162's split at the largest power of two makes it a right fold of them.
pub fn range_hash(source: &mut impl Subtrees, lo: u64, hi: u64) -> Hash {
    let nodes = subtrees(lo, hi);
    let mut iter = nodes.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    let mut acc = source.hash(*last);
    for node in iter {
        acc = node_hash(&source.hash(*node), &acc);
    }
    acc
}

/// The root hash of the first `size` leaves.
pub fn root(source: &mut impl Subtrees, size: u64) -> Hash {
    range_hash(source, 0, size)
}

/// RFC 9162 `PATH(m, D[lo:hi])`, appended to `out`.
fn path(source: &mut impl Subtrees, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < lo + k {
        path(source, m, lo, lo + k, out);
        out.push(range_hash(source, lo + k, hi));
    } else {
        path(source, m, lo + k, hi, out);
        out.push(range_hash(source, lo, lo + k));
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree of the first `size` leaves.
///
/// # Errors
/// When `index` is not below `size`.
pub fn inclusion_proof(
    source: &mut impl Subtrees,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(source, index, 0, size, &mut out);
    Ok(out)
}

/// RFC 9162 `SUBPROOF(m, D[lo:hi], b)`, appended to `out`.
fn subproof(
    source: &mut impl Subtrees,
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(range_hash(source, lo, hi));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(source, m, lo, lo + k, whole, out);
        out.push(range_hash(source, lo + k, hi));
    } else {
        subproof(source, m - k, lo + k, hi, false, out);
        out.push(range_hash(source, lo, lo + k));
    }
}

/// The consistency proof that the tree of `first` leaves is a prefix of the tree of `second`
/// leaves (empty when `first` is 0 or equals `second`).
///
/// # Errors
/// When `first > second`.
pub fn consistency_proof(
    source: &mut impl Subtrees,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, ProofError> {
    if first > second {
        return Err(ProofError::SizesDecrease { first, second });
    }
    let mut out = Vec::new();
    if first > 0 && first < second {
        subproof(source, first, 0, second, true, &mut out);
    }
    Ok(out)
}

/// Shifts `fn_` and `sn` right until `fn_`'s lowest bit is set or `fn_` is 0.
fn shift_to_set_bit(fn_: &mut u64, sn: &mut u64) {
    while *fn_ & 1 == 0 && *fn_ != 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// Verifies an inclusion proof (RFC 9162 section 2.1.3.2).
///
/// # Errors
/// When the proof does not show `leaf` at `index` in the tree of `size` leaves with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    expected_root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            shift_to_set_bit(&mut fn_, &mut sn);
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != expected_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 section 2.1.4.2): the tree of `first` leaves with
/// `first_root` is a prefix of the tree of `second` leaves with `second_root`.
///
/// # Errors
/// When the proof does not show that.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesDecrease { first, second });
    }
    if first == second || first == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if first == 0 || first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            shift_to_set_bit(&mut fn_, &mut sn);
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != first_root || &sr != second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The nodes a tree of `size` leaves must already hold to append after it: its right edge.
pub fn frontier(size: u64) -> Vec<Node> {
    subtrees(0, size)
}

/// The nodes that appending `leaves` (already leaf-hashed) to a tree of `size` leaves creates,
/// given the hashes of its [`frontier`] (in that order): each leaf, and every subtree it
/// completes.
pub fn append_nodes(size: u64, frontier: &[(Node, Hash)], leaves: &[Hash]) -> Vec<(Node, Hash)> {
    let mut stack: Vec<(Node, Hash)> = frontier.to_vec();
    let mut created = Vec::with_capacity(leaves.len() * 2);
    for (offset, leaf) in (0u64..).zip(leaves) {
        let mut current = (
            Node {
                level: 0,
                index: size + offset,
            },
            *leaf,
        );
        created.push(current);
        // A node with an odd index completes its parent with the left sibling on the stack.
        while current.0.index & 1 == 1 {
            let Some((left, left_hash)) = stack.pop() else {
                break;
            };
            current = (
                Node {
                    level: left.level + 1,
                    index: left.index >> 1,
                },
                node_hash(&left_hash, &current.1),
            );
            created.push(current);
        }
        stack.push(current);
    }
    created
}

/// The right edge of a tree grown leaf by leaf in `O(log n)` memory: enough for its root at
/// every size, so a verifier streaming a file never holds more than one hash per level.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    stack: Vec<(u32, Hash)>,
    pub size: u64,
}

impl Frontier {
    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut current = (0u32, leaf);
        while let Some((level, left)) = self.stack.last().copied() {
            if level != current.0 {
                break;
            }
            self.stack.pop();
            current = (level + 1, node_hash(&left, &current.1));
        }
        self.stack.push(current);
        self.size += 1;
    }

    /// The root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some((_, last)) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, (_, h)| node_hash(h, &acc))
    }
}

/// Every node of a tree held in memory, computed from its leaf hashes; for tests and for
/// rebuilding a small tree.
pub struct InMemory {
    pub leaves: Vec<Hash>,
}

impl Subtrees for InMemory {
    fn hash(&mut self, node: Node) -> Hash {
        fn rec(leaves: &[Hash]) -> Hash {
            if leaves.len() == 1 {
                return leaves[0];
            }
            let (l, r) = leaves.split_at(leaves.len() / 2);
            node_hash(&rec(l), &rec(r))
        }
        let width = 1usize << node.level;
        let start = usize::try_from(node.index)
            .unwrap_or(usize::MAX)
            .saturating_mul(width);
        self.leaves
            .get(start..start.saturating_add(width))
            .map_or([0u8; 32], rec)
    }
}

/// Records which nodes an algorithm asks for (answering zeros), so that a database can fetch
/// them all in one query before the algorithm runs for real.
#[derive(Default)]
pub struct Recorder {
    pub nodes: std::collections::BTreeSet<Node>,
}

impl Subtrees for Recorder {
    fn hash(&mut self, node: Node) -> Hash {
        self.nodes.insert(node);
        [0u8; 32]
    }
}

#[cfg(test)]
mod tests;
