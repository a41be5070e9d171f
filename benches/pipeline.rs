//! Benchmarks of issue 9, printed as one table: `scripts/bench` runs them.
//!
//! Throughput and latency measure ecr-audit's own work: the registry is an in-memory reader
//! that answers at once (repository facts cached in steady state), so the figures are the
//! pipeline and Postgres, not the emulator (which serves a few hundred calls a second and
//! would only measure itself). The AWS call counts, on the other hand, are taken at the
//! emulator with the real SDK reader, because that is where calls are real.
//!
//! Modes: `throughput N` (pipeline vs COPY ceiling vs one transaction per event, latency
//! percentiles), `rss N` (peak RSS of an N-event ingest, run in a process of its own),
//! `calls N` (AWS calls per push event and per repository in a sweep, at the emulator),
//! `workers N` (N events shared by 1, 2 and 4 pipelines with pools of their own on one
//! database, as that many worker processes: throughput and how long each batch holds the
//! evidence head lock, from `ecr_audit_evidence_lock_held_seconds`), `verdicts N` (deploy
//! verdicts from the worker's in-memory view of N images at 1,000 requests/s while a pipeline
//! ingests into the same database: latency percentiles, open loop), `signing N` (N events
//! with tree heads signed by a KMS key in the emulator and anchored in S3, against none).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use ecr_audit::domain::{AccountId, Digest, Region, RepositoryKey};
use ecr_audit::enrich::{EnrichError, Registry};
use ecr_audit::facts::{
    BlobRead, Encryption, Fact, ImageFacts, ImageLookup, ListedRepository, ManagedSigning,
    ProfileStatus, RegistryFacts, RegistryScanning, RepositoryFacts, RepositorySettings,
    RepositoryState, RevocationQuery, ScanFacts, SignatureArtifact, SignatureManifest,
    SigningRuleFacts, SigningStatus, TagMutability,
};
use ecr_audit::parse::{InputFormat, ParseContext};
use ecr_audit::pipeline::{InboundMessage, MessageFate, Pipeline};
use ecr_audit::store::Store;
use ecr_audit::telemetry::Metrics;
use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const PROFILE: &str = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/release";

/// A registry that knows every image and answers at once: managed signing COMPLETE, with no
/// signature that verifies, so every push is UNTRUSTED (a status that pages when alerts are on).
struct InstantRegistry;

#[async_trait]
impl Registry for InstantRegistry {
    async fn repository(&self, key: &RepositoryKey) -> Result<RepositoryFacts, EnrichError> {
        Ok(RepositoryFacts {
            observed_at: Utc::now(),
            state: RepositoryState::Present(Box::new(RepositorySettings {
                arn: key.arn(),
                tag_mutability: Fact::Known(TagMutability {
                    mode: "IMMUTABLE".into(),
                    exclusion_filters: vec![],
                }),
                scan_on_push: true,
                reported_scanning: ecr_audit::facts::ReportedScanning::not_read(),
                lifecycle_policy: Fact::Known(true),
                lifecycle_policy_text: Fact::Known(Some(r#"{"rules":[]}"#.to_owned())),
                encryption: Fact::Known(Encryption {
                    encryption_type: "AES256".into(),
                    kms_key: None,
                    key_manager: None,
                }),
                policy: Fact::Known(None),
            })),
        })
    }
    async fn registry(&self, _: &AccountId, _: &Region) -> Result<RegistryFacts, EnrichError> {
        Ok(RegistryFacts {
            observed_at: Utc::now(),
            scanning: Fact::Known(RegistryScanning {
                scan_type: "BASIC".into(),
                rules: vec![],
            }),
            signing: Fact::Known(vec![SigningRuleFacts {
                profile_arn: PROFILE.into(),
                filters: vec![],
            }]),
            pull_through_rules: Fact::Known(vec![]),
            creation_templates: Fact::Known(vec![]),
        })
    }
    async fn list_repositories(
        &self,
        _: &AccountId,
        _: &Region,
    ) -> Result<Fact<Vec<ListedRepository>>, EnrichError> {
        Ok(Fact::Known(vec![]))
    }
    async fn list_images(
        &self,
        _: &RepositoryKey,
    ) -> Result<Fact<Vec<(Digest, ImageFacts)>>, EnrichError> {
        Ok(Fact::Known(vec![]))
    }
    async fn image(&self, _: &RepositoryKey, _: &Digest) -> Result<ImageLookup, EnrichError> {
        Ok(ImageLookup::Found(ImageFacts {
            tags: vec!["v1".into()],
            pushed_at: Some(Utc::now()),
            manifest_media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            artifact_media_type: None,
            subject_digest: None,
            size_bytes: Some(1234),
            scan: Some(ScanFacts {
                raw_status: "COMPLETE".into(),
                severity_counts: BTreeMap::from([("HIGH".into(), 1)]),
            }),
            last_pulled_at: None,
        }))
    }
    async fn signing_statuses(
        &self,
        _: &RepositoryKey,
        _: &Digest,
    ) -> Result<Fact<Vec<ManagedSigning>>, EnrichError> {
        Ok(Fact::Known(vec![ManagedSigning {
            profile_arn: PROFILE.into(),
            status: SigningStatus::Complete,
            failure_code: None,
            failure_reason: None,
        }]))
    }
    async fn signature_artifacts(
        &self,
        _: &RepositoryKey,
        _: &Digest,
        _: bool,
    ) -> Result<Fact<Vec<SignatureArtifact>>, EnrichError> {
        Ok(Fact::Known(vec![]))
    }
    async fn profile_status(&self, _: &str) -> Result<Fact<ProfileStatus>, EnrichError> {
        Ok(Fact::Known(ProfileStatus::Active))
    }
    // It lists no signature artifacts, so these are never asked; answered as a registry
    // that holds none would.
    async fn signature_manifest(
        &self,
        _: &RepositoryKey,
        reference: &str,
    ) -> Result<Fact<SignatureManifest>, EnrichError> {
        Ok(Fact::Unknown(format!(
            "ImageNotFoundException: {reference}"
        )))
    }
    async fn blob(
        &self,
        _: &RepositoryKey,
        digest: &str,
        _: usize,
    ) -> Result<Fact<BlobRead>, EnrichError> {
        Ok(Fact::Unknown(format!("LayersNotFoundException: {digest}")))
    }
    async fn revoked_entities(
        &self,
        _: &RevocationQuery,
    ) -> Result<Fact<Vec<String>>, EnrichError> {
        Ok(Fact::Known(Vec::new()))
    }
    async fn image_coverage(
        &self,
        _: &AccountId,
        _: &Region,
    ) -> Result<Fact<Vec<ecr_audit::facts::CoveredImage>>, EnrichError> {
        Ok(Fact::Known(Vec::new()))
    }
    async fn scan(
        &self,
        _: &RepositoryKey,
        _: &Digest,
    ) -> Result<Fact<Option<ScanFacts>>, EnrichError> {
        Ok(Fact::Known(None))
    }
}

fn digest(i: usize, salt: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(format!("{salt}-{i}").as_bytes()))
    )
}

/// ECR Image Action PUSH envelopes over 50 repositories.
fn push_messages(n: usize, salt: &str) -> Vec<InboundMessage> {
    (0..n)
        .map(|i| {
            let body = json!({
                "version": "0", "id": format!("{salt}-{i}"), "detail-type": "ECR Image Action",
                "source": "aws.ecr", "account": ACCOUNT, "time": Utc::now().to_rfc3339(),
                "region": REGION, "resources": [],
                "detail": {"result": "SUCCESS", "action-type": "PUSH",
                           "repository-name": format!("bench/app-{}", i % 50),
                           "image-digest": digest(i, salt), "image-tag": format!("v{i}"),
                           "manifest-media-type": "application/vnd.oci.image.manifest.v1+json"}
            });
            InboundMessage {
                sent_at: None,
                source: "sqs",
                message_id: Some(format!("{salt}-{i}")),
                body: body.to_string().into_bytes(),
                format: InputFormat::Envelope,
            }
        })
        .collect()
}

async fn fresh_database(name: &str) -> (PgPool, PgConnectOptions) {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (run through scripts/bench)");
    let admin_options: PgConnectOptions = url.parse().expect("DATABASE_URL");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin_options.clone())
        .await
        .expect("connect");
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .expect("create");
    let options = admin_options.database(name);
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options.clone())
        .await
        .expect("connect bench db");
    Store::from_pool(pool.clone())
        .migrate()
        .await
        .expect("migrate");
    (pool, options)
}

/// The account and region the benchmark's events fall back on.
fn bench_parse_context() -> ParseContext {
    ParseContext {
        default_account: AccountId::parse(ACCOUNT).ok(),
        default_region: Region::parse(REGION).ok(),
    }
}

fn instant_pipeline(pool: &PgPool) -> Arc<Pipeline> {
    instant_pipeline_with(pool, false)
}

fn instant_pipeline_with(pool: &PgPool, alerts: bool) -> Arc<Pipeline> {
    let registry: Arc<dyn Registry> = Arc::new(InstantRegistry);
    Arc::new(
        Pipeline::builder(registry, Store::from_pool(pool.clone()).with_alerts(alerts))
            .cache_ttl(Duration::from_secs(3600))
            .parse_context(bench_parse_context())
            .build(),
    )
}

/// Runs the messages as the worker does: batches of 10, four at once, each a task of its own
/// on the multi-threaded runtime (src/source/sqs.rs spawns each batch); returns the elapsed
/// time and every message's latency (its batch's duration) in milliseconds.
async fn run_batches(
    pipeline: &Arc<Pipeline>,
    messages: &[InboundMessage],
) -> (Duration, Vec<f64>) {
    let started = Instant::now();
    let latencies: Vec<Vec<f64>> = futures::stream::iter(messages.chunks(10))
        .map(|batch| {
            let pipeline = Arc::clone(pipeline);
            let batch = batch.to_vec();
            let task = tokio::spawn(async move {
                let begun = Instant::now();
                let fates = pipeline.process_batch(&batch).await;
                assert!(
                    fates.iter().all(|f| matches!(f, MessageFate::Done(_))),
                    "{fates:?}"
                );
                vec![begun.elapsed().as_secs_f64() * 1000.0; batch.len()]
            });
            async move { task.await.expect("batch task") }
        })
        .buffer_unordered(in_flight())
        .collect()
        .await;
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    (started.elapsed(), all)
}

/// A figure for `scripts/bench`'s one table (scripts/bench_table.py knows each key's label,
/// unit and target).
fn figure(key: &str, value: f64) {
    println!("figure {key} {value}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

const TABLES: [&str; 4] = ["repositories", "control_results", "images", "evidence"];

/// Copies the rows a run wrote into a fresh database with COPY: the raw write ceiling for
/// the same data.
async fn copy_ceiling(source: &PgPool) -> (Duration, u64) {
    let (target, _) = fresh_database("bench_copy").await;
    let mut dumps = Vec::new();
    let mut rows = 0;
    for table in TABLES {
        let mut connection = source.acquire().await.expect("acquire");
        let mut out = connection
            .copy_out_raw(&format!("COPY {table} TO STDOUT"))
            .await
            .expect("copy out");
        let mut data = Vec::new();
        while let Some(chunk) = out.next().await {
            data.extend_from_slice(&chunk.expect("chunk"));
        }
        rows += data.iter().filter(|b| **b == b'\n').count() as u64;
        dumps.push((table, data));
    }
    let started = Instant::now();
    let mut tx = target.begin().await.expect("begin");
    for (table, data) in &dumps {
        let mut copy = tx
            .copy_in_raw(&format!("COPY {table} FROM STDIN"))
            .await
            .expect("copy in");
        copy.send(data.as_slice()).await.expect("send");
        copy.finish().await.expect("finish");
    }
    tx.commit().await.expect("commit");
    (started.elapsed(), rows)
}

async fn throughput(n: usize) {
    let (pool, _) = fresh_database("bench_pipeline").await;
    let pipeline = instant_pipeline(&pool);
    // Warm the repository cache, as in steady state.
    run_batches(&pipeline, &push_messages(50, "warm")).await;
    let messages = push_messages(n, "main");
    let (elapsed, latencies) = run_batches(&pipeline, &messages).await;
    let rate = n as f64 / elapsed.as_secs_f64();

    let (copy_elapsed, copy_rows) = copy_ceiling(&pool).await;
    let events_written = n + 50;
    let copy_rate = events_written as f64 / copy_elapsed.as_secs_f64();

    let (baseline_pool, _) = fresh_database("bench_baseline").await;
    let baseline = instant_pipeline(&baseline_pool);
    let singles = push_messages(n.min(2000), "single");
    let started = Instant::now();
    for message in &singles {
        let fates = baseline.process_batch(std::slice::from_ref(message)).await;
        assert!(matches!(fates[0], MessageFate::Done(_)));
    }
    let baseline_rate = singles.len() as f64 / started.elapsed().as_secs_f64();

    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| pipeline ingest, facts cached ({n} push events, batches of 10, {} in flight) | {rate:.0} events/s | |",
        in_flight()
    );
    println!(
        "| COPY ceiling (the same {copy_rows} rows into the same tables) | {copy_rate:.0} events/s | |"
    );
    println!(
        "| pipeline / COPY ceiling | {:.0} % | ≥ 25 % |",
        100.0 * rate / copy_rate
    );
    println!(
        "| one transaction per event, one at a time ({} events) | {baseline_rate:.0} events/s | |",
        singles.len()
    );
    println!(
        "| pipeline / one-per-event baseline | {:.1}× | ≥ 10× |",
        rate / baseline_rate
    );
    println!(
        "| receive → commit latency p50 | {:.1} ms | |",
        percentile(&latencies, 0.50)
    );
    println!(
        "| receive → commit latency p99 | {:.1} ms | < 25 ms |",
        percentile(&latencies, 0.99)
    );
    figure("ingest_events_per_s", rate);
    figure("copy_ceiling_share_pct", 100.0 * rate / copy_rate);
    figure("one_per_event_multiple", rate / baseline_rate);
    figure("receive_commit_p50_ms", percentile(&latencies, 0.50));
    figure("receive_commit_p99_ms", percentile(&latencies, 0.99));
}

/// The evidence head lock as one pipeline's metrics saw it: batches, seconds held in all,
/// and the 99th percentile's bucket bound (seconds).
struct LockHeld {
    batches: f64,
    seconds: f64,
    p99_bound: f64,
}

fn lock_held(metrics: &Metrics) -> LockHeld {
    let text = metrics.render().expect("render metrics");
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let name = "ecr_audit_evidence_lock_held_seconds";
    let mut held = LockHeld {
        batches: 0.0,
        seconds: 0.0,
        p99_bound: 0.0,
    };
    let mut buckets = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let bound = rest.split('"').next().unwrap_or("+Inf");
            buckets.push((bound.parse::<f64>().unwrap_or(f64::INFINITY), value(line)));
        } else if line.starts_with(&format!("{name}_sum")) {
            held.seconds = value(line);
        } else if line.starts_with(&format!("{name}_count")) {
            held.batches = value(line);
        }
    }
    held.p99_bound = buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= 0.99 * held.batches)
        .map_or(0.0, |(bound, _)| *bound);
    held
}

/// The worker's head task as production runs it: a KMS key in the emulator signs every head,
/// an Object Lock bucket anchors it. Heads every `records` records (the default 1,000).
async fn signing_head_task(records: u64) -> ecr_audit::evidence::heads::HeadTask {
    let sdk = ecr_audit::aws::load_sdk_config().await;
    let key = aws_sdk_kms::Client::new(&sdk)
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .expect("create key")
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("key arn")
        .to_owned();
    let bucket = format!("ecr-audit-bench-heads-{}", std::process::id());
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
    .create_bucket()
    .bucket(&bucket)
    .object_lock_enabled_for_bucket(true)
    .send()
    .await
    .expect("create bucket");
    ecr_audit::evidence::heads::HeadTask {
        signer: Some(ecr_audit::evidence::heads::KmsSigner::new(&sdk, key)),
        anchor: Some(ecr_audit::evidence::anchor::Anchor::new(
            &sdk, bucket, 1, None,
        )),
        records,
        interval: Duration::from_secs(60),
    }
}

/// Ingest with tree heads signed by KMS and anchored in S3 against ingest without heads, in
/// alternating runs (off, on, off, on) so that the machine's drift hits both alike.
async fn signing(n: usize) {
    let mut rates: BTreeMap<bool, Vec<f64>> = BTreeMap::new();
    let mut heads_made = 0_i64;
    for signed in [false, true, false, true] {
        let (pool, _) = fresh_database("bench_signing").await;
        let pipeline = instant_pipeline(&pool);
        run_batches(&pipeline, &push_messages(50, "warm")).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let task = if signed {
            let task = signing_head_task(1000).await;
            Some(tokio::spawn(ecr_audit::evidence::heads::run_periodically(
                pool.clone(),
                task,
                pipeline.metrics().clone(),
                stop.clone(),
            )))
        } else {
            None
        };
        let messages = push_messages(n, "signing");
        let (elapsed, _) = run_batches(&pipeline, &messages).await;
        rates
            .entry(signed)
            .or_default()
            .push(n as f64 / elapsed.as_secs_f64());
        stop.cancel();
        if let Some(task) = task {
            let _ = task.await;
            let signed_heads: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM evidence_heads WHERE signature IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .expect("heads");
            heads_made += signed_heads;
        }
    }
    let best = |signed: bool| rates[&signed].iter().copied().fold(0.0, f64::max);
    let (off, on) = (best(false), best(true));
    println!(
        "signing: {n} events without heads {:?} events/s, with heads signed by KMS and anchored in S3 every 1,000 records {:?} events/s ({heads_made} signed heads); best of two each: {off:.0} vs {on:.0} events/s, {:+.1} %",
        rates[&false].iter().map(|r| r.round()).collect::<Vec<_>>(),
        rates[&true].iter().map(|r| r.round()).collect::<Vec<_>>(),
        100.0 * (on - off) / off
    );
    figure("signing_off_events_per_s", off);
    figure("signing_on_events_per_s", on);
    figure("signing_cost_pct", 100.0 * (off - on) / off);
}

/// N events shared by K pipelines on one database, as K worker processes would: each has a
/// pool and metrics of its own and runs its share in batches of 10, `in_flight()` at once.
async fn workers(n: usize) {
    println!(
        "| workers | events/s | batches | lock held mean | lock held p99 ≤ | lock busy | ceiling, one sequence |"
    );
    println!("|---|---|---|---|---|---|---|");
    for count in [1_usize, 2, 4] {
        let (pool, options) = fresh_database("bench_workers").await;
        // Warm the repositories once, as in steady state.
        run_batches(&instant_pipeline(&pool), &push_messages(50, "warm")).await;
        let messages = push_messages(n, &format!("workers-{count}"));
        let share = n.div_ceil(count);
        let mut pipelines = Vec::new();
        for _ in 0..count {
            let own = PgPoolOptions::new()
                .max_connections(10)
                .connect_with(options.clone())
                .await
                .expect("connect worker pool");
            pipelines.push(instant_pipeline(&own));
        }
        let started = Instant::now();
        futures::future::join_all(
            pipelines
                .iter()
                .zip(messages.chunks(share))
                .map(|(pipeline, part)| run_batches(pipeline, part)),
        )
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        let held: Vec<LockHeld> = pipelines.iter().map(|p| lock_held(p.metrics())).collect();
        let batches: f64 = held.iter().map(|h| h.batches).sum();
        let seconds: f64 = held.iter().map(|h| h.seconds).sum();
        let p99 = held.iter().map(|h| h.p99_bound).fold(0.0, f64::max);
        let mean = if batches > 0.0 {
            seconds / batches
        } else {
            0.0
        };
        let ceiling = if mean > 0.0 { 10.0 / mean } else { 0.0 };
        println!(
            "| {count} | {:.0} | {batches:.0} | {:.2} ms | {:.2} ms | {:.0} % | {ceiling:.0} events/s |",
            n as f64 / elapsed,
            mean * 1000.0,
            p99 * 1000.0,
            100.0 * seconds / elapsed,
        );
        figure(&format!("workers_{count}_events_per_s"), n as f64 / elapsed);
        figure(&format!("workers_{count}_lock_held_mean_ms"), mean * 1000.0);
        figure(
            &format!("workers_{count}_lock_busy_pct"),
            100.0 * seconds / elapsed,
        );
        figure(
            &format!("workers_{count}_lock_ceiling_events_per_s"),
            ceiling,
        );
    }
}

/// An alert storm: the same pushes with alerts off and on; every push is UNTRUSTED, so with
/// alerts on each one queues an alert. One pipeline each. The alerts are queued under the head
/// lock, so the hold per batch is the figure to watch.
async fn alerts(n: usize) {
    println!("| alerts | events/s | alerts queued | lock held mean | lock busy |");
    println!("|---|---|---|---|---|");
    for (label, on) in [("off", false), ("on, every push pages", true)] {
        let (pool, _) = fresh_database("bench_alerts").await;
        let pipeline = instant_pipeline_with(&pool, on);
        run_batches(&pipeline, &push_messages(50, "warm")).await;
        let before = lock_held(pipeline.metrics());
        let (elapsed, _) = run_batches(&pipeline, &push_messages(n, "storm")).await;
        let after = lock_held(pipeline.metrics());
        let batches = after.batches - before.batches;
        let seconds = after.seconds - before.seconds;
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM alert_outbox")
            .fetch_one(&pool)
            .await
            .expect("outbox");
        let mean_ms = if batches > 0.0 {
            1000.0 * seconds / batches
        } else {
            0.0
        };
        let rate = n as f64 / elapsed.as_secs_f64();
        println!(
            "| {label} | {rate:.0} | {queued} | {mean_ms:.2} ms | {:.0} % |",
            100.0 * seconds / elapsed.as_secs_f64()
        );
        let key = if on { "on" } else { "off" };
        figure(&format!("alerts_{key}_events_per_s"), rate);
        figure(&format!("alerts_{key}_lock_held_mean_ms"), mean_ms);
    }
}

async fn rss(n: usize) {
    let (pool, _) = fresh_database("bench_rss").await;
    let pipeline = instant_pipeline(&pool);
    let started = Instant::now();
    // Generated lazily, as `ingest` streams a file: memory must not grow with n.
    let mut done = 0;
    while done < n {
        let chunk = push_messages(1000.min(n - done), &format!("rss{done}"));
        run_batches(&pipeline, &chunk).await;
        done += chunk.len();
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ? kB")
        .trim_start_matches("VmHWM:")
        .trim()
        .to_owned();
    println!(
        "| peak RSS, {n}-event ingest ({:.0} s) | {peak} | ≤ 32 MiB |",
        started.elapsed().as_secs_f64()
    );
    if let Some(kib) = peak
        .split_whitespace()
        .next()
        .and_then(|k| k.parse::<f64>().ok())
    {
        figure("ingest_peak_rss_mib", kib / 1024.0);
    }
}

async fn emulator_calls(account: &str) -> f64 {
    let url = format!(
        "{}/_emulator/requests?account={account}",
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL")
    );
    let body: serde_json::Value = reqwest::get(url)
        .await
        .expect("requests")
        .json()
        .await
        .expect("json");
    body.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with("sqs.") && !k.starts_with("events."))
                .filter_map(|(_, v)| v.as_f64())
                .sum()
        })
        .unwrap_or(0.0)
}

#[allow(
    clippy::too_many_lines,
    reason = "one benchmark scenario, measured step by step"
)]
async fn calls(n: usize) {
    let sdk = ecr_audit::aws::load_sdk_config().await;
    let ecr = aws_sdk_ecr::Client::new(&sdk);
    let (pool, _) = fresh_database("bench_calls").await;
    let metrics = Arc::new(Metrics::new());
    let registry: Arc<dyn Registry> = Arc::new(ecr_audit::enrich::ecr::EcrRegistry::with_options(
        sdk.clone(),
        Arc::clone(&metrics),
        Default::default(),
        ecr_audit::enrich::ecr::ApiPacing {
            calls_per_second: std::num::NonZeroU32::new(1000).expect("non-zero"),
        },
    ));
    let pipeline = Arc::new(
        Pipeline::builder(Arc::clone(&registry), Store::from_pool(pool.clone()))
            .metrics(metrics)
            .cache_ttl(Duration::from_secs(3600))
            .parse_context(bench_parse_context())
            .build(),
    );
    let run = Utc::now().timestamp();
    let repository = format!("bench-calls-{run}");
    ecr.create_repository()
        .repository_name(&repository)
        .send()
        .await
        .expect("create");
    let mut pushes = Vec::new();
    for i in 0..=n {
        let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": digest(i, &format!("c{run}"))},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 10, "digest": digest(i, &format!("l{run}"))}]})
        .to_string();
        let pushed = ecr
            .put_image()
            .repository_name(&repository)
            .image_tag(format!("v{i}"))
            .image_manifest(manifest)
            .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .expect("push");
        pushes.push(
            pushed
                .image()
                .and_then(|i| i.image_id())
                .and_then(|i| i.image_digest())
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // What EventBridge delivers for each push: the image action and the CloudTrail record.
    let events = |i: usize, digest: &str| {
        let time = Utc::now().to_rfc3339();
        let action = json!({"version": "0", "id": format!("a{run}-{i}"), "detail-type": "ECR Image Action",
            "source": "aws.ecr", "account": ACCOUNT, "time": time, "region": REGION, "resources": [],
            "detail": {"result": "SUCCESS", "action-type": "PUSH", "repository-name": repository,
                       "image-digest": digest, "image-tag": format!("v{i}")}});
        let trail = json!({"version": "0", "id": format!("t{run}-{i}"), "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.ecr", "account": ACCOUNT, "time": time, "region": REGION, "resources": [],
            "detail": {"eventID": format!("ct{run}-{i}"), "eventTime": time, "eventSource": "ecr.amazonaws.com",
                       "eventName": "PutImage", "awsRegion": REGION, "eventType": "AwsApiCall",
                       "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/ci/bench"},
                       "requestParameters": {"repositoryName": repository, "imageTag": format!("v{i}")},
                       "responseElements": {"image": {"imageId": {"imageDigest": digest, "imageTag": format!("v{i}")}}}}});
        [action, trail].map(|body| InboundMessage {
            sent_at: None,
            source: "sqs",
            message_id: None,
            body: body.to_string().into_bytes(),
            format: InputFormat::Envelope,
        })
    };
    // The first push warms the repository cache (steady state is with facts cached).
    pipeline.process_batch(&events(0, &pushes[0])).await;
    let before = emulator_calls(ACCOUNT).await;
    for (i, digest) in pushes.iter().enumerate().skip(1) {
        let fates = pipeline.process_batch(&events(i, digest)).await;
        assert!(
            fates.iter().all(|f| matches!(f, MessageFate::Done(_))),
            "{fates:?}"
        );
    }
    let per_event = (emulator_calls(ACCOUNT).await - before) / (2 * n) as f64;

    // A full sweep of a registry of its own.
    let sweep_account = format!("5{:011}", run % 100_000_000_000);
    let assumed = aws_sdk_sts::Client::new(&sdk)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{sweep_account}:role/bench"))
        .role_session_name("bench")
        .send()
        .await
        .expect("assume role");
    let credentials = assumed.credentials().expect("credentials");
    let swept_sdk = sdk
        .to_builder()
        .credentials_provider(aws_sdk_ecr::config::SharedCredentialsProvider::new(
            aws_sdk_ecr::config::Credentials::new(
                credentials.access_key_id(),
                credentials.secret_access_key(),
                Some(credentials.session_token().to_owned()),
                None,
                "bench",
            ),
        ))
        .build();
    let swept_ecr = aws_sdk_ecr::Client::new(&swept_sdk);
    let repositories = 200;
    for r in 0..repositories {
        swept_ecr
            .create_repository()
            .repository_name(format!("sweep-{r}"))
            .send()
            .await
            .expect("create");
    }
    let sweep_registry: Arc<dyn Registry> =
        Arc::new(ecr_audit::enrich::ecr::EcrRegistry::with_options(
            swept_sdk,
            Arc::new(Metrics::new()),
            Default::default(),
            ecr_audit::enrich::ecr::ApiPacing {
                calls_per_second: std::num::NonZeroU32::new(1000).expect("non-zero"),
            },
        ));
    let (sweep_pool, _) = fresh_database("bench_sweep").await;
    let sweep_pipeline = Arc::new(
        Pipeline::builder(Arc::clone(&sweep_registry), Store::from_pool(sweep_pool))
            .cache_ttl(Duration::from_secs(3600))
            .build(),
    );
    let before = emulator_calls(&sweep_account).await;
    let started = Instant::now();
    let report = ecr_audit::source::reconcile::Reconciler::new(
        sweep_pipeline,
        sweep_registry,
        vec![(
            AccountId::parse(&sweep_account).expect("account"),
            Region::parse(REGION).expect("region"),
        )],
    )
    .sweep(&())
    .await
    .expect("sweep");
    let sweep_time = started.elapsed();
    let per_repository = (emulator_calls(&sweep_account).await - before) / repositories as f64;
    assert_eq!(report.repositories, repositories as u64);
    println!(
        "| AWS calls per push event, steady state ({n} pushes = {} events, at the emulator) | {per_event:.2} | ≤ 3 |",
        2 * n
    );
    println!(
        "| AWS calls per repository, full sweep ({repositories} repositories, at the emulator, {:.1} s) | {per_repository:.2} | ≤ 2 |",
        sweep_time.as_secs_f64()
    );
    figure("aws_calls_per_push_event", per_event);
    figure("aws_calls_per_repository_sweep", per_repository);
}

/// Requests per second and seconds of the verdict load.
const VERDICT_RATE: u64 = 1000;
const VERDICT_SECONDS: u64 = 10;
/// The images deployments ask about (a cluster runs a few hundred distinct images, asked
/// about again at every Pod start), out of the N in the ledger.
const DEPLOYED: usize = 500;

fn bench_policy() -> Arc<ecr_audit::export::deploy_policy::DeployPolicy> {
    let text = json!({
        "requirements": {"signature": {"status": ["SIGNED"]}, "controls": ["ECR.2"]},
        "scopes": [{"name": "prod", "clusters": ["prod"], "mode": "strict", "stale": "fail-closed"}],
        "default": {"mode": "audit"}
    });
    Arc::new(
        ecr_audit::export::deploy_policy::DeployPolicy::parse(text.to_string().as_bytes())
            .expect("policy"),
    )
}

/// Starts the real worker (its queue in the emulator stays empty) serving verdicts from the
/// ledger in `pool`; returns its address and its stop token.
async fn verdict_worker(
    pool: &PgPool,
) -> (
    std::net::SocketAddr,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), ecr_audit::worker::WorkerError>>,
) {
    let sdk = ecr_audit::aws::load_sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name("ecr-audit-bench-verdicts")
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("queue url")
        .to_owned();
    let mut background = ecr_audit::worker::Background::new(Duration::from_secs(60));
    background.deploy_policy = Some(bench_policy());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let token = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(ecr_audit::worker::run(
        instant_pipeline(pool),
        sqs,
        ecr_audit::source::sqs::SqsSettings::new(queue_url),
        background,
        listener,
        token.clone(),
    ));
    (addr, token, handle)
}

fn verdict_url(addr: std::net::SocketAddr, i: usize, salt: &str) -> String {
    format!(
        "http://{addr}/v1/verdict?cluster=prod&image={ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/bench/app-{}@{}",
        i % 50,
        digest(i, salt)
    )
}

/// `total` verdict requests at [`VERDICT_RATE`] per second, open loop: each is due at its slot
/// and its latency counts from then, so a slow answer cannot hide the requests that would have
/// queued behind it. Returns the latencies (ms), how many were not answered from a current
/// view, and the time taken.
async fn open_loop(
    client: reqwest::Client,
    addr: std::net::SocketAddr,
    total: usize,
) -> (Vec<f64>, usize, Duration) {
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = started + Duration::from_micros(i as u64 * 1_000_000 / VERDICT_RATE);
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), verdict_url(addr, i % DEPLOYED, "fill"));
        requests.spawn(async move {
            let answered = match client.get(url).send().await {
                Ok(response) if response.status().is_success() => {
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    body["known"] == true && body["stale"] == false
                }
                _ => false,
            };
            (due.elapsed().as_secs_f64() * 1000.0, answered)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut wrong = 0;
    while let Some(done) = requests.join_next().await {
        let (latency, answered) = done.expect("request task");
        latencies.push(latency);
        wrong += usize::from(!answered);
    }
    (latencies, wrong, started.elapsed())
}

/// Ingest while serving verdicts: the pace of the paced run, events per second.
const PACED_EVENTS_PER_S: usize = 200;

/// One run of the verdict load beside an ingest.
struct VerdictRun {
    latencies: Vec<f64>,
    wrong: usize,
    rate: f64,
    events: usize,
    ingest_rate: f64,
}

impl VerdictRun {
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }

    fn print(&self, how: &str) {
        println!(
            "verdicts while ingesting {how}: {} at {:.0}/s ({DEPLOYED} distinct images) while {} pushes were ingested at {:.0} events/s",
            self.latencies.len(),
            self.rate,
            self.events,
            self.ingest_rate
        );
        println!(
            "  latency from when due: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} not answered from a current view",
            self.percentile(0.50),
            self.percentile(0.99),
            self.percentile(0.999),
            self.latencies.last().copied().unwrap_or_default(),
            self.wrong
        );
    }
}

/// The open-loop verdict load on a thread and runtime of its own (as a caller in another
/// process: its requests do not queue behind the ingest's tasks, so what is measured is the
/// worker), while `events` are ingested, paced at `pace` events/s or as fast as they go.
async fn serve_while_ingesting(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    pipeline: &Arc<Pipeline>,
    events: &[InboundMessage],
    pace: Option<usize>,
) -> VerdictRun {
    let total = (VERDICT_RATE * VERDICT_SECONDS) as usize;
    let caller = client.clone();
    let load = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("load runtime");
        runtime.block_on(open_loop(caller, addr, total))
    });
    let ingest = async {
        let started = Instant::now();
        match pace {
            Some(per_second) => run_batches_paced(pipeline, events, per_second).await,
            None => {
                run_batches(pipeline, events).await;
            }
        }
        started.elapsed()
    };
    let (ingest_time, loaded) = tokio::join!(ingest, load);
    let (mut latencies, wrong, elapsed) = loaded.expect("load thread");
    latencies.sort_by(f64::total_cmp);
    VerdictRun {
        latencies,
        wrong,
        rate: total as f64 / elapsed.as_secs_f64(),
        events: events.len(),
        ingest_rate: events.len() as f64 / ingest_time.as_secs_f64(),
    }
}

/// Batches of 10 handed over at `per_second` events per second, as a queue delivering a
/// steady stream would, `in_flight()` at once at most.
async fn run_batches_paced(pipeline: &Pipeline, messages: &[InboundMessage], per_second: usize) {
    let started = Instant::now();
    let spacing = Duration::from_secs_f64(10.0 / per_second.max(1) as f64);
    futures::stream::iter(messages.chunks(10).enumerate())
        .map(|(i, batch)| async move {
            tokio::time::sleep_until((started + spacing * i as u32).into()).await;
            let fates = pipeline.process_batch(batch).await;
            assert!(
                fates.iter().all(|f| matches!(f, MessageFate::Done(_))),
                "{fates:?}"
            );
        })
        .buffer_unordered(in_flight())
        .collect::<Vec<()>>()
        .await;
}

#[allow(
    clippy::too_many_lines,
    reason = "one benchmark scenario, measured step by step"
)]
async fn verdicts(n: usize) {
    let (pool, _) = fresh_database("bench_verdicts").await;
    let filler = instant_pipeline(&pool);
    run_batches(&filler, &push_messages(n, "fill")).await;
    let loading = Instant::now();
    let (addr, token, handle) = verdict_worker(&pool).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    // The view is loaded when a ledger image is known and the view is current.
    loop {
        let answer: serde_json::Value = match client.get(verdict_url(addr, 0, "fill")).send().await
        {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if answer["known"] == true && answer["stale"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load = loading.elapsed();
    println!("verdict view: {n} images loaded and current in {load:.2?}");
    figure("verdict_view_load_s", load.as_secs_f64());

    // Ingest meanwhile, into the same database, notified to the view: first at a steady
    // pace (the estate's peak, docs/PERFORMANCE.md), then as fast as the machine goes.
    let paced = push_messages(PACED_EVENTS_PER_S * VERDICT_SECONDS as usize, "paced");
    let steady =
        serve_while_ingesting(&client, addr, &filler, &paced, Some(PACED_EVENTS_PER_S)).await;
    steady.print("steadily");
    figure("verdicts_per_s", steady.rate);
    figure("verdicts_p50_ms", steady.percentile(0.50));
    figure("verdicts_p99_ms", steady.percentile(0.99));
    figure("verdicts_unanswered", steady.wrong as f64);
    let flat_out = push_messages(20_000, "live");
    let saturated = serve_while_ingesting(&client, addr, &filler, &flat_out, None).await;
    saturated.print("flat out");
    figure("verdicts_saturated_p99_ms", saturated.percentile(0.99));
    figure("verdicts_saturated_unanswered", saturated.wrong as f64);
    figure("verdicts_ingest_events_per_s", saturated.ingest_rate);
    let recorded: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum((detail->>'count')::bigint), 0)::bigint FROM evidence WHERE kind = 'deploy_verdict'",
    )
    .fetch_one(&pool)
    .await
    .expect("recorded");
    token.cancel();
    let _ = handle.await;
    let after: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum((detail->>'count')::bigint), 0)::bigint FROM evidence WHERE kind = 'deploy_verdict'",
    )
    .fetch_one(&pool)
    .await
    .expect("recorded");
    let records: i64 =
        sqlx::query_scalar("SELECT count(*) FROM evidence WHERE kind = 'deploy_verdict'")
            .fetch_one(&pool)
            .await
            .expect("records");
    println!(
        "  evidence: {after} verdicts in {records} deploy_verdict records ({recorded} recorded before the worker stopped)"
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("throughput");
    let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match mode {
            "throughput" => throughput(n).await,
            "rss" => rss(n).await,
            "calls" => calls(n).await,
            "workers" => workers(n).await,
            "verdicts" => verdicts(n).await,
            "signing" => signing(n).await,
            "alerts" => alerts(n).await,
            other => {
                eprintln!(
                    "unknown mode {other}: throughput | rss | calls | workers | verdicts | signing | alerts"
                );
            }
        }
    });
}

/// Batches in flight, as `ECR_AUDIT_MAX_IN_FLIGHT_BATCHES` (default 4).
fn in_flight() -> usize {
    std::env::var("ECR_AUDIT_MAX_IN_FLIGHT_BATCHES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4)
}
