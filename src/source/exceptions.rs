//! The worker's exceptions task (docs/EXCEPTIONS.md): at start-up and then every interval,
//! it loads the reviewed exceptions file when its content changed, and settles exceptions
//! that ended (expiry passed, or revoked): their findings re-open, with an evidence record
//! and an alert each.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::evaluate::exception::read_file;
use crate::store::Store;
use crate::telemetry::{Happened, Metrics};

/// The default of `ECR_AUDIT_EXCEPTION_INTERVAL`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Watches the exceptions file and settles ended exceptions.
pub struct ExceptionWatcher {
    store: Store,
    metrics: Arc<Metrics>,
    file: Option<PathBuf>,
    /// The SHA-256 of the file content last handled (loaded or refused), so an unchanged
    /// file is neither reloaded nor reported again.
    last_seen: Option<String>,
}

impl ExceptionWatcher {
    pub fn new(store: Store, metrics: Arc<Metrics>, file: Option<PathBuf>) -> Self {
        Self {
            store,
            metrics,
            file,
            last_seen: None,
        }
    }

    /// One step: the file when it changed, then the ended exceptions.
    pub async fn step(&mut self) {
        self.load_file_if_changed().await;
        match self.store.settle_exceptions().await {
            Ok(settled) if settled.expired + settled.settled_revoked + settled.reopened > 0 => {
                Happened::ExceptionsSettled {
                    expired: settled.expired,
                    revoked: settled.settled_revoked,
                    reopened: settled.reopened,
                }
                .record(&self.metrics);
            }
            Ok(_) => {}
            Err(err) => warn!(error = %err, "settling exceptions failed; tried again next time"),
        }
    }

    async fn load_file_if_changed(&mut self) {
        let Some(path) = &self.file else {
            return;
        };
        let shown = path.display().to_string();
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(err) => {
                let seen = format!("unreadable: {err}");
                if self.last_seen.as_deref() != Some(seen.as_str()) {
                    let error = format!("cannot read it: {err}");
                    Happened::ExceptionsFileInvalid {
                        path: &shown,
                        error: &error,
                    }
                    .record(&self.metrics);
                    self.last_seen = Some(seen);
                }
                return;
            }
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if self.last_seen.as_deref() == Some(sha256.as_str()) {
            return;
        }
        let loaded = match read_file(&bytes, Utc::now()) {
            Ok(loaded) => loaded,
            Err(err) => {
                let error = err.to_string();
                Happened::ExceptionsFileInvalid {
                    path: &shown,
                    error: &error,
                }
                .record(&self.metrics);
                self.last_seen = Some(sha256);
                return;
            }
        };
        match self.store.sync_exceptions_file(&shown, &loaded).await {
            Ok(sync) => {
                if sync.recorded {
                    Happened::ExceptionsFileLoaded {
                        path: &shown,
                        sha256: &loaded.sha256,
                        added: sync.added.len(),
                        revoked: sync.revoked.len(),
                    }
                    .record(&self.metrics);
                }
                self.last_seen = Some(sha256);
            }
            // Not remembered: the same content is tried again next time.
            Err(err) => {
                warn!(error = %err, "loading the exceptions file failed; tried again next time")
            }
        }
    }

    /// Steps at start-up and then every `interval` until `shutdown`.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        loop {
            self.step().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
