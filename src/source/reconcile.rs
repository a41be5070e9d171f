//! The reconcile sweep: lists what exists and records what changed without an event.
//!
//! ECR's own events are best effort and rules only forward what happens while they exist, so
//! state drifts. A sweep lists every repository (with its settings) and every image of the
//! configured accounts and regions, compares them with what is stored, and turns each
//! difference into a synthetic event (`detail-type` [`RECONCILE_DETAIL_TYPE`], id
//! `reconcile/RUN/…`) that goes through the same planning and store as a real one, so the
//! evidence says "observed by reconcile". Repository drift is committed from the listing
//! itself; a new or vanished digest is planned like a push or delete (reading its signature
//! and scan state).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, stream};
use tracing::{info, warn};

use crate::domain::{AccountId, ControlId, Digest, Region, RepositoryName};
use crate::enrich::accounts::{AccountAccess, SweepTargets};
use crate::enrich::organization::OrganizationReader;
use crate::enrich::{EnrichError, Registry};
use crate::facts::{Fact, ListedRepository, RegistryFacts, RepositoryState};
use crate::parse::{AuditEvent, Change, RepositoryCall};
use crate::pipeline::Pipeline;
use crate::plan::{EventPlan, Plan};
use crate::store::{ReconcileSnapshot, StoreError};
use crate::telemetry::{DriftKind, Happened, SkipReason};

/// `detail_type` of the events a sweep synthesises.
pub(crate) const RECONCILE_DETAIL_TYPE: &str = "ecr-audit Reconcile";

/// Repositories whose images are listed and planned at once.
const REPOSITORY_CONCURRENCY: usize = 4;
/// Synthetic events committed per transaction.
const COMMIT_CHUNK: usize = 20;

/// Why a sweep did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Aws(#[from] EnrichError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{target}: {reason}")]
    Unreadable { target: String, reason: String },
}

/// What a sweep saw and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub repositories: u64,
    pub images: u64,
    /// Drift kind → how many.
    pub changes: BTreeMap<DriftKind, u64>,
    /// Repositories (or one of their digests) the sweep could not read and went past.
    pub skipped: Vec<SkippedRepository>,
}

impl SweepReport {
    pub fn total_changes(&self) -> u64 {
        self.changes.values().sum()
    }

    /// What the run's row says about the skipped repositories (bounded: the first few).
    fn skipped_summary(&self) -> Option<String> {
        const SHOWN: usize = 5;
        if self.skipped.is_empty() {
            return None;
        }
        let shown: Vec<String> = self
            .skipped
            .iter()
            .take(SHOWN)
            .map(|s| format!("{} ({}): {}", s.repository, s.reason, s.detail))
            .collect();
        let more = self.skipped.len().saturating_sub(SHOWN);
        let tail = if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "skipped {} unreadable: {}{tail}",
            self.skipped.len(),
            shown.join("; ")
        ))
    }
}

/// A repository a sweep could not read: one unreadable repository (a policy that denies the
/// audit role, an API that does not answer) must not blind the sweep to every later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRepository {
    /// `ACCOUNT/REGION/NAME`.
    pub repository: String,
    pub reason: SkipReason,
    /// What AWS answered.
    pub detail: String,
}

impl SkippedRepository {
    fn new(repository: String, reason: SkipReason, detail: String) -> Self {
        Self {
            repository,
            reason,
            detail,
        }
    }

    fn transient(repository: String, err: &EnrichError) -> Self {
        Self::new(repository, SkipReason::Transient, err.to_string())
    }

    /// Logs and counts the skip.
    fn record(&self, metrics: &crate::telemetry::Metrics) {
        Happened::RepositorySkipped {
            repository: &self.repository,
            reason: self.reason,
            detail: &self.detail,
        }
        .record(metrics);
    }
}

/// A listed digest's `lastRecordedPullTime`.
type Pull = (RepositoryName, Digest, chrono::DateTime<Utc>);

/// One repository's images as listed: (images, synthetic events, added, deleted, pulls).
type ImageDrift = (u64, Vec<AuditEvent>, u64, u64, Vec<Pull>);

/// Progress callbacks, for a progress bar.
pub trait SweepProgress: Send + Sync {
    fn repositories_found(&self, _count: u64) {}
    fn repository_done(&self) {}
}

impl SweepProgress for () {}

/// Account discovery before each sweep: the organization's reader and the access it updates.
pub struct Discovery {
    pub reader: OrganizationReader,
    pub access: Arc<AccountAccess>,
}

pub struct Reconciler {
    pipeline: Arc<Pipeline>,
    registry: Arc<dyn Registry>,
    targets: SweepTargets,
    discovery: Option<Discovery>,
}

impl Reconciler {
    /// `registry` should read through (no cache): a sweep exists to see what a cache cannot.
    pub fn new(
        pipeline: Arc<Pipeline>,
        registry: Arc<dyn Registry>,
        targets: impl Into<SweepTargets>,
    ) -> Self {
        Self {
            pipeline,
            registry,
            targets: targets.into(),
            discovery: None,
        }
    }

    /// Discovers the organization's accounts before each sweep and sweeps what `access` then
    /// holds (the explicit accounts and the discovered ones).
    #[must_use]
    pub fn with_discovery(mut self, discovery: Discovery) -> Self {
        self.targets = SweepTargets::Shared(Arc::clone(&discovery.access));
        self.discovery = Some(discovery);
        self
    }

    /// Asks Organizations for the active accounts and replaces the discovered set; when it
    /// cannot answer, the accounts found last time are swept.
    async fn discover(&self) {
        let Some(discovery) = &self.discovery else {
            return;
        };
        match discovery.reader.active_accounts().await {
            Ok(found) => {
                let active = found.len();
                let changes = discovery.access.replace_discovered(found);
                Happened::AccountsDiscovered {
                    active,
                    joined: &changes.joined,
                    left: &changes.left,
                }
                .record(self.pipeline.metrics());
            }
            Err(err) => {
                warn!(error = %err, "organization discovery failed; the accounts found last time are swept");
            }
        }
    }

    /// One full sweep over every target, recorded in `reconcile_runs`.
    ///
    /// # Errors
    /// [`ReconcileError`] when a listing or the database fails; what was committed before
    /// stays committed, and the next sweep starts over.
    pub async fn sweep(&self, progress: &dyn SweepProgress) -> Result<SweepReport, ReconcileError> {
        let store = self.pipeline.store();
        let run = store.start_reconcile_run().await?;
        let started = Instant::now();
        let mut report = SweepReport::default();
        let mut result = Ok(());
        self.discover().await;
        for (account, region) in &self.targets.current() {
            match self
                .sweep_registry(run, account, region, progress, &mut report)
                .await
            {
                Ok(()) => {}
                // The database is gone: the other registries would fail alike.
                Err(err @ ReconcileError::Store(_)) => {
                    result = Err(err);
                    break;
                }
                // One account's role missing or one region unreadable must not blind the sweep
                // to every other account of an organization: the rest are swept, and the run
                // still reports the failure.
                Err(err) => {
                    warn!(account = %account, region = %region, error = %err, "registry not swept; the others are");
                    if result.is_ok() {
                        result = Err(err);
                    }
                }
            }
        }
        let failed = result.as_ref().err().map(ToString::to_string);
        let error = failed.clone().or_else(|| report.skipped_summary());
        store
            .finish_reconcile_run(
                run,
                failed.is_none(),
                report.repositories,
                report.images,
                report.total_changes(),
                error.as_deref(),
            )
            .await?;
        let drift: Vec<(DriftKind, u64)> = report.changes.iter().map(|(k, n)| (*k, *n)).collect();
        Happened::ReconcileFinished {
            duration: started.elapsed(),
            drift: &drift,
        }
        .record(self.pipeline.metrics());
        result.map(|()| report)
    }

    async fn sweep_registry(
        &self,
        run: i64,
        account: &AccountId,
        region: &Region,
        progress: &dyn SweepProgress,
        report: &mut SweepReport,
    ) -> Result<(), ReconcileError> {
        let store = self.pipeline.store();
        // Also refreshes the event path's view of the registry.
        self.pipeline.forget_registry(account, region);
        let started = std::time::Instant::now();
        let registry_facts = self.registry.registry(account, region).await?;
        let listed = match self.registry.list_repositories(account, region).await? {
            Fact::Known(listed) => listed,
            // ECR Public may be refused to an older reader role or missing from a partition:
            // its repositories go unjudged, the private registries are still swept.
            Fact::Unknown(reason) if region.is_ecr_public() => {
                let skipped = SkippedRepository::new(
                    format!("{account}/{region}"),
                    SkipReason::Unreadable,
                    reason,
                );
                skipped.record(self.pipeline.metrics());
                report.skipped.push(skipped);
                return Ok(());
            }
            Fact::Unknown(reason) => {
                return Err(ReconcileError::Unreadable {
                    target: format!("{account}/{region}"),
                    reason,
                });
            }
        };
        // Planning the images found below reads the same repositories: from this listing.
        self.pipeline
            .remember_sweep((account, region, &registry_facts), &listed, started);
        progress.repositories_found(listed.len() as u64);
        report.repositories += listed.len() as u64;
        let snapshot = store.reconcile_snapshot(account, region).await?;
        let event = |id: String, change: Change| synthetic_event(run, account, region, id, change);

        // Repositories: settings drift is committed from the listing itself.
        let plans = self.changed_repositories(&listed, &snapshot, &registry_facts, &event, report);
        let events = deleted_repositories(&listed, &snapshot, &event, report);
        self.commit(plans).await?;
        self.plan_and_commit(events, report).await?;

        let (events, pulls) = self
            .image_events(run, &listed, &snapshot, progress, report)
            .await;
        report.changes.retain(|_, n| *n > 0);
        self.plan_and_commit(events, report).await?;
        // After the new digests are stored, so that their pull times land too.
        store.record_pulls(account, region, &pulls).await?;
        self.refresh_usage(account, region, &registry_facts).await?;
        // From now on, what this registry's sweeps find is no longer history (docs/ALERTS.md).
        store.mark_registry_swept(account, region).await?;
        info!(account = %account, region = %region, repositories = listed.len(), "reconciled");
        Ok(())
    }

    /// Lists each repository's images and returns the synthetic events of the digests that
    /// appeared or vanished; a repository whose images cannot be listed is skipped and reported.
    async fn image_events(
        &self,
        run: i64,
        listed: &[ListedRepository],
        snapshot: &ReconcileSnapshot,
        progress: &dyn SweepProgress,
        report: &mut SweepReport,
    ) -> (Vec<AuditEvent>, Vec<Pull>) {
        let image_results: Vec<Result<ImageDrift, SkippedRepository>> = stream::iter(
            listed
                .iter()
                .map(|repository| {
                    Box::pin(self.image_drift(
                        run,
                        repository,
                        snapshot.images.get(repository.key.name.as_str()),
                        progress,
                    ))
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(REPOSITORY_CONCURRENCY)
        .collect()
        .await;
        let (mut events, mut pulls) = (Vec::new(), Vec::new());
        for result in image_results {
            let (images, drift, added, deleted, pulled) = match result {
                Ok(drift) => drift,
                Err(skipped) => {
                    skipped.record(self.pipeline.metrics());
                    report.skipped.push(skipped);
                    continue;
                }
            };
            report.images += images;
            *report.changes.entry(DriftKind::ImageAdded).or_default() += added;
            *report.changes.entry(DriftKind::ImageDeleted).or_default() += deleted;
            events.extend(drift);
            pulls.extend(pulled);
        }
        (events, pulls)
    }

    /// Image use from Inspector's coverage under ENHANCED scanning; a coverage read that fails
    /// leaves use as stored and does not fail the sweep.
    async fn refresh_usage(
        &self,
        account: &AccountId,
        region: &Region,
        registry_facts: &RegistryFacts,
    ) -> Result<(), ReconcileError> {
        match super::coverage::refresh_registry(
            self.registry.as_ref(),
            self.pipeline.store(),
            account,
            region,
            super::coverage::enhanced(registry_facts),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(super::coverage::CoverageError::Store(err)) => Err(err.into()),
            Err(super::coverage::CoverageError::Aws(err)) => {
                warn!(account = %account, region = %region, error = %err, "Inspector coverage unavailable; image use left as stored");
                Ok(())
            }
        }
    }

    /// Plans for the listed repositories that are new or whose control statuses changed.
    fn changed_repositories(
        &self,
        listed: &[ListedRepository],
        snapshot: &ReconcileSnapshot,
        registry_facts: &RegistryFacts,
        event: &impl Fn(String, Change) -> AuditEvent,
        report: &mut SweepReport,
    ) -> Vec<Plan> {
        let mut plans = Vec::new();
        for ListedRepository { key, facts } in listed {
            let write = self.pipeline.planner().repository_write(
                key.clone(),
                facts.clone(),
                registry_facts,
            );
            let stored = snapshot.repositories.get(key.name.as_str());
            let kind = match (stored, &write.controls) {
                (None | Some((false, _)), _) => Some(DriftKind::RepositoryAdded),
                (Some((true, controls)), Some(now)) if !same_statuses(controls, now) => {
                    Some(DriftKind::RepositoryChanged)
                }
                _ => None,
            };
            if let Some(kind) = kind {
                *report.changes.entry(kind).or_default() += 1;
                let observed = event(key.name.to_string(), observed_change(key.name.clone()));
                plans.push(Plan::Event(Box::new(EventPlan::repository(
                    observed, write,
                ))));
            }
        }
        plans
    }

    /// Lists one repository's images and returns synthetic events for the digests that
    /// appeared or vanished since they were stored.
    async fn image_drift(
        &self,
        run: i64,
        repository: &ListedRepository,
        stored: Option<&HashSet<String>>,
        progress: &dyn SweepProgress,
    ) -> Result<ImageDrift, SkippedRepository> {
        let result = self.image_drift_of(run, repository, stored).await;
        progress.repository_done();
        result
    }

    async fn image_drift_of(
        &self,
        run: i64,
        ListedRepository { key, facts }: &ListedRepository,
        stored: Option<&HashSet<String>>,
    ) -> Result<ImageDrift, SkippedRepository> {
        if !matches!(facts.state, RepositoryState::Present(_)) {
            return Ok((0, Vec::new(), 0, 0, Vec::new()));
        }
        let event = |id: String, change: Change| {
            synthetic_event(run, &key.account, &key.region, id, change)
        };
        let images = match self.registry.list_images(key).await {
            Ok(Fact::Known(images)) => images,
            Ok(Fact::Unknown(reason)) => {
                return Err(SkippedRepository::new(
                    key.to_string(),
                    SkipReason::Unreadable,
                    reason,
                ));
            }
            Err(err) => return Err(SkippedRepository::transient(key.to_string(), &err)),
        };
        let empty = HashSet::new();
        let stored = stored.unwrap_or(&empty);
        let listed: HashSet<&str> = images.iter().map(|(d, _)| d.as_str()).collect();
        let mut events = Vec::new();
        let (mut added, mut deleted) = (0, 0);
        for (digest, image) in &images {
            if !stored.contains(digest.as_str()) {
                added += 1;
                let mut synthetic = event(
                    format!("{}/{}/present", key.name, digest),
                    Change::ImagePushed {
                        repository: key.name.clone(),
                        digest: digest.clone(),
                        tag: None,
                        manifest_media_type: image.manifest_media_type.clone(),
                        artifact_media_type: image.artifact_media_type.clone(),
                    },
                );
                // The push happened when ECR says, not when the sweep noticed it.
                synthetic.time = image.pushed_at.unwrap_or(synthetic.time);
                events.push(synthetic);
            }
        }
        for digest in stored.iter().filter(|d| !listed.contains(d.as_str())) {
            let Ok(parsed) = Digest::parse(digest) else {
                continue;
            };
            deleted += 1;
            events.push(event(
                format!("{}/{}/absent", key.name, digest),
                Change::ImageDeleted {
                    repository: key.name.clone(),
                    digest: parsed,
                    tag: None,
                },
            ));
        }
        let pulls = pulls_of(&key.name, &images);
        Ok((images.len() as u64, events, added, deleted, pulls))
    }

    /// Plans and commits synthetic events; an event whose facts AWS does not give skips its
    /// repository's change for this sweep (logged, counted, in the report), not the sweep.
    async fn plan_and_commit(
        &self,
        events: Vec<AuditEvent>,
        report: &mut SweepReport,
    ) -> Result<(), ReconcileError> {
        for chunk in events.chunks(COMMIT_CHUNK) {
            let mut plans = Vec::with_capacity(chunk.len());
            for event in chunk {
                match self.pipeline.plan(event.clone()).await {
                    Ok(plan) => plans.push(Plan::Event(Box::new(plan))),
                    Err(err) => {
                        let skipped = SkippedRepository::transient(event_repository(event), &err);
                        skipped.record(self.pipeline.metrics());
                        report.skipped.push(skipped);
                    }
                }
            }
            self.commit(plans).await?;
        }
        Ok(())
    }

    async fn commit(&self, plans: Vec<Plan>) -> Result<(), ReconcileError> {
        for chunk in plans.chunks(COMMIT_CHUNK) {
            self.pipeline.commit_plans(chunk).await?;
        }
        Ok(())
    }
}

/// The listed digests ECR has a `lastRecordedPullTime` for.
fn pulls_of(
    repository: &RepositoryName,
    images: &[(Digest, crate::facts::ImageFacts)],
) -> Vec<Pull> {
    images
        .iter()
        .filter_map(|(digest, image)| {
            Some((repository.clone(), digest.clone(), image.last_pulled_at?))
        })
        .collect()
}

/// Repositories deleted while nobody listened: planned like a DeleteRepository call, which
/// re-reads the repository (and finds it absent).
fn deleted_repositories(
    listed: &[ListedRepository],
    snapshot: &ReconcileSnapshot,
    event: &impl Fn(String, Change) -> AuditEvent,
    report: &mut SweepReport,
) -> Vec<AuditEvent> {
    let listed_names: HashSet<&str> = listed.iter().map(|r| r.key.name.as_str()).collect();
    let mut events = Vec::new();
    for (name, (present, _)) in &snapshot.repositories {
        if *present
            && !listed_names.contains(name.as_str())
            && let Ok(repository) = RepositoryName::parse(name)
        {
            *report
                .changes
                .entry(DriftKind::RepositoryDeleted)
                .or_default() += 1;
            events.push(event(name.clone(), observed_change(repository)));
        }
    }
    events
}

/// `ACCOUNT/REGION/NAME` of the repository a synthetic event is about.
fn event_repository(event: &AuditEvent) -> String {
    let name = event
        .change
        .repository()
        .map_or("-", RepositoryName::as_str);
    format!("{}/{}/{name}", event.account, event.region)
}

/// The change a sweep records for a repository it saw differ from what is stored.
fn observed_change(repository: RepositoryName) -> Change {
    Change::RepositoryChanged {
        repository,
        call: RepositoryCall::ObservedByReconcile,
    }
}

fn synthetic_event(
    run: i64,
    account: &AccountId,
    region: &Region,
    id: String,
    change: Change,
) -> AuditEvent {
    AuditEvent {
        id: format!("reconcile/{run}/{account}/{region}/{id}"),
        time: Utc::now(),
        account: account.clone(),
        region: region.clone(),
        detail_type: RECONCILE_DETAIL_TYPE.to_owned(),
        actor: None,
        change,
        claimed_time: None,
    }
}

fn same_statuses(
    stored: &BTreeMap<String, String>,
    now: &BTreeMap<ControlId, crate::domain::Verdict>,
) -> bool {
    now.len() == stored.len()
        && now.iter().all(|(control, verdict)| {
            stored.get(control.as_str()).map(String::as_str) == Some(verdict.status.as_str())
        })
}

/// Sweeps at start-up and then every `interval`, one replica at a time (a Postgres advisory
/// lock), skipping a sweep when another replica finished one within half an interval.
pub(crate) async fn run_periodically(
    reconciler: Reconciler,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let store = reconciler.pipeline.store();
        match store.try_reconcile_lock(interval / 2).await {
            Ok(Some(lock)) => {
                // A sweep reads every digest (and, since signatures are verified, may download
                // their envelopes): it can outlast a shutdown grace period, so shutdown drops
                // it. Each plan commits in its own transaction, rolled back if dropped, and the
                // next sweep starts over.
                let swept = tokio::select! {
                    () = shutdown.cancelled() => {
                        lock.release().await;
                        info!("reconcile sweep stopped by shutdown; the next one starts over");
                        return;
                    }
                    swept = reconciler.sweep(&()) => swept,
                };
                match swept {
                    Ok(report) => info!(
                        repositories = report.repositories,
                        images = report.images,
                        changes = report.total_changes(),
                        skipped = report.skipped.len(),
                        "reconcile sweep finished"
                    ),
                    Err(err) => {
                        warn!(error = %err, "reconcile sweep failed; the next one starts over")
                    }
                }
                lock.release().await;
            }
            Ok(None) => {}
            Err(err) => warn!(error = %err, "reconcile skipped: database unavailable"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
