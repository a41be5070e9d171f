//! Reading the facts the planner asks for: each [`Reads`] performed against the registry
//! (and the store, for what is already recorded), then handed back to the planner.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use tracing::info;

use super::Pipeline;
use crate::domain::{AccountId, Digest, Region, RepositoryKey};
use crate::enrich::{EnrichError, Registry};
use crate::plan::{
    self, EventPlan, ImageWrite, PresentImage, PresentImageRead, Reads, RepositoryWrite,
    SignatureReads, SignatureTarget, SignatureWrite,
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
                // Only the CloudTrail record may find the digest already evaluated (see `Reads`).
                if recorded && self.image_evaluated(&key, &digest).await? {
                    let time = plan.event.time;
                    plan.image = Some(ImageWrite::push_recorded(key, digest, time, tag, pushed_by));
                } else {
                    let time = plan.event.time;
                    let found = self.read_present_image(time, key, digest, tag, pushed_by);
                    Self::add_present_image(&mut plan, found.await?, true);
                }
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
            Reads::Scan { key, digest } => self.read_scan(&mut plan, key, digest).await?,
            Reads::Repository { key } => plan.repositories.push(self.repository_write(key).await?),
            Reads::Registry { account, region } => {
                plan.repositories = self.registry_writes(&account, &region).await?;
            }
        }
        Ok(plan)
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
        let found = plan::plan_present_image(PresentImageRead {
            key,
            digest,
            event_time,
            event_tag,
            pushed_by,
            observed_at,
            repository: repository?,
            lookup: lookup?,
        });
        let signatures = match &found.signatures {
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
        Ok((found, signatures))
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
        let (managed, artifacts) = tokio::join!(
            self.registry.signing_statuses(&reads.key, &reads.digest),
            self.registry
                .signature_artifacts(&reads.key, &reads.digest, reads.cosign_tag)
        );
        let (managed, artifacts) = (managed?, artifacts?);
        let mut profiles = BTreeMap::new();
        for profile in SignatureReads::profiles(&managed) {
            let status = self.registry.profile_status(profile).await?;
            profiles.insert(profile.to_owned(), status);
        }
        let clock = (Utc::now(), self.planner.signing_grace);
        Ok(reads.judge(managed, artifacts, profiles, clock))
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
    ) -> Result<Vec<RepositoryWrite>, EnrichError> {
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
        let writes: Vec<Result<RepositoryWrite, EnrichError>> = stream::iter(keys)
            .map(|key| self.repository_write(key))
            .buffered(REGISTRY_FANOUT)
            .collect()
            .await;
        writes.into_iter().collect()
    }
}
