//! Typed telemetry events: each thing that happens is one value whose [`Happened::record`]
//! writes its log line and bumps its counter together, and the closed sets it carries are
//! enums whose `as_str()` values are the metric label values (and the rows of docs/METRICS.md).

use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::domain::ControlId;

use super::metrics::Metrics;

/// Declares a closed set of label values: the enum, `ALL`, `as_str()` and `values()`.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the order docs/METRICS.md lists them.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The label value Prometheus shows.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }

            /// Every label value (the metrics catalogue lists them).
            pub fn values() -> Vec<&'static str> {
                Self::ALL.iter().map(|v| v.as_str()).collect()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// What a message was about (the `kind` label of `ecr_audit_events_total`).
    EventKind {
        ImagePushed => "image_pushed",
        ImageDeleted => "image_deleted",
        ImageStorageClassChanged => "image_storage_class_changed",
        ImagePushRecorded => "image_push_recorded",
        ReferrerChanged => "referrer_changed",
        ScanCompleted => "scan_completed",
        FindingChanged => "finding_changed",
        RepositoryChanged => "repository_changed",
        RegistryChanged => "registry_changed",
        /// An AWS Signer revocation (`RevokeSignature`, `RevokeSigningProfile`).
        SignerRevoked => "signer_revoked",
        FailedApiCall => "failed_api_call",
        /// `ECR Replication Action`, in the destination registry.
        ImageReplicated => "image_replicated",
        /// `ECR Pull Through Cache Action`.
        PullThroughCached => "pull_through_cached",
        /// Lifecycle expiry or `BatchDeleteImage`: several digests removed at once.
        ImagesDeleted => "images_deleted",
        Ignored => "ignored",
        /// The message could not be parsed.
        Unparseable => "unparseable",
        /// Parsed, but its facts could not be read, so its kind is not reported.
        Unknown => "unknown",
    }
}

label_enum! {
    /// A claim of a message or a manifest that was not taken on trust (the `hint` label of
    /// `ecr_audit_distrusted_hints_total`).
    DistrustedHint {
        /// The event time was outside the window around the queue's `SentTimestamp`.
        EventTimeClamped => "event_time_clamped",
        /// A delete ECR did not confirm: the digest is still there, or could not be read.
        DeleteUnconfirmed => "delete_unconfirmed",
        /// A push record dated before ECR's own push time: its pusher was not taken.
        PushRecordTooOld => "push_record_too_old",
        /// A runnable image naming a subject.
        SubjectOnImage => "subject_on_image",
        /// An artifact type whose subject is not in the repository.
        MissingSubject => "missing_subject",
        /// A Cosign-shaped signature tag on a manifest that is not an artifact.
        SignatureTag => "signature_tag",
        /// A manifest declaring a non-runnable type that carries an image config and layers.
        RunnableContent => "runnable_content",
    }
}

label_enum! {
    /// What happened to one event (the `outcome` label of `ecr_audit_events_total`).
    EventOutcome {
        Processed => "processed",
        Duplicate => "duplicate",
        Ignored => "ignored",
        Rejected => "rejected",
        Retried => "retried",
    }
}

label_enum! {
    /// Why a message can never be processed (the `code` of `ecr_audit_rejected_messages_total`).
    RejectionCode {
        InvalidJson => "invalid_json",
        NotAnObject => "not_an_object",
        MissingField => "missing_field",
        WrongType => "wrong_type",
        InvalidIdentifier => "invalid_identifier",
        InvalidTime => "invalid_time",
        ReservedId => "reserved_id",
        NoAccount => "no_account",
        NoRegion => "no_region",
    }
}

label_enum! {
    /// Why a message was left on the queue (the `code` of `ecr_audit_message_retries_total`).
    RetryCode {
        /// AWS throttled, timed out or failed with a 5xx after the SDK's retries.
        AwsTransient => "aws_transient",
        /// The database could not be reached or gave up (a retry may succeed).
        DbUnavailable => "db_unavailable",
        /// The database refused the data (a retry will not help: dead-letter).
        DbRefused => "db_refused",
        /// The schema could not be migrated.
        DbMigrate => "db_migrate",
        /// A record's evidence id was already taken by another record (dead-letter).
        IdCollision => "id_collision",
        /// A pipeline invariant failed (no commit result for a message).
        Internal => "internal",
    }
}

label_enum! {
    /// A change a reconcile sweep found that no event had reported.
    DriftKind {
        RepositoryAdded => "repository_added",
        RepositoryChanged => "repository_changed",
        RepositoryDeleted => "repository_deleted",
        ImageAdded => "image_added",
        ImageDeleted => "image_deleted",
    }
}

label_enum! {
    /// Which part of a repository's scanning AWS reported differently from the registry rules
    /// as evaluated here (the `fact` of `ecr_audit_scanning_disagreements_total`).
    ScanningDisagreement {
        ScanFrequency => "scan_frequency",
        AppliedFilters => "applied_filters",
    }
}

label_enum! {
    /// Why a reconcile sweep skipped a repository.
    SkipReason {
        /// A lasting answer (access denied, …): the repository cannot be read as the audit role.
        Unreadable => "unreadable",
        /// AWS did not answer after the retries (throttling, timeouts, 5xx).
        Transient => "transient",
    }
}

label_enum! {
    /// The outcome of one AWS API call after the SDK's own retries.
    ApiOutcome {
        Ok => "ok",
        /// Throttling, timeout, 5xx: the message is retried.
        Transient => "transient",
        /// A lasting error answer (not found, access denied, …).
        ServiceError => "service_error",
    }
}

label_enum! {
    /// The AWS operations enrichment calls (the `operation` label of `ecr_audit_aws_api_calls_total`).
    AwsOperation {
        EcrDescribeRepositories => "ecr:DescribeRepositories",
        EcrGetLifecyclePolicy => "ecr:GetLifecyclePolicy",
        EcrGetRepositoryPolicy => "ecr:GetRepositoryPolicy",
        EcrGetRegistryScanningConfiguration => "ecr:GetRegistryScanningConfiguration",
        EcrBatchGetRepositoryScanningConfiguration => "ecr:BatchGetRepositoryScanningConfiguration",
        EcrGetSigningConfiguration => "ecr:GetSigningConfiguration",
        EcrDescribePullThroughCacheRules => "ecr:DescribePullThroughCacheRules",
        EcrDescribeRepositoryCreationTemplates => "ecr:DescribeRepositoryCreationTemplates",
        EcrDescribeImages => "ecr:DescribeImages",
        EcrDescribeImageSigningStatus => "ecr:DescribeImageSigningStatus",
        EcrListImageReferrers => "ecr:ListImageReferrers",
        EcrDescribeImageScanFindings => "ecr:DescribeImageScanFindings",
        KmsDescribeKey => "kms:DescribeKey",
        SignerGetSigningProfile => "signer:GetSigningProfile",
        EcrBatchGetImage => "ecr:BatchGetImage",
        EcrGetDownloadUrlForLayer => "ecr:GetDownloadUrlForLayer",
        /// The download of a blob from the URL ECR answered (not an AWS API call; counted beside them).
        BlobGet => "blob:GET",
        SignerGetRevocationStatus => "signer:GetRevocationStatus",
        Inspector2ListCoverage => "inspector2:ListCoverage",
        EcrPublicDescribeRepositories => "ecr-public:DescribeRepositories",
        EcrPublicListTagsForResource => "ecr-public:ListTagsForResource",
        /// Account discovery (`ECR_AUDIT_ORGANIZATION`), once per reconcile sweep.
        OrganizationsListAccounts => "organizations:ListAccounts",
        OrganizationsListAccountsForParent => "organizations:ListAccountsForParent",
        OrganizationsListOrganizationalUnitsForParent => "organizations:ListOrganizationalUnitsForParent",
    }
}

label_enum! {
    /// How an account's membership of the audited estate changed (the `change` label of
    /// `ecr_audit_organization_account_changes_total`).
    AccountChange {
        /// Organizations discovery found it active for the first time since start-up.
        Joined => "joined",
        /// It is no longer an active account of the discovered scope; its data is kept.
        Left => "left",
    }
}

label_enum! {
    /// Whether a currently failing finding pages after the grace period (`new`) or was found
    /// as history (`baseline`: the first sweep of an account and region, or a repository a
    /// sweep saw before any event did). docs/ALERTS.md explains the ramp-up.
    FindingClass {
        Baseline => "baseline",
        New => "new",
    }
}

label_enum! {
    /// Whether EventBridge accepted an alert event.
    AlertOutcome {
        Published => "published",
        Failed => "failed",
    }
}

label_enum! {
    /// How an exception ended (the `cause` label of `ecr_audit_exceptions_ended_total`).
    ExceptionEnd {
        /// Its expiry passed.
        Expired => "expired",
        /// Revoked by a person, or removed from the exceptions file.
        Revoked => "revoked",
    }
}

label_enum! {
    /// What a deploy-time verdict answered (docs/ENFORCEMENT.md).
    DeployDecision {
        Allow => "allow",
        /// Admitted although the image fails the policy (audit mode, or an unknown image
        /// admitted with a warning): a would-be denial.
        Warn => "warn",
        Deny => "deny",
    }
}

label_enum! {
    /// The deploy policy's mode of the scope a verdict was given in.
    DeployMode {
        /// Admit, warn, record: a failing image is a would-be denial.
        Audit => "audit",
        Strict => "strict",
    }
}

label_enum! {
    /// What the verdict view read again (docs/ENFORCEMENT.md, "The view").
    ViewReload {
        /// Everything: at start and after the notification connection was lost.
        Full => "full",
        /// One image a notification named.
        Image => "image",
        /// One repository's controls.
        Repository => "repository",
        /// Every repository's controls (an exception changed).
        Postures => "postures",
    }
}

label_enum! {
    /// What became of a deploy verdict's evidence (docs/ENFORCEMENT.md, "Every decision
    /// recorded").
    VerdictRecord {
        /// Appended to the evidence chain.
        Recorded => "recorded",
        /// Not recorded: the recorder's queue or its unwritten aggregates were full.
        Dropped => "dropped",
    }
}

label_enum! {
    /// What an on-demand evaluation of an image the ledger did not know found.
    OnDemandOutcome {
        /// ECR holds the image: it was read and committed like a push.
        Evaluated => "evaluated",
        /// ECR does not hold it (or the account is not audited): nothing is recorded.
        Absent => "absent",
        /// AWS or the database could not answer; a later verdict asks again.
        Failed => "failed",
        /// Not asked: the queue was full.
        Dropped => "dropped",
    }
}

label_enum! {
    /// Which queue a depth gauge describes.
    QueueRole {
        Main => "main",
        DeadLetter => "dead_letter",
    }
}

label_enum! {
    /// What verifying one signature concluded (the `result` label of
    /// `ecr_audit_signature_verifications_total`).
    VerificationOutcome {
        Verified => "verified",
        Skipped => "skipped",
        Rejected => "rejected",
    }
}

label_enum! {
    /// The check a signature failed (the `check` label of
    /// `ecr_audit_signature_verifications_total`): `trust::Failure`'s names, AWS Signer's
    /// revocation answers, `none` for a signature that did not fail, `other` for a name this
    /// list lacks (src/trust/tests.rs keeps the two lists equal).
    VerificationCheck {
        None => "none",
        EnvelopeUnreadable => "envelope_unreadable",
        EnvelopeTooLarge => "envelope_too_large",
        UnsupportedEnvelope => "unsupported_envelope",
        UnsupportedAlgorithm => "unsupported_algorithm",
        UnknownCriticalHeader => "unknown_critical_header",
        BadSignature => "bad_signature",
        DigestMismatch => "digest_mismatch",
        MediaTypeMismatch => "media_type_mismatch",
        SizeMismatch => "size_mismatch",
        ChainTooLong => "chain_too_long",
        UntrustedChain => "untrusted_chain",
        CertificateUsage => "certificate_usage",
        SchemeNotTrusted => "scheme_not_trusted",
        IdentityNotTrusted => "identity_not_trusted",
        CertificateNotValidAtSigningTime => "certificate_not_valid_at_signing_time",
        CertificateExpired => "certificate_expired",
        Expired => "expired",
        NoPolicyForScope => "no_policy_for_scope",
        NoTrustPolicy => "no_trust_policy",
        TrustStoreMissing => "trust_store_missing",
        KeylessNotConfigured => "keyless_not_configured",
        UntrustedKey => "untrusted_key",
        Revoked => "revoked",
        RevocationUnknown => "revocation_unknown",
        Other => "other",
    }
}

impl VerificationCheck {
    /// The label of a stored check name; `Other` for a name this version does not list.
    pub fn from_check(check: &str) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == check)
            .unwrap_or(Self::Other)
    }
}

label_enum! {
    /// AWS Signer's answer about a verified signature (the `outcome` label of
    /// `ecr_audit_signer_revocation_checks_total`).
    RevocationOutcome {
        NotRevoked => "not_revoked",
        Revoked => "revoked",
        /// `GetRevocationStatus` could not be asked or answered.
        Unknown => "unknown",
    }
}

label_enum! {
    /// Why current digests were made due for judging again (the `cause` label of
    /// `ecr_audit_signature_reverifications_total`).
    ReverifyCause {
        /// A CloudTrail `RevokeSignature` or `RevokeSigningProfile` named their signer.
        Revocation => "revocation",
        /// Their verdict was older than `ECR_AUDIT_REVERIFY_INTERVAL`.
        Schedule => "schedule",
    }
}

label_enum! {
    /// The SQS approximate count a depth gauge carries.
    QueueState {
        Visible => "visible",
        InFlight => "in_flight",
    }
}

/// One thing that happened. Fields are bounded label values or short context for the log
/// line; never a message body or a secret.
#[derive(Debug, Clone, PartialEq)]
pub enum Happened<'a> {
    /// A message's effects were committed; `lag` is from the event's own time when known.
    Processed { kind: EventKind, lag: Option<f64> },
    /// An event that changes nothing ecr-audit tracks.
    Ignored { kind: EventKind },
    /// An event already committed (a redelivery).
    Duplicate { kind: EventKind },
    /// A message that can never be processed (kept in `rejected_messages`).
    Rejected {
        kind: EventKind,
        code: RejectionCode,
        message_id: &'a str,
        reason: &'a str,
    },
    /// A message left on the queue for a later attempt (or for SQS to dead-letter).
    Retried {
        kind: EventKind,
        code: RetryCode,
        message_id: &'a str,
        reason: &'a str,
    },
    /// Committed messages whose SQS delete failed (they come back as duplicates).
    SqsDeleteFailed { count: usize },
    /// A committed message claimed something that was not taken on trust.
    Distrusted {
        hint: DistrustedHint,
        message_id: &'a str,
        note: &'a str,
    },
    /// One AWS call, after the SDK's retries.
    AwsCalled {
        operation: AwsOperation,
        outcome: ApiOutcome,
    },
    /// AWS refused a read to the audit role (AccessDenied and its variants).
    AwsAccessDenied {
        operation: AwsOperation,
        target: &'a str,
        message: &'a str,
    },
    /// AWS did not answer a read after the retries; the fact it carries is recorded as
    /// `UNKNOWN` (unavailable) and read again later.
    AwsUnavailable {
        operation: AwsOperation,
        target: &'a str,
        message: &'a str,
    },
    /// A batch (events, re-checks or a sweep) was committed.
    BatchCommitted {
        first_unsigned: u64,
        regressions: &'a [ControlId],
        blinded: &'a [ControlId],
        /// FAIL → PASS within the window of their PASS → FAIL.
        restored: &'a [ControlId],
        /// How long the batch held the evidence head lock; `None` when it appended nothing.
        evidence_lock_held: Option<std::time::Duration>,
    },
    /// A reconcile sweep could not read one repository and went on with the others.
    RepositorySkipped {
        repository: &'a str,
        reason: SkipReason,
        detail: &'a str,
    },
    /// Signature re-checks were committed.
    RechecksCommitted { first_unsigned: u64 },
    /// A reconcile sweep ended and found `count` changes of `kind`, for each kind.
    ReconcileFinished {
        duration: Duration,
        drift: &'a [(DriftKind, u64)],
    },
    /// AWS's answer on a repository's scanning differs from the registry rules as evaluated
    /// here: AWS wins, and this is a bug to report in the rules' evaluation.
    ScanningDisagreed {
        fact: ScanningDisagreement,
        repository: &'a str,
    },
    /// One signature was verified (or read back from a stored verification).
    SignatureVerified {
        outcome: VerificationOutcome,
        check: VerificationCheck,
    },
    /// AWS Signer answered (or could not answer) whether a verified signature is revoked.
    RevocationChecked { outcome: RevocationOutcome },
    /// `count` current digests were made due for judging again.
    ReverifyScheduled { cause: ReverifyCause, count: u64 },
    /// Organizations discovery answered: `active` accounts in scope, of which `joined` are new
    /// since the last discovery and `left` are gone from it.
    AccountsDiscovered {
        active: usize,
        joined: &'a [crate::domain::AccountId],
        left: &'a [crate::domain::AccountId],
    },
    /// The worker settled ended exceptions: `expired` reached their expiry, `revoked` had
    /// been revoked, and `reopened` findings fail unexcepted again (each alerted).
    ExceptionsSettled {
        expired: u64,
        revoked: u64,
        reopened: u64,
    },
    /// The exceptions file was loaded and changed the set in force.
    ExceptionsFileLoaded {
        path: &'a str,
        sha256: &'a str,
        added: usize,
        revoked: usize,
    },
    /// The exceptions file could not be read or is invalid: the set in force is kept.
    ExceptionsFileInvalid { path: &'a str, error: &'a str },
    /// EventBridge accepted an alert event.
    AlertPublished { alert_id: i64 },
    /// A deploy-time verdict was given.
    DeployVerdict {
        decision: DeployDecision,
        mode: DeployMode,
        image: &'a str,
        digest: Option<&'a str>,
        scope: &'a str,
        cluster: Option<&'a str>,
        namespace: Option<&'a str>,
        user: Option<&'a str>,
        policy_version: &'a str,
    },
    /// EventBridge refused an alert event; it is tried again after `delay`.
    AlertFailed {
        alert_id: i64,
        attempt: u32,
        delay: Duration,
        error: &'a str,
    },
}

impl Happened<'_> {
    /// Writes the log line and bumps the counters of what happened.
    pub fn record(&self, metrics: &Metrics) {
        self.log();
        self.count(metrics);
    }

    fn log(&self) {
        match self {
            Self::Rejected {
                code,
                message_id,
                reason,
                ..
            } => warn!(
                message.id = *message_id,
                rejection.code = code.as_str(),
                "rejected message {message_id}: {reason}"
            ),
            Self::Retried {
                code,
                message_id,
                reason,
                ..
            } => warn!(
                message.id = *message_id,
                error.code = code.as_str(),
                "message {message_id} left on the queue: {reason}"
            ),
            Self::AlertFailed {
                alert_id,
                attempt,
                delay,
                error,
            } => warn!(
                alert.id = *alert_id,
                attempt = *attempt,
                "alert event not accepted, retrying in {delay:?}: {error}"
            ),
            Self::Distrusted { .. } | Self::ScanningDisagreed { .. } => self.log_doubted(),
            Self::ExceptionsSettled { .. }
            | Self::ExceptionsFileLoaded { .. }
            | Self::ExceptionsFileInvalid { .. } => self.log_exceptions(),
            Self::DeployVerdict { .. } => self.log_verdict(),
            Self::SqsDeleteFailed { count } => {
                warn!(
                    count = *count,
                    "SQS delete failed; the messages come back as duplicates"
                );
            }
            Self::AwsAccessDenied { .. }
            | Self::AwsUnavailable { .. }
            | Self::RepositorySkipped { .. } => self.log_unread(),
            Self::ReconcileFinished { duration, drift } => {
                let changes: u64 = drift.iter().map(|(_, n)| n).sum();
                debug!(?duration, changes, "reconcile sweep finished");
            }
            Self::AccountsDiscovered {
                active,
                joined,
                left,
            } => log_discovery(*active, joined, left),
            other => debug!(event = ?other, "telemetry"),
        }
    }

    /// A claim or an answer not taken as given: a message's hint, or the registry rules where
    /// AWS said otherwise.
    /// Who asked about which image, and what was answered: the record of a deploy decision.
    fn log_verdict(&self) {
        if let Self::DeployVerdict {
            decision,
            mode,
            image,
            digest,
            scope,
            cluster,
            namespace,
            user,
            policy_version,
        } = self
        {
            info!(
                verdict.decision = decision.as_str(),
                verdict.mode = mode.as_str(),
                verdict.scope = *scope,
                image = *image,
                image.digest = digest.unwrap_or(""),
                k8s.cluster = cluster.unwrap_or(""),
                k8s.namespace = namespace.unwrap_or(""),
                user = user.unwrap_or(""),
                policy.version = *policy_version,
                "deploy verdict"
            );
        }
    }

    fn log_doubted(&self) {
        match self {
            Self::Distrusted {
                hint,
                message_id,
                note,
            } => warn!(
                hint = hint.as_str(),
                sqs.message_id = *message_id,
                "claim not taken on trust ({hint}) in message {message_id}: {note}"
            ),
            Self::ScanningDisagreed { fact, repository } => warn!(
                scanning.fact = fact.as_str(),
                "AWS reports {repository}'s {} differently from the registry rules as evaluated \
                 here; AWS's answer is used",
                fact.as_str()
            ),
            _ => {}
        }
    }

    /// Exceptions ending, re-opening findings, and the exceptions file.
    fn log_exceptions(&self) {
        match self {
            Self::ExceptionsSettled {
                expired,
                revoked,
                reopened,
            } => info!(
                exceptions.expired = *expired,
                exceptions.revoked = *revoked,
                findings.reopened = *reopened,
                "exceptions ended: {expired} expired, {revoked} revoked; {reopened} finding(s) re-opened"
            ),
            Self::ExceptionsFileLoaded {
                path,
                sha256,
                added,
                revoked,
            } => info!(
                exceptions.file = *path,
                exceptions.sha256 = *sha256,
                "exceptions file {path} loaded (sha256 {sha256}): {added} added, {revoked} revoked"
            ),
            Self::ExceptionsFileInvalid { path, error } => error!(
                exceptions.file = *path,
                "exceptions file {path} refused, the exceptions in force are kept: {error}"
            ),
            _ => {}
        }
    }

    /// What ecr-audit could not read: always a warning, since it is blind there.
    fn log_unread(&self) {
        match self {
            Self::AwsAccessDenied {
                operation,
                target,
                message,
            } => warn!(
                aws.operation = operation.as_str(),
                target = *target,
                "the audit role was denied {operation} on {target}: {message}"
            ),
            Self::AwsUnavailable {
                operation,
                target,
                message,
            } => warn!(
                aws.operation = operation.as_str(),
                target = *target,
                "{operation} on {target} did not answer after the retries; its facts are UNKNOWN until read again: {message}"
            ),
            Self::RepositorySkipped {
                repository,
                reason,
                detail,
            } => warn!(
                repository.name = *repository,
                skip.reason = reason.as_str(),
                "reconcile skipped repository {repository} ({reason}): {detail}"
            ),
            _ => {}
        }
    }

    fn count(&self, metrics: &Metrics) {
        match self {
            Self::Processed { kind, lag } => {
                metrics.event(*kind, EventOutcome::Processed);
                if let Some(lag) = lag {
                    metrics.event_committed(*lag);
                }
            }
            Self::Ignored { kind } => metrics.event(*kind, EventOutcome::Ignored),
            Self::Duplicate { kind } => metrics.event(*kind, EventOutcome::Duplicate),
            Self::Rejected { kind, code, .. } => {
                metrics.event(*kind, EventOutcome::Rejected);
                metrics.rejected(*code);
            }
            Self::Retried { kind, code, .. } => {
                metrics.event(*kind, EventOutcome::Retried);
                metrics.retried(*code);
            }
            Self::SqsDeleteFailed { count } => metrics.sqs_delete_failed(*count),
            Self::Distrusted { hint, .. } => metrics.distrusted(*hint),
            Self::AwsCalled { operation, outcome } => metrics.aws_call(*operation, *outcome),
            Self::AwsAccessDenied { operation, .. } => metrics.aws_access_denied(*operation),
            Self::AwsUnavailable { operation, .. } => metrics.aws_unavailable(*operation),
            Self::BatchCommitted {
                first_unsigned,
                regressions,
                blinded,
                restored,
                evidence_lock_held,
            } => {
                metrics.unsigned_pushes(*first_unsigned);
                metrics.batch_transitions(regressions, blinded, restored);
                metrics.batch_committed(*evidence_lock_held);
            }
            Self::RepositorySkipped { reason, .. } => metrics.reconcile_skipped(*reason),
            Self::RechecksCommitted { first_unsigned } => metrics.unsigned_pushes(*first_unsigned),
            Self::ReconcileFinished { duration, drift } => {
                metrics.reconcile_finished(*duration);
                for (kind, count) in *drift {
                    metrics.reconcile_drift(*kind, *count);
                }
            }
            Self::ScanningDisagreed { fact, .. } => metrics.scanning_disagreement(*fact),
            Self::SignatureVerified { outcome, check } => {
                metrics.signature_verified(*outcome, *check);
            }
            Self::RevocationChecked { outcome } => metrics.revocation_checked(*outcome),
            Self::ReverifyScheduled { cause, count } => metrics.reverify_scheduled(*cause, *count),
            Self::AccountsDiscovered {
                active,
                joined,
                left,
            } => metrics.accounts_discovered(*active, joined.len(), left.len()),
            Self::ExceptionsSettled { .. }
            | Self::ExceptionsFileLoaded { .. }
            | Self::ExceptionsFileInvalid { .. } => self.count_exceptions(metrics),
            Self::AlertPublished { .. } => metrics.alert_event(AlertOutcome::Published),
            Self::DeployVerdict { decision, mode, .. } => metrics.deploy_verdict(*decision, *mode),
            Self::AlertFailed { .. } => metrics.alert_event(AlertOutcome::Failed),
        }
    }

    /// The exceptions task's counters (`count`'s share for exceptions).
    fn count_exceptions(&self, metrics: &Metrics) {
        match self {
            Self::ExceptionsSettled {
                expired, revoked, ..
            } => {
                metrics.exceptions_ended(ExceptionEnd::Expired, *expired);
                metrics.exceptions_ended(ExceptionEnd::Revoked, *revoked);
            }
            Self::ExceptionsFileInvalid { .. } => metrics.exceptions_file_error(),
            _ => {}
        }
    }
}

/// Joins are news, departures a warning: an account that leaves is no longer audited.
fn log_discovery(
    active: usize,
    joined: &[crate::domain::AccountId],
    left: &[crate::domain::AccountId],
) {
    for account in joined {
        info!(account = %account, active, "account joined the audited organization scope; swept from now on");
    }
    for account in left {
        warn!(account = %account, active, "account left the audited organization scope (closed, suspended, moved or removed); no longer read, its stored data is kept");
    }
    debug!(active, "organization accounts discovered");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_bumps_the_event_and_the_retry_counters_together() {
        let metrics = Metrics::new();
        Happened::Retried {
            kind: EventKind::ImagePushed,
            code: RetryCode::DbUnavailable,
            message_id: "m-1",
            reason: "connection refused",
        }
        .record(&metrics);
        let text = metrics.render().unwrap_or_default();
        assert!(
            text.contains(r#"ecr_audit_events_total{kind="image_pushed",outcome="retried"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ecr_audit_message_retries_total{code="db_unavailable"} 1"#),
            "{text}"
        );
        assert!(!text.contains("m-1"), "a message id is never a label");
    }

    #[test]
    fn a_sweep_counts_each_drift_kind() {
        let metrics = Metrics::new();
        Happened::ReconcileFinished {
            duration: Duration::from_secs(3),
            drift: &[
                (DriftKind::ImageAdded, 2),
                (DriftKind::RepositoryDeleted, 1),
            ],
        }
        .record(&metrics);
        let text = metrics.render().unwrap_or_default();
        assert!(text.contains(r#"ecr_audit_reconcile_drift_total{kind="image_added"} 2"#));
        assert!(text.contains(r#"ecr_audit_reconcile_drift_total{kind="repository_deleted"} 1"#));
        assert!(
            text.contains("ecr_audit_reconcile_duration_seconds 3.0"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_unique_per_set() {
        for values in [
            EventKind::values(),
            RejectionCode::values(),
            RetryCode::values(),
        ] {
            let mut sorted = values.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), values.len(), "{values:?}");
        }
    }
}

label_enum! {
    /// What became of an attempt to make an evidence tree head (docs/EVIDENCE.md, "Signed
    /// tree heads").
    HeadOutcome {
        /// Made and signed with the KMS key.
        Signed => "signed",
        /// Made without a key (`ECR_AUDIT_EVIDENCE_KEY` unset): verification says UNANCHORED.
        Unsigned => "unsigned",
        /// Not made: the database or KMS failed; the next tick tries again.
        Failed => "failed",
    }
}

label_enum! {
    /// What became of writing a signed head to the S3 anchor (docs/EVIDENCE.md, "The anchor
    /// in S3").
    AnchorOutcome {
        /// Written under Object Lock (and announced when a bus is configured).
        Anchored => "anchored",
        /// Not written: the head stays in the database; a later head covers it.
        Failed => "failed",
    }
}
