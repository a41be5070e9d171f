//! The SQS consumer's mechanics against the emulator's real SQS: visibility renewal while a
//! batch is worked on, and `DeleteMessageBatch` failures reported behind HTTP 200.

use std::time::Duration;

use ecr_audit::source::sqs::{delete_messages, extend_visibility};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, create_repository_envelope};

async fn receive(app: &TestApp, visibility_seconds: i32, wait_seconds: i32) -> Vec<String> {
    app.sqs
        .receive_message()
        .queue_url(&app.queue_url)
        .visibility_timeout(visibility_seconds)
        .wait_time_seconds(wait_seconds)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive")
        .messages()
        .iter()
        .filter_map(|m| m.receipt_handle().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn visibility_is_renewed_while_work_runs_and_lapses_after() {
    let app = TestApp::new().await;
    app.send_raw("slow work").await;
    let handles = receive(&app, 3, 5).await;
    assert_eq!(handles.len(), 1);

    let done = CancellationToken::new();
    let lease = tokio::spawn(extend_visibility(
        app.sqs.clone(),
        app.queue_url.clone(),
        handles,
        Duration::from_secs(3),
        done.clone(),
    ));
    // Well past the 3 s visibility of the receive: without renewal SQS would hand the message
    // to another consumer by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        receive(&app, 3, 0).await.is_empty(),
        "renewed: still invisible"
    );

    done.cancel();
    lease.await.expect("lease task");
    let again = receive(&app, 30, 10).await;
    assert_eq!(again.len(), 1, "once renewal stops, the message comes back");
    assert_eq!(delete_messages(&app.sqs, &app.queue_url, &again).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn a_partial_batch_delete_failure_is_reported_per_entry() {
    let app = TestApp::new().await;
    app.send_raw("committed").await;
    let mut handles = receive(&app, 30, 5).await;
    assert_eq!(handles.len(), 1);
    handles.push("not-a-receipt-handle".to_owned());

    let failed = delete_messages(&app.sqs, &app.queue_url, &handles).await;
    assert_eq!(
        failed, 1,
        "the bogus entry fails behind HTTP 200; the good one is deleted"
    );
    assert_eq!(app.queue_depth(&app.queue_url).await, (0, 0));
    app.finish().await;
}

#[tokio::test]
async fn a_message_arriving_during_a_long_idle_poll_is_received_at_once() {
    let mut app = TestApp::new().await;
    let name = app.create_repository("idle").await;
    app.wait_for_drain_without_worker().await;
    // Production's 20 s long poll, idle for longer than the SDK's default attempt timeout.
    app.start_worker_polling(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let id = format!("{}late", app.prefix);
    app.send_raw(&create_repository_envelope(
        &id,
        &name,
        "arn:aws:iam::123456789012:user/a",
    ))
    .await;
    // An abandoned poll would have swallowed the message for a whole visibility timeout (10 s).
    app.eventually(
        "the message is processed by the running poll",
        Duration::from_secs(7),
        || async { (app.evidence_count(&id).await == 1).then_some(()) },
    )
    .await;
    app.finish().await;
}
