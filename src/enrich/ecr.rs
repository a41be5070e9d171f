//! [`Registry`] over the AWS SDK: ECR for repositories and images, KMS for key ownership,
//! Signer for profile status, Inspector for which images run (coverage, `ecr/coverage.rs`).
//!
//! Clients are made per account and region from the one shared `SdkConfig`, so an event is
//! read in the account and region it happened in; an account configured with a role is read
//! through STS `AssumeRole` credentials that the SDK caches and refreshes. Calls are counted
//! per operation and outcome for the metrics, and paced per operation so that a reconcile
//! sweep never trips ECR's API quotas.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ecr::types::ImageIdentifier;
use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

mod coverage;
mod revocation;
mod scanning;
mod signatures;

use super::accounts::AccountAccess;
use super::{EnrichError, Registry};
use crate::aws::{AwsErrorClass, classify, is_access_denied};
use crate::domain::{AccountId, Digest, Region, RepositoryKey, RepositoryName};
use crate::facts::RevocationQuery;
use crate::facts::{
    ArtifactKind, BlobRead, CoveredImage, CreationTemplate, Encryption, Fact, ImageFacts,
    ImageLookup, ListedRepository, ManagedSigning, ProfileStatus, PullThroughRule, RegistryFacts,
    RegistryScanning, ReportedScanning, RepositoryFacts, RepositorySettings, RepositoryState,
    ScanFacts, ScanRule, SignatureArtifact, SignatureKind, SignatureManifest, SigningRuleFacts,
    SigningStatus, TagMutability, TemplateSettings, kind_of_artifact_type,
};
use crate::telemetry::{ApiOutcome, AwsOperation, Happened, Metrics};

mod public;

#[derive(Clone)]
struct RegionalClients {
    /// The account the clients act in: the key of the rate limits ([`EcrRegistry::pace`]).
    account: AccountId,
    /// The role the clients assumed (`None`: the base credentials).
    role: Option<String>,
    ecr: aws_sdk_ecr::Client,
    kms: aws_sdk_kms::Client,
    signer: aws_sdk_signer::Client,
    inspector: aws_sdk_inspector2::Client,
    /// ECR Public, whose API answers in us-east-1 whatever the region.
    public: public::PublicClient,
}

type ProfileCache = HashMap<String, (std::time::Instant, Fact<ProfileStatus>)>;

/// Repositories whose lifecycle and policy a sweep reads at once.
const SWEEP_CONCURRENCY: usize = 8;

/// How fast each ECR/KMS/Signer operation may be called, per process. AWS publishes no rate
/// quota for ECR's describe/get calls (only for push and pull), but throttles them; pacing a
/// sweep keeps it from crowding out the event path, and throttling that still happens is
/// retried by the SDK.
#[derive(Debug, Clone, Copy)]
pub struct ApiPacing {
    pub calls_per_second: NonZeroU32,
}

impl Default for ApiPacing {
    fn default() -> Self {
        Self {
            calls_per_second: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// The SDK-backed registry reader.
pub struct EcrRegistry {
    sdk_config: SdkConfig,
    /// Which role each account is read through (none: the base credentials).
    access: Arc<AccountAccess>,
    clients: tokio::sync::Mutex<HashMap<(AccountId, Region), RegionalClients>>,
    /// One credentials provider per assumed role, shared by the account's regional clients:
    /// one AssumeRole (and one refresh an hour) per account, not per region.
    assumed: tokio::sync::Mutex<HashMap<String, SdkConfig>>,
    profiles: Mutex<ProfileCache>,
    /// KMS key ownership never changes for a key ARN: read once per key.
    key_managers: Mutex<HashMap<String, Fact<String>>>,
    pacing: DefaultKeyedRateLimiter<(AccountId, AwsOperation)>,
    metrics: Arc<Metrics>,
    /// Blob downloads (signature envelopes); the reason when no client could be made.
    http: Result<reqwest::Client, String>,
    /// How many OCI referrers of one digest are read at most ([`DEFAULT_MAX_REFERRERS`]).
    max_referrers: usize,
    /// `maxResults` of each `ListCoverage` page.
    coverage_page_size: i32,
}

/// How many referrers of one digest are read by default: anyone who can push can attach
/// referrers without limit, and each page is a paced call.
pub const DEFAULT_MAX_REFERRERS: usize = 200;

impl EcrRegistry {
    /// The Notation and Cosign signatures among the digest's OCI referrers.
    async fn referrer_signatures(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        let mut found = Vec::new();
        let mut read = 0usize;
        let mut next_token: Option<String> = None;
        loop {
            if read >= self.max_referrers {
                return Ok(capped_referrers(found, read, self.max_referrers));
            }
            self.pace(clients, AwsOperation::EcrListImageReferrers)
                .await;
            let result = clients
                .ecr
                .list_image_referrers()
                .registry_id(key.account.as_str())
                .repository_name(key.name.as_str())
                .subject_id(
                    aws_sdk_ecr::types::SubjectIdentifier::builder()
                        .image_digest(digest.as_str())
                        .build()
                        .map_err(|e| EnrichError::Transient {
                            operation: AwsOperation::EcrListImageReferrers.as_str(),
                            target: key.to_string(),
                            message: e.to_string(),
                        })?,
                )
                .set_next_token(next_token.take())
                .send()
                .await;
            match self.settle(AwsOperation::EcrListImageReferrers, key, result)? {
                Ok(output) => {
                    read += output.referrers().len();
                    found.extend(output.referrers().iter().filter_map(signature_referrer));
                    match output.next_token() {
                        Some(token) => next_token = Some(token.to_owned()),
                        None => break,
                    }
                }
                Err((code, _))
                    if code == "ImageNotFoundException"
                        || code == "RepositoryNotFoundException" =>
                {
                    break;
                }
                Err((code, message)) => {
                    return Ok(Fact::Unknown(format!(
                        "ListImageReferrers: {code}: {message}"
                    )));
                }
            }
        }
        Ok(Fact::Known(found))
    }

    /// The Cosign signature tag `sha256-<hex>.sig`: Cosign's tag convention predates OCI
    /// referrers and is still the common form.
    async fn cosign_tag_signature(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        let mut found = Vec::new();
        let cosign_tag = format!("{}.sig", digest.as_str().replacen(':', "-", 1));
        self.pace(clients, AwsOperation::EcrDescribeImages).await;
        let result = clients
            .ecr
            .describe_images()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .image_ids(ImageIdentifier::builder().image_tag(&cosign_tag).build())
            .send()
            .await;
        match self.settle(AwsOperation::EcrDescribeImages, key, result)? {
            Ok(output) => {
                if let Some(detail) = output.image_details().first() {
                    found.push(SignatureArtifact {
                        kind: SignatureKind::Cosign,
                        reference: cosign_tag,
                        pushed_at: detail.image_pushed_at().and_then(to_chrono),
                    });
                }
            }
            Err((code, _))
                if code == "ImageNotFoundException" || code == "RepositoryNotFoundException" => {}
            Err((code, message)) => {
                return Ok(Fact::Unknown(format!(
                    "DescribeImages {cosign_tag}: {code}: {message}"
                )));
            }
        }
        Ok(Fact::Known(found))
    }

    /// One repository of a listing with its settings read; `None` for a name ECR returns
    /// that we cannot represent (skipped, not guessed at).
    async fn listed_repository(
        &self,
        clients: &RegionalClients,
        account: &AccountId,
        region: &Region,
        repository: aws_sdk_ecr::types::Repository,
        reported: Fact<ReportedScanning>,
        observed_at: DateTime<Utc>,
    ) -> Result<Option<ListedRepository>, EnrichError> {
        let Some(name) = repository
            .repository_name()
            .and_then(|n| RepositoryName::parse(n).ok())
        else {
            return Ok(None);
        };
        let key = RepositoryKey {
            account: account.clone(),
            region: region.clone(),
            name,
        };
        let settings = self
            .settings_of(clients, &key, &repository, reported)
            .await?;
        Ok(Some(ListedRepository {
            key,
            facts: RepositoryFacts {
                observed_at,
                state: RepositoryState::Present(Box::new(settings)),
            },
        }))
    }

    pub fn new(sdk_config: SdkConfig, metrics: Arc<Metrics>) -> Self {
        Self::with_options(sdk_config, metrics, HashMap::new(), ApiPacing::default())
    }

    pub fn with_options(
        sdk_config: SdkConfig,
        metrics: Arc<Metrics>,
        account_roles: HashMap<AccountId, String>,
        pacing: ApiPacing,
    ) -> Self {
        Self {
            sdk_config,
            access: Arc::new(AccountAccess::explicit(account_roles)),
            clients: tokio::sync::Mutex::new(HashMap::new()),
            assumed: tokio::sync::Mutex::new(HashMap::new()),
            profiles: Mutex::new(HashMap::new()),
            key_managers: Mutex::new(HashMap::new()),
            pacing: RateLimiter::keyed(Quota::per_second(pacing.calls_per_second)),
            metrics,
            http: signatures::blob_client(),
            max_referrers: DEFAULT_MAX_REFERRERS,
            coverage_page_size: coverage::MAX_PAGE_SIZE,
        }
    }

    /// Reads each account through the role `access` names for it (shared with the sweeps, which
    /// update the discovered accounts).
    #[must_use]
    pub fn with_access(mut self, access: Arc<AccountAccess>) -> Self {
        self.access = access;
        self
    }

    /// Reads Inspector coverage in pages of `size` entries (1 to 200; Inspector's largest by
    /// default), so tests can see the paging with a few images.
    #[must_use]
    pub fn with_coverage_page_size(mut self, size: i32) -> Self {
        self.coverage_page_size = size.clamp(1, coverage::MAX_PAGE_SIZE);
        self
    }

    /// Reads at most `max` referrers of a digest (at least one page is always read).
    #[must_use]
    pub fn with_max_referrers(mut self, max: usize) -> Self {
        self.max_referrers = max;
        self
    }

    fn profiles(&self) -> std::sync::MutexGuard<'_, ProfileCache> {
        self.profiles
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for the operation's turn under its rate limit in the clients' account: each
    /// account has its own budget per operation, so one busy account cannot slow the reads of
    /// every other.
    async fn pace(&self, clients: &RegionalClients, operation: AwsOperation) {
        self.pacing
            .until_key_ready(&(clients.account.clone(), operation))
            .await;
    }

    async fn clients(&self, account: &AccountId, region: &Region) -> RegionalClients {
        let mut clients = self.clients.lock().await;
        let role = self.access.role_for(account);
        // Clients made before discovery found the account (or before its role changed) are
        // made again with the role it has now.
        if let Some(found) = clients.get(&(account.clone(), region.clone()))
            && found.role == role
        {
            return found.clone();
        }
        // ECR Public's pseudo-region is no AWS region: its API (and STS for it) is us-east-1.
        let aws_region = aws_config::Region::new(if region.is_ecr_public() {
            public::ECR_PUBLIC_API_REGION.to_owned()
        } else {
            region.as_str().to_owned()
        });
        let config = match &role {
            Some(role_arn) => self.assumed_config(role_arn).await,
            None => self.sdk_config.clone(),
        };
        let made = RegionalClients {
            account: account.clone(),
            role,
            ecr: aws_sdk_ecr::Client::from_conf(
                aws_sdk_ecr::config::Builder::from(&config)
                    .region(aws_region.clone())
                    .build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                aws_sdk_kms::config::Builder::from(&config)
                    .region(aws_region.clone())
                    .build(),
            ),
            signer: aws_sdk_signer::Client::from_conf(
                aws_sdk_signer::config::Builder::from(&config)
                    .region(aws_region.clone())
                    .build(),
            ),
            inspector: aws_sdk_inspector2::Client::from_conf(
                aws_sdk_inspector2::config::Builder::from(&config)
                    .region(aws_region)
                    .build(),
            ),
            public: public::PublicClient::new(&config),
        };
        clients.insert((account.clone(), region.clone()), made.clone());
        made
    }

    /// The configuration whose credentials come from assuming `role_arn` (STS in the worker's
    /// own region, which shares the account's partition), made once per role.
    async fn assumed_config(&self, role_arn: &str) -> SdkConfig {
        let mut assumed = self.assumed.lock().await;
        if let Some(config) = assumed.get(role_arn) {
            return config.clone();
        }
        let config =
            crate::aws::assuming(&self.sdk_config, role_arn, self.access.external_id(), None).await;
        assumed.insert(role_arn.to_owned(), config.clone());
        config
    }

    async fn clients_for(&self, key: &RepositoryKey) -> RegionalClients {
        self.clients(&key.account, &key.region).await
    }

    fn called(&self, operation: AwsOperation, outcome: ApiOutcome) {
        Happened::AwsCalled { operation, outcome }.record(&self.metrics);
    }

    /// Records the call's outcome and turns the SDK result into "answer or lasting error code".
    fn settle<T, E>(
        &self,
        operation: AwsOperation,
        target: &dyn std::fmt::Display,
        result: Result<T, aws_sdk_ecr::error::SdkError<E, aws_sdk_ecr::config::http::HttpResponse>>,
    ) -> Result<Result<T, (String, String)>, EnrichError>
    where
        E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        match result {
            Ok(value) => {
                self.called(operation, ApiOutcome::Ok);
                Ok(Ok(value))
            }
            Err(err) => match classify(&err) {
                AwsErrorClass::Transient(message) => {
                    self.called(operation, ApiOutcome::Transient);
                    Err(EnrichError::Transient {
                        operation: operation.as_str(),
                        target: target.to_string(),
                        message,
                    })
                }
                AwsErrorClass::Service { code, message } => {
                    self.called(operation, ApiOutcome::ServiceError);
                    if is_access_denied(&code) {
                        Happened::AwsAccessDenied {
                            operation,
                            target: &target.to_string(),
                            message: &format!("{code}: {message}"),
                        }
                        .record(&self.metrics);
                    }
                    Ok(Err((code, message)))
                }
            },
        }
    }

    /// A fact AWS did not give after the SDK's retries becomes `Unknown` (unavailable), so that
    /// only the checks that need it are undetermined and everything else about the event is
    /// recorded; one API's outage must not stop the pipeline (the fact is read again later:
    /// signature re-checks, repository re-reads). Used for the facts an event can be judged
    /// without; a repository's or a digest's own description still retries the message.
    fn degrade<T>(&self, read: Result<Fact<T>, EnrichError>) -> Fact<T> {
        match read {
            Ok(fact) => fact,
            Err(EnrichError::Transient {
                operation,
                target,
                message,
            }) => {
                if let Some(operation) = AwsOperation::ALL.iter().find(|o| o.as_str() == operation)
                {
                    Happened::AwsUnavailable {
                        operation: *operation,
                        target: &target,
                        message: &message,
                    }
                    .record(&self.metrics);
                }
                Fact::unavailable(operation, &message)
            }
        }
    }

    /// Reads every page of a listing, each page paced and settled like any call. `page` sends
    /// the request for a continuation token; `items` splits an answer into its items and the
    /// next token. A lasting error makes the whole listing `Unknown`.
    async fn all_pages<O, E, T, Fut>(
        &self,
        clients: &RegionalClients,
        operation: AwsOperation,
        target: &(dyn std::fmt::Display + Sync),
        mut page: impl FnMut(Option<String>) -> Fut,
        mut items: impl FnMut(&O) -> (Vec<T>, Option<String>),
    ) -> Result<Fact<Vec<T>>, EnrichError>
    where
        Fut: std::future::Future<
                Output = Result<
                    O,
                    aws_sdk_ecr::error::SdkError<E, aws_sdk_ecr::config::http::HttpResponse>,
                >,
            >,
        E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut all = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            self.pace(clients, operation).await;
            let result = page(next_token.take()).await;
            match self.settle(operation, target, result)? {
                Ok(output) => {
                    let (found, token) = items(&output);
                    all.extend(found);
                    match token {
                        Some(token) => next_token = Some(token),
                        None => return Ok(Fact::Known(all)),
                    }
                }
                Err((code, message)) => {
                    let name = operation
                        .as_str()
                        .split_once(':')
                        .map_or(operation.as_str(), |(_, name)| name);
                    return Ok(Fact::Unknown(format!("{name}: {code}: {message}")));
                }
            }
        }
    }

    async fn lifecycle_policy(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
    ) -> Result<Fact<Option<String>>, EnrichError> {
        self.pace(clients, AwsOperation::EcrGetLifecyclePolicy)
            .await;
        let result = clients
            .ecr
            .get_lifecycle_policy()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .send()
            .await;
        Ok(
            match self.settle(AwsOperation::EcrGetLifecyclePolicy, key, result)? {
                // A policy without text is still a policy (ECR.3); ECRA.5 compares it as empty.
                Ok(output) => Fact::Known(Some(
                    output
                        .lifecycle_policy_text()
                        .unwrap_or_default()
                        .to_owned(),
                )),
                Err((code, _)) if code == "LifecyclePolicyNotFoundException" => Fact::Known(None),
                Err((code, message)) => {
                    Fact::Unknown(format!("GetLifecyclePolicy: {code}: {message}"))
                }
            },
        )
    }

    async fn repository_policy(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
    ) -> Result<Fact<Option<String>>, EnrichError> {
        self.pace(clients, AwsOperation::EcrGetRepositoryPolicy)
            .await;
        let result = clients
            .ecr
            .get_repository_policy()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .send()
            .await;
        Ok(
            match self.settle(AwsOperation::EcrGetRepositoryPolicy, key, result)? {
                Ok(output) => Fact::Known(output.policy_text().map(str::to_owned)),
                Err((code, _)) if code == "RepositoryPolicyNotFoundException" => Fact::Known(None),
                Err((code, message)) => {
                    Fact::Unknown(format!("GetRepositoryPolicy: {code}: {message}"))
                }
            },
        )
    }

    async fn key_manager(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
        kms_key: &str,
    ) -> Result<Fact<String>, EnrichError> {
        if let Some(known) = self
            .key_managers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(kms_key)
        {
            return Ok(known.clone());
        }
        self.pace(clients, AwsOperation::KmsDescribeKey).await;
        let result = clients.kms.describe_key().key_id(kms_key).send().await;
        let manager = match self.settle(AwsOperation::KmsDescribeKey, key, result)? {
            Ok(output) => match output.key_metadata().and_then(|m| m.key_manager()) {
                Some(manager) => Fact::Known(manager.as_str().to_owned()),
                None => Fact::Unknown("KMS DescribeKey returned no KeyManager".to_owned()),
            },
            Err((code, message)) => Fact::Unknown(format!("KMS DescribeKey: {code}: {message}")),
        };
        // Only a definite answer is kept; a refusal may be lifted by a policy change.
        if let Fact::Known(_) = &manager {
            self.key_managers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(kms_key.to_owned(), manager.clone());
        }
        Ok(manager)
    }

    /// A repository's settings from its `DescribeRepositories` entry plus the per-repository
    /// reads no listing includes (lifecycle policy, repository policy, key ownership).
    async fn settings_of(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
        repository: &aws_sdk_ecr::types::Repository,
        reported_scanning: Fact<ReportedScanning>,
    ) -> Result<RepositorySettings, EnrichError> {
        let tag_mutability = match repository.image_tag_mutability() {
            Some(mode) => Fact::Known(TagMutability {
                mode: mode.as_str().to_owned(),
                exclusion_filters: repository
                    .image_tag_mutability_exclusion_filters()
                    .iter()
                    .map(|f| f.filter().to_owned())
                    .collect(),
            }),
            None => Fact::Unknown("DescribeRepositories returned no imageTagMutability".to_owned()),
        };
        let (lifecycle_policy, policy) = tokio::join!(
            self.lifecycle_policy(clients, key),
            self.repository_policy(clients, key)
        );
        let lifecycle_policy = self.degrade(lifecycle_policy);
        let encryption = match repository.encryption_configuration() {
            // ECR's default when nothing was chosen at creation.
            None => Fact::Known(Encryption {
                encryption_type: "AES256".to_owned(),
                kms_key: None,
                key_manager: None,
            }),
            Some(config) => {
                let encryption_type = config.encryption_type().as_str().to_owned();
                let kms_key = config.kms_key().map(str::to_owned);
                let key_manager = match (&*encryption_type, &kms_key) {
                    ("KMS" | "KMS_DSSE", Some(kms_key)) => {
                        Some(self.degrade(self.key_manager(clients, key, kms_key).await))
                    }
                    // KMS without a key is the AWS-managed aws/ecr key.
                    ("KMS" | "KMS_DSSE", None) => Some(Fact::Known("AWS".to_owned())),
                    _ => None,
                };
                Fact::Known(Encryption {
                    encryption_type,
                    kms_key,
                    key_manager,
                })
            }
        };
        Ok(RepositorySettings {
            arn: repository
                .repository_arn()
                .map_or_else(|| key.arn(), str::to_owned),
            tag_mutability,
            scan_on_push: repository
                .image_scanning_configuration()
                .is_some_and(|c| c.scan_on_push()),
            reported_scanning,
            lifecycle_policy: lifecycle_policy.as_ref().map(Option::is_some),
            lifecycle_policy_text: lifecycle_policy,
            encryption,
            policy: self.degrade(policy),
        })
    }

    async fn registry_scanning(
        &self,
        clients: &RegionalClients,
        target: &str,
    ) -> Result<Fact<RegistryScanning>, EnrichError> {
        self.pace(clients, AwsOperation::EcrGetRegistryScanningConfiguration)
            .await;
        let result = clients
            .ecr
            .get_registry_scanning_configuration()
            .send()
            .await;
        Ok(
            match self.settle(
                AwsOperation::EcrGetRegistryScanningConfiguration,
                &target,
                result,
            )? {
                Ok(output) => {
                    let config = output.scanning_configuration();
                    Fact::Known(RegistryScanning {
                        // ECR's default when the registry was never configured.
                        scan_type: config
                            .and_then(|c| c.scan_type())
                            .map_or("BASIC", |t| t.as_str())
                            .to_owned(),
                        rules: config
                            .map(|c| c.rules())
                            .unwrap_or_default()
                            .iter()
                            .map(|rule| ScanRule {
                                frequency: rule.scan_frequency().as_str().to_owned(),
                                filters: rule
                                    .repository_filters()
                                    .iter()
                                    .map(|f| f.filter().to_owned())
                                    .collect(),
                            })
                            .collect(),
                    })
                }
                Err((code, message)) => Fact::Unknown(format!(
                    "GetRegistryScanningConfiguration: {code}: {message}"
                )),
            },
        )
    }

    async fn registry_signing(
        &self,
        clients: &RegionalClients,
        target: &str,
    ) -> Result<Fact<Vec<SigningRuleFacts>>, EnrichError> {
        self.pace(clients, AwsOperation::EcrGetSigningConfiguration)
            .await;
        let result = clients.ecr.get_signing_configuration().send().await;
        Ok(
            match self.settle(AwsOperation::EcrGetSigningConfiguration, &target, result)? {
                Ok(output) => Fact::Known(
                    output
                        .signing_configuration()
                        .map(|c| c.rules())
                        .unwrap_or_default()
                        .iter()
                        .map(|rule| SigningRuleFacts {
                            profile_arn: rule.signing_profile_arn().to_owned(),
                            filters: rule
                                .repository_filters()
                                .iter()
                                .map(|f| f.filter().to_owned())
                                .collect(),
                        })
                        .collect(),
                ),
                Err((code, _)) if code == "SigningConfigurationNotFoundException" => {
                    Fact::Known(Vec::new())
                }
                Err((code, message)) => {
                    Fact::Unknown(format!("GetSigningConfiguration: {code}: {message}"))
                }
            },
        )
    }
    async fn pull_through_rules(
        &self,
        clients: &RegionalClients,
        target: &str,
    ) -> Result<Fact<Vec<PullThroughRule>>, EnrichError> {
        self.all_pages(
            clients,
            AwsOperation::EcrDescribePullThroughCacheRules,
            &target,
            |token| {
                clients
                    .ecr
                    .describe_pull_through_cache_rules()
                    .max_results(1000)
                    .set_next_token(token)
                    .send()
            },
            |output| {
                let rules = output
                    .pull_through_cache_rules()
                    .iter()
                    .filter_map(|rule| {
                        Some(PullThroughRule {
                            // A rule without a prefix cannot be matched to repositories.
                            prefix: rule.ecr_repository_prefix()?.to_owned(),
                            upstream_url: rule
                                .upstream_registry_url()
                                .unwrap_or_default()
                                .to_owned(),
                        })
                    })
                    .collect();
                (rules, output.next_token().map(str::to_owned))
            },
        )
        .await
    }

    async fn creation_templates(
        &self,
        clients: &RegionalClients,
        target: &str,
    ) -> Result<Fact<Vec<CreationTemplate>>, EnrichError> {
        self.all_pages(
            clients,
            AwsOperation::EcrDescribeRepositoryCreationTemplates,
            &target,
            |token| {
                clients
                    .ecr
                    .describe_repository_creation_templates()
                    .max_results(1000)
                    .set_next_token(token)
                    .send()
            },
            |output| {
                let templates = output
                    .repository_creation_templates()
                    .iter()
                    .filter_map(|template| {
                        Some(CreationTemplate {
                            prefix: template.prefix()?.to_owned(),
                            applied_for: template
                                .applied_for()
                                .iter()
                                .map(|a| a.as_str().to_owned())
                                .collect(),
                            settings: template_settings(template),
                        })
                    })
                    .collect();
                (templates, output.next_token().map(str::to_owned))
            },
        )
        .await
    }
}

/// The settings a repository creation template gives, as ECRA.5 compares them.
fn template_settings(
    template: &aws_sdk_ecr::types::RepositoryCreationTemplate,
) -> TemplateSettings {
    let encryption = template.encryption_configuration();
    TemplateSettings {
        tag_mutability: template.image_tag_mutability().map(|mode| TagMutability {
            mode: mode.as_str().to_owned(),
            exclusion_filters: template
                .image_tag_mutability_exclusion_filters()
                .iter()
                .map(|f| f.filter().to_owned())
                .collect(),
        }),
        encryption_type: encryption.map(|e| e.encryption_type().as_str().to_owned()),
        kms_key: encryption.and_then(|e| e.kms_key()).map(str::to_owned),
        lifecycle_policy: template.lifecycle_policy().map(str::to_owned),
        repository_policy: template.repository_policy().map(str::to_owned),
    }
}

/// A referrer that is a Notation or Cosign signature.
fn signature_referrer(referrer: &aws_sdk_ecr::types::ImageReferrer) -> Option<SignatureArtifact> {
    let kind = match referrer.artifact_type().map(kind_of_artifact_type) {
        Some(ArtifactKind::NotationSignature) => SignatureKind::Notation,
        Some(ArtifactKind::CosignSignature) => SignatureKind::Cosign,
        _ => return None,
    };
    Some(SignatureArtifact {
        kind,
        reference: referrer.digest().to_owned(),
        pushed_at: None,
    })
}

/// What a listing stopped at the cap says: the signatures among the referrers read, when there
/// are any (one trusted signature is enough to be signed); otherwise that the rest was not read,
/// so the verdict says why it could not find a signature instead of calling the digest bare.
fn capped_referrers(
    found: Vec<SignatureArtifact>,
    read: usize,
    max: usize,
) -> Fact<Vec<SignatureArtifact>> {
    tracing::warn!(
        referrers.read = read,
        referrers.max = max,
        "a digest has more referrers than ECR_AUDIT_MAX_REFERRERS_PER_DIGEST; stopped reading"
    );
    if found.is_empty() {
        Fact::Unknown(format!(
            "ListImageReferrers: more than {max} referrers; stopped after {read} without a signature among them"
        ))
    } else {
        Fact::Known(found)
    }
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

fn image_facts(detail: &aws_sdk_ecr::types::ImageDetail) -> ImageFacts {
    ImageFacts {
        tags: detail.image_tags().to_vec(),
        pushed_at: detail.image_pushed_at().and_then(to_chrono),
        manifest_media_type: detail.image_manifest_media_type().map(str::to_owned),
        artifact_media_type: detail.artifact_media_type().map(str::to_owned),
        // A malformed subject digest from the API is not trusted as an identifier.
        subject_digest: detail
            .subject_manifest_digest()
            .and_then(|d| Digest::parse(d).ok()),
        size_bytes: detail.image_size_in_bytes(),
        last_pulled_at: detail.last_recorded_pull_time().and_then(to_chrono),
        scan: detail.image_scan_status().and_then(|status| {
            Some(ScanFacts {
                raw_status: status.status()?.as_str().to_owned(),
                severity_counts: severity_counts(
                    detail
                        .image_scan_findings_summary()
                        .and_then(|s| s.finding_severity_counts()),
                ),
            })
        }),
    }
}

#[async_trait]
impl Registry for EcrRegistry {
    async fn repository(&self, key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError> {
        if key.region.is_ecr_public() {
            return self.public_repository(key).await;
        }
        let clients = self.clients_for(key).await;
        let observed_at = Utc::now();
        self.pace(&clients, AwsOperation::EcrDescribeRepositories)
            .await;
        let result = clients
            .ecr
            .describe_repositories()
            .registry_id(key.account.as_str())
            .repository_names(key.name.as_str())
            .send()
            .await;
        let repository = match self.settle(AwsOperation::EcrDescribeRepositories, key, result)? {
            Ok(output) => output
                .repositories()
                .iter()
                .find(|r| r.repository_name() == Some(key.name.as_str()))
                .cloned(),
            Err((code, _)) if code == "RepositoryNotFoundException" => None,
            Err((code, message)) => {
                return Ok(RepositoryFacts {
                    observed_at,
                    state: RepositoryState::Unreadable {
                        reason: format!("DescribeRepositories: {code}: {message}"),
                    },
                });
            }
        };
        let Some(repository) = repository else {
            return Ok(RepositoryFacts {
                observed_at,
                state: RepositoryState::Absent,
            });
        };
        let reported = self
            .reported_scanning(&clients, &key.to_string(), &[key.name.as_str()])
            .await?
            .remove(key.name.as_str())
            .unwrap_or_else(ReportedScanning::not_read);
        let settings = self
            .settings_of(&clients, key, &repository, reported)
            .await?;
        Ok(RepositoryFacts {
            observed_at,
            state: RepositoryState::Present(Box::new(settings)),
        })
    }

    async fn registry(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<RegistryFacts, EnrichError> {
        if region.is_ecr_public() {
            return Ok(RegistryFacts::none(Utc::now()));
        }
        let clients = self.clients(account, region).await;
        let observed_at = Utc::now();
        let target = format!("{account}/{region}");
        let (scanning, signing, pull_through_rules, creation_templates) = tokio::join!(
            self.registry_scanning(&clients, &target),
            self.registry_signing(&clients, &target),
            self.pull_through_rules(&clients, &target),
            self.creation_templates(&clients, &target)
        );
        Ok(RegistryFacts {
            observed_at,
            scanning: self.degrade(scanning),
            signing: self.degrade(signing),
            pull_through_rules: self.degrade(pull_through_rules),
            creation_templates: self.degrade(creation_templates),
        })
    }

    async fn list_repositories(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<ListedRepository>>, EnrichError> {
        if region.is_ecr_public() {
            return self.public_repositories(account).await;
        }
        let clients = self.clients(account, region).await;
        let target = format!("{account}/{region}");
        // Dated before the first page: a listing is as old as its first request.
        let observed_at = Utc::now();
        let described = match self
            .all_pages(
                &clients,
                AwsOperation::EcrDescribeRepositories,
                &target,
                |token| {
                    clients
                        .ecr
                        .describe_repositories()
                        .registry_id(account.as_str())
                        .max_results(1000)
                        .set_next_token(token)
                        .send()
                },
                |output| {
                    (
                        output.repositories().to_vec(),
                        output.next_token().map(str::to_owned),
                    )
                },
            )
            .await?
        {
            Fact::Known(described) => described,
            Fact::Unknown(reason) => return Ok(Fact::Unknown(reason)),
        };
        let names: Vec<&str> = described
            .iter()
            .filter_map(aws_sdk_ecr::types::Repository::repository_name)
            .collect();
        let mut reported = self
            .reported_scanning_all(&clients, &target, &names)
            .await?;
        let listed: Vec<Result<Option<ListedRepository>, EnrichError>> =
            stream::iter(described.into_iter().map(|repository| {
                let answer = repository
                    .repository_name()
                    .and_then(|name| reported.remove(name))
                    .unwrap_or_else(ReportedScanning::not_read);
                self.listed_repository(&clients, account, region, repository, answer, observed_at)
            }))
            .buffered(SWEEP_CONCURRENCY)
            .collect()
            .await;
        let mut repositories = Vec::with_capacity(listed.len());
        for entry in listed {
            if let Some(found) = entry? {
                repositories.push(found);
            }
        }
        Ok(Fact::Known(repositories))
    }

    async fn list_images(
        &self,
        key: &RepositoryKey,
    ) -> Result<Fact<Vec<(Digest, ImageFacts)>>, EnrichError> {
        let clients = self.clients_for(key).await;
        self.all_pages(
            &clients,
            AwsOperation::EcrDescribeImages,
            key,
            |token| {
                clients
                    .ecr
                    .describe_images()
                    .registry_id(key.account.as_str())
                    .repository_name(key.name.as_str())
                    .max_results(1000)
                    .set_next_token(token)
                    .send()
            },
            |output| {
                let images = output
                    .image_details()
                    .iter()
                    .filter_map(|detail| {
                        let digest = Digest::parse(detail.image_digest()?).ok()?;
                        Some((digest, image_facts(detail)))
                    })
                    .collect();
                (images, output.next_token().map(str::to_owned))
            },
        )
        .await
    }

    async fn image(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<ImageLookup, EnrichError> {
        let clients = self.clients_for(key).await;
        self.pace(&clients, AwsOperation::EcrDescribeImages).await;
        let result = clients
            .ecr
            .describe_images()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .image_ids(
                ImageIdentifier::builder()
                    .image_digest(digest.as_str())
                    .build(),
            )
            .send()
            .await;
        let output = match self.settle(AwsOperation::EcrDescribeImages, key, result)? {
            Ok(output) => output,
            Err((code, _))
                if code == "ImageNotFoundException" || code == "RepositoryNotFoundException" =>
            {
                return Ok(ImageLookup::NotFound);
            }
            Err((code, message)) => {
                return Ok(ImageLookup::Unreadable {
                    reason: format!("DescribeImages: {code}: {message}"),
                });
            }
        };
        let Some(detail) = output
            .image_details()
            .iter()
            .find(|d| d.image_digest() == Some(digest.as_str()))
        else {
            return Ok(ImageLookup::NotFound);
        };
        Ok(ImageLookup::Found(image_facts(detail)))
    }

    async fn signing_statuses(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
        Ok(self.degrade(self.read_signing_statuses(key, digest).await))
    }

    async fn signature_artifacts(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
        cosign_tag: bool,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        Ok(self.degrade(self.read_signature_artifacts(key, digest, cosign_tag).await))
    }

    async fn signature_manifest(
        &self,
        key: &RepositoryKey,
        reference: &str,
    ) -> Result<Fact<SignatureManifest>, EnrichError> {
        self.read_signature_manifest(key, reference).await
    }

    async fn blob(
        &self,
        key: &RepositoryKey,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Fact<BlobRead>, EnrichError> {
        self.read_blob(key, digest, max_bytes).await
    }

    async fn revoked_entities(
        &self,
        query: &RevocationQuery,
    ) -> Result<Fact<Vec<String>>, EnrichError> {
        self.read_revoked_entities(query).await
    }

    async fn profile_status(&self, profile_arn: &str) -> Result<Fact<ProfileStatus>, EnrichError> {
        Ok(self.degrade(self.read_profile_status(profile_arn).await))
    }

    async fn image_coverage(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<CoveredImage>>, EnrichError> {
        self.read_image_coverage(account, region).await
    }

    async fn scan(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Option<ScanFacts>>, EnrichError> {
        let clients = self.clients_for(key).await;
        self.pace(&clients, AwsOperation::EcrDescribeImageScanFindings)
            .await;
        let result = clients
            .ecr
            .describe_image_scan_findings()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .image_id(
                ImageIdentifier::builder()
                    .image_digest(digest.as_str())
                    .build(),
            )
            .max_results(1)
            .send()
            .await;
        Ok(
            match self.settle(AwsOperation::EcrDescribeImageScanFindings, key, result)? {
                Ok(output) => match output.image_scan_status().and_then(|s| s.status()) {
                    Some(status) => Fact::Known(Some(ScanFacts {
                        raw_status: status.as_str().to_owned(),
                        severity_counts: severity_counts(
                            output
                                .image_scan_findings()
                                .and_then(|f| f.finding_severity_counts()),
                        ),
                    })),
                    None => {
                        Fact::Unknown("DescribeImageScanFindings returned no status".to_owned())
                    }
                },
                Err((code, _)) if code == "ScanNotFoundException" => Fact::Known(None),
                Err((code, message)) => {
                    Fact::Unknown(format!("DescribeImageScanFindings: {code}: {message}"))
                }
            },
        )
    }
}

/// The signature reads behind [`Registry`]'s methods, which degrade what AWS does not answer.
impl EcrRegistry {
    async fn read_signing_statuses(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
        let clients = self.clients_for(key).await;
        self.pace(&clients, AwsOperation::EcrDescribeImageSigningStatus)
            .await;
        let result = clients
            .ecr
            .describe_image_signing_status()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .image_id(
                ImageIdentifier::builder()
                    .image_digest(digest.as_str())
                    .build(),
            )
            .send()
            .await;
        Ok(
            match self.settle(AwsOperation::EcrDescribeImageSigningStatus, key, result)? {
                Ok(output) => Fact::Known(
                    output
                        .signing_statuses()
                        .iter()
                        .map(|s| ManagedSigning {
                            profile_arn: s.signing_profile_arn().unwrap_or_default().to_owned(),
                            status: SigningStatus::from_raw(
                                s.status().map_or("UNKNOWN", |s| s.as_str()),
                            ),
                            failure_code: s.failure_code().map(str::to_owned),
                            failure_reason: s.failure_reason().map(str::to_owned),
                        })
                        .collect(),
                ),
                // The image is gone: nothing can be signing it.
                Err((code, _))
                    if code == "ImageNotFoundException"
                        || code == "RepositoryNotFoundException" =>
                {
                    Fact::Known(Vec::new())
                }
                Err((code, message)) => {
                    Fact::Unknown(format!("DescribeImageSigningStatus: {code}: {message}"))
                }
            },
        )
    }

    async fn read_signature_artifacts(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
        cosign_tag: bool,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        let clients = self.clients_for(key).await;
        let mut found = match self.referrer_signatures(&clients, key, digest).await? {
            Fact::Known(found) => found,
            unknown @ Fact::Unknown(_) => return Ok(unknown),
        };
        if !cosign_tag {
            return Ok(Fact::Known(found));
        }
        match self.cosign_tag_signature(&clients, key, digest).await? {
            Fact::Known(tagged) => found.extend(tagged),
            Fact::Unknown(reason) => return Ok(Fact::Unknown(reason)),
        }
        Ok(Fact::Known(found))
    }

    async fn read_profile_status(
        &self,
        profile_arn: &str,
    ) -> Result<Fact<ProfileStatus>, EnrichError> {
        if let Some((read_at, status)) = self.profiles().get(profile_arn)
            && read_at.elapsed() < PROFILE_STATUS_TTL
        {
            return Ok(status.clone());
        }
        // arn:aws:signer:REGION:ACCOUNT:/signing-profiles/NAME
        let parts: Vec<&str> = profile_arn.split(':').collect();
        let (Some(region), Some(account), Some(name)) =
            (parts.get(3), parts.get(4), profile_arn.rsplit('/').next())
        else {
            return Ok(Fact::Unknown(format!(
                "not a signing profile ARN: {profile_arn}"
            )));
        };
        let Ok(region) = Region::parse(region) else {
            return Ok(Fact::Unknown(format!(
                "no region in signing profile ARN {profile_arn}"
            )));
        };
        let Ok(account) = AccountId::parse(account) else {
            return Ok(Fact::Unknown(format!(
                "no account in signing profile ARN {profile_arn}"
            )));
        };
        let clients = self.clients(&account, &region).await;
        self.pace(&clients, AwsOperation::SignerGetSigningProfile)
            .await;
        let result = clients
            .signer
            .get_signing_profile()
            .profile_name(name)
            // A profile of another account (a cross-account signing rule) is read with its
            // owner; without it Signer looks up a same-named profile of the caller's account.
            .profile_owner(account.as_str())
            .send()
            .await;
        let status =
            match self.settle(AwsOperation::SignerGetSigningProfile, &profile_arn, result)? {
                Ok(output) => match output.status() {
                    Some(status) => Fact::Known(ProfileStatus::from_raw(status.as_str())),
                    None => Fact::Unknown("GetSigningProfile returned no status".to_owned()),
                },
                // A deleted profile vouches for nothing.
                Err((code, _)) if code == "ResourceNotFoundException" => {
                    Fact::Known(ProfileStatus::NotFound)
                }
                Err((code, message)) => {
                    Fact::Unknown(format!("GetSigningProfile: {code}: {message}"))
                }
            };
        self.profiles().insert(
            profile_arn.to_owned(),
            (std::time::Instant::now(), status.clone()),
        );
        Ok(status)
    }
}

/// How long a Signer profile's status is trusted before it is read again: short, so that a
/// revocation shows within a minute.
const PROFILE_STATUS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

fn severity_counts(
    counts: Option<&std::collections::HashMap<aws_sdk_ecr::types::FindingSeverity, i32>>,
) -> std::collections::BTreeMap<String, i64> {
    counts
        .into_iter()
        .flatten()
        .map(|(severity, n)| (severity.as_str().to_ascii_uppercase(), i64::from(*n)))
        .collect()
}
