//! Store behaviour against the real Postgres, one database per test (`TestDb`: cloned from the
//! migrated template).

use ecr_audit::domain::RepositoryKey;
use ecr_audit::evidence::ChainReport;
use ecr_audit::facts::RepositoryFacts;
use ecr_audit::plan::{Plan, RejectedMessage};
use ecr_audit::store::{Committed, Store};
use sqlx::PgPool;

fn key() -> RepositoryKey {
    crate::fixtures::repository_key("team/app")
}

fn facts(mode: &str, observed_offset_secs: i64) -> RepositoryFacts {
    crate::fixtures::repository_facts_at(&key(), mode, observed_offset_secs)
}

fn plan(id: &str, facts: RepositoryFacts) -> Plan {
    crate::fixtures::tag_mutability_plan(id, &key(), None, None, facts)
}

async fn ecr2(store: &Store) -> String {
    store.posture(None).await.expect("posture")[0].controls["ECR.2"]
        .status
        .clone()
}

#[tokio::test]
async fn the_same_event_twice_is_applied_once() {
    let db = crate::harness::TestDb::new().await;
    let pool: PgPool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    let first = store
        .commit_batch(&[plan("e1", facts("IMMUTABLE", 0))])
        .await
        .expect("commit");
    let again = store
        .commit_batch(&[
            plan("e1", facts("MUTABLE", 1)),
            plan("e1", facts("MUTABLE", 2)),
        ])
        .await
        .expect("commit");
    assert_eq!(first.committed, [Committed::Processed]);
    assert_eq!(
        again.committed,
        [Committed::Duplicate, Committed::Duplicate]
    );
    assert_eq!(ecr2(&store).await, "PASS", "a duplicate changes nothing");
}

#[tokio::test]
async fn older_facts_never_overwrite_newer_ones() {
    let db = crate::harness::TestDb::new().await;
    let pool: PgPool = db.pool.clone();
    let store = Store::from_pool(pool);
    store
        .commit_batch(&[plan("newer", facts("MUTABLE", 10))])
        .await
        .expect("commit");
    store
        .commit_batch(&[plan("older", facts("IMMUTABLE", -10))])
        .await
        .expect("commit");
    assert_eq!(ecr2(&store).await, "FAIL");
}

#[tokio::test]
async fn transitions_are_evidence_and_the_chain_verifies() {
    let db = crate::harness::TestDb::new().await;
    let pool: PgPool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    store
        .commit_batch(&[plan("a", facts("IMMUTABLE", 0))])
        .await
        .expect("commit");
    store
        .commit_batch(&[plan("b", facts("MUTABLE", 1))])
        .await
        .expect("commit");
    store
        .commit_batch(&[plan("c", facts("MUTABLE", 2))])
        .await
        .expect("commit");
    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, kind FROM evidence ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("evidence");
    let ids: Vec<&str> = kinds.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "a",
            "a/team/app/ECR.1",
            "a/team/app/ECR.2",
            "a/team/app/ECR.3",
            "a/team/app/ECR.5",
            "a/team/app/ECRA.1",
            "a/team/app/ECRA.2",
            "a/team/app/ECRA.3",
            "a/team/app/ECRA.4",
            "a/team/app/ECRA.5",
            "b",
            "b/team/app/ECR.2",
            "c"
        ],
        "first evaluation records every control, later only changes"
    );
    assert!(matches!(
        ecr_audit::evidence::verify_database(store.pool())
            .await
            .expect("verify"),
        ChainReport::Valid { records: 13, .. }
    ));
}

#[tokio::test]
async fn evidence_rejects_update_and_delete() {
    let db = crate::harness::TestDb::new().await;
    let pool: PgPool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    store
        .commit_batch(&[plan("a", facts("IMMUTABLE", 0))])
        .await
        .expect("commit");
    let update = sqlx::query("UPDATE evidence SET outcome = 'ignored' WHERE event_id = 'a'")
        .execute(&pool)
        .await;
    assert!(update.is_err_and(|e| e.to_string().contains("append-only")));
    let delete = sqlx::query("DELETE FROM evidence").execute(&pool).await;
    assert!(delete.is_err_and(|e| e.to_string().contains("append-only")));
}

#[tokio::test]
async fn a_poison_body_is_stored_once() {
    let db = crate::harness::TestDb::new().await;
    let pool: PgPool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    let rejected = || {
        Plan::Rejected(RejectedMessage {
            source: "sqs",
            message_id: Some("m1".into()),
            code: ecr_audit::telemetry::RejectionCode::InvalidJson,
            reason: "body is not valid JSON".into(),
            body: vec![0xff, 0x00, b'x'],
        })
    };
    assert_eq!(
        store
            .commit_batch(&[rejected()])
            .await
            .expect("commit")
            .committed,
        [Committed::Rejected]
    );
    // Again, and twice in one batch: one statement writes a batch's rejected messages.
    let again = store
        .commit_batch(&[rejected(), rejected()])
        .await
        .expect("commit");
    assert_eq!(again.committed, [Committed::Rejected, Committed::Rejected]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM rejected_messages")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn concurrent_writers_produce_one_valid_chain() {
    let db = crate::harness::TestDb::new().await;
    let pool: PgPool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    let mut tasks = Vec::new();
    for writer in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                let mode = if (writer + n) % 2 == 0 {
                    "IMMUTABLE"
                } else {
                    "MUTABLE"
                };
                let mut attempt = 0;
                loop {
                    match store
                        .commit_batch(&[plan(&format!("w{writer}-{n}"), facts(mode, n))])
                        .await
                    {
                        Ok(_) => break,
                        Err(err) if err.is_transient() && attempt < 5 => attempt += 1,
                        Err(err) => panic!("{err}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM evidence WHERE kind <> 'control_transition'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(events, 60);
    assert!(matches!(
        ecr_audit::evidence::verify_database(store.pool())
            .await
            .expect("verify"),
        ChainReport::Valid { .. }
    ));
}

#[tokio::test]
async fn the_store_speaks_tls_to_postgres_when_the_url_requires_it() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = Store::connect(&format!("{url}{separator}sslmode=require"), 1)
        .await
        .expect("a TLS connection (the services script gives Postgres a certificate)");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_ssl");
    assert!(encrypted);
}

#[tokio::test]
async fn a_record_whose_id_is_taken_refuses_the_batch_instead_of_vanishing() {
    let db = crate::harness::TestDb::new().await;
    let store = Store::from_pool(db.pool.clone());
    // Something took the id the transition of event `e7` will have (the parser refuses such
    // ids from outside; this stands for any other way to take one).
    let squatter = format!("e7/{}/ECR.2", key().name);
    store
        .commit_batch(&[plan(&squatter, facts("IMMUTABLE", 0))])
        .await
        .expect("commit");
    let refused = store
        .commit_batch(&[plan("e7", facts("MUTABLE", 1))])
        .await
        .expect_err("the transition's id is taken");
    assert!(
        matches!(&refused, ecr_audit::store::StoreError::IdCollision { event_id } if *event_id == squatter),
        "{refused}"
    );
    assert_eq!(refused.code().as_str(), "id_collision");
    assert!(
        !refused.is_transient(),
        "dead-lettered, not retried forever"
    );
    assert_eq!(
        ecr2(&store).await,
        "PASS",
        "nothing of the batch was committed"
    );
}

/// A plan of event `id` at `offset_secs` from now that writes `image` for `d`: deleted with
/// `cause` (reason, by), or pushed when `cause` is `None` and `pushed`.
fn image_plan(id: &str, offset_secs: i64, cause: Option<(&str, &str)>, pushed: bool) -> Plan {
    use ecr_audit::plan::{EventPlan, ImagePresence, ImageWrite, RemovalNote};
    let d =
        ecr_audit::domain::Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest");
    let change = ecr_audit::parse::Change::Ignored {
        reason: "store test".into(),
    };
    let mut event = crate::fixtures::audit_event(id, change, None);
    event.time += chrono::Duration::seconds(offset_secs);
    let mut write = ImageWrite::deleted(key(), d, event.time);
    if pushed {
        write.presence = ImagePresence::Pushed;
    }
    write.removal = cause.map(|(reason, by)| RemovalNote {
        reason: reason.into(),
        cause: Some(by.into()),
    });
    let mut plan = EventPlan::new(event);
    plan.deletions.push(write);
    Plan::Event(Box::new(plan))
}

async fn deletion_cause(pool: &PgPool) -> (bool, Option<String>, Option<String>) {
    sqlx::query_as("SELECT present, deleted_reason, deleted_by FROM images")
        .fetch_one(pool)
        .await
        .expect("image row")
}

#[tokio::test]
async fn a_deleted_digest_takes_the_first_named_cause_and_a_push_clears_it() {
    let db = crate::harness::TestDb::new().await;
    let pool: PgPool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    let alice = (
        "deleted by BatchDeleteImage",
        "arn:aws:iam::123456789012:user/alice",
    );
    let rule = ("expired by lifecycle policy", "lifecycle policy rule 1");
    // An ECR Image Action DELETE names nobody; the CloudTrail record of the same delete,
    // dated a second earlier, names the caller; a later event naming another cause does not
    // rewrite who deleted it.
    for plan in [
        image_plan("delete", 0, None, false),
        image_plan("batch", -1, Some(alice), false),
        image_plan("later", 5, Some(rule), false),
    ] {
        store.commit_batch(&[plan]).await.expect("commit");
    }
    assert_eq!(
        deletion_cause(&pool).await,
        (false, Some(alice.0.into()), Some(alice.1.into()))
    );
    // Pushed again: present, no cause.
    store
        .commit_batch(&[image_plan("push", 10, None, true)])
        .await
        .expect("commit");
    assert_eq!(deletion_cause(&pool).await, (true, None, None));
    // An older delete cannot undo the newer push, nor leave its cause behind.
    store
        .commit_batch(&[image_plan("stale", 7, Some(rule), false)])
        .await
        .expect("commit");
    assert_eq!(deletion_cause(&pool).await, (true, None, None));
}

/// Two batches bringing the same event, both past their duplicate checks before either holds
/// the chain head (the ids on the chain are read before the head is locked): the second to take
/// the head finds the id taken as it appends, runs again and records the event as a duplicate,
/// not as a refused write. The two plans name different repositories, so nothing but the head
/// makes one wait for the other.
#[tokio::test]
async fn the_same_event_in_two_racing_batches_is_recorded_once() {
    let db = crate::harness::TestDb::new().await;
    let store = Store::from_pool(db.pool.clone());
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM evidence_chain_head WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("hold the head");
    let racers: Vec<_> = ["team/app", "team/other"]
        .into_iter()
        .map(|name| {
            let store = store.clone();
            let key = crate::fixtures::repository_key(name);
            let facts = crate::fixtures::repository_facts_at(&key, "IMMUTABLE", 0);
            let plan = crate::fixtures::tag_mutability_plan("raced", &key, None, None, facts);
            tokio::spawn(async move { store.commit_batch(&[plan]).await })
        })
        .collect();
    let mut waiting = 0;
    for _ in 0..500 {
        waiting = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("activity");
        if waiting >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(waiting, 2, "both batches wait for the head");
    holder.rollback().await.expect("release the head");

    let mut outcomes = Vec::new();
    for racer in racers {
        let outcome = racer.await.expect("racer").expect("commit");
        outcomes.push(format!("{:?}", outcome.committed));
    }
    outcomes.sort();
    assert_eq!(outcomes, ["[Duplicate]", "[Processed]"]);
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM evidence WHERE event_id = 'raced'")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(recorded, 1);
    assert!(matches!(
        ecr_audit::evidence::verify_database(store.pool())
            .await
            .expect("verify"),
        ChainReport::Valid { .. }
    ));
}
