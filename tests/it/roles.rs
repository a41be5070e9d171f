//! Least privilege in the database (docs/EVIDENCE.md, "Database roles"): as the worker's role,
//! evidence can be appended only in order through `evidence_append`, never edited, deleted,
//! forged as a checkpoint or unguarded by disabling triggers; retention refuses a cut-off in
//! the future or younger than the owner's minimum age; `migrate` states the grants again
//! without changing them.
//!
//! Against the real Postgres (`TestDb`, plus its worker-role login) and the real binary.

use chrono::{Duration, Utc};
use ecr_audit::evidence::{ChainReport, ChainedRecord, EvidenceKind, verify_database};
use ecr_audit::store::Store;
use serde_json::json;
use sqlx::{ConnectOptions as _, PgPool};

use crate::evidence::{ecr_audit, history, records};
use crate::harness::TestDb;

/// Runs `statement` on `pool` and returns the database's refusal text; panics if it succeeds.
async fn refused(pool: &PgPool, statement: &str) -> String {
    match sqlx::query(statement).execute(pool).await {
        Ok(_) => panic!("the worker's role was allowed: {statement}"),
        Err(err) => err.to_string(),
    }
}

/// A record for the next place on the chain as the worker would build it.
fn next_record(seq: i64, prev_hash: &str, kind: EvidenceKind) -> ChainedRecord {
    let now = Utc::now();
    let now = chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    ChainedRecord {
        seq,
        recorded_at: now,
        event_id: format!("forged-{seq}-{}", kind.as_str()),
        event_time: now,
        kind,
        outcome: "processed".into(),
        account: Some("123456789012".into()),
        region: Some("us-east-1".into()),
        repository: Some("team/app".into()),
        digest: None,
        tag: None,
        actor: None,
        detail: json!({"continues_from": {"seq": seq - 1, "hash": prev_hash}}),
        prev_hash: prev_hash.to_owned(),
        format_version: None,
    }
}

/// Calls `evidence_append` with one record and the hash given.
async fn append_one(pool: &PgPool, record: &ChainedRecord, hash: &str) -> Result<i64, String> {
    sqlx::query_scalar("SELECT evidence_append($1, $2)")
        .bind(vec![record.canonical()])
        .bind(vec![hash.to_owned()])
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())
}

async fn head(pool: &PgPool) -> (i64, String) {
    sqlx::query_as("SELECT seq, hash FROM evidence_chain_head")
        .fetch_one(pool)
        .await
        .expect("head")
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one attack after another, each refused, then the chain checked once"
)]
async fn the_worker_role_cannot_disable_triggers_insert_or_delete_evidence() {
    let db = TestDb::new().await;
    let worker = db.worker_pool().await;
    history(&Store::from_pool(worker.clone())).await;
    let before = records(&db.pool).await;
    let (seq, hash) = head(&worker).await;

    for statement in [
        "ALTER TABLE evidence DISABLE TRIGGER evidence_no_update",
        "ALTER TABLE evidence DISABLE TRIGGER ALL",
        "DROP TRIGGER evidence_delete_archived ON evidence",
    ] {
        let text = refused(&worker, statement).await;
        assert!(text.contains("must be owner"), "{statement}: {text}");
    }
    let text = refused(&worker, "SET session_replication_role = replica").await;
    assert!(text.contains("permission denied"), "{text}");
    // A direct insert, a forged checkpoint followed by a DELETE, a moved head, TRUNCATE, and
    // the owner's minimum age: no privilege on any of them.
    for statement in [
        format!(
            "INSERT INTO evidence (seq, recorded_at, event_id, event_time, kind, outcome, detail, prev_hash, hash)
             VALUES ({}, now(), 'forged', now(), 'image_pushed', 'processed', '{{}}', '{hash}', 'x')",
            seq + 1
        ),
        format!(
            "INSERT INTO evidence (seq, recorded_at, event_id, event_time, kind, outcome, detail, prev_hash, hash)
             VALUES ({}, now(), 'checkpoint/forged', now(), 'checkpoint', 'processed',
                     '{{\"continues_from\": {{\"seq\": 3, \"hash\": \"{}\"}}}}', '{hash}', 'y')",
            seq + 1,
            before[2].1
        ),
        "DELETE FROM evidence WHERE seq <= 3".to_owned(),
        "UPDATE evidence SET outcome = 'ignored' WHERE seq = 1".to_owned(),
        "TRUNCATE evidence".to_owned(),
        "UPDATE evidence_chain_head SET seq = 1".to_owned(),
        "UPDATE evidence_settings SET retention_min_age = interval '0'".to_owned(),
        // The Merkle tree is the database's to grow (evidence_after_append), not the worker's.
        format!("INSERT INTO evidence_tree (level, idx, hash) VALUES (0, {seq}, sha256('forged'))"),
        "UPDATE evidence_log SET tree_base = 1".to_owned(),
        "SELECT evidence_tree_adopt()".to_owned(),
        "SELECT evidence_after_append(1, 1)".to_owned(),
    ] {
        let text = refused(&worker, &statement).await;
        assert!(text.contains("permission denied"), "{statement}: {text}");
    }
    // What the worker reads, it may read: the posture as reported (a view, exceptions applied).
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM reported_controls")
        .fetch_one(&worker)
        .await
        .expect("the worker reads the reported posture");
    // The function that would let a checkpoint in is not the worker's to call.
    let text = refused(
        &worker,
        "SELECT evidence_append_checked(ARRAY[]::text[], ARRAY[]::text[], true)",
    )
    .await;
    assert!(text.contains("permission denied"), "{text}");

    // Through the function: only the next seq, linked to the head, hashed as its text.
    let skipped = next_record(seq + 2, &hash, EvidenceKind::ImagePushed);
    let text = append_one(&worker, &skipped, &skipped.compute_hash())
        .await
        .expect_err("a skipped seq");
    assert!(text.contains("out of order"), "{text}");
    let unlinked = next_record(seq + 1, &before[0].1, EvidenceKind::ImagePushed);
    let text = append_one(&worker, &unlinked, &unlinked.compute_hash())
        .await
        .expect_err("a broken link");
    assert!(text.contains("does not link"), "{text}");
    let good = next_record(seq + 1, &hash, EvidenceKind::ImagePushed);
    let text = append_one(&worker, &good, &before[0].1)
        .await
        .expect_err("a hash of something else");
    assert!(text.contains("not the SHA-256"), "{text}");
    let checkpoint = next_record(seq + 1, &hash, EvidenceKind::Checkpoint);
    let text = append_one(&worker, &checkpoint, &checkpoint.compute_hash())
        .await
        .expect_err("a checkpoint outside retention");
    assert!(text.contains("retention only"), "{text}");

    // Nothing of it landed, and the chain verifies; the well-formed record still appends.
    assert_eq!(records(&db.pool).await, before);
    assert_eq!(
        append_one(&worker, &good, &good.compute_hash()).await,
        Ok(seq + 1)
    );
    assert!(matches!(
        verify_database(&worker).await.expect("verify"),
        ChainReport::Valid { records, .. } if records == before.len() as u64 + 1
    ));
}

#[tokio::test]
async fn archive_refuses_a_cut_off_in_the_future_or_younger_than_the_minimum_age() {
    let db = TestDb::new().await;
    let worker = db.worker_pool().await;
    history(&Store::from_pool(worker.clone())).await;
    let before = records(&db.pool).await;
    let dir = tempfile::tempdir().expect("tempdir");
    for (cut_off, expected) in [
        (Utc::now() + Duration::days(1), "is in the future"),
        (
            Utc::now() - Duration::hours(1),
            "is newer than the minimum age of 90 days",
        ),
    ] {
        let archive = dir.path().join("archive.jsonl");
        let output = ecr_audit(&worker)
            .args(["evidence", "archive", "--before", &cut_off.to_rfc3339()])
            .arg("--output")
            .arg(&archive)
            .output()
            .expect("run archive");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!archive.exists(), "no archive is written");
    }
    // The database refuses the same without the command's check: a checkpoint handed to
    // evidence_retire directly.
    let (seq, hash) = head(&worker).await;
    let mut checkpoint = next_record(seq + 1, &hash, EvidenceKind::Checkpoint);
    checkpoint.detail = json!({
        "continues_from": {"seq": 3, "hash": before[2].1},
        "archived": {"before": (Utc::now() + Duration::days(1)).to_rfc3339()},
    });
    let text = sqlx::query_scalar::<_, i64>("SELECT evidence_retire($1, $2)")
        .bind(checkpoint.canonical())
        .bind(checkpoint.compute_hash())
        .fetch_one(&worker)
        .await
        .expect_err("a future cut-off")
        .to_string();
    assert!(text.contains("is in the future"), "{text}");
    // With a minimum age of zero (the owner's decision), a cut-off claiming records older
    // than they are is still refused.
    sqlx::query("UPDATE evidence_settings SET retention_min_age = interval '0'")
        .execute(&db.pool)
        .await
        .expect("owner sets the minimum age");
    checkpoint.detail["archived"]["before"] = json!((Utc::now() - Duration::days(1)).to_rfc3339());
    let text = sqlx::query_scalar::<_, i64>("SELECT evidence_retire($1, $2)")
        .bind(checkpoint.canonical())
        .bind(checkpoint.compute_hash())
        .fetch_one(&worker)
        .await
        .expect_err("records newer than the cut-off")
        .to_string();
    assert!(text.contains("recorded at or after the cut-off"), "{text}");
    assert_eq!(records(&db.pool).await, before, "nothing was archived");
}

/// The URL of `db` as a login of this test's own that is not yet a member of the worker role.
async fn login_outside_the_worker_role(db: &TestDb) -> String {
    sqlx::raw_sql(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ecr_audit_it_admitted') THEN
                 CREATE ROLE ecr_audit_it_admitted LOGIN;
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$;
         REVOKE ecr_audit_worker FROM ecr_audit_it_admitted;",
    )
    .execute(&db.pool)
    .await
    .expect("a login outside the worker role");
    db.url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("url")
        .username("ecr_audit_it_admitted")
        .to_url_lossy()
        .to_string()
}

#[tokio::test]
async fn migrate_with_two_urls_admits_the_worker_login_and_states_the_grants_again() {
    let db = TestDb::new().await;
    let worker_url = login_outside_the_worker_role(&db).await;
    // A grant the worker must not have, made by hand: migrate takes it back.
    sqlx::query("GRANT INSERT ON evidence TO ecr_audit_worker")
        .execute(&db.pool)
        .await
        .expect("stray grant");
    let output = ecr_audit(&db.pool)
        .arg("migrate")
        .env("ECR_AUDIT_MIGRATE_DATABASE_URL", &db.url)
        .env("DATABASE_URL", &worker_url)
        .output()
        .expect("run migrate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let member: bool = sqlx::query_scalar(
        "SELECT pg_has_role('ecr_audit_it_admitted', 'ecr_audit_worker', 'MEMBER')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("membership");
    assert!(
        member,
        "migrate admits the worker URL's user to the worker role"
    );
    let privileges: Vec<(String, bool)> = sqlx::query_as(
        "SELECT t || ':' || p, has_table_privilege('ecr_audit_it_admitted', t, p)
           FROM unnest(ARRAY['evidence', 'evidence_chain_head', 'evidence_settings', 'repositories', 'alert_outbox']) AS t,
                unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER']) AS p
          ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("privileges");
    for (what, granted) in privileges {
        let expected = what.ends_with(":SELECT")
            || (!what.starts_with("evidence")
                && ["INSERT", "UPDATE", "DELETE"]
                    .iter()
                    .any(|p| what.ends_with(p)));
        assert_eq!(granted, expected, "{what}");
    }
}
