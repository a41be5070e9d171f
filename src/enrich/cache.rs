//! A per-repository cache in front of any [`Registry`].
//!
//! Repository settings change rarely and every push would otherwise re-read them. Entries are
//! dropped by the CloudTrail events about the repository (or, for registry-wide calls, about
//! every repository of that account and region), and expire after a TTL as a safety net
//! because CloudTrail events can be missing. Image look-ups are never cached: they are the
//! per-digest truth.

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
        if !state.invalidated_since(key, started) {
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
        if !raced {
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

    // Signature manifests and blobs are content-addressed: nothing to invalidate here; an
    // envelope's verification result is kept in Postgres by its digest instead.
    async fn signature_manifest(
        &self,
        key: &RepositoryKey,
        reference: &str,
    ) -> Result<Fact<SignatureManifest>, EnrichError> {
        self.inner.signature_manifest(key, reference).await
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
        self.inner.revoked_entities(query).await
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
    async fn entries_expire_after_the_ttl() {
        let cache = CachedRegistry::new(FakeRegistry::default(), Duration::ZERO);
        let a = key("111111111111", "app");
        cache.repository(&a).await.expect("read");
        cache.repository(&a).await.expect("read");
        assert_eq!(cache.inner.reads.load(Ordering::SeqCst), 2);
    }
}
