//! Command dispatch: turns parsed flags into running stages. `anyhow` lives here and in
//! `main` only; the stages below return typed errors.

use std::sync::Arc;

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::aws::load_sdk_config;
use crate::config::{
    Command, DatabaseArgs, EvidenceCommand, ExplainArgs, ImagesArgs, IngestArgs, OutputFormat,
    PipelineArgs, PostureArgs, ReconcileArgs, WorkerArgs,
};
use crate::domain::{AccountId, Region};
use crate::enrich::Registry;
use crate::enrich::ecr::{ApiPacing, EcrRegistry};
use crate::evaluate::ControlPolicy;
use crate::evaluate::public::RequiredTagKeys;
use crate::evidence::history::HistoryCoverage;
use crate::export::views;
use crate::parse::ParseContext;
use crate::pipeline::Pipeline;
use crate::source::file::{self, IngestCounts};
use crate::source::reconcile::{Reconciler, SweepProgress};
use crate::source::sqs::SqsSettings;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::trust::TrustSettings;

/// Process exit codes; part of the CLI contract.
pub mod exit {
    pub const OK: i32 = 0;
    /// Configuration, connection or I/O failure.
    pub const ERROR: i32 = 1;
    /// `ingest` finished but some messages failed for good; `verify` found a broken chain.
    pub(crate) const INCOMPLETE: i32 = 2;
}

pub async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Migrate(db) => migrate(&db).await,
        Command::Worker(args) => worker(args).await,
        Command::Ingest(args) => ingest(args).await,
        Command::Reconcile(args) => reconcile(args).await,
        Command::Posture(args) => posture(args).await,
        Command::Images(args) => images(args).await,
        Command::Explain(args) => explain(args).await,
        Command::Verify(args) => evidence_cli::verify(args).await,
        Command::Export(args) => evidence_cli::export(args).await,
        Command::Evidence(EvidenceCommand::Archive(args)) => evidence_cli::archive(args).await,
        Command::Report(args) => report(args).await,
    }
}

async fn migrate(db: &DatabaseArgs) -> anyhow::Result<i32> {
    connect(db)
        .await?
        .migrate()
        .await
        .context("applying migrations")?;
    info!("migrations applied");
    Ok(exit::OK)
}

/// The deploy policy, validated before anything starts (docs/ENFORCEMENT.md).
fn deploy_policy(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<crate::export::deploy_policy::DeployPolicy>>> {
    let Some(path) = path else { return Ok(None) };
    let policy = crate::export::deploy_policy::DeployPolicy::from_file(path)
        .with_context(|| format!("ECR_AUDIT_DEPLOY_POLICY {}", path.display()))?;
    info!(policy.version = %policy.version, "deploy policy loaded");
    Ok(Some(Arc::new(policy)))
}

/// The TLS listener of `ECR_AUDIT_ADMISSION_ADDR`, its certificate loaded and checked.
async fn admission_listener(
    args: &WorkerArgs,
) -> anyhow::Result<Option<(TcpListener, Arc<crate::export::tls::TlsFiles>)>> {
    let Some(addr) = args.admission_addr else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        bail!("ECR_AUDIT_ADMISSION_ADDR needs ECR_AUDIT_TLS_CERT and ECR_AUDIT_TLS_KEY");
    };
    let files = crate::export::tls::TlsFiles::load(cert.clone(), key.clone())
        .context("loading the admission listener's TLS certificate")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    Ok(Some((listener, Arc::new(files))))
}

async fn worker(args: WorkerArgs) -> anyhow::Result<i32> {
    // Before anything is touched: an API switched on without a usable token stops start-up.
    let api = args.api.token().map_err(anyhow::Error::msg)?;
    let deploy_policy = deploy_policy(args.deploy_policy.as_deref())?;
    let sdk = load_sdk_config().await;
    let metrics = Arc::new(Metrics::new());
    let built = build_pipeline(&args.pipeline, &sdk, Arc::clone(&metrics)).await?;
    let pipeline = built.pipeline;
    let mut background = crate::worker::Background::new(args.recheck_poll);
    background.reverify_interval = args.reverify_interval;
    background.queue_metrics_interval = args.queue_metrics_interval;
    background.http = args.http.limits();
    background.api = api;
    background.deploy_policy = deploy_policy;
    background.admission = admission_listener(&args).await?;
    let pipeline = match &args.alert_bus {
        Some(bus) => {
            let store = pipeline.store().clone().with_alerts(true);
            background.alerts = Some(crate::alerts::AlertPublisher::new(
                store.pool().clone(),
                aws_sdk_eventbridge::Client::new(&sdk),
                bus.clone(),
                Arc::clone(&metrics),
            ));
            pipeline.with_store(store)
        }
        None => pipeline,
    };
    let pipeline = Arc::new(pipeline);
    background.coverage = Some((
        crate::source::coverage::CoverageSweeper::new(
            Arc::clone(&built.registry),
            pipeline.store().clone(),
            built.targets.clone(),
        )
        .skipping_fresh(args.coverage_interval / 2),
        args.coverage_interval,
    ));
    if !args.reconcile_interval.is_zero() {
        background.reconcile = Some((
            Reconciler::new(Arc::clone(&pipeline), built.registry, built.targets),
            args.reconcile_interval,
        ));
    }
    let listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    crate::worker::run(
        pipeline,
        aws_sdk_sqs::Client::new(&sdk),
        sqs_settings(&args),
        background,
        listener,
        shutdown,
    )
    .await?;
    Ok(exit::OK)
}

fn sqs_settings(args: &WorkerArgs) -> SqsSettings {
    let mut settings = SqsSettings::new(args.queue_url.clone());
    settings.max_in_flight_batches = args.max_in_flight_batches.max(1);
    settings.visibility_timeout = args.visibility_timeout;
    settings.retry_base = args.retry_base;
    settings.shutdown_grace = args.shutdown_grace;
    settings
}

async fn ingest(args: IngestArgs) -> anyhow::Result<i32> {
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

async fn reconcile(args: ReconcileArgs) -> anyhow::Result<i32> {
    let sdk = load_sdk_config().await;
    let built = build_pipeline(&args.pipeline, &sdk, Arc::new(Metrics::new())).await?;
    let reconciler = Reconciler::new(Arc::new(built.pipeline), built.registry, built.targets);
    let progress = ProgressBar::new();
    let report = reconciler.sweep(&progress).await;
    progress.finish();
    let report = report.context("reconcile sweep")?;
    let changes = if report.changes.is_empty() {
        String::new()
    } else {
        let listed: Vec<String> = report
            .changes
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        format!(": {}", listed.join(", "))
    };
    println!(
        "reconciled {} repositories and {} images; {} change(s) recorded{changes}",
        report.repositories,
        report.images,
        report.total_changes(),
    );
    for skipped in &report.skipped {
        eprintln!(
            "skipped {} ({}): {}",
            skipped.repository, skipped.reason, skipped.detail
        );
    }
    Ok(exit::OK)
}

async fn posture(args: PostureArgs) -> anyhow::Result<i32> {
    let store = connect(&args.database).await?;
    let rows = match args.at {
        Some(at) => {
            let (state, coverage) = crate::evidence::history::as_of(store.pool(), at).await?;
            warn_history_coverage(at, &coverage);
            state.posture(args.repository.as_deref())
        }
        None => store.posture(args.repository.as_deref()).await?,
    };
    match args.format {
        OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?,
        OutputFormat::Table => emit(&views::posture_table(&rows))?,
    }
    Ok(exit::OK)
}

async fn images(args: ImagesArgs) -> anyhow::Result<i32> {
    let store = connect(&args.database).await?;
    let rows = match args.at {
        Some(at) => {
            let (state, coverage) = crate::evidence::history::as_of(store.pool(), at).await?;
            warn_history_coverage(at, &coverage);
            state.images(args.repository.as_deref())
        }
        None => store.images(args.repository.as_deref()).await?,
    };
    let filter = crate::readmodel::ImageFilter {
        in_use: args.in_use,
        signature: args.signature,
        scan: args.scan,
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|row| filter.keeps(row))
        .filter(|row| args.digest.as_deref().is_none_or(|d| row.digest == d))
        .collect();
    match args.format {
        OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?,
        OutputFormat::Table => emit(&views::images_table(&rows))?,
    }
    Ok(exit::OK)
}

async fn explain(args: ExplainArgs) -> anyhow::Result<i32> {
    let store = connect(&args.database).await?;
    let (repository, digest) = args.target;
    let query = crate::evidence::timeline::DigestQuery {
        repository,
        digest,
        account: args.account,
        region: args.region,
    };
    let Some(mut timeline) =
        crate::evidence::timeline::digest_timeline(store.pool(), &query, args.limit).await?
    else {
        eprintln!(
            "no evidence names {}@{}{}: the ledger never saw this digest (check the repository, the digest, --account and --region)",
            query.repository,
            query.digest,
            match (&query.account, &query.region) {
                (None, None) => String::new(),
                (account, region) => format!(
                    " in account {} region {}",
                    account.as_deref().unwrap_or("any"),
                    region.as_deref().unwrap_or("any")
                ),
            }
        );
        return Ok(exit::ERROR);
    };
    let alerts = crate::alerts::outbox::sent_for(store.pool(), &timeline.seqs()).await?;
    timeline.add_alerts(&alerts);
    match args.format {
        OutputFormat::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&timeline.entries)?
        ))?,
        OutputFormat::Table => emit(&views::timeline_table(&timeline.entries))?,
    }
    if timeline.truncated {
        eprintln!(
            "note: the history was cut after {} evidence records (--limit); later records are not shown",
            args.limit
        );
    }
    Ok(exit::OK)
}

async fn report(args: crate::config::ReportArgs) -> anyhow::Result<i32> {
    use crate::config::ReportFormat;
    use crate::evidence::period::{PeriodQuery, ReportScope, period_report};
    if args.since >= args.until {
        bail!("--since must be before --until");
    }
    if args.format == ReportFormat::Pdf && args.output.is_none() {
        bail!("--format pdf needs --output FILE");
    }
    let (scope, scope_sha256) = match &args.scope {
        Some(path) => read_scope(path)?,
        None => (ReportScope::default(), None),
    };
    let store = connect(&args.database).await?;
    let query = PeriodQuery {
        since: args.since,
        until: args.until,
        scope,
        scope_sha256,
    };
    let report = period_report(store.pool(), query).await?;
    let html = || crate::export::report::render_html(&report);
    match (args.format, &args.output) {
        (ReportFormat::Pdf, Some(path)) => {
            write_atomically(path, |partial| {
                crate::export::report::print_pdf(&args.chromium, &html(), partial)
                    .map_err(anyhow::Error::from)
            })?;
        }
        (format, output) => {
            let text = match format {
                ReportFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
                _ => html(),
            };
            match output {
                Some(path) => write_atomically(path, |partial| {
                    std::fs::write(partial, &text).map_err(anyhow::Error::from)
                })?,
                None => emit(&text)?,
            }
        }
    }
    if let Some(path) = &args.output {
        eprintln!(
            "wrote {} ({} transitions, {} images pushed; evidence head seq {} hash {})",
            path.display(),
            report.transitions.len(),
            report.images.pushed,
            report.evidence_head.seq,
            report.evidence_head.hash
        );
    }
    Ok(exit::OK)
}

/// The scope file (docs/REPORT.md) and its SHA-256, which the report names.
fn read_scope(
    path: &std::path::Path,
) -> anyhow::Result<(crate::evidence::period::ReportScope, Option<String>)> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let scope = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a scope file (docs/REPORT.md)", path.display()))?;
    Ok((scope, Some(hex::encode(sha2::Sha256::digest(&bytes)))))
}

/// Writes through `write` to a file beside `path`, renamed into place only on success.
fn write_atomically(
    path: &std::path::Path,
    write: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut name = path
        .file_name()
        .context("--output names no file")?
        .to_owned();
    name.push(".partial");
    let partial = path.with_file_name(name);
    if let Err(err) = write(&partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(err);
    }
    std::fs::rename(&partial, path).with_context(|| format!("renaming into {}", path.display()))
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
pub(crate) async fn build_pipeline(
    args: &PipelineArgs,
    sdk: &SdkConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<BuiltPipeline> {
    // Loaded first, so a wrong policy or parameter stops start-up before anything is touched.
    let trust = load_trust(args)?;
    let required_tag_keys =
        RequiredTagKeys::new(&args.required_tag_keys).context("ECR_AUDIT_REQUIRED_TAG_KEYS")?;
    let restored_window = chrono::Duration::from_std(args.restored_window)
        .context("ECR_AUDIT_RESTORED_WINDOW is too long")?;
    let store = connect(&args.database)
        .await?
        .with_restored_window(restored_window);
    let default_account = match &args.account_id {
        Some(account) => AccountId::parse(account).context("ECR_AUDIT_ACCOUNT_ID")?,
        None => caller_account(sdk).await?,
    };
    let default_region = match sdk.region() {
        Some(region) => Region::parse(region.as_ref()).context("AWS_REGION")?,
        None => bail!("no AWS region configured: set AWS_REGION"),
    };
    let (targets, account_roles) = sweep_targets(args, &default_account, &default_region)?;
    let registry: Arc<dyn Registry> = Arc::new(
        EcrRegistry::with_options(
            sdk.clone(),
            Arc::clone(&metrics),
            account_roles,
            ApiPacing {
                calls_per_second: std::num::NonZeroU32::new(args.api_rate)
                    .context("ECR_AUDIT_API_RATE must be at least 1")?,
            },
        )
        .with_max_referrers(args.max_referrers_per_digest),
    );
    let signing_grace = chrono::Duration::from_std(args.signing_grace)
        .context("ECR_AUDIT_SIGNING_GRACE is too long")?;
    let pipeline = Pipeline::builder(Arc::clone(&registry), store)
        .metrics(metrics)
        .cache_ttl(args.repository_cache_ttl)
        .parse_context(ParseContext {
            default_account: Some(default_account),
            default_region: Some(default_region),
        })
        .policy(ControlPolicy {
            kms_key_allow_list: args.kms_key_allow_list.clone(),
            required_tag_keys,
        })
        .signing_grace(signing_grace)
        .trust(trust)
        .build();
    Ok(BuiltPipeline {
        pipeline,
        registry,
        targets,
    })
}

/// The role each configured account is read through.
type AccountRoles = std::collections::HashMap<AccountId, String>;

/// The accounts and regions to sweep (the default ones first), and the role of each account
/// that is read through one.
fn sweep_targets(
    args: &PipelineArgs,
    default_account: &AccountId,
    default_region: &Region,
) -> anyhow::Result<(Vec<(AccountId, Region)>, AccountRoles)> {
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
    if regions.iter().any(Region::is_ecr_public) {
        anyhow::bail!("ECR_AUDIT_REGIONS: ecr-public is not a region; ECR Public is always swept");
    }
    // Each account's ECR Public registry too (ECR.4), once, under its pseudo-region.
    let targets = accounts
        .iter()
        .flat_map(|a| {
            regions
                .iter()
                .cloned()
                .chain(std::iter::once(Region::ecr_public()))
                .map(move |r| (a.clone(), r))
        })
        .collect();
    Ok((targets, account_roles))
}

/// Loads the trust configuration before anything else, so a wrong policy, store or key stops
/// start-up with the setting's name instead of surfacing later as verdicts.
fn load_trust(args: &PipelineArgs) -> anyhow::Result<Arc<TrustSettings>> {
    let trust = args.trust.load().context("trust configuration")?;
    match &trust.policy {
        Some(policy) => tracing::info!(
            policy_version = %trust.version(),
            policies = policy.document.policies.len(),
            cosign_keys = trust.cosign_keys.len(),
            "trust policy loaded"
        ),
        None if trust.aws_signer_default => tracing::info!(
            cosign_keys = trust.cosign_keys.len(),
            "no trust policy configured (ECR_AUDIT_TRUST_POLICY): AWS Signer's default policy \
             (pinned root, the registry's managed-signing profiles) applies"
        ),
        None => tracing::warn!(
            policy_version = %trust.version(),
            cosign_keys = trust.cosign_keys.len(),
            "no trust policy configured (ECR_AUDIT_TRUST_POLICY, ECR_AUDIT_DEFAULT_TRUST_POLICY=none): Notary signatures cannot be trusted"
        ),
    }
    Ok(Arc::new(trust))
}

/// A pipeline with what a reconcile sweep needs beside it.
pub(crate) struct BuiltPipeline {
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

/// Says on stderr when an `--at` answer cannot be complete from the stored chain alone.
fn warn_history_coverage(at: chrono::DateTime<chrono::Utc>, coverage: &HistoryCoverage) {
    match coverage.oldest_recorded_at {
        Some(oldest) if at < oldest => eprintln!(
            "note: {at} is before the oldest stored evidence ({oldest}); the answer is empty or partial: replay the archives for earlier times"
        ),
        _ if coverage.archived_before => eprintln!(
            "note: older evidence was archived; repositories and images last recorded before the checkpoint are missing from this answer"
        ),
        _ => {}
    }
}

// Evidence: export, offline verification, retention.
mod evidence_cli {
    use std::io::{IsTerminal, Write};
    use std::path::{Path, PathBuf};

    use anyhow::{Context, bail};
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use sha2::{Digest as _, Sha256};

    use super::{connect, exit};
    use crate::config::{ArchiveArgs, DatabaseArgs, ExportArgs, VerifyArgs};
    use crate::evidence::ChainReport;
    use crate::evidence::chain::EvidenceFilter;
    use crate::evidence::export::verify::{FileReport, Start, verify_file};
    use crate::evidence::export::{ChainPoint, Manifest, Scope, write_export};
    use crate::evidence::retention::{self, ArchivablePrefix, Checkpoint};
    use crate::store::Store;

    /// A progress bar on stderr when it is a terminal; hidden otherwise (logs, CI, pipes).
    fn progress_bar() -> ProgressBar {
        if !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {human_pos}/{human_len} records [{bar:30}] {per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }

    /// A file written beside its destination and renamed into place only when complete, so
    /// an interrupted export never leaves a plausible file behind.
    struct AtomicFile {
        partial: PathBuf,
        target: PathBuf,
        file: std::io::BufWriter<std::fs::File>,
    }

    impl AtomicFile {
        fn create(target: &Path) -> anyhow::Result<Self> {
            let mut name = target
                .file_name()
                .context("--output names no file")?
                .to_owned();
            name.push(".partial");
            let partial = target.with_file_name(name);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            Ok(Self {
                partial,
                target: target.to_owned(),
                file: std::io::BufWriter::with_capacity(1 << 20, file),
            })
        }

        fn commit(self) -> anyhow::Result<()> {
            let file = self.file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&self.partial, &self.target)
                .with_context(|| format!("renaming into {}", self.target.display()))?;
            Ok(())
        }
    }

    async fn stream(
        store: &Store,
        filter: &EvidenceFilter,
        format: crate::evidence::export::ExportFormat,
        out: impl Write,
    ) -> anyhow::Result<Manifest> {
        let bar = progress_bar();
        let snapshot = crate::evidence::export::snapshot::evidence_snapshot(
            store.pool(),
            filter,
            !bar.is_hidden(),
        )
        .await
        .context("opening the evidence snapshot")?;
        if let Some(total) = snapshot.matching {
            bar.set_length(total);
        }
        let manifest = write_export(snapshot, filter, format, out, || bar.inc(1))
            .await
            .context("exporting evidence")?;
        bar.finish_and_clear();
        Ok(manifest)
    }

    pub(super) async fn export(args: ExportArgs) -> anyhow::Result<i32> {
        let store = connect(&args.database).await?;
        let filter = EvidenceFilter {
            since: args.since,
            until: args.until,
            repository: args.repository,
            control: args.control,
            through_seq: None,
            digest: args.digest,
        };
        let manifest = match &args.output {
            Some(path) => {
                let mut file = AtomicFile::create(path)?;
                let manifest = stream(&store, &filter, args.format, &mut file.file).await?;
                file.commit()?;
                manifest
            }
            None => {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
                let manifest = stream(&store, &filter, args.format, &mut out).await?;
                out.flush()?;
                manifest
            }
        };
        eprintln!(
            "exported {} evidence records ({}); last hash {}",
            manifest.count,
            scope_words(manifest.scope),
            manifest.last.as_ref().map_or("-", |l| l.hash.as_str())
        );
        Ok(exit::OK)
    }

    fn scope_words(scope: Scope) -> &'static str {
        match scope {
            Scope::Full => "full export",
            Scope::Range => "archive of a chain prefix",
            Scope::Filtered => "filtered export",
        }
    }

    pub(super) async fn verify(args: VerifyArgs) -> anyhow::Result<i32> {
        if args.files.is_empty() {
            let Some(database_url) = args.database_url else {
                bail!("give export files to verify, or set DATABASE_URL to verify the database");
            };
            let db = DatabaseArgs {
                database_url,
                db_max_connections: args.db_max_connections,
            };
            return verify_database(&connect(&db).await?).await;
        }
        let mut previous: Option<ChainPoint> = None;
        for path in &args.files {
            let name = path.display();
            match verify_file(path, previous.as_ref())? {
                Ok(report) => {
                    println!("OK: {name}: {}", describe(&report));
                    previous = match report.manifest.scope {
                        Scope::Filtered => None,
                        _ => report.manifest.last.clone().or(previous),
                    };
                }
                Err(bad) => {
                    println!("BROKEN: {name}: {bad}");
                    return Ok(exit::INCOMPLETE);
                }
            }
        }
        Ok(exit::OK)
    }

    /// What a verified file proves, in words an auditor can act on.
    fn describe(report: &FileReport) -> String {
        let m = &report.manifest;
        let range = match (&m.first, &m.last) {
            (Some(first), Some(last)) => format!("seq {}..{}", first.seq, last.seq),
            _ => "no records".to_owned(),
        };
        let start = match &report.start {
            Start::Genesis => "starting at the genesis".to_owned(),
            Start::Checkpoint { checkpoint_seq } => {
                format!(
                    "continuing from archived records, as the checkpoint at seq {checkpoint_seq} in the file attests"
                )
            }
            Start::PreviousFile => "continuing the previous file".to_owned(),
            Start::Continues { seq, hash } => format!(
                "continuing from seq {seq} hash {hash} (verify it together with the archive that ends there)"
            ),
            Start::Subset | Start::Empty => String::new(),
        };
        match m.scope {
            Scope::Full => format!(
                "{} records, {range}, {start}, ending at the chain head {} as of {}; every hash and link verified",
                m.count,
                m.chain_head.hash,
                crate::evidence::export::canonical_time(m.exported_at)
            ),
            Scope::Range => format!(
                "{} records, {range}, archive of a chain prefix {start}; every hash and link verified, last hash {}",
                m.count,
                m.last.as_ref().map_or("-", |l| l.hash.as_str())
            ),
            Scope::Filtered => format!(
                "{} records, {range}, filtered by {}; every record's hash verified, links verified between consecutive records, {} gaps where records outside the filter were skipped; that no matching record is missing cannot be proven from a filtered export (compare with a full export or the database)",
                m.count,
                serde_json::to_string(&m.filters).unwrap_or_default(),
                report.gaps
            ),
        }
    }

    async fn verify_database(store: &Store) -> anyhow::Result<i32> {
        Ok(
            match crate::evidence::verify_database(store.pool()).await? {
                ChainReport::Valid {
                    records,
                    head_hash,
                    continues_from,
                } => {
                    match continues_from {
                        Some(seq) => println!(
                            "OK: {records} evidence records verified; head {head_hash}; the chain continues from seq {seq}, archived behind a checkpoint"
                        ),
                        None => {
                            println!("OK: {records} evidence records verified; head {head_hash}")
                        }
                    }
                    exit::OK
                }
                ChainReport::Broken(broken) => {
                    println!("BROKEN: {broken}");
                    exit::INCOMPLETE
                }
                ChainReport::HeadMismatch {
                    records,
                    last_seq,
                    head_seq,
                } => {
                    println!(
                        "BROKEN: {records} records verified up to seq {last_seq}, but the chain head names seq {head_seq}: records were removed from the end"
                    );
                    exit::INCOMPLETE
                }
            },
        )
    }

    pub(super) async fn archive(args: ArchiveArgs) -> anyhow::Result<i32> {
        let store = connect(&args.database).await?;
        let Some(prefix) = retention::archivable_prefix(store.pool(), args.before).await? else {
            println!(
                "nothing to archive: no stored evidence was recorded before {}",
                args.before
            );
            return Ok(exit::OK);
        };
        let filter = EvidenceFilter {
            through_seq: Some(prefix.last_seq),
            ..EvidenceFilter::default()
        };
        let mut file = AtomicFile::create(&args.output)?;
        let manifest = stream(&store, &filter, args.format, &mut file.file).await?;
        file.commit()?;
        // Nothing is dropped unless the archive on disk verifies and covers exactly the prefix.
        let report = match verify_file(&args.output, None)? {
            Ok(report) => report,
            Err(bad) => {
                bail!("the archive just written does not verify ({bad}); nothing was dropped")
            }
        };
        let last = archive_covers_exactly(&report.manifest, &manifest, &prefix)?;
        let sha256 = file_sha256(&args.output)?;
        let checkpoint = Checkpoint {
            prefix: prefix.clone(),
            last_hash: last.hash.clone(),
            before: args.before,
            archive_name: args
                .output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            archive_format: args.format.as_str().to_owned(),
            archive_sha256: sha256.clone(),
        };
        let (checkpoint_seq, dropped) = retention::drop_archived(store.pool(), &checkpoint).await?;
        println!(
            "archived {} records (seq {}..{}) to {} (sha256 {sha256}); checkpoint at seq {checkpoint_seq}; dropped {dropped} records from the database",
            manifest.count,
            prefix.first_seq,
            prefix.last_seq,
            args.output.display()
        );
        Ok(exit::OK)
    }

    /// The archive's manifest names exactly the prefix to drop (and is the one just written);
    /// its last record is what the checkpoint continues from.
    fn archive_covers_exactly(
        written: &Manifest,
        streamed: &Manifest,
        prefix: &ArchivablePrefix,
    ) -> anyhow::Result<ChainPoint> {
        let (Some(first), Some(last)) = (&written.first, &written.last) else {
            bail!("the archive is empty; nothing was dropped");
        };
        if first.seq != prefix.first_seq || last.seq != prefix.last_seq || written != streamed {
            bail!(
                "the archive covers seq {}..{} but seq {}..{} was to be archived; nothing was dropped",
                first.seq,
                last.seq,
                prefix.first_seq,
                prefix.last_seq
            );
        }
        Ok(last.clone())
    }

    fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
        let mut hasher = Sha256::new();
        let mut reader = std::fs::File::open(path)?;
        std::io::copy(&mut reader, &mut hasher)?;
        Ok(hex::encode(hasher.finalize()))
    }
}
