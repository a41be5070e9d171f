//! The anchor outside the database: every signed tree head written to S3 under Object Lock
//! (compliance mode) and announced on the alert bus (docs/EVIDENCE.md, "The anchor in S3").

use aws_smithy_types::error::display::DisplayErrorContext;
use chrono::Utc;

use super::heads::SignedHead;

/// The `source` of the announcement, the alert events' own.
pub const SOURCE: &str = "ecr-audit";
/// The `detail-type` of the announcement.
pub const DETAIL_TYPE: &str = "ECR Audit Evidence Head";

/// Why anchoring or reading the anchor failed.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("S3 {operation} on bucket {bucket} failed: {message}")]
    S3 {
        operation: &'static str,
        bucket: String,
        message: String,
    },
    #[error("EventBridge PutEvents failed: {0}")]
    Events(String),
    #[error("an anchored head is not well-formed ({key}): {message}")]
    Malformed { key: String, message: String },
}

/// Where heads are anchored.
#[derive(Clone, Debug)]
pub struct Anchor {
    s3: aws_sdk_s3::Client,
    bucket: String,
    retention_days: u32,
    /// The alert bus, when configured.
    events: Option<(aws_sdk_eventbridge::Client, String)>,
}

impl Anchor {
    pub fn new(
        sdk: &aws_config::SdkConfig,
        bucket: String,
        retention_days: u32,
        bus: Option<String>,
    ) -> Self {
        // Path-style addressing works with every endpoint (the emulator's too).
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk)
                .force_path_style(true)
                .build(),
        );
        Self {
            s3,
            bucket,
            retention_days,
            events: bus.map(|bus| (aws_sdk_eventbridge::Client::new(sdk), bus)),
        }
    }

    fn failed(&self, operation: &'static str, e: impl std::fmt::Display) -> AnchorError {
        AnchorError::S3 {
            operation,
            bucket: self.bucket.clone(),
            message: e.to_string(),
        }
    }

    /// The object key of a head: `heads/<log id>/<size, 20 digits>.json`, so a listing is in
    /// size order.
    pub fn key(head: &SignedHead) -> String {
        format!(
            "heads/{}/{:020}.json",
            head.head.log_id, head.head.tree_size
        )
    }

    /// Writes the head under Object Lock (compliance mode, `retention_days`), then announces it.
    ///
    /// # Errors
    /// When S3 or EventBridge refuses.
    pub async fn publish(&self, head: &SignedHead) -> Result<String, AnchorError> {
        let key = Self::key(head);
        let body = serde_json::to_vec(head).unwrap_or_default();
        let until = Utc::now() + chrono::Duration::days(i64::from(self.retention_days));
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(body.into())
            .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
            .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(until.timestamp()))
            .send()
            .await
            .map_err(|e| self.failed("PutObject", DisplayErrorContext(e)))?;
        if let Some((events, bus)) = &self.events {
            let detail = serde_json::json!({"head": head, "bucket": self.bucket, "key": key});
            let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source(SOURCE)
                .detail_type(DETAIL_TYPE)
                .detail(detail.to_string())
                .build();
            let out = events
                .put_events()
                .entries(entry)
                .send()
                .await
                .map_err(|e| AnchorError::Events(DisplayErrorContext(e).to_string()))?;
            if out.failed_entry_count() > 0 {
                return Err(AnchorError::Events("the event was not accepted".to_owned()));
            }
        }
        Ok(key)
    }

    /// Every head anchored for the log, in size order.
    ///
    /// # Errors
    /// When S3 refuses or an object is not a head.
    pub async fn heads(&self, log_id: &str) -> Result<Vec<SignedHead>, AnchorError> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("heads/{log_id}/"))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.failed("ListObjectsV2", DisplayErrorContext(e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        let mut heads = Vec::with_capacity(keys.len());
        for key in keys {
            let object = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.failed("GetObject", DisplayErrorContext(e)))?;
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|e| self.failed("GetObject", e))?
                .into_bytes();
            let head = serde_json::from_slice(&bytes).map_err(|e| AnchorError::Malformed {
                key: key.clone(),
                message: e.to_string(),
            })?;
            heads.push(head);
        }
        Ok(heads)
    }
}
