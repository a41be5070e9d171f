//! Tests of the RFC 9162 algorithms against vectors computed independently by
//! tests/merkle/vectors.py (Python, hashlib, the RFC's recursive definitions).

use super::*;

#[derive(serde::Deserialize)]
struct Vectors {
    leaves: Vec<String>,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    size: u64,
    root: String,
    inclusion: Vec<Vec<String>>,
    consistency: Vec<Vec<String>>,
}

fn hash(text: &str) -> Hash {
    let bytes = hex::decode(text).expect("hex");
    bytes.try_into().expect("32 bytes")
}

fn hashes(texts: &[String]) -> Vec<Hash> {
    texts.iter().map(|t| hash(t)).collect()
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("../../../tests/fixtures/merkle-vectors.json"))
        .expect("vectors")
}

fn tree(leaves: &[String], size: u64) -> InMemory {
    InMemory {
        leaves: leaves
            .iter()
            .take(usize::try_from(size).expect("small"))
            .map(|l| leaf_hash(&hash(l)))
            .collect(),
    }
}

/// The same tree grown leaf by leaf through `append_nodes`, as the database grows it.
fn grown(leaves: &[Hash]) -> std::collections::HashMap<Node, Hash> {
    let mut stored = std::collections::HashMap::new();
    for (size, leaf) in (0u64..).zip(leaves) {
        let frontier: Vec<(Node, Hash)> = frontier(size).iter().map(|n| (*n, stored[n])).collect();
        for (node, h) in append_nodes(size, &frontier, std::slice::from_ref(leaf)) {
            stored.insert(node, h);
        }
    }
    stored
}

struct Stored(std::collections::HashMap<Node, Hash>);

impl Subtrees for Stored {
    fn hash(&mut self, node: Node) -> Hash {
        self.0[&node]
    }
}

#[test]
fn roots_and_proofs_match_the_independent_vectors_for_1_to_17_leaves() {
    let v = vectors();
    for case in &v.cases {
        let mut mem = tree(&v.leaves, case.size);
        assert_eq!(
            root(&mut mem, case.size),
            hash(&case.root),
            "root of {}",
            case.size
        );
        for (m, expected) in (0u64..).zip(&case.inclusion) {
            let proof = inclusion_proof(&mut mem, m, case.size).expect("in range");
            assert_eq!(proof, hashes(expected), "inclusion of {m} in {}", case.size);
        }
        for (m, expected) in (1u64..).zip(&case.consistency) {
            let proof = consistency_proof(&mut mem, m, case.size).expect("m <= n");
            assert_eq!(proof, hashes(expected), "consistency {m} -> {}", case.size);
        }
    }
}

#[test]
fn a_tree_grown_one_leaf_at_a_time_stores_exactly_what_the_proofs_need() {
    let v = vectors();
    let leaves = tree(&v.leaves, 17).leaves;
    let mut stored = Stored(grown(&leaves));
    // 17 leaves: 17 + 8 + 4 + 2 + 1 complete subtrees.
    assert_eq!(stored.0.len(), 32);
    for case in &v.cases {
        assert_eq!(root(&mut stored, case.size), hash(&case.root));
        for (m, expected) in (0u64..).zip(&case.inclusion) {
            let proof = inclusion_proof(&mut stored, m, case.size).expect("in range");
            assert_eq!(proof, hashes(expected));
        }
    }
}

#[test]
fn appending_a_batch_creates_the_same_nodes_as_appending_one_by_one() {
    let v = vectors();
    let leaves = tree(&v.leaves, 17).leaves;
    let one_by_one = grown(&leaves);
    let first = grown(&leaves[..5]);
    let frontier: Vec<(Node, Hash)> = frontier(5).iter().map(|n| (*n, first[n])).collect();
    let mut batched = first.clone();
    batched.extend(append_nodes(5, &frontier, &leaves[5..]));
    assert_eq!(batched, one_by_one);
}

#[test]
fn every_vector_proof_verifies_and_every_altered_one_fails() {
    let v = vectors();
    for case in &v.cases {
        let mem = tree(&v.leaves, case.size);
        let root = hash(&case.root);
        for (m, expected) in (0u64..).zip(&case.inclusion) {
            let proof = hashes(expected);
            let leaf = mem.leaves[usize::try_from(m).expect("small")];
            assert_eq!(verify_inclusion(m, case.size, &leaf, &proof, &root), Ok(()));
            let other = node_hash(&leaf, &leaf);
            assert!(verify_inclusion(m, case.size, &other, &proof, &root).is_err());
            if let Some(first) = proof.first() {
                let mut tampered = proof.clone();
                tampered[0] = node_hash(first, first);
                assert!(verify_inclusion(m, case.size, &leaf, &tampered, &root).is_err());
                assert!(verify_inclusion(m, case.size, &leaf, &proof[1..], &root).is_err());
            }
        }
    }
}

#[test]
fn every_vector_consistency_proof_verifies_and_a_fork_does_not() {
    let v = vectors();
    let roots: Vec<Hash> = v.cases.iter().map(|c| hash(&c.root)).collect();
    for case in &v.cases {
        for (m, expected) in (1u64..).zip(&case.consistency) {
            let proof = hashes(expected);
            let first = roots[usize::try_from(m - 1).expect("small")];
            let second = hash(&case.root);
            assert_eq!(
                verify_consistency(m, case.size, &first, &second, &proof),
                Ok(())
            );
            // A first tree whose leaves differ (a forked log) does not verify.
            let forked = node_hash(&first, &first);
            assert!(verify_consistency(m, case.size, &forked, &second, &proof).is_err());
            assert!(verify_consistency(m, case.size, &first, &forked, &proof).is_err());
        }
    }
}

#[test]
fn the_empty_tree_and_out_of_range_requests_are_answered_plainly() {
    let mut mem = InMemory { leaves: vec![] };
    assert_eq!(root(&mut mem, 0), empty_root());
    assert_eq!(
        inclusion_proof(&mut mem, 0, 0),
        Err(ProofError::OutOfRange { index: 0, size: 0 })
    );
    assert!(consistency_proof(&mut mem, 3, 2).is_err());
    assert_eq!(verify_consistency(0, 5, &[0; 32], &[1; 32], &[]), Ok(()));
}

#[test]
fn a_proof_at_ten_million_leaves_needs_few_stored_nodes() {
    let mut rec = Recorder::default();
    let size = 10_000_000;
    let _ = inclusion_proof(&mut rec, 1_234_567, size).expect("in range");
    let _ = root(&mut rec, size);
    // log2(10^7) ~ 23.3: the path plus the root's decomposition, each at most ~24 nodes.
    assert!(rec.nodes.len() <= 48, "{} nodes", rec.nodes.len());
}
