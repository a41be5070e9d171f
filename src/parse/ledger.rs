//! The events that change the ledger of digests beyond a push or a single delete: replication
//! into this registry, a pull-through cache sync, lifecycle expiry (CloudTrail
//! `PolicyExecutionEvent`) and `BatchDeleteImage`.
//!
//! Each is a hint: the digests it names are read back from ECR before a row is written or
//! marked deleted. A list of digests is bounded ([`MAX_DIGESTS_PER_EVENT`]); the rest are
//! counted and left to the next reconcile sweep.

use serde::Serialize;
use serde_json::Value;

use super::json::{opt_object, opt_str, req_str};
use super::{Change, ParseError, identifier};
use crate::domain::{Digest, RepositoryName};

/// The most digests one event may have read back and marked: `BatchDeleteImage` takes at most
/// 100 image ids, while one lifecycle evaluation may expire thousands; each named digest costs
/// one ECR read, so the rest are counted ([`Change::ImagesDeleted`] `omitted`) and left to the
/// reconcile sweep, which finds them gone.
pub const MAX_DIGESTS_PER_EVENT: usize = 100;

/// Why several digests of one repository were deleted at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Removal {
    /// A lifecycle policy expired them (CloudTrail `PolicyExecutionEvent`); `rules` are the
    /// policy's rules the event lists.
    LifecyclePolicy { rules: Vec<LifecycleRule> },
    /// A `BatchDeleteImage` call; `failures` is how many ids AWS reported it could not delete.
    BatchDeleteImage { failures: usize },
}

/// One rule of a lifecycle policy, as the expiry event lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleRule {
    pub priority: i64,
    pub description: Option<String>,
}

/// One digest an event says was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedImage {
    pub digest: Digest,
    /// The rule that expired it (lifecycle only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_priority: Option<i64>,
    /// Removed by tag only: the call asked for a tag, which deletes the digest only with its
    /// last tag; the re-read decides.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub by_tag: bool,
}

fn repository(detail: &Value) -> Result<RepositoryName, ParseError> {
    identifier(
        "repository-name",
        RepositoryName::parse(req_str(detail, "repository-name")?),
    )
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_owned)
}

/// `ECR Replication Action`, delivered in the destination account and region.
pub(super) fn replication_action(detail: &Value) -> Result<Change, ParseError> {
    Ok(Change::ImageReplicated {
        repository: repository(detail)?,
        digest: identifier(
            "image-digest",
            Digest::parse(req_str(detail, "image-digest")?),
        )?,
        tag: owned(opt_str(detail, "image-tag")?),
        result: opt_str(detail, "result")?.unwrap_or("SUCCESS").to_owned(),
        source_account: owned(opt_str(detail, "source-account")?),
        source_region: owned(opt_str(detail, "source-region")?),
    })
}

/// `ECR Pull Through Cache Action`: a successful sync must name the digest it cached.
pub(super) fn pull_through_cache_action(detail: &Value) -> Result<Change, ParseError> {
    let sync_status = req_str(detail, "sync-status")?.to_owned();
    let digest = opt_str(detail, "image-digest")?
        .map(|d| identifier("image-digest", Digest::parse(d)))
        .transpose()?;
    if sync_status == "SUCCESS" && digest.is_none() {
        return Err(ParseError::MissingField("image-digest"));
    }
    Ok(Change::PullThroughCached {
        repository: repository(detail)?,
        digest,
        tag: owned(opt_str(detail, "image-tag")?),
        sync_status,
        upstream_registry_url: owned(opt_str(detail, "upstream-registry-url")?),
        ecr_repository_prefix: owned(opt_str(detail, "ecr-repository-prefix")?),
    })
}

/// The digests a multi-digest event keeps, how many more it named, and why those were left.
struct Bounded {
    images: Vec<RemovedImage>,
    omitted: usize,
    omitted_reason: Option<String>,
}

/// Keeps at most [`MAX_DIGESTS_PER_EVENT`] distinct digests.
fn bounded(mut images: Vec<RemovedImage>) -> Bounded {
    let mut seen = std::collections::HashSet::new();
    images.retain(|image| seen.insert(image.digest.clone()));
    let omitted = images.len().saturating_sub(MAX_DIGESTS_PER_EVENT);
    images.truncate(MAX_DIGESTS_PER_EVENT);
    let omitted_reason = (omitted > 0).then(|| {
        format!(
            "the event names {} digests; the first {MAX_DIGESTS_PER_EVENT} are read back, the other \
             {omitted} are left to the next reconcile sweep (one ECR read each)",
            omitted + MAX_DIGESTS_PER_EVENT
        )
    });
    Bounded {
        images,
        omitted,
        omitted_reason,
    }
}

fn array<'a>(object: &'a Value, field: &'static str) -> Result<&'a [Value], ParseError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ParseError::WrongType {
            field,
            expected: "an array",
        }),
    }
}

/// `AWS Service Event via CloudTrail` with a `PolicyExecutionEvent` record: the digests a
/// lifecycle policy expired (`serviceEventDetails.lifecycleEventImageActions`).
pub(super) fn lifecycle_expiry(detail: &Value) -> Result<Change, ParseError> {
    let details = opt_object(detail, "serviceEventDetails")?
        .ok_or(ParseError::MissingField("serviceEventDetails"))?;
    let repository = identifier(
        "serviceEventDetails.repositoryName",
        RepositoryName::parse(req_str(details, "repositoryName")?),
    )?;
    let rules = match opt_object(details, "lifecycleEventPolicy")? {
        Some(policy) => array(policy, "lifecycleEventRules")?
            .iter()
            .map(lifecycle_rule)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let images = array(details, "lifecycleEventImageActions")?
        .iter()
        .map(expired_image)
        .collect::<Result<Vec<_>, _>>()?;
    let kept = bounded(images);
    Ok(Change::ImagesDeleted {
        repository,
        removal: Removal::LifecyclePolicy { rules },
        images: kept.images,
        omitted: kept.omitted,
        omitted_reason: kept.omitted_reason,
    })
}

fn priority(value: &Value) -> Result<i64, ParseError> {
    value
        .get("rulePriority")
        .and_then(Value::as_i64)
        .ok_or(ParseError::WrongType {
            field: "rulePriority",
            expected: "an integer",
        })
}

fn lifecycle_rule(rule: &Value) -> Result<LifecycleRule, ParseError> {
    if !rule.is_object() {
        return Err(ParseError::WrongType {
            field: "lifecycleEventRules",
            expected: "an array of objects",
        });
    }
    Ok(LifecycleRule {
        priority: priority(rule)?,
        description: owned(opt_str(rule, "description")?),
    })
}

fn expired_image(action: &Value) -> Result<RemovedImage, ParseError> {
    if !action.is_object() {
        return Err(ParseError::WrongType {
            field: "lifecycleEventImageActions",
            expected: "an array of objects",
        });
    }
    let image = opt_object(action, "lifecycleEventImage")?
        .ok_or(ParseError::MissingField("lifecycleEventImage"))?;
    Ok(RemovedImage {
        digest: identifier(
            "lifecycleEventImage.digest",
            Digest::parse(req_str(image, "digest")?),
        )?,
        rule_priority: action
            .get("rulePriority")
            .map(|_| priority(action))
            .transpose()?,
        by_tag: false,
    })
}

/// A successful CloudTrail `BatchDeleteImage`: the ids AWS answered as deleted
/// (`responseElements.imageIds`), each asked for by digest or by tag (`requestParameters.imageIds`).
pub(super) fn batch_delete_image(
    detail: &Value,
    repository: RepositoryName,
    params: Option<&Value>,
) -> Result<Change, ParseError> {
    let requested = match params {
        Some(params) => array(params, "imageIds")?,
        None => &[],
    };
    let by_tag: std::collections::HashSet<&str> = requested
        .iter()
        .filter(|id| id.get("imageDigest").is_none())
        .filter_map(|id| id.get("imageTag").and_then(Value::as_str))
        .collect();
    let response = opt_object(detail, "responseElements")?;
    let (deleted, failures) = match response {
        Some(response) => (
            array(response, "imageIds")?,
            array(response, "failures")?.len(),
        ),
        // A record without the answer: the ids asked for by digest are re-read all the same.
        None => (requested, 0),
    };
    let mut images = Vec::with_capacity(deleted.len());
    for id in deleted {
        if !id.is_object() {
            return Err(ParseError::WrongType {
                field: "imageIds",
                expected: "an array of objects",
            });
        }
        let Some(digest) = opt_str(id, "imageDigest")? else {
            continue;
        };
        let tag = opt_str(id, "imageTag")?;
        images.push(RemovedImage {
            digest: identifier("imageIds.imageDigest", Digest::parse(digest))?,
            rule_priority: None,
            by_tag: tag.is_some_and(|tag| by_tag.contains(tag)),
        });
    }
    let kept = bounded(images);
    Ok(Change::ImagesDeleted {
        repository,
        removal: Removal::BatchDeleteImage { failures },
        images: kept.images,
        omitted: kept.omitted,
        omitted_reason: kept.omitted_reason,
    })
}
