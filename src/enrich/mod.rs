//! Authoritative state behind the hints that events are.
//!
//! Events only say that something may have changed; this stage re-reads what is true now from
//! the AWS APIs through narrow capability traits ([`Registry`]), so that a lost, duplicated or
//! reordered event cannot leave a wrong verdict behind. Per-repository facts are cached
//! ([`cache::CachedRegistry`]) and invalidated by the change events that concern them.
//!
//! A fact that could not be read for a lasting reason (access denied, API missing) is
//! [`Fact::Unknown`] with the reason, and evaluation turns it into `UNKNOWN`. Only transient
//! failures (throttling after the SDK's own retries, timeouts, 5xx) are errors: they leave the
//! message on the queue.

pub mod accounts;
pub mod cache;
pub mod ecr;
#[cfg(test)]
pub mod fake;
pub mod organization;

use async_trait::async_trait;

use crate::domain::{AccountId, Digest, Region, RepositoryKey};
use crate::facts::RevocationQuery;
use crate::facts::{
    BlobRead, CoveredImage, Fact, ImageFacts, ImageLookup, ListedRepository, ManagedSigning,
    ProfileStatus, RegistryFacts, RepositoryFacts, ScanFacts, SignatureArtifact, SignatureManifest,
};
use crate::telemetry::RetryCode;

/// Read access to ECR's authoritative state.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Reads a repository's settings now.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn repository(&self, key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError>;

    /// Reads the registry-wide settings of an account and region.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn registry(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<RegistryFacts, EnrichError>;

    /// Every repository of a registry with its settings, read in as few calls as the APIs
    /// allow (for the reconcile sweep). `Unknown` when the listing itself is refused.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn list_repositories(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<ListedRepository>>, EnrichError>;

    /// Every image of a repository (paginated `DescribeImages`).
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn list_images(
        &self,
        key: &RepositoryKey,
    ) -> Result<Fact<Vec<(Digest, ImageFacts)>>, EnrichError>;

    /// Reads one image of a repository.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn image(&self, key: &RepositoryKey, digest: &Digest)
    -> Result<ImageLookup, EnrichError>;

    /// ECR managed signing's statuses for a digest (one per matching signing rule).
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn signing_statuses(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError>;

    /// Notation and Cosign signatures stored next to a digest: its referrers, and with
    /// `cosign_tag` also Cosign's `sha256-<hex>.sig` tag (one more call).
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn signature_artifacts(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
        cosign_tag: bool,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError>;

    /// A Signer profile's status (`Active`, `Revoked`, `Canceled`), cached briefly.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn profile_status(&self, profile_arn: &str) -> Result<Fact<ProfileStatus>, EnrichError>;

    /// A signature artifact's manifest (`BatchGetImage` by digest, or by tag for Cosign's
    /// `.sig` tags; OCI and Docker v2 media types accepted). `Unknown` when it is gone or its
    /// JSON is unreadable.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn signature_manifest(
        &self,
        key: &RepositoryKey,
        reference: &str,
    ) -> Result<Fact<SignatureManifest>, EnrichError>;

    /// A blob of the repository (`GetDownloadUrlForLayer`, then an HTTP GET of the URL), read
    /// up to `max_bytes` and checked against its digest.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS or the download could not answer for now.
    async fn blob(
        &self,
        key: &RepositoryKey,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Fact<BlobRead>, EnrichError>;

    /// Which of a signature's Signer entities (profile version, job, certificate hashes) are
    /// revoked now (`GetRevocationStatus`).
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn revoked_entities(
        &self,
        query: &RevocationQuery,
    ) -> Result<Fact<Vec<String>>, EnrichError>;

    /// Inspector's coverage of a registry's ECR images (`ListCoverage` filtered to
    /// `AWS_ECR_CONTAINER_IMAGE`, every page): in-use counts, pull times and scan status per
    /// digest. `Unknown` when Inspector refuses or is not there.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn image_coverage(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<CoveredImage>>, EnrichError>;

    /// A digest's scan result; `Known(None)` when it was never scanned.
    ///
    /// # Errors
    /// [`EnrichError::Transient`] when AWS could not answer for now.
    async fn scan(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Option<ScanFacts>>, EnrichError>;
}

/// Why enrichment could not finish. The message stays on the queue and is retried with
/// backoff; after `maxReceiveCount` receives SQS moves it to the dead-letter queue.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnrichError {
    #[error("{operation} on {target} failed transiently: {message}")]
    Transient {
        operation: &'static str,
        target: String,
        message: String,
    },
}

impl EnrichError {
    pub fn code(&self) -> RetryCode {
        match self {
            Self::Transient { .. } => RetryCode::AwsTransient,
        }
    }
}

#[async_trait]
impl<T: Registry + ?Sized> Registry for std::sync::Arc<T> {
    async fn repository(&self, key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError> {
        (**self).repository(key).await
    }

    async fn registry(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<RegistryFacts, EnrichError> {
        (**self).registry(account, region).await
    }

    async fn list_repositories(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<ListedRepository>>, EnrichError> {
        (**self).list_repositories(account, region).await
    }

    async fn list_images(
        &self,
        key: &RepositoryKey,
    ) -> Result<Fact<Vec<(Digest, ImageFacts)>>, EnrichError> {
        (**self).list_images(key).await
    }

    async fn image(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<ImageLookup, EnrichError> {
        (**self).image(key, digest).await
    }

    async fn signing_statuses(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
        (**self).signing_statuses(key, digest).await
    }

    async fn signature_artifacts(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
        cosign_tag: bool,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        (**self).signature_artifacts(key, digest, cosign_tag).await
    }

    async fn profile_status(&self, profile_arn: &str) -> Result<Fact<ProfileStatus>, EnrichError> {
        (**self).profile_status(profile_arn).await
    }

    async fn signature_manifest(
        &self,
        key: &RepositoryKey,
        reference: &str,
    ) -> Result<Fact<SignatureManifest>, EnrichError> {
        (**self).signature_manifest(key, reference).await
    }

    async fn blob(
        &self,
        key: &RepositoryKey,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Fact<BlobRead>, EnrichError> {
        (**self).blob(key, digest, max_bytes).await
    }

    async fn revoked_entities(
        &self,
        query: &RevocationQuery,
    ) -> Result<Fact<Vec<String>>, EnrichError> {
        (**self).revoked_entities(query).await
    }

    async fn image_coverage(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<CoveredImage>>, EnrichError> {
        (**self).image_coverage(account, region).await
    }

    async fn scan(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Option<ScanFacts>>, EnrichError> {
        (**self).scan(key, digest).await
    }
}
