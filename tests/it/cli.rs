//! The command line as users see it: exit codes and printed counts are part of the contract.

use serde_json::json;

use crate::helpers::{TestApp, cloudtrail, create_repository_envelope, envelope};

pub(crate) fn ecr_audit(app: &TestApp) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("ecr-audit").expect("binary");
    command
        .env("DATABASE_URL", &app.database_url)
        .env("ECR_AUDIT_ACCOUNT_ID", "123456789012");
    command
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn ingest_reads_json_lines_arrays_and_cloudtrail_logs() {
    let app = TestApp::new().await;
    let name = app.create_repository("ingested").await;
    let detail = |id: &str| {
        cloudtrail(
            id,
            "2026-11-20T10:00:00Z",
            "CreateRepository",
            json!({"repositoryName": name}),
            "arn:aws:iam::123456789012:user/a",
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");

    let jsonl = dir.path().join("events.jsonl");
    let lines = [
        envelope(
            "l1",
            "2026-11-20T10:00:00Z",
            "AWS API Call via CloudTrail",
            detail("l1"),
        ),
        String::new(),
        "not json".to_owned(),
        envelope(
            "l1",
            "2026-11-20T10:00:00Z",
            "AWS API Call via CloudTrail",
            detail("l1"),
        ),
        envelope(
            "l2",
            "2026-11-20T10:00:00Z",
            // A detail-type this version does not evaluate (replication now is evaluated).
            "ECR Future Action",
            json!({"repository-name": name}),
        ),
    ];
    std::fs::write(&jsonl, lines.join("\n")).expect("write");
    let output = ecr_audit(&app)
        .arg("ingest")
        .arg(&jsonl)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "processed: 1  ignored: 1  duplicate: 1  rejected: 1  failed: 0"
    );

    let array = dir.path().join("events.json");
    let items: Vec<serde_json::Value> = ["a1", "a2"]
        .iter()
        .map(|id| {
            serde_json::from_str(&envelope(
                id,
                "2026-11-20T10:00:00Z",
                "AWS API Call via CloudTrail",
                detail(id),
            ))
            .expect("json")
        })
        .collect();
    std::fs::write(&array, serde_json::to_string_pretty(&items).expect("json")).expect("write");
    let output = ecr_audit(&app)
        .arg("ingest")
        .arg(&array)
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "processed: 2  ignored: 0  duplicate: 0  rejected: 0  failed: 0"
    );

    let trail = dir.path().join("cloudtrail.json");
    std::fs::write(
        &trail,
        serde_json::to_string_pretty(&json!({"Records": [detail("ct1"), detail("a1")]}))
            .expect("json"),
    )
    .expect("write");
    let output = ecr_audit(&app)
        .arg("ingest")
        .arg(&trail)
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "processed: 1  ignored: 0  duplicate: 1  rejected: 0  failed: 0"
    );

    let verify = ecr_audit(&app).arg("verify").output().expect("run");
    assert!(verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("OK: "));

    let table = ecr_audit(&app).arg("posture").output().expect("run");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.starts_with("ACCOUNT")),
        "{text}"
    );
    assert!(text.contains(&name));
    app.finish().await;
}

#[tokio::test]
async fn a_broken_chain_makes_verify_exit_non_zero() {
    let app = TestApp::new().await;
    let name = app.create_repository("tamper").await;
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    let body = envelope(
        "t1",
        "2026-11-20T10:00:00Z",
        "AWS API Call via CloudTrail",
        cloudtrail(
            "t1",
            "2026-11-20T10:00:00Z",
            "CreateRepository",
            json!({"repositoryName": name}),
            "arn:aws:iam::123456789012:user/a",
        ),
    );
    std::fs::write(file.path(), body).expect("write");
    ecr_audit(&app)
        .arg("ingest")
        .arg(file.path())
        .assert()
        .success();

    // Tamper as a database superuser would: bypass the append-only trigger.
    sqlx::query("ALTER TABLE evidence DISABLE TRIGGER evidence_no_update")
        .execute(&app.pool)
        .await
        .expect("disable");
    sqlx::query(
        "UPDATE evidence SET actor = 'arn:aws:iam::123456789012:user/nobody' WHERE event_id = 't1'",
    )
    .execute(&app.pool)
    .await
    .expect("tamper");
    let output = ecr_audit(&app).arg("verify").output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("BROKEN") && text.contains("event t1"),
        "{text}"
    );
    app.finish().await;
}

#[test]
fn a_missing_database_url_is_a_clear_start_up_error() {
    let output = assert_cmd::Command::cargo_bin("ecr-audit")
        .expect("binary")
        .arg("posture")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}

#[test]
fn a_wrong_trust_policy_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("trustpolicy.json");
    std::fs::write(&policy, br#"{"version": "1.0", "trustPolicies": []}"#).expect("write");
    let output = assert_cmd::Command::cargo_bin("ecr-audit")
        .expect("binary")
        .args(["ingest", "/dev/null"])
        // Never reached: the trust configuration is read before the database.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("ECR_AUDIT_ACCOUNT_ID", "123456789012")
        .env("AWS_REGION", "us-east-1")
        .env("ECR_AUDIT_TRUST_POLICY", &policy)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("ECR_AUDIT_TRUST_POLICY") && stderr.contains("trustPolicies is empty"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_required_tag_key_stops_start_up_naming_the_setting() {
    let output = assert_cmd::Command::cargo_bin("ecr-audit")
        .expect("binary")
        .args(["ingest", "/dev/null"])
        // Never reached: ECR.4's parameter is checked before the database.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("ECR_AUDIT_ACCOUNT_ID", "123456789012")
        .env("AWS_REGION", "us-east-1")
        .env("ECR_AUDIT_REQUIRED_TAG_KEYS", "team,aws:cost")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("ECR_AUDIT_REQUIRED_TAG_KEYS")
            && stderr.contains("\"aws:cost\" starts with aws:"),
        "{stderr}"
    );
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn the_worker_binary_serves_probes_processes_and_stops_on_sigterm() {
    let app = TestApp::new().await;
    let name = app.create_repository("binary").await;
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    };
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ecr-audit"))
        .arg("worker")
        .env("DATABASE_URL", &app.database_url)
        .env("ECR_AUDIT_QUEUE_URL", &app.queue_url)
        .env("ECR_AUDIT_HTTP_ADDR", addr.to_string())
        .env("ECR_AUDIT_ACCOUNT_ID", "123456789012")
        .env("ECR_AUDIT_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start worker");

    let ready = app
        .eventually(
            "/readyz answers 200",
            std::time::Duration::from_secs(30),
            || async {
                let response = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
                (response.status() == 200).then_some(())
            },
        )
        .await;
    let () = ready;
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let id = format!("{}bin", app.prefix);
    app.send_raw(&create_repository_envelope(
        &id,
        &name,
        "arn:aws:iam::123456789012:user/a",
    ))
    .await;
    app.eventually(
        "the event is committed",
        std::time::Duration::from_secs(30),
        || async { (app.evidence_count(&id).await == 1).then_some(()) },
    )
    .await;
    app.wait_for_drain().await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "worker did not stop after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "worker exit status {exit:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut logs)
        .expect("logs");
    assert!(logs.contains("shutdown requested"), "{logs}");
    assert!(
        !logs.contains(&app.database_url),
        "the database URL must never be logged"
    );
    app.finish().await;
}

/// Pushes an unsigned image through the worker and waits for its UNSIGNED verdict.
pub(crate) async fn unsigned_push(app: &mut TestApp, name: &str, salt: &str) -> (String, String) {
    app.start_worker().await;
    let repository = app.create_repository(name).await;
    let digest = crate::helpers::push_image(&app.ecr, &repository, "v1", salt).await;
    app.eventually(
        "the digest UNSIGNED",
        std::time::Duration::from_secs(30),
        || async {
            let images = app.store.images(Some(&repository)).await.ok()?;
            images
                .iter()
                .find(|i| i.digest == digest && i.signature.status.as_deref() == Some("UNSIGNED"))
                .map(|_| ())
        },
    )
    .await;
    app.wait_for_drain().await;
    (repository, digest)
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn explain_prints_a_digests_history_from_the_evidence_oldest_first() {
    let mut app = TestApp::new().await;
    let (repository, digest) = unsigned_push(&mut app, "explained", "explain-1").await;
    let target = format!("{repository}@{digest}");
    // A later change to the repository belongs to the digest's history, with its caller.
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&repository)
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
        .send()
        .await
        .expect("make immutable");
    app.eventually(
        "ECR.2 passes",
        std::time::Duration::from_secs(30),
        || async {
            let rows = app.store.posture(Some(&repository)).await.ok()?;
            rows.first()
                .and_then(|r| r.controls.get("ECR.2"))
                .filter(|c| c.status == "PASS")
                .map(|_| ())
        },
    )
    .await;
    app.wait_for_drain().await;

    let output = ecr_audit(&app)
        .args(["explain", &target])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("SEQ"),
        "{text}"
    );
    let pushed = lines
        .iter()
        .position(|l| l.contains("push") && l.contains(" as v1") && l.contains("arn:aws:"))
        .unwrap_or_else(|| panic!("no push with its pusher:\n{text}"));
    let unsigned = lines
        .iter()
        .position(|l| l.contains("-> UNSIGNED"))
        .unwrap_or_else(|| panic!("no UNSIGNED verdict:\n{text}"));
    let changed = lines
        .iter()
        .position(|l| l.contains("ECR.2 FAIL -> PASS") && l.contains("arn:aws:"))
        .unwrap_or_else(|| panic!("no later repository change with its caller:\n{text}"));
    assert!(
        pushed < unsigned && unsigned < changed,
        "oldest first:\n{text}"
    );
    // The verdict's reason is on its line.
    assert!(lines[unsigned].contains("no signature"), "{text}");

    let output = ecr_audit(&app)
        .args(["explain", &target, "--format", "json"])
        .args(["--account", "123456789012", "--region", "us-east-1"])
        .output()
        .expect("run");
    assert!(output.status.success());
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("a JSON array");
    let verdict = entries
        .iter()
        .find(|e| {
            e["what"]
                .as_str()
                .is_some_and(|w| w.ends_with("-> UNSIGNED"))
        })
        .unwrap_or_else(|| panic!("{entries:#?}"));
    assert!(verdict["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(verdict["seq"].as_i64().is_some_and(|s| s > 0));
    let seqs: Vec<i64> = entries.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");

    let output = ecr_audit(&app)
        .args(["explain", &target, "--limit", "1"])
        .output()
        .expect("run");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cut after 1 evidence records"));

    let unknown = format!("{repository}@sha256:{}", "0".repeat(64));
    let output = ecr_audit(&app)
        .args(["explain", &unknown])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("never saw this digest"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    app.finish().await;
}

#[tokio::test]
async fn images_digest_shows_only_that_digest() {
    let mut app = TestApp::new().await;
    let (repository, digest) = unsigned_push(&mut app, "only-one", "digest-1").await;
    let other = crate::helpers::push_image(&app.ecr, &repository, "v2", "digest-2").await;
    app.eventually(
        "the second digest recorded",
        std::time::Duration::from_secs(30),
        || async {
            let images = app.store.images(Some(&repository)).await.ok()?;
            images.iter().any(|i| i.digest == other).then_some(())
        },
    )
    .await;
    let output = ecr_audit(&app)
        .args(["images", "--format", "json", "--repository", &repository])
        .args(["--digest", &digest])
        .output()
        .expect("run");
    assert!(output.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["digest"], digest.as_str());
    app.finish().await;
}

#[tokio::test]
async fn export_digest_keeps_the_records_about_that_digest_and_verifies() {
    let mut app = TestApp::new().await;
    let (repository, digest) = unsigned_push(&mut app, "exported", "export-1").await;
    let other = crate::helpers::push_image(&app.ecr, &repository, "v2", "export-2").await;
    app.eventually(
        "the second digest recorded",
        std::time::Duration::from_secs(30),
        || async {
            let images = app.store.images(Some(&repository)).await.ok()?;
            images.iter().any(|i| i.digest == other).then_some(())
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("digest.jsonl");
    ecr_audit(&app)
        .args([
            "export", "--format", "jsonl", "--digest", &digest, "--output",
        ])
        .arg(&file)
        .assert()
        .success();
    let text = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let (manifest, records) = lines.split_last().expect("a manifest");
    assert_eq!(manifest["manifest"]["filters"]["digest"], digest.as_str());
    assert_eq!(manifest["manifest"]["scope"], "filtered");
    assert!(
        records.len() >= 3,
        "push, CloudTrail push, UNSIGNED: {text}"
    );
    assert!(
        records.iter().all(|r| r["digest"] == digest.as_str()),
        "{text}"
    );
    let verify = ecr_audit(&app)
        .arg("verify")
        .arg(&file)
        .output()
        .expect("run");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    app.finish().await;
}
