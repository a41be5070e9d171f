//! Pure parsing of what arrives on the queue (or from a file) into typed audit events.
//!
//! Input: the raw bytes of an EventBridge envelope, or of one CloudTrail record from a log
//! file. Output: an [`AuditEvent`] whose [`Change`] says what the event hints at, or a
//! [`ParseError`] when the bytes can never be understood (the message is then rejected and
//! kept verbatim). An event that is well formed but outside what ecr-audit evaluates is not an
//! error: it becomes [`Change::Ignored`] with the reason, so nothing is silently dropped.
//!
//! Invariants: no I/O, no panics on any input (a property test feeds arbitrary JSON), and the
//! event's identity is its own id (`detail.eventID` for CloudTrail, the envelope `id` otherwise)
//! so that redeliveries collapse downstream.

mod cloudtrail;
mod json;
mod ledger;
mod public;
mod signer;

pub use json::MAX_MESSAGE_STRING;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::domain::{AccountId, Actor, Digest, InvalidIdentifier, Region, RepositoryName};
use crate::telemetry::{EventKind, RejectionCode};

pub use cloudtrail::{RegistryCall, RepositoryCall};
pub use ledger::{LifecycleRule, MAX_DIGESTS_PER_EVENT, Removal, RemovedImage};
pub use signer::SignerRevocation;

/// Which scanner reported a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanSource {
    /// ECR basic scanning (`ECR Image Scan`).
    Basic,
    /// Amazon Inspector enhanced scanning (`Inspector2 Scan`).
    Enhanced,
}

/// What the parser may fall back on when the event itself does not say.
#[derive(Debug, Clone, Default)]
pub struct ParseContext {
    /// The account of the caller's own credentials; used when an envelope lacks `account`.
    pub default_account: Option<AccountId>,
    /// Used when neither the envelope nor the record names a region.
    pub default_region: Option<Region>,
}

/// How the bytes of one message are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// An EventBridge event as SQS receives it (the event JSON is the body).
    Envelope,
    /// One element of a CloudTrail log file's `Records` array.
    CloudTrailRecord,
}

/// One event, understood.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// The idempotency key: CloudTrail `eventID` or the EventBridge `id`.
    pub id: String,
    /// When the event happened (CloudTrail `eventTime`, else the envelope `time`).
    pub time: DateTime<Utc>,
    pub account: AccountId,
    pub region: Region,
    /// The EventBridge detail-type, or `AWS API Call via CloudTrail` for log records.
    pub detail_type: String,
    /// Who caused it, for CloudTrail events.
    pub actor: Option<Actor>,
    pub change: Change,
    /// The time the message claimed, when [`bound_event_time`] did not take it; `time` is
    /// then the bound it was clamped to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_time: Option<DateTime<Utc>>,
}

/// How far after the queue received a message its event may be dated (clock skew between
/// AWS services).
pub const EVENT_TIME_AHEAD: chrono::Duration = chrono::Duration::minutes(5);
/// How long before the queue received a message its event may have happened: EventBridge
/// delivers CloudTrail calls within minutes and ECR's own events at once; a day leaves room
/// for retries and redrives without letting a message date itself arbitrarily far back.
pub const EVENT_TIME_BEHIND: chrono::Duration = chrono::Duration::hours(24);

/// Holds an event's time to the window around `sent_at` (the queue's own `SentTimestamp`, which
/// the sender cannot choose): a time after `sent_at` + [`EVENT_TIME_AHEAD`] or before
/// `sent_at` − [`EVENT_TIME_BEHIND`] is clamped to the nearer bound, and the claimed time is
/// kept in [`AuditEvent::claimed_time`]. Returns whether the time was clamped.
pub fn bound_event_time(event: &mut AuditEvent, sent_at: DateTime<Utc>) -> bool {
    let (earliest, latest) = (sent_at - EVENT_TIME_BEHIND, sent_at + EVENT_TIME_AHEAD);
    let bounded = event.time.clamp(earliest, latest);
    if bounded == event.time {
        return false;
    }
    event.claimed_time = Some(event.time);
    event.time = bounded;
    true
}

/// The detail-type of a CloudTrail service event (lifecycle expiry's `PolicyExecutionEvent`).
pub const SERVICE_EVENT_DETAIL_TYPE: &str = "AWS Service Event via CloudTrail";

/// What an event tells us may have changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// `ECR Image Action` PUSH: a manifest now exists under this digest.
    ImagePushed {
        repository: RepositoryName,
        digest: Digest,
        tag: Option<String>,
        manifest_media_type: Option<String>,
        artifact_media_type: Option<String>,
    },
    /// `ECR Image Action` DELETE.
    ImageDeleted {
        repository: RepositoryName,
        digest: Digest,
        tag: Option<String>,
    },
    /// `ECR Image Action` UPDATE_STORAGE_CLASS (archive or restore), kept as data.
    ImageStorageClassChanged {
        repository: RepositoryName,
        digest: Digest,
        storage_class: Option<String>,
    },
    /// CloudTrail `PutImage`: who pushed a digest.
    ImagePushRecorded {
        repository: RepositoryName,
        digest: Digest,
        tag: Option<String>,
    },
    /// `ECR Referrer Action`: an artifact referring to a subject image was pushed or deleted;
    /// a hint to re-check the subject's signatures.
    ReferrerChanged {
        repository: RepositoryName,
        digest: Digest,
        action: String,
        artifact_media_type: Option<String>,
    },
    /// A scan finished: `ECR Image Scan` (basic) or `Inspector2 Scan` (enhanced).
    ScanCompleted {
        repository: RepositoryName,
        digest: Digest,
        source: ScanSource,
        /// The raw status as the event reports it (`COMPLETE`, `INITIAL_SCAN_COMPLETE`, …).
        raw_status: String,
        /// Severity → count; a missing severity means 0.
        severity_counts: std::collections::BTreeMap<String, i64>,
    },
    /// `Inspector2 Finding`: a finding about an ECR image appeared or changed status.
    FindingChanged {
        repository: RepositoryName,
        digest: Digest,
        finding_arn: String,
        severity: Option<String>,
        status: Option<String>,
    },
    /// A successful CloudTrail call that changes one repository's posture.
    RepositoryChanged {
        repository: RepositoryName,
        call: RepositoryCall,
    },
    /// A successful CloudTrail call that changes registry-wide settings.
    RegistryChanged { call: RegistryCall },
    /// A successful AWS Signer revocation (CloudTrail `RevokeSignature` or
    /// `RevokeSigningProfile`): the digests whose verified signatures name the revoked job or
    /// profile version are judged again.
    SignerRevoked { revocation: SignerRevocation },
    /// A CloudTrail call that failed: it changed nothing, but the attempt is evidence (who
    /// tried to change what, and why AWS refused).
    FailedApiCall {
        event_name: String,
        repository: Option<RepositoryName>,
        error_code: String,
        error_message: Option<String>,
        /// What the call asked for, when it is a repository call ecr-audit evaluates (e.g.
        /// `PutImageTagMutability` to `MUTABLE`): read from its request parameters, as for a
        /// successful call. Absent from records written before it existed, and for other calls.
        #[serde(skip_serializing_if = "Option::is_none")]
        requested: Option<RepositoryCall>,
    },
    /// `ECR Replication Action`, in the destination account and region: a digest arrived in
    /// this registry from `source_account`/`source_region`. Only a `SUCCESS` is read back and
    /// evaluated here; another result is evidence only.
    ImageReplicated {
        repository: RepositoryName,
        digest: Digest,
        tag: Option<String>,
        result: String,
        source_account: Option<String>,
        source_region: Option<String>,
    },
    /// `ECR Pull Through Cache Action`: a sync from an upstream registry. `SUCCESS` names the
    /// repository and digest it cached (both read back and evaluated); another status is
    /// evidence only.
    PullThroughCached {
        repository: RepositoryName,
        digest: Option<Digest>,
        tag: Option<String>,
        sync_status: String,
        upstream_registry_url: Option<String>,
        ecr_repository_prefix: Option<String>,
    },
    /// Several digests of one repository removed at once: lifecycle expiry (CloudTrail
    /// `PolicyExecutionEvent`) or `BatchDeleteImage`. Each is marked deleted only once ECR no
    /// longer has it; `omitted` counts the digests beyond [`MAX_DIGESTS_PER_EVENT`], left to
    /// the reconcile sweep.
    ImagesDeleted {
        repository: RepositoryName,
        removal: Removal,
        images: Vec<RemovedImage>,
        omitted: usize,
        /// Why `omitted` digests were not read back; absent when none were.
        #[serde(skip_serializing_if = "Option::is_none")]
        omitted_reason: Option<String>,
    },
    /// Well formed, but not something this version evaluates.
    Ignored { reason: String },
}

impl Change {
    /// A bounded label for metrics and the evidence `kind` column.
    pub fn kind(&self) -> &'static str {
        self.event_kind().as_str()
    }

    /// The kind as the `kind` label of `ecr_audit_events_total` (and the `cause_kind` of evidence).
    pub(crate) fn event_kind(&self) -> EventKind {
        match self {
            Self::ImagePushed { .. } => EventKind::ImagePushed,
            Self::ImageDeleted { .. } => EventKind::ImageDeleted,
            Self::ImageStorageClassChanged { .. } => EventKind::ImageStorageClassChanged,
            Self::ImagePushRecorded { .. } => EventKind::ImagePushRecorded,
            Self::ReferrerChanged { .. } => EventKind::ReferrerChanged,
            Self::ScanCompleted { .. } => EventKind::ScanCompleted,
            Self::FindingChanged { .. } => EventKind::FindingChanged,
            Self::RepositoryChanged { .. } => EventKind::RepositoryChanged,
            Self::RegistryChanged { .. } => EventKind::RegistryChanged,
            Self::SignerRevoked { .. } => EventKind::SignerRevoked,
            Self::FailedApiCall { .. } => EventKind::FailedApiCall,
            Self::ImageReplicated { .. } => EventKind::ImageReplicated,
            Self::PullThroughCached { .. } => EventKind::PullThroughCached,
            Self::ImagesDeleted { .. } => EventKind::ImagesDeleted,
            Self::Ignored { .. } => EventKind::Ignored,
        }
    }

    /// The repository the event is about, when it is about one.
    pub fn repository(&self) -> Option<&RepositoryName> {
        match self {
            Self::ImagePushed { repository, .. }
            | Self::ImageDeleted { repository, .. }
            | Self::ImageStorageClassChanged { repository, .. }
            | Self::ImagePushRecorded { repository, .. }
            | Self::ReferrerChanged { repository, .. }
            | Self::ScanCompleted { repository, .. }
            | Self::FindingChanged { repository, .. }
            | Self::RepositoryChanged { repository, .. }
            | Self::ImageReplicated { repository, .. }
            | Self::PullThroughCached { repository, .. }
            | Self::ImagesDeleted { repository, .. } => Some(repository),
            Self::FailedApiCall { repository, .. } => repository.as_ref(),
            Self::RegistryChanged { .. } | Self::SignerRevoked { .. } | Self::Ignored { .. } => {
                None
            }
        }
    }

    /// The digest the event is about, when it is about one.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Self::ImagePushed { digest, .. }
            | Self::ImageDeleted { digest, .. }
            | Self::ImageStorageClassChanged { digest, .. }
            | Self::ImagePushRecorded { digest, .. }
            | Self::ReferrerChanged { digest, .. }
            | Self::ScanCompleted { digest, .. }
            | Self::FindingChanged { digest, .. }
            | Self::ImageReplicated { digest, .. } => Some(digest),
            Self::PullThroughCached { digest, .. } => digest.as_ref(),
            _ => None,
        }
    }

    pub fn tag(&self) -> Option<&str> {
        match self {
            Self::ImagePushed { tag, .. }
            | Self::ImageDeleted { tag, .. }
            | Self::ImagePushRecorded { tag, .. }
            | Self::ImageReplicated { tag, .. }
            | Self::PullThroughCached { tag, .. } => tag.as_deref(),
            _ => None,
        }
    }
}

/// Why a message can never be processed. Every variant means the same fate: the message is
/// acknowledged as rejected and kept verbatim in `rejected_messages`, because retrying
/// identical bytes cannot succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` is not {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field `{field}`: {source}")]
    InvalidIdentifier {
        field: &'static str,
        source: InvalidIdentifier,
    },
    #[error("field `{field}` is not an RFC 3339 time: {value:?}")]
    InvalidTime { field: &'static str, value: String },
    #[error(
        "field `{field}` is not an event id: it contains `/` (reserved for ids ecr-audit makes) or is too long"
    )]
    ReservedId { field: &'static str },
    #[error("the event names no account, and none is configured")]
    NoAccount,
    #[error("the event names no region, and none is configured")]
    NoRegion,
}

impl ParseError {
    /// A bounded label for the rejected-message metric and table.
    pub fn code(&self) -> &'static str {
        self.rejection_code().as_str()
    }

    /// The rejection code (the `code` of rejected messages and their metric).
    pub(crate) fn rejection_code(&self) -> RejectionCode {
        match self {
            Self::InvalidJson(_) => RejectionCode::InvalidJson,
            Self::NotAnObject => RejectionCode::NotAnObject,
            Self::MissingField(_) => RejectionCode::MissingField,
            Self::WrongType { .. } => RejectionCode::WrongType,
            Self::InvalidIdentifier { .. } => RejectionCode::InvalidIdentifier,
            Self::InvalidTime { .. } => RejectionCode::InvalidTime,
            Self::ReservedId { .. } => RejectionCode::ReservedId,
            Self::NoAccount => RejectionCode::NoAccount,
            Self::NoRegion => RejectionCode::NoRegion,
        }
    }
}

/// The most repositories one `ECR Scan Resource Change` may name before it is treated as a
/// registry-wide change (the event names every repository whose frequency changed).
const MAX_NAMED_REPOSITORIES: usize = 1_000;

/// The repositories an `ECR Scan Resource Change` names (`detail.repositories[].repository-name`),
/// so that only they are re-read. Empty — every known repository is re-read — when the list is
/// missing, too long, or any entry is not a repository name: a hint that cannot be read whole
/// is not trusted in part.
fn scan_resource_repositories(detail: &serde_json::Value) -> Vec<RepositoryName> {
    let Some(entries) = detail
        .get("repositories")
        .and_then(serde_json::Value::as_array)
    else {
        return Vec::new();
    };
    if entries.len() > MAX_NAMED_REPOSITORIES {
        return Vec::new();
    }
    let names: Option<Vec<RepositoryName>> = entries
        .iter()
        .map(|entry| {
            let name = entry.get("repository-name")?.as_str()?;
            RepositoryName::parse(name).ok()
        })
        .collect();
    let mut names = names.unwrap_or_default();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

pub(crate) fn identifier<T>(
    field: &'static str,
    parsed: Result<T, InvalidIdentifier>,
) -> Result<T, ParseError> {
    parsed.map_err(|source| ParseError::InvalidIdentifier { field, source })
}

/// Parses one message body.
///
/// # Errors
/// A [`ParseError`] when the bytes are not a well-formed event of the given format.
pub fn parse(
    body: &[u8],
    format: InputFormat,
    ctx: &ParseContext,
) -> Result<AuditEvent, ParseError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
    json::bound_strings(&mut value);
    if !value.is_object() {
        return Err(ParseError::NotAnObject);
    }
    match format {
        InputFormat::Envelope => parse_envelope(&value, ctx),
        InputFormat::CloudTrailRecord => cloudtrail::parse_record(&value, ctx),
    }
}

fn parse_envelope(envelope: &Value, ctx: &ParseContext) -> Result<AuditEvent, ParseError> {
    let id = json::req_id(envelope, "id")?;
    let detail_type = json::req_str(envelope, "detail-type")?;
    let source = json::req_str(envelope, "source")?;
    let time = json::time(json::req_str(envelope, "time")?, "time")?;
    let detail = json::req_object(envelope, "detail")?;

    // A lifecycle expiry arrives as a service event; its record has the shape of a call's.
    if detail_type == "AWS API Call via CloudTrail" || detail_type == SERVICE_EVENT_DETAIL_TYPE {
        // The record inside is authoritative for id, time, account and region; the envelope
        // only fills what the record lacks.
        let fallback = EnvelopeFallback::from_envelope(envelope, ctx)?;
        return cloudtrail::parse_detail(detail, &fallback, Some(id));
    }

    let (account, region) = envelope_location(envelope, ctx)?;
    let change = match (source, detail_type) {
        ("aws.ecr", "ECR Image Action") => image_action(detail)?,
        ("aws.ecr", "ECR Referrer Action") => referrer_action(detail)?,
        ("aws.ecr", "ECR Image Scan") => scan_completed(detail, ScanSource::Basic)?,
        ("aws.ecr", "ECR Scan Resource Change") => Change::RegistryChanged {
            call: cloudtrail::RegistryCall::ScanResourceChange {
                repositories: scan_resource_repositories(detail),
            },
        },
        ("aws.ecr", "ECR Replication Action") => ledger::replication_action(detail)?,
        ("aws.ecr", "ECR Pull Through Cache Action") => ledger::pull_through_cache_action(detail)?,
        ("aws.inspector2", "Inspector2 Scan") => scan_completed(detail, ScanSource::Enhanced)?,
        ("aws.inspector2", "Inspector2 Finding") => inspector_finding(detail)?,
        _ => Change::Ignored {
            reason: format!("{source} {detail_type:?} events are not evaluated by this version"),
        },
    };
    Ok(AuditEvent {
        id: id.to_owned(),
        time,
        account,
        region,
        detail_type: detail_type.to_owned(),
        actor: None,
        change,
        claimed_time: None,
    })
}

/// What a CloudTrail record inside an envelope may borrow from the envelope.
pub(crate) struct EnvelopeFallback {
    pub account: Option<AccountId>,
    pub region: Option<Region>,
    pub time: Option<DateTime<Utc>>,
    pub detail_type: String,
    pub ctx: ParseContext,
}

impl EnvelopeFallback {
    fn from_envelope(envelope: &Value, ctx: &ParseContext) -> Result<Self, ParseError> {
        Ok(Self {
            account: optional_account(envelope)?,
            region: json::opt_str(envelope, "region")?
                .map(|r| identifier("region", Region::parse(r)))
                .transpose()?,
            time: Some(json::time(json::req_str(envelope, "time")?, "time")?),
            detail_type: json::req_str(envelope, "detail-type")?.to_owned(),
            ctx: ctx.clone(),
        })
    }
}

fn optional_account(envelope: &Value) -> Result<Option<AccountId>, ParseError> {
    if let Some(account) = json::opt_str(envelope, "account")? {
        return identifier("account", AccountId::parse(account)).map(Some);
    }
    // The emulator (and some forwarders) omit `account`; an ARN in `resources` still names it.
    Ok(json::first_str_in_array(envelope, "resources")
        .and_then(|arn| arn.split(':').nth(4))
        .and_then(|account| AccountId::parse(account).ok()))
}

fn envelope_location(
    envelope: &Value,
    ctx: &ParseContext,
) -> Result<(AccountId, Region), ParseError> {
    let account = optional_account(envelope)?
        .or_else(|| ctx.default_account.clone())
        .ok_or(ParseError::NoAccount)?;
    let region = match json::opt_str(envelope, "region")? {
        Some(region) => identifier("region", Region::parse(region))?,
        None => ctx.default_region.clone().ok_or(ParseError::NoRegion)?,
    };
    Ok((account, region))
}

fn image_action(detail: &Value) -> Result<Change, ParseError> {
    let result = json::opt_str(detail, "result")?.unwrap_or("SUCCESS");
    let action = json::req_str(detail, "action-type")?;
    if result != "SUCCESS" {
        return Ok(Change::Ignored {
            reason: format!("image action {action} reported result {result}: nothing changed"),
        });
    }
    let repository = identifier(
        "repository-name",
        RepositoryName::parse(json::req_str(detail, "repository-name")?),
    )?;
    let digest = identifier(
        "image-digest",
        Digest::parse(json::req_str(detail, "image-digest")?),
    )?;
    let tag = json::opt_str(detail, "image-tag")?.map(str::to_owned);
    Ok(match action {
        "PUSH" => Change::ImagePushed {
            repository,
            digest,
            tag,
            manifest_media_type: json::opt_str(detail, "manifest-media-type")?.map(str::to_owned),
            artifact_media_type: json::opt_str(detail, "artifact-media-type")?.map(str::to_owned),
        },
        "DELETE" => Change::ImageDeleted {
            repository,
            digest,
            tag,
        },
        "UPDATE_STORAGE_CLASS" => Change::ImageStorageClassChanged {
            repository,
            digest,
            storage_class: json::opt_str(detail, "target-storage-class")?.map(str::to_owned),
        },
        other => Change::Ignored {
            reason: format!("image action-type {other:?} is not evaluated by this version"),
        },
    })
}

fn referrer_action(detail: &Value) -> Result<Change, ParseError> {
    let result = json::opt_str(detail, "result")?.unwrap_or("SUCCESS");
    let action = json::req_str(detail, "action-type")?;
    if result != "SUCCESS" {
        return Ok(Change::Ignored {
            reason: format!("referrer action {action} reported result {result}: nothing changed"),
        });
    }
    Ok(Change::ReferrerChanged {
        repository: identifier(
            "repository-name",
            RepositoryName::parse(json::req_str(detail, "repository-name")?),
        )?,
        digest: identifier(
            "image-digest",
            Digest::parse(json::req_str(detail, "image-digest")?),
        )?,
        action: action.to_owned(),
        artifact_media_type: json::opt_str(detail, "artifact-media-type")?.map(str::to_owned),
    })
}

/// Reads `finding-severity-counts`: only present severities appear; anything but a
/// non-negative integer is refused, and so is a severity name holding NUL.
fn severity_counts(detail: &Value) -> Result<std::collections::BTreeMap<String, i64>, ParseError> {
    let Some(counts) = json::opt_object(detail, "finding-severity-counts")? else {
        return Ok(std::collections::BTreeMap::new());
    };
    let mut out = std::collections::BTreeMap::new();
    if let Some(map) = counts.as_object() {
        for (severity, count) in map {
            // The counts are stored in jsonb evidence, which refuses NUL in keys as in values:
            // accepted, such a key would fail the transaction on every delivery.
            if severity.contains('\0') {
                return Err(ParseError::WrongType {
                    field: "finding-severity-counts",
                    expected: "an object keyed by severity names without NUL characters",
                });
            }
            // A negative count would read as "no findings" wherever counts are compared to 0.
            let count =
                count
                    .as_i64()
                    .filter(|count| *count >= 0)
                    .ok_or(ParseError::WrongType {
                        field: "finding-severity-counts",
                        expected: "an object of non-negative integer counts",
                    })?;
            out.insert(severity.to_ascii_uppercase(), count);
        }
    }
    Ok(out)
}

/// `ECR Image Scan` and `Inspector2 Scan` share their detail fields, except that Inspector puts
/// the repository ARN in `repository-name`; a plain name is accepted from either.
fn scan_completed(detail: &Value, source: ScanSource) -> Result<Change, ParseError> {
    let repository = json::req_str(detail, "repository-name")?;
    let repository = if repository.starts_with("arn:") {
        RepositoryName::from_arn(repository)
    } else {
        RepositoryName::parse(repository)
    };
    Ok(Change::ScanCompleted {
        repository: identifier("repository-name", repository)?,
        digest: identifier(
            "image-digest",
            Digest::parse(json::req_str(detail, "image-digest")?),
        )?,
        source,
        raw_status: json::req_str(detail, "scan-status")?.to_owned(),
        severity_counts: severity_counts(detail)?,
    })
}

fn inspector_finding(detail: &Value) -> Result<Change, ParseError> {
    let finding_arn = json::req_str(detail, "findingArn")?.to_owned();
    // The image is in resources[].details.awsEcrContainerImage; a finding about anything else
    // (EC2, Lambda) is not ours.
    let image = detail
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|r| r.get("details").and_then(|d| d.get("awsEcrContainerImage")));
    let Some(image) = image else {
        return Ok(Change::Ignored {
            reason: "Inspector2 finding is not about an ECR container image".to_owned(),
        });
    };
    Ok(Change::FindingChanged {
        repository: identifier(
            "awsEcrContainerImage.repositoryName",
            RepositoryName::parse(json::req_str(image, "repositoryName")?),
        )?,
        digest: identifier(
            "awsEcrContainerImage.imageHash",
            Digest::parse(json::req_str(image, "imageHash")?),
        )?,
        finding_arn,
        severity: json::opt_str(detail, "severity")?.map(str::to_owned),
        status: json::opt_str(detail, "status")?.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ledger;
