//! Signed and scanned, end to end: the emulator signs and scans as ECR would, its events travel
//! EventBridge → SQS → the real worker, and the per-digest truth is read back.
//!
//! One test owns the registry-wide signing configuration (the emulator's account is shared by
//! the tests running in parallel), so every signing scenario lives in it.

use std::time::Duration;

use aws_sdk_ecr::types::{
    ImageScanningConfiguration, SigningConfiguration, SigningRepositoryFilter,
    SigningRepositoryFilterType, SigningRule,
};
use ecr_audit::readmodel::ImageRow;
use serde_json::json;

use crate::helpers::{
    TestApp, emulator_control, envelope, image_action, metric_value, push_image, sha256_hex,
};

const WAIT: Duration = Duration::from_secs(30);
const NOTATION_PLATFORM: &str = "Notation-OCI-SHA384-ECDSA";

async fn image(app: &TestApp, repository: &str, digest: &str) -> Option<ImageRow> {
    app.store
        .images(Some(repository))
        .await
        .ok()?
        .into_iter()
        .find(|i| i.digest == digest)
}

async fn wait_for_signature(
    app: &TestApp,
    repository: &str,
    digest: &str,
    status: &str,
) -> ImageRow {
    app.eventually(&format!("{repository} {digest} {status}"), WAIT, || async {
        image(app, repository, digest)
            .await
            .filter(|i| i.signature.status.as_deref() == Some(status))
    })
    .await
}

async fn create(app: &TestApp, name: &str, scan_on_push: bool) -> String {
    let repository = app.repo(name);
    app.ecr
        .create_repository()
        .repository_name(&repository)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(scan_on_push)
                .build(),
        )
        .send()
        .await
        .expect("create repository");
    repository
}

async fn signing_profile(app: &TestApp, name: &str) -> (String, String, String) {
    let signer = aws_sdk_signer::Client::new(&app.sdk);
    let profile_name = format!("{}{name}", app.prefix.replace('-', "_"));
    let output = signer
        .put_signing_profile()
        .profile_name(&profile_name)
        .platform_id(NOTATION_PLATFORM)
        .send()
        .await
        .expect("signing profile");
    (
        profile_name,
        output.arn().expect("profile arn").to_owned(),
        output.profile_version().unwrap_or_default().to_owned(),
    )
}

async fn revoke(app: &TestApp, profile_name: &str, version: &str) {
    aws_sdk_signer::Client::new(&app.sdk)
        .revoke_signing_profile()
        .profile_name(profile_name)
        .profile_version(version)
        .reason("key compromised")
        // From an hour ago: AWS invalidates only the signatures made after the effective time.
        .effective_time(aws_smithy_types::DateTime::from(
            std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
        ))
        .send()
        .await
        .expect("revoke");
}

fn signing_rule(profile_arn: &str, filter: &str) -> SigningRule {
    SigningRule::builder()
        .signing_profile_arn(profile_arn)
        .repository_filters(
            SigningRepositoryFilter::builder()
                .filter(filter)
                .filter_type(SigningRepositoryFilterType::WildcardMatch)
                .build()
                .expect("filter"),
        )
        .build()
        .expect("rule")
}

/// Pushes an artifact manifest with `artifact_type` whose subject is `subject`.
async fn push_artifact(
    app: &TestApp,
    repository: &str,
    subject: &str,
    artifact_type: &str,
    tag: Option<&str>,
) -> String {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": [{"mediaType": "application/jose+json", "size": 10,
                    "digest": format!("sha256:{}", sha256_hex(format!("sig-{subject}-{artifact_type}").as_bytes()))}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 500}
    })
    .to_string();
    let mut request = app
        .ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest)
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json");
    if let Some(tag) = tag {
        request = request.image_tag(tag);
    }
    request
        .send()
        .await
        .expect("push artifact")
        .image()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .expect("digest")
        .to_owned()
}

async fn signature_transitions(app: &TestApp, digest: &str) -> Vec<(Option<String>, String)> {
    sqlx::query_as(
        "SELECT detail->>'from', detail->>'to' FROM evidence
          WHERE kind = 'signature_transition' AND digest = $1 ORDER BY seq",
    )
    .bind(digest)
    .fetch_all(&app.pool)
    .await
    .expect("transitions")
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn signatures_evolve_from_pending_to_their_truth() {
    let mut app = TestApp::new().await;
    emulator_control(
        "/_emulator/config",
        json!({"signing_delay_seconds": 0.5, "scan_delay_seconds": 0.5}),
    )
    .await;
    let (_, active_arn, _) = signing_profile(&app, "active").await;
    let (revoked_name, revoked_arn, revoked_version) = signing_profile(&app, "revoked").await;
    let (late_name, late_arn, late_version) = signing_profile(&app, "late").await;
    app.ecr
        .put_signing_configuration()
        .signing_configuration(
            SigningConfiguration::builder()
                .rules(signing_rule(
                    &active_arn,
                    &format!("{}managed*", app.prefix),
                ))
                .rules(signing_rule(
                    &revoked_arn,
                    &format!("{}failing*", app.prefix),
                ))
                .rules(signing_rule(
                    &late_arn,
                    &format!("{}revoked-later*", app.prefix),
                ))
                .build()
                .expect("signing configuration"),
        )
        .send()
        .await
        .expect("put signing configuration");
    revoke(&app, &revoked_name, &revoked_version).await;

    let managed = create(&app, "managed", false).await;
    let plain = create(&app, "plain", false).await;
    let cosigned = create(&app, "cosigned", false).await;
    let failing = create(&app, "failing", false).await;
    let revoked_later = create(&app, "revoked-later", false).await;
    app.start_worker().await;

    let managed_digest = push_image(&app.ecr, &managed, "v1", &format!("{}m", app.prefix)).await;
    let plain_digest = push_image(&app.ecr, &plain, "v1", &format!("{}p", app.prefix)).await;
    let cosigned_digest = push_image(&app.ecr, &cosigned, "v1", &format!("{}c", app.prefix)).await;
    let failing_digest = push_image(&app.ecr, &failing, "v1", &format!("{}f", app.prefix)).await;
    let late_digest = push_image(&app.ecr, &revoked_later, "v1", &format!("{}l", app.prefix)).await;

    // Managed signing: PENDING, then SIGNED once the emulator's signer completes; its Notation
    // signature artifact is recorded as an artifact of the image, not as an image.
    let signed = wait_for_signature(&app, &managed, &managed_digest, "SIGNED").await;
    assert_eq!(signed.signature.sources, [format!("signer:{active_arn}")]);
    let artifact = app
        .eventually("the signature artifact", WAIT, || async {
            app.store
                .images(Some(&managed))
                .await
                .ok()?
                .into_iter()
                .find(|i| i.artifact_of.is_some())
        })
        .await;
    assert_eq!(
        artifact.artifact_of.as_deref(),
        Some(managed_digest.as_str())
    );
    assert_eq!(
        artifact.artifact_kind.as_deref(),
        Some("notation_signature")
    );
    assert_eq!(
        artifact.signature.status, None,
        "artifacts take no signature status"
    );
    assert_eq!(artifact.scan.status, None, "artifacts take no scan status");

    // Signing with a revoked profile fails, with the reason.
    let failed = wait_for_signature(&app, &failing, &failing_digest, "FAILED").await;
    assert!(
        failed
            .signature
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("REVOKED"),
        "{:?}",
        failed.signature.reason
    );

    // No signing rule: PENDING through the grace window, then UNSIGNED, counted once.
    // PENDING first is asserted below through the recorded PENDING -> UNSIGNED transition.
    wait_for_signature(&app, &plain, &plain_digest, "UNSIGNED").await;
    // The same push delivered again, and a second pipeline re-checking: still counted once.
    app.send_raw(&envelope(
        &format!("{}again", app.prefix),
        "2026-11-20T10:00:00Z",
        "ECR Image Action",
        image_action(&plain, &plain_digest, "PUSH", Some("v1")),
    ))
    .await;
    app.wait_for_drain().await;
    let second = app.pipeline();
    second
        .run_due_rechecks(50)
        .await
        .expect("second worker's re-checks");
    let metrics = app.scrape().await;
    let ever_unsigned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM images WHERE first_unsigned_at IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert!(ever_unsigned >= 1);
    // The second pipeline counted nothing: the worker had already recorded every UNSIGNED.
    assert_eq!(
        metric_value(&metrics, "ecr_audit_unsigned_pushes_total", &[]),
        Some(ever_unsigned as f64),
        "one count per digest that ever became UNSIGNED"
    );
    let second_metrics = second.metrics().render().expect("render");
    assert_eq!(
        metric_value(&second_metrics, "ecr_audit_unsigned_pushes_total", &[]),
        Some(0.0)
    );
    assert!(metric_value(&metrics, "ecr_audit_images", &[("signature", "UNSIGNED")]) >= Some(1.0));

    // Something shaped like a Notation signature pushed after the digest became UNSIGNED
    // (its envelope is not even in the registry) makes it UNTRUSTED, never SIGNED: presence
    // is not a signature.
    push_artifact(
        &app,
        &plain,
        &plain_digest,
        "application/vnd.cncf.notary.signature",
        None,
    )
    .await;
    let late = wait_for_signature(&app, &plain, &plain_digest, "UNTRUSTED").await;
    let reason = late.signature.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("notation:sha256:") && reason.contains("envelope_unreadable"),
        "{reason}"
    );
    assert!(late.signature.sources.is_empty());
    let transitions = signature_transitions(&app, &plain_digest).await;
    assert!(
        transitions.contains(&(Some("PENDING".into()), "UNSIGNED".into())),
        "{transitions:?}"
    );
    assert!(
        transitions.contains(&(Some("UNSIGNED".into()), "UNTRUSTED".into())),
        "{transitions:?}"
    );
    let unsigned_records = transitions
        .iter()
        .filter(|(_, to)| to == "UNSIGNED")
        .count();
    assert_eq!(
        unsigned_records, 1,
        "one transition to UNSIGNED despite redelivery and two workers"
    );

    // Cosign's tag convention on an ordinary image: no simple-signing payload, UNTRUSTED.
    let cosign_tag = format!("{}.sig", cosigned_digest.replacen(':', "-", 1));
    push_image(
        &app.ecr,
        &cosigned,
        &cosign_tag,
        &format!("{}cs", app.prefix),
    )
    .await;
    let cosign = wait_for_signature(&app, &cosigned, &cosigned_digest, "UNTRUSTED").await;
    let reason = cosign.signature.reason.clone().unwrap_or_default();
    assert!(reason.contains(&format!("cosign:{cosign_tag}")), "{reason}");

    // Signed, then the profile version is revoked from before the signature: the next
    // evaluation says UNTRUSTED.
    wait_for_signature(&app, &revoked_later, &late_digest, "SIGNED").await;
    revoke(&app, &late_name, &late_version).await;
    let fresh = app.pipeline();
    fresh
        .process_batch(&[ecr_audit::pipeline::InboundMessage {
            sent_at: None,
            source: "sqs",
            message_id: Some("re-evaluate".into()),
            body: envelope(
                &format!("{}re", app.prefix),
                "2026-11-20T10:00:00Z",
                "ECR Image Action",
                image_action(&revoked_later, &late_digest, "PUSH", Some("v1")),
            )
            .into_bytes(),
            format: ecr_audit::parse::InputFormat::Envelope,
        }])
        .await;
    let untrusted = image(&app, &revoked_later, &late_digest)
        .await
        .expect("image");
    assert_eq!(
        untrusted.signature.status.as_deref(),
        Some("UNTRUSTED"),
        "{:?}",
        untrusted.signature.reason
    );

    app.finish().await;
}

#[tokio::test]
async fn a_pending_re_check_survives_a_worker_restart() {
    let mut app = TestApp::new().await;
    let repository = create(&app, "restart", false).await;
    app.start_worker().await;
    let digest = push_image(&app.ecr, &repository, "v1", &app.prefix).await;
    wait_for_signature(&app, &repository, &digest, "PENDING").await;
    app.stop_worker().await;
    let due: i64 = sqlx::query_scalar("SELECT count(*) FROM signature_rechecks WHERE digest = $1")
        .bind(&digest)
        .fetch_one(&app.pool)
        .await
        .expect("rechecks");
    assert_eq!(due, 1, "the re-check is a row, not an in-memory timer");
    app.start_worker().await;
    wait_for_signature(&app, &repository, &digest, "UNSIGNED").await;
    app.finish().await;
}

#[tokio::test]
async fn scans_are_recorded_with_their_status_and_counts() {
    let mut app = TestApp::new().await;
    emulator_control(
        "/_emulator/config",
        json!({"signing_delay_seconds": 0.5, "scan_delay_seconds": 0.5}),
    )
    .await;
    let scanned = create(&app, "scanned", true).await;
    let unsupported = create(&app, "unsupported", true).await;
    let unscanned = create(&app, "unscanned", false).await;
    emulator_control(
        "/_emulator/scan-results",
        json!({"repositoryName": scanned, "status": "COMPLETE",
        "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 3}}),
    )
    .await;
    emulator_control(
        "/_emulator/scan-results",
        json!({"repositoryName": unsupported, "status": "UNSUPPORTED_IMAGE"}),
    )
    .await;
    app.start_worker().await;
    let scanned_digest = push_image(&app.ecr, &scanned, "v1", &format!("{}s", app.prefix)).await;
    let unsupported_digest =
        push_image(&app.ecr, &unsupported, "v1", &format!("{}u", app.prefix)).await;
    let unscanned_digest =
        push_image(&app.ecr, &unscanned, "v1", &format!("{}n", app.prefix)).await;

    let wait_scan = |repository: String, digest: String, status: &'static str| {
        let app = &app;
        async move {
            app.eventually(&format!("{repository} scan {status}"), WAIT, || async {
                image(app, &repository, &digest)
                    .await
                    .filter(|i| i.scan.status.as_deref() == Some(status))
            })
            .await
        }
    };
    let done = wait_scan(scanned.clone(), scanned_digest, "SCANNED").await;
    assert_eq!(
        (done.scan.critical, done.scan.high, done.scan.medium),
        (Some(1), Some(2), Some(3))
    );
    assert_eq!(done.scan.raw_status.as_deref(), Some("COMPLETE"));
    let refused = wait_scan(unsupported.clone(), unsupported_digest, "UNSUPPORTED").await;
    assert_eq!(
        refused.scan.raw_status.as_deref(),
        Some("UNSUPPORTED_IMAGE")
    );
    wait_scan(unscanned.clone(), unscanned_digest, "NOT_SCANNED").await;
    app.wait_for_drain().await;
    let metrics = app.scrape().await;
    assert!(
        metric_value(
            &metrics,
            "ecr_audit_image_scans",
            &[("scan", "UNSUPPORTED")]
        ) >= Some(1.0),
        "{metrics}"
    );
    app.finish().await;
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn enhanced_scanning_is_read_through_inspector_events() {
    let mut app = TestApp::new_in_own_account().await;
    emulator_control(
        "/_emulator/config",
        json!({"signing_delay_seconds": 0.5, "scan_delay_seconds": 0.5}),
    )
    .await;
    app.ecr
        .put_registry_scanning_configuration()
        .scan_type(aws_sdk_ecr::types::ScanType::Enhanced)
        .rules(
            aws_sdk_ecr::types::RegistryScanningRule::builder()
                .scan_frequency(aws_sdk_ecr::types::ScanFrequency::ContinuousScan)
                .repository_filters(
                    aws_sdk_ecr::types::ScanningRepositoryFilter::builder()
                        .filter(format!("{}*", app.prefix))
                        .filter_type(aws_sdk_ecr::types::ScanningRepositoryFilterType::Wildcard)
                        .build()
                        .expect("filter"),
                )
                .build()
                .expect("rule"),
        )
        .send()
        .await
        .expect("enhanced scanning");
    let repository = create(&app, "enhanced", false).await;
    app.start_worker().await;
    let digest = push_image(&app.ecr, &repository, "v1", &app.prefix).await;

    let scanned = app
        .eventually("enhanced scan recorded", WAIT, || async {
            image(&app, &repository, &digest)
                .await
                .filter(|i| i.scan.status.as_deref() == Some("SCANNED"))
        })
        .await;
    assert_eq!(
        scanned.scan.raw_status.as_deref(),
        Some("ACTIVE"),
        "continuous enhanced scanning reports ACTIVE"
    );
    // The push's own read may already see the finished scan, so the Inspector event can be
    // processed after SCANNED shows: wait for its evidence rather than expect it at once.
    app.eventually(
        "the Inspector2 Scan event (repository named by ARN) was processed",
        WAIT,
        || async {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM evidence WHERE kind = 'scan_completed' AND detail->'change'->>'source' = 'enhanced'",
            )
            .fetch_one(&app.pool)
            .await
            .expect("count");
            (count >= 1).then_some(())
        },
    )
    .await;
    let posture = app.store.posture(Some(&repository)).await.expect("posture");
    assert_eq!(
        posture[0].controls["ECR.1"].status, "PASS",
        "{:?}",
        posture[0].controls["ECR.1"]
    );
    app.finish().await;
}
