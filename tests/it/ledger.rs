//! Every event that changes the ledger of digests, end to end: the emulator does what ECR does
//! by itself (replication, a pull-through cache sync, lifecycle expiry) or what a caller asks
//! (`BatchDeleteImage`, `DeleteRepository`), EventBridge routes the event to the queue, the
//! real worker reads ECR back, and the stored rows are checked.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::TestRule;
use crate::helpers::{
    REGION, TestApp, as_caller, emulator_control, emulator_requests, push_image, queue_arn,
    route_to_queue,
};

const WAIT: Duration = Duration::from_secs(30);
const ALICE: &str = "arn:aws:iam::123456789012:user/alice";

/// A stored image row: (present, deleted_reason, deleted_by).
type Row = (bool, Option<String>, Option<String>);

async fn row(app: &TestApp, region: &str, repository: &str, digest: &str) -> Option<Row> {
    sqlx::query_as(
        "SELECT present, deleted_reason, deleted_by FROM images
          WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4",
    )
    .bind(&app.account)
    .bind(region)
    .bind(repository)
    .bind(digest)
    .fetch_optional(&app.pool)
    .await
    .expect("image row")
}

/// Waits until the row of `digest` satisfies `check`; returns it.
async fn wait_row(
    app: &TestApp,
    (region, repository, digest): (&str, &str, &str),
    what: &str,
    check: impl Fn(&Row) -> bool,
) -> Row {
    app.eventually(what, WAIT, || async {
        row(app, region, repository, digest)
            .await
            .filter(|found| check(found))
    })
    .await
}

/// Routes `pattern` (on the default bus of `sdk`'s account and region) to the test's queue.
async fn route(app: &TestApp, sdk: &aws_config::SdkConfig, name: &str, pattern: Value) -> TestRule {
    let arn = queue_arn(&app.sqs, &app.queue_url).await;
    route_to_queue(sdk, &format!("{}{name}", app.prefix), &pattern, &arn).await
}

/// Evidence of one kind about a repository, as (event_id, digest, actor, detail).
async fn evidence_of(
    app: &TestApp,
    kind: &str,
    repository: &str,
) -> Vec<(String, Option<String>, Option<String>, Value)> {
    sqlx::query_as(
        "SELECT event_id, digest, actor, detail FROM evidence
          WHERE kind = $1 AND repository = $2 ORDER BY seq",
    )
    .bind(kind)
    .bind(repository)
    .fetch_all(&app.pool)
    .await
    .expect("evidence")
}

/// Replicates every repository of the test's account to `region` of the same account.
async fn replicate_to(app: &TestApp, region: &str) {
    app.ecr
        .put_replication_configuration()
        .replication_configuration(
            aws_sdk_ecr::types::ReplicationConfiguration::builder()
                .rules(
                    aws_sdk_ecr::types::ReplicationRule::builder()
                        .destinations(
                            aws_sdk_ecr::types::ReplicationDestination::builder()
                                .region(region)
                                .registry_id(&app.account)
                                .build()
                                .expect("destination"),
                        )
                        .build()
                        .expect("rule"),
                )
                .build()
                .expect("configuration"),
        )
        .send()
        .await
        .expect("replication configuration");
}

#[tokio::test]
async fn a_replicated_digest_is_a_row_of_the_destination_registry_evaluated_there() {
    let mut app = TestApp::new_in_own_account().await;
    let destination = "eu-west-1";
    replicate_to(&app, destination).await;
    // The replica's event is put on the destination region's bus.
    let eu = app
        .sdk
        .to_builder()
        .region(aws_config::Region::new(destination))
        .build();
    let _rule = route(
        &app,
        &eu,
        "replication",
        json!({"source": ["aws.ecr"], "detail-type": ["ECR Replication Action"],
               "detail": {"repository-name": [{"prefix": app.prefix}]}}),
    )
    .await;
    let name = app.create_repository("replicated").await;
    app.start_worker().await;
    let digest = push_image(&app.ecr, &name, "v1", &app.prefix).await;

    let (present, ..) = wait_row(
        &app,
        (destination, &name, &digest),
        "the replica's row in the destination region",
        |_| true,
    )
    .await;
    assert!(present);
    // Evaluated there: the settings at push of the destination's repository, its signature
    // judged, and the destination repository itself read.
    let (settings, judged): (Option<String>, bool) = sqlx::query_as(
        "SELECT encryption_type, signature_checked_at IS NOT NULL FROM images
          WHERE region = $1 AND repository = $2 AND digest = $3",
    )
    .bind(destination)
    .bind(&name)
    .bind(&digest)
    .fetch_one(&app.pool)
    .await
    .expect("replica");
    assert_eq!(settings.as_deref(), Some("AES256"));
    assert!(
        judged,
        "the replica's signature is judged in its own registry"
    );
    let repositories: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM repositories WHERE region = $1 AND name = $2 AND present",
    )
    .bind(destination)
    .bind(&name)
    .fetch_one(&app.pool)
    .await
    .expect("repository");
    assert_eq!(repositories, 1);
    let records = evidence_of(&app, "image_replicated", &name).await;
    assert_eq!(records.len(), 1, "{records:?}");
    app.wait_for_drain().await;
    app.finish().await;
}

#[tokio::test]
async fn a_pull_through_sync_gives_repository_and_digest_rows() {
    let mut app = TestApp::new_in_own_account().await;
    let prefix = format!("{}cache", app.prefix);
    app.ecr
        .create_pull_through_cache_rule()
        .ecr_repository_prefix(&prefix)
        .upstream_registry_url("public.ecr.aws")
        .send()
        .await
        .expect("pull-through rule");
    // Only the sync event is routed: the row must come from it, not from the cached image's
    // own `ECR Image Action`.
    app.remove_rules().await;
    let sdk = app.sdk.clone();
    let _rule = route(
        &app,
        &sdk,
        "sync",
        json!({"source": ["aws.ecr"], "detail-type": ["ECR Pull Through Cache Action"],
               "detail": {"repository-name": [{"prefix": app.prefix}]}}),
    )
    .await;
    app.start_worker().await;
    let name = format!("{prefix}/docker/library/alpine");
    let pulled = emulator_control(
        "/_emulator/pull",
        json!({"repositoryName": name, "imageTag": "3.20", "account": app.account, "region": REGION}),
    )
    .await;
    let digest = pulled["imageDigest"].as_str().expect("digest").to_owned();

    wait_row(
        &app,
        (REGION, &name, &digest),
        "the cached digest's row",
        |(present, ..)| *present,
    )
    .await;
    let controls: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM control_results WHERE region = $1 AND repository = $2",
    )
    .bind(REGION)
    .bind(&name)
    .fetch_one(&app.pool)
    .await
    .expect("controls");
    assert!(controls > 0, "the new repository's settings were evaluated");
    assert_eq!(
        evidence_of(&app, "pull_through_cached", &name).await.len(),
        1
    );
    app.wait_for_drain().await;
    app.finish().await;
}

/// Sets a lifecycle policy keeping the newest image and pushes three.
async fn three_images_keep_one(app: &TestApp, name: &str) -> Vec<String> {
    let policy = json!({"rules": [{"rulePriority": 1, "description": "keep one",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]});
    app.ecr
        .put_lifecycle_policy()
        .repository_name(name)
        .lifecycle_policy_text(policy.to_string())
        .send()
        .await
        .expect("lifecycle policy");
    let mut digests = Vec::new();
    for n in 1..=3 {
        let salt = format!("{}{n}", app.prefix);
        digests.push(push_image(&app.ecr, name, &format!("v{n}"), &salt).await);
        // Distinct push times, so "newest" is well defined.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    digests
}

/// The `ecr_audit_images` gauges summed over signature statuses, as a scrape shows them.
async fn images_in_gauges(app: &TestApp) -> f64 {
    app.scrape()
        .await
        .lines()
        .filter(|l| l.starts_with("ecr_audit_images{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The ECR calls since the counters were cleared: one `DescribeImages` per expired digest,
/// besides any signature re-check that fell in the window (one `DescribeImageSigningStatus`,
/// `ListImageReferrers` and `DescribeImages` each), and no other ECR call.
async fn assert_only_reads(app: &TestApp, expired: u64) {
    let calls = emulator_requests(&app.account, false).await;
    eprintln!("ECR calls for one expiry of {expired} digests: {calls:?}");
    let count = |op: &str| calls.get(op).copied().unwrap_or(0);
    let rechecks = count("ecr.DescribeImageSigningStatus");
    let reads = count("ecr.DescribeImages");
    assert!(reads >= expired && reads <= expired + rechecks, "{calls:?}");
    let allowed = [
        "ecr.DescribeImages",
        "ecr.DescribeImageSigningStatus",
        "ecr.ListImageReferrers",
    ];
    assert!(
        calls
            .keys()
            .filter(|op| op.starts_with("ecr."))
            .all(|op| allowed.contains(&op.as_str())),
        "{calls:?}"
    );
}

/// Applies the repository's lifecycle policy now; returns the expired digests.
async fn apply_lifecycle(app: &TestApp, name: &str) -> Vec<String> {
    let result = emulator_control(
        "/_emulator/lifecycle",
        json!({"repositoryName": name, "account": app.account, "region": REGION}),
    )
    .await;
    result["expired"]
        .as_array()
        .expect("expired")
        .iter()
        .filter_map(|e| e["imageDigest"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn lifecycle_expiry_deletes_the_rows_with_the_reason_and_the_rule() {
    // An account of its own, so the emulator's call counters are this test's alone.
    let mut app = TestApp::new_in_own_account().await;
    let sdk = app.sdk.clone();
    let _rule = route(
        &app,
        &sdk,
        "lifecycle",
        json!({"source": ["aws.ecr"], "detail-type": ["AWS Service Event via CloudTrail"],
               "detail": {"eventName": ["PolicyExecutionEvent"],
                          "serviceEventDetails": {"repositoryName": [{"prefix": app.prefix}]}}}),
    )
    .await;
    let name = app.create_repository("expiring").await;
    app.start_worker().await;
    let digests = three_images_keep_one(&app, &name).await;
    for digest in &digests {
        wait_row(&app, (REGION, &name, digest), "pushed", |(p, ..)| *p).await;
    }
    app.wait_for_drain().await;
    emulator_requests(&app.account, true).await;
    let expired = apply_lifecycle(&app, &name).await;
    assert_eq!(expired.len(), 2, "{expired:?}");

    for digest in &expired {
        let (_, reason, by) = wait_row(
            &app,
            (REGION, &name, digest),
            "expired digest deleted",
            |(p, ..)| !*p,
        )
        .await;
        assert_eq!(reason.as_deref(), Some("expired by lifecycle policy"));
        assert_eq!(by.as_deref(), Some("lifecycle policy rule 1 (keep one)"));
    }
    app.wait_for_drain().await;
    assert_only_reads(&app, expired.len() as u64).await;
    let kept = digests.iter().find(|d| !expired.contains(d)).expect("kept");
    assert!(row(&app, REGION, &name, kept).await.is_some_and(|r| r.0));

    // One evidence record per digest, naming the rule as who deleted it.
    let records = evidence_of(&app, "image_deleted", &name).await;
    assert_eq!(records.len(), 2, "{records:?}");
    for (_, digest, actor, detail) in &records {
        assert!(expired.contains(digest.as_ref().expect("digest")));
        assert_eq!(actor.as_deref(), Some("lifecycle policy rule 1 (keep one)"));
        assert_eq!(
            detail["image_after"]["deleted_reason"],
            "expired by lifecycle policy"
        );
    }
    assert_eq!(evidence_of(&app, "images_deleted", &name).await.len(), 1);
    app.wait_for_drain().await;
    // The gauges count what is stored as present: the kept image only.
    let images = images_in_gauges(&app).await;
    assert!(
        (images - 1.0).abs() < f64::EPSILON,
        "{images} images in the gauges"
    );
    app.finish().await;
}

/// Tags `digest` with a second tag, so deleting one of its tags leaves the digest.
async fn add_tag(app: &TestApp, name: &str, digest: &str, tag: &str) {
    let manifest = app
        .ecr
        .batch_get_image()
        .repository_name(name)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(digest)
                .build(),
        )
        .send()
        .await
        .expect("manifest")
        .images()
        .first()
        .and_then(|i| i.image_manifest().map(str::to_owned))
        .expect("manifest body");
    app.ecr
        .put_image()
        .repository_name(name)
        .image_tag(tag)
        .image_manifest(manifest)
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("second tag");
}

#[tokio::test]
async fn batch_delete_names_the_caller_and_a_tag_only_delete_leaves_the_digest() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("batch").await;
    app.start_worker().await;
    let gone = push_image(&app.ecr, &name, "gone", &format!("{}a", app.prefix)).await;
    let kept = push_image(&app.ecr, &name, "v1", &format!("{}b", app.prefix)).await;
    add_tag(&app, &name, &kept, "v2").await;
    for digest in [&gone, &kept] {
        wait_row(&app, (REGION, &name, digest), "pushed", |(p, ..)| *p).await;
    }

    app.ecr
        .batch_delete_image()
        .repository_name(&name)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(&gone)
                .build(),
        )
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_tag("v1")
                .build(),
        )
        .customize()
        .mutate_request(as_caller(ALICE))
        .send()
        .await
        .expect("batch delete");

    let (_, reason, by) = wait_row(
        &app,
        (REGION, &name, &gone),
        "deleted with its caller",
        |(p, _, by)| !*p && by.is_some(),
    )
    .await;
    assert_eq!(by.as_deref(), Some(ALICE));
    assert_eq!(reason.as_deref(), Some("deleted by BatchDeleteImage"));
    app.wait_for_drain().await;
    let (present, reason, _) = row(&app, REGION, &name, &kept).await.expect("kept row");
    assert!(present, "deleting a tag only removes the tag");
    assert_eq!(reason, None);
    let tags: Vec<String> =
        sqlx::query_scalar("SELECT unnest(tags) FROM images WHERE repository = $1 AND digest = $2")
            .bind(&name)
            .bind(&kept)
            .fetch_all(&app.pool)
            .await
            .expect("tags");
    assert_eq!(tags, ["v2"]);
    app.finish().await;
}

#[tokio::test]
async fn a_deleted_repository_deletes_its_images_by_event_and_by_reconcile() {
    let mut app = TestApp::new().await;
    let by_call = app.create_repository("deleted-by-call").await;
    let unheard = app.create_repository("deleted-unheard").await;
    app.start_worker().await;
    let first = push_image(&app.ecr, &by_call, "v1", &format!("{}c", app.prefix)).await;
    let second = push_image(&app.ecr, &unheard, "v1", &format!("{}d", app.prefix)).await;
    wait_row(&app, (REGION, &by_call, &first), "pushed", |(p, ..)| *p).await;
    wait_row(&app, (REGION, &unheard, &second), "pushed", |(p, ..)| *p).await;

    // DeleteRepository with force, heard through CloudTrail: deleted, by its caller.
    app.ecr
        .delete_repository()
        .repository_name(&by_call)
        .force(true)
        .customize()
        .mutate_request(as_caller(ALICE))
        .send()
        .await
        .expect("delete repository");
    let (_, reason, by) = wait_row(
        &app,
        (REGION, &by_call, &first),
        "deleted with the repository",
        |(p, ..)| !*p,
    )
    .await;
    assert_eq!(reason.as_deref(), Some("repository deleted"));
    assert_eq!(by.as_deref(), Some(ALICE));

    // Deleted while nobody listened: the next sweep finds the repository gone.
    app.wait_for_drain().await;
    app.remove_rules().await;
    app.ecr
        .delete_repository()
        .repository_name(&unheard)
        .force(true)
        .send()
        .await
        .expect("delete repository unheard");
    assert!(
        row(&app, REGION, &unheard, &second)
            .await
            .is_some_and(|r| r.0)
    );
    app.reconciler().sweep(&()).await.expect("sweep");
    let (present, reason, by) = row(&app, REGION, &unheard, &second).await.expect("row");
    assert!(
        !present,
        "reconcile marks the images of a vanished repository deleted"
    );
    assert_eq!(reason.as_deref(), Some("repository no longer exists"));
    assert_eq!(by, None);
    app.finish().await;
}
