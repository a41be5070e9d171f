//! Command dispatch: turns parsed flags into running stages. `anyhow` lives here and in
//! `main` only; the stages below return typed errors.

use std::sync::Arc;

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Command, DatabaseArgs, OutputFormat, PipelineArgs};
use crate::domain::{AccountId, Region};
use crate::enrich::Registry;
use crate::enrich::aws::load_sdk_config;
use crate::enrich::cache::CachedRegistry;
use crate::enrich::ecr::{ApiPacing, EcrRegistry};
use crate::evaluate::ControlPolicy;
use crate::export::metrics::Metrics;
use crate::export::views;
use crate::parse::ParseContext;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::source::file::{self, IngestCounts};
use crate::source::reconcile::{Reconciler, SweepProgress};
use crate::source::sqs::SqsSettings;
use crate::store::Store;
use crate::store::views::ChainReport;

/// Process exit codes; part of the CLI contract.
pub mod exit {
    pub const OK: i32 = 0;
    /// Configuration, connection or I/O failure.
    pub const ERROR: i32 = 1;
    /// `ingest` finished but some messages failed for good; `verify` found a broken chain.
    pub const INCOMPLETE: i32 = 2;
}

pub async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Migrate(db) => {
            connect(&db)
                .await?
                .migrate()
                .await
                .context("applying migrations")?;
            info!("migrations applied");
            Ok(exit::OK)
        }
        Command::Worker(args) => {
            let sdk = load_sdk_config().await;
            let metrics = Arc::new(Metrics::new());
            let built = build_pipeline(&args.pipeline, &sdk, Arc::clone(&metrics)).await?;
            let pipeline = built.pipeline;
            let mut background = crate::worker::Background::new(args.recheck_poll);
            background.queue_metrics_interval = args.queue_metrics_interval;
            let pipeline = match &args.alert_bus {
                Some(bus) => {
                    let store = pipeline.store().clone().with_alerts(true);
                    background.alerts = Some(crate::export::alerts::AlertPublisher::new(
                        store.clone(),
                        aws_sdk_eventbridge::Client::new(&sdk),
                        bus.clone(),
                        Arc::clone(&metrics),
                    ));
                    pipeline.with_store(store)
                }
                None => pipeline,
            };
            let pipeline = Arc::new(pipeline);
            if !args.reconcile_interval.is_zero() {
                background.reconcile = Some((
                    Reconciler::new(Arc::clone(&pipeline), built.registry, built.targets),
                    args.reconcile_interval,
                ));
            }
            let listener = TcpListener::bind(args.http_addr)
                .await
                .with_context(|| format!("binding {}", args.http_addr))?;
            let mut settings = SqsSettings::new(args.queue_url);
            settings.max_in_flight_batches = args.max_in_flight_batches.max(1);
            settings.visibility_timeout = args.visibility_timeout;
            settings.retry_base = args.retry_base;
            settings.shutdown_grace = args.shutdown_grace;
            let shutdown = CancellationToken::new();
            tokio::spawn(watch_signals(shutdown.clone()));
            crate::worker::run(
                pipeline,
                aws_sdk_sqs::Client::new(&sdk),
                settings,
                background,
                listener,
                shutdown,
            )
            .await?;
            Ok(exit::OK)
        }
        Command::Ingest(args) => {
            let sdk = load_sdk_config().await;
            let pipeline = build_pipeline(&args.pipeline, &sdk, Arc::new(Metrics::new()))
                .await?
                .pipeline;
            let name = args.file.display().to_string();
            let reader: Box<dyn AsyncRead + Unpin + Send> = if name == "-" {
                Box::new(tokio::io::stdin())
            } else {
                Box::new(
                    tokio::fs::File::open(&args.file)
                        .await
                        .with_context(|| format!("opening {name}"))?,
                )
            };
            let counts = file::ingest(&pipeline, reader, &name, |_| {}).await?;
            print_counts(&counts);
            Ok(if counts.failed > 0 {
                exit::INCOMPLETE
            } else {
                exit::OK
            })
        }
        Command::Reconcile(args) => {
            let sdk = load_sdk_config().await;
            let built = build_pipeline(&args.pipeline, &sdk, Arc::new(Metrics::new())).await?;
            let reconciler =
                Reconciler::new(Arc::new(built.pipeline), built.registry, built.targets);
            let progress = ProgressBar::new();
            let report = reconciler.sweep(&progress).await;
            progress.finish();
            let report = report.context("reconcile sweep")?;
            println!(
                "reconciled {} repositories and {} images; {} change(s) recorded{}",
                report.repositories,
                report.images,
                report.total_changes(),
                if report.changes.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        report
                            .changes
                            .iter()
                            .map(|(kind, n)| format!("{kind} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
            Ok(exit::OK)
        }
        Command::Posture(args) => {
            let rows = connect(&args.database)
                .await?
                .posture(args.repository.as_deref())
                .await?;
            match args.format {
                OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?,
                OutputFormat::Table => emit(&views::posture_table(&rows))?,
            }
            Ok(exit::OK)
        }
        Command::Images(args) => {
            let rows = connect(&args.database)
                .await?
                .images(args.repository.as_deref())
                .await?;
            match args.format {
                OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?,
                OutputFormat::Table => emit(&views::images_table(&rows))?,
            }
            Ok(exit::OK)
        }
        Command::Verify(db) => match connect(&db).await?.verify_chain().await? {
            ChainReport::Valid { records, head_hash } => {
                println!("OK: {records} evidence records verified; head {head_hash}");
                Ok(exit::OK)
            }
            ChainReport::Broken(broken) => {
                println!("BROKEN: {broken}");
                Ok(exit::INCOMPLETE)
            }
            ChainReport::HeadMismatch {
                records,
                last_seq,
                head_seq,
            } => {
                println!(
                    "BROKEN: {records} records verified up to seq {last_seq}, but the chain head names seq {head_seq}: records were removed from the end"
                );
                Ok(exit::INCOMPLETE)
            }
        },
    }
}

fn print_counts(counts: &IngestCounts) {
    println!(
        "processed: {}  ignored: {}  duplicate: {}  rejected: {}  failed: {}",
        counts.processed, counts.ignored, counts.duplicate, counts.rejected, counts.failed
    );
}

async fn connect(db: &DatabaseArgs) -> anyhow::Result<Store> {
    Store::connect(db.database_url.expose(), db.db_max_connections)
        .await
        .context("connecting to the database (DATABASE_URL)")
}

/// Builds the pipeline from flags: database, AWS clients, account, policy.
///
/// # Errors
/// When the database is unreachable or no account can be determined.
pub async fn build_pipeline(
    args: &PipelineArgs,
    sdk: &SdkConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<BuiltPipeline> {
    let store = connect(&args.database).await?;
    let default_account = match &args.account_id {
        Some(account) => AccountId::parse(account).context("ECR_AUDIT_ACCOUNT_ID")?,
        None => caller_account(sdk).await?,
    };
    let default_region = match sdk.region() {
        Some(region) => Region::parse(region.as_ref()).context("AWS_REGION")?,
        None => bail!("no AWS region configured: set AWS_REGION"),
    };
    let mut account_roles = std::collections::HashMap::new();
    let mut accounts = vec![default_account.clone()];
    for (account, role) in &args.accounts {
        let account = AccountId::parse(account).context("ECR_AUDIT_ACCOUNTS")?;
        if !accounts.contains(&account) {
            accounts.push(account.clone());
        }
        account_roles.insert(account, role.clone());
    }
    let regions = if args.regions.is_empty() {
        vec![default_region.clone()]
    } else {
        args.regions
            .iter()
            .map(|r| Region::parse(r.trim()).context("ECR_AUDIT_REGIONS"))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let targets = accounts
        .iter()
        .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.clone())))
        .collect();
    let registry: Arc<dyn Registry> = Arc::new(EcrRegistry::with_options(
        sdk.clone(),
        Arc::clone(&metrics),
        account_roles,
        ApiPacing {
            calls_per_second: std::num::NonZeroU32::new(args.api_rate)
                .context("ECR_AUDIT_API_RATE must be at least 1")?,
        },
    ));
    let pipeline = Pipeline::new(
        CachedRegistry::new(Arc::clone(&registry), args.repository_cache_ttl),
        store,
        metrics,
        PipelineSettings {
            parse_context: ParseContext {
                default_account: Some(default_account),
                default_region: Some(default_region),
            },
            policy: ControlPolicy {
                kms_key_allow_list: args.kms_key_allow_list.clone(),
            },
            signing_grace: chrono::Duration::from_std(args.signing_grace)
                .context("ECR_AUDIT_SIGNING_GRACE is too long")?,
        },
    );
    Ok(BuiltPipeline {
        pipeline,
        registry,
        targets,
    })
}

/// A pipeline with what a reconcile sweep needs beside it.
pub struct BuiltPipeline {
    pub pipeline: Pipeline,
    /// The uncached registry reader the pipeline's cache wraps.
    pub registry: Arc<dyn Registry>,
    /// Every (account, region) the sweep covers.
    pub targets: Vec<(AccountId, Region)>,
}

/// Writes command output to stdout. A reader that stops early (`| head`) is not an error:
/// `println!` would panic on the broken pipe.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A terminal progress bar for a sweep; hidden when stderr is not a terminal.
struct ProgressBar(indicatif::ProgressBar);

impl ProgressBar {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} reconcile {pos}/{len} repositories [{elapsed_precise}] {wide_bar}",
        ) {
            bar.set_style(style);
        }
        Self(bar)
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl SweepProgress for ProgressBar {
    fn repositories_found(&self, count: u64) {
        self.0.inc_length(count);
    }
    fn repository_done(&self) {
        self.0.inc(1);
    }
}

async fn caller_account(sdk: &SdkConfig) -> anyhow::Result<AccountId> {
    let identity = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .context("STS GetCallerIdentity (set ECR_AUDIT_ACCOUNT_ID to skip it)")?;
    let account = identity.account().context("STS returned no account")?;
    AccountId::parse(account).context("STS returned an invalid account id")
}

/// First SIGTERM/SIGINT: stop receiving and drain. Second: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    wait_for_signal().await;
    info!("shutdown requested: no new messages are received; in-flight work is finishing");
    shutdown.cancel();
    wait_for_signal().await;
    warn!("second signal: exiting now; unfinished messages will be redelivered");
    std::process::exit(130);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
