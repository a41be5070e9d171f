//! The facts contract: what reading ECR produces and judging consumes.
//!
//! `enrich` fills these types from the AWS APIs; `evaluate` and `plan` judge them. This
//! module depends on `domain` only, so neither side needs to import the other. Values AWS
//! may extend are kept verbatim where the domain has no closed set, and as enums with an
//! `Other` case where it has one (see [`SigningStatus`]).

pub mod artifact;
pub mod signature_content;
pub mod signing;
pub mod usage;

pub use artifact::{
    ArtifactKind, ArtifactProof, Classification, Disguise, NOTATION_SIGNATURE,
    carries_runnable_image, classify, cosign_tag_subject, kind_of_artifact_type, non_runnable_kind,
    subject_to_confirm,
};
pub use signature_content::{
    BlobRead, LayerDescriptor, RevocationQuery, SignatureManifest, SignatureVerification,
    VerificationResult,
};
pub use signing::{ManagedSigning, ProfileStatus, SignatureArtifact, SignatureKind, SigningStatus};
pub use usage::{CoveredImage, image_of_resource_id};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Digest, RepositoryKey};

/// A fact that may be unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact<T> {
    Known(T),
    /// Why the fact could not be read (e.g. `AccessDeniedException: …`).
    Unknown(String),
}

/// How the reason of a fact that AWS did not give after the retries begins (throttling, a
/// timeout, a 5xx): an outage, not an answer. Such a fact is `Unknown` so that only the checks
/// that need it are undetermined, and it is read again later ([`Fact::is_unavailable`]).
pub const UNAVAILABLE: &str = "unavailable after retries: ";

impl<T> Fact<T> {
    /// A fact whose read did not get an answer after the retries.
    pub fn unavailable(operation: &str, message: &str) -> Self {
        Self::Unknown(format!("{UNAVAILABLE}{operation}: {message}"))
    }

    /// Whether the fact is unknown because AWS did not answer (rather than a lasting answer
    /// such as access denied): worth reading again soon.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unknown(reason) if reason.starts_with(UNAVAILABLE))
    }

    pub fn known(&self) -> Option<&T> {
        match self {
            Self::Known(value) => Some(value),
            Self::Unknown(_) => None,
        }
    }

    pub fn as_ref(&self) -> Fact<&T> {
        match self {
            Self::Known(value) => Fact::Known(value),
            Self::Unknown(reason) => Fact::Unknown(reason.clone()),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fact<U> {
        match self {
            Self::Known(value) => Fact::Known(f(value)),
            Self::Unknown(reason) => Fact::Unknown(reason),
        }
    }
}

/// What one read of a repository found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryFacts {
    /// When the state was read: the version that decides which write wins in the store.
    pub observed_at: DateTime<Utc>,
    pub state: RepositoryState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RepositoryState {
    Present(Box<RepositorySettings>),
    /// `RepositoryNotFoundException`: deleted, or never existed.
    Absent,
    /// The repository itself could not be described (e.g. access denied).
    Unreadable {
        reason: String,
    },
    /// An ECR Public repository (keyed with the `ecr-public` pseudo-region): only ECR.4 is
    /// judged for it.
    Public(PublicRepositorySettings),
}

/// What ECR.4 is judged from: an ECR Public repository's tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicRepositorySettings {
    /// `arn:aws:ecr-public::ACCOUNT:repository/NAME`.
    pub arn: String,
    /// Its tag keys (`ListTagsForResource`).
    pub tag_keys: Fact<Vec<String>>,
}

/// The settings the ECR controls are evaluated from, as ECR reports them (enum values raw).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositorySettings {
    pub arn: String,
    pub tag_mutability: Fact<TagMutability>,
    /// The repository's own (deprecated) scan-on-push flag; the effective frequency also
    /// depends on the registry's rules ([`RegistryFacts`]).
    pub scan_on_push: bool,
    /// The repository's scanning as AWS itself reports it
    /// (`BatchGetRepositoryScanningConfiguration`): what ECR.1 is judged from.
    #[serde(default = "ReportedScanning::not_read")]
    pub reported_scanning: Fact<ReportedScanning>,
    pub lifecycle_policy: Fact<bool>,
    /// The lifecycle policy text (`GetLifecyclePolicy`); `Known(None)` when there is none.
    /// Compared with the repository creation template (ECRA.5).
    #[serde(default = "RepositorySettings::lifecycle_text_not_read")]
    pub lifecycle_policy_text: Fact<Option<String>>,
    pub encryption: Fact<Encryption>,
    /// The repository policy text; `Known(None)` when the repository has none.
    pub policy: Fact<Option<String>>,
}

impl RepositorySettings {
    /// For settings stored before the lifecycle policy text was kept: ECRA.5 is then
    /// `UNKNOWN` until the repository is read again.
    pub fn lifecycle_text_not_read() -> Fact<Option<String>> {
        Fact::Unknown("the lifecycle policy text was not read".to_owned())
    }
}

impl RepositoryFacts {
    /// Whether a setting could not be read because AWS did not answer.
    pub fn has_unavailable(&self) -> bool {
        let settings = match &self.state {
            RepositoryState::Present(settings) => settings,
            RepositoryState::Public(public) => return public.tag_keys.is_unavailable(),
            RepositoryState::Absent | RepositoryState::Unreadable { .. } => return false,
        };
        let key_manager = settings
            .encryption
            .known()
            .and_then(|e| e.key_manager.as_ref())
            .is_some_and(Fact::is_unavailable);
        settings.tag_mutability.is_unavailable()
            || settings.reported_scanning.is_unavailable()
            || settings.lifecycle_policy.is_unavailable()
            || settings.lifecycle_policy_text.is_unavailable()
            || settings.encryption.is_unavailable()
            || settings.policy.is_unavailable()
            || key_manager
    }
}

impl RegistryFacts {
    /// A registry without any registry-wide setting: ECR Public's, which has none of the
    /// private registry's (scanning, signing, pull-through cache, creation templates).
    pub fn none(observed_at: DateTime<Utc>) -> Self {
        Self {
            observed_at,
            scanning: Fact::Known(RegistryScanning {
                scan_type: "BASIC".to_owned(),
                rules: Vec::new(),
            }),
            signing: Fact::Known(Vec::new()),
            pull_through_rules: Fact::Known(Vec::new()),
            creation_templates: Fact::Known(Vec::new()),
        }
    }

    /// Whether a registry-wide setting could not be read because AWS did not answer.
    pub fn has_unavailable(&self) -> bool {
        self.scanning.is_unavailable()
            || self.signing.is_unavailable()
            || self.pull_through_rules.is_unavailable()
            || self.creation_templates.is_unavailable()
    }
}

/// Registry-wide settings of one account and region, read once and shared by its
/// repositories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryFacts {
    pub observed_at: DateTime<Utc>,
    pub scanning: Fact<RegistryScanning>,
    /// Managed-signing rules; empty when the registry has no signing configuration.
    pub signing: Fact<Vec<SigningRuleFacts>>,
    /// Pull-through cache rules (`DescribePullThroughCacheRules`); empty when there are none.
    pub pull_through_rules: Fact<Vec<PullThroughRule>>,
    /// Repository creation templates (`DescribeRepositoryCreationTemplates`); empty when there
    /// are none.
    pub creation_templates: Fact<Vec<CreationTemplate>>,
}

/// One pull-through cache rule: repositories named `PREFIX/…` are created from the upstream
/// on first pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullThroughRule {
    /// `ecrRepositoryPrefix`, as ECR reports it (`ROOT` when the rule has no prefix).
    pub prefix: String,
    pub upstream_url: String,
}

/// One repository creation template: the settings ECR gives a repository it creates whose
/// name the prefix covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreationTemplate {
    /// `prefix`; `ROOT` applies to every repository.
    pub prefix: String,
    /// `appliedFor` raw: `PULL_THROUGH_CACHE`, `CREATE_ON_PUSH`, `REPLICATION`, or newer values.
    pub applied_for: Vec<String>,
    /// The settings the template gives (ECRA.5 compares a repository with them).
    #[serde(default)]
    pub settings: TemplateSettings,
}

/// What a repository creation template sets, as `DescribeRepositoryCreationTemplates` answers
/// (enum values raw). `None` is a setting the template leaves out: ECR's default then applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSettings {
    /// `imageTagMutability` with its exclusion filters; ECR's default is `MUTABLE`.
    pub tag_mutability: Option<TagMutability>,
    /// `encryptionConfiguration.encryptionType`; ECR's default is `AES256`.
    pub encryption_type: Option<String>,
    /// `encryptionConfiguration.kmsKey` (a key ARN); none means the AWS-managed key.
    pub kms_key: Option<String>,
    /// `lifecyclePolicy` text.
    pub lifecycle_policy: Option<String>,
    /// `repositoryPolicy` text.
    pub repository_policy: Option<String>,
}

/// `GetRegistryScanningConfiguration`, enum values raw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryScanning {
    /// `BASIC`, `ENHANCED`, or a newer value.
    pub scan_type: String,
    pub rules: Vec<ScanRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRule {
    /// `SCAN_ON_PUSH`, `CONTINUOUS_SCAN`, `MANUAL`, or a newer value.
    pub frequency: String,
    /// Wildcard repository filters.
    pub filters: Vec<String>,
}

/// One managed-signing rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningRuleFacts {
    pub profile_arn: String,
    /// Repository filters; none means every repository.
    pub filters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagMutability {
    /// `MUTABLE`, `IMMUTABLE`, `IMMUTABLE_WITH_EXCLUSION`, `MUTABLE_WITH_EXCLUSION`, or a newer
    /// value kept verbatim.
    pub mode: String,
    pub exclusion_filters: Vec<String>,
}

/// One repository's entry of `BatchGetRepositoryScanningConfiguration`, enum values raw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedScanning {
    /// `SCAN_ON_PUSH`, `CONTINUOUS_SCAN`, `MANUAL`, or a newer value.
    pub scan_frequency: String,
    pub scan_on_push: bool,
    /// `appliedScanFilters`: the registry rule filters AWS applied to the repository.
    pub applied_filters: Vec<String>,
}

impl ReportedScanning {
    /// For settings read before this fact existed (stored JSON) and for readers that do not
    /// ask: ECR.1 then falls back to the registry rules.
    pub fn not_read() -> Fact<Self> {
        Fact::Unknown("the repository scanning configuration was not read".to_owned())
    }
}

/// A repository's effective scanning, as evaluation derives it from the registry's rules and
/// the repository's flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanningConfiguration {
    /// The effective frequency: `SCAN_ON_PUSH`, `CONTINUOUS_SCAN`, `MANUAL`, or a newer value.
    pub scan_frequency: String,
    /// The repository's own (deprecated) scan-on-push flag.
    pub scan_on_push: bool,
    /// The registry rule filters that matched.
    pub applied_filters: Vec<String>,
}

/// One repository as a reconcile sweep lists it, with the image digests it holds.
#[derive(Debug, Clone)]
pub struct ListedRepository {
    pub key: RepositoryKey,
    pub facts: RepositoryFacts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `AES256`, `KMS`, `KMS_DSSE`, or a newer value.
    pub encryption_type: String,
    pub kms_key: Option<String>,
    /// `CUSTOMER` or `AWS` (KMS `DescribeKey`); `AWS` when KMS is used without a key, as that
    /// means the AWS-managed `aws/ecr` key.
    pub key_manager: Option<Fact<String>>,
}

/// What ECR says about one image digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFacts {
    pub tags: Vec<String>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub manifest_media_type: Option<String>,
    pub artifact_media_type: Option<String>,
    pub subject_digest: Option<Digest>,
    pub size_bytes: Option<i64>,
    /// The scan state `DescribeImages` reports with the image, when it reports one.
    pub scan: Option<ScanFacts>,
    /// `lastRecordedPullTime`; absent from older serialised facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pulled_at: Option<DateTime<Utc>>,
}

/// A scan result: the raw ECR/Inspector status and the severity counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFacts {
    pub raw_status: String,
    /// Severity (upper case) → count; a missing severity means 0.
    pub severity_counts: std::collections::BTreeMap<String, i64>,
}

/// The outcome of looking one image up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "lookup", rename_all = "snake_case")]
pub enum ImageLookup {
    Found(ImageFacts),
    NotFound,
    Unreadable { reason: String },
}
