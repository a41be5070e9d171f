//! Managed signing verified for real, end to end: the emulator's Signer signs each push with a
//! real Notary signature; the worker verifies it against the emulator's Signer roots, asks
//! `GetRevocationStatus`, and records the identity. A copied managed signature, a revoked job
//! and a revoked profile version make a digest `UNTRUSTED`; an envelope already verified
//! costs no AWS call; a changed trust policy re-verifies with evidence naming its version.
//! Managed signing is registry-wide, so these tests run in an account of their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ecr::types::{
    SigningConfiguration, SigningRepositoryFilter, SigningRepositoryFilterType, SigningRule,
};
use ecr_audit::enrich::Registry;
use ecr_audit::facts::{BlobRead, Fact, VerificationResult};
use ecr_audit::pipeline::{InboundMessage, Pipeline};
use ecr_audit::readmodel::ImageRow;
use ecr_audit::telemetry::Metrics;
use serde_json::{Value, json};

use crate::helpers::{REGION, TestApp, emulator_requests, envelope, image_action, push_image};
use crate::verified_verdicts::{
    Signed, descriptor, ensure_blob, push_notation, put_manifest, trust_for, wait_for,
};

const PLATFORM: &str = "Notation-OCI-SHA384-ECDSA";

/// The emulator's call counts in `account`, by `service.Operation`.
async fn calls(account: &str) -> BTreeMap<String, f64> {
    emulator_requests(account, false)
        .await
        .into_iter()
        .map(|(operation, count)| (operation, count as f64))
        .collect()
}

/// Managed signing of every repository named `PREFIX<name>*` with a fresh profile.
pub(crate) async fn managed_signing(app: &TestApp, name: &str) -> (String, String) {
    let profile_name = format!("{}{name}", app.prefix.replace('-', "_"));
    let profile = aws_sdk_signer::Client::new(&app.sdk)
        .put_signing_profile()
        .profile_name(&profile_name)
        .platform_id(PLATFORM)
        .send()
        .await
        .expect("signing profile");
    let arn = profile.arn().expect("arn").to_owned();
    let rule = SigningRule::builder()
        .signing_profile_arn(&arn)
        .repository_filters(
            SigningRepositoryFilter::builder()
                .filter(format!("{}{name}*", app.prefix))
                .filter_type(SigningRepositoryFilterType::WildcardMatch)
                .build()
                .expect("filter"),
        )
        .build()
        .expect("rule");
    app.ecr
        .put_signing_configuration()
        .signing_configuration(
            SigningConfiguration::builder()
                .rules(rule)
                .build()
                .expect("configuration"),
        )
        .send()
        .await
        .expect("signing configuration");
    (profile_name, arn)
}

/// The profile version ARN and job ARN a verified managed signature records.
fn signer_identity(row: &ImageRow) -> (String, String) {
    let verified = row
        .signature
        .verifications
        .iter()
        .find_map(|v| match &v.result {
            VerificationResult::Verified {
                signer_profile_version_arn: Some(version),
                signer_job_arn: Some(job),
                ..
            } => Some((version.clone(), job.clone())),
            _ => None,
        });
    verified.unwrap_or_else(|| panic!("no verified Signer signature: {:?}", row.signature))
}

/// The push event of `digest` in `account`, delivered again (a re-judgement).
fn push_event(id: &str, account: &str, repository: &str, digest: &str) -> InboundMessage {
    let mut body: Value = serde_json::from_str(&envelope(
        id,
        "2026-11-20T10:00:00Z",
        "ECR Image Action",
        image_action(repository, digest, "PUSH", Some("v1")),
    ))
    .expect("envelope");
    body["account"] = json!(account);
    InboundMessage {
        source: "sqs",
        message_id: Some(id.to_owned()),
        body: body.to_string().into_bytes(),
        format: ecr_audit::parse::InputFormat::Envelope,
        sent_at: None,
    }
}

async fn judge_again(pipeline: &Pipeline, app: &TestApp, repository: &str, digest: &str, n: u32) {
    let id = format!("{}again-{n}", app.prefix);
    pipeline
        .process_batch(&[push_event(&id, &app.account, repository, digest)])
        .await;
}

async fn row(app: &TestApp, repository: &str, digest: &str) -> ImageRow {
    app.store
        .images(Some(repository))
        .await
        .expect("images")
        .into_iter()
        .find(|i| i.digest == digest)
        .expect("image row")
}

fn failed_checks(row: &ImageRow) -> Vec<String> {
    row.signature
        .verifications
        .iter()
        .filter_map(|v| match &v.result {
            VerificationResult::Rejected { check, .. } => Some(check.clone()),
            _ => None,
        })
        .collect()
}

/// Copies `digest`'s managed signature (manifest and envelope) onto `other` in `target`.
async fn copy_signature(
    app: &TestApp,
    signed_repository: &str,
    digest: &str,
    target: &str,
    other_subject: &Value,
) {
    let artifact = app
        .store
        .images(Some(signed_repository))
        .await
        .expect("images")
        .into_iter()
        .find(|i| i.artifact_of.as_deref() == Some(digest))
        .expect("the managed signature artifact");
    let found = app
        .ecr
        .batch_get_image()
        .repository_name(signed_repository)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(&artifact.digest)
                .build(),
        )
        .send()
        .await
        .expect("batch get image");
    let text = found.images()[0]
        .image_manifest()
        .expect("manifest")
        .to_owned();
    let mut manifest: Value = serde_json::from_str(&text).expect("json");
    let registry = app.registry(&Arc::new(Metrics::new()));
    for layer in manifest["layers"].as_array().expect("layers").clone() {
        let key = key(app, signed_repository);
        let digest = layer["digest"].as_str().expect("digest");
        let Fact::Known(BlobRead::Bytes(bytes)) =
            registry.blob(&key, digest, 1 << 20).await.expect("blob")
        else {
            panic!("envelope {digest} not readable");
        };
        ensure_blob(app, target, &bytes).await;
    }
    ensure_blob(app, target, b"{}").await;
    manifest["subject"] = other_subject.clone();
    put_manifest(app, target, &manifest, None).await;
}

fn key(app: &TestApp, repository: &str) -> ecr_audit::domain::RepositoryKey {
    ecr_audit::domain::RepositoryKey {
        account: ecr_audit::domain::AccountId::parse(&app.account).expect("account"),
        region: ecr_audit::domain::Region::parse(REGION).expect("region"),
        name: ecr_audit::domain::RepositoryName::parse(repository).expect("name"),
    }
}

/// A real managed signature is `SIGNED` with the Signer identity; copied onto another digest
/// it is a digest mismatch; a revoked job and a revoked profile version are `revoked`; a
/// digest whose envelope was verified already is judged again without reading it.
#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn managed_signatures_are_verified_and_revocations_untrust_them() {
    let mut app = TestApp::new_in_own_account().await;
    // Inside the grace window a push event leaves the Cosign tag look-up to later judgements
    // (docs/PERFORMANCE.md): a long window keeps the call counts below independent of load.
    app.signing_grace_ms = 120_000;
    let (profile_name, profile_arn) = managed_signing(&app, "managed").await;
    let signed_repository = app.create_repository("managed").await;
    let plain = app.create_repository("plain").await;
    app.start_worker().await;

    let first = push_image(
        &app.ecr,
        &signed_repository,
        "v1",
        &format!("{}1", app.prefix),
    )
    .await;
    let second = push_image(
        &app.ecr,
        &signed_repository,
        "v2",
        &format!("{}2", app.prefix),
    )
    .await;
    let signed = wait_for(&app, &signed_repository, &first, "SIGNED").await;
    // Named by the Signer profile its verified signature names (not by managed signing's
    // status, which is not read once a signature verified).
    assert_eq!(signed.signature.sources, [format!("signer:{profile_arn}")]);
    let (version_arn, job_arn) = signer_identity(&signed);
    assert!(
        version_arn.starts_with(&format!("{profile_arn}/")),
        "{version_arn}"
    );
    assert!(job_arn.contains(":/signing-jobs/"), "{job_arn}");
    wait_for(&app, &signed_repository, &second, "SIGNED").await;

    // The same real signature copied onto another digest: a digest mismatch.
    let victim = push_image(&app.ecr, &plain, "v1", &format!("{}victim", app.prefix)).await;
    let victim_subject = descriptor(&app, &plain, &victim).await;
    copy_signature(&app, &signed_repository, &first, &plain, &victim_subject).await;
    let copied = wait_for(&app, &plain, &victim, "UNTRUSTED").await;
    assert_eq!(
        failed_checks(&copied),
        ["digest_mismatch"],
        "{:?}",
        copied.signature
    );
    app.stop_worker().await;

    // Judged again by one pipeline: the second time costs neither the manifest, the envelope,
    // nor Signer (kept in Postgres and cached).
    let pipeline = app.pipeline();
    judge_again(&pipeline, &app, &signed_repository, &second, 1).await;
    emulator_requests(&app.account, true).await;
    judge_again(&pipeline, &app, &signed_repository, &second, 2).await;
    let counted = calls(&app.account).await;
    for operation in [
        "ecr.BatchGetImage",
        "ecr.GetDownloadUrlForLayer",
        "signer.GetRevocationStatus",
        "signer.GetSigningProfile",
        "ecr.DescribeImageSigningStatus",
    ] {
        assert_eq!(counted.get(operation), None, "{operation}: {counted:?}");
    }
    let total: f64 = counted.values().sum();
    println!("AWS calls re-judging a digest whose envelope is verified: {total} {counted:?}");
    assert!(total <= 2.0, "{counted:?}");

    // A fresh signed push judged by the same (warm) pipeline: what verifying costs.
    let third = push_image(
        &app.ecr,
        &signed_repository,
        "v3",
        &format!("{}3", app.prefix),
    )
    .await;
    app.eventually(
        "managed signing COMPLETE",
        Duration::from_secs(20),
        || async {
            let status = app
                .ecr
                .describe_image_signing_status()
                .repository_name(&signed_repository)
                .image_id(
                    aws_sdk_ecr::types::ImageIdentifier::builder()
                        .image_digest(&third)
                        .build(),
                )
                .send()
                .await
                .ok()?;
            status
                .signing_statuses()
                .iter()
                .any(|s| s.status().map(|x| x.as_str()) == Some("COMPLETE"))
                .then_some(())
        },
    )
    .await;
    emulator_requests(&app.account, true).await;
    judge_again(&pipeline, &app, &signed_repository, &third, 3).await;
    let counted = calls(&app.account).await;
    let total: f64 = counted.values().sum();
    println!("AWS calls judging a fresh signed push (warm caches): {total} {counted:?}");
    assert_eq!(
        row(&app, &signed_repository, &third)
            .await
            .signature
            .status
            .as_deref(),
        Some("SIGNED")
    );
    // At most five: DescribeImages, ListImageReferrers, the signature manifest, the envelope's
    // URL and Signer's revocation answer; managed signing's status is not needed once the
    // signature verified.
    assert_eq!(
        counted.get("ecr.DescribeImageSigningStatus"),
        None,
        "{counted:?}"
    );
    assert!(total <= 5.0, "{counted:?}");

    // The job of the first signature is revoked: UNTRUSTED, revoked.
    let job_id = job_arn.rsplit('/').next().expect("job id");
    let signer = aws_sdk_signer::Client::new(&app.sdk);
    signer
        .revoke_signature()
        .job_id(job_id)
        .reason("signed by mistake")
        .send()
        .await
        .expect("revoke signature");
    let fresh = app.pipeline();
    judge_again(&fresh, &app, &signed_repository, &first, 4).await;
    let revoked = row(&app, &signed_repository, &first).await;
    assert_eq!(
        revoked.signature.status.as_deref(),
        Some("UNTRUSTED"),
        "{:?}",
        revoked.signature
    );
    assert_eq!(
        failed_checks(&revoked),
        ["revoked"],
        "{:?}",
        revoked.signature
    );
    assert!(
        revoked
            .signature
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains(&job_arn),
        "{:?}",
        revoked.signature.reason
    );

    // The profile version is revoked from before the second signature: UNTRUSTED, revoked.
    let version = version_arn.rsplit('/').next().expect("version");
    signer
        .revoke_signing_profile()
        .profile_name(&profile_name)
        .profile_version(version)
        .reason("key compromised")
        .effective_time(aws_smithy_types::DateTime::from(
            std::time::SystemTime::now() - Duration::from_secs(3600),
        ))
        .send()
        .await
        .expect("revoke profile");
    let fresh = app.pipeline();
    judge_again(&fresh, &app, &signed_repository, &second, 5).await;
    let revoked = row(&app, &signed_repository, &second).await;
    assert_eq!(
        revoked.signature.status.as_deref(),
        Some("UNTRUSTED"),
        "{:?}",
        revoked.signature
    );
    assert!(
        failed_checks(&revoked).contains(&"revoked".to_owned()),
        "{:?}",
        revoked.signature
    );
    // The events of the pushes above, consumed before the test's world is taken down.
    app.start_worker().await;
    app.wait_for_drain().await;
    app.finish().await;
}

/// A changed trust policy re-verifies every current digest at the worker's start, and the
/// transition's evidence names the policy version it was reached under.
#[tokio::test]
async fn a_changed_trust_policy_moves_verdicts_with_evidence() {
    let mut app = TestApp::new().await;
    let repository = app.create_repository("policy").await;
    let digest = push_image(&app.ecr, &repository, "v1", &format!("{}p", app.prefix)).await;
    let subject = descriptor(&app, &repository, &digest).await;
    let signed = Signed::make(std::slice::from_ref(&subject));
    let other = signed.identity("other");
    let before = trust_for(&signed, &[other.as_str()]).await;
    app.trust = Arc::new(before.load());
    app.start_worker().await;
    let envelope = signed.read("0-trusted.jws");
    push_notation(
        &app,
        &repository,
        &subject,
        &envelope,
        "application/jose+json",
    )
    .await;
    let untrusted = wait_for(&app, &repository, &digest, "UNTRUSTED").await;
    assert!(
        untrusted
            .signature
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("identity_not_trusted"),
        "{:?}",
        untrusted.signature.reason
    );
    app.stop_worker().await;

    let trusted = signed.identity("trusted");
    let after = trust_for(&signed, &[trusted.as_str()]).await;
    app.trust = Arc::new(after.load());
    let version = app.trust.version();
    assert_ne!(
        Some(version.as_str()),
        untrusted.signature.policy_version.as_deref()
    );
    app.start_worker().await;
    let now_signed = wait_for(&app, &repository, &digest, "SIGNED").await;
    assert_eq!(
        now_signed.signature.policy_version.as_deref(),
        Some(version.as_str())
    );

    let evidence: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM evidence WHERE kind = 'signature_transition' AND digest = $1 ORDER BY seq",
    )
    .bind(&digest)
    .fetch_all(&app.pool)
    .await
    .expect("evidence");
    let last = evidence.last().expect("a transition");
    assert_eq!(last["from"], "UNTRUSTED", "{last}");
    assert_eq!(last["to"], "SIGNED", "{last}");
    assert_eq!(last["policy_version"], json!(version), "{last}");
    assert_eq!(last["cause_kind"], "signature_recheck", "{last}");
    assert_eq!(last["verifications"][0]["result"], "verified", "{last}");
    app.finish().await;
}
