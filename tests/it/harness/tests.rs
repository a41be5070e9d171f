//! The harness's own promises: clones arrive migrated, and a test that panics leaves no
//! database, queue or rule behind.

use serde_json::json;

use super::database::DATABASE_PREFIX;
use super::{TestDb, TestQueue, TestRule, unique_suffix};

#[tokio::test]
async fn every_clone_arrives_with_every_migration_applied() {
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations/")
        .count();
    for _ in 0..2 {
        let db = TestDb::new().await;
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&db.pool)
                .await
                .expect("migration table");
        assert_eq!(applied, i64::try_from(migrations).expect("count"));
    }
}

#[tokio::test]
async fn a_test_that_panics_leaves_no_database_queue_or_rule_behind() {
    let sdk = ecr_audit::aws::load_sdk_config().await;
    let database = format!("{DATABASE_PREFIX}{}", unique_suffix());
    let prefix = format!("p{}-", unique_suffix());
    let (inner_database, inner_prefix, inner_sdk) = (database.clone(), prefix.clone(), sdk.clone());
    // A test body of its own, on a runtime of its own, as #[tokio::test] runs one.
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let _db = TestDb::named(&inner_database).await;
            let queue = TestQueue::create(&inner_sdk, &format!("{inner_prefix}queue"), 2).await;
            let pattern = json!({"source": ["ecr-audit.harness-test"]});
            let _rule = TestRule::to_queue(
                &inner_sdk,
                &format!("{inner_prefix}rule"),
                &pattern,
                &queue.arn,
            )
            .await;
            panic!("a test failing on purpose, holding a database, a queue and a rule");
        })
    })
    .join();
    assert!(outcome.is_err(), "the inner test panicked");

    let db = TestDb::new().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&db.pool)
        .await
        .expect("pg_database");
    assert_eq!(left, 0, "database {database} left behind");
    let queues = aws_sdk_sqs::Client::new(&sdk)
        .list_queues()
        .queue_name_prefix(&prefix)
        .send()
        .await
        .expect("list queues");
    assert!(queues.queue_urls().is_empty(), "{:?}", queues.queue_urls());
    let rules = aws_sdk_eventbridge::Client::new(&sdk)
        .list_rules()
        .name_prefix(&prefix)
        .send()
        .await
        .expect("list rules");
    assert!(rules.rules().is_empty(), "{:?}", rules.rules());
}
