//! The long-running worker: the SQS consumer and the HTTP endpoints under one shutdown.
//!
//! Tests start it with a listener bound to port 0 and their own cancellation token, so the
//! real worker runs in-process and stops deterministically.

use std::sync::Arc;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alerts::AlertPublisher;
use crate::export::http::{self, HttpLimits, HttpState};
use crate::pipeline::Pipeline;
use crate::source::coverage::CoverageSweeper;
use crate::source::depth::poll_queue_depth;
use crate::source::exceptions::ExceptionWatcher;
use crate::source::reconcile::{Reconciler, run_periodically};
use crate::source::sqs::{SourceError, SqsConsumer, SqsSettings};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// The work the worker does beside consuming the queue.
pub struct Background {
    /// How often due signature re-checks are looked for.
    pub recheck_poll: Duration,
    /// How old a signature verdict may grow before it is judged again
    /// (`ECR_AUDIT_REVERIFY_INTERVAL`); zero turns scheduled re-verification off.
    pub reverify_interval: Duration,
    /// How often the queue depth gauges are refreshed.
    pub queue_metrics_interval: Duration,
    /// Publishes alert events when an alert bus is configured.
    pub alerts: Option<AlertPublisher>,
    /// How often the alert publisher looks at the outbox without being notified: retries
    /// fall due, and a lost notification listener is covered (src/alerts/publisher.rs).
    pub alert_poll: Duration,
    /// The periodic reconcile sweep and its interval.
    pub reconcile: Option<(Reconciler, Duration)>,
    /// The periodic coverage sweep (image use) and its interval.
    pub coverage: Option<(CoverageSweeper, Duration)>,
    /// The bounds of the HTTP endpoints and the size of their own database pool.
    pub http: HttpLimits,
    /// The `/v1/` API's bearer token when the API is on (`ECR_AUDIT_API`).
    pub api: Option<crate::export::api::ApiToken>,
    /// How long a control may fail before it alerts (`ECR_AUDIT_FAILING_GRACE`); zero: never.
    pub failing_grace: Duration,
    /// The exceptions task (file and expiry) and its interval.
    pub exceptions: Option<(ExceptionWatcher, Duration)>,
    /// Evidence tree heads: the signer (none = unsigned heads), every N records or T.
    pub heads: Option<crate::evidence::heads::HeadTask>,
    /// The deploy policy when verdicts are served (`ECR_AUDIT_DEPLOY_POLICY`).
    pub deploy_policy: Option<std::sync::Arc<crate::export::deploy_policy::DeployPolicy>>,
    /// The bound on the verdict view's age (`ECR_AUDIT_VERDICT_MAX_STALENESS`).
    pub verdict_max_staleness: Duration,
    /// How often the verdict view checks it is current.
    pub verdict_heartbeat: Duration,
    /// How often deploy verdicts are appended to the evidence (identical ones in between are
    /// folded into one record).
    pub verdict_record_interval: Duration,
    /// The admission webhook's TLS listener and certificate files (`ECR_AUDIT_ADMISSION_ADDR`).
    pub admission: Option<(TcpListener, Arc<crate::export::tls::TlsFiles>)>,
}

impl Background {
    pub fn new(recheck_poll: Duration) -> Self {
        Self {
            recheck_poll,
            reverify_interval: Duration::ZERO,
            queue_metrics_interval: Duration::from_secs(15),
            alerts: None,
            alert_poll: Duration::from_secs(1),
            reconcile: None,
            coverage: None,
            http: HttpLimits::default(),
            api: None,
            failing_grace: Duration::ZERO,
            exceptions: None,
            heads: None,
            deploy_policy: None,
            verdict_max_staleness: crate::export::view::DEFAULT_MAX_STALENESS,
            verdict_heartbeat: Duration::from_secs(1),
            verdict_record_interval: crate::export::recorder::DEFAULT_INTERVAL,
            admission: None,
        }
    }
}

/// The exceptions task stops with the other background work; alerts keep flowing while the
/// consumer drains and stop with the endpoints.
fn spawn_exceptions_and_alerts(
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    (exceptions, alerts): (Option<(ExceptionWatcher, Duration)>, Option<AlertPublisher>),
    alert_poll: Duration,
    background_stop: &CancellationToken,
    http_shutdown: &CancellationToken,
) {
    if let Some((watcher, interval)) = exceptions {
        tasks.push(tokio::spawn(watcher.run(interval, background_stop.clone())));
    }
    if let Some(alerts) = alerts {
        tasks.push(tokio::spawn(alerts.run(alert_poll, http_shutdown.clone())));
    }
}

/// The signature re-checks and the queue depth gauges: always running, stopped with the
/// other background work.
fn rechecks_and_queue_depth(
    pipeline: &Arc<Pipeline>,
    (sqs, settings): (&aws_sdk_sqs::Client, &SqsSettings),
    (recheck_poll, queue_metrics_interval): (Duration, Duration),
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(run_rechecks(
            Arc::clone(pipeline),
            recheck_poll,
            stop.clone(),
        )),
        tokio::spawn(poll_queue_depth(
            sqs.clone(),
            settings.queue_url.clone(),
            Arc::clone(pipeline.metrics()),
            queue_metrics_interval,
            stop.clone(),
        )),
    ]
}

/// Runs until `shutdown` is cancelled (or the queue turns out to be unusable).
///
/// # Errors
/// [`WorkerError`] when the queue cannot be used or the HTTP server fails.
pub async fn run(
    pipeline: Arc<Pipeline>,
    sqs: aws_sdk_sqs::Client,
    settings: SqsSettings,
    background: Background,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // Not a child of `shutdown`: the endpoints stay up while the consumer drains.
    let http_shutdown = CancellationToken::new();
    // Stopped after the endpoints, so the last verdicts answered are recorded.
    let recorder_stop = CancellationToken::new();
    let background_stop = shutdown.child_token();
    let mut verdict_tasks = Vec::new();
    let state = http_state(
        &pipeline,
        (sqs.clone(), settings.queue_url.clone()),
        &background,
        (&http_shutdown, &recorder_stop, &background_stop),
        &mut verdict_tasks,
    );
    log_listening(&listener, &state);
    let server = serve_apart(
        (listener, background.admission),
        state,
        background.http,
        http_shutdown.clone(),
    )?;

    let mut tasks = rechecks_and_queue_depth(
        &pipeline,
        (&sqs, &settings),
        (background.recheck_poll, background.queue_metrics_interval),
        &background_stop,
    );
    spawn_periodic(
        &mut tasks,
        &pipeline,
        (background.reverify_interval, background.failing_grace),
        (background.reconcile, background.coverage),
        &background_stop,
    );
    spawn_heads(&mut tasks, &pipeline, background.heads, &http_shutdown);
    spawn_exceptions_and_alerts(
        &mut tasks,
        (background.exceptions, background.alerts),
        background.alert_poll,
        &background_stop,
        &http_shutdown,
    );
    let consumed = SqsConsumer::new(sqs, settings, pipeline)
        .run(shutdown)
        .await;
    background_stop.cancel();
    // The endpoints stay up until the consumer has drained, so the last scrape sees it all.
    http_shutdown.cancel();
    join_all(tasks).await;
    let served = server.await.unwrap_or(Ok(()));
    recorder_stop.cancel();
    join_all(verdict_tasks).await;
    consumed?;
    served?;
    Ok(())
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// What the endpoints read: their own pool, the queue `/readyz` checks, the API and, with a
/// deploy policy, the verdict service (whose tasks go to `verdict_tasks`).
fn http_state(
    pipeline: &Arc<Pipeline>,
    queue: (aws_sdk_sqs::Client, String),
    background: &Background,
    stops: (&CancellationToken, &CancellationToken, &CancellationToken),
    verdict_tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> HttpState {
    let mut state = HttpState::new(
        endpoint_store(pipeline.store(), &background.http),
        Arc::clone(pipeline.metrics()),
        Some(queue),
        background.http.metrics_cache,
    );
    state.api = background.api;
    state.verdicts = background
        .deploy_policy
        .clone()
        .map(|policy| verdict_service(policy, pipeline, background, stops, verdict_tasks));
    state
}

/// The deploy verdicts' view, recorder and on-demand evaluator, each a task of its own: the
/// view follows the ledger until the endpoints stop, the recorder until `recorder_stop`, the
/// evaluator with the other background work.
fn verdict_service(
    policy: Arc<crate::export::deploy_policy::DeployPolicy>,
    pipeline: &Arc<Pipeline>,
    background: &Background,
    (http_shutdown, recorder_stop, background_stop): (
        &CancellationToken,
        &CancellationToken,
        &CancellationToken,
    ),
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> crate::export::verdict::VerdictService {
    use crate::export::{on_demand::OnDemand, recorder::VerdictRecorder, view};
    let view = Arc::new(view::LedgerView::new(background.verdict_max_staleness));
    let follower = view::ViewTask {
        view: Arc::clone(&view),
        store: view::ViewTask::own_store(pipeline.store()),
        metrics: Arc::clone(pipeline.metrics()),
        heartbeat: background.verdict_heartbeat,
    };
    tasks.push(tokio::spawn(follower.run(http_shutdown.clone())));
    let (recorder, task) = VerdictRecorder::start(
        pipeline.store().clone(),
        Arc::clone(pipeline.metrics()),
        background.verdict_record_interval,
        recorder_stop.clone(),
    );
    tasks.push(task);
    let (on_demand, task) = OnDemand::start(Arc::clone(pipeline), background_stop.clone());
    tasks.push(task);
    crate::export::verdict::VerdictService {
        policy,
        view,
        recorder: Some(recorder),
        on_demand: Some(on_demand),
    }
}

fn log_listening(listener: &TcpListener, state: &HttpState) {
    if let Ok(addr) = listener.local_addr() {
        info!(http.addr = %addr, api = state.api.is_some(), verdicts = state.verdicts.is_some(), "serving /metrics, /healthz, /readyz");
    }
}

/// Serves the endpoints (and the admission webhook's TLS listener, when one is configured:
/// the same routes) on a runtime and thread of their own until `shutdown`, so that a verdict
/// never waits in the pipeline runtime's task queue behind a batch's parsing and planning
/// (on 2 saturated cores the measured p99 did not change beyond run-to-run spread:
/// docs/PERFORMANCE.md, "Deploy verdicts"). Returns where the server's result arrives.
///
/// # Errors
/// When the thread cannot be started.
fn serve_apart(
    (listener, admission): (
        TcpListener,
        Option<(TcpListener, Arc<crate::export::tls::TlsFiles>)>,
    ),
    state: HttpState,
    limits: http::HttpLimits,
    shutdown: CancellationToken,
) -> Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>, WorkerError> {
    // Sockets move as std sockets and are registered with the endpoints' own runtime.
    let listener = listener.into_std()?;
    let admission = match admission {
        Some((tls, files)) => Some((tls.into_std()?, files)),
        None => None,
    };
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ecr-audit-http".to_owned())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ecr-audit-http")
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(serve_both(listener, admission, state, limits, shutdown))
                });
            let _ = done.send(served);
        })?;
    Ok(result)
}

async fn serve_both(
    listener: std::net::TcpListener,
    admission: Option<(std::net::TcpListener, Arc<crate::export::tls::TlsFiles>)>,
    state: HttpState,
    limits: http::HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tls = match admission {
        Some((tls, files)) => {
            let tls = TcpListener::from_std(tls)?;
            if let Ok(addr) = tls.local_addr() {
                info!(admission.addr = %addr, "serving the verdict routes over TLS");
            }
            let (state, shutdown) = (state.clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                if let Err(err) =
                    crate::export::tls::serve_tls(tls, files, state, limits, shutdown).await
                {
                    warn!(error = %err, "the admission listener failed");
                }
            }))
        }
        None => None,
    };
    let served = http::serve(TcpListener::from_std(listener)?, state, limits, shutdown).await;
    if let Some(tls) = tls {
        let _ = tls.await;
    }
    served
}

/// A pool of `limits.db_connections` to the pipeline's database, for the endpoints alone: a
/// scrape storm or a slow `/readyz` then waits on its own connections, never the pipeline's.
/// It connects lazily; the pipeline's pool has already proven the database reachable.
fn endpoint_store(pipeline_store: &Store, limits: &HttpLimits) -> Store {
    let options = pipeline_store.pool().connect_options();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(limits.db_connections.max(1))
        // Shorter than the request timeout, so a starved endpoint answers with the real cause.
        .acquire_timeout(limits.request_timeout / 2)
        .connect_lazy_with((*options).clone());
    Store::from_pool(pool)
}

/// Claims due repository re-reads and signature re-checks in small batches until none is due,
/// then sleeps `poll`.
/// A claim in progress is finished before shutdown; an unfinished one is rolled back and
/// claimed again by any worker.
async fn run_rechecks(pipeline: Arc<Pipeline>, poll: Duration, shutdown: CancellationToken) {
    const CLAIM: i64 = 20;
    // A changed trust policy re-verifies every current digest (docs/SIGNATURES.md).
    if let Err(err) = pipeline.requeue_for_trust_change().await {
        warn!(error = %err, "could not queue re-verification under the current trust policy");
    }
    loop {
        let rereads = match pipeline.run_due_rereads(CLAIM).await {
            Ok(n) => n,
            Err(err) => {
                warn!(error = %err, "repository re-reads failed; they stay due");
                0
            }
        };
        match pipeline.run_due_rechecks(CLAIM).await {
            Ok(n) if (n as i64 == CLAIM || rereads as i64 == CLAIM) && !shutdown.is_cancelled() => {
                continue;
            }
            Ok(_) => {}
            Err(err) => warn!(error = %err, "signature re-checks failed; they stay due"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Looks for controls failing longer than `grace` every quarter of it (between a second and a
/// minute), so an alert follows the grace period closely without polling a database often.
async fn run_failing_check(pipeline: Arc<Pipeline>, grace: Duration, shutdown: CancellationToken) {
    let poll = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
        loop {
            match pipeline.store().raise_overdue_failures(grace).await {
                // A full claim: more may be due.
                Ok(n) if n >= crate::store::FAILING_CLAIM as u64 && !shutdown.is_cancelled() => {
                    continue;
                }
                Ok(_) => break,
                Err(err) => {
                    warn!(error = %err, "checking failing controls failed; tried again next time");
                    break;
                }
            }
        }
    }
}

/// The reconcile and coverage sweeps, each with its interval, when configured.
type Sweeps = (
    Option<(Reconciler, Duration)>,
    Option<(CoverageSweeper, Duration)>,
);

/// Tree heads are made off the batch path, and stop with the endpoints so that the last head
/// is made after the consumer drained.
fn spawn_heads(
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    pipeline: &Arc<Pipeline>,
    heads: Option<crate::evidence::heads::HeadTask>,
    stop: &CancellationToken,
) {
    if let Some(task) = heads {
        tasks.push(tokio::spawn(crate::evidence::heads::run_periodically(
            pipeline.store().pool().clone(),
            task,
            pipeline.metrics().clone(),
            stop.clone(),
        )));
    }
}

/// Starts the periodic work that is configured: scheduled re-verification (unless
/// `reverify_interval` is zero), the state alerts (unless `failing_grace` is zero), the
/// reconcile sweep and the coverage sweep.
fn spawn_periodic(
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    pipeline: &Arc<Pipeline>,
    (reverify_interval, failing_grace): (Duration, Duration),
    (reconcile, coverage): Sweeps,
    stop: &CancellationToken,
) {
    if !failing_grace.is_zero() {
        tasks.push(tokio::spawn(run_failing_check(
            Arc::clone(pipeline),
            failing_grace,
            stop.clone(),
        )));
    }
    if !reverify_interval.is_zero() {
        tasks.push(tokio::spawn(run_reverify(
            Arc::clone(pipeline),
            reverify_interval,
            stop.clone(),
        )));
    }
    if let Some((reconciler, interval)) = reconcile {
        tasks.push(tokio::spawn(run_periodically(
            reconciler,
            interval,
            stop.clone(),
        )));
    }
    if let Some((sweeper, interval)) = coverage {
        tasks.push(tokio::spawn(crate::source::coverage::run_periodically(
            sweeper,
            interval,
            stop.clone(),
        )));
    }
}

/// How often stale verdicts are looked for, and how many are scheduled each time: at most
/// 100 a minute per worker (144,000 a day), so re-verification never crowds out new pushes; the
/// re-checks themselves are paced by `ECR_AUDIT_API_RATE` like every other read.
const REVERIFY_TICK: Duration = Duration::from_secs(60);
const REVERIFY_BATCH: i64 = 100;

/// Scheduled re-verification: every [`REVERIFY_TICK`], the signature re-checks of up to
/// [`REVERIFY_BATCH`] digests whose verdict is older than `interval` are made due. Several
/// workers may run it; a digest already due is not chosen twice.
async fn run_reverify(pipeline: Arc<Pipeline>, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REVERIFY_TICK) => {}
        }
        if let Err(err) = pipeline
            .schedule_stale_reverifications(interval, REVERIFY_BATCH)
            .await
        {
            warn!(error = %err, "scheduling signature re-verification failed; tried again next time");
        }
    }
}
