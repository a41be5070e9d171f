//! CloudTrail records of AWS Signer's revocation calls (`RevokeSignature`,
//! `RevokeSigningProfile`, event source `signer.amazonaws.com`): signatures that verified may
//! no longer be trusted, so the digests whose verifications name the revoked job or profile
//! version are judged again (docs/SIGNATURES.md, "Revocation and re-verification").

use serde::Serialize;
use serde_json::Value;

use super::json::{opt_object, opt_str};
use super::{Change, ParseError, identifier};
use crate::domain::AccountId;

/// The CloudTrail event source of AWS Signer.
pub const SIGNER_EVENT_SOURCE: &str = "signer.amazonaws.com";

/// What a successful Signer revocation call revoked. Identifiers are kept as the call named
/// them; the ARNs they stand for are built with the event's region and account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name")]
pub enum SignerRevocation {
    /// `RevokeSignature`: every signature of one signing job.
    RevokeSignature {
        job_id: String,
        /// `jobOwner`, when the job belongs to another account than the caller's.
        job_owner: Option<AccountId>,
        reason: Option<String>,
    },
    /// `RevokeSigningProfile`: signatures of one profile version from an effective time on.
    RevokeSigningProfile {
        profile_name: String,
        profile_version: String,
        /// `effectiveTime` as recorded (kept as text: Signer answers revocation itself).
        effective_time: Option<String>,
        reason: Option<String>,
    },
}

impl SignerRevocation {
    pub fn name(&self) -> &'static str {
        match self {
            Self::RevokeSignature { .. } => "RevokeSignature",
            Self::RevokeSigningProfile { .. } => "RevokeSigningProfile",
        }
    }

    /// The ARN stored verifications name (`signer_job_arn` or the profile version ARN) for
    /// what this call revoked, in `region` of `account` (the record's recipient).
    pub fn revoked_arn(&self, region: &str, account: &AccountId) -> String {
        let partition = partition_of(region);
        match self {
            Self::RevokeSignature {
                job_id, job_owner, ..
            } => {
                let owner = job_owner.as_ref().unwrap_or(account);
                format!(
                    "arn:{partition}:signer:{region}:{}:/signing-jobs/{job_id}",
                    owner.as_str()
                )
            }
            Self::RevokeSigningProfile {
                profile_name,
                profile_version,
                ..
            } => format!(
                "arn:{partition}:signer:{region}:{}:/signing-profiles/{profile_name}/{profile_version}",
                account.as_str()
            ),
        }
    }
}

/// The AWS partition of a region name.
fn partition_of(region: &str) -> &'static str {
    if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("cn-") {
        "aws-cn"
    } else {
        "aws"
    }
}

/// Reasons are free text from the caller; they are kept short in evidence.
const MAX_REASON_CHARS: usize = 300;

/// The change a successful Signer call makes; `Ignored` for calls other than the two
/// revocations and for a record without the identifiers they need.
pub(super) fn change(name: &str, detail: &Value) -> Result<Change, ParseError> {
    let params = opt_object(detail, "requestParameters")?;
    let text = |field: &'static str| -> Result<Option<String>, ParseError> {
        Ok(params
            .map(|p| opt_str(p, field))
            .transpose()?
            .flatten()
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    };
    let reason = text("reason")?.map(|r| r.chars().take(MAX_REASON_CHARS).collect());
    let revocation = match name {
        "RevokeSignature" => {
            let Some(job_id) = text("jobId")?.filter(|id| is_resource_id(id)) else {
                return Ok(missing(name, "jobId"));
            };
            let job_owner = text("jobOwner")?
                .map(|owner| identifier("requestParameters.jobOwner", AccountId::parse(&owner)))
                .transpose()?;
            SignerRevocation::RevokeSignature {
                job_id,
                job_owner,
                reason,
            }
        }
        "RevokeSigningProfile" => {
            let (Some(profile_name), Some(profile_version)) = (
                text("profileName")?.filter(|n| is_resource_id(n)),
                text("profileVersion")?.filter(|v| is_resource_id(v)),
            ) else {
                return Ok(missing(name, "profileName and profileVersion"));
            };
            SignerRevocation::RevokeSigningProfile {
                profile_name,
                profile_version,
                effective_time: effective_time(params)?,
                reason,
            }
        }
        _ => {
            return Ok(Change::Ignored {
                reason: format!("CloudTrail Signer call {name} is not evaluated by this version"),
            });
        }
    };
    Ok(Change::SignerRevoked { revocation })
}

/// `effectiveTime` as CloudTrail renders it: a string, or epoch seconds as a number.
fn effective_time(params: Option<&Value>) -> Result<Option<String>, ParseError> {
    Ok(match params.and_then(|p| p.get("effectiveTime")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.chars().take(64).collect()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(ParseError::WrongType {
                field: "requestParameters.effectiveTime",
                expected: "a string or a number",
            });
        }
    })
}

/// Signer job ids, profile names and versions: letters, digits, `_`, `-`, `.`, at most 128,
/// so they can be put into an ARN and a query without escaping.
fn is_resource_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn missing(name: &str, what: &str) -> Change {
    Change::Ignored {
        reason: format!("CloudTrail Signer call {name} carries no usable {what}"),
    }
}
