//! `TestApp`: one isolated world per test (database, queue, EventBridge rules, name prefix)
//! and the real worker running in-process against it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use ecr_audit::aws::load_sdk_config;
use ecr_audit::domain::{AccountId, Region};
use ecr_audit::enrich::Registry;
use ecr_audit::enrich::ecr::EcrRegistry;
use ecr_audit::parse::ParseContext;
use ecr_audit::pipeline::Pipeline;
use ecr_audit::source::sqs::SqsSettings;
use ecr_audit::store::Store;
use ecr_audit::telemetry::Metrics;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::harness::aws::queue_arn;
use crate::harness::{TestDb, TestQueue, TestRule, next_count, unique_suffix};

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

pub struct TestApp {
    pub sdk: SdkConfig,
    pub ecr: aws_sdk_ecr::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub kms: aws_sdk_kms::Client,
    pub queue_url: String,
    pub dlq_url: String,
    /// Every repository of this test starts with it; the EventBridge rules match on it.
    pub prefix: String,
    pub store: Store,
    pub pool: PgPool,
    pub database_url: String,
    /// Declared before the queue and the database: `Drop` removes fields in this order, and the
    /// rules go first so that nothing is routed to a queue being deleted.
    rules: Vec<TestRule>,
    queue: TestQueue,
    /// Held for its `Drop`: the database lives exactly as long as the app.
    _db: TestDb,
    worker: Option<(
        CancellationToken,
        JoinHandle<Result<(), ecr_audit::worker::WorkerError>>,
    )>,
    /// Whether a worker ever consumed the queue: only then must it be empty at the end (the
    /// emulator emits events for every ECR call, also in tests that drive the pipeline directly).
    worker_started: bool,
    /// The signing grace window the pipeline uses (short, so tests see UNSIGNED quickly).
    pub signing_grace_ms: i64,
    pub http_addr: Option<SocketAddr>,
    /// The worker's HTTP bounds; no /metrics cache, so a scrape sees what was just stored.
    pub http: ecr_audit::export::http::HttpLimits,
    /// EventBridge bus the worker puts alert events on; `None` = no alerts.
    pub alert_bus: Option<String>,
    /// How often the worker's alert publisher polls the outbox without a notification.
    pub alert_poll: Duration,
    /// The `/v1/` API's token; `None` = the API is off, as by default.
    pub api: Option<ecr_audit::export::api::ApiToken>,
    /// The deploy policy the worker serves verdicts by, when set.
    pub deploy_policy: Option<Arc<ecr_audit::export::deploy_policy::DeployPolicy>>,
    /// The verdict view's bound on its age (production: 10 s).
    pub verdict_max_staleness: Duration,
    /// The admission listener's certificate files: when set, the worker also serves TLS.
    pub admission_tls: Option<Arc<ecr_audit::export::tls::TlsFiles>>,
    /// Where the TLS listener listens, once started.
    pub admission_addr: Option<std::net::SocketAddr>,
    /// The account this test's credentials act in.
    pub account: String,
    /// Accounts the pipeline reads through an assumed role.
    pub account_roles: std::collections::HashMap<AccountId, String>,
    /// What signatures are verified against: by default the emulator's Signer roots under a
    /// strict policy for any identity (`trust_config::emulator_trust`).
    pub trust: Arc<ecr_audit::trust::TrustSettings>,
    /// Operator choices of the controls (ECR.4's required tag keys, ECR.5's key allow-list).
    pub policy: ecr_audit::evaluate::ControlPolicy,
    /// When set, the registry reads accounts through it (discovered accounts, external id)
    /// instead of `account_roles`.
    pub access: Option<Arc<ecr_audit::enrich::accounts::AccountAccess>>,
    /// The worker's `ECR_AUDIT_FAILING_GRACE`; zero: no state alerts.
    pub failing_grace: Duration,
    /// The worker's periodic reconcile sweep (made from its pipeline and registry) and interval.
    pub reconcile: Option<(ReconcilerFactory, Duration)>,
    /// The reviewed exceptions file the worker loads (`ECR_AUDIT_EXCEPTIONS_FILE`).
    pub exceptions_file: Option<std::path::PathBuf>,
}

/// Makes the worker's reconcile sweep from its pipeline and uncached registry.
pub type ReconcilerFactory = Box<
    dyn Fn(Arc<Pipeline>, Arc<dyn Registry>) -> ecr_audit::source::reconcile::Reconciler
        + Send
        + Sync,
>;

impl TestApp {
    pub async fn new() -> Self {
        Self::with_sdk(load_sdk_config().await, false).await
    }

    /// A world in an AWS account of its own (moto maps AssumeRole credentials to the role's
    /// account), for tests that change registry-wide settings such as the scan type. Inspector
    /// events are routed too, since no other test's can arrive there.
    pub async fn new_in_own_account() -> Self {
        let base = load_sdk_config().await;
        let account = format!(
            "4{:011}",
            u64::from(next_count()) + u64::from(std::process::id()) * 1000
        );
        let credentials = aws_sdk_sts::Client::new(&base)
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account}:role/ecr-audit-test"))
            .role_session_name("ecr-audit-test")
            .send()
            .await
            .expect("assume role")
            .credentials()
            .cloned()
            .expect("credentials");
        let sdk = base
            .to_builder()
            .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(
                aws_sdk_sts::config::Credentials::new(
                    credentials.access_key_id(),
                    credentials.secret_access_key(),
                    Some(credentials.session_token().to_owned()),
                    None,
                    "assumed-role",
                ),
            ))
            .build();
        let mut app = Self::with_sdk(sdk, true).await;
        app.account = account;
        app
    }

    #[allow(
        clippy::too_many_lines,
        reason = "builds one isolated world (database, queue, rules, clients) in order"
    )]
    async fn with_sdk(sdk: SdkConfig, own_account: bool) -> Self {
        if std::env::var("TEST_LOG").is_ok() {
            ecr_audit::telemetry::init(ecr_audit::config::LogFormat::Text);
        }
        let suffix = unique_suffix();
        let prefix = format!("t{suffix}-");

        let db = TestDb::named(&format!("it_{suffix}")).await;
        let store = db.store();
        let pool = db.pool.clone();
        let database_url = db.url.clone();

        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let queue = TestQueue::create(&sdk, &format!("{prefix}queue"), 3).await;

        // The production routing, narrowed to this test's repositories.
        let patterns = [
            (
                "image",
                json!({"source": ["aws.ecr"], "detail": {"repository-name": [{"prefix": prefix}]}}),
            ),
            (
                "api",
                json!({"source": ["aws.ecr"], "detail-type": ["AWS API Call via CloudTrail"],
                       "detail": {"requestParameters": {"repositoryName": [{"prefix": prefix}]}}}),
            ),
        ];
        let mut patterns = patterns.to_vec();
        if own_account {
            patterns.push(("inspector", json!({"source": ["aws.inspector2"]})));
        }
        let mut rules = Vec::new();
        for (name, pattern) in patterns {
            let rule = format!("{prefix}{name}");
            rules.push(TestRule::to_queue(&sdk, &rule, &pattern, &queue.arn).await);
        }

        Self {
            ecr: aws_sdk_ecr::Client::new(&sdk),
            kms: aws_sdk_kms::Client::new(&sdk),
            sqs,
            events,
            sdk,
            queue_url: queue.url.clone(),
            dlq_url: queue.dlq_url.clone(),
            prefix,
            store,
            pool,
            database_url,
            rules,
            queue,
            _db: db,
            worker: None,
            worker_started: false,
            signing_grace_ms: 3_000,
            http_addr: None,
            http: ecr_audit::export::http::HttpLimits {
                metrics_cache: Duration::ZERO,
                ..Default::default()
            },
            alert_bus: None,
            alert_poll: Duration::from_secs(1),
            api: None,
            deploy_policy: None,
            verdict_max_staleness: Duration::from_secs(10),
            admission_tls: None,
            admission_addr: None,
            account: ACCOUNT.to_owned(),
            account_roles: std::collections::HashMap::new(),
            trust: Arc::new(crate::trust_config::emulator_trust().await),
            policy: ecr_audit::evaluate::ControlPolicy::default(),
            access: None,
            failing_grace: Duration::ZERO,
            reconcile: None,
            exceptions_file: None,
        }
    }

    pub fn repo(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates a repository with ECR's defaults; returns its full (prefixed) name.
    pub async fn create_repository(&self, name: &str) -> String {
        let name = self.repo(name);
        self.ecr
            .create_repository()
            .repository_name(&name)
            .send()
            .await
            .expect("create repository");
        name
    }

    /// The uncached registry reader the pipeline uses (fast pacing: the emulator has no quotas).
    pub fn registry(&self, metrics: &Arc<Metrics>) -> Arc<dyn Registry> {
        let registry = EcrRegistry::with_options(
            self.sdk.clone(),
            Arc::clone(metrics),
            self.account_roles.clone(),
            ecr_audit::enrich::ecr::ApiPacing {
                calls_per_second: std::num::NonZeroU32::new(2000).expect("non-zero"),
            },
        );
        match &self.access {
            Some(access) => Arc::new(registry.with_access(Arc::clone(access))),
            None => Arc::new(registry),
        }
    }

    /// A reconcile sweep over this test's account (and the role accounts) in its region.
    pub fn reconciler(&self) -> ecr_audit::source::reconcile::Reconciler {
        let pipeline = Arc::new(self.pipeline());
        let registry = self.registry(pipeline.metrics());
        let mut targets = vec![(
            AccountId::parse(&self.account).expect("account"),
            Region::parse(REGION).expect("region"),
        )];
        for account in self.account_roles.keys() {
            targets.push((account.clone(), Region::parse(REGION).expect("region")));
        }
        // Each account's ECR Public registry, as the worker sweeps it (src/cli.rs).
        let accounts: Vec<AccountId> = targets.iter().map(|(a, _)| a.clone()).collect();
        targets.extend(accounts.into_iter().map(|a| (a, Region::ecr_public())));
        ecr_audit::source::reconcile::Reconciler::new(pipeline, registry, targets)
    }

    pub fn pipeline(&self) -> Pipeline {
        let metrics = Arc::new(Metrics::new());
        let registry = self.registry(&metrics);
        Pipeline::builder(
            registry,
            self.store.clone().with_alerts(self.alert_bus.is_some()),
        )
        .metrics(metrics)
        .cache_ttl(Duration::from_secs(300))
        .parse_context(ParseContext {
            default_account: AccountId::parse(ACCOUNT).ok(),
            default_region: Region::parse(REGION).ok(),
        })
        .signing_grace(chrono::Duration::milliseconds(self.signing_grace_ms))
        .trust(Arc::clone(&self.trust))
        .policy(self.policy.clone())
        .build()
    }

    /// The worker's background work as tests run it: fast polls, alerts when a bus is set.
    fn background(&self, pipeline: &Pipeline) -> ecr_audit::worker::Background {
        let mut background = ecr_audit::worker::Background::new(Duration::from_millis(200));
        background.queue_metrics_interval = Duration::from_secs(1);
        background.http = self.http;
        background.alert_poll = self.alert_poll;
        background.api = self.api;
        // The exceptions task as production runs it, every 300 ms instead of every minute.
        background.exceptions = Some((
            ecr_audit::source::exceptions::ExceptionWatcher::new(
                pipeline.store().clone(),
                Arc::clone(pipeline.metrics()),
                self.exceptions_file.clone(),
            ),
            Duration::from_millis(300),
        ));
        background.deploy_policy.clone_from(&self.deploy_policy);
        background.verdict_max_staleness = self.verdict_max_staleness;
        // Verdicts recorded and the view checked every 200 ms instead of every second.
        background.verdict_heartbeat = Duration::from_millis(200);
        background.verdict_record_interval = Duration::from_millis(200);
        background.alerts = self.alert_bus.as_ref().map(|bus| {
            ecr_audit::alerts::AlertPublisher::new(
                pipeline.store().pool().clone(),
                self.events.clone(),
                bus.clone(),
                Arc::clone(pipeline.metrics()),
            )
        });
        background
    }

    /// Starts the real worker (consumer and HTTP endpoints) in-process.
    pub async fn start_worker(&mut self) {
        self.start_worker_polling(Duration::from_secs(1)).await;
    }

    /// Starts the worker with a chosen long-poll wait (production uses 20 s).
    pub async fn start_worker_polling(&mut self, wait_time: Duration) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.http_addr = listener.local_addr().ok();
        let mut settings = SqsSettings::new(self.queue_url.clone());
        settings.wait_time = wait_time;
        settings.retry_base = Duration::from_secs(1);
        settings.retry_max = Duration::from_secs(2);
        settings.visibility_timeout = Duration::from_secs(10);
        settings.shutdown_grace = Duration::from_secs(10);
        let token = CancellationToken::new();
        let pipeline = Arc::new(self.pipeline());
        let mut background = self.background(&pipeline);
        background.failing_grace = self.failing_grace;
        if let Some((factory, interval)) = &self.reconcile {
            let registry = self.registry(pipeline.metrics());
            background.reconcile = Some((factory(Arc::clone(&pipeline), registry), *interval));
        }
        if let Some(files) = &self.admission_tls {
            let tls = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            self.admission_addr = tls.local_addr().ok();
            background.admission = Some((tls, Arc::clone(files)));
        }
        let handle = tokio::spawn(ecr_audit::worker::run(
            pipeline,
            self.sqs.clone(),
            settings,
            background,
            listener,
            token.clone(),
        ));
        self.worker = Some((token, handle));
        self.worker_started = true;
    }

    /// Asks the worker to stop and waits for it to drain.
    pub async fn stop_worker(&mut self) {
        if let Some((token, handle)) = self.worker.take() {
            token.cancel();
            handle.await.expect("worker task").expect("worker result");
        }
    }

    /// Puts an event on the default bus, as AWS would (the rules route it to the queue).
    pub async fn put_event(&self, detail_type: &str, detail: Value) {
        let output = self
            .events
            .put_events()
            .entries(
                aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                    .source("aws.ecr")
                    .detail_type(detail_type)
                    .detail(detail.to_string())
                    .build(),
            )
            .send()
            .await
            .expect("put events");
        assert_eq!(output.failed_entry_count(), 0, "PutEvents failed");
    }

    /// Sends a raw body straight to the queue (a redelivery, or a poison message).
    pub async fn send_raw(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send message");
    }

    pub async fn queue_depth(&self, url: &str) -> (i64, i64) {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .send()
            .await
            .expect("queue attributes");
        let get = |name| {
            attributes
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
            get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Waits until the queue has held nothing, visible or in flight, for a quiet second and a
    /// half: the emulator signs and scans after a delay and emits those events later.
    pub async fn wait_for_drain(&self) {
        let started = Instant::now();
        let mut quiet_since: Option<Instant> = None;
        loop {
            if self.queue_depth(&self.queue_url).await == (0, 0) {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(1500) {
                    return;
                }
            } else {
                quiet_since = None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "queue not drained after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes what the emulator queued for the test's own set-up calls (CreateRepository…),
    /// so a test can start from an empty queue.
    pub async fn wait_for_drain_without_worker(&self) {
        let _ = self
            .sqs
            .purge_queue()
            .queue_url(&self.queue_url)
            .send()
            .await;
    }

    /// Polls `check` until it returns `Some`, or fails the test after `timeout`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let started = Instant::now();
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(started.elapsed() < timeout, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn scrape(&self) -> String {
        let addr = self.http_addr.expect("worker started");
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn evidence_count(&self, event_id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM evidence WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&self.pool)
            .await
            .expect("count evidence")
    }

    /// Routes this account's registry-wide CloudTrail calls (they name no repository, so the
    /// per-test prefix rules miss them) to the test's queue, as the production rule does. Only
    /// for tests in an account of their own.
    pub async fn route_registry_calls(&mut self, event_names: &[&str]) {
        let rule = format!("{}registry", self.prefix);
        let pattern = json!({"source": ["aws.ecr"], "detail-type": ["AWS API Call via CloudTrail"],
                             "detail": {"eventName": event_names}});
        let rule = TestRule::to_queue(&self.sdk, &rule, &pattern, &self.queue.arn).await;
        self.rules.push(rule);
    }

    /// Routes this account's ECR Public calls (CloudTrail) to the test's queue with the
    /// production pattern (`EcrPublicCloudTrailEventsRule`, infra/cloudformation/central.yaml).
    /// They name no private repository, so only for tests in an account of their own.
    pub async fn route_public_calls(&mut self) {
        let rule = format!("{}public", self.prefix);
        let pattern = json!({"source": ["aws.ecr-public"], "detail-type": ["AWS API Call via CloudTrail"],
                             "detail": {"eventSource": ["ecr-public.amazonaws.com"],
                                        "eventName": ["CreateRepository", "DeleteRepository",
                                                      "TagResource", "UntagResource"]}});
        let rule = TestRule::to_queue(&self.sdk, &rule, &pattern, &self.queue.arn).await;
        self.rules.push(rule);
    }

    /// Routes AWS Signer's revocation calls (CloudTrail) to the test's queue with the
    /// production pattern (`SignerRevocationEventsRule`, infra/cloudformation/central.yaml).
    /// They name no repository, so only for tests in an account of their own.
    pub async fn route_signer_revocations(&mut self) {
        let rule = format!("{}signer", self.prefix);
        let pattern = json!({"source": ["aws.signer"], "detail-type": ["AWS API Call via CloudTrail"],
                             "detail": {"eventSource": ["signer.amazonaws.com"],
                                        "eventName": ["RevokeSignature", "RevokeSigningProfile"],
                                        "errorCode": [{"exists": false}]}});
        let rule = TestRule::to_queue(&self.sdk, &rule, &pattern, &self.queue.arn).await;
        self.rules.push(rule);
    }

    /// Deletes this test's EventBridge rules: from now on no event reaches the queue.
    pub async fn remove_rules(&mut self) {
        self.rules.clear();
    }

    /// Stops the worker, checks that nothing was left behind, drops the world.
    pub async fn finish(mut self) {
        self.stop_worker().await;
        let leftover = self.queue_depth(&self.queue_url).await;
        let dead = self.queue_depth(&self.dlq_url).await;
        let worker_started = self.worker_started;
        self.pool.close().await;
        // The rules, the queues and the database go here (`Drop`), before the verdict.
        drop(self);
        if worker_started {
            assert_eq!(
                leftover,
                (0, 0),
                "the queue still held work the worker should have consumed"
            );
        }
        assert_eq!(dead, (0, 0), "messages were dead-lettered");
    }
}

/// An EventBridge rule sending what `pattern` matches to the queue `queue_arn`, in the account
/// of `sdk`; deleted when the returned rule is dropped.
pub async fn route_to_queue(
    sdk: &SdkConfig,
    rule: &str,
    pattern: &Value,
    queue_arn: &str,
) -> TestRule {
    TestRule::to_queue(sdk, rule, pattern, queue_arn).await
}

/// Makes the emulator record `actor` as the caller of this request in its CloudTrail event.
pub fn as_caller(
    actor: &str,
) -> impl Fn(&mut aws_sdk_ecr::config::http::HttpRequest) + Send + Sync + 'static {
    let actor = actor.to_owned();
    move |request| {
        request
            .headers_mut()
            .insert("x-emulator-caller-arn", actor.clone());
    }
}

/// An `ECR Image Action` detail.
pub fn image_action(repository: &str, digest: &str, action: &str, tag: Option<&str>) -> Value {
    let mut detail = json!({
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": digest,
        "action-type": action,
        "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
    });
    if let Some(tag) = tag {
        detail["image-tag"] = json!(tag);
    }
    detail
}

/// A CloudTrail detail for an ECR API call by `actor_arn`.
pub fn cloudtrail(
    event_id: &str,
    event_time: &str,
    name: &str,
    params: Value,
    actor_arn: &str,
) -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:session",
            "arn": actor_arn,
            "accountId": ACCOUNT,
            "sessionContext": {"sessionIssuer": {"arn": format!("arn:aws:iam::{ACCOUNT}:role/platform")}}
        },
        "eventTime": event_time,
        "eventSource": "ecr.amazonaws.com",
        "eventName": name,
        "awsRegion": REGION,
        "requestParameters": params,
        "responseElements": null,
        "eventID": event_id,
        "eventType": "AwsApiCall",
        "recipientAccountId": ACCOUNT
    })
}

/// A full envelope with a chosen id, as SQS would carry it.
pub fn envelope(id: &str, time: &str, detail_type: &str, detail: Value) -> String {
    json!({
        "version": "0",
        "id": id,
        "detail-type": detail_type,
        "source": "aws.ecr",
        "account": ACCOUNT,
        "time": time,
        "region": REGION,
        "resources": [],
        "detail": detail
    })
    .to_string()
}

/// The envelope of a CloudTrail `CreateRepository` call by `actor_arn`, with a chosen id.
pub fn create_repository_envelope(id: &str, repository: &str, actor_arn: &str) -> String {
    let time = "2026-11-20T10:00:00Z";
    envelope(
        id,
        time,
        "AWS API Call via CloudTrail",
        cloudtrail(
            id,
            time,
            "CreateRepository",
            json!({"repositoryName": repository}),
            actor_arn,
        ),
    )
}

/// Pushes a single-layer image manifest and returns its digest as ECR reports it.
pub async fn push_image(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    tag: &str,
    salt: &str,
) -> String {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                   "digest": format!("sha256:{}", sha256_hex(format!("config-{salt}").as_bytes()))},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 10,
                    "digest": format!("sha256:{}", sha256_hex(format!("layer-{salt}").as_bytes()))}]
    })
    .to_string();
    ecr.put_image()
        .repository_name(repository)
        .image_tag(tag)
        .image_manifest(manifest)
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("put image")
        .image()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .expect("digest")
        .to_owned()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Reads one metric sample's value from an exposition text.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// POSTs `body` to the emulator's control API at `path` (docs/EMULATOR.md) and answers its JSON
/// (`null` when the answer is not JSON); a refusal fails the test with the emulator's words.
pub async fn emulator_control(path: &str, body: serde_json::Value) -> serde_json::Value {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let response = reqwest::Client::new()
        .post(format!("{endpoint}{path}"))
        .json(&body)
        .send()
        .await
        .expect("emulator control");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// The emulator's call counters of one account: operation → count (`clear`: reset them; the
/// answer is then empty).
pub async fn emulator_requests(
    account: &str,
    clear: bool,
) -> std::collections::BTreeMap<String, u64> {
    let url = format!(
        "{}/_emulator/requests?account={account}",
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL")
    );
    let client = reqwest::Client::new();
    let request = if clear {
        client.delete(url)
    } else {
        client.get(url)
    };
    let body: Value = request
        .send()
        .await
        .expect("requests")
        .json()
        .await
        .expect("json");
    body.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}
