//! Exceptions through the real worker (docs/EXCEPTIONS.md): an accepted risk turns a failing
//! ECR.2 into `EXCEPTED` with its approver in posture, images, OCSF and the metrics; revoking
//! it or reaching its expiry re-opens the finding with an evidence record and an alert; the
//! reviewed file is loaded with its hash in the evidence, and editing it changes the set.

use std::path::Path;
use std::time::Duration;

use aws_sdk_ecr::types::ImageTagMutability;
use chrono::Utc;
use serde_json::{Value, json};

use crate::alerts::{drain, route_alerts_to_queue};
use crate::cli::ecr_audit;
use crate::helpers::{TestApp, metric_value, push_image, sha256_hex};

const WAIT: Duration = Duration::from_secs(30);
const APPROVER: &str = "security-lead@example.com";

async fn create(app: &TestApp, name: &str, mutability: ImageTagMutability) -> String {
    let repository = app.repo(name);
    app.ecr
        .create_repository()
        .repository_name(&repository)
        .image_tag_mutability(mutability)
        .send()
        .await
        .expect("create repository");
    repository
}

/// Waits until the repository's ECR.2 is reported with `status`; answers its view as JSON.
async fn ecr2_becomes(app: &TestApp, repository: &str, status: &str) -> Value {
    app.eventually(&format!("{repository} ECR.2 {status}"), WAIT, || async {
        let rows = app.store.posture(Some(repository)).await.ok()?;
        let view = rows.first()?.controls.get("ECR.2")?.clone();
        (view.status == status).then(|| serde_json::to_value(&view).unwrap_or_default())
    })
    .await
}

/// Runs the CLI; answers stdout, failing the test with stderr when it fails. Off the test's
/// runtime thread: the in-process worker shares it, and a command waiting on the evidence head
/// the worker holds mid-batch would otherwise wait for ever.
async fn run_ok(app: &TestApp, args: &[&str]) -> String {
    let mut command = ecr_audit(app);
    command.args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `exception_changed` records, oldest first, as (event id, detail).
async fn exception_records(app: &TestApp) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT event_id, detail FROM evidence WHERE kind = 'exception_changed' ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .expect("evidence")
}

/// Waits for `count` exception alert events on the inbox queue (the unsigned pushes' alerts
/// arrive there too, and are left aside); a few seconds more show that no other one follows.
async fn alerts(app: &TestApp, inbox: &str, count: usize) -> Vec<Value> {
    let mut received = Vec::new();
    let started = std::time::Instant::now();
    let keep = |events: Vec<Value>| {
        events
            .into_iter()
            .filter(|e| e["detail-type"] != "ECR Audit Signature Alert")
            .collect::<Vec<_>>()
    };
    while received.len() < count {
        assert!(started.elapsed() < WAIT, "alerts missing: {received:#?}");
        received.extend(keep(drain(app, inbox).await));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    received.extend(keep(drain(app, inbox).await));
    assert_eq!(received.len(), count, "{received:#?}");
    received
}

fn expires_in(duration: chrono::Duration) -> String {
    (Utc::now() + duration).to_rfc3339()
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn an_exception_excepts_ecr2_everywhere_and_its_end_reopens_the_finding_with_an_alert() {
    let mut app = TestApp::new().await;
    let bus = format!("{}alerts", app.prefix);
    let (inbox_queue, _rule) = route_alerts_to_queue(&app, &bus).await;
    let inbox = inbox_queue.url.clone();
    app.alert_bus = Some(bus);
    app.start_worker().await;

    let legacy = create(&app, "legacy-app", ImageTagMutability::Mutable).await;
    let digest = push_image(&app.ecr, &legacy, "v1", "exceptions-1").await;
    ecr2_becomes(&app, &legacy, "FAIL").await;

    // Added on the command line: ECR.2 of the MUTABLE repository is EXCEPTED, the verdict
    // (FAIL, with its reason) kept beside the exception's approver, reason and expiry.
    let pattern = format!("{}legacy-*", app.prefix);
    let added = run_ok(
        &app,
        &[
            "exception",
            "add",
            "--repository",
            &pattern,
            "--control",
            "ECR.2",
            "--reason",
            "the deploy tool re-tags latest",
            "--approver",
            APPROVER,
            "--expires",
            &expires_in(chrono::Duration::days(30)),
        ],
    )
    .await;
    assert!(added.starts_with("EX-1: ECR.2 excepted for"), "{added}");
    assert!(
        added.contains("(1 failing repositories now EXCEPTED)"),
        "{added}"
    );
    let posture: Value = serde_json::from_str(
        &run_ok(
            &app,
            &["posture", "--format", "json", "--repository", &legacy],
        )
        .await,
    )
    .expect("posture JSON");
    let ecr2 = &posture[0]["controls"]["ECR.2"];
    assert_eq!(ecr2["status"], "EXCEPTED", "{ecr2}");
    assert_eq!(ecr2["verdict"], "FAIL", "{ecr2}");
    assert!(
        ecr2["reason"].as_str().unwrap_or("").contains("MUTABLE"),
        "{ecr2}"
    );
    assert_eq!(ecr2["exception"]["id"], "EX-1");
    assert_eq!(ecr2["exception"]["approver"], APPROVER);
    assert_eq!(
        ecr2["exception"]["reason"],
        "the deploy tool re-tags latest"
    );
    assert_eq!(posture[0]["controls"]["ECR.1"].get("exception"), None);
    let table = run_ok(&app, &["posture", "--repository", &legacy]).await;
    assert!(table.contains("EXCEPTED"), "{table}");
    assert!(
        table.contains(&format!("[excepted: EX-1 by {APPROVER} until")),
        "{table}"
    );

    let images: Value = serde_json::from_str(
        &run_ok(
            &app,
            &["images", "--format", "json", "--repository", &legacy],
        )
        .await,
    )
    .expect("images JSON");
    assert_eq!(images[0]["digest"], digest.as_str());
    assert_eq!(images[0]["exceptions"][0]["control"], "ECR.2");
    assert_eq!(images[0]["exceptions"][0]["approver"], APPROVER);
    assert_eq!(images[0]["exceptions"][0]["id"], "EX-1");
    // Replayed from the evidence (`--at`), the exception is in force just the same.
    let now = Utc::now().to_rfc3339();
    for (view, live) in [("posture", &posture), ("images", &images)] {
        let replayed: Value = serde_json::from_str(
            &run_ok(
                &app,
                &[
                    view,
                    "--format",
                    "json",
                    "--repository",
                    &legacy,
                    "--at",
                    &now,
                ],
            )
            .await,
        )
        .expect("--at JSON");
        // The replay keeps no signature policy version (docs/EVIDENCE.md): compare what the
        // exceptions change.
        let shown = |rows: &Value| match view {
            "posture" => rows[0]["controls"].clone(),
            _ => rows[0]["exceptions"].clone(),
        };
        assert_eq!(shown(&replayed), shown(live), "{view} --at");
    }

    let text = app.scrape().await;
    let gauge = |text: &str, status| {
        metric_value(
            text,
            "ecr_audit_control_repositories",
            &[("control", "ECR.2"), ("status", status)],
        )
    };
    assert_eq!(gauge(&text, "EXCEPTED"), Some(1.0), "{text}");
    assert_eq!(gauge(&text, "FAIL"), Some(0.0), "{text}");

    // A regression under the exception is recorded and reported EXCEPTED, and pages no one.
    let stable = create(&app, "legacy-stable", ImageTagMutability::Immutable).await;
    ecr2_becomes(&app, &stable, "PASS").await;
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&stable)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .send()
        .await
        .expect("regress");
    ecr2_becomes(&app, &stable, "EXCEPTED").await;
    app.wait_for_drain().await;
    let regression: (Value,) = sqlx::query_as(
        "SELECT detail FROM evidence WHERE kind = 'control_transition' AND repository = $1
          ORDER BY seq DESC LIMIT 1",
    )
    .bind(&stable)
    .fetch_one(&app.pool)
    .await
    .expect("transition");
    assert_eq!(regression.0["to"]["status"], "FAIL");
    assert_eq!(regression.0["exception"]["id"], "EX-1");

    // OCSF: the control still fails (honest compliance), the finding is Suppressed, with who
    // approved it; the export validates against OCSF 1.3.0.
    let dir = tempfile::tempdir().expect("tempdir");
    let ocsf = dir.path().join("export.ocsf.jsonl");
    let path = ocsf.to_str().expect("path");
    run_ok(&app, &["export", "--format", "ocsf", "--output", path]).await;
    let lines: Vec<Value> = std::fs::read_to_string(&ocsf)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let applied = lines
        .iter()
        .find(|l| {
            l["finding_info"]["uid"].as_str().is_some_and(|uid| {
                uid.starts_with("exception/EX-1/applied/") && uid.ends_with(&legacy)
            })
        })
        .expect("the applied finding");
    assert_eq!(applied["compliance"]["control"], "ECR.2");
    assert_eq!(applied["compliance"]["status"], "Fail");
    assert_eq!(applied["status_id"], 3);
    assert_eq!(applied["status"], "Suppressed");
    assert!(
        applied["comment"].as_str().unwrap_or("").contains(APPROVER),
        "{applied}"
    );
    let suppressed_regression = lines
        .iter()
        .find(|l| {
            l["finding_info"]["types"][0] == "control_transition"
                && l["resources"][0]["name"] == stable.as_str()
                && l["compliance"]["control"] == "ECR.2"
                && l["compliance"]["status"] == "Fail"
        })
        .expect("the excepted regression");
    assert_eq!(suppressed_regression["status"], "Suppressed");
    validate_ocsf(&ocsf);

    // Revoked: the finding re-opens to FAIL with an evidence record and EXCEPTION_REVOKED.
    run_ok(
        &app,
        &[
            "exception",
            "revoke",
            "EX-1",
            "--reason",
            "the tool was fixed",
            "--by",
            APPROVER,
        ],
    )
    .await;
    ecr2_becomes(&app, &legacy, "FAIL").await;
    ecr2_becomes(&app, &stable, "FAIL").await;
    let revoked = alerts(&app, &inbox, 2).await;
    for event in &revoked {
        assert_eq!(event["detail-type"], "ECR Audit Exception Ended", "{event}");
        let detail = &event["detail"];
        assert_eq!(detail["alert"], "EXCEPTION_REVOKED", "{detail}");
        assert_eq!(detail["status"], "FAIL");
        assert_eq!(detail["previous_status"], "EXCEPTED");
        assert_eq!(detail["control"], "ECR.2");
        assert_eq!(detail["exception"]["id"], "EX-1");
        assert_eq!(detail["exception"]["approver"], APPROVER);
        assert_eq!(detail["exception"]["end_reason"], "the tool was fixed");
    }

    // Expiry: an exception expiring in seconds re-opens the finding by itself.
    let valid = ecr_audit::evaluate::exception::ExceptionRequest {
        repository: legacy.clone(),
        control: "ECR.2".into(),
        reason: "one more day for the migration".into(),
        approver: APPROVER.into(),
        expires: expires_in(chrono::Duration::seconds(4)),
        account: None,
        region: None,
    }
    .validate(Utc::now())
    .expect("valid");
    let (id, applied) = app.store.add_exception(&valid).await.expect("add");
    assert_eq!((id.as_str(), applied), ("EX-2", 1));
    ecr2_becomes(&app, &legacy, "EXCEPTED").await;
    ecr2_becomes(&app, &legacy, "FAIL").await;
    let expired = alerts(&app, &inbox, 1).await;
    assert_eq!(expired.len(), 1, "{expired:#?}");
    let detail = &expired[0]["detail"];
    assert_eq!(detail["alert"], "EXCEPTION_EXPIRED", "{detail}");
    assert_eq!(detail["repository"], legacy.as_str());
    assert_eq!(detail["exception"]["id"], "EX-2");
    app.eventually("the expiry counted", WAIT, || async {
        let text = app.scrape().await;
        (metric_value(
            &text,
            "ecr_audit_exceptions_ended_total",
            &[("cause", "expired")],
        ) == Some(1.0))
        .then_some(())
    })
    .await;

    let ids: Vec<String> = exception_records(&app)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for expected in [
        "exception/EX-1/added".to_owned(),
        "exception/EX-1/revoked".to_owned(),
        format!("exception/EX-1/reopened/123456789012/us-east-1/{legacy}"),
        format!("exception/EX-1/reopened/123456789012/us-east-1/{stable}"),
        "exception/EX-2/expired".to_owned(),
        format!("exception/EX-2/reopened/123456789012/us-east-1/{legacy}"),
    ] {
        assert!(ids.contains(&expected), "{expected} not in {ids:#?}");
    }
    let listed: Value = serde_json::from_str(
        &run_ok(&app, &["exception", "list", "--all", "--format", "json"]).await,
    )
    .expect("list JSON");
    let states: Vec<(&str, &str)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        states.contains(&("EX-1", "revoked")) && states.contains(&("EX-2", "expired")),
        "{states:?}"
    );
    assert!(run_ok(&app, &["verify"]).await.starts_with("OK"));
    app.finish().await;
}

fn validate_ocsf(file: &Path) {
    let python = std::env::var("ECR_AUDIT_EMULATOR_PYTHON")
        .expect("ECR_AUDIT_EMULATOR_PYTHON (the venv of scripts/services)");
    let output = std::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ocsf/validate.py"))
        .arg(file)
        .output()
        .expect("run the OCSF validator");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn file_entry(id: &str, repository: &str, control: &str) -> Value {
    json!({"id": id, "repository": repository, "control": control,
           "reason": "reviewed in PR 42", "approver": "arn:aws:iam::123456789012:role/security",
           "expires": expires_in(chrono::Duration::days(90))})
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn the_exceptions_file_is_loaded_with_its_hash_and_editing_it_changes_the_set() {
    let mut app = TestApp::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("exceptions.json");
    let legacy = create(&app, "legacy-file", ImageTagMutability::Mutable).await;
    let other = create(&app, "other", ImageTagMutability::Mutable).await;
    let first = json!({"exceptions": [file_entry("legacy", &legacy, "ECR.2")]}).to_string();
    std::fs::write(&file, &first).expect("write");
    app.exceptions_file = Some(file.clone());
    app.start_worker().await;

    let view = ecr2_becomes(&app, &legacy, "EXCEPTED").await;
    assert_eq!(view["exception"]["source"], "file");
    assert!(
        view["exception"]["id"]
            .as_str()
            .unwrap_or("")
            .starts_with("file:legacy@")
    );
    ecr2_becomes(&app, &other, "FAIL").await;
    let loaded = app
        .eventually("the file_loaded record", WAIT, || async {
            exception_records(&app)
                .await
                .into_iter()
                .find(|(_, d)| d["action"] == "file_loaded")
        })
        .await;
    assert_eq!(loaded.1["file"]["sha256"], sha256_hex(first.as_bytes()));
    assert_eq!(loaded.1["file"]["entries"], 1);

    // The file is edited: the legacy entry goes, one for the other repository comes.
    let second = json!({"exceptions": [file_entry("other", &other, "ECR.2")]}).to_string();
    std::fs::write(&file, &second).expect("write");
    ecr2_becomes(&app, &other, "EXCEPTED").await;
    ecr2_becomes(&app, &legacy, "FAIL").await;
    let records = exception_records(&app).await;
    let reloaded: Vec<&Value> = records
        .iter()
        .filter(|(_, d)| d["action"] == "file_loaded")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(reloaded.len(), 2, "{records:#?}");
    assert_eq!(reloaded[1]["file"]["sha256"], sha256_hex(second.as_bytes()));
    assert_eq!(
        reloaded[1]["file"]["revoked"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(
        records.iter().any(|(_, d)| d["action"] == "revoked"
            && d["end_reason"] == "removed from the exceptions file")
    );
    app.eventually("the re-opened record", WAIT, || async {
        exception_records(&app)
            .await
            .into_iter()
            .find(|(id, d)| d["action"] == "reopened" && id.ends_with(&legacy))
    })
    .await;

    // An invalid file is refused, counted and logged; the set in force is kept.
    std::fs::write(
        &file,
        json!({"exceptions": [file_entry("bad", &other, "ECR.9")]}).to_string(),
    )
    .expect("write");
    app.eventually("the refused file counted", WAIT, || async {
        let text = app.scrape().await;
        (metric_value(&text, "ecr_audit_exceptions_file_errors_total", &[]) == Some(1.0))
            .then_some(())
    })
    .await;
    ecr2_becomes(&app, &other, "EXCEPTED").await;
    app.finish().await;
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "a table of refused inputs, each with the words the user reads"
)]
async fn invalid_exceptions_are_refused_with_a_clear_message() {
    let app = TestApp::new().await;
    let soon = expires_in(chrono::Duration::days(10));
    let far = expires_in(chrono::Duration::days(400));
    let past = expires_in(chrono::Duration::days(-1));
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "--control",
                "ECR.9",
                "--approver",
                APPROVER,
                "--expires",
                &soon,
            ],
            "unknown control \"ECR.9\"",
        ),
        (
            &["--control", "ECR.2", "--approver", " ", "--expires", &soon],
            "the approver is empty",
        ),
        (
            &[
                "--control",
                "ECR.2",
                "--approver",
                "bob",
                "--expires",
                &soon,
            ],
            "invalid approver",
        ),
        (
            &[
                "--control",
                "ECR.2",
                "--approver",
                APPROVER,
                "--expires",
                &past,
            ],
            "is not in the future",
        ),
        (
            &[
                "--control",
                "ECR.2",
                "--approver",
                APPROVER,
                "--expires",
                &far,
            ],
            "more than 366 days away",
        ),
        (
            &[
                "--control",
                "ECR.2",
                "--approver",
                APPROVER,
                "--expires",
                "next week",
            ],
            "is not a time",
        ),
    ];
    for (flags, expected) in cases {
        let output = ecr_audit(&app)
            .args([
                "exception",
                "add",
                "--repository",
                "team/*",
                "--reason",
                "r",
            ])
            .args(flags)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} accepted");
        assert!(
            stderr.contains("exception refused: ") && stderr.contains(expected),
            "{flags:?}: {stderr}"
        );
    }
    let output = ecr_audit(&app)
        .args([
            "exception",
            "add",
            "--repository",
            "Team/*",
            "--control",
            "ECR.2",
            "--reason",
            "r",
        ])
        .args(["--approver", APPROVER, "--expires", &soon])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid repository pattern"));
    let output = ecr_audit(&app)
        .args(["exception", "revoke", "EX-404", "--reason", "gone"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no exception \"EX-404\" is in force")
    );
    let count: (i64,) = sqlx::query_as("SELECT count(*) FROM control_exceptions")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count.0, 0);
    app.finish().await;
}
