//! The walking pipeline end to end: events through EventBridge and SQS into the real worker,
//! state read back from Postgres, the CLI and /metrics.

use std::time::Duration;

use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
    ImageTagMutabilityExclusionFilter, ImageTagMutabilityExclusionFilterType,
};
use serde_json::{Value, json};

use crate::helpers::{
    ACCOUNT, TestApp, as_caller, cloudtrail, create_repository_envelope, envelope, image_action,
    metric_value, push_image,
};

const WAIT: Duration = Duration::from_secs(30);
const LIFECYCLE: &str = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;

struct RepoSpec {
    name: &'static str,
    mutability: ImageTagMutability,
    exclusions: &'static [&'static str],
    encryption: Option<(EncryptionType, bool)>,
    lifecycle: bool,
    scan_on_push: bool,
}

async fn create_repository(app: &TestApp, spec: &RepoSpec, customer_key: &str) -> String {
    let name = app.repo(spec.name);
    let mut request = app
        .ecr
        .create_repository()
        .repository_name(&name)
        .image_tag_mutability(spec.mutability.clone())
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(spec.scan_on_push)
                .build(),
        );
    for filter in spec.exclusions {
        request = request.image_tag_mutability_exclusion_filters(
            ImageTagMutabilityExclusionFilter::builder()
                .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                .filter(*filter)
                .build()
                .expect("filter"),
        );
    }
    if let Some((kind, with_key)) = &spec.encryption {
        let mut config = EncryptionConfiguration::builder().encryption_type(kind.clone());
        if *with_key {
            config = config.kms_key(customer_key);
        }
        request = request.encryption_configuration(config.build().expect("encryption"));
    }
    request.send().await.expect("create repository");
    if spec.lifecycle {
        app.ecr
            .put_lifecycle_policy()
            .repository_name(&name)
            .lifecycle_policy_text(LIFECYCLE)
            .send()
            .await
            .expect("lifecycle policy");
    }
    name
}

async fn posture_json(app: &TestApp) -> Vec<Value> {
    let output = assert_cmd::Command::cargo_bin("ecr-audit")
        .expect("binary")
        .args(["posture", "--format", "json"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("run ecr-audit posture");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("posture JSON")
}

fn control<'a>(posture: &'a [Value], repository: &str, control: &str) -> (&'a str, &'a str) {
    let row = posture
        .iter()
        .find(|r| r["repository"] == repository)
        .unwrap_or_else(|| panic!("{repository} missing from posture"));
    (
        row["controls"][control]["status"].as_str().unwrap_or("?"),
        row["controls"][control]["reason"].as_str().unwrap_or("?"),
    )
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn repositories_of_every_kind_get_exact_controls_and_digests_their_settings() {
    let mut app = TestApp::new().await;
    let key_arn = app
        .kms
        .create_key()
        .description("ecr-audit test key")
        .send()
        .await
        .expect("create key")
        .key_metadata()
        .map(|m| m.arn().unwrap_or_default().to_owned())
        .expect("key arn");

    let specs = [
        RepoSpec {
            name: "hardened",
            mutability: ImageTagMutability::Immutable,
            exclusions: &[],
            encryption: Some((EncryptionType::Kms, true)),
            lifecycle: true,
            scan_on_push: true,
        },
        RepoSpec {
            name: "defaults",
            mutability: ImageTagMutability::Mutable,
            exclusions: &[],
            encryption: None,
            lifecycle: false,
            scan_on_push: false,
        },
        RepoSpec {
            name: "immutable-excl",
            mutability: ImageTagMutability::ImmutableWithExclusion,
            exclusions: &["latest", "dev-*"],
            encryption: Some((EncryptionType::Kms, false)),
            lifecycle: true,
            scan_on_push: true,
        },
        RepoSpec {
            name: "mutable-excl",
            mutability: ImageTagMutability::MutableWithExclusion,
            exclusions: &["release-*"],
            encryption: Some((EncryptionType::KmsDsse, true)),
            lifecycle: false,
            scan_on_push: false,
        },
    ];
    let mut names = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let name = create_repository(&app, spec, &key_arn).await;
        app.put_event(
            "AWS API Call via CloudTrail",
            cloudtrail(
                &format!("{}create-{i}", app.prefix),
                "2026-11-20T10:00:00Z",
                "CreateRepository",
                json!({"repositoryName": name}),
                "arn:aws:iam::123456789012:user/alice",
            ),
        )
        .await;
        names.push(name);
    }
    let digest = push_image(&app.ecr, &names[2], "v1.0.0", &app.prefix).await;
    app.put_event(
        "ECR Image Action",
        image_action(&names[2], &digest, "PUSH", Some("v1.0.0")),
    )
    .await;
    let dev_digest = push_image(&app.ecr, &names[2], "dev-7", &format!("{}dev", app.prefix)).await;
    app.put_event(
        "ECR Image Action",
        image_action(&names[2], &dev_digest, "PUSH", Some("dev-7")),
    )
    .await;

    app.start_worker().await;
    app.wait_for_drain().await;

    let posture = posture_json(&app).await;
    let expect = [
        (&names[0], ["PASS", "PASS", "PASS", "PASS"]),
        (&names[1], ["FAIL", "FAIL", "FAIL", "FAIL"]),
        (&names[2], ["PASS", "FAIL", "PASS", "FAIL"]),
        (&names[3], ["FAIL", "FAIL", "FAIL", "PASS"]),
    ];
    for (name, statuses) in expect {
        for (control_id, status) in ["ECR.1", "ECR.2", "ECR.3", "ECR.5"].iter().zip(statuses) {
            let (got, reason) = control(&posture, name, control_id);
            assert_eq!(got, status, "{name} {control_id}: {reason}");
        }
    }
    let (_, reason) = control(&posture, &names[2], "ECR.2");
    assert!(
        reason.contains("IMMUTABLE_WITH_EXCLUSION") && reason.contains("latest, dev-*"),
        "{reason}"
    );
    let (_, reason) = control(&posture, &names[2], "ECR.5");
    assert!(reason.contains("AWS-managed"), "{reason}");
    let (_, reason) = control(&posture, &names[1], "ECR.1");
    assert!(reason.contains("MANUAL"), "{reason}");
    let account = posture
        .iter()
        .find(|r| r["repository"] == names[0].as_str())
        .map(|r| r["account"].clone());
    assert_eq!(
        account,
        Some(json!(ACCOUNT)),
        "the envelope's missing account falls back to the configured one"
    );

    let images = app.store.images(Some(&names[2])).await.expect("images");
    let release = images
        .iter()
        .find(|i| i.digest == digest)
        .expect("pushed digest recorded");
    assert_eq!(release.tags, vec!["v1.0.0".to_owned()]);
    assert_eq!(
        release.tag_immutability.as_deref(),
        Some("IMMUTABLE_WITH_EXCLUSION")
    );
    assert_eq!(
        release.tag_protected,
        Some(true),
        "v1.0.0 matches no exclusion filter"
    );
    assert_eq!(release.encryption.encryption_type.as_deref(), Some("KMS"));
    assert_eq!(release.encryption.customer_managed, Some(false));
    let dev = images
        .iter()
        .find(|i| i.digest == dev_digest)
        .expect("dev digest recorded");
    assert_eq!(
        dev.tag_protected,
        Some(false),
        "dev-7 matches the dev-* exclusion: it can be overwritten"
    );

    let metrics = app.scrape().await;
    let gauge = |control: &str, status: &str| {
        metric_value(
            &metrics,
            "ecr_audit_control_repositories",
            &[("control", control), ("status", status)],
        )
    };
    assert_eq!(gauge("ECR.2", "PASS"), Some(1.0));
    assert_eq!(gauge("ECR.2", "FAIL"), Some(3.0));
    assert_eq!(gauge("ECR.5", "PASS"), Some(2.0));
    assert_eq!(gauge("ECR.1", "UNKNOWN"), Some(0.0));
    let processed = metric_value(
        &metrics,
        "ecr_audit_events_total",
        &[("kind", "repository_changed"), ("outcome", "processed")],
    );
    assert!(processed >= Some(4.0), "{processed:?}");
    assert!(
        metrics.contains("ecr_audit_event_lag_seconds_bucket"),
        "lag histogram exported"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_redelivered_message_gives_one_evidence_record() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("dedup").await;
    let id = format!("{}evt", app.prefix);
    let body = create_repository_envelope(&id, &name, "arn:aws:iam::123456789012:user/bob");
    app.send_raw(&body).await;
    app.send_raw(&body).await;
    app.start_worker().await;
    app.wait_for_drain().await;

    assert_eq!(app.evidence_count(&id).await, 1);
    let metrics = app.scrape().await;
    assert_eq!(
        metric_value(
            &metrics,
            "ecr_audit_events_total",
            &[("kind", "repository_changed"), ("outcome", "duplicate")]
        ),
        Some(1.0)
    );
    // The batch that appended the record held the evidence head lock, and says for how long.
    let batches = metric_value(&metrics, "ecr_audit_evidence_lock_held_seconds_count", &[]);
    assert!(batches.is_some_and(|n| n >= 1.0), "{batches:?}");
    let held = metric_value(&metrics, "ecr_audit_evidence_lock_held_seconds_sum", &[]);
    assert!(held.is_some_and(|s| s > 0.0), "{held:?}");
    app.finish().await;
}

#[tokio::test]
async fn a_malformed_message_is_rejected_and_the_worker_keeps_going() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("after-poison").await;
    app.send_raw("{this is not json").await;
    app.send_raw(r#"{"id": 5, "detail-type": "ECR Image Action"}"#)
        .await;
    let id = format!("{}good", app.prefix);
    app.send_raw(&create_repository_envelope(
        &id,
        &name,
        "arn:aws:iam::123456789012:user/bob",
    ))
    .await;
    app.start_worker().await;
    app.wait_for_drain().await;

    let rejected: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT code, reason, body FROM rejected_messages ORDER BY code")
            .fetch_all(&app.pool)
            .await
            .expect("rejected rows");
    let codes: Vec<&str> = rejected.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(codes, ["invalid_json", "wrong_type"]);
    assert!(
        rejected
            .iter()
            .any(|(_, _, body)| body == b"{this is not json"),
        "kept verbatim"
    );
    assert_eq!(
        app.evidence_count(&id).await,
        1,
        "the good message after the poison ones was processed"
    );
    let metrics = app.scrape().await;
    assert_eq!(
        metric_value(
            &metrics,
            "ecr_audit_rejected_messages_total",
            &[("code", "invalid_json")]
        ),
        Some(1.0)
    );
    app.finish().await;
}

#[tokio::test]
async fn a_tag_mutability_change_flips_ecr2_with_the_actor_recorded() {
    let mut app = TestApp::new().await;
    let name = app.repo("flip");
    app.ecr
        .create_repository()
        .repository_name(&name)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("create");
    app.put_event(
        "AWS API Call via CloudTrail",
        cloudtrail(
            &format!("{}c", app.prefix),
            "2026-11-20T10:00:00Z",
            "CreateRepository",
            json!({"repositoryName": name}),
            "arn:aws:iam::123456789012:user/alice",
        ),
    )
    .await;
    app.start_worker().await;
    let store = app.store.clone();
    let repo = name.clone();
    app.eventually("ECR.2 PASS", WAIT, || {
        let store = store.clone();
        let repo = repo.clone();
        async move {
            let rows = store.posture(Some(&repo)).await.ok()?;
            (rows.first()?.controls.get("ECR.2")?.status == "PASS").then_some(())
        }
    })
    .await;

    // The change is made through the API as a person would; the emulator emits the CloudTrail
    // event AWS would, naming the caller.
    let actor = "arn:aws:sts::123456789012:assumed-role/platform/mallory";
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&name)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .customize()
        .mutate_request(as_caller(actor))
        .send()
        .await
        .expect("make mutable");
    app.wait_for_drain().await;

    let rows = app.store.posture(Some(&name)).await.expect("posture");
    assert_eq!(rows[0].controls["ECR.2"].status, "FAIL");

    let transition: (String, Option<String>, Value) = sqlx::query_as(
        "SELECT kind, actor, detail FROM evidence
              WHERE kind = 'control_transition' AND repository = $1
                AND detail->>'control' = 'ECR.2' AND detail->'from'->>'status' = 'PASS'",
    )
    .bind(&name)
    .fetch_one(&app.pool)
    .await
    .expect("transition evidence");
    assert_eq!(transition.0, "control_transition");
    assert_eq!(transition.1.as_deref(), Some(actor));
    assert_eq!(transition.2["from"]["status"], "PASS");
    assert_eq!(transition.2["to"]["status"], "FAIL");
    app.finish().await;
}

async fn delete_image(app: &TestApp, repository: &str, digest: &str) {
    app.ecr
        .batch_delete_image()
        .repository_name(repository)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(digest)
                .build(),
        )
        .send()
        .await
        .expect("delete image");
}

#[tokio::test]
async fn an_older_event_does_not_undo_newer_state() {
    let app = TestApp::new().await;
    let name = app.create_repository("order").await;
    let digest = push_image(&app.ecr, &name, "v1", &app.prefix).await;
    let pipeline = app.pipeline();
    let message = |id: &str, time: &str, action: &str| ecr_audit::pipeline::InboundMessage {
        sent_at: None,
        source: "sqs",
        message_id: Some(id.to_owned()),
        body: envelope(
            id,
            time,
            "ECR Image Action",
            image_action(&name, &digest, action, Some("v1")),
        )
        .into_bytes(),
        format: ecr_audit::parse::InputFormat::Envelope,
    };
    // The digest is deleted (a delete is taken only when ECR confirms it), and the delete
    // (10:05) arrives before the push (10:00) it follows.
    delete_image(&app, &name, &digest).await;
    pipeline
        .process_batch(&[message("delete", "2026-11-20T10:05:00Z", "DELETE")])
        .await;
    pipeline
        .process_batch(&[message("push", "2026-11-20T10:00:00Z", "PUSH")])
        .await;
    assert!(
        app.store
            .images(Some(&name))
            .await
            .expect("images")
            .is_empty(),
        "the late push must not resurrect the deleted digest"
    );

    let present: bool = sqlx::query_scalar("SELECT present FROM images WHERE digest = $1")
        .bind(&digest)
        .fetch_one(&app.pool)
        .await
        .expect("row kept");
    assert!(!present);

    // A newer push after the delete does bring it back.
    assert_eq!(push_image(&app.ecr, &name, "v1", &app.prefix).await, digest);
    pipeline
        .process_batch(&[message("repush", "2026-11-20T10:10:00Z", "PUSH")])
        .await;
    assert_eq!(
        app.store.images(Some(&name)).await.expect("images").len(),
        1
    );
    app.finish().await;
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_failed_api_call_is_recorded_and_changes_nothing() {
    let app = TestApp::new().await;
    let name = app.repo("failed-call");
    app.ecr
        .create_repository()
        .repository_name(&name)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("create");
    let pipeline = app.pipeline();
    let created = format!("{}created", app.prefix);
    let failed = format!("{}failed", app.prefix);
    let mut failed_detail = cloudtrail(
        &failed,
        "2026-11-20T10:01:00Z",
        "PutImageTagMutability",
        json!({"repositoryName": name, "imageTagMutability": "MUTABLE"}),
        "arn:aws:iam::123456789012:user/eve",
    );
    failed_detail["errorCode"] = json!("AccessDenied");
    failed_detail["errorMessage"] =
        json!("User: eve is not authorized to perform: ecr:PutImageTagMutability");
    let batch = [
        (
            created.as_str(),
            cloudtrail(
                &created,
                "2026-11-20T10:00:00Z",
                "CreateRepository",
                json!({"repositoryName": name}),
                "arn:aws:iam::123456789012:user/alice",
            ),
        ),
        (failed.as_str(), failed_detail),
    ]
    .map(|(id, detail)| ecr_audit::pipeline::InboundMessage {
        sent_at: None,
        source: "sqs",
        message_id: Some(id.to_owned()),
        body: envelope(
            id,
            "2026-11-20T10:01:00Z",
            "AWS API Call via CloudTrail",
            detail,
        )
        .into_bytes(),
        format: ecr_audit::parse::InputFormat::Envelope,
    });
    let fates = pipeline.process_batch(&batch).await;
    assert!(
        fates
            .iter()
            .all(|f| matches!(f, ecr_audit::pipeline::MessageFate::Done(_))),
        "{fates:?}"
    );

    let (kind, actor, detail): (String, Option<String>, Value) =
        sqlx::query_as("SELECT kind, actor, detail FROM evidence WHERE event_id = $1")
            .bind(&failed)
            .fetch_one(&app.pool)
            .await
            .expect("failed call evidence");
    assert_eq!(kind, "failed_api_call");
    assert_eq!(actor.as_deref(), Some("arn:aws:iam::123456789012:user/eve"));
    assert_eq!(detail["change"]["error_code"], "AccessDenied");
    let rows = app.store.posture(Some(&name)).await.expect("posture");
    assert_eq!(rows[0].controls["ECR.2"].status, "PASS");
    let transitions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM evidence WHERE event_id LIKE $1")
            .bind(format!("{failed}/%"))
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(transitions, 0);
    app.finish().await;
}

#[tokio::test]
async fn the_pusher_is_joined_to_the_digest_whichever_event_comes_first() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("pusher").await;
    let digest = push_image(&app.ecr, &name, "v9", &app.prefix).await;
    // Dated a minute before the emulator's own record of the push (so it is the earliest), and
    // within the skew of ECR's push time: an older record would name no pusher.
    let mut put_image = cloudtrail(
        &format!("{}put", app.prefix),
        &(chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339(),
        "PutImage",
        json!({"repositoryName": name, "imageTag": "v9"}),
        "arn:aws:sts::123456789012:assumed-role/ci/build-42",
    );
    put_image["responseElements"] =
        json!({"image": {"imageId": {"imageDigest": digest, "imageTag": "v9"}}});
    // CloudTrail first, the image action second.
    app.put_event("AWS API Call via CloudTrail", put_image)
        .await;
    app.put_event(
        "ECR Image Action",
        image_action(&name, &digest, "PUSH", Some("v9")),
    )
    .await;
    app.start_worker().await;
    app.wait_for_drain().await;
    let images = app.store.images(Some(&name)).await.expect("images");
    assert_eq!(images.len(), 1);
    assert_eq!(
        images[0].pushed_by.as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/ci/build-42")
    );
    assert_eq!(images[0].tags, ["v9"]);
    app.finish().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work_and_leaves_the_rest_on_the_queue() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("shutdown").await;
    app.start_worker().await;
    let started = std::time::Instant::now();
    app.stop_worker().await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "an idle worker stops promptly"
    );

    // Messages sent while no worker runs stay on the queue, then the next worker takes them.
    let id = format!("{}late", app.prefix);
    app.send_raw(&create_repository_envelope(
        &id,
        &name,
        "arn:aws:iam::123456789012:user/a",
    ))
    .await;
    assert!(
        app.queue_depth(&app.queue_url).await.0 >= 1,
        "left on the queue while no worker runs"
    );
    assert_eq!(app.evidence_count(&id).await, 0);
    app.start_worker().await;
    app.wait_for_drain().await;
    assert_eq!(app.evidence_count(&id).await, 1);
    app.finish().await;
}

/// A scan result overtaking its push (another batch, or a lost push event): the scan must not
/// be lost, and the slower push, carrying an older scan state, must not overwrite it.
#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_scan_result_that_overtakes_its_push_is_kept() {
    let app = TestApp::new().await;
    let name = app.create_repository("overtaken").await;
    let digest = push_image(&app.ecr, &name, "v1", &format!("{}o", app.prefix)).await;
    let pipeline = app.pipeline();
    let parse = ecr_audit::parse::ParseContext {
        default_account: ecr_audit::domain::AccountId::parse(ACCOUNT).ok(),
        default_region: ecr_audit::domain::Region::parse("us-east-1").ok(),
    };
    let message = |id: &str, detail_type: &str, detail: Value| {
        let body = envelope(id, "2026-11-20T10:00:00Z", detail_type, detail);
        ecr_audit::parse::parse(
            body.as_bytes(),
            ecr_audit::parse::InputFormat::Envelope,
            &parse,
        )
        .expect("parse")
    };
    // The push is planned while the image is not scanned yet...
    let push = pipeline
        .plan(message(
            &format!("{}push", app.prefix),
            "ECR Image Action",
            image_action(&name, &digest, "PUSH", Some("v1")),
        ))
        .await
        .expect("plan push");

    // ...then a manual scan completes and its event is processed first.
    let _ = reqwest::Client::new()
        .post(format!(
            "{}/_emulator/scan-results",
            std::env::var("AWS_ENDPOINT_URL").expect("endpoint")
        ))
        .json(&json!({"repositoryName": name, "status": "COMPLETE",
                      "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 3}}))
        .send()
        .await
        .expect("scan results");
    app.ecr
        .start_image_scan()
        .repository_name(&name)
        .image_id(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(&digest)
                .build(),
        )
        .send()
        .await
        .expect("start scan");
    app.eventually("the scan completes", WAIT, || async {
        let findings = app
            .ecr
            .describe_image_scan_findings()
            .repository_name(&name)
            .image_id(
                aws_sdk_ecr::types::ImageIdentifier::builder()
                    .image_digest(&digest)
                    .build(),
            )
            .send()
            .await
            .ok()?;
        (findings.image_scan_status()?.status()?.as_str() == "COMPLETE").then_some(())
    })
    .await;
    let scan_event = ecr_audit::pipeline::InboundMessage {
        sent_at: None,
        source: "sqs",
        message_id: None,
        body: envelope(
            &format!("{}scan", app.prefix),
            "2026-11-20T10:00:05Z",
            "ECR Image Scan",
            json!({"scan-status": "COMPLETE", "repository-name": name, "image-digest": digest,
                   "image-tags": ["v1"], "finding-severity-counts": {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 3}}),
        )
        .into_bytes(),
        format: ecr_audit::parse::InputFormat::Envelope,
    };
    let fates = pipeline.process_batch(&[scan_event]).await;
    assert!(
        matches!(fates[0], ecr_audit::pipeline::MessageFate::Done(_)),
        "{fates:?}"
    );

    // The push commits last, with what it read before the scan.
    app.store
        .commit_batch(&[ecr_audit::plan::Plan::Event(Box::new(push))])
        .await
        .expect("commit push");
    let images = app.store.images(Some(&name)).await.expect("images");
    let image = images.iter().find(|i| i.digest == digest).expect("image");
    assert_eq!(image.scan.status.as_deref(), Some("SCANNED"), "{image:?}");
    assert_eq!(
        (image.scan.critical, image.scan.high, image.scan.medium),
        (Some(1), Some(2), Some(3))
    );
    app.finish().await;
}

/// A push read after a settings change but processed before the change's own CloudTrail
/// event must not take the change's transition (it has no caller): the CloudTrail event
/// records it, with the caller.
#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_push_that_reads_a_change_first_leaves_the_transition_to_its_caller() {
    let app = TestApp::new().await;
    let pipeline = app.pipeline();
    let name = app.repo("attributed");
    app.ecr
        .create_repository()
        .repository_name(&name)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("create");
    let batch = |body: String| {
        vec![ecr_audit::pipeline::InboundMessage {
            sent_at: None,
            source: "sqs",
            message_id: None,
            body: body.into_bytes(),
            format: ecr_audit::parse::InputFormat::Envelope,
        }]
    };
    pipeline
        .process_batch(&batch(create_repository_envelope(
            &format!("{}create", app.prefix),
            &name,
            "arn:aws:iam::123456789012:user/alice",
        )))
        .await;
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&name)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .send()
        .await
        .expect("mutable");
    let digest = push_image(&app.ecr, &name, "v1", &format!("{}a", app.prefix)).await;
    // The push first, on a replica whose cache is cold: it reads MUTABLE, and records the
    // image's settings at push.
    app.pipeline()
        .process_batch(&batch(envelope(
            &format!("{}push", app.prefix),
            "2026-11-20T10:00:05Z",
            "ECR Image Action",
            image_action(&name, &digest, "PUSH", Some("v1")),
        )))
        .await;
    let images = app.store.images(Some(&name)).await.expect("images");
    assert_eq!(images[0].tag_immutability.as_deref(), Some("MUTABLE"));
    // Then the change's own event.
    let mallory = "arn:aws:sts::123456789012:assumed-role/AdminSSO/mallory";
    let change_id = format!("{}mutable", app.prefix);
    pipeline
        .process_batch(&batch(envelope(
            &change_id,
            "2026-11-20T10:00:04Z",
            "AWS API Call via CloudTrail",
            cloudtrail(
                &change_id,
                "2026-11-20T10:00:04Z",
                "PutImageTagMutability",
                json!({"repositoryName": name, "imageTagMutability": "MUTABLE"}),
                mallory,
            ),
        )))
        .await;
    let transitions: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT event_id, actor FROM evidence
          WHERE kind = 'control_transition' AND repository = $1 AND detail->>'control' = 'ECR.2'
          ORDER BY seq",
    )
    .bind(&name)
    .fetch_all(&app.pool)
    .await
    .expect("transitions");
    assert_eq!(transitions.len(), 2, "{transitions:?}");
    assert!(
        transitions[0]
            .0
            .starts_with(&format!("{}create", app.prefix))
    );
    assert!(transitions[1].0.starts_with(&change_id), "{transitions:?}");
    assert_eq!(transitions[1].1.as_deref(), Some(mallory));
    app.finish().await;
}
