//! Fault tests: the real worker binary killed, its database stopped, its AWS calls throttled,
//! its queue fed poison — and nothing lost, nothing duplicated, nothing half-applied.
//!
//! These tests take the shared services away from everyone (they stop Postgres and make the
//! emulator throttle), so they run in their own step after the main suite, one at a time:
//! `cargo nextest run -E 'test(/^faults::/)' --test-threads 1`, and the main step leaves them
//! out (see scripts/test).

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ecr_audit::evidence::ChainReport;
use serde_json::{Value, json};

use crate::harness::TestQueue;
use crate::helpers::{self, ACCOUNT, TestApp, envelope};

/// A queue of its own with a redrive policy: `max_receive` receives before the DLQ.
async fn queue_with_dlq(app: &TestApp, name: &str, max_receive: u32) -> TestQueue {
    TestQueue::create(&app.sdk, &format!("{}{name}", app.prefix), max_receive).await
}

async fn send_all(app: &TestApp, queue: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .expect("entry")
            })
            .collect();
        let sent = app
            .sqs
            .send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send batch");
        assert!(sent.failed().is_empty(), "{:?}", sent.failed());
    }
}

/// A CloudTrail record of a failed ECR call: fully processed (evidence written) without any
/// AWS read, so thousands flow fast.
fn failed_call(id: &str, repository: &str) -> String {
    envelope(
        id,
        "2026-11-20T10:00:00Z",
        "AWS API Call via CloudTrail",
        json!({
            "eventVersion": "1.08", "eventID": id, "eventTime": "2026-11-20T10:00:00Z",
            "eventSource": "ecr.amazonaws.com", "eventName": "PutImageTagMutability",
            "awsRegion": "us-east-1", "eventType": "AwsApiCall",
            "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/ci/job"},
            "requestParameters": {"repositoryName": repository, "imageTagMutability": "MUTABLE"},
            "errorCode": "AccessDenied", "errorMessage": "not allowed"
        }),
    )
}

fn start_worker(app: &TestApp, queue: &str, extra: &[(&str, &str)]) -> Child {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("ecr-audit"));
    command
        .arg("worker")
        .env("DATABASE_URL", &app.database_url)
        .env("ECR_AUDIT_QUEUE_URL", queue)
        .env("ECR_AUDIT_HTTP_ADDR", "127.0.0.1:0")
        .env("ECR_AUDIT_ACCOUNT_ID", ACCOUNT)
        .env("ECR_AUDIT_VISIBILITY_TIMEOUT", "3s")
        .env("ECR_AUDIT_RETRY_BASE", "1s")
        .env("ECR_AUDIT_RECONCILE_INTERVAL", "0s")
        .env("ECR_AUDIT_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in extra {
        command.env(key, value);
    }
    command.spawn().expect("start worker")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(started.elapsed() < timeout, "the worker did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

async fn evidence_ids(app: &TestApp, prefix: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM evidence WHERE event_id LIKE $1 || '%'")
        .bind(prefix)
        .fetch_all(&app.pool)
        .await
        .expect("evidence")
}

async fn drained(app: &TestApp, queue: &str) -> bool {
    app.queue_depth(queue).await == (0, 0)
}

#[tokio::test]
async fn killed_at_random_points_the_worker_loses_and_duplicates_nothing() {
    let app = TestApp::new().await;
    let fixture = queue_with_dlq(&app, "kill", 50).await;
    let (queue, dlq) = (fixture.url.clone(), fixture.dlq_url.clone());
    let events = 4000;
    let prefix = format!("{}k-", app.prefix);
    let bodies: Vec<String> = (0..events)
        .map(|i| failed_call(&format!("{prefix}{i}"), &app.repo("victim")))
        .collect();
    send_all(&app, &queue, &bodies).await;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    println!("seed {seed}");
    let mut random = Lcg(seed);
    let trials = 16;
    let mut progress = Vec::new();
    for trial in 0..trials {
        let mut worker = start_worker(&app, &queue, &[]);
        // Long enough to start and take batches, short enough to die in the middle of them.
        tokio::time::sleep(Duration::from_millis(150 + random.next(700))).await;
        if trial % 4 == 3 {
            // A graceful stop in the middle of batches: finished or left, never half-applied.
            signal(&worker, "TERM");
            assert!(wait_exit(&mut worker, Duration::from_secs(40)).success());
        } else {
            worker.kill().expect("SIGKILL");
            let _ = worker.wait();
        }
        progress.push(evidence_ids(&app, &prefix).await.len());
    }
    println!("records after each of {trials} interruptions: {progress:?}");

    let mut worker = start_worker(&app, &queue, &[]);
    let started = Instant::now();
    while !(drained(&app, &queue).await && evidence_ids(&app, &prefix).await.len() >= events) {
        assert!(started.elapsed() < Duration::from_secs(120), "not drained");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    signal(&worker, "TERM");
    assert!(wait_exit(&mut worker, Duration::from_secs(40)).success());

    let ids = evidence_ids(&app, &prefix).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), events, "every event's evidence exactly once");
    assert_eq!(unique.len(), events);
    assert_eq!(app.queue_depth(&dlq).await, (0, 0), "nothing dead-lettered");
    let report = ecr_audit::evidence::verify_database(app.store.pool())
        .await
        .expect("verify");
    assert!(matches!(report, ChainReport::Valid { .. }), "{report:?}");
    app.finish().await;
}

#[tokio::test]
async fn while_postgres_is_down_nothing_is_deleted_and_the_worker_recovers() {
    let app = TestApp::new().await;
    // Few receives allowed: a worker that kept receiving during the outage would push the
    // messages to the DLQ; it must pause instead.
    let fixture = queue_with_dlq(&app, "outage", 4).await;
    let (queue, dlq) = (fixture.url.clone(), fixture.dlq_url.clone());
    let prefix = format!("{}o-", app.prefix);
    let mut worker = start_worker(&app, &queue, &[]);
    let first: Vec<String> = (0..200)
        .map(|i| failed_call(&format!("{prefix}a{i}"), &app.repo("db")))
        .collect();
    send_all(&app, &queue, &first).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Postgres goes away mid-run, and more events arrive meanwhile.
    services("pg-pause");
    let during: Vec<String> = (0..200)
        .map(|i| failed_call(&format!("{prefix}b{i}"), &app.repo("db")))
        .collect();
    send_all(&app, &queue, &during).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (visible, in_flight) = app.queue_depth(&queue).await;
    assert!(
        visible + in_flight >= 200,
        "messages were deleted while the database was down: {visible} visible, {in_flight} in flight"
    );
    assert!(
        worker.try_wait().expect("wait").is_none(),
        "the worker died"
    );
    services("pg-resume");

    let started = Instant::now();
    loop {
        let ids = evidence_ids(&app, &prefix).await;
        if ids.len() == 400 && drained(&app, &queue).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} of 400 recorded after the outage",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    signal(&worker, "TERM");
    assert!(wait_exit(&mut worker, Duration::from_secs(40)).success());
    assert_eq!(app.queue_depth(&dlq).await, (0, 0), "nothing dead-lettered");
    app.finish().await;
}

/// Calls of one `service.Operation` the emulator answered in the shared test account.
async fn emulator_count(operation: &str) -> f64 {
    let url = format!(
        "{}/_emulator/requests?account={ACCOUNT}",
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL")
    );
    let body: Value = reqwest::get(url)
        .await
        .expect("requests")
        .json()
        .await
        .expect("json");
    body.get(operation).and_then(Value::as_f64).unwrap_or(0.0)
}

fn services(action: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(format!("{root}/scripts/services"))
        .arg(action)
        .status()
        .expect("scripts/services");
    assert!(status.success(), "scripts/services {action}");
}

async fn emulator(path: &str, method: reqwest::Method, body: Value) {
    let url = format!(
        "{}{path}",
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL")
    );
    let response = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .expect("emulator");
    assert!(response.status().is_success(), "{path}");
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn with_30_percent_of_ecr_calls_throttled_everything_is_processed() {
    let mut app = TestApp::new().await;
    let repository = app.create_repository("throttled").await;
    app.start_worker().await;
    // The worker's reads, not the test's own pushes, are throttled.
    for operation in [
        "DescribeImages",
        "DescribeImageSigningStatus",
        "ListImageReferrers",
        "DescribeRepositories",
        "GetLifecyclePolicy",
        "GetRepositoryPolicy",
        "GetRegistryScanningConfiguration",
        "GetSigningConfiguration",
        "DescribeImageScanFindings",
    ] {
        emulator(
            "/_emulator/faults",
            reqwest::Method::POST,
            json!({"service": "ecr", "operation": operation, "error": "ThrottlingException", "rate": 0.3}),
        )
        .await;
    }
    let signing_calls_before = emulator_count("ecr.DescribeImageSigningStatus").await;
    let mut digests = Vec::new();
    for i in 0..40 {
        digests.push(
            helpers::push_image(
                &app.ecr,
                &repository,
                &format!("v{i}"),
                &format!("{}t{i}", app.prefix),
            )
            .await,
        );
    }
    let outcome = app
        .eventually("every push recorded", Duration::from_secs(90), || async {
            let images = app.store.images(Some(&repository)).await.ok()?;
            let known: HashSet<&str> = images.iter().map(|i| i.digest.as_str()).collect();
            digests
                .iter()
                .all(|d| known.contains(d.as_str()))
                .then_some(images.len())
        })
        .await;
    app.wait_for_drain().await;
    emulator("/_emulator/faults", reqwest::Method::DELETE, json!({})).await;
    assert!(outcome >= digests.len());
    let text = app.scrape().await;
    // The throttling happened: the emulator answered more calls than the worker saw succeed
    // (the SDK retried the throttled ones).
    let answered = emulator_count("ecr.DescribeImageSigningStatus").await - signing_calls_before;
    let succeeded = helpers::metric_value(
        &text,
        "ecr_audit_aws_api_calls_total",
        &[
            ("operation", "ecr:DescribeImageSigningStatus"),
            ("outcome", "ok"),
        ],
    )
    .unwrap_or(0.0);
    println!(
        "throttled: DescribeImageSigningStatus answered {answered}, succeeded {succeeded}; transient after SDK retries {:?}; messages retried {:?}",
        helpers::metric_value(
            &text,
            "ecr_audit_aws_api_calls_total",
            &[("outcome", "transient")]
        ),
        helpers::metric_value(
            &text,
            "ecr_audit_message_retries_total",
            &[("code", "aws_transient")]
        )
    );
    assert!(
        answered > succeeded * 1.15,
        "no throttling seen: {answered} answered vs {succeeded} succeeded"
    );
    // finish() asserts the DLQ is empty.
    app.finish().await;
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn poison_messages_are_rejected_with_reasons_and_the_worker_keeps_going() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let huge = format!(
        r#"{{"version":"0","id":"{}huge","detail-type":"ECR Image Action","source":"aws.ecr","account":"123456789012","time":"2026-11-20T10:00:00Z","region":"us-east-1","resources":[],"detail":{{"padding":"{}"}}}}"#,
        app.prefix,
        "x".repeat(1_000_000)
    );
    let poisons: Vec<(&str, String)> = vec![
        ("invalid_json", "{not json".to_owned()),
        ("not_an_object", "[1,2,3]".to_owned()),
        ("wrong_type", json!({"version": "0", "id": 42, "detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": "123456789012", "time": "2026-11-20T10:00:00Z", "region": "us-east-1", "detail": {}}).to_string()),
        ("missing_field", json!({"version": "0", "id": format!("{}nodetail", app.prefix), "source": "aws.ecr"}).to_string()),
        ("invalid_identifier", envelope(&format!("{}baddigest", app.prefix), "2026-11-20T10:00:00Z", "ECR Image Action",
            json!({"result": "SUCCESS", "action-type": "PUSH", "repository-name": app.repo("p"), "image-digest": "sha256:nothex"}))),
        ("invalid_time", format!("{}\u{FFFD}", envelope(&format!("{}bad\u{FFFD}utf", app.prefix), "not a time", "ECR Image Action", json!({})))),
        ("too_large", huge),
    ];
    for (_, body) in &poisons {
        app.send_raw(body).await;
    }
    // Raw invalid UTF-8 cannot travel in an SQS body (SQS refuses it); `ingest` reads bytes,
    // so it is fed there.
    let unknown = envelope(
        &format!("{}future", app.prefix),
        "2026-11-20T10:00:00Z",
        "ECR Something New",
        json!({"a": 1}),
    );
    app.send_raw(&unknown).await;
    app.wait_for_drain().await;

    let rejected: Vec<(String, String)> =
        sqlx::query_as("SELECT code, reason FROM rejected_messages ORDER BY received_at")
            .fetch_all(&app.pool)
            .await
            .expect("rejected");
    println!("{rejected:#?}");
    assert!(rejected.len() >= 6, "{rejected:#?}");
    assert!(rejected.iter().all(|(_, reason)| !reason.is_empty()));
    for code in [
        "invalid_json",
        "not_an_object",
        "wrong_type",
        "missing_field",
        "invalid_identifier",
    ] {
        assert!(
            rejected.iter().any(|(c, _)| c == code),
            "{code} missing: {rejected:#?}"
        );
    }
    // The unknown detail-type is data, not an error: recorded as ignored.
    assert_eq!(
        app.evidence_count(&format!("{}future", app.prefix)).await,
        1
    );

    // Still alive: a good event afterwards is processed.
    let name = app.create_repository("after-poison").await;
    app.eventually(
        "the worker still processes",
        Duration::from_secs(30),
        || async {
            let rows = app.store.posture(Some(&name)).await.ok()?;
            (!rows.is_empty()).then_some(())
        },
    )
    .await;

    // Invalid UTF-8 bytes through `ingest`, which reads raw bytes.
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    use std::io::Write as _;
    file.write_all(
        b"{\"version\":\"0\",\"id\":\"x\xff\xfe\",\"detail-type\":\"ECR Image Action\"}\n",
    )
    .expect("write");
    let output = Command::new(assert_cmd::cargo::cargo_bin("ecr-audit"))
        .args(["ingest", file.path().to_str().expect("path")])
        .env("DATABASE_URL", &app.database_url)
        .env("ECR_AUDIT_ACCOUNT_ID", ACCOUNT)
        .output()
        .expect("ingest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("rejected"), "{stdout}");
    let utf8: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rejected_messages WHERE source = 'file'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(utf8, 1);
    app.finish().await;
}

/// Reads the auditor cannot make: AWS refusing the audit role, one API down.
#[path = "degrade.rs"]
mod degrade;
