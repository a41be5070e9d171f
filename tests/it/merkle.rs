//! The Merkle log over the evidence (docs/EVIDENCE.md, "The Merkle tree"): the stored tree
//! grows with the chain, adopts a chain written before it, and answers proofs that the pure
//! RFC 9162 verifier accepts.

use ecr_audit::evidence::merkle::{self, Hash, InMemory};
use ecr_audit::evidence::tree;
use sqlx::PgPool;

use crate::evidence::{commit, history, repository_plan};

/// The leaf hashes of the stored chain, recomputed from the records' chain hashes.
async fn leaves(pool: &PgPool) -> Vec<Hash> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM evidence ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("records");
    rows.iter()
        .map(|(seq, h)| tree::record_leaf(*seq, h).expect("hash"))
        .collect()
}

#[tokio::test]
async fn the_stored_tree_grows_with_every_batch_and_proves_every_record() {
    let db = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    history(&store).await;
    commit(
        &store,
        vec![
            repository_plan("m1", "team/a", "MUTABLE"),
            repository_plan("m2", "team/b", "IMMUTABLE"),
            repository_plan("m3", "team/c", "MUTABLE"),
        ],
    )
    .await;
    let leaves = leaves(&db.pool).await;
    let size = u64::try_from(leaves.len()).expect("size");
    assert!(size > 10, "{size} records");
    let mut memory = InMemory {
        leaves: leaves.clone(),
    };
    let mut conn = db.pool.acquire().await.expect("conn");
    assert_eq!(tree::size(&mut conn).await.expect("size"), size);
    for n in 1..=size {
        let expected = merkle::root(&mut memory, n);
        assert_eq!(
            tree::root(&mut conn, n).await.expect("root"),
            expected,
            "root at {n}"
        );
        for m in 0..n {
            let (leaf, proof) = tree::inclusion(&mut conn, m, n).await.expect("proof");
            assert_eq!(leaf, leaves[usize::try_from(m).expect("small")]);
            merkle::verify_inclusion(m, n, &leaf, &proof, &expected).expect("verifies");
        }
        let first_root = merkle::root(&mut memory, n / 2);
        let proof = tree::consistency(&mut conn, n / 2, n)
            .await
            .expect("consistency");
        merkle::verify_consistency(n / 2, n, &first_root, &expected, &proof).expect("consistent");
    }
    assert!(
        tree::root(&mut conn, size + 1).await.is_err(),
        "no tree beyond the chain"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn the_migration_adopts_a_chain_written_before_the_tree(pool: PgPool) {
    crate::evidence::load_v1_fixture(&pool).await;
    let leaves = leaves(&pool).await;
    let size = u64::try_from(leaves.len()).expect("size");
    assert!(size > 0);
    let mut conn = pool.acquire().await.expect("conn");
    let expected = merkle::root(&mut InMemory { leaves }, size);
    assert_eq!(tree::root(&mut conn, size).await.expect("root"), expected);
    // New records extend the adopted tree.
    drop(conn);
    let store = ecr_audit::store::Store::from_pool(pool.clone());
    commit(
        &store,
        vec![repository_plan("after", "team/after", "MUTABLE")],
    )
    .await;
    let leaves = crate::merkle::leaves(&pool).await;
    let size = u64::try_from(leaves.len()).expect("size");
    let mut conn = pool.acquire().await.expect("conn");
    let expected = merkle::root(&mut InMemory { leaves }, size);
    assert_eq!(tree::root(&mut conn, size).await.expect("root"), expected);
}

#[tokio::test]
async fn the_tree_refuses_update_delete_and_truncate() {
    let db = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    history(&store).await;
    for statement in [
        "UPDATE evidence_tree SET hash = hash WHERE level = 0 AND idx = 0",
        "DELETE FROM evidence_tree WHERE level = 0 AND idx = 0",
        "TRUNCATE evidence_tree",
    ] {
        let err = sqlx::query(statement)
            .execute(&db.pool)
            .await
            .expect_err(statement);
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
}
