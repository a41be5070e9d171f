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
    Command, DatabaseArgs, EvidenceCommand, ExplainArgs, ImagesArgs, IngestArgs, MigrateArgs,
    OutputFormat, PipelineArgs, PostureArgs, ReconcileArgs, Secret, WorkerArgs,
};
use crate::domain::{AccountId, Region};
use crate::enrich::Registry;
use crate::enrich::accounts::{AccountAccess, RolePattern, SweepTargets};
use crate::enrich::ecr::{ApiPacing, EcrRegistry};
use crate::enrich::organization::OrganizationReader;
use crate::evaluate::ControlPolicy;
use crate::evaluate::public::RequiredTagKeys;
use crate::evidence::history::HistoryCoverage;
use crate::export::views;
use crate::parse::ParseContext;
use crate::pipeline::Pipeline;
use crate::source::file::{self, IngestCounts};
use crate::source::reconcile::{Discovery, Reconciler, SweepProgress};
use crate::source::sqs::SqsSettings;
use crate::store::Store;
use crate::store::roles::WorkerRole;
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
        Command::Migrate(args) => migrate(&args).await,
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
        Command::Exception(command) => exception_cli::run(command).await,
        Command::Evidence(command) => head_cli::run(command).await,
    }
}

/// `ecr-audit exception add | list | revoke`.
mod exception_cli {
    use anyhow::bail;
    use chrono::Utc;

    use super::{connect, emit, exit};
    use crate::config::{
        ExceptionAddArgs, ExceptionCommand, ExceptionListArgs, ExceptionRevokeArgs, OutputFormat,
    };
    use crate::evaluate::exception::ExceptionRequest;
    use crate::export::views;

    pub(super) async fn run(command: ExceptionCommand) -> anyhow::Result<i32> {
        match command {
            ExceptionCommand::Add(args) => add(args).await,
            ExceptionCommand::List(args) => list(args).await,
            ExceptionCommand::Revoke(args) => revoke(args).await,
        }
    }

    async fn add(args: ExceptionAddArgs) -> anyhow::Result<i32> {
        let request = ExceptionRequest {
            repository: args.repository,
            control: args.control,
            reason: args.reason,
            approver: args.approver,
            expires: args.expires,
            account: args.account,
            region: args.region,
        };
        // Validated before connecting: a wrong flag is named without a database.
        let valid = match request.validate(Utc::now()) {
            Ok(valid) => valid,
            Err(err) => bail!("exception refused: {err}"),
        };
        let store = connect(&args.database).await?;
        let (id, applied) = store.add_exception(&valid).await?;
        println!(
            "{id}: {} excepted for {} until {} ({applied} failing repositories now EXCEPTED)",
            valid.control,
            valid.pattern.as_str(),
            valid
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        Ok(exit::OK)
    }

    async fn list(args: ExceptionListArgs) -> anyhow::Result<i32> {
        let store = connect(&args.database).await?;
        let rows = store.exceptions(args.all).await?;
        match args.format {
            OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?,
            OutputFormat::Table => emit(&views::exceptions_table(&rows))?,
        }
        Ok(exit::OK)
    }

    async fn revoke(args: ExceptionRevokeArgs) -> anyhow::Result<i32> {
        if args.reason.trim().is_empty() {
            bail!("exception not revoked: the reason is empty: say why it ends now");
        }
        let store = connect(&args.database).await?;
        if !store
            .revoke_exception(&args.id, args.reason.trim(), args.by.as_deref())
            .await?
        {
            bail!(
                "exception not revoked: no exception {:?} is in force (see `ecr-audit exception list --all`)",
                args.id
            );
        }
        println!(
            "{}: revoked; its findings re-open when the worker next settles exceptions",
            args.id
        );
        Ok(exit::OK)
    }
}

async fn migrate(args: &MigrateArgs) -> anyhow::Result<i32> {
    let (owner_url, worker_url) = match (&args.migrate_database_url, &args.database_url) {
        (Some(owner), worker) => (owner, worker.as_ref()),
        (None, Some(single)) => (single, None),
        (None, None) => {
            bail!("set ECR_AUDIT_MIGRATE_DATABASE_URL (the owner role) or DATABASE_URL")
        }
    };
    let store = Store::connect(owner_url.expose(), 2)
        .await
        .context("connecting to the database as the owner (ECR_AUDIT_MIGRATE_DATABASE_URL)")?;
    let role = store.migrate().await.context("applying migrations")?;
    if role == WorkerRole::Unavailable {
        warn!(
            "the worker role ecr_audit_worker does not exist and this role may not create it: a single-role setup (docs/DEPLOY.md says what it gives up)"
        );
    }
    if let Some(worker) = worker_url {
        admit_worker(&store, owner_url, worker).await?;
    }
    info!("migrations applied");
    Ok(exit::OK)
}

/// Makes the user of the worker's URL a member of the worker role, unless it is the owner.
async fn admit_worker(store: &Store, owner: &Secret, worker: &Secret) -> anyhow::Result<()> {
    let user = |url: &Secret| {
        url.expose()
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map(|options| options.get_username().to_owned())
            .context("reading the user of a database URL")
    };
    let login = user(worker)?;
    if login == user(owner)? {
        return Ok(());
    }
    if !store
        .admit_worker_login(&login)
        .await
        .context("granting ecr_audit_worker to the worker's user")?
    {
        warn!(
            login = %login,
            "the worker's user does not exist yet; create it (docs/DEPLOY.md) and run migrate again"
        );
    }
    Ok(())
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
    background.heads = Some(args.heads.settings(&sdk, args.alert_bus.clone()));
    background.api = api;
    background.deploy_policy = deploy_policy;
    background.verdict_max_staleness = args.verdict_max_staleness;
    background.admission = admission_listener(&args).await?;
    background.failing_grace = args.failing_grace;
    let pipeline = Arc::new(with_alert_bus(
        pipeline,
        args.alert_bus.as_ref(),
        &sdk,
        &metrics,
        &mut background,
    ));
    background.exceptions = Some(exception_watcher(&args, &pipeline, &metrics));
    background.coverage = Some(coverage_sweeper(
        (&built.registry, &built.access),
        &pipeline,
        &args,
    ));
    if !args.reconcile_interval.is_zero() {
        background.reconcile = Some((
            BuiltPipeline::reconciler(
                Arc::clone(&pipeline),
                built.registry,
                built.access,
                built.organization,
            ),
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

/// The coverage sweep over every audited registry, every `ECR_AUDIT_COVERAGE_INTERVAL`.
fn coverage_sweeper(
    (registry, access): (&Arc<dyn Registry>, &Arc<AccountAccess>),
    pipeline: &Arc<Pipeline>,
    args: &WorkerArgs,
) -> (
    crate::source::coverage::CoverageSweeper,
    std::time::Duration,
) {
    (
        crate::source::coverage::CoverageSweeper::new(
            Arc::clone(registry),
            pipeline.store().clone(),
            SweepTargets::Shared(Arc::clone(access)),
        )
        .skipping_fresh(args.coverage_interval / 2),
        args.coverage_interval,
    )
}

/// With an alert bus, the store queues alerts and the background publishes them.
fn with_alert_bus(
    pipeline: Pipeline,
    bus: Option<&String>,
    sdk: &aws_config::SdkConfig,
    metrics: &Arc<Metrics>,
    background: &mut crate::worker::Background,
) -> Pipeline {
    let Some(bus) = bus else {
        return pipeline;
    };
    let store = pipeline.store().clone().with_alerts(true);
    background.alerts = Some(crate::alerts::AlertPublisher::new(
        store.pool().clone(),
        aws_sdk_eventbridge::Client::new(sdk),
        bus.clone(),
        Arc::clone(metrics),
    ));
    pipeline.with_store(store)
}

/// The exceptions task, on the pipeline's store (so re-opened findings alert when it does).
fn exception_watcher(
    args: &WorkerArgs,
    pipeline: &Arc<Pipeline>,
    metrics: &Arc<Metrics>,
) -> (
    crate::source::exceptions::ExceptionWatcher,
    std::time::Duration,
) {
    (
        crate::source::exceptions::ExceptionWatcher::new(
            pipeline.store().clone(),
            Arc::clone(metrics),
            args.exceptions_file.clone(),
        ),
        args.exception_interval,
    )
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
    let reconciler = BuiltPipeline::reconciler(
        Arc::new(built.pipeline),
        built.registry,
        built.access,
        built.organization,
    );
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
    let access = Arc::new(account_access(args, &default_account, &default_region)?);
    let organization = organization_reader(args, sdk, &metrics).await;
    let registry: Arc<dyn Registry> = Arc::new(
        EcrRegistry::with_options(
            sdk.clone(),
            Arc::clone(&metrics),
            std::collections::HashMap::new(),
            ApiPacing {
                calls_per_second: std::num::NonZeroU32::new(args.api_rate)
                    .context("ECR_AUDIT_API_RATE must be at least 1")?,
            },
        )
        .with_access(Arc::clone(&access))
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
        access,
        organization,
    })
}

/// The audited accounts and regions and the role each account is read through: the worker's
/// own account first, then `ECR_AUDIT_ACCOUNTS`, then (at each sweep) the accounts discovered.
fn account_access(
    args: &PipelineArgs,
    default_account: &AccountId,
    default_region: &Region,
) -> anyhow::Result<AccountAccess> {
    let mut explicit = Vec::new();
    for (account, role) in &args.accounts {
        let account = AccountId::parse(account).context("ECR_AUDIT_ACCOUNTS")?;
        explicit.push((account, role.clone()));
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
    let org = &args.organization;
    let pattern = org
        .role_name_pattern
        .as_deref()
        .map(RolePattern::parse)
        .transpose()
        .context("ECR_AUDIT_ROLE_NAME_PATTERN")?;
    if org.discovery() && pattern.is_none() {
        anyhow::bail!(
            "ECR_AUDIT_ORGANIZATION needs ECR_AUDIT_ROLE_NAME_PATTERN \
             (e.g. arn:aws:iam::{{account}}:role/ecr-audit-reader)"
        );
    }
    Ok(
        AccountAccess::new(default_account.clone(), explicit, regions)
            .with_pattern(pattern)
            .with_external_id(org.external_id.as_ref().map(|id| id.expose().to_owned())),
    )
}

/// The Organizations reader when discovery is on.
async fn organization_reader(
    args: &PipelineArgs,
    sdk: &SdkConfig,
    metrics: &Arc<Metrics>,
) -> Option<OrganizationReader> {
    let org = &args.organization;
    if !org.discovery() {
        return None;
    }
    let external_id = org.external_id.as_ref().map(|id| id.expose().to_owned());
    Some(
        OrganizationReader::new(
            sdk,
            org.organization_role.as_deref(),
            external_id.as_deref(),
            org.organization_units.clone(),
            Arc::clone(metrics),
        )
        .await,
    )
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
    /// The audited accounts (and regions), shared with the registry reader.
    pub access: Arc<AccountAccess>,
    /// Reads the organization's accounts when discovery is on.
    pub organization: Option<OrganizationReader>,
}

impl BuiltPipeline {
    /// The reconcile sweep over the audited accounts, discovering them first when configured.
    fn reconciler(
        pipeline: Arc<Pipeline>,
        registry: Arc<dyn Registry>,
        access: Arc<AccountAccess>,
        organization: Option<OrganizationReader>,
    ) -> Reconciler {
        let reconciler = Reconciler::new(
            pipeline,
            registry,
            SweepTargets::Shared(Arc::clone(&access)),
        );
        match organization {
            Some(reader) => reconciler.with_discovery(Discovery { reader, access }),
            None => reconciler,
        }
    }
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
    use crate::evidence::export::verify::{
        FileReport, Start, TreeCarry, verify_file, verify_file_since,
    };
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
            let Some(database_url) = args.database_url.clone() else {
                bail!("give export files to verify, or set DATABASE_URL to verify the database");
            };
            let db = DatabaseArgs {
                database_url,
                db_max_connections: args.db_max_connections,
            };
            let store = connect(&db).await?;
            let code = verify_database(&store).await?;
            if code != exit::OK {
                return Ok(code);
            }
            return super::head_cli::verify_tree(&store, &args).await;
        }
        if let Some(code) = super::head_cli::verify_proof_files(&args)? {
            return Ok(code);
        }
        let (point, kept) = super::head_cli::offline_keys(&args)?;
        let mut previous: Option<ChainPoint> = None;
        let mut carry = TreeCarry::default();
        for path in &args.files {
            let name = path.display();
            match verify_file_since(path, previous.as_ref(), kept.clone(), carry)? {
                Ok(report) => {
                    let tree = match super::head_cli::describe_tree(&report, point.as_deref()) {
                        Ok(words) => words,
                        Err(problem) => {
                            println!("BROKEN: {name}: {problem}");
                            return Ok(exit::INCOMPLETE);
                        }
                    };
                    println!("OK: {name}: {}; {tree}", describe(&report));
                    carry = report.carry;
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
        // Refused before the archive file is written; the database refuses it again.
        retention::check_cut_off(store.pool(), args.before).await?;
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

/// Tree heads and proofs: `evidence heads|sign-head|public-key|prove|consistency`, the tree part
/// of `verify` on the database, and proof files given to `verify`.
mod head_cli {
    use std::path::Path;

    use anyhow::{Context, bail};

    use super::{connect, exit};
    use crate::aws::load_sdk_config;
    use crate::config::{EvidenceCommand, VerifyArgs};
    use crate::evidence::heads::{self, KmsSigner, SignedHead};
    use crate::evidence::proof::{self, ConsistencyProof, Proven, TreeReport};
    use crate::store::Store;

    pub(super) async fn run(command: EvidenceCommand) -> anyhow::Result<i32> {
        match command {
            EvidenceCommand::Archive(_) => bail!("archive is dispatched elsewhere"),
            EvidenceCommand::Heads(db) => {
                let store = connect(&db).await?;
                for head in heads::all(store.pool()).await? {
                    println!("{}", serde_json::to_string(&head)?);
                }
                Ok(exit::OK)
            }
            EvidenceCommand::SignHead(args) => {
                let store = connect(&args.database).await?;
                let signer = signer(args.evidence_key).await;
                let anchor = args.anchor.anchor(&load_sdk_config().await, args.alert_bus);
                match heads::make_head(store.pool(), signer.as_ref()).await? {
                    Some(head) => {
                        if let Some(anchor) = &anchor
                            && head.signature.is_some()
                        {
                            let key = anchor.publish(&head).await?;
                            eprintln!("anchored as {key}");
                        }
                        if head.signature.is_none() {
                            eprintln!(
                                "unanchored: no ECR_AUDIT_EVIDENCE_KEY, the head is unsigned"
                            );
                        }
                        println!("{}", serde_json::to_string(&head)?);
                    }
                    None => eprintln!("no new records since the last head"),
                }
                Ok(exit::OK)
            }
            EvidenceCommand::PublicKey(args) => {
                let Some(signer) = signer(Some(args.evidence_key)).await else {
                    bail!("no key");
                };
                print!("{}", heads::to_pem(&signer.public_key().await?));
                Ok(exit::OK)
            }
            EvidenceCommand::Prove(args) => {
                prove(&connect(&args.database).await?, args.record).await
            }
            EvidenceCommand::Consistency(args) => {
                let store = connect(&args.database).await?;
                let find = |size| heads::find(store.pool(), Some(size));
                let (Some(from), Some(to)) = (find(args.from).await?, find(args.to).await?) else {
                    bail!(
                        "no stored head of size {} and of size {} (see `evidence heads`)",
                        args.from,
                        args.to
                    );
                };
                let proof = proof::consistency(store.pool(), from, to).await?;
                println!("{}", serde_json::to_string_pretty(&proof)?);
                Ok(exit::OK)
            }
        }
    }

    async fn signer(key: Option<String>) -> Option<KmsSigner> {
        let key = key?;
        Some(KmsSigner::new(&load_sdk_config().await, key))
    }

    async fn prove(store: &Store, seq: i64) -> anyhow::Result<i32> {
        let Some(head) = heads::find(store.pool(), None).await? else {
            bail!("no tree head yet: the worker makes them, or run `ecr-audit evidence sign-head`");
        };
        if seq < head.head.first_seq || seq > head.head.last_seq() {
            bail!(
                "record {seq} is not under the latest head (seq {}..{}); a later head will cover it",
                head.head.first_seq,
                head.head.last_seq()
            );
        }
        let proof = proof::prove(store.pool(), &head.head, seq).await?;
        if head.signature.is_none() {
            eprintln!("unanchored: the latest head is unsigned");
        }
        if proof.record_hash.is_empty() {
            eprintln!(
                "record {seq} was archived: put its hash from the archive file into record_hash"
            );
        }
        println!("{}", serde_json::to_string_pretty(&Proven { head, proof })?);
        Ok(exit::OK)
    }

    fn read_head(path: &Path) -> anyhow::Result<SignedHead> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(text.trim())
            .with_context(|| format!("{} is not a signed head", path.display()))
    }

    fn read_point(path: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = path else { return Ok(None) };
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(heads::public_key_point(&bytes)?))
    }

    /// The tree part of `verify` on the database: records vs tree, tree vs every head.
    pub(super) async fn verify_tree(store: &Store, args: &VerifyArgs) -> anyhow::Result<i32> {
        let mut point = read_point(args.public_key.as_deref())?;
        if point.is_none()
            && let Some(signer) = signer(args.evidence_key.clone()).await
        {
            point = Some(heads::public_key_point(&signer.public_key().await?)?);
        }
        let kept: Vec<SignedHead> = args
            .since_head
            .as_deref()
            .map(read_head)
            .transpose()?
            .into_iter()
            .collect();
        if let (Some(point), Some(kept)) = (&point, kept.first())
            && let Err(problem) = heads::verify_signature(kept, point)
        {
            println!(
                "BROKEN: the kept head of size {}: {problem}",
                kept.head.tree_size
            );
            return Ok(exit::INCOMPLETE);
        }
        let mut kept = kept;
        if let Some(bucket) = args.evidence_bucket.clone() {
            let sdk = load_sdk_config().await;
            let anchor = crate::evidence::anchor::Anchor::new(&sdk, bucket, 0, None);
            let mut conn = store.pool().acquire().await?;
            let (log_id, _) = crate::evidence::tree::log_identity(&mut conn).await?;
            drop(conn);
            let anchored = anchor.heads(&log_id).await?;
            println!("checking against {} heads anchored in S3", anchored.len());
            kept.extend(anchored);
        }
        let report = proof::verify_tree(store.pool(), point.as_deref(), &kept).await?;
        Ok(print_tree_report(&report))
    }

    fn print_tree_report(report: &TreeReport) -> i32 {
        if let Some(problem) = &report.problem {
            println!("BROKEN: {problem}");
            return exit::INCOMPLETE;
        }
        let Some(newest) = &report.newest else {
            println!(
                "UNANCHORED: the tree of {} leaves matches every record, but no tree head was made yet",
                report.leaves
            );
            return exit::OK;
        };
        let what = format!(
            "the tree of {} leaves matches every record and {} tree heads (newest: size {}, root {}, {})",
            report.leaves,
            report.heads,
            newest.head.tree_size,
            newest.head.root_hash,
            newest.head.timestamp.to_rfc3339()
        );
        if report.unsigned > 0 {
            println!(
                "UNANCHORED: {what}; {} heads are unsigned (no ECR_AUDIT_EVIDENCE_KEY)",
                report.unsigned
            );
        } else if !report.signatures_checked {
            println!(
                "OK: {what}; signatures not checked (give --public-key or ECR_AUDIT_EVIDENCE_KEY)"
            );
        } else {
            println!("OK: {what}; {} signatures verified", report.signed);
        }
        exit::OK
    }

    /// Larger than any inclusion or consistency proof file (a path of 64 hashes and two
    /// heads is under 8 KiB).
    const MAX_PROOF_FILE_BYTES: u64 = 1 << 20;

    /// What a JSON file given to `verify` holds when it is not an export.
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ProofFile {
        Inclusion(Proven),
        Consistency(ConsistencyProof),
    }

    /// Verifies inclusion and consistency proof files (`evidence prove`, `evidence
    /// consistency`) offline; `None` when the files are exports.
    pub(super) fn verify_proof_files(args: &VerifyArgs) -> anyhow::Result<Option<i32>> {
        let mut parsed = Vec::new();
        for path in &args.files {
            // A proof file is a few KiB; anything larger is an export, verified streaming:
            // never read a whole export into memory to find out.
            let small = std::fs::metadata(path).is_ok_and(|m| m.len() <= MAX_PROOF_FILE_BYTES);
            if !small {
                return Ok(None);
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                return Ok(None);
            };
            let Ok(file) = serde_json::from_str::<ProofFile>(&text) else {
                return Ok(None);
            };
            parsed.push((path, file));
        }
        let point = read_point(args.public_key.as_deref())?;
        let kept = args.since_head.as_deref().map(read_head).transpose()?;
        for (path, file) in parsed {
            let name = path.display();
            let (heads_in, result, what) = check_file(&file);
            if let Err(problem) = result {
                println!("BROKEN: {name}: {problem}");
                return Ok(Some(exit::INCOMPLETE));
            }
            let signed = match check_signatures(&heads_in, point.as_deref()) {
                Ok(words) => words,
                Err(problem) => {
                    println!("BROKEN: {name}: {problem}");
                    return Ok(Some(exit::INCOMPLETE));
                }
            };
            if let (Some(kept), Some(newest)) = (&kept, heads_in.last())
                && kept.head != newest.head
                && kept.head.tree_size == newest.head.tree_size
            {
                println!(
                    "BROKEN: {name}: the head of size {} is not the head kept in --since-head: the log was rewritten",
                    kept.head.tree_size
                );
                return Ok(Some(exit::INCOMPLETE));
            }
            println!(
                "{}: {name}: {what}; {signed}",
                if signed.starts_with("unanchored") {
                    "UNANCHORED"
                } else {
                    "OK"
                }
            );
        }
        Ok(Some(exit::OK))
    }

    /// The heads a proof file names, whether its proof holds, and what it shows.
    fn check_file(file: &ProofFile) -> (Vec<&SignedHead>, Result<(), proof::ProofProblem>, String) {
        match file {
            ProofFile::Inclusion(p) => (
                vec![&p.head],
                proof::check_inclusion(&p.head.head, &p.proof),
                format!(
                    "record seq {} ({}) is leaf {} of the head of size {}",
                    p.proof.seq, p.proof.record_hash, p.proof.leaf_index, p.head.head.tree_size
                ),
            ),
            ProofFile::Consistency(c) => (
                vec![&c.from, &c.to],
                proof::check_consistency(c),
                format!(
                    "the head of size {} extends the head of size {}",
                    c.to.head.tree_size, c.from.head.tree_size
                ),
            ),
        }
    }

    /// The public key point and the kept head (its signature checked) for offline files.
    pub(super) fn offline_keys(
        args: &VerifyArgs,
    ) -> anyhow::Result<(Option<Vec<u8>>, Option<crate::evidence::heads::TreeHead>)> {
        let point = read_point(args.public_key.as_deref())?;
        let kept = args.since_head.as_deref().map(read_head).transpose()?;
        if let (Some(point), Some(kept)) = (&point, &kept)
            && let Err(problem) = heads::verify_signature(kept, point)
        {
            bail!("the kept head of size {}: {problem}", kept.head.tree_size);
        }
        Ok((point, kept.map(|k| k.head)))
    }

    /// What a verified export proved against its tree head, or why its head does not hold.
    pub(super) fn describe_tree(
        report: &crate::evidence::export::verify::FileReport,
        point: Option<&[u8]>,
    ) -> Result<String, String> {
        let Some(head) = &report.manifest.tree_head else {
            return Ok("unanchored: the manifest carries no tree head".to_owned());
        };
        let signed = check_signatures(&[head], point)
            .map_err(|problem| format!("the manifest's tree head: {problem}"))?;
        let t = &report.tree;
        let mut words = format!("tree head of size {} ({signed})", head.head.tree_size);
        if t.root_verified {
            words.push_str("; the records re-hash to its root");
        }
        if t.proven > 0 {
            words.push_str(&format!("; {} inclusion proofs verified", t.proven));
        }
        if t.kept_verified {
            words.push_str("; the log only grew since the kept head");
        }
        if t.earlier_heads_verified > 0 {
            words.push_str(&format!(
                "; with the files before it, the records re-hash to the root of {} earlier files' heads",
                t.earlier_heads_verified
            ));
        }
        if t.uncovered > 0 {
            words.push_str(&format!(
                "; {} records are newer than the head",
                t.uncovered
            ));
        }
        Ok(words)
    }

    fn check_signatures(heads_in: &[&SignedHead], point: Option<&[u8]>) -> Result<String, String> {
        let Some(point) = point else {
            return Ok("unanchored: no --public-key, signatures not checked".to_owned());
        };
        for head in heads_in {
            match heads::verify_signature(head, point) {
                Ok(()) => {}
                Err(heads::SignatureProblem::Unsigned) => {
                    return Ok(format!(
                        "unanchored: the head of size {} is unsigned",
                        head.head.tree_size
                    ));
                }
                Err(problem) => {
                    return Err(format!(
                        "the head of size {}: {problem}",
                        head.head.tree_size
                    ));
                }
            }
        }
        Ok("every head signature verified with the public key".to_owned())
    }
}
