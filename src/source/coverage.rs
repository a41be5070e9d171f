//! The coverage sweep: which digests run (Inspector's `inUseCount`, `lastInUseAt`), when they
//! were pulled and why Inspector does or does not scan them, read as one paged `ListCoverage`
//! per registry (account and region) and written onto the stored images.
//!
//! It runs after each reconcile sweep's registry and on its own interval
//! (`ECR_AUDIT_COVERAGE_INTERVAL`), because use changes with deployments, not with ECR events.
//! Inspector covers ECR images only under ENHANCED scanning; under BASIC every digest's use is
//! unknown and the listing is not read. A coverage read that fails leaves what is stored as it
//! is (the AWS call metrics count the failure): nothing else waits for it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use crate::domain::{AccountId, Region};
use crate::enrich::accounts::SweepTargets;
use crate::enrich::{EnrichError, Registry};
use crate::facts::{Fact, RegistryFacts};
use crate::store::{Store, StoreError, UsageReport};

/// Why a registry's coverage was not written.
#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    #[error(transparent)]
    Aws(#[from] EnrichError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether the registry scans with Inspector: `None` when its scanning configuration could not
/// be read (then nothing is concluded about use).
pub(crate) fn enhanced(facts: &RegistryFacts) -> Option<bool> {
    match &facts.scanning {
        Fact::Known(scanning) => Some(scanning.scan_type == "ENHANCED"),
        Fact::Unknown(_) => None,
    }
}

/// Reads one registry's coverage and writes it. `None` when use stays as stored: the scanning
/// configuration or the coverage could not be read.
///
/// # Errors
/// [`CoverageError::Store`] when the database fails.
pub(crate) async fn refresh_registry(
    registry: &dyn Registry,
    store: &Store,
    account: &AccountId,
    region: &Region,
    enhanced: Option<bool>,
) -> Result<Option<UsageReport>, CoverageError> {
    // ECR Public (the `ecr-public` pseudo-region) is neither scanned nor run from: no coverage.
    if region.is_ecr_public() {
        return Ok(None);
    }
    let observed_at = Utc::now();
    let covered = match enhanced {
        None => {
            warn!(account = %account, region = %region, "registry scanning unreadable; image use left as stored");
            return Ok(None);
        }
        Some(false) => Vec::new(),
        Some(true) => match registry.image_coverage(account, region).await? {
            Fact::Known(covered) => covered,
            Fact::Unknown(reason) => {
                warn!(account = %account, region = %region, reason = %reason, "Inspector coverage unreadable; image use left as stored");
                return Ok(None);
            }
        },
    };
    let report = store
        .record_coverage(account, region, &covered, observed_at)
        .await?;
    info!(
        account = %account,
        region = %region,
        covered = report.covered,
        flipped = report.flipped,
        forgotten = report.forgotten,
        "image use refreshed"
    );
    Ok(Some(report))
}

/// Reads the coverage of every configured registry, one after the other.
pub struct CoverageSweeper {
    registry: Arc<dyn Registry>,
    store: Store,
    targets: SweepTargets,
    /// A registry whose coverage any replica wrote less than this ago is skipped, so replicas
    /// sharing a database do not each page through Inspector.
    fresh_for: Duration,
}

impl CoverageSweeper {
    /// `registry` should read through (no cache), like the reconcile sweep's.
    pub fn new(
        registry: Arc<dyn Registry>,
        store: Store,
        targets: impl Into<SweepTargets>,
    ) -> Self {
        Self {
            registry,
            store,
            targets: targets.into(),
            fresh_for: Duration::ZERO,
        }
    }

    /// Skips registries whose coverage was written less than `fresh_for` ago.
    #[must_use]
    pub fn skipping_fresh(mut self, fresh_for: Duration) -> Self {
        self.fresh_for = fresh_for;
        self
    }

    /// Whether another sweep (this replica's or another's) wrote the registry recently.
    async fn is_fresh(&self, account: &AccountId, region: &Region) -> Result<bool, StoreError> {
        if self.fresh_for.is_zero() {
            return Ok(false);
        }
        let read_at = self.store.coverage_read_at(account, region).await?;
        Ok(read_at.is_some_and(|at| {
            (Utc::now() - at)
                .to_std()
                .is_ok_and(|age| age < self.fresh_for)
        }))
    }

    /// One pass over every registry; one registry's failure does not stop the others.
    /// Returns how many registries were written.
    pub async fn sweep(&self) -> usize {
        let mut written = 0;
        for (account, region) in &self.targets.current() {
            match self.sweep_registry(account, region).await {
                Ok(Some(_)) => written += 1,
                Ok(None) => {}
                Err(err) => {
                    warn!(account = %account, region = %region, error = %err, "coverage sweep of a registry failed; tried again next time");
                }
            }
        }
        written
    }

    async fn sweep_registry(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Option<UsageReport>, CoverageError> {
        if self.is_fresh(account, region).await? {
            return Ok(None);
        }
        let facts = self.registry.registry(account, region).await?;
        refresh_registry(
            self.registry.as_ref(),
            &self.store,
            account,
            region,
            enhanced(&facts),
        )
        .await
    }
}

/// Sweeps every `interval` (the first after one interval: the reconcile sweep at start-up
/// already read the coverage).
pub(crate) async fn run_periodically(
    sweeper: CoverageSweeper,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = sweeper.sweep() => {}
        }
    }
}
