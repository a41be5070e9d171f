//! The auditor's period report (issue 20, part 4) from evidence the real worker wrote: its
//! JSON and HTML name the transitions with their callers, the images pushed with their
//! verdicts and the chain head `verify` ends at; the HTML is rendered and screenshotted in a
//! headless Chromium (kept as target/test-artifacts/report.png) and printed to PDF.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};
use serde_json::Value;

use crate::cli::ecr_audit;
use crate::helpers::{TestApp, push_image};

/// Where tests keep what a person should look at after a run.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn chromium() -> String {
    std::env::var("ECR_AUDIT_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

/// Renders `html` in the headless Chromium as a person would see it, into `png`.
fn screenshot(html: &Path, png: &Path) {
    let profile = tempfile::tempdir().expect("profile");
    let output = std::process::Command::new(chromium())
        .args(ecr_audit::export::report::chromium_flags(profile.path()))
        .arg("--hide-scrollbars")
        .arg("--window-size=1280,2200")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("the test command needs Chromium (scripts/test installs Debian's chromium)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(png).expect("screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{}",
        bytes.len()
    );
}

/// `exception add` for ECR.2 of `repository`, approved by the CISO for 30 days.
fn add_exception(app: &TestApp, repository: &str) {
    let expires = (chrono::Utc::now() + chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    let added = ecr_audit(app)
        .args([
            "exception",
            "add",
            "--repository",
            repository,
            "--control",
            "ECR.2",
        ])
        .args(["--reason", "release tags move until the migration"])
        .args(["--approver", "ciso@example.com", "--expires", &expires])
        .output()
        .expect("exception add");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
}

/// A period in which a repository is created mutable, gets an unsigned push that is scanned,
/// and is made immutable by a named caller; a second repository lies outside the scope.
async fn period_with_history(app: &mut TestApp) -> (String, String, String) {
    app.start_worker().await;
    let repository = app.repo("prod-app");
    app.ecr
        .create_repository()
        .repository_name(&repository)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(true)
                .build(),
        )
        .send()
        .await
        .expect("create repository");
    let outside = app.create_repository("dev-tool").await;
    let digest = push_image(&app.ecr, &repository, "v1.0", "report-1").await;
    app.eventually("the digest UNSIGNED", Duration::from_secs(30), || async {
        let images = app.store.images(Some(&repository)).await.ok()?;
        images
            .iter()
            .find(|i| i.digest == digest && i.signature.status.as_deref() == Some("UNSIGNED"))
            .map(|_| ())
    })
    .await;
    // An accepted risk on the failing ECR.2 while the team fixes it: the report lists it.
    add_exception(app, &repository);
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&repository)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("make immutable");
    app.eventually("ECR.2 passes", Duration::from_secs(30), || async {
        let rows = app.store.posture(Some(&repository)).await.ok()?;
        rows.first()
            .and_then(|r| r.controls.get("ECR.2"))
            .filter(|c| c.status == "PASS")
            .map(|_| ())
    })
    .await;
    app.wait_for_drain().await;
    // The chain stays as it is from here on, so the report and `verify` see one head.
    app.stop_worker().await;
    (repository, outside, digest)
}

fn report(app: &TestApp, args: &[&str]) -> std::process::Output {
    ecr_audit(app)
        .arg("report")
        .args(args)
        .output()
        .expect("run report")
}

/// `verify`'s head hash and record count.
fn verified_head(app: &TestApp) -> (String, u64) {
    let output = ecr_audit(app).arg("verify").output().expect("verify");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}");
    let records = text
        .strip_prefix("OK: ")
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let head = text
        .split("head ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("{text}"))
        .trim_end_matches(';')
        .to_owned();
    (head, records)
}

fn assert_json_content(json: &Value, repository: &str, outside: &str, digest: &str) {
    let transitions = json["transitions"].as_array().expect("transitions");
    let immutable = transitions
        .iter()
        .find(|t| {
            t["repository"] == repository
                && t["control"] == "ECR.2"
                && t["from"] == "FAIL"
                && t["to"] == "PASS"
        })
        .unwrap_or_else(|| panic!("no ECR.2 FAIL -> PASS: {transitions:#?}"));
    assert!(
        immutable["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws:")),
        "{immutable}"
    );
    assert!(
        transitions.iter().all(|t| t["repository"] != outside),
        "the scope leaves {outside} out: {transitions:#?}"
    );
    let rows = json["images"]["rows"].as_array().expect("image rows");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["digest"], digest);
    assert_eq!(rows[0]["signature"], "UNSIGNED");
    assert!(
        rows[0]["pushed_by"]
            .as_str()
            .is_some_and(|p| p.starts_with("arn:aws:"))
    );
    assert_eq!(json["images"]["pushed"], 1);
    assert_eq!(json["images"]["signed"], 0);
    let ecr2 = json["controls"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["control"] == "ECR.2"))
        .expect("ECR.2");
    assert_eq!(ecr2["share_at_end"], 1.0, "{ecr2}");
    assert!(
        ecr2["lowest_share"].as_f64().is_some_and(|s| s < 1.0),
        "{ecr2}"
    );
    let [exception] = json["exceptions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    else {
        panic!("one exception in force: {}", json["exceptions"]);
    };
    assert_eq!(exception["control"], "ECR.2");
    assert_eq!(exception["repository"], repository);
    assert_eq!(exception["approver"], "ciso@example.com");
    assert_eq!(exception["repositories_excepted"], 1, "{exception}");
    assert_eq!(exception["ended_at"], Value::Null);
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn the_period_report_renders_names_transitions_and_coverage_and_its_head_matches_verify() {
    let mut app = TestApp::new().await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(2);
    let (repository, outside, digest) = period_with_history(&mut app).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (since, until) = (since.to_rfc3339(), until.to_rfc3339());
    let dir = tempfile::tempdir().expect("tempdir");
    let scope = dir.path().join("scope.json");
    std::fs::write(
        &scope,
        serde_json::json!({"name": "production", "repositories": [format!("{}prod-*", app.prefix)],
                           "accounts": ["123456789012"], "regions": ["us-east-1"]})
        .to_string(),
    )
    .expect("scope");
    let scope = scope.to_string_lossy().into_owned();
    let period = ["--since", &since, "--until", &until, "--scope", &scope];

    let output = report(&app, &[&period[..], &["--format", "json"]].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_json_content(&json, &repository, &outside, &digest);

    // The report names the head `verify` ends at.
    let (head, records) = verified_head(&app);
    assert_eq!(json["evidence_head"]["hash"], head.as_str());
    assert_eq!(json["evidence_head"]["seq"], records);

    let html_path = artifacts().join("report.html");
    let html_arg = html_path.to_string_lossy().into_owned();
    let output = report(
        &app,
        &[&period[..], &["--format", "html", "--output", &html_arg]].concat(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let html = std::fs::read_to_string(&html_path).expect("html");
    assert!(html.contains(&head), "the head is on the page");
    assert!(
        html.contains(immutable_actor(&json)),
        "the caller is on the page"
    );
    assert!(
        html.contains(&digest[..23]),
        "the coverage row is on the page"
    );
    assert!(html.contains("ECR.2") && html.contains("<svg"));
    assert!(html.contains("Exceptions in force (1)") && html.contains("ciso@example.com"));
    assert!(!html.contains(&outside));
    screenshot(&html_path, &artifacts().join("report.png"));

    // The digest's history shows the accepted risk its repository ran under.
    let explained = ecr_audit(&app)
        .args(["explain", &format!("{repository}@{digest}")])
        .output()
        .expect("explain");
    let history = String::from_utf8_lossy(&explained.stdout);
    assert!(
        history.contains("ECR.2 EXCEPTED by exception") && history.contains("ciso@example.com"),
        "{history}"
    );

    let pdf = dir.path().join("report.pdf");
    let pdf_arg = pdf.to_string_lossy().into_owned();
    let output = report(
        &app,
        &[&period[..], &["--format", "pdf", "--output", &pdf_arg]].concat(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&pdf).expect("pdf");
    assert!(
        bytes.starts_with(b"%PDF") && bytes.len() > 5_000,
        "{}",
        bytes.len()
    );

    // Without Chromium the PDF fails with what to do, and leaves no file behind.
    let missing = dir.path().join("missing.pdf");
    let output = ecr_audit(&app)
        .env("ECR_AUDIT_CHROMIUM", "/nonexistent/chromium")
        .args([
            "report", "--since", &since, "--until", &until, "--format", "pdf", "--output",
        ])
        .arg(&missing)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ECR_AUDIT_CHROMIUM"));
    assert!(!missing.exists());
    app.finish().await;
}

fn immutable_actor(json: &Value) -> &str {
    json["transitions"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["to"] == "PASS" && t["control"] == "ECR.2")
        })
        .and_then(|t| t["actor"].as_str())
        .unwrap_or("no actor")
}
