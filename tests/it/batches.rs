//! A batch is the same as its plans committed one at a time, in the order they came: random
//! interleavings of repository reads (requested, observed by a sweep, or read for a push),
//! pushes with their scans and signature verdicts, deletes, late scans and re-judged
//! signatures, over two repositories and three digests, committed once plan by plan and once
//! in random batch splits, must leave the same rows in every table the batch writes and the
//! same evidence records in the same chain order (so the same transitions, with their actors).
//! And a push batch finds the rows it writes by key, however stale the planner's statistics.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ecr_audit::domain::{Digest, RepositoryKey, SignatureStatus};
use ecr_audit::evaluate::ImageSettings;
use ecr_audit::evaluate::signature::SignatureVerdict;
use ecr_audit::facts::{ImageFacts, ImageLookup, ScanFacts};
use ecr_audit::parse::{Change, RepositoryCall};
use ecr_audit::plan::{EventPlan, ImagePresence, ImageWrite, Plan, ScanWrite, SignatureWrite};
use ecr_audit::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use sqlx::PgPool;

const REPOSITORIES: [&str; 2] = ["team/a", "team/b"];

/// One event of a generated history; times are seconds from a fixed base.
#[derive(Debug, Clone)]
enum Step {
    /// A repository read: requested by a call, observed by a sweep, or read for a push only
    /// (`only_if_new`).
    Read {
        repository: usize,
        immutable: bool,
        observed: i64,
        how: u8,
    },
    /// A push read in full, with the verdicts the push was judged with.
    Push {
        repository: usize,
        digest: usize,
        at: i64,
        tagged: bool,
        signature: u8,
        scan: Option<u8>,
    },
    Delete {
        repository: usize,
        digest: usize,
        at: i64,
    },
    /// A scan result (`verdict` false) or a signature verdict judged again, on its own.
    Late {
        repository: usize,
        digest: usize,
        checked: i64,
        status: u8,
        verdict: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..2usize, any::<bool>(), -5..5i64, 0..3u8).prop_map(
            |(repository, immutable, observed, how)| Step::Read {
                repository,
                immutable,
                observed,
                how
            }
        ),
        (
            0..2usize,
            0..3usize,
            -5..5i64,
            any::<bool>(),
            0..3u8,
            proptest::option::of(0..3u8)
        )
            .prop_map(|(repository, digest, at, tagged, signature, scan)| {
                Step::Push {
                    repository,
                    digest,
                    at,
                    tagged,
                    signature,
                    scan,
                }
            }),
        (0..2usize, 0..3usize, -5..5i64).prop_map(|(repository, digest, at)| Step::Delete {
            repository,
            digest,
            at
        }),
        (0..2usize, 0..3usize, -5..5i64, 0..3u8, any::<bool>()).prop_map(
            |(repository, digest, checked, status, verdict)| Step::Late {
                repository,
                digest,
                checked,
                status,
                verdict
            }
        ),
    ]
}

fn key(repository: usize) -> RepositoryKey {
    crate::fixtures::repository_key(REPOSITORIES[repository])
}

fn digest(n: usize) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).expect("digest")
}

fn signature(key: &RepositoryKey, d: &Digest, at: DateTime<Utc>, status: u8) -> SignatureWrite {
    let status = [
        SignatureStatus::Signed,
        SignatureStatus::Unsigned,
        SignatureStatus::Untrusted,
    ][usize::from(status)];
    SignatureWrite {
        key: key.clone(),
        digest: d.clone(),
        pushed_at: at,
        verdict: SignatureVerdict {
            status,
            sources: vec![],
            reason: format!("generated {}", status.as_str()),
            verifications: vec![],
            policy_version: Some("v1".into()),
        },
        checked_at: at,
        next_check: (status != SignatureStatus::Signed).then(|| at + Duration::minutes(5)),
    }
}

fn scan(key: &RepositoryKey, d: &Digest, at: DateTime<Utc>, status: u8) -> ScanWrite {
    let facts = match status {
        0 => None,
        1 => Some(ScanFacts {
            raw_status: "COMPLETE".into(),
            severity_counts: BTreeMap::from([("HIGH".to_owned(), 2)]),
        }),
        _ => Some(ScanFacts {
            raw_status: "SOME_NEW_STATUS".into(),
            severity_counts: BTreeMap::new(),
        }),
    };
    ScanWrite {
        key: key.clone(),
        digest: d.clone(),
        facts,
        checked_at: at,
    }
}

fn event_plan(id: &str, change: Change, at: DateTime<Utc>) -> EventPlan {
    let mut event =
        crate::fixtures::audit_event(id, change, Some("arn:aws:iam::123456789012:role/ci"));
    event.time = at;
    EventPlan::new(event)
}

/// The plan of step `n` of a history starting at `base`.
fn plan(n: usize, step: &Step, base: DateTime<Utc>) -> Plan {
    let id = format!("step-{n}");
    let at = |seconds: i64| base + Duration::seconds(seconds);
    let plan = match step {
        Step::Read {
            repository,
            immutable,
            observed,
            how,
        } => read_plan(&id, &key(*repository), *immutable, at(*observed), *how),
        Step::Push {
            repository,
            digest: n,
            at: seconds,
            tagged,
            signature: verdict,
            scan: scanned,
        } => {
            let (key, d, time) = (key(*repository), digest(*n), at(*seconds));
            let mut plan = push_plan(&id, &key, &d, time, tagged.then(|| format!("v{seconds}")));
            plan.signatures.push(signature(&key, &d, time, *verdict));
            if let Some(status) = scanned {
                plan.scans.push(scan(&key, &d, time, *status));
            }
            plan
        }
        Step::Delete {
            repository,
            digest: n,
            at: seconds,
        } => delete_plan(&id, &key(*repository), &digest(*n), at(*seconds)),
        Step::Late {
            repository,
            digest: n,
            checked,
            status,
            verdict,
        } => {
            let (key, d, time) = (key(*repository), digest(*n), at(*checked));
            let mut plan = event_plan(&id, ignored(), time);
            if *verdict {
                plan.signatures.push(signature(&key, &d, time, *status));
            } else {
                plan.scans.push(scan(&key, &d, time, *status));
            }
            plan
        }
    };
    Plan::Event(Box::new(plan))
}

/// A repository read at `observed`: requested by a call (`how` 0), observed by a sweep (1), or
/// read for a push only (2).
fn read_plan(
    id: &str,
    key: &RepositoryKey,
    immutable: bool,
    observed: DateTime<Utc>,
    how: u8,
) -> EventPlan {
    let mode = if immutable { "IMMUTABLE" } else { "MUTABLE" };
    let mut facts = crate::fixtures::repository_facts_at(key, mode, 0);
    facts.observed_at = observed;
    let Plan::Event(plan) = crate::fixtures::tag_mutability_plan(id, key, Some(mode), None, facts)
    else {
        unreachable!("a tag mutability plan is an event")
    };
    let mut plan = *plan;
    plan.event.time = observed;
    match how {
        0 => plan.repositories[0].requested = true,
        1 => {
            plan.event.change = Change::RepositoryChanged {
                repository: key.name.clone(),
                call: RepositoryCall::ObservedByReconcile,
            };
        }
        _ => plan.repositories[0].only_if_new = true,
    }
    plan
}

/// A delete of `d` at `time`.
fn delete_plan(id: &str, key: &RepositoryKey, d: &Digest, time: DateTime<Utc>) -> EventPlan {
    let change = Change::ImageDeleted {
        repository: key.name.clone(),
        digest: d.clone(),
        tag: None,
    };
    let mut plan = event_plan(id, change, time);
    plan.image = Some(ImageWrite::deleted(key.clone(), d.clone(), time));
    plan
}

/// A push of `d` at `time`, read in full, with the settings of a mutable repository read
/// half a minute before.
fn push_plan(
    id: &str,
    key: &RepositoryKey,
    d: &Digest,
    time: DateTime<Utc>,
    tag: Option<String>,
) -> EventPlan {
    let change = Change::ImagePushed {
        repository: key.name.clone(),
        digest: d.clone(),
        tag: tag.clone(),
        manifest_media_type: None,
        artifact_media_type: None,
    };
    let mut plan = event_plan(id, change, time);
    let facts = ImageFacts {
        tags: tag.iter().cloned().collect(),
        pushed_at: Some(time),
        manifest_media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        artifact_media_type: None,
        subject_digest: None,
        size_bytes: Some(1024),
        scan: None,
        last_pulled_at: None,
    };
    let mut image = ImageWrite::deleted(key.clone(), d.clone(), time);
    image.presence = ImagePresence::Pushed;
    image.lookup = Some((time, ImageLookup::Found(facts)));
    image.push_tag = tag;
    image.settings = Some(ImageSettings {
        tag_immutability: Some("MUTABLE".into()),
        tag_protected: Some(false),
        encryption_type: Some("AES256".into()),
        kms_key: None,
        customer_managed_key: Some(false),
    });
    image.settings_observed_at = Some(time - Duration::seconds(30));
    plan.image = Some(image);
    plan
}

fn ignored() -> Change {
    Change::Ignored {
        reason: "a late verdict".into(),
    }
}

/// Every row the batch writes, without the columns that are the wall clock at commit.
const STATE: [(&str, &str); 6] = [
    ("repositories", "account, region, name"),
    ("control_results", "account, region, repository, control"),
    ("images", "account, region, repository, digest"),
    ("signature_rechecks", "account, region, repository, digest"),
    ("repository_rechecks", "account, region, repository"),
    (
        "tag_mutability_history",
        "account, region, repository, changed_at, mode",
    ),
];

async fn state(pool: &PgPool) -> Vec<(String, Vec<Value>)> {
    let mut tables = Vec::new();
    for (table, order) in STATE {
        let rows: Vec<Value> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t) - 'updated_at' - 'first_seen_at' - 'id' - 'due_at'
               FROM {table} t ORDER BY {order}"
        ))
        .fetch_all(pool)
        .await
        .expect("state");
        tables.push((table.to_owned(), rows));
    }
    tables
}

/// The chain in order: each record's id, kind, outcome, actor and detail.
async fn records(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT jsonb_build_array(event_id, kind, outcome, actor, detail)
           FROM evidence ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .expect("records")
}

/// Commits `plans` in batches of the given sizes (the rest in one last batch); returns the
/// state, the chain and how many digests became unsigned.
async fn commit(plans: &[Plan], sizes: &[usize]) -> (Vec<(String, Vec<Value>)>, Vec<Value>, u64) {
    let db = crate::harness::TestDb::new().await;
    let store = Store::from_pool(db.pool.clone());
    let mut rest = plans;
    let mut sizes = sizes.iter();
    let mut unsigned = 0;
    while !rest.is_empty() {
        let size = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (batch, after) = rest.split_at(size);
        unsigned += store
            .commit_batch(batch)
            .await
            .expect("commit")
            .first_unsigned;
        rest = after;
    }
    (state(&db.pool).await, records(&db.pool).await, unsigned)
}

#[test]
fn any_batch_split_equals_committing_one_plan_at_a_time() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(step(), 1..24),
        proptest::collection::vec(1..8usize, 0..8),
    );
    let base = Utc::now() - Duration::hours(1);
    let base = base - Duration::nanoseconds(i64::from(base.timestamp_subsec_nanos()));
    runner
        .run(&strategy, |(steps, sizes)| {
            let plans: Vec<Plan> = steps
                .iter()
                .enumerate()
                .map(|(n, step)| plan(n, step, base))
                .collect();
            let singles = vec![1; plans.len()];
            let (one_state, one_chain, one_unsigned) = runtime.block_on(commit(&plans, &singles));
            let (batch_state, batch_chain, batch_unsigned) =
                runtime.block_on(commit(&plans, &sizes));
            for ((table, one), (_, batched)) in one_state.iter().zip(&batch_state) {
                prop_assert_eq!(one, batched, "table {}", table);
            }
            prop_assert_eq!(one_chain, batch_chain);
            prop_assert_eq!(one_unsigned, batch_unsigned);
            Ok::<(), TestCaseError>(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
}

/// Rows fetched or scanned so far in each table, as the statistics collector has them. The
/// pool has one connection, the store's own: forcing its flush makes the counts include every
/// statement the store ran on it.
async fn rows_read(one: &PgPool) -> BTreeMap<String, i64> {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(one)
        .await
        .expect("flush");
    sqlx::query_as::<_, (String, i64)>(
        "SELECT relname::text, coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)
           FROM pg_stat_user_tables",
    )
    .fetch_all(one)
    .await
    .expect("table statistics")
    .into_iter()
    .collect()
}

/// A push batch reads the rows it writes by key, whatever the planner believes about the
/// tables: with statistics taken when the repository held 20 images and 300 pushed since (a
/// new deployment's first hours, a first sweep), committing one more push must read a handful
/// of rows of each table, not the repository's images, re-checks or evidence. Deriving the
/// settings at push once joined every image of the repository, then (planned as a hash join
/// on stale statistics) every image of the table.
#[tokio::test]
async fn a_push_reads_its_own_rows_not_its_repositorys() {
    let db = crate::harness::TestDb::new().await;
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("one connection");
    let store = Store::from_pool(one.clone());
    let base = Utc::now() - Duration::hours(1);
    let pushes = |from: usize, to: usize| -> Vec<Plan> {
        (from..to)
            .map(|n| {
                let d = Digest::parse(&format!("sha256:{n:064x}")).expect("digest");
                let at = base + Duration::seconds(i64::try_from(n).expect("small"));
                Plan::Event(Box::new(push_plan(
                    &format!("push-{n}"),
                    &key(0),
                    &d,
                    at,
                    None,
                )))
            })
            .collect()
    };
    for batch in pushes(0, 20).chunks(10) {
        store.commit_batch(batch).await.expect("commit");
    }
    // Statistics of a small database, kept while it grows (autovacuum would refresh them).
    sqlx::query(
        "DO $$ DECLARE t text; BEGIN
           FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
             EXECUTE format('ANALYZE %I', t);
             EXECUTE format('ALTER TABLE %I SET (autovacuum_enabled = false)', t);
           END LOOP; END $$",
    )
    .execute(&one)
    .await
    .expect("analyze");
    for batch in pushes(20, 320).chunks(10) {
        store.commit_batch(batch).await.expect("commit");
    }

    let before = rows_read(&one).await;
    store.commit_batch(&pushes(320, 321)).await.expect("commit");
    let after = rows_read(&one).await;

    let images: i64 = sqlx::query_scalar("SELECT count(*) FROM images")
        .fetch_one(&one)
        .await
        .expect("count");
    assert_eq!(images, 321);
    // By key: conflict checks, the scan and signature writes, the derivation, the chain head,
    // the tree's new nodes: a few rows per table, against the 300-odd rows of each.
    let read: BTreeMap<&String, i64> = after
        .iter()
        .map(|(table, n)| (table, n - before.get(table).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(read.values().all(|n| *n <= 10), "one push read {read:?}");
    assert!(read.contains_key(&"images".to_owned()), "{read:?}");
}
