//! Alert events, end to end: transitions worth a page leave the worker as `PutEvents` on the
//! alert bus, and an EventBridge rule on that bus routes them to a queue, as a user would.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ecr::types::ImageTagMutability;
use serde_json::{Value, json};

use crate::helpers::{TestApp, metric_value, push_image};

const WAIT: Duration = Duration::from_secs(30);

/// Creates `bus` with a rule sending every ecr-audit event on it to a new queue; the queue and
/// the rule are deleted when dropped.
pub(crate) async fn route_alerts_to_queue(
    app: &TestApp,
    bus: &str,
) -> (crate::harness::TestQueue, crate::harness::TestRule) {
    app.events
        .create_event_bus()
        .name(bus)
        .send()
        .await
        .expect("create bus");
    let inbox = crate::harness::TestQueue::create(&app.sdk, &format!("{bus}-inbox"), 10).await;
    let rule = crate::harness::TestRule::on_bus(
        &app.sdk,
        Some(bus),
        &format!("{bus}-all"),
        &json!({"source": ["ecr-audit"]}),
        "inbox",
        &inbox.arn,
    )
    .await;
    (inbox, rule)
}

/// Every message currently on `queue_url`, as parsed EventBridge envelopes.
pub(crate) async fn drain(app: &TestApp, queue_url: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let output = app
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        for message in messages {
            all.push(serde_json::from_str(message.body().unwrap_or("null")).expect("JSON body"));
            app.sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn transitions_worth_a_page_reach_the_alert_bus_once_each() {
    let mut app = TestApp::new().await;
    // The bus does not exist yet: publishing fails, and must neither block the pipeline nor
    // lose the alerts.
    let bus = format!("{}alerts", app.prefix);
    app.alert_bus = Some(bus.clone());
    app.start_worker().await;

    let repository = app.repo("payments");
    app.ecr
        .create_repository()
        .repository_name(&repository)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("create repository");
    let digest = push_image(&app.ecr, &repository, "v1", "alerts-1").await;
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&repository)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .send()
        .await
        .expect("regress");

    app.eventually("the digest UNSIGNED", WAIT, || async {
        let image = app.store.images(Some(&repository)).await.ok()?;
        image
            .iter()
            .find(|i| i.digest == digest && i.signature.status.as_deref() == Some("UNSIGNED"))
            .map(|_| ())
    })
    .await;
    app.wait_for_drain().await;
    let text = app.scrape().await;
    assert_eq!(
        metric_value(&text, "ecr_audit_alert_backlog", &[]),
        Some(2.0),
        "{text}"
    );
    assert!(
        metric_value(
            &text,
            "ecr_audit_alert_events_total",
            &[("outcome", "failed")]
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "ecr_audit_control_regressions_total",
            &[("control", "ECR.2")]
        ),
        Some(1.0)
    );

    // The bus appears; the waiting alerts go out with their retries. Between the bus and its
    // rule a retry would be accepted by a bus that routes it nowhere (as AWS does): the queued
    // alerts are held (the publisher claims rows `FOR UPDATE SKIP LOCKED`) until the rule exists.
    let mut hold = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM alert_outbox WHERE published_at IS NULL FOR UPDATE")
        .fetch_all(&mut *hold)
        .await
        .expect("hold the queued alerts");
    let (inbox_queue, _inbox_rule) = route_alerts_to_queue(&app, &bus).await;
    hold.rollback().await.expect("release the queued alerts");
    let inbox = inbox_queue.url.clone();
    let mut received = Vec::new();
    let started = std::time::Instant::now();
    while received.len() < 2 {
        assert!(
            started.elapsed() < WAIT,
            "alerts not delivered: {received:#?}"
        );
        received.extend(drain(&app, &inbox).await);
    }

    // Redelivered events make no second alert.
    tokio::time::sleep(Duration::from_secs(3)).await;
    received.extend(drain(&app, &inbox).await);
    let by_type: BTreeMap<String, Vec<&Value>> =
        received.iter().fold(BTreeMap::new(), |mut map, event| {
            map.entry(event["detail-type"].as_str().unwrap_or("").to_owned())
                .or_default()
                .push(event);
            map
        });
    assert_eq!(received.len(), 2, "{received:#?}");

    let signature = by_type["ECR Audit Signature Alert"][0];
    assert_eq!(signature["source"], "ecr-audit");
    let detail = &signature["detail"];
    assert_eq!(detail["schema_version"], "1");
    assert_eq!(detail["alert"], "UNSIGNED");
    assert_eq!(detail["status"], "UNSIGNED");
    assert_eq!(detail["digest"], digest.as_str());
    assert_eq!(detail["repository"], repository.as_str());
    assert_eq!(detail["tag"], "v1");
    assert!(detail["pushed_by"].as_str().is_some(), "{detail}");
    assert_eq!(detail["evidence"]["hash"].as_str().map(str::len), Some(64));
    assert_eq!(
        detail["explain"].as_str(),
        Some(
            format!(
                "ecr-audit explain {repository}@{digest} --account {} --region {}",
                detail["account"].as_str().unwrap_or_default(),
                detail["region"].as_str().unwrap_or_default()
            )
            .as_str()
        ),
        "{detail}"
    );

    let regression = by_type["ECR Audit Control Regression"][0];
    let detail = &regression["detail"];
    assert_eq!(detail["control"], "ECR.2");
    assert_eq!(detail["previous_status"], "PASS");
    assert_eq!(detail["status"], "FAIL");
    assert!(detail["actor"].as_str().is_some(), "{detail}");
    assert!(
        detail["reason"].as_str().unwrap_or("").contains("MUTABLE"),
        "{detail}"
    );
    assert_eq!(
        regression["resources"][0],
        format!("arn:aws:ecr:us-east-1:123456789012:repository/{repository}")
    );

    let text = app.scrape().await;
    assert_eq!(
        metric_value(&text, "ecr_audit_alert_backlog", &[]),
        Some(0.0)
    );

    // The digest's history names the alert that was sent about it.
    let output = crate::cli::ecr_audit(&app)
        .args(["explain", &format!("{repository}@{digest}")])
        .output()
        .expect("run explain");
    let history = String::from_utf8_lossy(&output.stdout);
    let unsigned = history.lines().position(|l| l.contains("-> UNSIGNED"));
    let sent = history
        .lines()
        .position(|l| l.contains("alert UNSIGNED sent"));
    assert!(
        unsigned.is_some() && sent == unsigned.map(|n| n + 1),
        "{history}"
    );
    assert_eq!(
        metric_value(
            &text,
            "ecr_audit_alert_events_total",
            &[("outcome", "published")]
        ),
        Some(2.0)
    );
    app.finish().await;
}

/// An alert leaves as soon as its batch commits: the outbox trigger notifies the publisher,
/// which otherwise would only look again at its next poll (an hour here).
#[tokio::test]
async fn a_committed_alert_wakes_the_publisher_without_waiting_for_its_poll() {
    let mut app = TestApp::new().await;
    let bus = format!("{}alerts", app.prefix);
    let (inbox_queue, _inbox_rule) = route_alerts_to_queue(&app, &bus).await;
    app.alert_bus = Some(bus);
    app.alert_poll = Duration::from_secs(3600);
    app.start_worker().await;
    // The publisher's first look at the outbox (at start-up) has passed before anything is pushed.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let repository = app.repo("prompt");
    app.ecr
        .create_repository()
        .repository_name(&repository)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("create repository");
    let digest = push_image(&app.ecr, &repository, "v1", "prompt-1").await;

    let mut received = Vec::new();
    let started = std::time::Instant::now();
    while received.is_empty() {
        assert!(
            started.elapsed() < WAIT,
            "no alert while the publisher's poll is an hour away"
        );
        received.extend(drain(&app, &inbox_queue.url).await);
    }
    assert_eq!(received[0]["detail"]["alert"], "UNSIGNED", "{received:#?}");
    assert_eq!(received[0]["detail"]["digest"], digest.as_str());
    app.finish().await;
}

#[tokio::test]
async fn queue_depth_of_the_main_queue_and_its_dead_letter_queue_is_exported() {
    let mut app = TestApp::new().await;
    app.sqs
        .send_message()
        .queue_url(&app.dlq_url)
        .message_body("{}")
        .send()
        .await
        .expect("send to DLQ");
    app.start_worker().await;
    let text = app
        .eventually("DLQ depth exported", WAIT, || async {
            let text = app.scrape().await;
            (metric_value(
                &text,
                "ecr_audit_queue_messages",
                &[("queue", "dead_letter"), ("state", "visible")],
            ) == Some(1.0))
            .then_some(text)
        })
        .await;
    assert!(
        metric_value(
            &text,
            "ecr_audit_queue_messages",
            &[("queue", "main"), ("state", "visible")]
        )
        .is_some(),
        "{text}"
    );
    assert!(text.contains("ecr_audit_build_info{version="), "{text}");
    // The test's own DLQ message is not the worker's doing; clear it for the final checks.
    app.sqs
        .purge_queue()
        .queue_url(&app.dlq_url)
        .send()
        .await
        .expect("purge");
    app.finish().await;
}
