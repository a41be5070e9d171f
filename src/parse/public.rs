//! CloudTrail records of ECR Public calls (event source `ecr-public.amazonaws.com`) that
//! change what ECR.4 judges: a public repository created or deleted, or its tags changed.
//! The event is about the account's public registry, so its region is the `ecr-public`
//! pseudo-region (docs/CONTROLS.md, "ECR.4").

use serde_json::Value;

use super::cloudtrail::RepositoryCall;
use super::json::{opt_bool, opt_object, opt_str};
use super::{Change, ParseError, identifier};
use crate::domain::RepositoryName;

/// The CloudTrail event source of Amazon ECR Public.
pub const ECR_PUBLIC_EVENT_SOURCE: &str = "ecr-public.amazonaws.com";

/// The change an ECR Public record makes; other calls are not evaluated.
pub(super) fn change(name: &str, detail: &Value) -> Result<Change, ParseError> {
    let params = opt_object(detail, "requestParameters")?;
    let repository = repository(params)?;
    if let Some(error_code) = opt_str(detail, "errorCode")? {
        return Ok(Change::FailedApiCall {
            event_name: name.to_owned(),
            repository,
            error_code: error_code.to_owned(),
            error_message: opt_str(detail, "errorMessage")?.map(|m| m.chars().take(500).collect()),
            requested: None,
        });
    }
    let call = match name {
        "CreateRepository" => RepositoryCall::CreateRepository,
        "DeleteRepository" => RepositoryCall::DeleteRepository {
            force: params.map(|p| opt_bool(p, "force")).transpose()?.flatten(),
        },
        "TagResource" => RepositoryCall::TagResource,
        "UntagResource" => RepositoryCall::UntagResource,
        _ => return Ok(ignored(name)),
    };
    Ok(match repository {
        Some(repository) => Change::RepositoryChanged { repository, call },
        None => ignored(name),
    })
}

/// The repository a call names: `repositoryName`, or the name in `resourceArn`
/// (`arn:aws:ecr-public::ACCOUNT:repository/NAME`) for the tagging calls.
fn repository(params: Option<&Value>) -> Result<Option<RepositoryName>, ParseError> {
    let Some(params) = params else {
        return Ok(None);
    };
    if let Some(name) = opt_str(params, "repositoryName")? {
        return identifier(
            "requestParameters.repositoryName",
            RepositoryName::parse(name),
        )
        .map(Some);
    }
    opt_str(params, "resourceArn")?
        .map(|arn| {
            identifier(
                "requestParameters.resourceArn",
                RepositoryName::from_arn(arn),
            )
        })
        .transpose()
}

fn ignored(name: &str) -> Change {
    Change::Ignored {
        reason: format!("CloudTrail ECR Public call {name} is not evaluated by this version"),
    }
}
