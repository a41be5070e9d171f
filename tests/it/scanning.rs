//! ECR.1 from AWS's own answer (`BatchGetRepositoryScanningConfiguration`) and what a sweep
//! costs in AWS calls, counted at the emulator.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ecr::types::{
    ImageScanningConfiguration, RegistryScanningRule, ScanFrequency, ScanType,
    ScanningRepositoryFilter, ScanningRepositoryFilterType,
};

use crate::helpers::{TestApp, emulator_requests, metric_value, push_image};

/// A BASIC registry whose only scan-on-push rule matches `elsewhere-*`: by the user guide,
/// every other repository is `MANUAL`, whatever its own (deprecated) `scanOnPush` flag says.
async fn basic_rule_for_other_repositories(app: &TestApp) {
    app.ecr
        .put_registry_scanning_configuration()
        .scan_type(ScanType::Basic)
        .rules(
            RegistryScanningRule::builder()
                .scan_frequency(ScanFrequency::ScanOnPush)
                .repository_filters(
                    ScanningRepositoryFilter::builder()
                        .filter("elsewhere-*")
                        .filter_type(ScanningRepositoryFilterType::Wildcard)
                        .build()
                        .expect("filter"),
                )
                .build()
                .expect("rule"),
        )
        .send()
        .await
        .expect("registry scanning configuration");
}

/// The rules as this project applies them say SCAN_ON_PUSH (the repository's flag), AWS says
/// MANUAL: ECR.1 follows AWS, the reason names both, and the disagreement is counted.
#[tokio::test]
async fn ecr1_follows_aws_when_the_registry_rules_say_otherwise_and_counts_it() {
    let mut app = TestApp::new_in_own_account().await;
    app.start_worker().await;
    basic_rule_for_other_repositories(&app).await;
    let name = app.repo("flagged");
    app.ecr
        .create_repository()
        .repository_name(&name)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(true)
                .build(),
        )
        .send()
        .await
        .expect("create repository");

    let ecr1 = app
        .eventually("ECR.1 judged", Duration::from_secs(30), || async {
            let rows = app.store.posture(Some(&name)).await.ok()?;
            let row = rows.into_iter().next()?;
            row.controls.get("ECR.1").cloned()
        })
        .await;

    assert_eq!(ecr1.status, "FAIL", "{}", ecr1.reason);
    assert!(ecr1.reason.contains("reported by AWS"), "{}", ecr1.reason);
    assert!(
        ecr1.reason
            .contains("registry rules as applied here give SCAN_ON_PUSH"),
        "{}",
        ecr1.reason
    );
    let metrics = app.scrape().await;
    let counted = metric_value(
        &metrics,
        "ecr_audit_scanning_disagreements_total",
        &[("fact", "scan_frequency")],
    );
    assert!(counted.is_some_and(|n| n >= 1.0), "{counted:?}");
    app.finish().await;
}

fn calls(counted: &BTreeMap<String, u64>, operation: &str) -> u64 {
    counted.get(operation).copied().unwrap_or(0)
}

/// The calls a sweep makes per repository for the Security Hub ECR controls: the listing
/// (ECR.2, ECR.5's type), the lifecycle policy (ECR.3), scanning (ECR.1, batched) and the
/// key ownership (ECR.5, once per key).
fn security_hub_share(counted: &BTreeMap<String, u64>, repositories: u64) -> f64 {
    let operations = [
        "ecr.DescribeRepositories",
        "ecr.GetLifecyclePolicy",
        "ecr.BatchGetRepositoryScanningConfiguration",
        "ecr.GetRegistryScanningConfiguration",
        "kms.DescribeKey",
    ];
    let total: u64 = operations.iter().map(|op| calls(counted, op)).sum();
    total as f64 / repositories as f64
}

/// A first sweep reads each repository once — planning the images it found reuses the
/// listing instead of reading the repositories again — and asks for scanning 25 repositories a
/// call. Prints the calls per repository of the first and the second sweep.
#[tokio::test]
async fn a_first_sweep_reads_each_repository_once_and_scanning_in_batches() {
    const REPOSITORIES: u64 = 30;
    let app = TestApp::new_in_own_account().await;
    for n in 0..REPOSITORIES {
        let name = app.create_repository(&format!("swept-{n:02}")).await;
        push_image(&app.ecr, &name, "v1", &format!("{}-{n}", app.prefix)).await;
    }
    emulator_requests(&app.account, true).await;

    let first = app.reconciler().sweep(&()).await.expect("first sweep");
    let counted = emulator_requests(&app.account, false).await;
    emulator_requests(&app.account, true).await;
    let second = app.reconciler().sweep(&()).await.expect("second sweep");
    let again = emulator_requests(&app.account, false).await;

    assert_eq!(first.repositories, REPOSITORIES, "{first:?}");
    assert_eq!(second.total_changes(), 0, "{second:?}");
    for (name, counted) in [("first", &counted), ("second", &again)] {
        let total: u64 = counted.values().sum();
        println!(
            "{name} sweep of {REPOSITORIES} repositories: {total} calls, {:.2} per repository, \
             Security Hub controls' share {:.2}: {counted:?}",
            total as f64 / REPOSITORIES as f64,
            security_hub_share(counted, REPOSITORIES)
        );
    }
    assert_eq!(
        calls(&counted, "ecr.DescribeRepositories"),
        1,
        "{counted:?}"
    );
    assert_eq!(
        calls(&counted, "ecr.GetLifecyclePolicy"),
        REPOSITORIES,
        "{counted:?}"
    );
    assert_eq!(
        calls(&counted, "ecr.GetRepositoryPolicy"),
        REPOSITORIES,
        "{counted:?}"
    );
    assert_eq!(
        calls(&counted, "ecr.BatchGetRepositoryScanningConfiguration"),
        REPOSITORIES.div_ceil(25),
        "{counted:?}"
    );
    assert_eq!(
        calls(&counted, "ecr.GetRegistryScanningConfiguration"),
        1,
        "{counted:?}"
    );
    assert!(security_hub_share(&counted, REPOSITORIES) < 2.0);
    assert!(security_hub_share(&again, REPOSITORIES) < 2.0);
    app.finish().await;
}

/// `ECR Scan Resource Change` names the repositories whose scanning changed: exactly those are
/// read again, not every repository of the registry.
#[tokio::test]
async fn a_scan_resource_change_re_reads_only_the_repositories_it_names() {
    let mut app = TestApp::new_in_own_account().await;
    app.start_worker().await;
    let named: Vec<String> = vec![
        app.create_repository("rescan-a").await,
        app.create_repository("rescan-b").await,
    ];
    for n in 0..3 {
        app.create_repository(&format!("untouched-{n}")).await;
    }
    app.wait_for_drain().await;
    // The test's own rules match on one repository name; this event names a list of them.
    let _rule = crate::helpers::route_to_queue(
        &app.sdk,
        &format!("{}rescan", app.prefix),
        &serde_json::json!({"source": ["aws.ecr"], "detail-type": ["ECR Scan Resource Change"],
                            "account": [app.account]}),
        &crate::helpers::queue_arn(&app.sqs, &app.queue_url).await,
    )
    .await;
    emulator_requests(&app.account, true).await;

    let repositories: Vec<serde_json::Value> = named
        .iter()
        .map(|name| {
            serde_json::json!({
                "repository-name": name,
                "repository-arn": format!("arn:aws:ecr:{}:{}:repository/{name}", crate::helpers::REGION, app.account),
                "scan-frequency": "CONTINUOUS_SCAN",
                "previous-scan-frequency": "MANUAL",
            })
        })
        .collect();
    app.put_event(
        "ECR Scan Resource Change",
        serde_json::json!({
            "action-type": "SCAN_FREQUENCY_CHANGE",
            "scan-type": "ENHANCED",
            "resource-type": "REPOSITORY",
            "repositories": repositories,
        }),
    )
    .await;
    app.wait_for_drain().await;

    let counted = emulator_requests(&app.account, false).await;
    println!("one Scan Resource Change naming 2 of 5 repositories: {counted:?}");
    assert_eq!(
        calls(&counted, "ecr.DescribeRepositories"),
        2,
        "{counted:?}"
    );
    assert_eq!(calls(&counted, "ecr.GetLifecyclePolicy"), 2, "{counted:?}");
    assert_eq!(
        calls(&counted, "ecr.BatchGetRepositoryScanningConfiguration"),
        2,
        "{counted:?}"
    );
    app.finish().await;
}
