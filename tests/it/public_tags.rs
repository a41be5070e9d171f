//! ECR.4 end to end: ECR Public repositories' tags, read through the ECR Public API of the
//! emulator, judged on their CloudTrail calls and by reconcile (docs/CONTROLS.md, "ECR.4").

use ecr_audit::evaluate::public::RequiredTagKeys;
use serde_json::Value;

use crate::helpers::{TestApp, metric_value};

fn public_client(app: &TestApp) -> aws_sdk_ecrpublic::Client {
    aws_sdk_ecrpublic::Client::from_conf(
        aws_sdk_ecrpublic::config::Builder::from(&app.sdk)
            .region(aws_sdk_ecrpublic::config::Region::new("us-east-1"))
            .build(),
    )
}

fn tag(key: &str) -> aws_sdk_ecrpublic::types::Tag {
    aws_sdk_ecrpublic::types::Tag::builder()
        .key(key)
        .value("platform")
        .build()
}

/// ECR.4 status and reason of a public repository, from the stored posture.
async fn ecr4(app: &TestApp, name: &str) -> (String, String) {
    let rows = app.store.posture(None).await.expect("posture");
    let row = rows
        .iter()
        .find(|r| r.repository == name && r.region == "ecr-public")
        .unwrap_or_else(|| panic!("{name} not in posture: {rows:#?}"));
    assert_eq!(
        row.controls.keys().collect::<Vec<_>>(),
        ["ECR.4"],
        "a public repository is judged on ECR.4 only"
    );
    let view = &row.controls["ECR.4"];
    (view.status.clone(), view.reason.clone())
}

/// The latest ECR.4 transition of a repository: (from, to, cause event id, actor).
async fn ecr4_transition(app: &TestApp, name: &str) -> (Option<String>, String, String, Value) {
    let (detail, actor): (Value, Option<String>) = sqlx::query_as(
        "SELECT detail, actor FROM evidence
          WHERE kind = 'control_transition' AND repository = $1 AND detail->>'control' = 'ECR.4'
          ORDER BY seq DESC LIMIT 1",
    )
    .bind(name)
    .fetch_one(&app.pool)
    .await
    .expect("ECR.4 transition evidence");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        detail["from"]["status"].as_str().map(str::to_owned),
        text(&detail["to"]["status"]),
        text(&detail["cause_event_id"]),
        actor.map_or(Value::Null, Value::String),
    )
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn public_repositories_need_the_required_tag_and_a_tag_resource_call_moves_them() {
    let mut app = TestApp::new_in_own_account().await;
    app.policy.required_tag_keys = RequiredTagKeys::new(&["team".to_owned()]).expect("keys");
    app.route_public_calls().await;
    app.start_worker().await;
    let public = public_client(&app);
    let untagged = app.repo("tools/untagged");
    let tagged = app.repo("tools/tagged");
    public
        .create_repository()
        .repository_name(&untagged)
        .tags(tag("owner"))
        .send()
        .await
        .expect("create untagged");
    let arn = public
        .create_repository()
        .repository_name(&tagged)
        .tags(tag("team"))
        .send()
        .await
        .expect("create tagged")
        .repository
        .and_then(|r| r.repository_arn)
        .expect("arn");
    // A private repository of the same name is another row, judged without ECR.4.
    let private = app.create_repository("tools/untagged").await;
    app.wait_for_drain().await;

    let (status, reason) = ecr4(&app, &untagged).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("FAIL", "missing required tag key(s) team (required: team)")
    );
    assert_eq!(ecr4(&app, &tagged).await.0, "PASS");
    let rows = app.store.posture(None).await.expect("posture");
    let private_row = rows
        .iter()
        .find(|r| r.repository == private && r.region != "ecr-public")
        .expect("private row");
    assert!(
        !private_row.controls.contains_key("ECR.4"),
        "{private_row:?}"
    );

    // TagResource's CloudTrail event re-reads the repository: PASS, by the caller.
    let untagged_arn = format!("arn:aws:ecr-public::{}:repository/{untagged}", app.account);
    public
        .tag_resource()
        .resource_arn(&untagged_arn)
        .tags(tag("team"))
        .send()
        .await
        .expect("tag");
    app.wait_for_drain().await;
    assert_eq!(ecr4(&app, &untagged).await.0, "PASS");
    let (from, to, cause, actor) = ecr4_transition(&app, &untagged).await;
    assert_eq!((from.as_deref(), to.as_str()), (Some("FAIL"), "PASS"));
    assert!(!cause.starts_with("reconcile/"), "{cause}");
    assert!(
        actor
            .as_str()
            .is_some_and(|a| a.contains("assumed-role/ecr-audit-test")),
        "{actor}"
    );
    let metrics = app.scrape().await;
    assert_eq!(
        metric_value(
            &metrics,
            "ecr_audit_control_repositories",
            &[("control", "ECR.4"), ("status", "PASS")]
        ),
        Some(2.0),
        "{metrics}"
    );

    // With no event flowing, the other loses its tag; the next sweep finds it.
    app.stop_worker().await;
    app.remove_rules().await;
    public
        .untag_resource()
        .resource_arn(&arn)
        .tag_keys("team")
        .send()
        .await
        .expect("untag");
    app.reconciler().sweep(&()).await.expect("sweep");
    assert_eq!(ecr4(&app, &tagged).await.0, "FAIL");
    let (from, to, cause, _) = ecr4_transition(&app, &tagged).await;
    assert_eq!((from.as_deref(), to.as_str()), (Some("PASS"), "FAIL"));
    assert!(cause.starts_with("reconcile/"), "{cause}");
    let again = app.reconciler().sweep(&()).await.expect("sweep");
    assert_eq!(again.total_changes(), 0, "{again:?}");
    ocsf_findings_name_the_public_repository(&app, &tagged).await;
    app.finish().await;
}

/// The OCSF export reports ECR.4 like the other Security Hub controls, on the public
/// repository's own ARN, and validates against the schema.
async fn ocsf_findings_name_the_public_repository(app: &TestApp, name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = crate::evidence::export(&app.pool, dir.path(), "ocsf", &[]);
    let python = std::env::var("ECR_AUDIT_EMULATOR_PYTHON").expect("ECR_AUDIT_EMULATOR_PYTHON");
    let output = std::process::Command::new(&python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ocsf/validate.py"))
        .arg(&path)
        .output()
        .expect("run the OCSF validator");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let failing: Vec<Value> = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|f| f["compliance"]["control"] == "ECR.4" && f["compliance"]["status_id"] == 3)
        .collect();
    let finding = failing
        .iter()
        .find(|f| f["resources"][0]["name"] == name)
        .unwrap_or_else(|| panic!("no failing ECR.4 finding for {name}: {failing:#?}"));
    assert_eq!(
        finding["resources"][0]["type"],
        "AWS::ECR::PublicRepository"
    );
    assert_eq!(
        finding["resources"][0]["uid"],
        format!("arn:aws:ecr-public::{}:repository/{name}", app.account)
    );
    assert_eq!(finding["cloud"]["region"], "us-east-1");
    assert_eq!(finding["severity"], "Low", "{finding}");
}
