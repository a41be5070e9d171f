//! The pusher and the queue sender as adversaries, end to end: each attack goes through the
//! emulator's EventBridge → SQS → the real worker, and the stored truth is read back.
//! docs/THREATS.md names each test beside the hole it closes.

use std::time::Duration;

use chrono::Utc;
use ecr_audit::readmodel::ImageRow;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, as_caller, cloudtrail, envelope, image_action, metric_value, push_image, sha256_hex,
};
use crate::verified_verdicts::put_manifest;

const WAIT: Duration = Duration::from_secs(30);

async fn image(app: &TestApp, repository: &str, digest: &str) -> Option<ImageRow> {
    app.store
        .images(Some(repository))
        .await
        .ok()?
        .into_iter()
        .find(|i| i.digest == digest)
}

/// Waits until the digest's signature status is `status`.
async fn wait_for_status(app: &TestApp, repository: &str, digest: &str, status: &str) -> ImageRow {
    app.eventually(&format!("{digest} {status}"), WAIT, || async {
        image(app, repository, digest)
            .await
            .filter(|i| i.signature.status.as_deref() == Some(status))
    })
    .await
}

/// A runnable image manifest (image config, one tar layer) that names `subject`.
fn runnable_with_subject(salt: &str, subject: &str) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                   "digest": format!("sha256:{}", sha256_hex(format!("config-{salt}").as_bytes()))},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 10,
                    "digest": format!("sha256:{}", sha256_hex(format!("layer-{salt}").as_bytes()))}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 500}
    })
}

/// The `image_after` of the evidence records about `digest`, oldest first.
async fn images_after(app: &TestApp, digest: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT detail->'image_after' FROM evidence
          WHERE digest = $1 AND detail ? 'image_after' ORDER BY seq",
    )
    .bind(digest)
    .fetch_all(&app.pool)
    .await
    .expect("image evidence")
}

#[tokio::test]
async fn a_runnable_image_naming_a_subject_is_judged_and_unsigned() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("fake-subject").await;
    app.start_worker().await;
    // A subject that exists (the strongest form of the attack), and one made up.
    let real = push_image(&app.ecr, &name, "base", &format!("{}base", app.prefix)).await;
    let made_up = format!("sha256:{}", "e".repeat(64));
    let mut evaders = Vec::new();
    for (salt, subject) in [("real", real.as_str()), ("made-up", made_up.as_str())] {
        let manifest = runnable_with_subject(&format!("{}{salt}", app.prefix), subject);
        evaders.push(put_manifest(&app, &name, &manifest, Some(salt)).await);
    }
    for digest in &evaders {
        let row = wait_for_status(&app, &name, digest, "UNSIGNED").await;
        assert_eq!(
            row.artifact_of, None,
            "{digest} is not exempted as an artifact"
        );
        let after = images_after(&app, digest).await;
        assert!(
            after.iter().any(|a| a["disguise"]
                .as_str()
                .is_some_and(|d| d.contains("subject"))),
            "the evidence says the image names a subject: {after:?}"
        );
    }
    app.wait_for_drain().await;
    let metrics = app.scrape().await;
    let flagged = metric_value(
        &metrics,
        "ecr_audit_distrusted_hints_total",
        &[("hint", "subject_on_image")],
    );
    assert!(flagged >= Some(2.0), "{flagged:?}");
    app.finish().await;
}

/// A runnable image that declares itself a Notation signature of an image the repository
/// holds: ECR reports the declared type, so only the manifest's own content (an image config
/// and a filesystem layer) gives it away.
#[tokio::test]
async fn a_runnable_image_declaring_a_signature_type_is_judged_and_unsigned() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("declared").await;
    app.start_worker().await;
    let real = push_image(&app.ecr, &name, "base", &format!("{}base", app.prefix)).await;
    let mut manifest = runnable_with_subject(&format!("{}declared", app.prefix), &real);
    manifest["artifactType"] = json!("application/vnd.cncf.notary.signature");
    let evader = put_manifest(&app, &name, &manifest, Some("latest")).await;
    let row = wait_for_status(&app, &name, &evader, "UNSIGNED").await;
    assert_eq!(row.artifact_of, None, "not exempted as an artifact");
    let after = images_after(&app, &evader).await;
    assert!(
        after.iter().any(|a| a["disguise"]
            .as_str()
            .is_some_and(|d| d.contains("image config and image layers"))),
        "the evidence names the disguise: {after:?}"
    );
    app.wait_for_drain().await;
    let metrics = app.scrape().await;
    let flagged = metric_value(
        &metrics,
        "ecr_audit_distrusted_hints_total",
        &[("hint", "runnable_content")],
    );
    assert!(flagged >= Some(1.0), "{flagged:?}");
    app.finish().await;
}

#[tokio::test]
async fn an_unsigned_digest_retagged_like_an_attestation_is_still_judged() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("retag").await;
    app.start_worker().await;
    let salt = format!("{}retag", app.prefix);
    let digest = push_image(&app.ecr, &name, "v1", &salt).await;
    // The same manifest again under Cosign's attestation tag for itself.
    let disguise = format!("{}.att", digest.replacen(':', "-", 1));
    push_image(&app.ecr, &name, &disguise, &salt).await;
    app.wait_for_drain().await;
    let row = wait_for_status(&app, &name, &digest, "UNSIGNED").await;
    assert_eq!(row.artifact_of, None);
    assert!(row.tags.contains(&disguise), "{:?}", row.tags);
    let after = images_after(&app, &digest).await;
    assert!(
        after.iter().any(|a| a["disguise"]
            .as_str()
            .is_some_and(|d| d.contains(&disguise))),
        "the evidence names the signature-shaped tag: {after:?}"
    );
    let (artifact_of,): (Option<String>,) =
        sqlx::query_as("SELECT artifact_of FROM images WHERE repository = $1 AND digest = $2")
            .bind(&name)
            .bind(&digest)
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!(artifact_of, None, "never flagged, not even for a while");
    app.finish().await;
}

#[tokio::test]
async fn a_forged_delete_sent_to_the_queue_leaves_the_image_present() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("forged-delete").await;
    app.start_worker().await;
    let digest = push_image(&app.ecr, &name, "v1", &app.prefix).await;
    app.eventually("image stored", WAIT, || async {
        image(&app, &name, &digest).await
    })
    .await;
    let forged = format!("{}forged-delete", app.prefix);
    app.send_raw(&envelope(
        &forged,
        &Utc::now().to_rfc3339(),
        "ECR Image Action",
        image_action(&name, &digest, "DELETE", Some("v1")),
    ))
    .await;
    app.eventually("forged delete processed", WAIT, || async {
        (app.evidence_count(&forged).await == 1).then_some(())
    })
    .await;
    app.wait_for_drain().await;
    assert!(
        image(&app, &name, &digest).await.is_some(),
        "ECR still has the digest: it stays present"
    );
    let distrusted: Value =
        sqlx::query_scalar("SELECT detail->'distrusted' FROM evidence WHERE event_id = $1")
            .bind(&forged)
            .fetch_one(&app.pool)
            .await
            .expect("forged delete evidence");
    assert!(
        distrusted.to_string().contains("not confirmed"),
        "{distrusted}"
    );

    // A real delete is still taken.
    app.ecr
        .batch_delete_image()
        .repository_name(&name)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(&digest)
                .build(),
        )
        .send()
        .await
        .expect("delete");
    app.eventually("real delete recorded", WAIT, || async {
        image(&app, &name, &digest).await.is_none().then_some(())
    })
    .await;
    app.finish().await;
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn an_early_event_time_does_not_rewrite_who_pushed() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("early").await;
    app.start_worker().await;
    let alice = "arn:aws:sts::123456789012:assumed-role/ci/alice";
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                   "digest": format!("sha256:{}", sha256_hex(format!("config-{}", app.prefix).as_bytes()))},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 10,
                    "digest": format!("sha256:{}", sha256_hex(format!("layer-{}", app.prefix).as_bytes()))}]
    });
    let digest = app
        .ecr
        .put_image()
        .repository_name(&name)
        .image_tag("v1")
        .image_manifest(manifest.to_string())
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .customize()
        .mutate_request(as_caller(alice))
        .send()
        .await
        .expect("push")
        .image()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .expect("digest")
        .to_owned();
    app.eventually("alice recorded as the pusher", WAIT, || async {
        image(&app, &name, &digest)
            .await
            .filter(|i| i.pushed_by.as_deref() == Some(alice))
    })
    .await;

    // mallory sends a PutImage record of her own, dated two days before the push.
    let mallory = "arn:aws:sts::123456789012:assumed-role/dev/mallory";
    let forged = format!("{}forged-push", app.prefix);
    let early = (Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    let mut record = cloudtrail(
        &forged,
        &early,
        "PutImage",
        json!({"repositoryName": name, "imageTag": "v1"}),
        mallory,
    );
    record["responseElements"] =
        json!({"image": {"imageId": {"imageDigest": digest, "imageTag": "v1"}}});
    app.send_raw(&envelope(
        &forged,
        &early,
        "AWS API Call via CloudTrail",
        record,
    ))
    .await;
    app.eventually("forged record processed", WAIT, || async {
        (app.evidence_count(&forged).await == 1).then_some(())
    })
    .await;
    app.wait_for_drain().await;
    let row = image(&app, &name, &digest).await.expect("image");
    assert_eq!(row.pushed_by.as_deref(), Some(alice));
    let (time, distrusted): (chrono::DateTime<Utc>, Value) =
        sqlx::query_as("SELECT event_time, detail->'distrusted' FROM evidence WHERE event_id = $1")
            .bind(&forged)
            .fetch_one(&app.pool)
            .await
            .expect("forged record evidence");
    assert!(
        time > Utc::now() - chrono::Duration::days(2) + chrono::Duration::hours(12),
        "the record's time was clamped to the queue's window: {time}"
    );
    assert!(
        distrusted.to_string().contains("outside the queue"),
        "{distrusted}"
    );
    app.finish().await;
}

/// Resident and peak memory of this process (the worker runs in it), from `/proc`.
fn memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn five_thousand_referrers_on_one_digest_give_bounded_work_and_evidence() {
    use futures::StreamExt;
    const REFERRERS: usize = 5_000;
    // An account of its own: other tests sweep the shared account, and 5,000 manifests there
    // would slow every sweep; the repository is deleted at the end for the same reason.
    let mut app = TestApp::new_in_own_account().await;
    // Outside the test's routing prefix: the 5,000 pushes emit no events into the queue; one
    // rule of this test routes the hints about the subject alone.
    let name = format!("x{}bulk", app.prefix);
    app.ecr
        .create_repository()
        .repository_name(&name)
        .send()
        .await
        .expect("create repository");
    let subject = push_image(&app.ecr, &name, "v1", &app.prefix).await;
    let pushed = std::time::Instant::now();
    let digests: Vec<String> = futures::stream::iter(0..REFERRERS)
        .map(|i| {
            let app = &app;
            let (name, subject) = (&name, &subject);
            async move {
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": "application/vnd.cncf.notary.signature",
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                               "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
                    "layers": [{"mediaType": "application/jose+json", "size": 10,
                                "digest": format!("sha256:{}", sha256_hex(format!("sig-{i}").as_bytes()))}],
                    "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 500}
                });
                put_manifest(app, name, &manifest, None).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(digests.len(), REFERRERS);
    eprintln!("pushed {REFERRERS} referrers in {:?}", pushed.elapsed());
    let _rule = crate::helpers::route_to_queue(
        &app.sdk,
        &format!("{}bulk", app.prefix),
        &json!({"source": ["aws.ecr"], "detail": {"repository-name": [name], "image-digest": [subject]}}),
        &crate::helpers::queue_arn(&app.sqs, &app.queue_url).await,
    )
    .await;
    eprintln!("before the worker: {}", memory());
    app.start_worker().await;
    let started = std::time::Instant::now();
    app.put_event(
        "ECR Image Action",
        image_action(&name, &subject, "PUSH", Some("v1")),
    )
    .await;
    // The junk envelopes verify nothing: UNTRUSTED, naming a few failed checks and counting
    // the rest (signatures past ECR_AUDIT_MAX_SIGNATURES_PER_DIGEST are counted, not read).
    let row = wait_for_status(&app, &name, &subject, "UNTRUSTED").await;
    app.wait_for_drain().await;
    eprintln!(
        "judged in {:?}; worker process memory: {}",
        started.elapsed(),
        memory()
    );

    // Bounded: the verdict names a few sources and counts the rest.
    assert!(
        row.signature.sources.len() <= 5,
        "{:?}",
        row.signature.sources.len()
    );
    let reason = row.signature.reason.clone().unwrap_or_default();
    // Five failed checks named with their reasons (each carries AWS's own message), the rest
    // counted: a few KB whatever the number of referrers.
    assert!(reason.len() < 4_000, "{} bytes: {reason}", reason.len());
    assert!(reason.contains("more ("), "{reason}");
    let sizes: Vec<i32> =
        sqlx::query_scalar("SELECT octet_length(detail::text) FROM evidence WHERE repository = $1")
            .bind(&name)
            .fetch_all(&app.pool)
            .await
            .expect("evidence sizes");
    assert!(!sizes.is_empty());
    assert!(
        // The per-signature results are kept too, at most ECR_AUDIT_MAX_SIGNATURES_PER_DIGEST (16).
        sizes.iter().all(|size| *size < 16_384),
        "every evidence record stays small: {sizes:?}"
    );
    // Bounded reads: the default cap of 200 referrers is 10 pages of the emulator's 20.
    let listed = metric_value(
        &app.scrape().await,
        "ecr_audit_aws_api_calls_total",
        &[("operation", "ecr:ListImageReferrers")],
    )
    .unwrap_or(0.0);
    assert!(listed <= 20.0, "ListImageReferrers called {listed} times");
    app.ecr
        .delete_repository()
        .repository_name(&name)
        .force(true)
        .send()
        .await
        .expect("delete the bulk repository");
    app.finish().await;
}
