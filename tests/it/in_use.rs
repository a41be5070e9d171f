//! Images in use: Inspector coverage (ENHANCED scanning) says which digests run, ECR says when
//! each was last pulled; `images --in-use`, the `ecr_audit_images_in_use` gauge and the
//! "unsigned or untrusted image in use" alert show it (docs/RUNBOOK.md, "Images in use").

use std::sync::Arc;

use aws_sdk_ecr::types::{
    RegistryScanningRule, ScanFrequency, ScanType, ScanningRepositoryFilter,
    ScanningRepositoryFilterType,
};
use ecr_audit::domain::{AccountId, Region};
use ecr_audit::enrich::Registry;
use ecr_audit::enrich::ecr::EcrRegistry;
use ecr_audit::source::coverage::CoverageSweeper;
use ecr_audit::telemetry::Metrics;
use serde_json::{Value, json};

use crate::helpers::{
    REGION, TestApp, emulator_control, emulator_requests, metric_value, push_image,
};

/// ENHANCED scanning with continuous scans of this test's repositories.
pub(crate) async fn enhanced_scanning(app: &TestApp) {
    app.ecr
        .put_registry_scanning_configuration()
        .scan_type(ScanType::Enhanced)
        .rules(
            RegistryScanningRule::builder()
                .scan_frequency(ScanFrequency::ContinuousScan)
                .repository_filters(
                    ScanningRepositoryFilter::builder()
                        .filter(format!("{}*", app.prefix))
                        .filter_type(ScanningRepositoryFilterType::Wildcard)
                        .build()
                        .expect("filter"),
                )
                .build()
                .expect("rule"),
        )
        .send()
        .await
        .expect("enhanced scanning");
}

pub(crate) async fn set_in_use(app: &TestApp, repository: &str, digest: &str, count: i64) {
    emulator_control(
        "/_emulator/in-use",
        json!({"account": app.account, "region": REGION, "repositoryName": repository,
               "imageDigest": digest, "inUseCount": count}),
    )
    .await;
}

/// `ecr-audit images ARGS --format json` as a user runs it.
fn images_json(app: &TestApp, args: &[&str]) -> Vec<Value> {
    let output = assert_cmd::Command::cargo_bin("ecr-audit")
        .expect("binary")
        .arg("images")
        .args(args)
        .args(["--format", "json"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("images JSON")
}

fn digests(rows: &[Value]) -> Vec<&str> {
    rows.iter().filter_map(|r| r["digest"].as_str()).collect()
}

/// Runs the shipped alert rules over the gauge value a scrape gave, with promtool: the alert
/// fires for an unsigned image in use (and, with 0, does not).
fn promtool_fires(value: f64) -> bool {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/infra/prometheus/ecr-audit-rules.yml"
    );
    let exp_alerts = if value > 0.0 {
        format!(
            r#"
          - exp_labels:
              severity: page
              signature: UNSIGNED
            exp_annotations:
              summary: "Unsigned or untrusted image in use"
              description: '{value} image(s) with signature status UNSIGNED run in ECS or EKS (Inspector coverage). Which ones: `ecr-audit images --in-use --signature UNSIGNED`.'
              runbook_url: "docs/RUNBOOK.md#ecrauditunsignedimageinuse""#
        )
    } else {
        " []".to_owned()
    };
    let test = format!(
        "rule_files:\n  - {rules}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'ecr_audit_images_in_use{{signature=\"UNSIGNED\", instance=\"w1\"}}'\n        values: '{value}x20'\n    alert_rule_test:\n      - eval_time: 10m\n        alertname: EcrAuditUnsignedImageInUse\n        exp_alerts:{exp_alerts}\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("in_use_test.yml");
    std::fs::write(&path, test).expect("write promtool test");
    let output = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .expect("promtool (scripts/check-prometheus installs it)");
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    }
    output.status.success()
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn an_unsigned_image_in_use_is_listed_counted_and_alerted() {
    let mut app = TestApp::new_in_own_account().await;
    // Unsigned at once: no grace window to wait out.
    app.signing_grace_ms = 0;
    enhanced_scanning(&app).await;
    let repository = app.create_repository("running").await;
    let running = push_image(&app.ecr, &repository, "v1", &format!("{}-a", app.prefix)).await;
    let idle = push_image(&app.ecr, &repository, "v2", &format!("{}-b", app.prefix)).await;

    app.reconciler().sweep(&()).await.expect("first sweep");
    let all = images_json(&app, &[]);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all.iter().all(|r| r["usage"]["in_use"].is_null()),
        "no count reported yet: use unknown {all:#?}"
    );
    assert!(images_json(&app, &["--in-use"]).is_empty());

    set_in_use(&app, &repository, &running, 2).await;
    set_in_use(&app, &repository, &idle, 0).await;
    app.reconciler().sweep(&()).await.expect("second sweep");

    let in_use = images_json(&app, &["--in-use"]);
    assert_eq!(digests(&in_use), vec![running.as_str()], "{in_use:#?}");
    let row = &in_use[0];
    assert_eq!(row["usage"]["in_use"], json!(true));
    assert_eq!(row["usage"]["in_use_count"], json!(2));
    assert!(row["usage"]["last_in_use_at"].is_string(), "{row:#?}");
    assert_eq!(row["usage"]["coverage"]["status"], json!("ACTIVE"));
    assert_eq!(row["scan"]["reason"], row["usage"]["coverage"]["reason"]);
    assert!(row["scan"]["reason"].is_string(), "{row:#?}");
    assert_eq!(row["signature"]["status"], json!("UNSIGNED"));
    // Scanned or still pending, depending on the emulator's scan delay: filter by what it is.
    let scan = row["scan"]["status"].as_str().expect("a scan status");
    assert_eq!(
        digests(&images_json(
            &app,
            &["--in-use", "--signature", "unsigned", "--scan", scan]
        )),
        vec![running.as_str()]
    );
    assert!(images_json(&app, &["--in-use", "--scan", "NOT_SCANNED"]).is_empty());
    assert!(images_json(&app, &["--in-use", "--signature", "SIGNED"]).is_empty());
    let idle_row = images_json(&app, &["--repository", &repository])
        .into_iter()
        .find(|r| r["digest"] == json!(idle))
        .expect("idle row");
    assert_eq!(idle_row["usage"]["in_use"], json!(false));

    // The flip is on the evidence chain, once, though the coverage was read twice since.
    app.reconciler().sweep(&()).await.expect("third sweep");
    let flips: Vec<(String, Value)> = sqlx::query_as(
        "SELECT digest, detail FROM evidence WHERE kind = 'usage_transition' ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .expect("usage transitions");
    assert_eq!(flips.len(), 1, "{flips:?}");
    assert_eq!(flips[0].0, running);
    assert_eq!(flips[0].1["to"], json!(true));

    app.start_worker().await;
    let scraped = app.scrape().await;
    let gauge = metric_value(
        &scraped,
        "ecr_audit_images_in_use",
        &[("signature", "UNSIGNED")],
    );
    assert_eq!(gauge, Some(1.0), "{scraped}");
    assert_eq!(
        metric_value(
            &scraped,
            "ecr_audit_images_in_use",
            &[("signature", "SIGNED")]
        ),
        Some(0.0)
    );
    assert!(
        promtool_fires(gauge.unwrap_or_default()),
        "the shipped rule fires on the scraped gauge"
    );
    assert!(promtool_fires(0.0), "and stays quiet without one");
    app.finish().await;
}

#[tokio::test]
async fn the_coverage_sweep_reads_one_paged_listing_per_registry() {
    const IMAGES: usize = 5;
    let app = TestApp::new_in_own_account().await;
    enhanced_scanning(&app).await;
    let first = app.create_repository("paged-a").await;
    let second = app.create_repository("paged-b").await;
    for n in 0..IMAGES {
        let repository = if n % 2 == 0 { &first } else { &second };
        push_image(
            &app.ecr,
            repository,
            &format!("v{n}"),
            &format!("{}-{n}", app.prefix),
        )
        .await;
    }
    app.reconciler()
        .sweep(&())
        .await
        .expect("sweep stores the images");

    let metrics = Arc::new(Metrics::new());
    let registry: Arc<dyn Registry> = Arc::new(
        EcrRegistry::with_options(
            app.sdk.clone(),
            Arc::clone(&metrics),
            app.account_roles.clone(),
            ecr_audit::enrich::ecr::ApiPacing {
                calls_per_second: std::num::NonZeroU32::new(2000).expect("non-zero"),
            },
        )
        .with_coverage_page_size(2),
    );
    let sweeper = CoverageSweeper::new(registry, app.store.clone(), own_registry(&app));
    emulator_requests(&app.account, true).await;
    assert_eq!(sweeper.sweep().await, 1, "the one registry was written");
    let counted = emulator_requests(&app.account, false).await;

    assert_eq!(
        counted.get("inspector2.ListCoverage").copied(),
        Some(IMAGES.div_ceil(2) as u64),
        "pages of 2, not one call per digest: {counted:?}"
    );
    assert_eq!(counted.get("ecr.DescribeImages"), None, "{counted:?}");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM images WHERE present AND coverage_status = 'ACTIVE'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(stored, IMAGES as i64, "every page was written");

    // Another replica's sweep within half an interval finds the registry fresh and skips it.
    let replica = CoverageSweeper::new(
        app.registry(&metrics),
        app.store.clone(),
        own_registry(&app),
    )
    .skipping_fresh(std::time::Duration::from_secs(450));
    emulator_requests(&app.account, true).await;
    assert_eq!(replica.sweep().await, 0, "fresh: skipped");
    let counted = emulator_requests(&app.account, false).await;
    assert_eq!(counted.get("inspector2.ListCoverage"), None, "{counted:?}");
    app.finish().await;
}

/// A coverage sweep over the app's own account, counting into `metrics`.
/// The test's own registry (account and region) as a sweep target.
fn own_registry(app: &TestApp) -> Vec<(AccountId, Region)> {
    vec![(
        AccountId::parse(&app.account).expect("account"),
        Region::parse(REGION).expect("region"),
    )]
}

pub(crate) fn sweeper(app: &TestApp, metrics: &Arc<Metrics>) -> CoverageSweeper {
    CoverageSweeper::new(app.registry(metrics), app.store.clone(), own_registry(app))
}

#[tokio::test]
async fn last_pulled_at_follows_a_pull_under_basic_scanning() {
    let app = TestApp::new_in_own_account().await;
    let repository = app.create_repository("pulled").await;
    let digest = push_image(&app.ecr, &repository, "v1", &app.prefix).await;
    app.reconciler().sweep(&()).await.expect("first sweep");
    let before = app.store.images(Some(&repository)).await.expect("images");
    assert_eq!(before[0].usage.last_pulled_at, None, "never pulled");

    emulator_control(
        "/_emulator/pull",
        json!({"account": app.account, "region": REGION, "repositoryName": repository, "imageTag": "v1"}),
    )
    .await;
    app.reconciler().sweep(&()).await.expect("second sweep");
    let after = app.store.images(Some(&repository)).await.expect("images");
    assert_eq!(after[0].digest, digest);
    let pulled = after[0].usage.last_pulled_at.expect("pull recorded");
    assert!(
        chrono::Utc::now() - pulled < chrono::Duration::minutes(1),
        "{pulled}"
    );
    assert_eq!(after[0].usage.in_use, None, "BASIC scanning: use unknown");
    let json = images_json(&app, &["--repository", &repository]);
    assert!(json[0]["usage"]["last_pulled_at"].is_string(), "{json:#?}");
    app.finish().await;
}
