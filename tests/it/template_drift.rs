//! ECRA.5 end to end: repositories a pull-through cache rule created under a repository
//! creation template, one of them changed by hand afterwards (docs/CONTROLS.md, "ECRA.5").

use aws_sdk_ecr::types::{
    EncryptionConfigurationForRepositoryCreationTemplate, EncryptionType, ImageTagMutability,
    RctAppliedFor,
};
use serde_json::{Value, json};

use crate::helpers::TestApp;

const LIFECYCLE: &str = r#"{"rules":[{"rulePriority":1,"description":"untagged","selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}}]}"#;

/// A simulated pull through the cache (docs/EMULATOR.md, `POST /_emulator/pull`): the
/// emulator creates the repository with the template that applies, as ECR does.
async fn pull(app: &TestApp, repository: &str) {
    let url = format!(
        "{}/_emulator/pull",
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL")
    );
    let response = reqwest::Client::new()
        .post(url)
        .json(&json!({"repositoryName": repository, "imageTag": "latest",
                      "account": app.account, "region": "us-east-1"}))
        .send()
        .await
        .expect("emulator pull");
    assert!(response.status().is_success(), "pull {repository}");
    let body: Value = response.json().await.expect("pull answer");
    assert_eq!(body["pullThroughCache"], true, "{body}");
}

/// ECRA.5 status and reason of a repository, from the stored posture.
async fn ecra5(app: &TestApp, name: &str) -> (String, String) {
    let rows = app.store.posture(None).await.expect("posture");
    let row = rows
        .iter()
        .find(|r| r.repository == name)
        .unwrap_or_else(|| panic!("{name} not in posture: {rows:#?}"));
    let view = &row.controls["ECRA.5"];
    (view.status.clone(), view.reason.clone())
}

/// The latest ECRA.5 transition of a repository: (from, to, cause event id).
async fn ecra5_transition(app: &TestApp, repository: &str) -> (Option<String>, String, String) {
    let detail: Value = sqlx::query_scalar(
        "SELECT detail FROM evidence
          WHERE kind = 'control_transition' AND repository = $1 AND detail->>'control' = 'ECRA.5'
          ORDER BY seq DESC LIMIT 1",
    )
    .bind(repository)
    .fetch_one(&app.pool)
    .await
    .expect("ECRA.5 transition evidence");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        detail["from"]["status"].as_str().map(str::to_owned),
        text(&detail["to"]["status"]),
        text(&detail["cause_event_id"]),
    )
}

/// A pull-through cache rule and a template for it: immutable tags, a customer KMS key and a
/// lifecycle policy.
async fn rule_and_template(app: &TestApp, prefix: &str) {
    let key = app
        .kms
        .create_key()
        .send()
        .await
        .expect("customer key")
        .key_metadata
        .and_then(|m| m.arn)
        .expect("key arn");
    app.ecr
        .create_pull_through_cache_rule()
        .ecr_repository_prefix(prefix)
        .upstream_registry_url("registry-1.docker.io")
        .send()
        .await
        .expect("pull-through cache rule");
    app.ecr
        .create_repository_creation_template()
        .prefix(prefix)
        .applied_for(RctAppliedFor::PullThroughCache)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .encryption_configuration(
            EncryptionConfigurationForRepositoryCreationTemplate::builder()
                .encryption_type(EncryptionType::Kms)
                .kms_key(key)
                .build()
                .expect("encryption"),
        )
        .lifecycle_policy(LIFECYCLE)
        .send()
        .await
        .expect("creation template");
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_repository_changed_by_hand_drifts_from_its_creation_template() {
    let mut app = TestApp::new_in_own_account().await;
    app.route_registry_calls(&[
        "CreateRepositoryCreationTemplate",
        "UpdateRepositoryCreationTemplate",
    ])
    .await;
    let prefix = app.repo("hub");
    rule_and_template(&app, &prefix).await;
    app.start_worker().await;
    let changed = format!("{prefix}/library/nginx");
    let kept = format!("{prefix}/library/alpine");
    pull(&app, &changed).await;
    pull(&app, &kept).await;
    app.wait_for_drain().await;
    let matches = format!("matches repository creation template {prefix} (for PULL_THROUGH_CACHE)");
    for name in [&changed, &kept] {
        assert_eq!(
            ecra5(&app, name).await,
            ("PASS".to_owned(), matches.clone())
        );
    }

    // Changed by hand: the CloudTrail calls re-read the repository.
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&changed)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .send()
        .await
        .expect("mutable");
    app.ecr
        .delete_lifecycle_policy()
        .repository_name(&changed)
        .send()
        .await
        .expect("delete lifecycle policy");
    app.wait_for_drain().await;
    let (status, reason) = ecra5(&app, &changed).await;
    assert_eq!(status, "FAIL", "{reason}");
    assert_eq!(
        reason,
        format!(
            "differs from repository creation template {prefix} (for PULL_THROUGH_CACHE): \
             tag mutability is MUTABLE, the template's IMMUTABLE; \
             lifecycle policy is missing, the template sets one"
        )
    );
    assert_eq!(ecra5(&app, &kept).await, ("PASS".to_owned(), matches));
    let (from, to, cause) = ecra5_transition(&app, &changed).await;
    assert_eq!((from.as_deref(), to.as_str()), (Some("PASS"), "FAIL"));
    assert!(!cause.starts_with("reconcile/"), "{cause}");

    // The template itself changes (its CloudTrail event re-reads the registry and re-judges
    // every repository): now MUTABLE, the untouched repository drifts from it.
    app.ecr
        .update_repository_creation_template()
        .prefix(&prefix)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .send()
        .await
        .expect("update template");
    app.wait_for_drain().await;
    let (status, reason) = ecra5(&app, &kept).await;
    assert_eq!(status, "FAIL", "{reason}");
    assert!(
        reason.ends_with("tag mutability is IMMUTABLE, the template's MUTABLE"),
        "{reason}"
    );
    let (from, to, cause) = ecra5_transition(&app, &kept).await;
    assert_eq!((from.as_deref(), to.as_str()), (Some("PASS"), "FAIL"));
    assert!(!cause.starts_with("reconcile/"), "{cause}");
    assert!(
        ecra5(&app, &changed)
            .await
            .1
            .ends_with("lifecycle policy is missing, the template sets one"),
        "only the lifecycle policy still differs"
    );

    // With no event flowing, the changed repository gets the template's lifecycle policy back,
    // written another way (layout, key order): the next
    // sweep finds it matching again.
    app.stop_worker().await;
    app.remove_rules().await;
    app.ecr
        .put_lifecycle_policy()
        .repository_name(&changed)
        .lifecycle_policy_text(
            r#"{ "rules": [ { "action": {"type": "expire"}, "selection": { "countNumber": 7,
                 "countUnit": "days", "countType": "sinceImagePushed", "tagStatus": "untagged" },
                 "description": "untagged", "rulePriority": 1 } ] }"#,
        )
        .send()
        .await
        .expect("lifecycle policy");
    app.reconciler().sweep(&()).await.expect("sweep");
    let (status, reason) = ecra5(&app, &changed).await;
    assert_eq!(status, "PASS", "{reason}");
    let (from, to, cause) = ecra5_transition(&app, &changed).await;
    assert_eq!((from.as_deref(), to.as_str()), (Some("FAIL"), "PASS"));
    assert!(cause.starts_with("reconcile/"), "{cause}");
    app.finish().await;
}
