//! Queue depth for the metrics: the main queue and the dead-letter queue its redrive policy
//! names, polled with `GetQueueAttributes`.
//!
//! The dead-letter queue is found from the main queue's `RedrivePolicy` rather than configured
//! separately, so the gauge follows whatever the stack wired up.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::telemetry::{Metrics, QueueRole};

/// Visible and in-flight message counts of one queue, with its redrive policy.
struct Depth {
    visible: i64,
    in_flight: i64,
    dead_letter_arn: Option<String>,
}

async fn read_depth(client: &aws_sdk_sqs::Client, queue_url: &str) -> Result<Depth, String> {
    let output = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| format!("{:?}", crate::aws::classify(&e)))?;
    let attributes = output.attributes();
    let count = |name: &QueueAttributeName| {
        attributes
            .and_then(|a| a.get(name))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let dead_letter_arn = attributes
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .and_then(|policy| dead_letter_target(policy));
    Ok(Depth {
        visible: count(&QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: count(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        dead_letter_arn,
    })
}

/// The `deadLetterTargetArn` of a redrive policy document.
fn dead_letter_target(policy: &str) -> Option<String> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    Some(policy.get("deadLetterTargetArn")?.as_str()?.to_owned())
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME` → (account, name).
fn queue_name_and_owner(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (_, _, service, _region, account, name) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (service == "sqs").then_some((account, name))
}

/// Updates the queue gauges every `interval` until `shutdown`.
pub(crate) async fn poll_queue_depth(
    client: aws_sdk_sqs::Client,
    queue_url: String,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut dead_letter_url: Option<String> = None;
    loop {
        match read_depth(&client, &queue_url).await {
            Ok(main) => {
                metrics.queue_depth(QueueRole::Main, main.visible, main.in_flight);
                if dead_letter_url.is_none()
                    && let Some((owner, name)) = main
                        .dead_letter_arn
                        .as_deref()
                        .and_then(queue_name_and_owner)
                {
                    match client
                        .get_queue_url()
                        .queue_name(name)
                        .queue_owner_aws_account_id(owner)
                        .send()
                        .await
                    {
                        Ok(found) => dead_letter_url = found.queue_url().map(str::to_owned),
                        Err(err) => {
                            warn!(queue.name = name, error = ?crate::aws::classify(&err), "cannot find the dead-letter queue");
                        }
                    }
                }
            }
            Err(err) => debug!(error = %err, "queue depth not read"),
        }
        if let Some(url) = &dead_letter_url {
            match read_depth(&client, url).await {
                Ok(dlq) => metrics.queue_depth(QueueRole::DeadLetter, dlq.visible, dlq.in_flight),
                Err(err) => debug!(error = %err, "dead-letter queue depth not read"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_letter_queue_is_read_from_the_redrive_policy() {
        let arn = dead_letter_target(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:audit-dlq","maxReceiveCount":5}"#,
        );
        assert_eq!(
            arn.as_deref().and_then(queue_name_and_owner),
            Some(("123456789012", "audit-dlq"))
        );
        assert_eq!(dead_letter_target("not json"), None);
        assert_eq!(queue_name_and_owner("arn:aws:sns:eu-west-1:1:topic"), None);
    }
}
