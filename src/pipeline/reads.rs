//! Reading the facts the planner asks for: each [`Reads`] performed against the registry
//! (and the store, for what is already recorded), then handed back to the planner.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use tracing::info;

use super::Pipeline;
use crate::domain::{AccountId, Actor, Digest, Region, RepositoryKey, RepositoryName};
use crate::enrich::{EnrichError, Registry};
use crate::facts::{Fact, RepositoryState};
use crate::plan::{
    self, EventPlan, ImageWrite, PresentImage, PresentImageRead, Reads, RepositoryWrite,
    SignatureFacts, SignatureReads, SignatureTarget, SignatureWrite,
};

/// How many repositories a registry-wide change re-reads at once.
const REGISTRY_FANOUT: usize = 8;

impl Pipeline {
    /// Reads what the planner asks for and completes the event's plan.
    pub(super) async fn plan_event(
        &self,
        event: crate::parse::AuditEvent,
    ) -> Result<EventPlan, EnrichError> {
        let (mut plan, reads) = plan::start(event);
        match reads {
            Reads::Nothing => {}
            Reads::Push {
                key,
                digest,
                tag,
                pushed_by,
                recorded,
            } => {
                let push = (key, digest, tag, pushed_by);
                self.read_push(&mut plan, push, recorded).await?;
            }
            Reads::StorageClass {
                key,
                digest,
                storage_class,
            } => {
                let lookup = (Utc::now(), self.registry.image(&key, &digest).await?);
                let time = plan.event.time;
                plan.image = Some(ImageWrite::storage_class_changed(
                    key,
                    digest,
                    time,
                    lookup,
                    storage_class,
                ));
            }
            Reads::Referrer { key, digest } => {
                let lookup = self.registry.image(&key, &digest).await?;
                if let Some(subject) = plan::referrer_subject(&lookup) {
                    plan.signatures
                        .extend(self.judge_subject(&key, subject).await?);
                }
            }
            Reads::Delete { key, digest } => {
                let observed_at = Utc::now();
                let lookup = self.registry.image(&key, &digest).await?;
                plan::plan_delete(&mut plan, key, digest, (observed_at, lookup));
            }
            Reads::DeleteMany { key, images } => {
                self.read_removals(&mut plan, &key, images).await?;
            }
            Reads::Scan { key, digest } => self.read_scan(&mut plan, key, digest).await?,
            Reads::Repository { key } => self.read_repository(&mut plan, key).await?,
            Reads::Registry {
                account,
                region,
                only,
            } => {
                plan.repositories = self.registry_writes(&account, &region, only).await?;
            }
        }
        Ok(plan)
    }

    /// A repository's settings re-read; read back absent, its stored digests are deleted.
    async fn read_repository(
        &self,
        plan: &mut EventPlan,
        key: RepositoryKey,
    ) -> Result<(), EnrichError> {
        let writes = self
            .changed_repository_writes(&plan.event, key.clone())
            .await?;
        let gone = writes
            .last()
            .is_some_and(|w| matches!(w.facts.state, RepositoryState::Absent));
        plan.repositories.extend(writes);
        if gone {
            let present = self.present_digests(&key).await?;
            plan::plan_repository_gone(plan, &key, present);
        }
        Ok(())
    }

    /// Each digest a multi-digest removal names, read back (a few at a time) and planned.
    async fn read_removals(
        &self,
        plan: &mut EventPlan,
        key: &RepositoryKey,
        images: Vec<crate::parse::RemovedImage>,
    ) -> Result<(), EnrichError> {
        let reads: Vec<Result<_, EnrichError>> = stream::iter(images)
            .map(|image| async move {
                let observed_at = Utc::now();
                let lookup = self.registry.image(key, &image.digest).await?;
                Ok((image, (observed_at, lookup)))
            })
            .buffered(REGISTRY_FANOUT)
            .collect()
            .await;
        for read in reads {
            let (image, read) = read?;
            plan::plan_removal(plan, key.clone(), &image, read);
        }
        Ok(())
    }

    /// The digests stored as present in a repository; a database failure retries the message.
    async fn present_digests(&self, key: &RepositoryKey) -> Result<Vec<Digest>, EnrichError> {
        self.store
            .present_digests(key)
            .await
            .map_err(|err| EnrichError::Transient {
                operation: "store:present_digests",
                target: key.to_string(),
                message: err.to_string(),
            })
    }

    /// A push (its event, or its CloudTrail record when `recorded`): the digest read and judged.
    async fn read_push(
        &self,
        plan: &mut EventPlan,
        (key, digest, tag, pushed_by): (RepositoryKey, Digest, Option<String>, Option<Actor>),
        recorded: bool,
    ) -> Result<(), EnrichError> {
        let time = plan.event.time;
        // Only the CloudTrail record may find the digest already evaluated (see `Reads`).
        if recorded && self.image_evaluated(&key, &digest).await? {
            plan.image = Some(ImageWrite::push_recorded(key, digest, time, tag, pushed_by));
        } else {
            let found = self.read_present_image(time, key, digest, tag, pushed_by);
            Self::add_present_image(plan, found.await?, true);
        }
        Ok(())
    }

    /// Adds what a present digest means to a plan; `always` also when ECR no longer has it.
    fn add_present_image(
        plan: &mut EventPlan,
        found: (PresentImage, Vec<SignatureWrite>),
        always: bool,
    ) {
        let (found, signatures) = found;
        if !always && !found.exists {
            return;
        }
        plan.distrusted.extend(found.distrusted);
        plan.image = Some(found.image);
        plan.repositories.push(found.repository);
        plan.signatures.extend(signatures);
        plan.scans.extend(found.scans);
    }

    /// Events arrive in any order: a scan result about a digest whose push is not recorded
    /// yet (still in flight in another batch, or lost) evaluates the image in full, so the
    /// result has a row to land on and a slower push carrying an older scan state cannot
    /// overwrite it. The event is a hint: the scan state is read back, whatever it said.
    async fn read_scan(
        &self,
        plan: &mut EventPlan,
        key: RepositoryKey,
        digest: Digest,
    ) -> Result<(), EnrichError> {
        if !self.image_evaluated(&key, &digest).await? {
            let found = self
                .read_present_image(plan.event.time, key.clone(), digest.clone(), None, None)
                .await?;
            // The push's own scan state is superseded by the one read back below.
            let (mut found, signatures) = found;
            found.scans.clear();
            Self::add_present_image(plan, (found, signatures), false);
        }
        let checked_at = Utc::now();
        let read = self.registry.scan(&key, &digest).await?;
        plan.scans
            .extend(plan::scan_write(key, digest, read, checked_at));
        Ok(())
    }

    /// Reads a digest that exists now, with its repository, and judges whose signatures the
    /// planner names.
    async fn read_present_image(
        &self,
        event_time: DateTime<Utc>,
        key: RepositoryKey,
        digest: Digest,
        event_tag: Option<String>,
        pushed_by: Option<crate::domain::Actor>,
    ) -> Result<(PresentImage, Vec<SignatureWrite>), EnrichError> {
        // Dated before the reads: a read is as old as its request, not its slowest sibling.
        let observed_at = Utc::now();
        let (repository, lookup) = tokio::join!(
            self.repository_write(key.clone()),
            self.registry.image(&key, &digest)
        );
        let lookup = lookup?;
        let proof = self
            .artifact_proof(&key, &digest, &lookup, observed_at)
            .await?;
        let found = plan::plan_present_image(PresentImageRead {
            key,
            digest,
            event_time,
            event_tag,
            pushed_by,
            observed_at,
            repository: repository?,
            lookup,
            proof,
        });
        let mut signatures = match &found.signatures {
            SignatureTarget::None => Vec::new(),
            SignatureTarget::Own { pushed_at } => {
                let image = &found.image;
                let reads = self.signature_reads(&image.key, &image.digest, *pushed_at, false);
                vec![self.read_signatures(reads).await?]
            }
            SignatureTarget::Subject(subject) => {
                let key = &found.image.key;
                self.judge_subject(key, subject.clone())
                    .await?
                    .into_iter()
                    .collect()
            }
        };
        if let Some(named) = found.cosign_signs.clone()
            && !matches!(&found.signatures, SignatureTarget::Subject(s) if *s == named)
        {
            signatures.extend(self.judge_subject(&found.image.key, named).await?);
        }
        Ok((found, signatures))
    }

    /// What confirms a manifest that claims to be an artifact: its subject in the repository
    /// and then its own content (`BatchGetImage`), since ECR reports the type the pusher
    /// declared. A manifest that cannot be read is taken for what it declares (the failed read
    /// is counted where AWS answers are settled, `enrich::ecr`).
    async fn artifact_proof(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
        lookup: &crate::facts::ImageLookup,
        observed_at: DateTime<Utc>,
    ) -> Result<crate::facts::ArtifactProof, EnrichError> {
        let mut proof = crate::facts::ArtifactProof::default();
        let Some(subject) = plan::artifact_subject_to_confirm(lookup) else {
            return Ok(proof);
        };
        let subject = self.registry.image(key, &subject).await?;
        proof.subject_present = plan::subject_pushed_at(&subject, observed_at).is_some();
        if proof.subject_present {
            let manifest = self
                .registry
                .signature_manifest(key, digest.as_str())
                .await?;
            proof.runnable_content = manifest
                .known()
                .is_some_and(crate::facts::SignatureManifest::carries_runnable_image);
        }
        Ok(proof)
    }

    fn signature_reads(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
        pushed_at: DateTime<Utc>,
        every_source: bool,
    ) -> SignatureReads {
        let clock = (Utc::now(), self.planner.signing_grace);
        SignatureReads::new(
            key.clone(),
            digest.clone(),
            pushed_at,
            0,
            every_source,
            clock,
        )
    }

    /// Re-judges the subject of a signature artifact, when the subject still exists.
    async fn judge_subject(
        &self,
        key: &RepositoryKey,
        subject: Digest,
    ) -> Result<Option<SignatureWrite>, EnrichError> {
        let lookup = self.registry.image(key, &subject).await?;
        let Some(pushed_at) = plan::subject_pushed_at(&lookup, Utc::now()) else {
            return Ok(None);
        };
        let reads = self.signature_reads(key, &subject, pushed_at, true);
        Ok(Some(self.read_signatures(reads).await?))
    }

    /// Reads the signature sources the planner named and judges them.
    pub(super) async fn read_signatures(
        &self,
        reads: SignatureReads,
    ) -> Result<SignatureWrite, EnrichError> {
        let artifacts = self
            .registry
            .signature_artifacts(&reads.key, &reads.digest, reads.cosign_tag)
            .await?;
        let trust = self.trust_for(&reads.key).await?;
        let verifications = self.verify_artifacts(&trust, &reads, &artifacts).await?;
        // One verified signature is the verdict (`SIGNED`): managed signing's statuses and
        // profiles could only add sources, so they are read only when nothing verified. This
        // keeps a signed push at five AWS calls (docs/PERFORMANCE.md).
        let managed = if plan::settled_by_verification(&verifications) {
            Fact::Known(Vec::new())
        } else {
            self.registry
                .signing_statuses(&reads.key, &reads.digest)
                .await?
        };
        let mut profiles = BTreeMap::new();
        for profile in SignatureReads::profiles(&managed) {
            let status = self.registry.profile_status(profile).await?;
            profiles.insert(profile.to_owned(), status);
        }
        let facts = SignatureFacts {
            managed,
            artifacts,
            profiles,
            verifications,
            policy_version: trust.version(),
        };
        let clock = (Utc::now(), self.planner.signing_grace);
        Ok(reads.judge(&facts, clock))
    }

    /// The writes of a repository-changing event: the state its request asked for, dated at
    /// the request, when the request says the whole setting (`plan::requested_state`), then
    /// the re-read, which counts only when the requested state is older than what is stored.
    async fn changed_repository_writes(
        &self,
        event: &crate::parse::AuditEvent,
        key: RepositoryKey,
    ) -> Result<Vec<RepositoryWrite>, EnrichError> {
        let (facts, registry) = tokio::join!(
            self.registry.repository(&key),
            self.registry.registry(&key.account, &key.region)
        );
        let (facts, registry) = (facts?, registry?);
        let (requested_facts, requested) =
            plan::requested_state(&event.change, event.time, facts.clone(), &registry);
        let mut writes = Vec::with_capacity(2);
        if requested.applied {
            let mut write = self
                .planner
                .repository_write(key.clone(), requested_facts, &registry);
            write.requested = true;
            write.reread |= requested.undone;
            writes.push(write);
        }
        let mut reread = self.planner.repository_write(key, facts, &registry);
        reread.fallback = requested.applied;
        writes.push(reread);
        Ok(writes)
    }

    /// The trust settings a repository's signatures are verified under: the configured ones,
    /// or with none configured AWS Signer's default built from its registry's managed-signing
    /// rules (read through the registry cache). Rules that cannot be read give no identity to
    /// trust, so nothing verifies under the default then (fail closed).
    async fn trust_for(
        &self,
        key: &RepositoryKey,
    ) -> Result<std::borrow::Cow<'_, crate::trust::TrustSettings>, EnrichError> {
        if !self.trust.aws_signer_default || self.trust.policy.is_some() {
            return Ok(std::borrow::Cow::Borrowed(&*self.trust));
        }
        let registry = self.registry.registry(&key.account, &key.region).await?;
        let profiles: Vec<&str> = registry
            .signing
            .known()
            .map(|rules| rules.iter().map(|r| r.profile_arn.as_str()).collect())
            .unwrap_or_default();
        Ok(self.trust.for_registry(profiles))
    }

    /// Whether the digest was already evaluated; a database failure retries the message.
    async fn image_evaluated(
        &self,
        key: &RepositoryKey,
        digest: &Digest,
    ) -> Result<bool, EnrichError> {
        self.store
            .image_evaluated(key, digest)
            .await
            .map_err(|err| EnrichError::Transient {
                operation: "store:image_evaluated",
                target: key.to_string(),
                message: err.to_string(),
            })
    }

    async fn repository_write(&self, key: RepositoryKey) -> Result<RepositoryWrite, EnrichError> {
        let (facts, registry) = tokio::join!(
            self.registry.repository(&key),
            self.registry.registry(&key.account, &key.region)
        );
        Ok(self.planner.repository_write(key, facts?, &registry?))
    }

    /// Re-reads every known repository of a registry whose registry-wide settings changed.
    async fn registry_writes(
        &self,
        account: &AccountId,
        region: &Region,
        only: Vec<RepositoryName>,
    ) -> Result<Vec<RepositoryWrite>, EnrichError> {
        let keys = if only.is_empty() {
            let keys = self
                .store
                .known_repositories(account, region)
                .await
                .map_err(|err| EnrichError::Transient {
                    operation: "store:known_repositories",
                    target: format!("{account}/{region}"),
                    message: err.to_string(),
                })?;
            info!(
                repositories = keys.len(),
                "registry-wide change in {account}/{region}: re-reading every known repository"
            );
            keys
        } else {
            info!(
                repositories = only.len(),
                "scanning changed in {account}/{region}: re-reading the repositories it names"
            );
            only.into_iter()
                .map(|name| RepositoryKey {
                    account: account.clone(),
                    region: region.clone(),
                    name,
                })
                .collect()
        };
        // Read once before the fan-out: the repositories below then share it from the cache
        // instead of each missing it at the same time.
        self.registry.registry(account, region).await?;
        let writes: Vec<Result<RepositoryWrite, EnrichError>> = stream::iter(keys)
            .map(|key| self.repository_write(key))
            .buffered(REGISTRY_FANOUT)
            .collect()
            .await;
        writes.into_iter().collect()
    }
}
