//! `TestQueue` (a queue with a redrive policy to its own dead-letter queue) and `TestRule` (an
//! EventBridge rule with one target), each deleted in `Drop`.

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

/// A queue whose messages go to `dlq_url` after `max_receive` receives.
#[must_use = "dropping a TestQueue deletes its queues"]
pub struct TestQueue {
    pub url: String,
    pub arn: String,
    pub dlq_url: String,
    sdk: SdkConfig,
}

impl TestQueue {
    /// Creates `<name>` and `<name>-dlq` in the account of `sdk`'s credentials.
    pub async fn create(sdk: &SdkConfig, name: &str, max_receive: u32) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let dlq_url = create_queue(&sqs, &format!("{name}-dlq"), None).await;
        let dlq_arn = queue_arn(&sqs, &dlq_url).await;
        let redrive =
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive.to_string()});
        let url = create_queue(&sqs, name, Some(redrive)).await;
        let arn = queue_arn(&sqs, &url).await;
        Self {
            url,
            arn,
            dlq_url,
            sdk: sdk.clone(),
        }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let sdk = self.sdk.clone();
        let urls = [self.url.clone(), self.dlq_url.clone()];
        super::run_cleanup(&self.url, move || async move {
            let sqs = aws_sdk_sqs::Client::new(&fresh_config(&sdk).await);
            for url in urls {
                sqs.delete_queue()
                    .queue_url(&url)
                    .send()
                    .await
                    .map_err(|e| format!("delete {url}: {e}"))?;
            }
            Ok(())
        });
    }
}

/// An EventBridge rule sending what its pattern matches to one target.
#[must_use = "dropping a TestRule deletes the rule"]
pub struct TestRule {
    pub name: String,
    bus: Option<String>,
    target_id: String,
    sdk: SdkConfig,
}

impl TestRule {
    /// `rule` on the default bus, routing what `pattern` matches to the queue `queue_arn`.
    pub async fn to_queue(sdk: &SdkConfig, rule: &str, pattern: &Value, queue_arn: &str) -> Self {
        Self::on_bus(sdk, None, rule, pattern, "queue", queue_arn).await
    }

    /// `rule` on `bus` (`None`: the default bus) with the target `target_id` → `target_arn`.
    pub async fn on_bus(
        sdk: &SdkConfig,
        bus: Option<&str>,
        rule: &str,
        pattern: &Value,
        target_id: &str,
        target_arn: &str,
    ) -> Self {
        let events = aws_sdk_eventbridge::Client::new(sdk);
        events
            .put_rule()
            .name(rule)
            .set_event_bus_name(bus.map(str::to_owned))
            .event_pattern(pattern.to_string())
            .send()
            .await
            .expect("put rule");
        events
            .put_targets()
            .rule(rule)
            .set_event_bus_name(bus.map(str::to_owned))
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id(target_id)
                    .arn(target_arn)
                    .build()
                    .expect("target"),
            )
            .send()
            .await
            .expect("put targets");
        Self {
            name: rule.to_owned(),
            bus: bus.map(str::to_owned),
            target_id: target_id.to_owned(),
            sdk: sdk.clone(),
        }
    }
}

impl Drop for TestRule {
    fn drop(&mut self) {
        let sdk = self.sdk.clone();
        let (rule, bus, target) = (self.name.clone(), self.bus.clone(), self.target_id.clone());
        super::run_cleanup(&self.name, move || async move {
            let events = aws_sdk_eventbridge::Client::new(&fresh_config(&sdk).await);
            // EventBridge refuses to delete a rule that still has targets.
            events
                .remove_targets()
                .rule(&rule)
                .set_event_bus_name(bus.clone())
                .ids(&target)
                .send()
                .await
                .map_err(|e| format!("remove targets of {rule}: {e}"))?;
            events
                .delete_rule()
                .name(&rule)
                .set_event_bus_name(bus)
                .send()
                .await
                .map_err(|e| format!("delete {rule}: {e}"))?;
            Ok(())
        });
    }
}

/// The configuration of `sdk` (its credentials, hence its account) with HTTP connections of
/// the cleanup's own runtime: the test's pooled connections are driven by the test's runtime.
async fn fresh_config(sdk: &SdkConfig) -> SdkConfig {
    let base = ecr_audit::aws::load_sdk_config().await;
    match sdk.credentials_provider() {
        Some(credentials) => base.to_builder().credentials_provider(credentials).build(),
        None => base,
    }
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str, redrive: Option<Value>) -> String {
    let mut request = sqs.create_queue().queue_name(name);
    if let Some(redrive) = redrive {
        request = request.attributes(QueueAttributeName::RedrivePolicy, redrive.to_string());
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e}"))
        .queue_url
        .unwrap_or_else(|| panic!("no URL for queue {name}"))
}

/// The ARN of a queue.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .expect("queue ARN")
}
