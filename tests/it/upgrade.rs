//! Upgrades (docs/UPGRADES.md): the previous release's worker keeps running against the schema
//! this release migrated, and the chain it extends, mixed with this release's records,
//! verifies.
//!
//! The previous release's binary is built by `scripts/previous-release` (cached under
//! target/previous/) and named by `ECR_AUDIT_PREVIOUS_BIN`, which `scripts/test` sets; without
//! it the test says it was skipped, so that a plain `cargo nextest run` does not build a second
//! copy of the crate.

use std::process::Stdio;
use std::time::Duration;

use crate::cli::ecr_audit;
use crate::helpers::{TestApp, create_repository_envelope};

const ACTOR: &str = "arn:aws:iam::123456789012:user/upgrader";

/// Runs this release's `ingest` over one CreateRepository event.
fn ingest_current(app: &TestApp, dir: &std::path::Path, id: &str, repository: &str) {
    let file = dir.join(format!("{id}.jsonl"));
    std::fs::write(&file, create_repository_envelope(id, repository, ACTOR)).expect("write");
    let output = ecr_audit(app)
        .arg("ingest")
        .arg(&file)
        .output()
        .expect("run ingest");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "processed: 1  ignored: 0  duplicate: 0  rejected: 0  failed: 0",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_previous_release_worker_runs_against_the_schema_this_release_migrated() {
    let Some(previous) = std::env::var_os("ECR_AUDIT_PREVIOUS_BIN") else {
        eprintln!(
            "skipped: ECR_AUDIT_PREVIOUS_BIN is unset (scripts/previous-release builds it, scripts/test sets it)"
        );
        return;
    };
    // TestApp's database is a clone of the template this release's `migrate` built.
    let app = TestApp::new().await;
    let name = app.create_repository("upgrade").await;
    let dir = tempfile::tempdir().expect("tempdir");
    ingest_current(&app, dir.path(), "up-1", &name);

    // The previous release's worker, with the credentials it had (the owner's: it predates
    // the worker role), consumes an event from the queue.
    let mut worker = std::process::Command::new(&previous)
        .arg("worker")
        .env("DATABASE_URL", &app.database_url)
        .env("ECR_AUDIT_QUEUE_URL", &app.queue_url)
        .env("ECR_AUDIT_ACCOUNT_ID", "123456789012")
        .env("ECR_AUDIT_HTTP_ADDR", "127.0.0.1:0")
        .env("ECR_AUDIT_RECONCILE_INTERVAL", "0s")
        .env("ECR_AUDIT_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the previous release's worker");
    app.send_raw(&create_repository_envelope("up-2", &name, ACTOR))
        .await;
    app.eventually(
        "the previous worker records up-2",
        Duration::from_secs(60),
        || async { (app.evidence_count("up-2").await == 1).then_some(()) },
    )
    .await;
    let _ = worker.kill();
    let output = worker.wait_with_output().expect("worker output");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("ERROR"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // This release appends after it, and verifies the whole chain.
    ingest_current(&app, dir.path(), "up-3", &name);
    let output = ecr_audit(&app).arg("verify").output().expect("run verify");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let versions: Vec<(String, Option<i16>)> = sqlx::query_as(
        "SELECT event_id, format_version FROM evidence WHERE event_id IN ('up-1', 'up-2', 'up-3') ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .expect("versions");
    assert_eq!(
        versions,
        vec![
            ("up-1".to_owned(), Some(2)),
            ("up-2".to_owned(), None),
            ("up-3".to_owned(), Some(2)),
        ],
        "the previous release writes version 1 (no version), this one version 2"
    );
    app.finish().await;
}
