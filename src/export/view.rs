//! The deploy verdicts' in-memory view of the ledger, kept current by Postgres notifications,
//! so that no verdict waits on the database (docs/ENFORCEMENT.md, "The view").
//!
//! The view is read whole when it starts, then one image or one repository at a time as the
//! triggers of migration `20261204000100` announce changes on channel [`CHANNEL`] at commit.
//! It knows how current it is by a heartbeat: every [`ViewTask::heartbeat`] it sends a
//! notification of its own through the same channel. Postgres delivers a listener's
//! notifications in commit order, so when a heartbeat comes back every change committed before
//! it was sent has been applied: the view is current as of that send. A verdict compares that
//! time with the bound (`ECR_AUDIT_VERDICT_MAX_STALENESS`); a lost connection, a database
//! outage or a stuck reload all show as age, never as a wrong answer given as current.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::readmodel::PostureRow;
use crate::store::verdict::{ImageFilter, ImageKey, VerdictImage, VerdictInputs};
use crate::store::{Store, StoreError};
use crate::telemetry::{Metrics, ViewReload};

/// The channel the ledger's triggers notify.
pub const CHANNEL: &str = "ecr_audit_ledger";
/// The default bound on the view's age before a verdict says it is stale.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(10);
/// Notifications applied together at most.
const MAX_BATCH: usize = 4096;
/// Heartbeats sent and not yet back that are remembered; older ones are forgotten.
const BEATS_KEPT: usize = 64;

/// (account, region, repository)
type RepositoryId = (String, String, String);

#[derive(Default)]
struct Repository {
    posture: Option<PostureRow>,
    images: HashMap<String, Arc<VerdictImage>>,
}

#[derive(Default)]
struct Held {
    repositories: HashMap<RepositoryId, Repository>,
    images: usize,
}

/// What the view says about one reference.
#[derive(Debug)]
pub enum Lookup {
    /// The view is current within the bound and holds the image.
    Found(Box<VerdictInputs>),
    /// The view is current within the bound and does not hold it.
    Missing,
    /// The view is older than the bound (`age`), or was never loaded (`None`); `held` is what
    /// it holds, as of then.
    Stale {
        age: Option<Duration>,
        held: Option<Box<VerdictInputs>>,
    },
}

/// The images and postures verdicts read, with how current they are.
pub struct LedgerView {
    held: RwLock<Held>,
    /// When the view was last known current (the send of a heartbeat that came back).
    fresh_at: Mutex<Option<Instant>>,
    max_staleness: Duration,
}

impl LedgerView {
    #[must_use]
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            held: RwLock::new(Held::default()),
            fresh_at: Mutex::new(None),
            max_staleness,
        }
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// How long ago the view was last known current; `None` before its first load.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        let fresh = *self.fresh_at.lock().unwrap_or_else(PoisonError::into_inner);
        fresh.map(|at| now.saturating_duration_since(at))
    }

    /// The image `key` names in a repository, judged against the bound at `now`.
    pub fn lookup(
        &self,
        (account, region, repository): (&str, &str, &str),
        key: ImageKey<'_>,
        now: Instant,
    ) -> Lookup {
        let held = self.find(account, region, repository, key).map(Box::new);
        match self.age(now) {
            Some(age) if age <= self.max_staleness => held.map_or(Lookup::Missing, Lookup::Found),
            age => Lookup::Stale { age, held },
        }
    }

    /// How many images the view holds.
    pub fn images(&self) -> usize {
        self.read().images
    }

    fn find(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        key: ImageKey<'_>,
    ) -> Option<VerdictInputs> {
        let held = self.read();
        let id = (account.to_owned(), region.to_owned(), repository.to_owned());
        let entry = held.repositories.get(&id)?;
        let image = match key {
            ImageKey::Digest(digest) => entry.images.get(digest),
            ImageKey::Tag(tag) => entry
                .images
                .values()
                .find(|i| i.image.tags.iter().any(|t| t == tag)),
        }?;
        Some(VerdictInputs {
            image: image.image.clone(),
            checked_at: image.checked_at,
            posture: entry.posture.clone(),
            evidence: image.evidence.clone(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        self.held.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces everything the view holds.
    pub fn replace(&self, images: Vec<VerdictImage>, postures: Vec<PostureRow>) {
        let mut fresh = Held::default();
        for image in images {
            let id = repository_id(&image);
            let digest = image.image.digest.clone();
            fresh
                .repositories
                .entry(id)
                .or_default()
                .images
                .insert(digest, Arc::new(image));
            fresh.images += 1;
        }
        for posture in postures {
            let id = posture_id(&posture);
            fresh.repositories.entry(id).or_default().posture = Some(posture);
        }
        *self.write() = fresh;
    }

    /// Puts one image as the ledger holds it now, or removes it (`None`: deleted, or no longer
    /// an image the view holds).
    pub fn put_image(&self, id: RepositoryId, digest: &str, image: Option<VerdictImage>) {
        let mut held = self.write();
        let entry = held.repositories.entry(id).or_default();
        let before = entry.images.len();
        match image {
            Some(image) => {
                entry.images.insert(digest.to_owned(), Arc::new(image));
            }
            None => {
                entry.images.remove(digest);
            }
        }
        let after = entry.images.len();
        held.images = held.images + after - before;
    }

    /// Replaces the postures of one repository (`Some`) or of all (`None`).
    pub fn put_postures(&self, scope: Option<RepositoryId>, postures: Vec<PostureRow>) {
        let mut held = self.write();
        match &scope {
            Some(id) => {
                if let Some(entry) = held.repositories.get_mut(id) {
                    entry.posture = None;
                }
            }
            None => {
                for entry in held.repositories.values_mut() {
                    entry.posture = None;
                }
            }
        }
        for posture in postures {
            let id = posture_id(&posture);
            held.repositories.entry(id).or_default().posture = Some(posture);
        }
    }

    /// Records that everything committed before `sent` has been applied.
    pub fn mark_fresh(&self, sent: Instant) {
        let mut fresh = self.fresh_at.lock().unwrap_or_else(PoisonError::into_inner);
        if fresh.is_none_or(|at| at < sent) {
            *fresh = Some(sent);
        }
    }
}

fn repository_id(image: &VerdictImage) -> RepositoryId {
    (
        image.image.account.clone(),
        image.image.region.clone(),
        image.image.repository.clone(),
    )
}

fn posture_id(posture: &PostureRow) -> RepositoryId {
    (
        posture.account.clone(),
        posture.region.clone(),
        posture.repository.clone(),
    )
}

/// A notification on [`CHANNEL`], as the triggers and heartbeats write it.
#[derive(Debug, PartialEq, Eq)]
enum Change<'a> {
    Image {
        account: &'a str,
        region: &'a str,
        repository: &'a str,
        digest: &'a str,
    },
    Repository {
        account: &'a str,
        region: &'a str,
        repository: &'a str,
    },
    Postures,
    Beat {
        token: &'a str,
        beat: u64,
    },
}

impl<'a> Change<'a> {
    fn parse(payload: &'a str) -> Option<Self> {
        let fields: Vec<&str> = payload.split('\t').collect();
        match fields.as_slice() {
            ["image", account, region, repository, digest] => Some(Self::Image {
                account,
                region,
                repository,
                digest,
            }),
            ["repository", account, region, repository] => Some(Self::Repository {
                account,
                region,
                repository,
            }),
            ["posture"] => Some(Self::Postures),
            ["beat", token, beat] => Some(Self::Beat {
                token,
                beat: beat.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Keeps a [`LedgerView`] current: listens, applies, reloads on reconnect, beats.
pub struct ViewTask {
    pub view: Arc<LedgerView>,
    /// The view's own small pool (a listener and a reader), apart from the pipeline's.
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Duration,
}

/// Why following the ledger stopped (the task starts over after a pause).
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("listening: {0}")]
    Listen(#[from] sqlx::Error),
    #[error("reading the ledger: {0}")]
    Read(#[from] StoreError),
    #[error("the notification connection was lost; notifications may have been missed")]
    Lost,
}

/// What the listening task passes on.
enum Heard {
    Payload(String),
    Lost,
    Failed(sqlx::Error),
}

/// The listener's receiving task and what it heard. The listener receives on a task of its
/// own because sqlx reports a lost connection only to the receive that saw it: a receive
/// cancelled by the loop's other branches (beats, shutdown) could lose that report, and the
/// notifications missed with it. The channel's receive is cancel-safe.
struct Listening {
    receiver: tokio::sync::mpsc::Receiver<Heard>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listening {
    fn start(mut listener: PgListener) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::channel(MAX_BATCH);
        let task = tokio::spawn(async move {
            loop {
                let heard = match listener.try_recv().await {
                    Ok(Some(notification)) => Heard::Payload(notification.payload().to_owned()),
                    Ok(None) => Heard::Lost,
                    Err(err) => Heard::Failed(err),
                };
                let more = matches!(heard, Heard::Payload(_));
                if sender.send(heard).await.is_err() || !more {
                    return;
                }
            }
        });
        Self { receiver, task }
    }
}

impl Heard {
    /// The payload, or why following must start over.
    fn payload(heard: Option<Self>) -> Result<String, FollowError> {
        match heard {
            Some(Self::Payload(payload)) => Ok(payload),
            Some(Self::Failed(err)) => Err(FollowError::Listen(err)),
            Some(Self::Lost) | None => Err(FollowError::Lost),
        }
    }
}

impl ViewTask {
    /// A pool of two connections (the listener's and the reader's) to `store`'s database.
    #[must_use]
    pub fn own_store(store: &Store) -> Store {
        let options = (*store.pool().connect_options())
            .clone()
            .application_name("ecr-audit verdict view");
        Store::from_pool(
            PgPoolOptions::new()
                .max_connections(2)
                .connect_lazy_with(options),
        )
    }

    /// Follows the ledger until `shutdown`; whenever following fails it starts over (listen,
    /// read everything, beat) after a pause, and the view ages meanwhile.
    pub async fn run(self, shutdown: CancellationToken) {
        let token = super::instance_token();
        let mut pause = Duration::from_millis(200);
        loop {
            match self.follow(&token, &shutdown).await {
                Ok(()) => return,
                Err(err) => {
                    warn!(error = %err, "the verdict view stopped following the ledger; starting over");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn follow(&self, token: &str, shutdown: &CancellationToken) -> Result<(), FollowError> {
        let mut listener = PgListener::connect_with(self.store.pool()).await?;
        // A lost connection must end this follow (the reload after it covers what was missed),
        // never be replaced silently.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        let mut heard = Listening::start(listener);
        // Listening before reading: a change committed during the read is notified and read
        // again after it, so nothing falls between the two.
        self.load_all().await?;
        info!(images = self.view.images(), "verdict view loaded");
        let mut sent: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut beat = 0_u64;
        let mut ticker = tokio::time::interval(self.heartbeat);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {
                    beat += 1;
                    self.send_beat(token, beat).await;
                    sent.push_back((beat, Instant::now()));
                    if sent.len() > BEATS_KEPT {
                        sent.pop_front();
                    }
                }
                first = heard.receiver.recv() => {
                    // Everything already received is applied at once: one read for all the
                    // images named, so the view keeps up with any commit rate.
                    let mut payloads = vec![Heard::payload(first)?];
                    while payloads.len() < MAX_BATCH
                        && let Ok(more) = heard.receiver.try_recv()
                    {
                        payloads.push(Heard::payload(Some(more))?);
                    }
                    self.apply(&payloads, token, &mut sent).await?;
                }
            }
        }
    }

    async fn load_all(&self) -> Result<(), StoreError> {
        let images = self.store.verdict_images(ImageFilter::default()).await?;
        let postures = self.store.verdict_postures(None).await?;
        self.view.replace(images, postures);
        self.metrics
            .verdict_view_reloaded(ViewReload::Full, self.view.images());
        Ok(())
    }

    async fn send_beat(&self, token: &str, beat: u64) {
        let payload = format!("beat\t{token}\t{beat}");
        if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(self.store.pool())
            .await
        {
            // The view ages until beats come back; the verdicts say so.
            debug!(error = %err, "verdict view heartbeat not sent");
        }
    }

    /// Applies notifications received together: the images they name are read again in one
    /// query, repositories' controls after them, then the heartbeats among them count: every
    /// change before a heartbeat has been applied (and those after it too, which only makes
    /// the view fresher than it claims).
    async fn apply(
        &self,
        payloads: &[String],
        token: &str,
        sent: &mut VecDeque<(u64, Instant)>,
    ) -> Result<(), FollowError> {
        let mut images = HashSet::new();
        let mut repositories = HashSet::new();
        let mut every_posture = false;
        let mut latest_beat = None;
        for payload in payloads {
            match Change::parse(payload) {
                Some(Change::Image {
                    account,
                    region,
                    repository,
                    digest,
                }) => {
                    images.insert((
                        account.to_owned(),
                        region.to_owned(),
                        repository.to_owned(),
                        digest.to_owned(),
                    ));
                }
                Some(Change::Repository {
                    account,
                    region,
                    repository,
                }) => {
                    repositories.insert((
                        account.to_owned(),
                        region.to_owned(),
                        repository.to_owned(),
                    ));
                }
                Some(Change::Postures) => every_posture = true,
                Some(Change::Beat { token: from, beat }) if from == token => {
                    latest_beat = latest_beat.max(Some(beat));
                }
                // Another worker's heartbeat.
                Some(Change::Beat { .. }) => {}
                None => debug!(
                    payload.len = payload.len(),
                    "unknown ledger notification ignored"
                ),
            }
        }
        self.reload_images(images).await?;
        self.reload_postures(repositories, every_posture).await?;
        if let Some(beat) = latest_beat {
            self.beat_returned(beat, sent);
        }
        Ok(())
    }

    async fn reload_images(
        &self,
        keys: HashSet<(String, String, String, String)>,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<_> = keys.into_iter().collect();
        let mut found: HashMap<(String, String, String, String), VerdictImage> = self
            .store
            .verdict_images_of(&keys)
            .await?
            .into_iter()
            .map(|image| {
                let row = &image.image;
                let key = (
                    row.account.clone(),
                    row.region.clone(),
                    row.repository.clone(),
                    row.digest.clone(),
                );
                (key, image)
            })
            .collect();
        for key in keys {
            let image = found.remove(&key);
            let (account, region, repository, digest) = key;
            self.view
                .put_image((account, region, repository), &digest, image);
        }
        self.metrics
            .verdict_view_reloaded(ViewReload::Image, self.view.images());
        Ok(())
    }

    async fn reload_postures(
        &self,
        repositories: HashSet<RepositoryId>,
        every: bool,
    ) -> Result<(), StoreError> {
        if every {
            let postures = self.store.verdict_postures(None).await?;
            self.view.put_postures(None, postures);
            self.metrics
                .verdict_view_reloaded(ViewReload::Postures, self.view.images());
            return Ok(());
        }
        for (account, region, repository) in repositories {
            let postures = self
                .store
                .verdict_postures(Some((&account, &region, &repository)))
                .await?;
            self.view
                .put_postures(Some((account, region, repository)), postures);
            self.metrics
                .verdict_view_reloaded(ViewReload::Repository, self.view.images());
        }
        Ok(())
    }

    /// Our heartbeat `beat` came back: the view is current as of its send.
    fn beat_returned(&self, beat: u64, sent: &mut VecDeque<(u64, Instant)>) {
        while let Some(&(number, at)) = sent.front() {
            if number > beat {
                break;
            }
            sent.pop_front();
            if number == beat {
                self.view.mark_fresh(at);
                self.metrics.set_verdict_view_fresh(Utc::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readmodel::ImageRow;

    fn image(digest: &str, tags: &[&str]) -> VerdictImage {
        VerdictImage {
            image: ImageRow {
                account: "123456789012".into(),
                region: "eu-west-1".into(),
                repository: "app".into(),
                digest: digest.into(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                ..ImageRow::default()
            },
            checked_at: None,
            evidence: Some((7, "h".into())),
        }
    }

    const AT: (&str, &str, &str) = ("123456789012", "eu-west-1", "app");

    #[test]
    fn notifications_are_read_as_the_triggers_write_them() {
        assert_eq!(
            Change::parse("image\t1\teu\tapp\tsha256:ab"),
            Some(Change::Image {
                account: "1",
                region: "eu",
                repository: "app",
                digest: "sha256:ab"
            })
        );
        assert_eq!(Change::parse("posture"), Some(Change::Postures));
        assert_eq!(
            Change::parse("beat\tx\t12"),
            Some(Change::Beat {
                token: "x",
                beat: 12
            })
        );
        for junk in ["", "image\t1", "beat\tx\tnot-a-number", "other\ta\tb"] {
            assert_eq!(Change::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_view_never_confirmed_current_or_older_than_its_bound_is_stale() {
        let view = LedgerView::new(Duration::from_secs(10));
        view.replace(vec![image("sha256:aa", &["v1"])], vec![]);
        let now = Instant::now();
        assert!(matches!(
            view.lookup(AT, ImageKey::Digest("sha256:aa"), now),
            Lookup::Stale {
                age: None,
                held: Some(_)
            }
        ));
        view.mark_fresh(now);
        assert!(matches!(
            view.lookup(
                AT,
                ImageKey::Digest("sha256:aa"),
                now + Duration::from_secs(10)
            ),
            Lookup::Found(_)
        ));
        assert!(matches!(
            view.lookup(AT, ImageKey::Digest("sha256:bb"), now),
            Lookup::Missing
        ));
        let late = now + Duration::from_secs(11);
        match view.lookup(AT, ImageKey::Tag("v1"), late) {
            Lookup::Stale {
                age: Some(age),
                held: Some(inputs),
            } => {
                assert_eq!(age, Duration::from_secs(11));
                assert_eq!(inputs.image.digest, "sha256:aa");
            }
            other => panic!("expected stale, got {other:?}"),
        }
        // An older heartbeat coming back late never moves freshness backwards.
        view.mark_fresh(now - Duration::from_secs(5));
        assert_eq!(view.age(now), Some(Duration::ZERO));
    }

    #[test]
    fn images_are_put_and_removed_one_at_a_time_and_counted() {
        let view = LedgerView::new(Duration::from_secs(10));
        view.replace(vec![image("sha256:aa", &["v1"])], vec![]);
        view.mark_fresh(Instant::now());
        let id = || (AT.0.to_owned(), AT.1.to_owned(), AT.2.to_owned());
        view.put_image(id(), "sha256:bb", Some(image("sha256:bb", &["v2"])));
        assert_eq!(view.images(), 2);
        view.put_image(id(), "sha256:bb", Some(image("sha256:bb", &["v3"])));
        assert_eq!(view.images(), 2, "a replaced image is counted once");
        assert!(matches!(
            view.lookup(AT, ImageKey::Tag("v3"), Instant::now()),
            Lookup::Found(found) if found.image.digest == "sha256:bb"
        ));
        view.put_image(id(), "sha256:aa", None);
        assert_eq!(view.images(), 1);
        assert!(matches!(
            view.lookup(AT, ImageKey::Digest("sha256:aa"), Instant::now()),
            Lookup::Missing
        ));
    }
}
