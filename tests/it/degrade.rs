//! Blinding and partial outages: a repository policy that denies the audit role, an AWS API
//! that answers 5xx for every call. The auditor must say so (a transition, an alert, a metric)
//! and keep judging everything it can still read. Part of the fault step (`faults::degrade::`):
//! the emulator's faults are shared by every test.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_ecr::types::ImageTagMutability;
use ecr_audit::domain::{AccountId, Region};
use ecr_audit::pipeline::Pipeline;
use ecr_audit::source::reconcile::Reconciler;
use ecr_audit::telemetry::SkipReason;
use serde_json::{Value, json};

use super::emulator;
use crate::helpers::{REGION, TestApp, metric_value, push_image};

const LIFECYCLE: &str = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;

/// A sweep over the app's own account whose pipeline (and metrics) the test keeps.
fn sweep_over(app: &TestApp) -> (Arc<Pipeline>, Reconciler) {
    let pipeline = Arc::new(app.pipeline());
    let registry = app.registry(pipeline.metrics());
    let targets = vec![(
        AccountId::parse(&app.account).expect("account"),
        Region::parse(REGION).expect("region"),
    )];
    (
        Arc::clone(&pipeline),
        Reconciler::new(pipeline, registry, targets),
    )
}

/// A repository that passes ECR.2 and ECR.3.
async fn compliant_repository(app: &TestApp, name: &str) -> String {
    let name = app.create_repository(name).await;
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&name)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("immutable");
    app.ecr
        .put_lifecycle_policy()
        .repository_name(&name)
        .lifecycle_policy_text(LIFECYCLE)
        .send()
        .await
        .expect("lifecycle policy");
    name
}

/// What a repository policy that denies the audit role does: every read naming the
/// repository is refused.
async fn deny_audit_role(repository: &str) {
    for operation in [
        "GetLifecyclePolicy",
        "GetRepositoryPolicy",
        "DescribeImages",
        "ListImages",
    ] {
        emulator(
            "/_emulator/faults",
            reqwest::Method::POST,
            json!({"service": "ecr", "operation": operation, "error": "AccessDeniedException",
                   "message": "denied by the repository policy", "repository": repository}),
        )
        .await;
    }
}

async fn statuses(app: &TestApp, repository: &str) -> BTreeMap<String, String> {
    let rows = app.store.posture(Some(repository)).await.expect("posture");
    rows.first()
        .map(|row| {
            row.controls
                .iter()
                .map(|(control, view)| (control.clone(), view.status.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The alert events queued for a repository: (detail-type, detail).
async fn alerts_for(app: &TestApp, repository: &str) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT detail_type, detail FROM alert_outbox WHERE detail->>'repository' = $1 ORDER BY id",
    )
    .bind(repository)
    .fetch_all(&app.pool)
    .await
    .expect("alert outbox")
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_policy_denying_the_audit_role_is_an_alerted_unknown_and_the_sweep_goes_on() {
    let mut app = TestApp::new_in_own_account().await;
    // Alert rows are queued (no publisher runs: the test reads the outbox).
    app.alert_bus = Some(format!("{}alerts", app.prefix));
    let first = compliant_repository(&app, "a-first").await;
    let denied = compliant_repository(&app, "b-denied").await;
    let last = compliant_repository(&app, "c-last").await;
    let (_, reconciler) = sweep_over(&app);
    let report = reconciler.sweep(&()).await.expect("first sweep");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(statuses(&app, &denied).await["ECR.3"], "PASS");

    deny_audit_role(&denied).await;
    let pushed_first = push_image(&app.ecr, &first, "v1", "first").await;
    let pushed_last = push_image(&app.ecr, &last, "v1", "last").await;
    let (pipeline, reconciler) = sweep_over(&app);
    let report = reconciler.sweep(&()).await;
    emulator("/_emulator/faults", reqwest::Method::DELETE, json!({})).await;
    let report = report.expect("the sweep completes despite one unreadable repository");

    // The denied repository is skipped for its images, with the reason.
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(report.skipped[0].repository.ends_with(&denied));
    assert_eq!(report.skipped[0].reason, SkipReason::Unreadable);
    assert!(
        report.skipped[0].detail.contains("AccessDenied"),
        "{report:?}"
    );
    // Repositories before and after it were swept.
    for (repository, digest) in [(&first, &pushed_first), (&last, &pushed_last)] {
        let images = app.store.images(Some(repository)).await.expect("images");
        assert!(images.iter().any(|i| &i.digest == digest), "{images:?}");
    }
    // Its controls that need the refused reads are UNKNOWN, the others still judged.
    let now = statuses(&app, &denied).await;
    assert_eq!(now["ECR.3"], "UNKNOWN", "{now:?}");
    assert_eq!(now["ECR.2"], "PASS", "{now:?}");
    // PASS → UNKNOWN is a transition that pages.
    let alerts = alerts_for(&app, &denied).await;
    let blinded: Vec<&Value> = alerts
        .iter()
        .filter(|(detail_type, _)| detail_type == "ECR Audit Control Unknown")
        .map(|(_, detail)| detail)
        .collect();
    assert!(
        blinded
            .iter()
            .any(|d| d["control"] == "ECR.3" && d["alert"] == "CONTROL_UNKNOWN"),
        "{alerts:#?}"
    );
    assert!(blinded.iter().all(|d| {
        d["previous_status"] == "PASS"
            && d["status"] == "UNKNOWN"
            && d["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("AccessDenied")
    }));
    // The metrics say so: the blinding, the denial, the skip.
    let text = pipeline.metrics().render().expect("metrics");
    let value = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels);
    assert_eq!(
        value("ecr_audit_control_blinded_total", &[("control", "ECR.3")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(
            "ecr_audit_aws_access_denied_total",
            &[("operation", "ecr:GetLifecyclePolicy")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(
            "ecr_audit_reconcile_skipped_repositories_total",
            &[("reason", "unreadable")]
        ),
        Some(1.0),
        "{text}"
    );

    // The deny is lifted: the next sweep reads it again and the UNKNOWNs resolve.
    let (_, reconciler) = sweep_over(&app);
    let report = reconciler.sweep(&()).await.expect("third sweep");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(statuses(&app, &denied).await["ECR.3"], "PASS");
    app.finish().await;
}

const PRIVATE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"team","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/team"},"Action":["ecr:BatchGetImage"]}]}"#;

/// Makes every call of one ECR operation answer HTTP 500, as during a partial outage.
async fn fail_every_call(operation: &str) {
    emulator(
        "/_emulator/faults",
        reqwest::Method::POST,
        json!({"service": "ecr", "operation": operation, "error": "InternalServerException",
               "status": 500}),
    )
    .await;
}

async fn clear_faults() {
    emulator("/_emulator/faults", reqwest::Method::DELETE, json!({})).await;
}

async fn control(app: &TestApp, repository: &str, control: &str) -> Option<(String, String)> {
    let rows = app.store.posture(Some(repository)).await.ok()?;
    let view = rows.first()?.controls.get(control)?;
    Some((view.status.clone(), view.reason.clone()))
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn with_get_signing_configuration_down_events_are_recorded_and_the_unknowns_resolve() {
    let mut app = TestApp::new_in_own_account().await;
    app.start_worker().await;
    fail_every_call("GetSigningConfiguration").await;

    let repository = app.create_repository("outage").await;
    let digest = push_image(&app.ecr, &repository, "v1", "outage").await;
    app.ecr
        .set_repository_policy()
        .repository_name(&repository)
        .policy_text(PRIVATE_POLICY)
        .send()
        .await
        .expect("policy");
    app.wait_for_drain().await;

    // Everything that does not need the signing configuration is judged and recorded.
    let images = app.store.images(Some(&repository)).await.expect("images");
    assert!(images.iter().any(|i| i.digest == digest), "{images:?}");
    let (ecr2, _) = control(&app, &repository, "ECR.2").await.expect("ECR.2");
    assert_eq!(ecr2, "FAIL", "MUTABLE by default");
    let (ecra1, _) = control(&app, &repository, "ECRA.1").await.expect("ECRA.1");
    assert_eq!(ecra1, "PASS");
    // Only the managed-signing coverage needs it: UNKNOWN, with the reason.
    let (ecra3, reason) = control(&app, &repository, "ECRA.3").await.expect("ECRA.3");
    assert_eq!(ecra3, "UNKNOWN", "{reason}");
    assert!(
        reason.contains("unavailable after retries") && reason.contains("GetSigningConfiguration"),
        "{reason}"
    );
    let text = app.scrape().await;
    assert!(
        metric_value(
            &text,
            "ecr_audit_aws_unavailable_total",
            &[("operation", "ecr:GetSigningConfiguration")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    let policy_changes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM evidence WHERE repository = $1 AND kind = 'repository_changed'
            AND detail::text LIKE '%SetRepositoryPolicy%'",
    )
    .bind(&repository)
    .fetch_one(&app.pool)
    .await
    .unwrap_or(0);
    assert!(policy_changes >= 1, "the policy change is evidence");

    // The API answers again: the scheduled re-read resolves ECRA.3 without any event.
    clear_faults().await;
    let resolved = app
        .eventually(
            "ECRA.3 judged again",
            std::time::Duration::from_secs(90),
            || async {
                control(&app, &repository, "ECRA.3")
                    .await
                    .filter(|(status, _)| status != "UNKNOWN")
            },
        )
        .await;
    assert_eq!(
        resolved.0, "FAIL",
        "no signing rule covers it: {resolved:?}"
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM repository_rechecks")
        .fetch_one(&app.pool)
        .await
        .expect("rechecks");
    assert_eq!(pending, 0, "a complete read ends the schedule");
    app.finish().await;
}

#[tokio::test]
async fn with_list_image_referrers_down_pushes_are_recorded_and_signatures_resolve() {
    let mut app = TestApp::new_in_own_account().await;
    app.start_worker().await;
    fail_every_call("ListImageReferrers").await;

    let repository = app.create_repository("referrers").await;
    let digest = push_image(&app.ecr, &repository, "v1", "referrers").await;
    app.wait_for_drain().await;
    // Past the grace window (3 s in tests), re-checked at least once: still not UNSIGNED,
    // since the referrers could hold its signature.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let images = app.store.images(Some(&repository)).await.expect("images");
    let image = images
        .iter()
        .find(|i| i.digest == digest)
        .expect("the push is recorded");
    assert_eq!(
        image.signature.status.as_deref(),
        Some("PENDING"),
        "{image:?}"
    );
    let reason = image.signature.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("undetermined") && reason.contains("ListImageReferrers"),
        "{reason}"
    );
    let (ecr2, _) = control(&app, &repository, "ECR.2").await.expect("ECR.2");
    assert_eq!(ecr2, "FAIL", "repository controls are judged");

    clear_faults().await;
    let status = app
        .eventually(
            "the signature verdict is reached",
            std::time::Duration::from_secs(60),
            || async {
                let images = app.store.images(Some(&repository)).await.ok()?;
                let image = images.into_iter().find(|i| i.digest == digest)?;
                image.signature.status.filter(|status| status != "PENDING")
            },
        )
        .await;
    assert_eq!(status, "UNSIGNED", "nothing signed it");
    app.finish().await;
}

/// Inspector refusing the coverage read (the emulator's faults are shared, hence here): image
/// use stays unknown, the refusal is counted, the sweep and the verdicts go on.
#[tokio::test]
async fn a_refused_coverage_read_leaves_use_unknown_and_moves_a_metric() {
    let app = TestApp::new_in_own_account().await;
    crate::in_use::enhanced_scanning(&app).await;
    let repository = app.create_repository("denied").await;
    let digest = push_image(&app.ecr, &repository, "v1", &app.prefix).await;
    crate::in_use::set_in_use(&app, &repository, &digest, 1).await;
    // Two refusals: the reconcile sweep's read and the coverage sweep's first.
    emulator(
        "/_emulator/faults",
        reqwest::Method::POST,
        json!({"service": "inspector2", "operation": "ListCoverage", "error": "AccessDeniedException", "count": 2}),
    )
    .await;

    let report = app
        .reconciler()
        .sweep(&())
        .await
        .expect("the sweep goes on");
    assert_eq!(report.images, 1, "{report:?}");
    let rows = app.store.images(Some(&repository)).await.expect("images");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].usage.in_use, None, "unknown, not false");
    assert!(
        rows[0].signature.status.is_some(),
        "the digest was judged all the same"
    );

    let metrics = Arc::new(ecr_audit::telemetry::Metrics::new());
    let sweeper = crate::in_use::sweeper(&app, &metrics);
    assert_eq!(sweeper.sweep().await, 0, "nothing written while refused");
    let text = metrics.render().expect("render");
    assert_eq!(
        metric_value(
            &text,
            "ecr_audit_aws_access_denied_total",
            &[("operation", "inspector2:ListCoverage")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        app.store.images(Some(&repository)).await.expect("images")[0]
            .usage
            .in_use,
        None
    );

    // The faults are used up: the next read answers.
    assert_eq!(sweeper.sweep().await, 1);
    let rows = app.store.images(Some(&repository)).await.expect("images");
    assert_eq!(rows[0].usage.in_use, Some(true));
    clear_faults().await;
    app.finish().await;
}
