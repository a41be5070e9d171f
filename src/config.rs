//! Command-line flags and environment variables: the operator's manual.
//!
//! Every flag has an environment variable (shown by `--help`). AWS region, credentials and
//! endpoint come from the standard SDK chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, …), not from
//! flags here.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::evidence::export::ExportFormat;
pub use crate::telemetry::LogFormat;

mod trust;
pub use trust::{DefaultTrustPolicy, TrustArgs, TrustConfigError};

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write durations like 30s, 5m, 6h)"))
}

/// The coverage interval: at least a minute (Inspector refreshes use no faster, and every read
/// pages through a registry's images), at most a day (use older than that misleads).
fn coverage_interval(text: &str) -> Result<Duration, String> {
    let interval = duration(text)?;
    if (Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&interval) {
        Ok(interval)
    } else {
        Err(format!("{text}: between 1m and 24h"))
    }
}

/// A signature status as `images --signature` takes it (docs/SIGNATURES.md's vocabulary).
fn signature_status(text: &str) -> Result<crate::domain::SignatureStatus, String> {
    crate::domain::SignatureStatus::from_str_opt(&text.to_ascii_uppercase()).ok_or_else(|| {
        let all: Vec<&str> = crate::domain::SignatureStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        format!("{text}: one of {}", all.join(", "))
    })
}

/// A scan status as `images --scan` takes it.
fn scan_status(text: &str) -> Result<crate::domain::ScanStatus, String> {
    crate::domain::ScanStatus::from_str_opt(&text.to_ascii_uppercase()).ok_or_else(|| {
        let all: Vec<&str> = crate::domain::ScanStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        format!("{text}: one of {}", all.join(", "))
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "ecr-audit",
    version,
    about = "Event-driven compliance auditor for Amazon ECR"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: `json` for production, `text` for a terminal, `auto` picks by whether
    /// stderr is a terminal. Logs go to stderr; stdout is for command output.
    #[arg(
        long,
        env = "ECR_AUDIT_LOG_FORMAT",
        default_value = "auto",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start-up and matched at once; boxing buys nothing"
)]
pub enum Command {
    /// Apply the database migrations as the owner role and grant the worker role its
    /// privileges.
    Migrate(MigrateArgs),
    /// Consume the SQS queue and serve /metrics, /healthz, /readyz (and the /v1/ API when
    /// ECR_AUDIT_API=on) until SIGTERM/SIGINT.
    Worker(WorkerArgs),
    /// Run the pipeline over a file (JSON Lines, a JSON array, or a CloudTrail log; `-` for stdin).
    Ingest(IngestArgs),
    /// One row per repository with ECR.1, ECR.2, ECR.3 and ECR.5 status and reason.
    Posture(PostureArgs),
    /// One row per image digest with its posture.
    Images(ImagesArgs),
    /// One digest's history from the evidence: push and pusher, settings at push, signature
    /// and scan verdicts with their reasons, later control changes, use, deletion.
    Explain(ExplainArgs),
    // Evidence: export, offline verification, retention.
    /// Check the evidence hash chain: in the database, or in export files without a database.
    Verify(VerifyArgs),
    /// Export evidence records with their hash chain and a closing manifest, streamed.
    Export(ExportArgs),
    /// Evidence retention: archive old records to a file and drop them from the database.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Exceptions: accepted risks with an approver, a reason and an expiry (docs/EXCEPTIONS.md).
    #[command(subcommand)]
    Exception(ExceptionCommand),
    /// Sweep every repository and image of the configured accounts and regions once, and
    /// record what changed without an event.
    Reconcile(ReconcileArgs),
    /// The auditor's period report (HTML, PDF or JSON) from the evidence: per control the
    /// share of repositories passing, every transition with its caller, the images pushed
    /// with their signature and scan verdicts, and the chain head it was computed against.
    Report(ReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// Connections in the pool.
    #[arg(long, env = "ECR_AUDIT_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
}

/// `migrate`: the owner's URL, and the worker's to admit its user to the worker role.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The worker's Postgres URL. Without `--migrate-database-url` migrations run through
    /// it (a single-role setup, docs/DEPLOY.md); with it, its user is made a member of the
    /// worker role `ecr_audit_worker`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// The owner's Postgres URL: the role that owns the tables and runs the migrations.
    #[arg(long, env = "ECR_AUDIT_MIGRATE_DATABASE_URL", hide_env_values = true)]
    pub migrate_database_url: Option<Secret>,
}

/// What the pipeline needs wherever it runs (worker or ingest).
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Account to attribute events to when the event names none; default: the caller's own
    /// account (STS GetCallerIdentity).
    #[arg(long, env = "ECR_AUDIT_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// How long repository settings are cached before being read again, even without a
    /// change event (CloudTrail events can be missing).
    #[arg(long, env = "ECR_AUDIT_REPOSITORY_CACHE_TTL", default_value = "5m", value_parser = duration)]
    pub repository_cache_ttl: Duration,
    /// How long a new push may stay unsigned before it counts as UNSIGNED (managed signing
    /// finishes within seconds; a CI job that signs after pushing may take minutes).
    #[arg(long, env = "ECR_AUDIT_SIGNING_GRACE", default_value = "15m", value_parser = duration)]
    pub signing_grace: Duration,
    /// How soon a control's FAIL → PASS must follow its PASS → FAIL to be recorded, counted
    /// and alerted as "regressed and restored" (a weakening undone before anyone looked).
    #[arg(long, env = "ECR_AUDIT_RESTORED_WINDOW", default_value = "1h", value_parser = duration)]
    pub restored_window: Duration,
    /// ECR.5: when set (comma-separated KMS key ARNs), only these customer-managed keys pass.
    #[arg(long, env = "ECR_AUDIT_KMS_KEY_ALLOW_LIST", value_delimiter = ',')]
    pub kms_key_allow_list: Vec<String>,
    /// ECR.4: tag keys every ECR Public repository must carry (comma-separated, at most 6,
    /// case-sensitive, none starting with `aws:`); empty: any one tag.
    #[arg(long, env = "ECR_AUDIT_REQUIRED_TAG_KEYS", value_delimiter = ',')]
    pub required_tag_keys: Vec<String>,
    /// Extra accounts to audit, as `ACCOUNT_ID=ROLE_ARN` (comma-separated): events from such an
    /// account are read through the role (STS AssumeRole), and reconcile sweeps it too.
    #[arg(long, env = "ECR_AUDIT_ACCOUNTS", value_delimiter = ',', value_parser = account_role)]
    pub accounts: Vec<(String, String)>,
    /// Regions reconcile sweeps (comma-separated); default: `AWS_REGION`. Events are always
    /// read in the region they name.
    #[arg(long, env = "ECR_AUDIT_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    #[command(flatten)]
    pub organization: OrganizationArgs,
    /// Calls a second allowed per AWS operation, so sweeps stay under ECR's API quotas.
    #[arg(long, env = "ECR_AUDIT_API_RATE", default_value_t = 50)]
    pub api_rate: u32,
    /// OCI referrers read at most per digest when looking for its signatures; a pusher can
    /// attach any number, and each page of 50 is a paced call. Beyond the cap the signatures
    /// found so far decide, and without one the verdict says the rest was not read.
    #[arg(
        long,
        env = "ECR_AUDIT_MAX_REFERRERS_PER_DIGEST",
        default_value_t = 200
    )]
    pub max_referrers_per_digest: usize,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// Org-wide accounts: discovery through AWS Organizations and how each account is read.
#[derive(Debug, Clone, Args)]
pub struct OrganizationArgs {
    /// Discover the accounts to audit through AWS Organizations (`ListAccounts`) at every
    /// reconcile sweep: every ACTIVE account, read through ECR_AUDIT_ROLE_NAME_PATTERN.
    /// Needs the management account or a delegated administrator (or ECR_AUDIT_ORGANIZATION_ROLE).
    #[arg(long, env = "ECR_AUDIT_ORGANIZATION")]
    pub organization: bool,
    /// Only the accounts under these organizational units (comma-separated `ou-…` or `r-…`
    /// ids, child units included); implies ECR_AUDIT_ORGANIZATION.
    #[arg(long, env = "ECR_AUDIT_ORGANIZATION_UNITS", value_delimiter = ',')]
    pub organization_units: Vec<String>,
    /// A role to assume for the Organizations calls (in the management or delegated
    /// administrator account); default: the worker's own credentials.
    #[arg(long, env = "ECR_AUDIT_ORGANIZATION_ROLE")]
    pub organization_role: Option<String>,
    /// The reader role of every discovered account, with `{account}` for its id:
    /// `arn:aws:iam::{account}:role/ecr-audit-reader`. ECR_AUDIT_ACCOUNTS wins for the
    /// accounts it names.
    #[arg(long, env = "ECR_AUDIT_ROLE_NAME_PATTERN")]
    pub role_name_pattern: Option<String>,
    /// The external id presented on every AssumeRole (the spoke roles' trust condition).
    #[arg(long, env = "ECR_AUDIT_EXTERNAL_ID", hide_env_values = true)]
    pub external_id: Option<Secret>,
}

impl OrganizationArgs {
    /// Whether accounts are discovered through AWS Organizations.
    pub fn discovery(&self) -> bool {
        self.organization || !self.organization_units.is_empty()
    }
}

fn account_role(text: &str) -> Result<(String, String), String> {
    let (account, role) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: write ACCOUNT_ID=ROLE_ARN"))?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{account:?} is not a 12-digit account id"));
    }
    if !role.starts_with("arn:") {
        return Err(format!("{role:?} is not a role ARN"));
    }
    Ok((account.to_owned(), role.to_owned()))
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// URL of the SQS queue that EventBridge feeds.
    #[arg(long, env = "ECR_AUDIT_QUEUE_URL")]
    pub queue_url: String,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "ECR_AUDIT_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    /// A deploy policy (JSON, docs/ENFORCEMENT.md): when set, the worker's HTTP address serves
    /// `/v1/verdict`, `/v1/admission` and `/v1/gatekeeper`. Validated at start-up.
    #[arg(long, env = "ECR_AUDIT_DEPLOY_POLICY")]
    pub deploy_policy: Option<PathBuf>,
    /// How old the verdicts' in-memory view of the ledger may be before a verdict says it is
    /// stale and the scope's `stale` choice applies (docs/ENFORCEMENT.md, "The view").
    #[arg(long, env = "ECR_AUDIT_VERDICT_MAX_STALENESS", default_value = "10s", value_parser = duration)]
    pub verdict_max_staleness: Duration,
    /// A second listen address serving the same routes over TLS, for the Kubernetes webhook
    /// (the API server calls webhooks only over HTTPS); needs ECR_AUDIT_TLS_CERT and _KEY.
    #[arg(long, env = "ECR_AUDIT_ADMISSION_ADDR")]
    pub admission_addr: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener; reloaded when the file changes.
    #[arg(long, env = "ECR_AUDIT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS listener; reloaded when the file changes.
    #[arg(long, env = "ECR_AUDIT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Batches (of up to 10 messages) processed at once.
    #[arg(long, env = "ECR_AUDIT_MAX_IN_FLIGHT_BATCHES", default_value_t = 4)]
    pub max_in_flight_batches: usize,
    /// Visibility timeout set on receive and renewed while a batch is processed.
    #[arg(long, env = "ECR_AUDIT_VISIBILITY_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub visibility_timeout: Duration,
    /// First retry delay of a message that failed transiently (doubles per receive).
    #[arg(long, env = "ECR_AUDIT_RETRY_BASE", default_value = "5s", value_parser = duration)]
    pub retry_base: Duration,
    /// How often the worker looks for due signature re-checks.
    #[arg(long, env = "ECR_AUDIT_RECHECK_POLL", default_value = "5s", value_parser = duration)]
    pub recheck_poll: Duration,
    /// How old a signature verdict (`SIGNED`, `UNTRUSTED`) may grow before the digest is
    /// judged again: certificates expire and revocations happen without an event; `0s` turns
    /// scheduled re-verification off.
    #[arg(long, env = "ECR_AUDIT_REVERIFY_INTERVAL", default_value = "24h", value_parser = duration)]
    pub reverify_interval: Duration,
    /// How often the worker sweeps every repository and image (also once at start-up); `0s`
    /// turns the sweep off.
    #[arg(long, env = "ECR_AUDIT_RECONCILE_INTERVAL", default_value = "1h", value_parser = duration)]
    pub reconcile_interval: Duration,
    /// How often Inspector's coverage is read for image use (one paged `ListCoverage` per
    /// registry; also after each reconcile sweep); between 1m and 24h.
    #[arg(long, env = "ECR_AUDIT_COVERAGE_INTERVAL", default_value = "15m", value_parser = coverage_interval)]
    pub coverage_interval: Duration,
    /// How long a control may fail before its repository raises one `CONTROL_FAILING` alert
    /// (failures found as history by a first sweep never do, docs/ALERTS.md); `0s` turns the
    /// state alerts off.
    #[arg(long, env = "ECR_AUDIT_FAILING_GRACE", default_value = "24h", value_parser = duration)]
    pub failing_grace: Duration,
    /// EventBridge bus (name or ARN) for alert events; unset = no alert events.
    #[arg(long, env = "ECR_AUDIT_ALERT_BUS")]
    pub alert_bus: Option<String>,
    /// How often the queue depth gauges are refreshed (GetQueueAttributes).
    #[arg(long, env = "ECR_AUDIT_QUEUE_METRICS_INTERVAL", default_value = "15s", value_parser = duration)]
    pub queue_metrics_interval: Duration,
    /// A reviewed exceptions file (JSON, docs/EXCEPTIONS.md), loaded at start-up and whenever
    /// its content changes; unset = exceptions come from `ecr-audit exception add` only.
    #[arg(long, env = "ECR_AUDIT_EXCEPTIONS_FILE")]
    pub exceptions_file: Option<PathBuf>,
    /// How often the exceptions file is checked for changes and ended exceptions (expired or
    /// revoked) are settled: their findings re-open and alert (also once at start-up).
    #[arg(long, env = "ECR_AUDIT_EXCEPTION_INTERVAL", default_value = "60s", value_parser = duration)]
    pub exception_interval: Duration,
    /// How long in-flight work may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "ECR_AUDIT_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub heads: HeadArgs,
}

/// Signed tree heads of the evidence (docs/EVIDENCE.md, "Signed tree heads").
#[derive(Debug, Clone, Args)]
pub struct HeadArgs {
    /// KMS key (ARN or alias, `ECC_NIST_P256`, `SIGN_VERIFY`) that signs tree heads; unset =
    /// heads are stored unsigned and every verification reports them as unanchored.
    #[arg(long, env = "ECR_AUDIT_EVIDENCE_KEY")]
    pub evidence_key: Option<String>,
    /// A head is made once this many records were appended since the last one…
    #[arg(long, env = "ECR_AUDIT_EVIDENCE_HEAD_RECORDS", default_value_t = 1000)]
    pub evidence_head_records: u64,
    /// …or once this long has passed since the last one while records were appended.
    #[arg(long, env = "ECR_AUDIT_EVIDENCE_HEAD_INTERVAL", default_value = "60s", value_parser = duration)]
    pub evidence_head_interval: Duration,
    #[command(flatten)]
    pub anchor: AnchorArgs,
}

/// The S3 anchor of signed tree heads (docs/EVIDENCE.md, "The anchor in S3").
#[derive(Debug, Clone, Args)]
pub struct AnchorArgs {
    /// S3 bucket (Object Lock enabled) every signed tree head is written to; unset = heads are
    /// not anchored outside the database.
    #[arg(long, env = "ECR_AUDIT_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
    /// Days each anchored head is locked (Object Lock, compliance mode).
    #[arg(
        long,
        env = "ECR_AUDIT_EVIDENCE_RETENTION_DAYS",
        default_value_t = 2557
    )]
    pub evidence_retention_days: u32,
}

impl AnchorArgs {
    /// The anchor, when a bucket is configured; announced on `bus` when there is one.
    pub fn anchor(
        &self,
        sdk: &aws_config::SdkConfig,
        bus: Option<String>,
    ) -> Option<crate::evidence::anchor::Anchor> {
        self.evidence_bucket.clone().map(|bucket| {
            crate::evidence::anchor::Anchor::new(sdk, bucket, self.evidence_retention_days, bus)
        })
    }
}

impl HeadArgs {
    /// What the worker's head task needs: the signer (none = unsigned heads), the anchor (on
    /// the alert bus `bus`), N and T.
    pub fn settings(
        &self,
        sdk: &aws_config::SdkConfig,
        bus: Option<String>,
    ) -> crate::evidence::heads::HeadTask {
        crate::evidence::heads::HeadTask {
            signer: self
                .evidence_key
                .clone()
                .map(|key| crate::evidence::heads::KmsSigner::new(sdk, key)),
            anchor: self.anchor.anchor(sdk, bus),
            records: self.evidence_head_records,
            interval: self.evidence_head_interval,
        }
    }
}

/// The bounds of the HTTP endpoints (`src/export/http.rs`).
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// How long a client may take to send request headers (or stay idle between requests)
    /// before its connection is closed.
    #[arg(long, env = "ECR_AUDIT_HTTP_HEADER_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub http_header_timeout: Duration,
    /// How long a request may take before it is answered with 503.
    #[arg(long, env = "ECR_AUDIT_HTTP_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http_request_timeout: Duration,
    /// HTTP connections served at once; further ones wait to be accepted.
    #[arg(long, env = "ECR_AUDIT_HTTP_MAX_CONNECTIONS", default_value_t = 64)]
    pub http_max_connections: usize,
    /// How long /metrics reuses the counts it read from the database.
    #[arg(long, env = "ECR_AUDIT_HTTP_METRICS_CACHE", default_value = "5s", value_parser = duration)]
    pub http_metrics_cache: Duration,
    /// Database connections of the endpoints' own pool (apart from ECR_AUDIT_DB_MAX_CONNECTIONS).
    #[arg(long, env = "ECR_AUDIT_HTTP_DB_CONNECTIONS", default_value_t = 2)]
    pub http_db_connections: u32,
}

impl HttpArgs {
    pub fn limits(&self) -> crate::export::http::HttpLimits {
        crate::export::http::HttpLimits {
            header_read_timeout: self.http_header_timeout,
            request_timeout: self.http_request_timeout,
            max_connections: self.http_max_connections.max(1),
            metrics_cache: self.http_metrics_cache,
            db_connections: self.http_db_connections.max(1),
        }
    }
}

/// Whether the read-only `/v1/` API is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiMode {
    Off,
    On,
}

/// The read-only JSON API on the HTTP address (`src/export/api.rs`).
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// `on` serves `/v1/posture`, `/v1/images` and `/v1/images/{digest}/history` on
    /// ECR_AUDIT_HTTP_ADDR, behind the bearer token of ECR_AUDIT_API_TOKEN_FILE.
    #[arg(long = "api", env = "ECR_AUDIT_API", default_value = "off")]
    pub mode: ApiMode,
    /// A file holding the API's bearer token (at least 16 characters; read at start-up).
    #[arg(long, env = "ECR_AUDIT_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
}

impl ApiArgs {
    /// The token when the API is on.
    ///
    /// # Errors
    /// When the API is on without a readable token file of at least 16 characters.
    pub fn token(&self) -> Result<Option<crate::export::api::ApiToken>, String> {
        match (self.mode, &self.api_token_file) {
            (ApiMode::Off, _) => Ok(None),
            (ApiMode::On, None) => {
                Err("ECR_AUDIT_API=on needs ECR_AUDIT_API_TOKEN_FILE (the bearer token)".to_owned())
            }
            (ApiMode::On, Some(path)) => crate::export::api::ApiToken::from_file(path)
                .map(Some)
                .map_err(|e| format!("ECR_AUDIT_API_TOKEN_FILE {}: {e}", path.display())),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The file to read, or `-` for standard input.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PostureArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
    /// Only this repository.
    #[arg(long)]
    pub repository: Option<String>,
    /// Answer as of this time (2026-10-01 or RFC 3339), from the evidence records.
    #[arg(long, value_parser = evidence_time)]
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
    /// Only this repository.
    #[arg(long)]
    pub repository: Option<String>,
    /// Only this digest (`sha256:…`).
    #[arg(long)]
    pub digest: Option<String>,
    /// Only digests Inspector reports in use (ENHANCED scanning).
    #[arg(long)]
    pub in_use: bool,
    /// Only digests with this signature status (SIGNED, PENDING, UNSIGNED, FAILED, UNTRUSTED).
    #[arg(long, value_parser = signature_status)]
    pub signature: Option<crate::domain::SignatureStatus>,
    /// Only digests with this scan status (SCANNED, PENDING, FAILED, UNSUPPORTED, EXPIRED,
    /// UNAVAILABLE, NOT_SCANNED).
    #[arg(long, value_parser = scan_status)]
    pub(crate) scan: Option<crate::domain::ScanStatus>,
    /// Answer as of this time (2026-10-01 or RFC 3339), from the evidence records.
    #[arg(long, value_parser = evidence_time)]
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The digest to explain, as `REPOSITORY@sha256:…`.
    #[arg(value_parser = repository_at_digest)]
    pub target: (String, String),
    /// Only records of this account (default: any).
    #[arg(long)]
    pub account: Option<String>,
    /// Only records of this region (default: any).
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
    /// At most this many evidence records are read (oldest first); the output says when the
    /// history was cut.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

/// `REPOSITORY@DIGEST`, split at the last `@` (a repository name has none).
fn repository_at_digest(text: &str) -> Result<(String, String), String> {
    match text.rsplit_once('@') {
        Some((repository, digest))
            if !repository.is_empty() && digest.contains(':') && !digest.ends_with(':') =>
        {
            Ok((repository.to_owned(), digest.to_owned()))
        }
        _ => Err(format!("{text:?}: write REPOSITORY@sha256:DIGEST")),
    }
}

// Evidence: the flags of `verify`, `export` and `evidence archive`.

fn evidence_time(text: &str) -> Result<DateTime<Utc>, String> {
    crate::evidence::export::parse_time(text)
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Export files to verify offline, in chain order (an archive, then the next, …); without
    /// files, the chain in the database is verified.
    pub files: Vec<PathBuf>,
    /// Postgres connection URL (only to verify the database).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Connections in the pool.
    #[arg(long, env = "ECR_AUDIT_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
    /// The public key (PEM, from `evidence public-key`) that tree head signatures must verify
    /// with; for the database, `ECR_AUDIT_EVIDENCE_KEY`'s public key is read from KMS otherwise.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// A signed head kept earlier (JSON, as `evidence heads` prints one): the log must only have
    /// grown since it.
    #[arg(long)]
    pub since_head: Option<PathBuf>,
    /// KMS key whose public key verifies head signatures in the database (when no --public-key).
    #[arg(long, env = "ECR_AUDIT_EVIDENCE_KEY")]
    pub evidence_key: Option<String>,
    /// The database is also checked against the heads anchored in this bucket.
    #[arg(long, env = "ECR_AUDIT_EVIDENCE_BUCKET")]
    pub evidence_bucket: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// csv (RFC 4180), jsonl (JSON Lines) or ocsf (OCSF 1.3.0 Compliance Finding).
    #[arg(long)]
    pub format: ExportFormat,
    /// Only records recorded at or after this time (2026-10-01 or RFC 3339).
    #[arg(long, value_parser = evidence_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only records recorded before this time.
    #[arg(long, value_parser = evidence_time)]
    pub until: Option<DateTime<Utc>>,
    /// Only records about this repository.
    #[arg(long)]
    pub repository: Option<String>,
    /// Only the transitions of this control (ECR.1, ECR.2, …).
    #[arg(long)]
    pub control: Option<String>,
    /// Only records about this digest (`sha256:…`): its push, verdicts, use, deletion.
    #[arg(long)]
    pub digest: Option<String>,
    /// Write here (atomically, on success) instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// What `report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML file (inline CSS and SVG).
    Html,
    /// The same HTML printed by a headless Chromium (`ECR_AUDIT_CHROMIUM`).
    Pdf,
    /// The same content as data (docs/REPORT.md).
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The period's start: records recorded at or after it (2026-07-01 or RFC 3339).
    #[arg(long, value_parser = evidence_time)]
    pub since: DateTime<Utc>,
    /// The period's end: records recorded before it.
    #[arg(long, value_parser = evidence_time)]
    pub until: DateTime<Utc>,
    /// A JSON file naming what is in scope ("production"): repository patterns, accounts,
    /// regions, image tag patterns (docs/REPORT.md); default: everything.
    #[arg(long)]
    pub scope: Option<PathBuf>,
    #[arg(long, default_value = "html")]
    pub format: ReportFormat,
    /// Write here (atomically, on success) instead of standard output; required for pdf.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// The Chromium that prints PDFs (a name on PATH or a path).
    #[arg(long, env = "ECR_AUDIT_CHROMIUM", default_value = "chromium")]
    pub chromium: String,
}

#[derive(Debug, Subcommand)]
pub enum ExceptionCommand {
    /// Accept a control's failure for matching repositories until a date, with a reason and
    /// an approver; written to the evidence chain.
    Add(ExceptionAddArgs),
    /// The exceptions in force (`--all`: also revoked and expired ones).
    List(ExceptionListArgs),
    /// End an exception before its expiry; the findings it covered re-open and alert.
    Revoke(ExceptionRevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ExceptionAddArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Repository name, `*` standing for any run of characters (`team/legacy-*`).
    #[arg(long)]
    pub repository: String,
    /// The control (ECR.1 … ECR.5, ECRA.1 … ECRA.5).
    #[arg(long)]
    pub control: String,
    /// Why the risk is accepted.
    #[arg(long)]
    pub reason: String,
    /// Who accepted it: an IAM ARN or an e-mail address.
    #[arg(long)]
    pub approver: String,
    /// When it ends (2027-03-31 = 00:00 UTC that day, or RFC 3339); at most 366 days away.
    #[arg(long)]
    pub expires: String,
    /// Only this account (default: every account).
    #[arg(long)]
    pub account: Option<String>,
    /// Only this region (default: every region).
    #[arg(long)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ExceptionListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
    /// Also exceptions that were revoked or expired.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExceptionRevokeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The exception's id (`EX-1`, or `file:…` as `exception list` shows it).
    pub id: String,
    /// Why it ends now.
    #[arg(long)]
    pub reason: String,
    /// Who revokes it (IAM ARN or e-mail), recorded as the evidence record's actor.
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Export the oldest records (those recorded before --before) to a file, verify the file,
    /// then drop them from the database behind a checkpoint record that keeps the chain
    /// verifiable.
    Archive(ArchiveArgs),
    /// List the tree heads, oldest first, one JSON object per line.
    Heads(DatabaseArgs),
    /// Make a tree head of the current log now (signed when ECR_AUDIT_EVIDENCE_KEY is set).
    SignHead(SignHeadArgs),
    /// Print the evidence signing key's public key (PEM) for auditors.
    PublicKey(PublicKeyArgs),
    /// Print the inclusion proof of a record against the latest tree head (JSON).
    Prove(ProveArgs),
    /// Print the consistency proof between the heads of two tree sizes (JSON).
    Consistency(ConsistencyArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SignHeadArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// KMS key that signs; unset = an unsigned head.
    #[arg(long, env = "ECR_AUDIT_EVIDENCE_KEY")]
    pub evidence_key: Option<String>,
    #[command(flatten)]
    pub anchor: AnchorArgs,
    /// EventBridge bus the anchored head is announced on.
    #[arg(long, env = "ECR_AUDIT_ALERT_BUS")]
    pub alert_bus: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PublicKeyArgs {
    /// KMS key (ARN or alias).
    #[arg(long, env = "ECR_AUDIT_EVIDENCE_KEY")]
    pub evidence_key: String,
}

#[derive(Debug, Clone, Args)]
pub struct ProveArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The record's seq.
    #[arg(long)]
    pub record: i64,
}

#[derive(Debug, Clone, Args)]
pub struct ConsistencyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The tree size of the older head.
    #[arg(long)]
    pub from: u64,
    /// The tree size of the newer head.
    #[arg(long)]
    pub to: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Archive the records recorded before this time (use the first of a month: 2026-10-01).
    #[arg(long, value_parser = evidence_time)]
    pub before: DateTime<Utc>,
    /// The archive file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// The archive's format.
    #[arg(long, default_value = "jsonl")]
    pub format: ExportFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_url_never_prints() {
        let secret: Secret = "postgres://user:hunter2@db/ecr"
            .parse()
            .expect("infallible");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn accounts_are_written_as_id_equals_role() {
        assert_eq!(
            account_role("210987654321=arn:aws:iam::210987654321:role/ecr-audit-read"),
            Ok((
                "210987654321".to_owned(),
                "arn:aws:iam::210987654321:role/ecr-audit-read".to_owned()
            ))
        );
        assert!(account_role("210987654321").is_err());
        assert!(account_role("2109=arn:aws:iam::2109:role/x").is_err());
        assert!(account_role("210987654321=role/x").is_err());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert!(duration("five").is_err());
    }

    #[test]
    fn coverage_interval_is_bounded() {
        assert_eq!(coverage_interval("15m"), Ok(Duration::from_secs(900)));
        assert!(coverage_interval("30s").is_err());
        assert!(coverage_interval("2d").is_err());
        assert!(coverage_interval("soon").is_err());
    }

    #[test]
    fn image_filters_take_the_status_vocabulary() {
        assert_eq!(
            signature_status("unsigned"),
            Ok(crate::domain::SignatureStatus::Unsigned)
        );
        assert!(signature_status("BOGUS").is_err());
        assert_eq!(
            scan_status("NOT_SCANNED"),
            Ok(crate::domain::ScanStatus::NotScanned)
        );
        assert!(scan_status("DONE").is_err());
    }

    #[test]
    fn explain_takes_repository_at_digest() {
        assert_eq!(
            repository_at_digest("team/app@sha256:ab"),
            Ok(("team/app".to_owned(), "sha256:ab".to_owned()))
        );
        assert!(repository_at_digest("team/app").is_err());
        assert!(repository_at_digest("@sha256:ab").is_err());
        assert!(repository_at_digest("app@ab").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
