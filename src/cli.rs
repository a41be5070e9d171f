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
use crate::enrich::ecr::EcrRegistry;
use crate::evaluate::ControlPolicy;
use crate::export::metrics::Metrics;
use crate::export::views;
use crate::parse::ParseContext;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::source::file::{self, IngestCounts};
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
            let pipeline = build_pipeline(&args.pipeline, &sdk, Arc::clone(&metrics)).await?;
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
            let pipeline = build_pipeline(&args.pipeline, &sdk, Arc::new(Metrics::new())).await?;
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
        Command::Posture(args) => {
            let rows = connect(&args.database)
                .await?
                .posture(args.repository.as_deref())
                .await?;
            match args.format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Table => print!("{}", views::posture_table(&rows)),
            }
            Ok(exit::OK)
        }
        Command::Images(args) => {
            let rows = connect(&args.database)
                .await?
                .images(args.repository.as_deref())
                .await?;
            match args.format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Table => print!("{}", views::images_table(&rows)),
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
) -> anyhow::Result<Pipeline> {
    let store = connect(&args.database).await?;
    let default_account = match &args.account_id {
        Some(account) => AccountId::parse(account).context("ECR_AUDIT_ACCOUNT_ID")?,
        None => caller_account(sdk).await?,
    };
    let default_region = match sdk.region() {
        Some(region) => Some(Region::parse(region.as_ref()).context("AWS_REGION")?),
        None => bail!("no AWS region configured: set AWS_REGION"),
    };
    let registry: Arc<dyn Registry> = Arc::new(EcrRegistry::new(sdk.clone(), Arc::clone(&metrics)));
    Ok(Pipeline::new(
        CachedRegistry::new(registry, args.repository_cache_ttl),
        store,
        metrics,
        PipelineSettings {
            parse_context: ParseContext {
                default_account: Some(default_account),
                default_region,
            },
            policy: ControlPolicy {
                kms_key_allow_list: args.kms_key_allow_list.clone(),
            },
            signing_grace: chrono::Duration::from_std(args.signing_grace)
                .context("ECR_AUDIT_SIGNING_GRACE is too long")?,
        },
    ))
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
