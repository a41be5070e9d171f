//! Every requested change is evidence: a denied attempt to weaken a control is recorded with
//! its actor and what it asked for, and changes no posture; a change undone within seconds is
//! two transitions, each by the caller whose request made it.

use aws_sdk_ecr::types::ImageTagMutability;
use serde_json::{Value, json};

use crate::helpers::{ACCOUNT, TestApp, as_caller, cloudtrail, envelope, image_action, push_image};

const MALLORY: &str = "arn:aws:sts::123456789012:assumed-role/AdminSSO/mallory";

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_denied_attempt_to_make_a_repository_mutable_is_evidence_and_changes_nothing() {
    let mut app = TestApp::new().await;
    let repository = app.create_repository("payments-api").await;
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&repository)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("immutable");
    app.start_worker().await;
    app.wait_for_drain().await;
    let ecr2 = |rows: &[ecr_audit::readmodel::PostureRow]| {
        rows.first().map(|r| r.controls["ECR.2"].status.clone())
    };
    let before = app.store.posture(Some(&repository)).await.expect("posture");
    assert_eq!(ecr2(&before).as_deref(), Some("PASS"));

    // What CloudTrail records when IAM refuses mallory's PutImageTagMutability.
    let event_id = format!("{}denied", app.prefix);
    let mut detail = cloudtrail(
        &event_id,
        &chrono::Utc::now().to_rfc3339(),
        "PutImageTagMutability",
        json!({"repositoryName": repository, "registryId": ACCOUNT, "imageTagMutability": "MUTABLE"}),
        MALLORY,
    );
    detail["errorCode"] = json!("AccessDenied");
    detail["errorMessage"] = json!(format!(
        "User: {MALLORY} is not authorized to perform: ecr:PutImageTagMutability"
    ));
    app.put_event("AWS API Call via CloudTrail", detail).await;
    app.wait_for_drain().await;

    let records: Vec<(String, String, Option<String>, Value)> =
        sqlx::query_as("SELECT kind, outcome, actor, detail FROM evidence WHERE event_id = $1")
            .bind(&event_id)
            .fetch_all(&app.pool)
            .await
            .expect("evidence");
    let [(kind, outcome, actor, detail)] = records.as_slice() else {
        panic!("one record for the attempt: {records:#?}");
    };
    assert_eq!(
        (kind.as_str(), outcome.as_str()),
        ("failed_api_call", "processed")
    );
    assert_eq!(actor.as_deref(), Some(MALLORY));
    let attempt = &detail["change"];
    assert_eq!(attempt["type"], "failed_api_call", "{detail}");
    assert_eq!(attempt["error_code"], "AccessDenied", "{detail}");
    assert_eq!(attempt["repository"], json!(repository), "{detail}");
    assert_eq!(
        attempt["requested"],
        json!({"name": "PutImageTagMutability", "image_tag_mutability": "MUTABLE"}),
        "{detail}"
    );

    // Posture is untouched: no transition, ECR.2 still PASS.
    let after = app.store.posture(Some(&repository)).await.expect("posture");
    assert_eq!(ecr2(&after).as_deref(), Some("PASS"));
    let transitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM evidence WHERE kind = 'control_transition'
            AND detail->>'cause_event_id' = $1",
    )
    .bind(&event_id)
    .fetch_one(&app.pool)
    .await
    .expect("transitions");
    assert_eq!(transitions, 0);
    app.finish().await;
}

const BOB: &str = "arn:aws:sts::123456789012:assumed-role/AdminSSO/bob";

/// Sets a repository's tag mutability as `actor` (the emulator records them in CloudTrail).
async fn set_mutability(app: &TestApp, repository: &str, mode: ImageTagMutability, actor: &str) {
    app.ecr
        .put_image_tag_mutability()
        .repository_name(repository)
        .image_tag_mutability(mode)
        .customize()
        .mutate_request(as_caller(actor))
        .send()
        .await
        .expect("tag mutability");
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_control_weakened_and_restored_within_seconds_is_two_transitions_by_their_callers() {
    let mut app = TestApp::new().await;
    let repository = app.create_repository("prod-api").await;
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&repository)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("immutable");
    push_image(&app.ecr, &repository, "prod", "v1").await;
    // Alert rows are queued (the test reads the outbox).
    app.alert_bus = Some(format!("{}alerts", app.prefix));
    app.start_worker().await;
    app.wait_for_drain().await;
    let seen: i64 = sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM evidence")
        .fetch_one(&app.pool)
        .await
        .expect("seq");

    // MUTABLE, overwrite `prod`, IMMUTABLE again: the final state is what it was before.
    set_mutability(&app, &repository, ImageTagMutability::Mutable, MALLORY).await;
    let overwritten = push_image(&app.ecr, &repository, "prod", "v2").await;
    set_mutability(&app, &repository, ImageTagMutability::Immutable, BOB).await;
    app.wait_for_drain().await;

    let transitions: Vec<(Option<String>, Value)> = sqlx::query_as(
        "SELECT actor, detail FROM evidence
          WHERE kind = 'control_transition' AND repository = $1 AND seq > $2
            AND detail->>'control' = 'ECR.2'
          ORDER BY seq",
    )
    .bind(&repository)
    .bind(seen)
    .fetch_all(&app.pool)
    .await
    .expect("transitions");
    let steps: Vec<(Option<&str>, &str, &str)> = transitions
        .iter()
        .map(|(actor, detail)| {
            (
                actor.as_deref(),
                detail["from"]["status"].as_str().unwrap_or_default(),
                detail["to"]["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [(Some(MALLORY), "PASS", "FAIL"), (Some(BOB), "FAIL", "PASS")],
        "{transitions:#?}"
    );
    // The restoring transition names both callers and how long ECR.2 stayed failed.
    let restored = &transitions[1].1["regressed_and_restored"];
    assert_eq!(restored["regressed_by"], MALLORY, "{restored}");
    assert_eq!(restored["restored_by"], BOB, "{restored}");
    let seconds = restored["seconds"].as_i64().expect("seconds");
    assert!((0..=60).contains(&seconds), "{restored}");
    assert!(transitions[0].1.get("regressed_and_restored").is_none());
    // It pages on its own (beside the regression's alert), and is counted.
    let alerts: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM alert_outbox
          WHERE detail->>'repository' = $1
            AND detail_type = 'ECR Audit Control Regressed And Restored'",
    )
    .bind(&repository)
    .fetch_all(&app.pool)
    .await
    .expect("alerts");
    let [alert] = alerts.as_slice() else {
        panic!("one regressed-and-restored alert: {alerts:#?}");
    };
    assert_eq!(alert["alert"], "CONTROL_REGRESSED_AND_RESTORED");
    assert_eq!(alert["control"], "ECR.2");
    assert_eq!(
        (&alert["regressed_by"], &alert["restored_by"]),
        (&json!(MALLORY), &json!(BOB))
    );
    let metrics = app.scrape().await;
    assert!(
        metrics.contains(r#"ecr_audit_control_regressed_and_restored_total{control="ECR.2"} 1"#),
        "{metrics}"
    );
    let rows = app.store.posture(Some(&repository)).await.expect("posture");
    assert_eq!(rows[0].controls["ECR.2"].status, "PASS");
    assert_eq!(rows[0].controls["ECR.2"].changed_by.as_deref(), Some(BOB));
    let images = app.store.images(Some(&repository)).await.expect("images");
    assert!(images.iter().any(|i| i.digest == overwritten), "{images:?}");
    app.finish().await;
}

/// A CloudTrail `PutImageTagMutability` by `actor` at `time`, as a raw queue message.
fn mutability_call(
    app: &TestApp,
    id: &str,
    time: &str,
    repository: &str,
    mode: &str,
    actor: &str,
) -> String {
    let id = format!("{}{id}", app.prefix);
    envelope(
        &id,
        time,
        "AWS API Call via CloudTrail",
        cloudtrail(
            &id,
            time,
            "PutImageTagMutability",
            json!({"repositoryName": repository, "registryId": ACCOUNT, "imageTagMutability": mode}),
            actor,
        ),
    )
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_push_between_a_weakening_and_its_restore_is_recorded_under_mutable_tags_in_any_order() {
    let mut app = TestApp::new().await;
    // Only the messages this test sends arrive, in the order it chooses.
    app.remove_rules().await;
    app.start_worker().await;
    let orders: [[usize; 3]; 4] = [[0, 1, 2], [1, 0, 2], [1, 2, 0], [2, 1, 0]];
    for (n, order) in orders.iter().enumerate() {
        let repository = app.create_repository(&format!("order-{n}")).await;
        set_mutability(&app, &repository, ImageTagMutability::Immutable, BOB).await;
        let start = chrono::Utc::now().to_rfc3339();
        app.send_raw(&mutability_call(
            &app,
            &format!("{n}-start"),
            &start,
            &repository,
            "IMMUTABLE",
            BOB,
        ))
        .await;
        app.wait_for_drain().await;
        // Whole seconds apart, as CloudTrail times are.
        let pause = std::time::Duration::from_millis(1_500);
        tokio::time::sleep(pause).await;
        let weakened = chrono::Utc::now().to_rfc3339();
        set_mutability(&app, &repository, ImageTagMutability::Mutable, MALLORY).await;
        tokio::time::sleep(pause).await;
        let pushed_time = chrono::Utc::now().to_rfc3339();
        let digest = push_image(
            &app.ecr,
            &repository,
            "prod",
            &format!("{}-{n}", app.prefix),
        )
        .await;
        tokio::time::sleep(pause).await;
        let restored = chrono::Utc::now().to_rfc3339();
        set_mutability(&app, &repository, ImageTagMutability::Immutable, BOB).await;

        let messages = [
            mutability_call(
                &app,
                &format!("{n}-weaken"),
                &weakened,
                &repository,
                "MUTABLE",
                MALLORY,
            ),
            envelope(
                &format!("{}{n}-push", app.prefix),
                &pushed_time,
                "ECR Image Action",
                image_action(&repository, &digest, "PUSH", Some("prod")),
            ),
            mutability_call(
                &app,
                &format!("{n}-restore"),
                &restored,
                &repository,
                "IMMUTABLE",
                BOB,
            ),
        ];
        for &i in order {
            app.send_raw(&messages[i]).await;
            app.wait_for_drain().await;
        }
        let images = app.store.images(Some(&repository)).await.expect("images");
        let image = images
            .iter()
            .find(|i| i.digest == digest)
            .unwrap_or_else(|| panic!("{order:?}: the push is stored: {images:?}"));
        assert_eq!(
            (image.tag_immutability.as_deref(), image.tag_protected),
            (Some("MUTABLE"), Some(false)),
            "order {order:?}: pushed while tags were mutable: {image:?}"
        );
        // The history (`--at`) replays the same, from the evidence of the re-derivation.
        let (history, _) =
            ecr_audit::evidence::history::as_of(app.store.pool(), chrono::Utc::now())
                .await
                .expect("history");
        let replayed = history.images(Some(&repository));
        let replayed = replayed
            .iter()
            .find(|i| i.digest == digest)
            .expect("replayed");
        assert_eq!(
            (replayed.tag_immutability.as_deref(), replayed.tag_protected),
            (Some("MUTABLE"), Some(false)),
            "order {order:?}: {replayed:?}"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn a_public_policy_set_and_deleted_within_seconds_is_two_transitions_and_a_restore() {
    let mut app = TestApp::new().await;
    let repository = app.create_repository("shared-api").await;
    app.start_worker().await;
    app.wait_for_drain().await;
    let public = json!({"Version": "2012-10-17", "Statement": [{"Sid": "open", "Effect": "Allow",
        "Principal": "*", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]});
    app.ecr
        .set_repository_policy()
        .repository_name(&repository)
        .policy_text(public.to_string())
        .customize()
        .mutate_request(as_caller(MALLORY))
        .send()
        .await
        .expect("set policy");
    app.ecr
        .delete_repository_policy()
        .repository_name(&repository)
        .customize()
        .mutate_request(as_caller(BOB))
        .send()
        .await
        .expect("delete policy");
    app.wait_for_drain().await;

    // Both re-reads see no policy; the requests themselves say public, then none.
    let transitions: Vec<(Option<String>, Value)> = sqlx::query_as(
        "SELECT actor, detail FROM evidence
          WHERE kind = 'control_transition' AND repository = $1 AND detail->>'control' = 'ECRA.1'
            AND detail->'from' IS NOT NULL AND detail->>'from' <> 'null'
          ORDER BY seq",
    )
    .bind(&repository)
    .fetch_all(&app.pool)
    .await
    .expect("transitions");
    let steps: Vec<(Option<&str>, &str, &str)> = transitions
        .iter()
        .map(|(actor, detail)| {
            (
                actor.as_deref(),
                detail["from"]["status"].as_str().unwrap_or_default(),
                detail["to"]["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [(Some(MALLORY), "PASS", "FAIL"), (Some(BOB), "FAIL", "PASS")],
        "{transitions:#?}"
    );
    let restored = &transitions[1].1["regressed_and_restored"];
    assert_eq!(
        (&restored["regressed_by"], &restored["restored_by"]),
        (&json!(MALLORY), &json!(BOB)),
        "{restored}"
    );
    let rows = app.store.posture(Some(&repository)).await.expect("posture");
    assert_eq!(rows[0].controls["ECRA.1"].status, "PASS");
    app.finish().await;
}
