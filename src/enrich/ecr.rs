//! [`Registry`] over the AWS SDK: ECR for repositories and images, KMS for key ownership.
//!
//! Clients are made per region from the one shared `SdkConfig`, so an event is read in the
//! region it happened in. Calls are counted per operation and outcome for the metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ecr::types::ImageIdentifier;
use chrono::{DateTime, Utc};

use super::aws::{AwsErrorClass, classify};
use super::{
    Encryption, EnrichError, Fact, ImageFacts, ImageLookup, Registry, RepositoryFacts,
    RepositorySettings, RepositoryState, ScanFacts, ScanningConfiguration, TagMutability,
};
use crate::domain::{Digest, Region, RepositoryKey};
use crate::evaluate::artifact::{ArtifactKind, kind_of_artifact_type};
use crate::evaluate::signature::{ManagedSigning, SignatureArtifact, SignatureKind};
use crate::export::metrics::{ApiOutcome, Metrics};

#[derive(Clone)]
struct RegionalClients {
    ecr: aws_sdk_ecr::Client,
    kms: aws_sdk_kms::Client,
    signer: aws_sdk_signer::Client,
}

type ProfileCache = HashMap<String, (std::time::Instant, Fact<String>)>;

/// The SDK-backed registry reader.
pub struct EcrRegistry {
    sdk_config: SdkConfig,
    clients: Mutex<HashMap<Region, RegionalClients>>,
    profiles: Mutex<ProfileCache>,
    metrics: Arc<Metrics>,
}

impl EcrRegistry {
    pub fn new(sdk_config: SdkConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            sdk_config,
            clients: Mutex::new(HashMap::new()),
            profiles: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn profiles(&self) -> std::sync::MutexGuard<'_, ProfileCache> {
        self.profiles
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn clients(&self, region: &Region) -> RegionalClients {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        clients
            .entry(region.clone())
            .or_insert_with(|| {
                let region = aws_config::Region::new(region.as_str().to_owned());
                RegionalClients {
                    ecr: aws_sdk_ecr::Client::from_conf(
                        aws_sdk_ecr::config::Builder::from(&self.sdk_config)
                            .region(region.clone())
                            .build(),
                    ),
                    kms: aws_sdk_kms::Client::from_conf(
                        aws_sdk_kms::config::Builder::from(&self.sdk_config)
                            .region(region.clone())
                            .build(),
                    ),
                    signer: aws_sdk_signer::Client::from_conf(
                        aws_sdk_signer::config::Builder::from(&self.sdk_config)
                            .region(region)
                            .build(),
                    ),
                }
            })
            .clone()
    }

    /// Records the call's outcome and turns the SDK result into "answer or lasting error code".
    fn settle<T, E>(
        &self,
        operation: &'static str,
        target: &dyn std::fmt::Display,
        result: Result<T, aws_sdk_ecr::error::SdkError<E, aws_sdk_ecr::config::http::HttpResponse>>,
    ) -> Result<Result<T, (String, String)>, EnrichError>
    where
        E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        match result {
            Ok(value) => {
                self.metrics.aws_call(operation, ApiOutcome::ok);
                Ok(Ok(value))
            }
            Err(err) => match classify(&err) {
                AwsErrorClass::Transient(message) => {
                    self.metrics.aws_call(operation, ApiOutcome::transient);
                    Err(EnrichError::Transient {
                        operation,
                        target: target.to_string(),
                        message,
                    })
                }
                AwsErrorClass::Service { code, message } => {
                    self.metrics.aws_call(operation, ApiOutcome::service_error);
                    Ok(Err((code, message)))
                }
            },
        }
    }

    async fn lifecycle_policy(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
    ) -> Result<Fact<bool>, EnrichError> {
        let result = clients
            .ecr
            .get_lifecycle_policy()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .send()
            .await;
        Ok(match self.settle("ecr:GetLifecyclePolicy", key, result)? {
            Ok(_) => Fact::Known(true),
            Err((code, _)) if code == "LifecyclePolicyNotFoundException" => Fact::Known(false),
            Err((code, message)) => Fact::Unknown(format!("GetLifecyclePolicy: {code}: {message}")),
        })
    }

    async fn scanning(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
    ) -> Result<Fact<ScanningConfiguration>, EnrichError> {
        let result = clients
            .ecr
            .batch_get_repository_scanning_configuration()
            .repository_names(key.name.as_str())
            .send()
            .await;
        let output =
            match self.settle("ecr:BatchGetRepositoryScanningConfiguration", key, result)? {
                Ok(output) => output,
                Err((code, message)) => {
                    return Ok(Fact::Unknown(format!(
                        "BatchGetRepositoryScanningConfiguration: {code}: {message}"
                    )));
                }
            };
        if let Some(config) = output
            .scanning_configurations()
            .iter()
            .find(|c| c.repository_name() == Some(key.name.as_str()))
        {
            return Ok(match config.scan_frequency() {
                Some(frequency) => Fact::Known(ScanningConfiguration {
                    scan_frequency: frequency.as_str().to_owned(),
                    scan_on_push: config.scan_on_push(),
                    applied_filters: config
                        .applied_scan_filters()
                        .iter()
                        .map(|f| f.filter().to_owned())
                        .collect(),
                }),
                None => Fact::Unknown("ECR reported no scan frequency".to_owned()),
            });
        }
        let failure = output
            .failures()
            .iter()
            .find(|f| f.repository_name() == Some(key.name.as_str()))
            .map(|f| {
                format!(
                    "{}: {}",
                    f.failure_code().map(|c| c.as_str()).unwrap_or("UNKNOWN"),
                    f.failure_reason().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "no configuration returned for the repository".to_owned());
        Ok(Fact::Unknown(format!(
            "BatchGetRepositoryScanningConfiguration: {failure}"
        )))
    }

    async fn key_manager(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
        kms_key: &str,
    ) -> Result<Fact<String>, EnrichError> {
        let result = clients.kms.describe_key().key_id(kms_key).send().await;
        Ok(match self.settle("kms:DescribeKey", key, result)? {
            Ok(output) => match output.key_metadata().and_then(|m| m.key_manager()) {
                Some(manager) => Fact::Known(manager.as_str().to_owned()),
                None => Fact::Unknown("KMS DescribeKey returned no KeyManager".to_owned()),
            },
            Err((code, message)) => Fact::Unknown(format!("KMS DescribeKey: {code}: {message}")),
        })
    }
}

/// The registry's per-repository answer and the repository's own `scanOnPush` flag, combined:
/// AWS documents both as making a repository scan on push, and it is not verified that
/// `BatchGetRepositoryScanningConfiguration` always folds the flag in (the emulator does not),
/// so a flag that is set upgrades `MANUAL` to `SCAN_ON_PUSH` here.
fn with_repository_flag(
    scanning: Fact<ScanningConfiguration>,
    repository_scan_on_push: bool,
) -> Fact<ScanningConfiguration> {
    scanning.map(|mut s| {
        if repository_scan_on_push {
            s.scan_on_push = true;
            if s.scan_frequency == "MANUAL" {
                s.scan_frequency = "SCAN_ON_PUSH".to_owned();
            }
        }
        s
    })
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

#[async_trait]
impl Registry for EcrRegistry {
    async fn repository(&self, key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError> {
        let clients = self.clients(&key.region);
        let observed_at = Utc::now();
        let result = clients
            .ecr
            .describe_repositories()
            .registry_id(key.account.as_str())
            .repository_names(key.name.as_str())
            .send()
            .await;
        let repository = match self.settle("ecr:DescribeRepositories", key, result)? {
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
        let repository_scan_on_push = repository
            .image_scanning_configuration()
            .is_some_and(|c| c.scan_on_push());
        let encryption_config = repository.encryption_configuration().map(|c| {
            (
                c.encryption_type().as_str().to_owned(),
                c.kms_key().map(str::to_owned),
            )
        });

        let (lifecycle_policy, scanning) = tokio::join!(
            self.lifecycle_policy(&clients, key),
            self.scanning(&clients, key)
        );
        let encryption = match encryption_config {
            // ECR's default when nothing was chosen at creation.
            None => Fact::Known(Encryption {
                encryption_type: "AES256".to_owned(),
                kms_key: None,
                key_manager: None,
            }),
            Some((encryption_type, kms_key)) => {
                let key_manager = match (&*encryption_type, &kms_key) {
                    ("KMS" | "KMS_DSSE", Some(kms_key)) => {
                        Some(self.key_manager(&clients, key, kms_key).await?)
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

        Ok(RepositoryFacts {
            observed_at,
            state: RepositoryState::Present(Box::new(RepositorySettings {
                arn: repository
                    .repository_arn()
                    .map_or_else(|| key.arn(), str::to_owned),
                tag_mutability,
                scanning: with_repository_flag(scanning?, repository_scan_on_push),
                lifecycle_policy: lifecycle_policy?,
                encryption,
            })),
        })
    }

    async fn image(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<ImageLookup, EnrichError> {
        let clients = self.clients(&key.region);
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
        let output = match self.settle("ecr:DescribeImages", key, result)? {
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
        Ok(ImageLookup::Found(ImageFacts {
            tags: detail.image_tags().to_vec(),
            pushed_at: detail.image_pushed_at().and_then(to_chrono),
            manifest_media_type: detail.image_manifest_media_type().map(str::to_owned),
            artifact_media_type: detail.artifact_media_type().map(str::to_owned),
            // A malformed subject digest from the API is not trusted as an identifier.
            subject_digest: detail
                .subject_manifest_digest()
                .and_then(|d| Digest::parse(d).ok()),
            size_bytes: detail.image_size_in_bytes(),
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
        }))
    }

    async fn signing_statuses(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
        let clients = self.clients(&key.region);
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
            match self.settle("ecr:DescribeImageSigningStatus", key, result)? {
                Ok(output) => Fact::Known(
                    output
                        .signing_statuses()
                        .iter()
                        .map(|s| ManagedSigning {
                            profile_arn: s.signing_profile_arn().unwrap_or_default().to_owned(),
                            status: s.status().map_or("UNKNOWN", |s| s.as_str()).to_owned(),
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

    async fn signature_artifacts(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        let clients = self.clients(&key.region);
        let mut found = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
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
                            operation: "ecr:ListImageReferrers",
                            target: key.to_string(),
                            message: e.to_string(),
                        })?,
                )
                .set_next_token(next_token.take())
                .send()
                .await;
            match self.settle("ecr:ListImageReferrers", key, result)? {
                Ok(output) => {
                    for referrer in output.referrers() {
                        let kind = referrer.artifact_type().map(kind_of_artifact_type);
                        let kind = match kind {
                            Some(ArtifactKind::NotationSignature) => SignatureKind::Notation,
                            Some(ArtifactKind::CosignSignature) => SignatureKind::Cosign,
                            _ => continue,
                        };
                        found.push(SignatureArtifact {
                            kind,
                            reference: referrer.digest().to_owned(),
                            pushed_at: None,
                        });
                    }
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

        // Cosign's tag convention predates OCI referrers and is still the common form.
        let cosign_tag = format!("{}.sig", digest.as_str().replacen(':', "-", 1));
        let result = clients
            .ecr
            .describe_images()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .image_ids(ImageIdentifier::builder().image_tag(&cosign_tag).build())
            .send()
            .await;
        match self.settle("ecr:DescribeImages", key, result)? {
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

    async fn profile_status(&self, profile_arn: &str) -> Result<Fact<String>, EnrichError> {
        if let Some((read_at, status)) = self.profiles().get(profile_arn)
            && read_at.elapsed() < PROFILE_STATUS_TTL
        {
            return Ok(status.clone());
        }
        // arn:aws:signer:REGION:ACCOUNT:/signing-profiles/NAME
        let parts: Vec<&str> = profile_arn.split(':').collect();
        let (Some(region), Some(name)) = (parts.get(3), profile_arn.rsplit('/').next()) else {
            return Ok(Fact::Unknown(format!(
                "not a signing profile ARN: {profile_arn}"
            )));
        };
        let Ok(region) = Region::parse(region) else {
            return Ok(Fact::Unknown(format!(
                "no region in signing profile ARN {profile_arn}"
            )));
        };
        let clients = self.clients(&region);
        let result = clients
            .signer
            .get_signing_profile()
            .profile_name(name)
            .send()
            .await;
        let status = match self.settle("signer:GetSigningProfile", &profile_arn, result)? {
            Ok(output) => match output.status() {
                Some(status) => Fact::Known(status.as_str().to_owned()),
                None => Fact::Unknown("GetSigningProfile returned no status".to_owned()),
            },
            // A deleted profile vouches for nothing.
            Err((code, _)) if code == "ResourceNotFoundException" => {
                Fact::Known("NotFound".to_owned())
            }
            Err((code, message)) => Fact::Unknown(format!("GetSigningProfile: {code}: {message}")),
        };
        self.profiles().insert(
            profile_arn.to_owned(),
            (std::time::Instant::now(), status.clone()),
        );
        Ok(status)
    }

    async fn scan(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Option<ScanFacts>>, EnrichError> {
        let clients = self.clients(&key.region);
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
            match self.settle("ecr:DescribeImageScanFindings", key, result)? {
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
