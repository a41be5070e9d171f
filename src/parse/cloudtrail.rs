//! CloudTrail ECR records, whether delivered by EventBridge (`AWS API Call via CloudTrail`)
//! or read from a log file's `Records` array.
//!
//! A record with `errorCode` changed nothing: it becomes [`Change::FailedApiCall`] so the
//! attempt is still evidence. `PutImage` is the one record that names who pushed a digest.

use serde::Serialize;
use serde_json::Value;

use super::json::{opt_bool, opt_id, opt_object, opt_str, req_str, time};
use super::{AuditEvent, Change, EnvelopeFallback, ParseContext, ParseError, identifier};
use crate::domain::{AccountId, Actor, Digest, Region, RepositoryName};

const CLOUDTRAIL_DETAIL_TYPE: &str = "AWS API Call via CloudTrail";

/// A successful call that changes one repository's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name")]
pub enum RepositoryCall {
    CreateRepository,
    /// `force` deletes a repository that still holds images; its images are marked deleted
    /// once the repository is read back absent.
    DeleteRepository {
        force: Option<bool>,
    },
    PutImageTagMutability {
        image_tag_mutability: Option<String>,
    },
    PutLifecyclePolicy,
    DeleteLifecyclePolicy,
    PutImageScanningConfiguration {
        scan_on_push: Option<bool>,
    },
    /// `policy_text` is the whole new policy the request set (`requestParameters.policyText`);
    /// it becomes the repository's state at the request's time (`plan::requested_state`). It
    /// is left out of the event's evidence `change` (a policy may be 10 KiB): the evidence of
    /// the request is the control verdicts it caused and the repository row's facts.
    SetRepositoryPolicy {
        #[serde(skip)]
        policy_text: Option<String>,
    },
    DeleteRepositoryPolicy,
    /// ECR Public `TagResource` (ECR.4).
    TagResource,
    /// ECR Public `UntagResource` (ECR.4).
    UntagResource,
    /// Not a CloudTrail call: a reconcile sweep saw the repository differ from what was
    /// stored (settings changed, created or deleted without an event reaching us).
    ObservedByReconcile,
}

impl RepositoryCall {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ObservedByReconcile => "ObservedByReconcile",
            Self::CreateRepository => "CreateRepository",
            Self::DeleteRepository { .. } => "DeleteRepository",
            Self::PutImageTagMutability { .. } => "PutImageTagMutability",
            Self::PutLifecyclePolicy => "PutLifecyclePolicy",
            Self::DeleteLifecyclePolicy => "DeleteLifecyclePolicy",
            Self::PutImageScanningConfiguration { .. } => "PutImageScanningConfiguration",
            Self::SetRepositoryPolicy { .. } => "SetRepositoryPolicy",
            Self::DeleteRepositoryPolicy => "DeleteRepositoryPolicy",
            Self::TagResource => "TagResource",
            Self::UntagResource => "UntagResource",
        }
    }
}

/// A successful call that changes settings for every repository of a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name")]
pub enum RegistryCall {
    PutRegistryScanningConfiguration {
        scan_type: Option<String>,
    },
    PutRegistryPolicy,
    DeleteRegistryPolicy,
    PutSigningConfiguration,
    DeleteSigningConfiguration,
    /// Pull-through cache rules and repository creation templates decide ECRA.4.
    CreatePullThroughCacheRule {
        ecr_repository_prefix: Option<String>,
    },
    DeletePullThroughCacheRule {
        ecr_repository_prefix: Option<String>,
    },
    CreateRepositoryCreationTemplate {
        prefix: Option<String>,
    },
    UpdateRepositoryCreationTemplate {
        prefix: Option<String>,
    },
    DeleteRepositoryCreationTemplate {
        prefix: Option<String>,
    },
    /// Not a CloudTrail call: ECR's own `ECR Scan Resource Change` event, which reports that
    /// enhanced scanning frequencies changed for the repositories it names; empty when it names
    /// none that can be read (then every known repository is re-read).
    ScanResourceChange {
        repositories: Vec<RepositoryName>,
    },
}

impl RegistryCall {
    pub fn name(&self) -> &'static str {
        match self {
            Self::PutRegistryScanningConfiguration { .. } => "PutRegistryScanningConfiguration",
            Self::PutRegistryPolicy => "PutRegistryPolicy",
            Self::DeleteRegistryPolicy => "DeleteRegistryPolicy",
            Self::PutSigningConfiguration => "PutSigningConfiguration",
            Self::DeleteSigningConfiguration => "DeleteSigningConfiguration",
            Self::CreatePullThroughCacheRule { .. } => "CreatePullThroughCacheRule",
            Self::DeletePullThroughCacheRule { .. } => "DeletePullThroughCacheRule",
            Self::CreateRepositoryCreationTemplate { .. } => "CreateRepositoryCreationTemplate",
            Self::UpdateRepositoryCreationTemplate { .. } => "UpdateRepositoryCreationTemplate",
            Self::DeleteRepositoryCreationTemplate { .. } => "DeleteRepositoryCreationTemplate",
            Self::ScanResourceChange { .. } => "ECR Scan Resource Change",
        }
    }
}

/// Parses one record of a CloudTrail log file.
pub(super) fn parse_record(record: &Value, ctx: &ParseContext) -> Result<AuditEvent, ParseError> {
    let fallback = EnvelopeFallback {
        account: None,
        region: None,
        time: None,
        detail_type: CLOUDTRAIL_DETAIL_TYPE.to_owned(),
        ctx: ctx.clone(),
    };
    parse_detail(record, &fallback, None)
}

/// Parses a CloudTrail record, borrowing from the envelope what the record lacks.
pub(super) fn parse_detail(
    detail: &Value,
    fallback: &EnvelopeFallback,
    envelope_id: Option<&str>,
) -> Result<AuditEvent, ParseError> {
    let id = match opt_id(detail, "eventID")? {
        Some(id) => id,
        None => envelope_id.ok_or(ParseError::MissingField("eventID"))?,
    };
    let event_time = match opt_str(detail, "eventTime")? {
        Some(t) => time(t, "eventTime")?,
        None => fallback.time.ok_or(ParseError::MissingField("eventTime"))?,
    };
    let account = record_account(detail)?
        .or_else(|| fallback.account.clone())
        .or_else(|| fallback.ctx.default_account.clone())
        .ok_or(ParseError::NoAccount)?;
    let region = match opt_str(detail, "awsRegion")? {
        Some(r) => identifier("awsRegion", Region::parse(r))?,
        None => fallback
            .region
            .clone()
            .or_else(|| fallback.ctx.default_region.clone())
            .ok_or(ParseError::NoRegion)?,
    };
    // ECR Public records say us-east-1; their repositories live in the `ecr-public` pseudo-region.
    let region = if opt_str(detail, "eventSource")? == Some(super::public::ECR_PUBLIC_EVENT_SOURCE)
    {
        Region::ecr_public()
    } else {
        region
    };
    let actor = actor(detail)?;
    let change = change(detail)?;
    Ok(AuditEvent {
        id: id.to_owned(),
        time: event_time,
        account,
        region,
        detail_type: fallback.detail_type.clone(),
        actor,
        change,
        claimed_time: None,
    })
}

fn record_account(detail: &Value) -> Result<Option<AccountId>, ParseError> {
    // The registry's owner is the recipient; the caller may be another account.
    if let Some(account) = opt_str(detail, "recipientAccountId")? {
        return identifier("recipientAccountId", AccountId::parse(account)).map(Some);
    }
    match opt_object(detail, "userIdentity")? {
        Some(identity) => opt_str(identity, "accountId")?
            .map(|a| identifier("userIdentity.accountId", AccountId::parse(a)))
            .transpose(),
        None => Ok(None),
    }
}

fn actor(detail: &Value) -> Result<Option<Actor>, ParseError> {
    let Some(identity) = opt_object(detail, "userIdentity")? else {
        return Ok(None);
    };
    let arn = opt_str(identity, "arn")?
        .or(opt_str(identity, "invokedBy")?)
        .or(opt_str(identity, "principalId")?);
    let Some(arn) = arn else {
        return Ok(None);
    };
    let issuer_arn = opt_object(identity, "sessionContext")?
        .map(|session| opt_object(session, "sessionIssuer"))
        .transpose()?
        .flatten()
        .map(|issuer| opt_str(issuer, "arn"))
        .transpose()?
        .flatten();
    Ok(Some(Actor {
        arn: arn.to_owned(),
        identity_type: opt_str(identity, "type")?.map(str::to_owned),
        issuer_arn: issuer_arn.map(str::to_owned),
    }))
}

fn change(detail: &Value) -> Result<Change, ParseError> {
    let source = opt_str(detail, "eventSource")?.unwrap_or("");
    let name = req_str(detail, "eventName")?;
    if source == super::signer::SIGNER_EVENT_SOURCE {
        return signer_change(name, detail);
    }
    if source == super::public::ECR_PUBLIC_EVENT_SOURCE {
        return super::public::change(name, detail);
    }
    if source != "ecr.amazonaws.com" {
        return Ok(Change::Ignored {
            reason: format!("CloudTrail event {name} from {source:?} is not about ECR"),
        });
    }
    let params = opt_object(detail, "requestParameters")?;
    let repository = params
        .map(|p| opt_str(p, "repositoryName"))
        .transpose()?
        .flatten()
        .map(|name| {
            identifier(
                "requestParameters.repositoryName",
                RepositoryName::parse(name),
            )
        })
        .transpose()?;

    if let Some(error_code) = opt_str(detail, "errorCode")? {
        let requested = match repository {
            Some(_) => repository_call(name, params)?,
            None => None,
        };
        return Ok(Change::FailedApiCall {
            event_name: name.to_owned(),
            repository,
            error_code: error_code.to_owned(),
            error_message: opt_str(detail, "errorMessage")?.map(|m| m.chars().take(500).collect()),
            requested,
        });
    }
    if name == "PolicyExecutionEvent" {
        return super::ledger::lifecycle_expiry(detail);
    }
    if let Some(call) = registry_call(name, params)? {
        return Ok(Change::RegistryChanged { call });
    }
    let Some(repository) = repository else {
        return Ok(not_evaluated(name));
    };
    if name == "PutImage" {
        return put_image(detail, repository, params);
    }
    if name == "BatchDeleteImage" {
        return super::ledger::batch_delete_image(detail, repository, params);
    }
    Ok(match repository_call(name, params)? {
        Some(call) => Change::RepositoryChanged { repository, call },
        None => not_evaluated(name),
    })
}

/// A Signer record: a failed call changed nothing but is evidence, like a failed ECR call.
fn signer_change(name: &str, detail: &Value) -> Result<Change, ParseError> {
    if let Some(error_code) = opt_str(detail, "errorCode")? {
        return Ok(Change::FailedApiCall {
            event_name: name.to_owned(),
            repository: None,
            error_code: error_code.to_owned(),
            error_message: opt_str(detail, "errorMessage")?.map(|m| m.chars().take(500).collect()),
            requested: None,
        });
    }
    super::signer::change(name, detail)
}

fn not_evaluated(name: &str) -> Change {
    Change::Ignored {
        reason: format!("CloudTrail ECR call {name} is not evaluated by this version"),
    }
}

/// A string request parameter, if the call carried it.
fn param(params: Option<&Value>, field: &'static str) -> Result<Option<String>, ParseError> {
    Ok(params
        .map(|p| opt_str(p, field))
        .transpose()?
        .flatten()
        .map(str::to_owned))
}

/// The registry-wide calls that change posture; `None` for every other call.
fn registry_call(name: &str, params: Option<&Value>) -> Result<Option<RegistryCall>, ParseError> {
    Ok(Some(match name {
        "PutRegistryScanningConfiguration" => RegistryCall::PutRegistryScanningConfiguration {
            scan_type: param(params, "scanType")?,
        },
        "PutRegistryPolicy" => RegistryCall::PutRegistryPolicy,
        "DeleteRegistryPolicy" => RegistryCall::DeleteRegistryPolicy,
        "PutSigningConfiguration" => RegistryCall::PutSigningConfiguration,
        "DeleteSigningConfiguration" => RegistryCall::DeleteSigningConfiguration,
        "CreatePullThroughCacheRule" => RegistryCall::CreatePullThroughCacheRule {
            ecr_repository_prefix: param(params, "ecrRepositoryPrefix")?,
        },
        "DeletePullThroughCacheRule" => RegistryCall::DeletePullThroughCacheRule {
            ecr_repository_prefix: param(params, "ecrRepositoryPrefix")?,
        },
        "CreateRepositoryCreationTemplate" => RegistryCall::CreateRepositoryCreationTemplate {
            prefix: param(params, "prefix")?,
        },
        "UpdateRepositoryCreationTemplate" => RegistryCall::UpdateRepositoryCreationTemplate {
            prefix: param(params, "prefix")?,
        },
        "DeleteRepositoryCreationTemplate" => RegistryCall::DeleteRepositoryCreationTemplate {
            prefix: param(params, "prefix")?,
        },
        _ => return Ok(None),
    }))
}

/// The repository calls that change posture (other than `PutImage`); `None` for the rest.
fn repository_call(
    name: &str,
    params: Option<&Value>,
) -> Result<Option<RepositoryCall>, ParseError> {
    Ok(Some(match name {
        "CreateRepository" => RepositoryCall::CreateRepository,
        "DeleteRepository" => RepositoryCall::DeleteRepository {
            force: params.map(|p| opt_bool(p, "force")).transpose()?.flatten(),
        },
        "PutImageTagMutability" => RepositoryCall::PutImageTagMutability {
            image_tag_mutability: param(params, "imageTagMutability")?,
        },
        "PutLifecyclePolicy" => RepositoryCall::PutLifecyclePolicy,
        "DeleteLifecyclePolicy" => RepositoryCall::DeleteLifecyclePolicy,
        "PutImageScanningConfiguration" => RepositoryCall::PutImageScanningConfiguration {
            scan_on_push: params
                .map(|p| opt_object(p, "imageScanningConfiguration"))
                .transpose()?
                .flatten()
                .map(|c| opt_bool(c, "scanOnPush"))
                .transpose()?
                .flatten(),
        },
        "SetRepositoryPolicy" => RepositoryCall::SetRepositoryPolicy {
            policy_text: param(params, "policyText")?,
        },
        "DeleteRepositoryPolicy" => RepositoryCall::DeleteRepositoryPolicy,
        _ => return Ok(None),
    }))
}

fn put_image(
    detail: &Value,
    repository: RepositoryName,
    params: Option<&Value>,
) -> Result<Change, ParseError> {
    let digest = opt_object(detail, "responseElements")?
        .map(|r| opt_object(r, "image"))
        .transpose()?
        .flatten()
        .map(|image| opt_object(image, "imageId"))
        .transpose()?
        .flatten()
        .map(|id| opt_str(id, "imageDigest"))
        .transpose()?
        .flatten();
    let Some(digest) = digest else {
        // CloudTrail truncates large PutImage records; without the digest the pusher cannot
        // be joined to an image, but the record is still kept as evidence.
        return Ok(Change::Ignored {
            reason: "PutImage record carries no responseElements.image.imageId.imageDigest"
                .to_owned(),
        });
    };
    Ok(Change::ImagePushRecorded {
        repository,
        digest: identifier(
            "responseElements.image.imageId.imageDigest",
            Digest::parse(digest),
        )?,
        tag: params
            .map(|p| opt_str(p, "imageTag"))
            .transpose()?
            .flatten()
            .map(str::to_owned),
    })
}
