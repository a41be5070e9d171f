//! An in-memory [`Registry`] for unit tests: the one fake every planner and pipeline test
//! reads facts from, without the emulator.
//!
//! It answers from what the test put in, and records every call so that a test can assert
//! which reads a plan asked for (e.g. whether the Cosign tag was looked up).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;

use super::{EnrichError, Registry};
use crate::domain::{AccountId, Digest, Region, RepositoryKey};
use crate::facts::{
    BlobRead, Encryption, Fact, ImageFacts, ImageLookup, ListedRepository, ManagedSigning,
    ProfileStatus, RegistryFacts, RegistryScanning, RepositoryFacts, RepositorySettings,
    RepositoryState, RevocationQuery, ScanFacts, SignatureArtifact, SignatureManifest,
    TagMutability,
};

/// What the fake knows; every map is keyed the way the trait asks.
#[derive(Default)]
struct World {
    repositories: HashMap<RepositoryKey, RepositorySettings>,
    registry: Option<RegistryFacts>,
    images: HashMap<(RepositoryKey, Digest), ImageFacts>,
    signing: HashMap<Digest, Vec<ManagedSigning>>,
    referrers: HashMap<Digest, Vec<SignatureArtifact>>,
    cosign_tags: HashMap<Digest, Vec<SignatureArtifact>>,
    profiles: HashMap<String, ProfileStatus>,
    scans: HashMap<Digest, Fact<Option<ScanFacts>>>,
    signature_manifests: HashMap<String, SignatureManifest>,
    blobs: HashMap<String, Vec<u8>>,
    /// Revoked Signer entities (profile version or job ARNs).
    revoked: Vec<String>,
    calls: Vec<String>,
}

/// The shared in-memory registry of unit tests.
#[derive(Default)]
pub(crate) struct FakeRegistry {
    world: Mutex<World>,
}

impl FakeRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        // A test that panicked while holding the lock has failed already.
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A signature artifact's manifest, readable by `reference` (digest or tag).
    #[allow(
        dead_code,
        reason = "for unit tests of verified signatures without the emulator; tests/it covers them end to end"
    )]
    pub fn with_signature_manifest(self, reference: &str, manifest: SignatureManifest) -> Self {
        self.world()
            .signature_manifests
            .insert(reference.to_owned(), manifest);
        self
    }

    /// A blob of any repository, readable by its digest.
    #[allow(
        dead_code,
        reason = "for unit tests of verified signatures without the emulator; tests/it covers them end to end"
    )]
    pub fn with_blob(self, digest: &str, bytes: &[u8]) -> Self {
        self.world().blobs.insert(digest.to_owned(), bytes.to_vec());
        self
    }

    /// A repository with tag mutability `mode`, AES256, scan on push, no policy.
    pub(crate) fn with_repository(self, key: &RepositoryKey, mode: &str) -> Self {
        let settings = RepositorySettings {
            arn: key.arn(),
            tag_mutability: Fact::Known(TagMutability {
                mode: mode.to_owned(),
                exclusion_filters: Vec::new(),
            }),
            scan_on_push: true,
            reported_scanning: crate::facts::ReportedScanning::not_read(),
            lifecycle_policy: Fact::Known(true),
            lifecycle_policy_text: Fact::Known(Some(r#"{"rules":[]}"#.to_owned())),
            encryption: Fact::Known(Encryption {
                encryption_type: "AES256".to_owned(),
                kms_key: None,
                key_manager: None,
            }),
            policy: Fact::Known(None),
        };
        self.world().repositories.insert(key.clone(), settings);
        self
    }

    pub(crate) fn with_image(
        self,
        key: &RepositoryKey,
        digest: &Digest,
        facts: ImageFacts,
    ) -> Self {
        self.world()
            .images
            .insert((key.clone(), digest.clone()), facts);
        self
    }

    pub(crate) fn with_signing(self, digest: &Digest, entries: Vec<ManagedSigning>) -> Self {
        self.world().signing.insert(digest.clone(), entries);
        self
    }

    /// A signature found among the digest's referrers.
    pub(crate) fn with_referrer(self, digest: &Digest, artifact: SignatureArtifact) -> Self {
        let mut world = self.world();
        world
            .referrers
            .entry(digest.clone())
            .or_default()
            .push(artifact);
        drop(world);
        self
    }

    /// A signature found only under Cosign's `sha256-<hex>.sig` tag.
    pub(crate) fn with_cosign_tag(self, digest: &Digest, artifact: SignatureArtifact) -> Self {
        let mut world = self.world();
        world
            .cosign_tags
            .entry(digest.clone())
            .or_default()
            .push(artifact);
        drop(world);
        self
    }

    pub(crate) fn with_profile(self, arn: &str, status: ProfileStatus) -> Self {
        self.world().profiles.insert(arn.to_owned(), status);
        self
    }

    pub(crate) fn with_scan(self, digest: &Digest, scan: Fact<Option<ScanFacts>>) -> Self {
        self.world().scans.insert(digest.clone(), scan);
        self
    }

    /// Every call so far, as `operation target`.
    pub fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    fn record(&self, call: String) {
        self.world().calls.push(call);
    }
}

/// A registry with basic scanning and no rules, signing, pull-through rules or templates.
fn plain_registry() -> RegistryFacts {
    RegistryFacts {
        observed_at: Utc::now(),
        scanning: Fact::Known(RegistryScanning {
            scan_type: "BASIC".to_owned(),
            rules: Vec::new(),
        }),
        signing: Fact::Known(Vec::new()),
        pull_through_rules: Fact::Known(Vec::new()),
        creation_templates: Fact::Known(Vec::new()),
    }
}

#[async_trait]
impl Registry for FakeRegistry {
    async fn repository(&self, key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError> {
        self.record(format!("repository {}", key.name));
        let state = match self.world().repositories.get(key) {
            Some(settings) => RepositoryState::Present(Box::new(settings.clone())),
            None => RepositoryState::Absent,
        };
        Ok(RepositoryFacts {
            observed_at: Utc::now(),
            state,
        })
    }

    async fn registry(&self, _: &AccountId, _: &Region) -> Result<RegistryFacts, EnrichError> {
        self.record("registry".to_owned());
        Ok(self.world().registry.clone().unwrap_or_else(plain_registry))
    }

    async fn list_repositories(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<ListedRepository>>, EnrichError> {
        self.record("list_repositories".to_owned());
        let keys: Vec<RepositoryKey> = self
            .world()
            .repositories
            .keys()
            .filter(|k| &k.account == account && &k.region == region)
            .cloned()
            .collect();
        let mut listed = Vec::with_capacity(keys.len());
        for key in keys {
            let facts = self.repository(&key).await?;
            listed.push(ListedRepository { key, facts });
        }
        Ok(Fact::Known(listed))
    }

    async fn list_images(
        &self,
        key: &RepositoryKey,
    ) -> Result<Fact<Vec<(Digest, ImageFacts)>>, EnrichError> {
        self.record(format!("list_images {}", key.name));
        let images = self
            .world()
            .images
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, digest), facts)| (digest.clone(), facts.clone()))
            .collect();
        Ok(Fact::Known(images))
    }

    async fn image(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<ImageLookup, EnrichError> {
        self.record(format!("image {digest}"));
        let found = self
            .world()
            .images
            .get(&(key.clone(), digest.clone()))
            .cloned();
        Ok(found.map_or(ImageLookup::NotFound, ImageLookup::Found))
    }

    async fn signing_statuses(
        &self,
        _: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
        self.record(format!("signing_statuses {digest}"));
        let entries = self.world().signing.get(digest).cloned();
        Ok(Fact::Known(entries.unwrap_or_default()))
    }

    async fn signature_artifacts(
        &self,
        _: &RepositoryKey,
        digest: &Digest,
        cosign_tag: bool,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        self.record(format!(
            "signature_artifacts {digest} cosign_tag={cosign_tag}"
        ));
        let world = self.world();
        let mut found = world.referrers.get(digest).cloned().unwrap_or_default();
        if cosign_tag {
            found.extend(world.cosign_tags.get(digest).cloned().unwrap_or_default());
        }
        Ok(Fact::Known(found))
    }

    async fn profile_status(&self, profile_arn: &str) -> Result<Fact<ProfileStatus>, EnrichError> {
        self.record(format!("profile_status {profile_arn}"));
        let status = self.world().profiles.get(profile_arn).cloned();
        Ok(status.map_or_else(
            || Fact::Unknown("ResourceNotFoundException".to_owned()),
            Fact::Known,
        ))
    }

    async fn signature_manifest(
        &self,
        _: &RepositoryKey,
        reference: &str,
    ) -> Result<Fact<SignatureManifest>, EnrichError> {
        self.record(format!("signature_manifest {reference}"));
        let manifest = self.world().signature_manifests.get(reference).cloned();
        Ok(manifest.map_or_else(
            || Fact::Unknown("ImageNotFoundException".to_owned()),
            Fact::Known,
        ))
    }

    async fn blob(
        &self,
        _: &RepositoryKey,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Fact<BlobRead>, EnrichError> {
        self.record(format!("blob {digest}"));
        let bytes = self.world().blobs.get(digest).cloned();
        Ok(match bytes {
            None => Fact::Unknown("LayersNotFoundException".to_owned()),
            Some(bytes) if bytes.len() > max_bytes => {
                Fact::Known(BlobRead::TooLarge { limit: max_bytes })
            }
            Some(bytes) => Fact::Known(BlobRead::Bytes(bytes)),
        })
    }

    async fn revoked_entities(
        &self,
        query: &RevocationQuery,
    ) -> Result<Fact<Vec<String>>, EnrichError> {
        self.record(format!("revoked_entities {}", query.job_arn));
        let revoked = self.world().revoked.clone();
        Ok(Fact::Known(
            [&query.profile_version_arn, &query.job_arn]
                .into_iter()
                .filter(|entity| revoked.contains(entity))
                .cloned()
                .collect(),
        ))
    }

    async fn image_coverage(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<crate::facts::CoveredImage>>, EnrichError> {
        self.record(format!("coverage {account}/{region}"));
        Ok(Fact::Known(Vec::new()))
    }

    async fn scan(
        &self,
        _: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Option<ScanFacts>>, EnrichError> {
        self.record(format!("scan {digest}"));
        let scan = self.world().scans.get(digest).cloned();
        Ok(scan.unwrap_or(Fact::Known(None)))
    }
}
