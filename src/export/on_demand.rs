//! On-demand evaluation of an image a verdict was asked about and the ledger did not know
//! (docs/ENFORCEMENT.md, "Unknown images").
//!
//! The verdict itself answers at once with the scope's `unknown` choice; the reference goes to
//! a small queue, and one task looks the digest up in ECR. Only an image ECR holds is read and
//! committed, like a push (`detail-type` [`ON_DEMAND_DETAIL_TYPE`]), so the next verdict finds
//! it judged; a digest ECR does not hold records nothing, so made-up references cannot fill the
//! ledger. Each digest is asked about at most once per [`REASK_AFTER`], the queue holds
//! [`QUEUE_CAPACITY`] and one evaluation runs at a time: a flood of made-up references costs
//! at most one `DescribeImages` call at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::domain::{AccountId, Digest, Region, RepositoryKey, RepositoryName};
use crate::parse::{AuditEvent, Change};
use crate::pipeline::Pipeline;
use crate::plan::Plan;
use crate::telemetry::OnDemandOutcome;

/// `detail_type` of the events an on-demand evaluation commits.
pub const ON_DEMAND_DETAIL_TYPE: &str = "ecr-audit On-demand";
/// References waiting for evaluation; more are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 64;
/// How long a digest is not asked about again.
pub const REASK_AFTER: Duration = Duration::from_secs(60);
/// Remembered digests; past it the oldest are forgotten.
const REMEMBERED: usize = 4096;

/// One digest of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub key: RepositoryKey,
    pub digest: Digest,
}

impl Target {
    /// The target of a digest reference; `None` when a part is not a valid identifier.
    pub fn of(account: &str, region: &str, repository: &str, digest: &str) -> Option<Self> {
        Some(Self {
            key: RepositoryKey {
                account: AccountId::parse(account).ok()?,
                region: Region::parse(region).ok()?,
                name: RepositoryName::parse(repository).ok()?,
            },
            digest: Digest::parse(digest).ok()?,
        })
    }
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Queued,
    /// Asked within [`REASK_AFTER`]: the evaluation is under way or found nothing.
    Recently,
    /// The queue is full.
    Busy,
}

/// The verdicts' end of the queue.
#[derive(Clone)]
pub struct OnDemand {
    sender: mpsc::Sender<Target>,
    asked: Arc<Mutex<HashMap<Target, Instant>>>,
    pipeline: Arc<Pipeline>,
}

impl OnDemand {
    /// Starts the evaluating task, which stops with `shutdown`.
    pub fn start(
        pipeline: Arc<Pipeline>,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(Arc::clone(&pipeline), receiver, shutdown));
        let on_demand = Self {
            sender,
            asked: Arc::new(Mutex::new(HashMap::new())),
            pipeline,
        };
        (on_demand, task)
    }

    /// Asks for `target` to be evaluated; never waits.
    pub fn ask(&self, target: Target, now: Instant) -> Asked {
        {
            let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
            if asked
                .get(&target)
                .is_some_and(|at| now.saturating_duration_since(*at) < REASK_AFTER)
            {
                return Asked::Recently;
            }
            if asked.len() >= REMEMBERED {
                asked.retain(|_, at| now.saturating_duration_since(*at) < REASK_AFTER);
            }
            asked.insert(target.clone(), now);
        }
        match self.sender.try_send(target) {
            Ok(()) => Asked::Queued,
            Err(_) => {
                self.pipeline
                    .metrics()
                    .on_demand_evaluation(OnDemandOutcome::Dropped);
                Asked::Busy
            }
        }
    }
}

async fn run(
    pipeline: Arc<Pipeline>,
    mut receiver: mpsc::Receiver<Target>,
    shutdown: CancellationToken,
) {
    loop {
        let target = tokio::select! {
            () = shutdown.cancelled() => return,
            target = receiver.recv() => match target {
                Some(target) => target,
                None => return,
            },
        };
        let outcome = evaluate(&pipeline, &target).await;
        pipeline.metrics().on_demand_evaluation(outcome);
    }
}

/// Looks the digest up in ECR and, when ECR holds it, reads and commits it like a push.
async fn evaluate(pipeline: &Pipeline, target: &Target) -> OnDemandOutcome {
    match pipeline.image_exists(&target.key, &target.digest).await {
        Ok(true) => {}
        Ok(false) => return OnDemandOutcome::Absent,
        Err(err) => {
            debug!(repository = %target.key, error = %err, "on-demand evaluation: ECR did not answer");
            return OnDemandOutcome::Failed;
        }
    }
    let event = AuditEvent {
        id: format!(
            "on-demand/{}/{}/{}/{}/{}",
            target.key.account,
            target.key.region,
            target.key.name,
            target.digest,
            Utc::now().timestamp_micros()
        ),
        time: Utc::now(),
        account: target.key.account.clone(),
        region: target.key.region.clone(),
        detail_type: ON_DEMAND_DETAIL_TYPE.to_owned(),
        actor: None,
        change: Change::ImagePushed {
            repository: target.key.name.clone(),
            digest: target.digest.clone(),
            tag: None,
            manifest_media_type: None,
            artifact_media_type: None,
        },
        claimed_time: None,
    };
    let plan = match pipeline.plan(event).await {
        Ok(plan) => plan,
        Err(err) => {
            debug!(repository = %target.key, error = %err, "on-demand evaluation: not read");
            return OnDemandOutcome::Failed;
        }
    };
    match pipeline.commit_plans(&[Plan::Event(Box::new(plan))]).await {
        Ok(_) => {
            info!(repository = %target.key, digest = %target.digest, "an image a verdict asked about was evaluated on demand");
            OnDemandOutcome::Evaluated
        }
        Err(err) => {
            debug!(repository = %target.key, error = %err, "on-demand evaluation: not committed");
            OnDemandOutcome::Failed
        }
    }
}
