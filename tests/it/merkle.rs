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

/// Every node the stored tree holds, as (level, idx, hash).
async fn stored_nodes(pool: &PgPool) -> Vec<(i16, i64, Vec<u8>)> {
    sqlx::query_as("SELECT level, idx, hash FROM evidence_tree ORDER BY level, idx")
        .fetch_all(pool)
        .await
        .expect("tree")
}

/// Every complete aligned subtree of the leaves, computed in memory.
fn complete_nodes(leaves: &[Hash]) -> Vec<(i16, i64, Vec<u8>)> {
    let mut memory = InMemory {
        leaves: leaves.to_vec(),
    };
    let mut nodes = Vec::new();
    for level in 0..16u32 {
        let count = leaves.len() >> level;
        for index in 0..count {
            let node = merkle::Node {
                level,
                index: u64::try_from(index).expect("small"),
            };
            nodes.push((
                i16::try_from(level).expect("small"),
                i64::try_from(index).expect("small"),
                merkle::Subtrees::hash(&mut memory, node).to_vec(),
            ));
        }
    }
    nodes
}

#[tokio::test]
async fn after_batches_of_every_size_the_tree_holds_exactly_the_complete_subtrees() {
    let db = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    // Batch sizes that start the append at every parity and alignment, and complete subtrees
    // of several levels at once.
    let mut next = 0;
    let mut starts = std::collections::BTreeSet::new();
    for size in [1, 1, 2, 3, 1, 5, 7, 1, 10, 4, 2, 9, 16, 3] {
        starts.insert(leaves(&db.pool).await.len() % 4);
        let plans = (0..size)
            .map(|_| {
                next += 1;
                // A repository seen before adds one record, a new one more: appends begin at
                // every position.
                let repository = if next % 3 == 0 {
                    "team/t1".to_owned()
                } else {
                    format!("team/t{next}")
                };
                repository_plan(&format!("t{next}"), &repository, "MUTABLE")
            })
            .collect();
        commit(&store, plans).await;
        let leaves = leaves(&db.pool).await;
        assert_eq!(
            stored_nodes(&db.pool).await,
            complete_nodes(&leaves),
            "after {} records",
            leaves.len()
        );
    }
    assert_eq!(
        starts.len(),
        4,
        "appends began at every position mod 4: {starts:?}"
    );
}

async fn record_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM evidence")
        .fetch_one(pool)
        .await
        .expect("records")
}

async fn node(pool: &PgPool, level: i16, idx: i64) -> Option<Vec<u8>> {
    sqlx::query_scalar("SELECT hash FROM evidence_tree WHERE level = $1 AND idx = $2")
        .bind(level)
        .bind(idx)
        .fetch_optional(pool)
        .await
        .expect("node")
}

/// Deletes one stored node as a superuser with the triggers off (as `replace_log` does), for
/// this transaction only: the pooled connection goes back with its guards on.
async fn remove_node(pool: &PgPool, level: i16, idx: i64) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("bypass the tree's guard");
    sqlx::query("DELETE FROM evidence_tree WHERE level = $1 AND idx = $2")
        .bind(level)
        .bind(idx)
        .execute(&mut *tx)
        .await
        .expect("damage the tree");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_missing_stored_sibling_leaves_its_parent_unwritten_and_the_append_succeeds() {
    let db = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    // Grow the log until its next leaf starts a level-1 node that is a right child: the append
    // then needs the stored level-1 node to its left.
    let mut next = 0;
    while record_count(&db.pool).await % 4 != 2 {
        next += 1;
        let name = format!("team/s{next}");
        commit(
            &store,
            vec![repository_plan(&format!("s{next}"), &name, "MUTABLE")],
        )
        .await;
    }
    let size = record_count(&db.pool).await;
    let sibling = size / 2 - 1;
    remove_node(&db.pool, 1, sibling).await;
    let plans = (0..3)
        .map(|n| repository_plan(&format!("after{n}"), &format!("team/after{n}"), "MUTABLE"))
        .collect();
    commit(&store, plans).await;
    assert!(
        record_count(&db.pool).await >= size + 2,
        "the append went through"
    );
    assert!(
        node(&db.pool, 1, sibling + 1).await.is_some(),
        "a node of new leaves"
    );
    assert!(
        node(&db.pool, 2, sibling / 2).await.is_none(),
        "a parent whose left child is missing"
    );
    let level0 = |nodes: Vec<(i16, i64, Vec<u8>)>| -> Vec<(i16, i64, Vec<u8>)> {
        nodes
            .into_iter()
            .filter(|(level, ..)| *level == 0)
            .collect()
    };
    let leaves = leaves(&db.pool).await;
    assert_eq!(
        level0(stored_nodes(&db.pool).await),
        level0(complete_nodes(&leaves)),
        "every leaf is written"
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

// ---------------------------------------------------------------------------------------------
// Signed tree heads, proofs, and the attacks they detect (docs/EVIDENCE.md, "Threat model").

use std::path::Path;

use ecr_audit::evidence::ChainedRecord;

/// A KMS signing key in the emulator, as the CloudFormation stack creates it.
async fn signing_key() -> String {
    let sdk = ecr_audit::aws::load_sdk_config().await;
    aws_sdk_kms::Client::new(&sdk)
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .description("ecr-audit evidence heads (test)")
        .send()
        .await
        .expect("create key")
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("key arn")
        .to_owned()
}

/// Runs the binary against the database with the key (if any); exit code and all output.
fn run(pool: &PgPool, key: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let mut command = crate::evidence::ecr_audit(pool);
    command.args(args);
    match key {
        Some(key) => command.env("ECR_AUDIT_EVIDENCE_KEY", key),
        None => command.env_remove("ECR_AUDIT_EVIDENCE_KEY"),
    };
    let output = command.output().expect("run ecr-audit");
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn stdout_to(pool: &PgPool, key: Option<&str>, args: &[&str], path: &Path) {
    let mut command = crate::evidence::ecr_audit(pool);
    if let Some(key) = key {
        command.env("ECR_AUDIT_EVIDENCE_KEY", key);
    }
    let output = command.args(args).output().expect("run ecr-audit");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(path, output.stdout).expect("write");
}

/// `verify FILE… --public-key PEM` with no database and no AWS in reach.
fn verify_offline(files: &[&Path], pem: &Path) -> (Option<i32>, String) {
    let output = assert_cmd::Command::cargo_bin("ecr-audit")
        .expect("binary")
        .arg("verify")
        .args(files)
        .arg("--public-key")
        .arg(pem)
        .env_remove("DATABASE_URL")
        .env_remove("ECR_AUDIT_EVIDENCE_KEY")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .expect("run verify");
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// As a superuser with the triggers off: replaces the whole log by `records` (re-linked and
/// re-hashed so the chain is internally consistent), moves the head row and, when
/// `rebuild_tree`, rebuilds the tree over the forgery too.
async fn replace_log(pool: &PgPool, mut records: Vec<ChainedRecord>, rebuild_tree: bool) {
    let mut prev = ecr_audit::evidence::GENESIS_HASH.to_owned();
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("triggers off");
    sqlx::query("DELETE FROM evidence")
        .execute(&mut *tx)
        .await
        .expect("delete");
    for (seq, r) in (1i64..).zip(records.iter_mut()) {
        r.seq = seq;
        r.prev_hash = prev.clone();
        let hash = r.compute_hash();
        sqlx::query(
            "INSERT INTO evidence (seq, recorded_at, event_id, event_time, kind, outcome, account,
                  region, repository, digest, tag, actor, detail, prev_hash, hash, format_version)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
        )
        .bind(r.seq)
        .bind(r.recorded_at)
        .bind(&r.event_id)
        .bind(r.event_time)
        .bind(r.kind.as_str())
        .bind(&r.outcome)
        .bind(&r.account)
        .bind(&r.region)
        .bind(&r.repository)
        .bind(&r.digest)
        .bind(&r.tag)
        .bind(&r.actor)
        .bind(&r.detail)
        .bind(&r.prev_hash)
        .bind(&hash)
        .bind(r.format_version)
        .execute(&mut *tx)
        .await
        .expect("insert forged record");
        prev = hash;
    }
    sqlx::query("UPDATE evidence_chain_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(i64::try_from(records.len()).expect("len"))
        .bind(&prev)
        .execute(&mut *tx)
        .await
        .expect("head");
    if rebuild_tree {
        sqlx::query("DELETE FROM evidence_tree")
            .execute(&mut *tx)
            .await
            .expect("tree");
        sqlx::query("SELECT evidence_tree_adopt()")
            .execute(&mut *tx)
            .await
            .expect("adopt");
    }
    tx.commit().await.expect("commit forgery");
}

async fn stored(pool: &PgPool) -> Vec<ChainedRecord> {
    crate::evidence::records(pool)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

async fn signed_log(key: &str) -> crate::harness::TestDb {
    let db = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    history(&store).await;
    let (code, out) = run(&db.pool, Some(key), &["evidence", "sign-head"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&db.pool, Some(key), &["verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 signatures verified"), "{out}");
    db
}

#[tokio::test]
async fn a_whole_evidence_table_replaced_by_another_consistent_chain_is_detected() {
    let key = signing_key().await;
    let db = signed_log(&key).await;
    // Another log, internally consistent, with other contents.
    let other = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(other.pool.clone());
    for i in 0..40 {
        commit(
            &store,
            vec![repository_plan(&format!("x{i}"), "team/other", "MUTABLE")],
        )
        .await;
    }
    replace_log(&db.pool, stored(&other.pool).await, true).await;
    let (code, out) = run(&db.pool, Some(&key), &["verify"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("OK: ") && out.contains(" evidence records verified"),
        "the chain itself verifies: {out}"
    );
    assert!(out.contains("BROKEN: the head of size"), "{out}");
    assert!(
        out.contains("the log was rewritten after the head was made"),
        "{out}"
    );
}

#[tokio::test]
async fn one_record_edited_with_every_later_hash_recomputed_is_detected() {
    let key = signing_key().await;
    let db = signed_log(&key).await;
    let mut records = stored(&db.pool).await;
    records[2].actor = Some("arn:aws:iam::123456789012:user/someone-else".into());
    // The tree left alone: the record no longer is its leaf.
    replace_log(&db.pool, records.clone(), false).await;
    let (code, out) = run(&db.pool, Some(&key), &["verify"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("record seq 3: its hash is not the tree's leaf"),
        "{out}"
    );
    // The tree rebuilt over the edit too: the signed head no longer matches.
    replace_log(&db.pool, records, true).await;
    let (code, out) = run(&db.pool, Some(&key), &["verify"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("the log was rewritten after the head was made"),
        "{out}"
    );
}

#[tokio::test]
async fn a_log_rolled_back_to_an_earlier_prefix_is_detected() {
    let key = signing_key().await;
    let db = signed_log(&key).await;
    let records = stored(&db.pool).await;
    replace_log(&db.pool, records[..5].to_vec(), true).await;
    let (code, out) = run(&db.pool, Some(&key), &["verify"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("OK: 5 evidence records verified"), "{out}");
    assert!(
        out.contains("the log was rolled back to an earlier prefix"),
        "{out}"
    );
}

#[tokio::test]
async fn a_head_signed_by_another_key_is_detected() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    let key = signing_key().await;
    let db = signed_log(&key).await;
    // The attacker rewrites the log and, to match, replaces the heads with one of their own,
    // signed by a key they hold, naming the real key.
    let mut records = stored(&db.pool).await;
    records[1].actor = Some("arn:aws:iam::123456789012:user/cover-up".into());
    replace_log(&db.pool, records, true).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let (log_id, _) = tree::log_identity(&mut conn).await.expect("log");
    let size = tree::size(&mut conn).await.expect("size");
    let root = hex::encode(tree::root(&mut conn, size).await.expect("root"));
    let head = ecr_audit::evidence::heads::TreeHead {
        log_id,
        first_seq: 1,
        tree_size: size,
        root_hash: root.clone(),
        timestamp: chrono::Utc::now(),
    };
    let head: ecr_audit::evidence::heads::TreeHead =
        serde_json::from_slice(&head.canonical()).expect("round trip");
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("pair");
    let signature = pair.sign(&rng, &head.canonical()).expect("sign");
    crate::evidence::tamper(&db.pool, &["DELETE FROM evidence_heads"]).await;
    sqlx::query(
        "INSERT INTO evidence_heads (tree_size, root_hash, signed_at, head_json, key_id, signature)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(i64::try_from(size).expect("size"))
    .bind(&root)
    .bind(head.timestamp)
    .bind(String::from_utf8(head.canonical()).expect("utf8"))
    .bind(&key)
    .bind(signature.as_ref())
    .execute(&db.pool)
    .await
    .expect("forged head");
    let (code, out) = run(&db.pool, Some(&key), &["verify"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("signature does not verify with the public key"),
        "{out}"
    );
    let _ = base64::engine::general_purpose::STANDARD.encode(b"");
}

#[tokio::test]
async fn inclusion_proofs_verify_offline_with_the_public_key_and_a_tampered_one_does_not() {
    let key = signing_key().await;
    let db = signed_log(&key).await;
    let dir = tempfile::tempdir().expect("dir");
    let pem = dir.path().join("key.pem");
    stdout_to(&db.pool, Some(&key), &["evidence", "public-key"], &pem);
    assert!(
        std::fs::read_to_string(&pem)
            .expect("pem")
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let proof = dir.path().join("proof.json");
    stdout_to(
        &db.pool,
        None,
        &["evidence", "prove", "--record", "4"],
        &proof,
    );
    let (code, out) = verify_offline(&[&proof], &pem);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("OK: ") && out.contains("record seq 4"),
        "{out}"
    );
    assert!(out.contains("every head signature verified"), "{out}");
    // One hash of the path altered.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&proof).expect("read")).expect("json");
    json["proof"]["path"][0] = serde_json::Value::String("ab".repeat(32));
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, json.to_string()).expect("write");
    let (code, out) = verify_offline(&[&tampered], &pem);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("inclusion proof does not lead to the root"),
        "{out}"
    );
    // The record's hash swapped for another record's: the same.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&proof).expect("read")).expect("json");
    json["proof"]["record_hash"] = serde_json::Value::String(stored_hash(&db.pool, 5).await);
    std::fs::write(&tampered, json.to_string()).expect("write");
    let (code, out) = verify_offline(&[&tampered], &pem);
    assert_eq!(code, Some(2), "{out}");
}

async fn stored_hash(pool: &PgPool, seq: i64) -> String {
    sqlx::query_scalar("SELECT hash FROM evidence WHERE seq = $1")
        .bind(seq)
        .fetch_one(pool)
        .await
        .expect("hash")
}

#[tokio::test]
async fn a_consistency_proof_links_heads_of_one_log_and_fails_between_heads_that_do_not_extend() {
    let key = signing_key().await;
    let db = signed_log(&key).await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    let first = tree::size(&mut db.pool.acquire().await.expect("conn"))
        .await
        .expect("size");
    commit(&store, vec![repository_plan("c1", "team/c", "MUTABLE")]).await;
    let (code, out) = run(&db.pool, Some(&key), &["evidence", "sign-head"]);
    assert_eq!(code, Some(0), "{out}");
    let second = tree::size(&mut db.pool.acquire().await.expect("conn"))
        .await
        .expect("size");
    let dir = tempfile::tempdir().expect("dir");
    let pem = dir.path().join("key.pem");
    stdout_to(&db.pool, Some(&key), &["evidence", "public-key"], &pem);
    let good = dir.path().join("good.json");
    let (from, to) = (first.to_string(), second.to_string());
    stdout_to(
        &db.pool,
        None,
        &["evidence", "consistency", "--from", &from, "--to", &to],
        &good,
    );
    let (code, out) = verify_offline(&[&good], &pem);
    assert_eq!(code, Some(0), "{out}");
    // The log forked: record 2 rewritten (chain and tree), then the honest signer signs the
    // forged tree as it grows.
    let mut records = stored(&db.pool).await;
    records[1].actor = Some("arn:aws:iam::123456789012:user/fork".into());
    replace_log(&db.pool, records, true).await;
    commit(&store, vec![repository_plan("c2", "team/c", "IMMUTABLE")]).await;
    let (code, out) = run(&db.pool, Some(&key), &["evidence", "sign-head"]);
    assert_eq!(code, Some(0), "{out}");
    let third = tree::size(&mut db.pool.acquire().await.expect("conn"))
        .await
        .expect("size")
        .to_string();
    let forked = dir.path().join("forked.json");
    stdout_to(
        &db.pool,
        None,
        &["evidence", "consistency", "--from", &from, "--to", &third],
        &forked,
    );
    let (code, out) = verify_offline(&[&forked], &pem);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("do not extend each other"), "{out}");
}

#[tokio::test]
async fn without_a_key_heads_are_unsigned_and_verification_says_unanchored() {
    let db = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    history(&store).await;
    let (code, out) = run(&db.pool, None, &["verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("UNANCHORED: the tree of"), "{out}");
    let (code, out) = run(&db.pool, None, &["evidence", "sign-head"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("unanchored"), "{out}");
    let (code, out) = run(&db.pool, None, &["verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("UNANCHORED:") && out.contains("unsigned"),
        "{out}"
    );
}

#[tokio::test]
async fn the_worker_task_makes_a_head_every_n_records_and_one_on_shutdown() {
    let key = signing_key().await;
    let db = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    let sdk = ecr_audit::aws::load_sdk_config().await;
    let signer = ecr_audit::evidence::heads::KmsSigner::new(&sdk, key);
    let stop = tokio_util::sync::CancellationToken::new();
    let metrics = std::sync::Arc::new(ecr_audit::telemetry::Metrics::new());
    let task = tokio::spawn(ecr_audit::evidence::heads::run_periodically(
        db.pool.clone(),
        ecr_audit::evidence::heads::HeadTask {
            signer: Some(signer),
            anchor: None,
            records: 3,
            interval: std::time::Duration::from_secs(3600),
        },
        metrics.clone(),
        stop.clone(),
    ));
    for i in 0..3 {
        commit(
            &store,
            vec![repository_plan(&format!("w{i}"), "team/w", "MUTABLE")],
        )
        .await;
    }
    wait_for_a_head(&db.pool).await;
    // One more record: below N and before T, so no head until shutdown.
    commit(&store, vec![repository_plan("w9", "team/w", "IMMUTABLE")]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        ecr_audit::evidence::heads::all(&db.pool)
            .await
            .expect("heads")
            .len(),
        1
    );
    stop.cancel();
    task.await.expect("task");
    let heads = ecr_audit::evidence::heads::all(&db.pool)
        .await
        .expect("heads");
    assert_eq!(heads.len(), 2);
    let size = tree::size(&mut db.pool.acquire().await.expect("conn"))
        .await
        .expect("size");
    assert_eq!(heads[1].head.tree_size, size);
    assert!(heads.iter().all(|h| h.signature.is_some()));
    assert_eq!(heads_counted(&metrics, "signed"), Some(2.0));
    assert_eq!(heads_counted(&metrics, "failed"), Some(0.0));
}

async fn wait_for_a_head(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while ecr_audit::evidence::heads::latest_size(pool)
        .await
        .expect("heads")
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no head after 3 records"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `ecr_audit_evidence_heads_total{outcome}` as the worker's metrics render it.
fn heads_counted(metrics: &ecr_audit::telemetry::Metrics, outcome: &str) -> Option<f64> {
    crate::helpers::metric_value(
        &metrics.render().expect("render"),
        "ecr_audit_evidence_heads_total",
        &[("outcome", outcome)],
    )
}

// ---------------------------------------------------------------------------------------------
// Exports cut against a signed head.

/// Replaces the line that holds record `seq` (JSON Lines) with `replacement`.
fn swap_line(path: &Path, seq: i64, replacement: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    let needle = format!("{{\"seq\":{seq},");
    let swapped: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&needle) {
                replacement.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_ne!(swapped.join("\n"), text.trim_end(), "record {seq} found");
    std::fs::write(path, swapped.join("\n") + "\n").expect("write");
}

/// Replaces the first hash of the first record's inclusion proof, in place.
fn alter_first_proof(path: &Path, format: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    let other = "cd".repeat(32);
    let altered = if format == "csv" {
        let mut rows: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
        let start = rows[1].rfind(',').expect("the proof column") + 1;
        rows[1].replace_range(start..start + 64, &other);
        rows.join("\r\n")
    } else {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut first: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
        let proof = if format == "ocsf" {
            &mut first["unmapped"]["ecr_audit"]["proof"]
        } else {
            &mut first["proof"]
        };
        proof[0] = serde_json::Value::String(other);
        lines[0] = first.to_string();
        lines.join("\n") + "\n"
    };
    std::fs::write(path, altered).expect("write");
}

#[tokio::test]
async fn a_filtered_export_proves_each_record_offline_with_only_the_public_key() {
    let key = signing_key().await;
    let db = signed_log(&key).await;
    let dir = tempfile::tempdir().expect("dir");
    let pem = dir.path().join("key.pem");
    stdout_to(&db.pool, Some(&key), &["evidence", "public-key"], &pem);
    let app = crate::evidence::export(&db.pool, dir.path(), "jsonl", &["--repository", "team/app"]);
    let web = crate::evidence::export(&db.pool, dir.path(), "jsonl", &["--repository", "team/web"]);
    let (code, out) = verify_offline(&[&app], &pem);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("inclusion proofs verified"), "{out}");
    assert!(out.contains("every head signature verified"), "{out}");
    // Every format carries the head.
    for format in ["csv", "ocsf"] {
        let file =
            crate::evidence::export(&db.pool, dir.path(), format, &["--repository", "team/app"]);
        let (code, out) = verify_offline(&[&file], &pem);
        assert_eq!(code, Some(0), "{format}: {out}");
        assert!(out.contains("inclusion proofs verified"), "{format}: {out}");
    }

    // A record swapped for a genuine record of the other export.
    let text = std::fs::read_to_string(&app).expect("read");
    let first_app: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("line")).expect("json");
    let web_text = std::fs::read_to_string(&web).expect("read");
    let web_line = web_text.lines().next().expect("line");
    let swapped = dir.path().join("swapped.jsonl");
    std::fs::copy(&app, &swapped).expect("copy");
    swap_line(&swapped, first_app["seq"].as_i64().expect("seq"), web_line);
    let (code, out) = verify_offline(&[&swapped], &pem);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("BROKEN"), "{out}");

    // One hash of the proof a record carries altered, in every format.
    for format in ["jsonl", "csv", "ocsf"] {
        let file =
            crate::evidence::export(&db.pool, dir.path(), format, &["--repository", "team/app"]);
        alter_first_proof(&file, format);
        let (code, out) = verify_offline(&[&file], &pem);
        assert_eq!(code, Some(2), "{format}: {out}");
        assert!(
            out.contains("inclusion proof does not lead to the root"),
            "{format}: {out}"
        );
    }

    // A record without its proof: inserted as far as the verifier can tell.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut first: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
    first.as_object_mut().expect("object").remove("proof");
    lines[0] = first.to_string();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").expect("write");
    let (code, out) = verify_offline(&[&tampered], &pem);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("carries no inclusion proof"), "{out}");

    // The manifest's head re-signed by nobody: its signature no longer matches.
    let mut manifest: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("m")).expect("json");
    manifest["manifest"]["tree_head"]["head"]["timestamp"] = "2020-01-01T00:00:00.000000Z".into();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    *lines.last_mut().expect("manifest") = manifest.to_string();
    std::fs::write(&tampered, lines.join("\n") + "\n").expect("write");
    let (code, out) = verify_offline(&[&tampered], &pem);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("signature does not verify"), "{out}");
}

#[tokio::test]
async fn a_full_export_rehashes_to_its_head_and_to_a_head_kept_earlier() {
    let key = signing_key().await;
    let db = signed_log(&key).await;
    let dir = tempfile::tempdir().expect("dir");
    let pem = dir.path().join("key.pem");
    stdout_to(&db.pool, Some(&key), &["evidence", "public-key"], &pem);
    let kept = dir.path().join("kept.json");
    stdout_to(&db.pool, None, &["evidence", "heads"], &kept);
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    commit(&store, vec![repository_plan("k1", "team/k", "MUTABLE")]).await;
    let (code, out) = run(&db.pool, Some(&key), &["evidence", "sign-head"]);
    assert_eq!(code, Some(0), "{out}");
    let full = crate::evidence::export(&db.pool, dir.path(), "jsonl", &[]);
    let output = assert_cmd::Command::cargo_bin("ecr-audit")
        .expect("binary")
        .arg("verify")
        .arg(&full)
        .arg("--public-key")
        .arg(&pem)
        .arg("--since-head")
        .arg(&kept)
        .env_remove("DATABASE_URL")
        .output()
        .expect("verify");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("the records re-hash to its root"), "{out}");
    assert!(
        out.contains("the log only grew since the kept head"),
        "{out}"
    );
    // The database agrees with the kept head too; after a rewrite it does not.
    let kept_arg = kept.to_str().expect("path");
    let (code, out) = run(&db.pool, Some(&key), &["verify", "--since-head", kept_arg]);
    assert_eq!(code, Some(0), "{out}");
    let mut records = stored(&db.pool).await;
    records[0].actor = Some("arn:aws:iam::123456789012:user/rewriter".into());
    replace_log(&db.pool, records, true).await;
    crate::evidence::tamper(&db.pool, &["DELETE FROM evidence_heads"]).await;
    let (code, out) = run(&db.pool, Some(&key), &["verify", "--since-head", kept_arg]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("the log was rewritten after the head was made"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// The anchor in S3.

/// A bucket with Object Lock, as the CloudFormation stack creates it.
async fn lock_bucket(name: &str) -> aws_sdk_s3::Client {
    let sdk = ecr_audit::aws::load_sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket(name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create bucket");
    s3
}

#[tokio::test]
async fn a_rewrite_that_also_deletes_the_database_heads_is_detected_against_the_s3_anchor() {
    let key = signing_key().await;
    let db = crate::harness::TestDb::new().await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    history(&store).await;
    let bucket = format!("ecr-audit-heads-{}", uuid_like());
    let s3 = lock_bucket(&bucket).await;
    let mut command = crate::evidence::ecr_audit(&db.pool);
    let output = command
        .args(["evidence", "sign-head"])
        .env("ECR_AUDIT_EVIDENCE_KEY", &key)
        .env("ECR_AUDIT_EVIDENCE_BUCKET", &bucket)
        .env("ECR_AUDIT_EVIDENCE_RETENTION_DAYS", "30")
        .output()
        .expect("sign-head");
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{err}");
    assert!(err.contains("anchored as heads/"), "{err}");
    // The head is in S3, locked in compliance mode.
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("list");
    let object_key = listed.contents()[0].key().expect("key").to_owned();
    let retention = s3
        .get_object_retention()
        .bucket(&bucket)
        .key(&object_key)
        .send()
        .await
        .expect("retention");
    assert_eq!(
        retention.retention().and_then(|r| r.mode()),
        Some(&aws_sdk_s3::types::ObjectLockRetentionMode::Compliance)
    );
    // The whole log replaced, the tree rebuilt, and every head in the database deleted.
    let mut records = stored(&db.pool).await;
    records[0].actor = Some("arn:aws:iam::123456789012:user/dba".into());
    replace_log(&db.pool, records, true).await;
    crate::evidence::tamper(&db.pool, &["DELETE FROM evidence_heads"]).await;
    let (code, out) = run(&db.pool, Some(&key), &["verify"]);
    assert_eq!(code, Some(0), "the database alone cannot tell: {out}");
    let output = crate::evidence::ecr_audit(&db.pool)
        .arg("verify")
        .env("ECR_AUDIT_EVIDENCE_KEY", &key)
        .env("ECR_AUDIT_EVIDENCE_BUCKET", &bucket)
        .output()
        .expect("verify");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(
        out.contains("checking against 1 heads anchored in S3"),
        "{out}"
    );
    assert!(
        out.contains("the log was rewritten after the head was made"),
        "{out}"
    );
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    )
}

/// Inclusion-proof latency from the stored tree at `ECR_AUDIT_BENCH_LEAVES` leaves (default
/// 2,000,000), the tree filled synthetically in SQL (the proof reads nodes, never checks them):
/// `cargo nextest run --locked --run-ignored only -E 'test(/inclusion_proof_latency/)' --no-capture`.
#[tokio::test]
#[ignore = "a measurement, not a check: fills millions of rows"]
async fn inclusion_proof_latency_at_millions_of_leaves() {
    let leaves: i64 = std::env::var("ECR_AUDIT_BENCH_LEAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let db = crate::harness::TestDb::new().await;
    let started = std::time::Instant::now();
    let mut width = leaves;
    let mut level = 0i16;
    while width > 0 {
        sqlx::query(
            "INSERT INTO evidence_tree (level, idx, hash)
             SELECT $1, i, sha256(int8send(i) || int2send($1)) FROM generate_series(0, $2 - 1) AS i",
        )
        .bind(level)
        .bind(width)
        .execute(&db.pool)
        .await
        .expect("fill");
        width /= 2;
        level += 1;
    }
    sqlx::query("ANALYZE evidence_tree")
        .execute(&db.pool)
        .await
        .expect("analyze");
    println!("filled {leaves} leaves in {:?}", started.elapsed());
    let size = u64::try_from(leaves).expect("size");
    let mut conn = db.pool.acquire().await.expect("conn");
    let mut times = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % size;
        let t = std::time::Instant::now();
        let (_, proof) = tree::inclusion(&mut conn, index, size)
            .await
            .expect("proof");
        times.push(t.elapsed());
        assert!(!proof.is_empty());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64) * q) as usize];
    println!(
        "inclusion proof at {leaves} leaves: p50 {:?}, p99 {:?}, max {:?} (2000 random leaves)",
        at(0.5),
        at(0.99),
        times[times.len() - 1]
    );
}

/// The proof file of archived record `seq`: the path from the database, the record's hash
/// from the archive file.
fn archived_record_proof(pool: &sqlx::PgPool, archive: &Path, seq: i64) -> std::path::PathBuf {
    let proof = archive.with_file_name(format!("proof-{seq}.json"));
    let record = format!("{seq}");
    stdout_to(
        pool,
        None,
        &["evidence", "prove", "--record", &record],
        &proof,
    );
    let line = std::fs::read_to_string(archive)
        .expect("archive")
        .lines()
        .find(|l| l.starts_with(&format!("{{\"seq\":{seq},")))
        .expect("the record in the archive")
        .to_owned();
    let record: serde_json::Value = serde_json::from_str(&line).expect("json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&proof).expect("read")).expect("json");
    json["proof"]["record_hash"] = record["hash"].clone();
    std::fs::write(&proof, json.to_string()).expect("write");
    proof
}

#[tokio::test]
async fn archived_records_stay_provable_and_the_remaining_log_verifies_against_the_heads() {
    let key = signing_key().await;
    let db = signed_log(&key).await;
    let dir = tempfile::tempdir().expect("dir");
    let pem = dir.path().join("key.pem");
    stdout_to(&db.pool, Some(&key), &["evidence", "public-key"], &pem);
    let archive = dir.path().join("archive.jsonl");
    // The owner's decision: records of this test are seconds old (retention refuses a cut-off
    // in the future or younger than the minimum age, docs/EVIDENCE.md "Database roles").
    sqlx::query("UPDATE evidence_settings SET retention_min_age = interval '0'")
        .execute(&db.pool)
        .await
        .expect("owner sets the minimum age");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cut_off = chrono::Utc::now().to_rfc3339();
    // Records after the cut-off, and a head over them too: the archive's snapshot head covers
    // more than the archive holds.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let store = ecr_audit::store::Store::from_pool(db.pool.clone());
    let after = vec![repository_plan("after", "team/after", "MUTABLE")];
    commit(&store, after).await;
    let (code, out) = run(&db.pool, Some(&key), &["evidence", "sign-head"]);
    assert_eq!(code, Some(0), "{out}");
    let output = archive.to_str().expect("path");
    let archived = [
        "evidence", "archive", "--before", &cut_off, "--output", output,
    ];
    let (code, out) = run(&db.pool, None, &archived);
    assert_eq!(code, Some(0), "{out}");
    // The records before the cut-off are gone from the table; the tree and the heads are not.
    let left: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT repository FROM evidence WHERE repository > ''")
            .fetch_all(&db.pool)
            .await
            .expect("left");
    assert_eq!(
        left,
        ["team/after"],
        "only the checkpoint and the later records"
    );
    let (code, out) = run(&db.pool, Some(&key), &["verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 signatures verified"), "{out}");
    // An archived record: its proof from the database, its hash from the archive file.
    let (code, out) = verify_offline(&[&archived_record_proof(&db.pool, &archive, 3)], &pem);
    assert_eq!(code, Some(0), "{out}");

    // Neither the archive nor the current export alone reaches a head's size: the archive
    // ends before it, the export starts after the head's first leaf. Verified as one chain,
    // the records of both re-hash to the current head and to the archive's.
    let current = crate::evidence::export(&db.pool, dir.path(), "jsonl", &[]);
    for alone in [&archive, &current] {
        let (code, out) = verify_offline(&[alone], &pem);
        assert_eq!(code, Some(0), "{out}");
        assert!(!out.contains("re-hash to"), "{out}");
    }
    let (code, together) = verify_offline(&[&archive, &current], &pem);
    assert_eq!(code, Some(0), "{together}");
    let current_line = together
        .lines()
        .find(|l| l.contains("export-jsonl"))
        .expect("the current file's line");
    assert!(
        current_line.contains("the records re-hash to its root")
            && current_line.contains("root of 1 earlier files' heads"),
        "{together}"
    );
}

#[tokio::test]
async fn an_anchored_head_is_announced_on_the_alert_bus() {
    let app = crate::helpers::TestApp::new().await;
    let bus = format!("{}heads", app.prefix);
    let (inbox, _rule) = crate::alerts::route_alerts_to_queue(&app, &bus).await;
    let store = ecr_audit::store::Store::from_pool(app.pool.clone());
    history(&store).await;
    let signer = ecr_audit::evidence::heads::KmsSigner::new(&app.sdk, signing_key().await);
    let head = ecr_audit::evidence::heads::make_head(&app.pool, Some(&signer))
        .await
        .expect("head")
        .expect("a new head");
    let bucket = format!("ecr-audit-announce-{}", uuid_like());
    lock_bucket(&bucket).await;
    let anchor = ecr_audit::evidence::anchor::Anchor::new(&app.sdk, bucket.clone(), 1, Some(bus));
    let key = anchor.publish(&head).await.expect("publish");
    let events = crate::alerts::drain(&app, &inbox.url).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "ECR Audit Evidence Head");
    assert_eq!(events[0]["source"], "ecr-audit");
    assert_eq!(events[0]["detail"]["key"], key.as_str());
    assert_eq!(events[0]["detail"]["bucket"], bucket.as_str());
    assert_eq!(
        events[0]["detail"]["head"]["head"]["root_hash"],
        head.head.root_hash.as_str()
    );
}
