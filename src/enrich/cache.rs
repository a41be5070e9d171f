//! A per-repository cache in front of any [`Registry`].
//!
//! Repository settings change rarely and every push would otherwise re-read them. Entries are
//! dropped by the CloudTrail events about the repository (or, for registry-wide calls, about
//! every repository of that account and region), and expire after a TTL as a safety net
//! because CloudTrail events can be missing. Image look-ups are never cached: they are the
//! per-digest truth. AWS Signer's revocation answers are kept for [`REVOCATION_TTL`], so
//! re-judging a digest whose envelope was already verified costs no AWS call. Manifests read
//! by digest are content-addressed and kept (bounded), so a pushed signature's manifest, read to
//! classify it, is not read again to verify it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{EnrichError, Registry};
use crate::domain::{AccountId, Digest, Region, RepositoryKey};
use crate::facts::RevocationQuery;
use crate::facts::{
    BlobRead, Fact, ImageFacts, ImageLookup, ListedRepository, ManagedSigning, ProfileStatus,
    RegistryFacts, RepositoryFacts, ScanFacts, SignatureArtifact, SignatureManifest,
};

/// How long a `GetRevocationStatus` answer is reused: as long as a Signer profile's status
/// is (src/enrich/ecr.rs), so a revocation is noticed within a minute of either.
pub(crate) const REVOCATION_TTL: Duration = Duration::from_secs(60);
/// Most revocation answers kept; past it, expired ones are dropped, then all.
const MAX_REVOCATION_ENTRIES: usize = 4096;
/// Most manifests kept by digest; past it, all are dropped (each is one `BatchGetImage` again).
const MAX_MANIFEST_ENTRIES: usize = 1024;

pub(crate) struct CachedRegistry<R> {
    inner: R,
    ttl: Duration,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<RepositoryKey, (Instant, RepositoryFacts)>,
    registries: HashMap<(AccountId, Region), (Instant, RegistryFacts)>,
    /// When each repository, and each registry, was last invalidated: a read that started
    /// before that must not be cached, or a slow read racing a change event would put the
    /// old settings back for a whole TTL.
    repository_invalidated: HashMap<RepositoryKey, Instant>,
    registry_invalidated: HashMap<(AccountId, Region), Instant>,
    revocations: HashMap<RevocationQuery, (Instant, Fact<Vec<String>>)>,
    /// Manifests read by digest: content-addressed, so never stale. A pushed artifact's
    /// manifest is read to classify it and again to verify it as its subject's signature.
    manifests: HashMap<(RepositoryKey, String), SignatureManifest>,
}

impl CacheState {
    fn invalidated_since(&self, key: &RepositoryKey, started: Instant) -> bool {
        let after = |at: Option<&Instant>| at.is_some_and(|at| *at >= started);
        after(self.repository_invalidated.get(key))
            || after(
                self.registry_invalidated
                    .get(&(key.account.clone(), key.region.clone())),
            )
    }
}

impl<R: Registry> CachedRegistry<R> {
    pub fn new(inner: R, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            state: Mutex::new(CacheState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic elsewhere while holding the lock leaves maps that are still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets one repository's facts.
    pub(crate) fn invalidate(&self, key: &RepositoryKey) {
        let mut state = self.state();
        state.entries.remove(key);
        state
            .repository_invalidated
            .insert(key.clone(), Instant::now());
    }

    /// Keeps what a sweep just read, so planning the sweep's own findings does not read the
    /// same repositories and registry again. `started` is when the sweep's reads began: an
    /// invalidation after it wins, as for any read.
    pub(crate) fn remember(
        &self,
        registry: (&AccountId, &Region, &RegistryFacts),
        repositories: &[ListedRepository],
        started: Instant,
    ) {
        let (account, region, facts) = registry;
        let mut state = self.state();
        let id = (account.clone(), region.clone());
        let now = Instant::now();
        if state
            .registry_invalidated
            .get(&id)
            .is_none_or(|at| *at < started)
        {
            state.registries.insert(id, (now, facts.clone()));
        }
        for listed in repositories {
            if !state.invalidated_since(&listed.key, started) {
                state
                    .entries
                    .insert(listed.key.clone(), (now, listed.facts.clone()));
            }
        }
    }

    /// Forgets every repository of one registry (account and region).
    pub(crate) fn invalidate_registry(&self, account: &AccountId, region: &Region) {
        let mut state = self.state();
        state
            .entries
            .retain(|key, _| !(key.account == *account && key.region == *region));
        state.registries.remove(&(account.clone(), region.clone()));
        state
            .registry_invalidated
            .insert((account.clone(), region.clone()), Instant::now());
    }
}

#[async_trait]
impl<R: Registry> Registry for CachedRegistry<R> {
    async fn repository(&self, key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError> {
        if let Some((stored_at, facts)) = self.state().entries.get(key)
            && stored_at.elapsed() < self.ttl
        {
            return Ok(facts.clone());
        }
        let started = Instant::now();
        let facts = self.inner.repository(key).await?;
        let mut state = self.state();
        // An outage is not a setting: what AWS did not answer is asked again by the next read.
        if !state.invalidated_since(key, started) && !facts.has_unavailable() {
            state
                .entries
                .insert(key.clone(), (Instant::now(), facts.clone()));
        }
        Ok(facts)
    }

    async fn registry(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<RegistryFacts, EnrichError> {
        let id = (account.clone(), region.clone());
        if let Some((stored_at, facts)) = self.state().registries.get(&id)
            && stored_at.elapsed() < self.ttl
        {
            return Ok(facts.clone());
        }
        let started = Instant::now();
        let facts = self.inner.registry(account, region).await?;
        let mut state = self.state();
        let raced = state
            .registry_invalidated
            .get(&id)
            .is_some_and(|at| *at >= started);
        if !raced && !facts.has_unavailable() {
            state.registries.insert(id, (Instant::now(), facts.clone()));
        }
        Ok(facts)
    }

    /// Sweeps always read through: they exist to catch what the cache cannot know.
    async fn list_repositories(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<ListedRepository>>, EnrichError> {
        self.inner.list_repositories(account, region).await
    }

    async fn list_images(
        &self,
        key: &RepositoryKey,
    ) -> Result<Fact<Vec<(Digest, ImageFacts)>>, EnrichError> {
        self.inner.list_images(key).await
    }

    async fn image(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<ImageLookup, EnrichError> {
        self.inner.image(key, digest).await
    }

    async fn signing_statuses(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
        self.inner.signing_statuses(key, digest).await
    }

    async fn signature_artifacts(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
        cosign_tag: bool,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        self.inner
            .signature_artifacts(key, digest, cosign_tag)
            .await
    }

    async fn profile_status(&self, profile_arn: &str) -> Result<Fact<ProfileStatus>, EnrichError> {
        self.inner.profile_status(profile_arn).await
    }

    // A manifest read by digest is content-addressed: kept without a TTL, nothing to
    // invalidate. One read by tag (Cosign's `.sig`) may move, so it is not kept; nor is an
    // answer AWS did not give. Blobs are not kept: an envelope's verification result is kept
    // in Postgres by its digest instead.
    async fn signature_manifest(
        &self,
        key: &RepositoryKey,
        reference: &str,
    ) -> Result<Fact<SignatureManifest>, EnrichError> {
        let id = (key.clone(), reference.to_owned());
        if let Some(manifest) = self.state().manifests.get(&id) {
            return Ok(Fact::Known(manifest.clone()));
        }
        let answer = self.inner.signature_manifest(key, reference).await?;
        if let Fact::Known(manifest) = &answer
            && Digest::parse(reference).is_ok()
        {
            let mut state = self.state();
            if state.manifests.len() >= MAX_MANIFEST_ENTRIES {
                state.manifests.clear();
            }
            state.manifests.insert(id, manifest.clone());
        }
        Ok(answer)
    }

    async fn blob(
        &self,
        key: &RepositoryKey,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Fact<BlobRead>, EnrichError> {
        self.inner.blob(key, digest, max_bytes).await
    }

    async fn revoked_entities(
        &self,
        query: &RevocationQuery,
    ) -> Result<Fact<Vec<String>>, EnrichError> {
        if let Some((stored_at, answer)) = self.state().revocations.get(query)
            && stored_at.elapsed() < REVOCATION_TTL
        {
            return Ok(answer.clone());
        }
        let answer = self.inner.revoked_entities(query).await?;
        let mut state = self.state();
        if state.revocations.len() >= MAX_REVOCATION_ENTRIES {
            state
                .revocations
                .retain(|_, (at, _)| at.elapsed() < REVOCATION_TTL);
            if state.revocations.len() >= MAX_REVOCATION_ENTRIES {
                state.revocations.clear();
            }
        }
        state
            .revocations
            .insert(query.clone(), (Instant::now(), answer.clone()));
        Ok(answer)
    }

    async fn image_coverage(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<crate::facts::CoveredImage>>, EnrichError> {
        // Not cached: coverage is read once per sweep, and a cached answer would hide a change.
        self.inner.image_coverage(account, region).await
    }

    async fn scan(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<Fact<Option<ScanFacts>>, EnrichError> {
        self.inner.scan(key, digest).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::Utc;

    use super::*;
    use crate::domain::RepositoryName;
    use crate::facts::RepositoryState;

    #[derive(Default)]
    struct FakeRegistry {
        reads: AtomicUsize,
        registry_reads: AtomicUsize,
        revocation_reads: AtomicUsize,
        manifest_reads: AtomicUsize,
    }

    #[async_trait]
    impl Registry for FakeRegistry {
        async fn repository(&self, _key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(RepositoryFacts {
                observed_at: Utc::now(),
                state: RepositoryState::Absent,
            })
        }
        async fn registry(&self, _: &AccountId, _: &Region) -> Result<RegistryFacts, EnrichError> {
            self.registry_reads.fetch_add(1, Ordering::SeqCst);
            Ok(RegistryFacts {
                observed_at: Utc::now(),
                scanning: Fact::Unknown("fake".into()),
                signing: Fact::Known(Vec::new()),
                pull_through_rules: Fact::Known(Vec::new()),
                creation_templates: Fact::Known(Vec::new()),
            })
        }
        async fn list_repositories(
            &self,
            _: &AccountId,
            _: &Region,
        ) -> Result<Fact<Vec<ListedRepository>>, EnrichError> {
            Ok(Fact::Known(Vec::new()))
        }
        async fn list_images(
            &self,
            _: &RepositoryKey,
        ) -> Result<Fact<Vec<(Digest, ImageFacts)>>, EnrichError> {
            Ok(Fact::Known(Vec::new()))
        }
        async fn image(&self, _: &RepositoryKey, _: &Digest) -> Result<ImageLookup, EnrichError> {
            Ok(ImageLookup::NotFound)
        }
        async fn signing_statuses(
            &self,
            _: &RepositoryKey,
            _: &Digest,
        ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
            Ok(Fact::Known(Vec::new()))
        }
        async fn signature_artifacts(
            &self,
            _: &RepositoryKey,
            _: &Digest,
            _: bool,
        ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
            Ok(Fact::Known(Vec::new()))
        }
        async fn profile_status(&self, _: &str) -> Result<Fact<ProfileStatus>, EnrichError> {
            Ok(Fact::Known(ProfileStatus::Active))
        }
        async fn signature_manifest(
            &self,
            _: &RepositoryKey,
            _: &str,
        ) -> Result<Fact<SignatureManifest>, EnrichError> {
            self.manifest_reads.fetch_add(1, Ordering::SeqCst);
            Ok(Fact::Known(SignatureManifest {
                artifact_type: None,
                subject: None,
                subject_media_type: None,
                subject_size: None,
                config_media_type: None,
                layers: Vec::new(),
            }))
        }
        async fn blob(
            &self,
            _: &RepositoryKey,
            _: &str,
            _: usize,
        ) -> Result<Fact<BlobRead>, EnrichError> {
            Ok(Fact::Unknown("fake".into()))
        }
        async fn revoked_entities(
            &self,
            _: &RevocationQuery,
        ) -> Result<Fact<Vec<String>>, EnrichError> {
            self.revocation_reads.fetch_add(1, Ordering::SeqCst);
            Ok(Fact::Known(Vec::new()))
        }
        async fn image_coverage(
            &self,
            _: &AccountId,
            _: &Region,
        ) -> Result<Fact<Vec<crate::facts::CoveredImage>>, EnrichError> {
            Ok(Fact::Known(Vec::new()))
        }

        async fn scan(
            &self,
            _: &RepositoryKey,
            _: &Digest,
        ) -> Result<Fact<Option<ScanFacts>>, EnrichError> {
            Ok(Fact::Known(None))
        }
    }

    fn key(account: &str, name: &str) -> RepositoryKey {
        RepositoryKey {
            account: AccountId::parse(account).expect("account"),
            region: Region::parse("us-east-1").expect("region"),
            name: RepositoryName::parse(name).expect("name"),
        }
    }

    /// Answers with an unavailable fact while `down` is set.
    struct FlakyRegistry {
        inner: FakeRegistry,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Registry for FlakyRegistry {
        async fn repository(&self, key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError> {
            self.inner.repository(key).await
        }
        async fn registry(&self, a: &AccountId, r: &Region) -> Result<RegistryFacts, EnrichError> {
            let mut facts = self.inner.registry(a, r).await?;
            if self.down.load(Ordering::SeqCst) {
                facts.signing = Fact::unavailable("ecr:GetSigningConfiguration", "HTTP 500");
            }
            Ok(facts)
        }
        async fn list_repositories(
            &self,
            a: &AccountId,
            r: &Region,
        ) -> Result<Fact<Vec<ListedRepository>>, EnrichError> {
            self.inner.list_repositories(a, r).await
        }
        async fn list_images(
            &self,
            key: &RepositoryKey,
        ) -> Result<Fact<Vec<(Digest, ImageFacts)>>, EnrichError> {
            self.inner.list_images(key).await
        }
        async fn image(&self, k: &RepositoryKey, d: &Digest) -> Result<ImageLookup, EnrichError> {
            self.inner.image(k, d).await
        }
        async fn signing_statuses(
            &self,
            k: &RepositoryKey,
            d: &Digest,
        ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
            self.inner.signing_statuses(k, d).await
        }
        async fn signature_artifacts(
            &self,
            k: &RepositoryKey,
            d: &Digest,
            c: bool,
        ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
            self.inner.signature_artifacts(k, d, c).await
        }
        async fn profile_status(&self, p: &str) -> Result<Fact<ProfileStatus>, EnrichError> {
            self.inner.profile_status(p).await
        }
        async fn signature_manifest(
            &self,
            k: &RepositoryKey,
            r: &str,
        ) -> Result<Fact<SignatureManifest>, EnrichError> {
            self.inner.signature_manifest(k, r).await
        }
        async fn blob(
            &self,
            k: &RepositoryKey,
            d: &str,
            m: usize,
        ) -> Result<Fact<BlobRead>, EnrichError> {
            self.inner.blob(k, d, m).await
        }
        async fn revoked_entities(
            &self,
            q: &RevocationQuery,
        ) -> Result<Fact<Vec<String>>, EnrichError> {
            self.inner.revoked_entities(q).await
        }
        async fn image_coverage(
            &self,
            account: &AccountId,
            region: &Region,
        ) -> Result<Fact<Vec<crate::facts::CoveredImage>>, EnrichError> {
            self.inner.image_coverage(account, region).await
        }

        async fn scan(
            &self,
            k: &RepositoryKey,
            d: &Digest,
        ) -> Result<Fact<Option<ScanFacts>>, EnrichError> {
            self.inner.scan(k, d).await
        }
    }

    #[tokio::test]
    async fn an_outage_is_not_cached() {
        let flaky = FlakyRegistry {
            inner: FakeRegistry::default(),
            down: std::sync::atomic::AtomicBool::new(true),
        };
        let cache = CachedRegistry::new(flaky, Duration::from_secs(60));
        let a = key("111111111111", "app");
        for _ in 0..2 {
            let facts = cache.registry(&a.account, &a.region).await.expect("read");
            assert!(facts.signing.is_unavailable());
        }
        assert_eq!(cache.inner.inner.registry_reads.load(Ordering::SeqCst), 2);
        cache.inner.down.store(false, Ordering::SeqCst);
        for _ in 0..2 {
            let facts = cache.registry(&a.account, &a.region).await.expect("read");
            assert_eq!(facts.signing, Fact::Known(Vec::new()));
        }
        assert_eq!(
            cache.inner.inner.registry_reads.load(Ordering::SeqCst),
            3,
            "a complete read is cached again"
        );
    }

    #[tokio::test]
    async fn reads_once_until_invalidated() {
        let cache = CachedRegistry::new(FakeRegistry::default(), Duration::from_secs(60));
        let a = key("111111111111", "app");
        let b = key("111111111111", "other");
        let c = key("222222222222", "app");
        for k in [&a, &a, &b, &c] {
            cache.repository(k).await.expect("read");
        }
        assert_eq!(cache.inner.reads.load(Ordering::SeqCst), 3);

        cache.invalidate(&a);
        cache.repository(&a).await.expect("read");
        assert_eq!(cache.inner.reads.load(Ordering::SeqCst), 4);

        cache.invalidate_registry(&a.account, &a.region);
        for k in [&a, &b, &c] {
            cache.repository(k).await.expect("read");
        }
        assert_eq!(
            cache.inner.reads.load(Ordering::SeqCst),
            6,
            "only account 1's entries were dropped"
        );
    }

    #[tokio::test]
    async fn registry_settings_are_read_once_per_registry_until_a_registry_change() {
        let cache = CachedRegistry::new(FakeRegistry::default(), Duration::from_secs(60));
        let a = key("111111111111", "app");
        let c = key("222222222222", "app");
        for k in [&a, &a, &c] {
            cache.registry(&k.account, &k.region).await.expect("read");
        }
        assert_eq!(cache.inner.registry_reads.load(Ordering::SeqCst), 2);
        // A repository change leaves the registry's settings alone; a registry change doesn't.
        cache.invalidate(&a);
        cache.registry(&a.account, &a.region).await.expect("read");
        assert_eq!(cache.inner.registry_reads.load(Ordering::SeqCst), 2);
        cache.invalidate_registry(&a.account, &a.region);
        cache.registry(&a.account, &a.region).await.expect("read");
        assert_eq!(cache.inner.registry_reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_read_racing_an_invalidation_is_not_cached() {
        let cache = CachedRegistry::new(FakeRegistry::default(), Duration::from_secs(60));
        let a = key("111111111111", "app");
        let started = Instant::now();
        cache.invalidate(&a);
        assert!(cache.state().invalidated_since(&a, started));
        let later = Instant::now() + Duration::from_millis(1);
        assert!(!cache.state().invalidated_since(&a, later));
    }

    #[tokio::test]
    async fn a_revocation_answer_is_reused_per_question() {
        let cache = CachedRegistry::new(FakeRegistry::default(), Duration::from_secs(60));
        let query = |job: &str| RevocationQuery {
            profile_version_arn: "arn:aws:signer:us-east-1:1:/signing-profiles/p/v".into(),
            job_arn: job.into(),
            certificate_hashes: vec!["ab".into()],
            signature_time: Utc::now(),
            platform_id: "Notation-OCI-SHA384-ECDSA".into(),
        };
        let (one, two) = (query("job-1"), query("job-2"));
        for q in [&one, &one, &two, &one] {
            cache.revoked_entities(q).await.expect("read");
        }
        assert_eq!(cache.inner.revocation_reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn manifests_are_kept_by_digest_but_not_by_tag() {
        let cache = CachedRegistry::new(FakeRegistry::default(), Duration::ZERO);
        let a = key("111111111111", "app");
        let digest = format!("sha256:{}", "ab".repeat(32));
        let tag = format!("sha256-{}.sig", "ab".repeat(32));
        for reference in [&digest, &digest, &tag, &tag] {
            cache.signature_manifest(&a, reference).await.expect("read");
        }
        // Content-addressed: kept even with a zero TTL; a tag may move: read each time.
        assert_eq!(cache.inner.manifest_reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let cache = CachedRegistry::new(FakeRegistry::default(), Duration::ZERO);
        let a = key("111111111111", "app");
        cache.repository(&a).await.expect("read");
        cache.repository(&a).await.expect("read");
        assert_eq!(cache.inner.reads.load(Ordering::SeqCst), 2);
    }
}
