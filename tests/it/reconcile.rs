//! Controls exactly, reconcile, many accounts: a whole estate swept against the emulator.
//!
//! These tests run in AWS accounts of their own (registry-wide scanning and signing settings,
//! and a sweep lists every repository of the account, so sharing one would mix tests).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageTagMutability, ImageTagMutabilityExclusionFilter,
    ImageTagMutabilityExclusionFilterType, RctAppliedFor, RegistryScanningRule, ScanFrequency,
    ScanType, ScanningRepositoryFilter, ScanningRepositoryFilterType, SigningConfiguration,
    SigningRepositoryFilter, SigningRepositoryFilterType, SigningRule,
};
use ecr_audit::domain::AccountId;
use ecr_audit::readmodel::PostureRow;
use ecr_audit::telemetry::DriftKind;
use futures::{StreamExt, stream};
use serde_json::json;

use crate::helpers::{TestApp, push_image, route_to_queue};

const LIFECYCLE: &str = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
const OTHER_ACCOUNT: &str = "210987654321";

#[derive(Debug, Clone, Copy)]
enum Mutability {
    Immutable,
    Mutable,
    ImmutableWithExclusion,
    MutableWithExclusion,
}

#[derive(Debug, Clone, Copy)]
enum Encryption {
    Aes256,
    KmsAwsManaged,
    KmsCustomer,
    KmsDsseCustomer,
}

/// Which registry scanning rules the name matches (rules: CONTINUOUS_SCAN `prod-*`,
/// SCAN_ON_PUSH `api` — no wildcard, so "contains").
#[derive(Debug, Clone, Copy)]
enum ScanClass {
    Continuous,
    OnPush,
    Both,
    Neither,
}

#[derive(Debug, Clone, Copy)]
enum Policy {
    None,
    Public,
    CrossAccount,
    CrossAccountInOrg,
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    mutability: Mutability,
    encryption: Encryption,
    lifecycle: bool,
    scan: ScanClass,
    policy: Policy,
}

impl Case {
    /// Signing rule filter `*-signed` (WILDCARD_MATCH): names ending in it are covered.
    fn signed(&self) -> bool {
        self.name.ends_with("-signed")
    }

    /// The verdicts AWS's documented semantics give, written out independently of the code.
    fn expected(&self) -> BTreeMap<&'static str, &'static str> {
        let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
        BTreeMap::from([
            ("ECR.1", pass(!matches!(self.scan, ScanClass::Neither))),
            (
                "ECR.2",
                pass(matches!(self.mutability, Mutability::Immutable)),
            ),
            ("ECR.3", pass(self.lifecycle)),
            (
                "ECR.5",
                pass(matches!(
                    self.encryption,
                    Encryption::KmsCustomer | Encryption::KmsDsseCustomer
                )),
            ),
            ("ECRA.1", pass(!matches!(self.policy, Policy::Public))),
            (
                "ECRA.2",
                pass(!matches!(
                    self.policy,
                    Policy::Public | Policy::CrossAccount
                )),
            ),
            ("ECRA.3", pass(self.signed())),
            // The registry's one pull-through cache rule (prefix `hub`) created none of them.
            ("ECRA.4", "PASS"),
            // The registry has no repository creation template.
            ("ECRA.5", "PASS"),
        ])
    }
}

fn cases() -> Vec<Case> {
    use Encryption::*;
    use Mutability::*;
    use Policy::*;
    use ScanClass::*;
    let mut cases = Vec::new();
    for mutability in [
        Immutable,
        Mutable,
        ImmutableWithExclusion,
        MutableWithExclusion,
    ] {
        for encryption in [Aes256, KmsAwsManaged, KmsCustomer, KmsDsseCustomer] {
            for lifecycle in [true, false] {
                for scan in [Continuous, OnPush, Both, Neither] {
                    for policy in [None, Public, CrossAccount, CrossAccountInOrg] {
                        let i = cases.len();
                        let stem = match scan {
                            Continuous => format!("prod-r{i}"),
                            OnPush => format!("r{i}-api"),
                            Both => format!("prod-api-r{i}"),
                            Neither => format!("web-r{i}"),
                        };
                        let name = if i % 3 == 0 {
                            format!("{stem}-signed")
                        } else {
                            stem
                        };
                        cases.push(Case {
                            name,
                            mutability,
                            encryption,
                            lifecycle,
                            scan,
                            policy,
                        });
                    }
                }
            }
        }
    }
    cases
}

fn policy_text(policy: Policy) -> Option<String> {
    let statement = match policy {
        Policy::None => return None,
        Policy::Public => json!({"Sid": "Anyone", "Effect": "Allow", "Principal": "*",
                                 "Action": ["ecr:BatchGetImage"]}),
        Policy::CrossAccount => json!({"Sid": "Partner", "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{OTHER_ACCOUNT}:root")},
            "Action": ["ecr:BatchGetImage"]}),
        Policy::CrossAccountInOrg => json!({"Sid": "Org", "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{OTHER_ACCOUNT}:root")},
            "Action": ["ecr:BatchGetImage"],
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-example"}}}),
    };
    Some(json!({"Version": "2012-10-17", "Statement": [statement]}).to_string())
}

#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn create_case(app: &TestApp, case: &Case, customer_key: &str) {
    let (mode, filters): (ImageTagMutability, &[&str]) = match case.mutability {
        Mutability::Immutable => (ImageTagMutability::Immutable, &[]),
        Mutability::Mutable => (ImageTagMutability::Mutable, &[]),
        Mutability::ImmutableWithExclusion => (
            ImageTagMutability::ImmutableWithExclusion,
            &["latest", "dev-*"],
        ),
        Mutability::MutableWithExclusion => {
            (ImageTagMutability::MutableWithExclusion, &["release-*"])
        }
    };
    let encryption = match case.encryption {
        Encryption::Aes256 => None,
        Encryption::KmsAwsManaged => Some(
            EncryptionConfiguration::builder()
                .encryption_type(EncryptionType::Kms)
                .build()
                .expect("encryption"),
        ),
        Encryption::KmsCustomer | Encryption::KmsDsseCustomer => Some(
            EncryptionConfiguration::builder()
                .encryption_type(if matches!(case.encryption, Encryption::KmsCustomer) {
                    EncryptionType::Kms
                } else {
                    EncryptionType::KmsDsse
                })
                .kms_key(customer_key)
                .build()
                .expect("encryption"),
        ),
    };
    app.ecr
        .create_repository()
        .repository_name(&case.name)
        .image_tag_mutability(mode)
        .set_image_tag_mutability_exclusion_filters(if filters.is_empty() {
            None
        } else {
            Some(
                filters
                    .iter()
                    .map(|f| {
                        ImageTagMutabilityExclusionFilter::builder()
                            .filter(*f)
                            .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                            .build()
                            .expect("filter")
                    })
                    .collect(),
            )
        })
        .set_encryption_configuration(encryption)
        .send()
        .await
        .expect("create repository");
    if case.lifecycle {
        app.ecr
            .put_lifecycle_policy()
            .repository_name(&case.name)
            .lifecycle_policy_text(LIFECYCLE)
            .send()
            .await
            .expect("lifecycle");
    }
    if let Some(text) = policy_text(case.policy) {
        app.ecr
            .set_repository_policy()
            .repository_name(&case.name)
            .policy_text(text)
            .send()
            .await
            .expect("policy");
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn configure_registry(app: &TestApp) {
    create_pull_through_rule(app, "hub").await;
    app.ecr
        .put_registry_scanning_configuration()
        .scan_type(ScanType::Enhanced)
        .rules(
            RegistryScanningRule::builder()
                .scan_frequency(ScanFrequency::ContinuousScan)
                .repository_filters(
                    ScanningRepositoryFilter::builder()
                        .filter("prod-*")
                        .filter_type(ScanningRepositoryFilterType::Wildcard)
                        .build()
                        .expect("filter"),
                )
                .build()
                .expect("rule"),
        )
        .rules(
            RegistryScanningRule::builder()
                .scan_frequency(ScanFrequency::ScanOnPush)
                .repository_filters(
                    ScanningRepositoryFilter::builder()
                        .filter("api")
                        .filter_type(ScanningRepositoryFilterType::Wildcard)
                        .build()
                        .expect("filter"),
                )
                .build()
                .expect("rule"),
        )
        .send()
        .await
        .expect("registry scanning");
    let profile = aws_sdk_signer::Client::new(&app.sdk)
        .put_signing_profile()
        .profile_name("release")
        .platform_id("Notation-OCI-SHA384-ECDSA")
        .send()
        .await
        .expect("signing profile")
        .profile_version_arn
        .unwrap_or_default();
    let profile_arn = profile
        .rsplit_once('/')
        .map_or(profile.clone(), |(base, _)| base.to_owned());
    app.ecr
        .put_signing_configuration()
        .signing_configuration(
            SigningConfiguration::builder()
                .rules(
                    SigningRule::builder()
                        .signing_profile_arn(if profile_arn.contains("/signing-profiles/") {
                            profile_arn
                        } else {
                            profile
                        })
                        .repository_filters(
                            SigningRepositoryFilter::builder()
                                .filter("*-signed")
                                .filter_type(SigningRepositoryFilterType::WildcardMatch)
                                .build()
                                .expect("filter"),
                        )
                        .build()
                        .expect("rule"),
                )
                .build()
                .expect("signing configuration"),
        )
        .send()
        .await
        .expect("signing configuration");
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_sweep_of_512_repositories_gives_every_combination_its_documented_verdicts() {
    let app = TestApp::new_in_own_account().await;
    configure_registry(&app).await;
    let customer_key = app
        .kms
        .create_key()
        .send()
        .await
        .expect("customer key")
        .key_metadata
        .map(|m| m.arn.unwrap_or_default())
        .expect("key");
    let cases = cases();
    assert!(cases.len() >= 200);
    stream::iter(
        cases
            .iter()
            .map(|case| create_case(&app, case, &customer_key)),
    )
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;

    let counts_before = emulator_requests(&app.account).await;
    let report = app.reconciler().sweep(&()).await.expect("sweep");
    let counts_after = emulator_requests(&app.account).await;
    assert_eq!(report.repositories, cases.len() as u64);
    assert_eq!(
        report.changes.get(&DriftKind::RepositoryAdded),
        Some(&(cases.len() as u64))
    );

    let posture: BTreeMap<String, PostureRow> = app
        .store
        .posture(None)
        .await
        .expect("posture")
        .into_iter()
        .map(|row| (row.repository.clone(), row))
        .collect();
    let mut wrong = Vec::new();
    for case in &cases {
        let row = &posture[&case.name];
        for (control, expected) in case.expected() {
            let got = &row.controls[control];
            if got.status != expected {
                wrong.push(format!(
                    "{} {control}: expected {expected}, got {} ({}) — {case:?}",
                    case.name, got.status, got.reason
                ));
            }
        }
        if matches!(case.mutability, Mutability::ImmutableWithExclusion) {
            assert!(
                row.controls["ECR.2"].reason.contains("dev-*"),
                "{:?}",
                row.controls
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Calls per repository in a full sweep, counted at the emulator.
    let per_repository: f64 = counts_after
        .iter()
        .map(|(operation, n)| n - counts_before.get(operation).copied().unwrap_or(0.0))
        .sum::<f64>()
        / cases.len() as f64;
    println!(
        "full sweep: {per_repository:.2} AWS calls per repository; by operation: {:?}",
        counts_after
            .iter()
            .map(|(op, n)| (
                op.clone(),
                n - counts_before.get(op).copied().unwrap_or(0.0)
            ))
            .filter(|(_, n)| *n > 0.0)
            .collect::<BTreeMap<_, _>>()
    );
    assert!(
        per_repository <= 3.1,
        "{per_repository} calls per repository"
    );

    // A second sweep finds nothing new.
    let again = app.reconciler().sweep(&()).await.expect("sweep");
    assert_eq!(again.total_changes(), 0, "{again:?}");
    app.finish().await;
}

/// The emulator's request counters for one account, as numbers to divide.
async fn emulator_requests(account: &str) -> BTreeMap<String, f64> {
    crate::helpers::emulator_requests(account, false)
        .await
        .into_iter()
        .map(|(operation, n)| (operation, n as f64))
        .collect()
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn reconcile_catches_up_with_changes_no_event_reported() {
    let mut app = TestApp::new_in_own_account().await;
    app.start_worker().await;
    let kept = app.create_repository("kept").await;
    let doomed = app.create_repository("doomed").await;
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&kept)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("immutable");
    app.wait_for_drain().await;
    let ecr2 = |rows: &[PostureRow], name: &str| {
        rows.iter()
            .find(|r| r.repository == name)
            .map(|r| r.controls["ECR.2"].status.clone())
    };
    let rows = app.store.posture(None).await.expect("posture");
    assert_eq!(ecr2(&rows, &kept).as_deref(), Some("PASS"));

    // The events stop: the rules are gone. Then the estate changes.
    app.stop_worker().await;
    app.remove_rules().await;
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&kept)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .send()
        .await
        .expect("mutable");
    let digest = push_image(&app.ecr, &kept, "v9", "unseen").await;
    app.ecr
        .delete_repository()
        .repository_name(&doomed)
        .force(true)
        .send()
        .await
        .expect("delete");
    let newcomer = app.create_repository("newcomer").await;

    let report = app.reconciler().sweep(&()).await.expect("sweep");
    assert_eq!(
        report.changes.get(&DriftKind::RepositoryChanged),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(
        report.changes.get(&DriftKind::RepositoryDeleted),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(
        report.changes.get(&DriftKind::RepositoryAdded),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(
        report.changes.get(&DriftKind::ImageAdded),
        Some(&1),
        "{report:?}"
    );

    let rows = app.store.posture(None).await.expect("posture");
    assert_eq!(ecr2(&rows, &kept).as_deref(), Some("FAIL"));
    assert!(rows.iter().any(|r| r.repository == newcomer));
    assert!(
        !rows.iter().any(|r| r.repository == doomed),
        "deleted repositories leave the posture"
    );
    let images = app.store.images(Some(&kept)).await.expect("images");
    assert!(images.iter().any(|i| i.digest == digest), "{images:?}");

    // The drift is evidence, observed by reconcile, with the transition it caused.
    let records: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT kind, event_id, repository FROM evidence
          WHERE event_id LIKE 'reconcile/%' AND detail->>'detail_type' = 'ecr-audit Reconcile'
             OR (kind = 'control_transition' AND detail->>'cause_event_id' LIKE 'reconcile/%')
          ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .expect("evidence");
    assert!(
        records
            .iter()
            .any(|(kind, _, repo)| kind == "control_transition"
                && repo.as_deref() == Some(kept.as_str())),
        "{records:#?}"
    );
    assert!(
        records.iter().any(|(kind, _, _)| kind == "image_pushed"),
        "{records:#?}"
    );
    // Nobody's request is known: the sweep's transition says so, never borrowing an actor
    // (the earlier IMMUTABLE was made by the test's caller), in evidence, posture and history.
    let actors: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT actor FROM evidence
          WHERE kind = 'control_transition' AND detail->>'cause_event_id' LIKE 'reconcile/%'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("actors");
    assert!(!actors.is_empty());
    assert!(
        actors.iter().all(|a| a.as_deref() == Some("unattributed")),
        "{actors:?}"
    );
    let changed_by = |rows: &[PostureRow]| {
        rows.iter()
            .find(|r| r.repository == kept)
            .and_then(|r| r.controls["ECR.2"].changed_by.clone())
    };
    assert_eq!(changed_by(&rows).as_deref(), Some("unattributed"));
    let (history, _) = ecr_audit::evidence::history::as_of(app.store.pool(), chrono::Utc::now())
        .await
        .expect("history");
    assert_eq!(
        changed_by(&history.posture(Some(&kept))).as_deref(),
        Some("unattributed")
    );
    let verify = ecr_audit::evidence::verify_database(app.store.pool())
        .await
        .expect("verify");
    assert!(
        matches!(verify, ecr_audit::evidence::ChainReport::Valid { .. }),
        "{verify:?}"
    );

    // Nothing changed since: a second sweep records nothing.
    let again = app.reconciler().sweep(&()).await.expect("sweep");
    assert_eq!(again.total_changes(), 0, "{again:?}");
    app.finish().await;
}

#[tokio::test]
async fn events_from_two_accounts_are_each_enriched_in_their_own_account() {
    let mut central = TestApp::new_in_own_account().await;
    let member = TestApp::new_in_own_account().await;
    let member_account = AccountId::parse(&member.account).expect("account");
    central.account_roles.insert(
        member_account,
        format!("arn:aws:iam::{}:role/ecr-audit-read", member.account),
    );
    // The same repository name in both accounts, with opposite settings.
    let name = central.repo("shared");
    let queue_arn = crate::helpers::queue_arn(&member.sqs, &member.queue_url).await;
    let shared_name_rule = route_to_queue(
        &member.sdk,
        "shared-name",
        &json!({"source": ["aws.ecr"], "detail": {"repository-name": [name]}}),
        &queue_arn,
    )
    .await;
    for (app, mode) in [
        (&central, ImageTagMutability::Immutable),
        (&member, ImageTagMutability::Mutable),
    ] {
        app.ecr
            .create_repository()
            .repository_name(&name)
            .image_tag_mutability(mode)
            .send()
            .await
            .expect("create");
        push_image(&app.ecr, &name, "v1", &app.account).await;
    }
    // The member's events travel to the central queue (what the spoke stack's forwarding rule
    // does; tests/infra proves that routing).
    forward_all(&member, &central.queue_url, &central.sqs).await;
    drop(shared_name_rule);
    central.start_worker().await;
    central.wait_for_drain().await;

    let rows = central.store.posture(None).await.expect("posture");
    let status = |account: &str| {
        rows.iter()
            .find(|r| r.account == account && r.repository == name)
            .map(|r| r.controls["ECR.2"].status.clone())
    };
    assert_eq!(
        status(&central.account).as_deref(),
        Some("PASS"),
        "{rows:#?}"
    );
    assert_eq!(
        status(&member.account).as_deref(),
        Some("FAIL"),
        "{rows:#?}"
    );
    let images = central.store.images(Some(&name)).await.expect("images");
    let accounts: std::collections::BTreeSet<&str> =
        images.iter().map(|i| i.account.as_str()).collect();
    assert_eq!(accounts.len(), 2, "{images:#?}");
    member.finish().await;
    central.finish().await;
}

async fn forward_all(from: &TestApp, to_url: &str, to: &aws_sdk_sqs::Client) {
    let started = std::time::Instant::now();
    let mut moved = 0;
    // The push's image action (the CloudTrail records match on requestParameters, which the
    // member's rule above does not look at).
    while moved < 1 && started.elapsed() < Duration::from_secs(20) {
        let output = from
            .sqs
            .receive_message()
            .queue_url(&from.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in output.messages.unwrap_or_default() {
            to.send_message()
                .queue_url(to_url)
                .message_body(message.body().unwrap_or_default())
                .send()
                .await
                .expect("forward");
            from.sqs
                .delete_message()
                .queue_url(&from.queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
            moved += 1;
        }
    }
    assert!(moved >= 1, "no member event arrived");
}

async fn create_pull_through_rule(app: &TestApp, prefix: &str) {
    app.ecr
        .create_pull_through_cache_rule()
        .ecr_repository_prefix(prefix)
        .upstream_registry_url("registry-1.docker.io")
        .send()
        .await
        .expect("pull-through cache rule");
}

/// ECRA.4 status and reason of each named repository, from the stored posture.
async fn ecra4(app: &TestApp, names: &[&str]) -> Vec<(String, String)> {
    let rows = app.store.posture(None).await.expect("posture");
    names
        .iter()
        .map(|name| {
            let row = rows
                .iter()
                .find(|r| r.repository == *name)
                .unwrap_or_else(|| panic!("{name} not in posture: {rows:#?}"));
            let view = &row.controls["ECRA.4"];
            (view.status.clone(), view.reason.clone())
        })
        .collect()
}

/// The latest ECRA.4 transition of a repository: (from, to, cause kind, cause event id).
async fn ecra4_transition(
    app: &TestApp,
    repository: &str,
) -> (Option<String>, String, String, String) {
    let detail: serde_json::Value = sqlx::query_scalar(
        "SELECT detail FROM evidence
          WHERE kind = 'control_transition' AND repository = $1 AND detail->>'control' = 'ECRA.4'
          ORDER BY seq DESC LIMIT 1",
    )
    .bind(repository)
    .fetch_one(&app.pool)
    .await
    .expect("ECRA.4 transition evidence");
    (
        detail["from"]["status"].as_str().map(str::to_owned),
        detail["to"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        detail["cause_kind"].as_str().unwrap_or_default().to_owned(),
        detail["cause_event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_pull_through_rule_no_creation_template_covers_fails_ecra4_until_one_does() {
    let mut app = TestApp::new_in_own_account().await;
    app.route_registry_calls(&[
        "CreatePullThroughCacheRule",
        "DeletePullThroughCacheRule",
        "CreateRepositoryCreationTemplate",
        "UpdateRepositoryCreationTemplate",
        "DeleteRepositoryCreationTemplate",
    ])
    .await;
    app.start_worker().await;
    // Repository names carry the test's prefix, so the rule's prefix does too.
    let rule_prefix = app.repo("hub");
    create_pull_through_rule(&app, &rule_prefix).await;
    // The emulator pulls nothing, so the repository the rule would create on first pull is
    // created directly, with the name and the defaults the rule would give it.
    let cached = app.create_repository("hub/library/nginx").await;
    let own = app.create_repository("app").await;
    app.wait_for_drain().await;

    let verdicts = ecra4(&app, &[&cached, &own]).await;
    assert_eq!(verdicts[0].0, "FAIL", "{verdicts:?}");
    assert!(
        verdicts[0].1.contains(&format!("rule {rule_prefix} "))
            && verdicts[0].1.contains("registry-1.docker.io"),
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts[1],
        (
            "PASS".to_owned(),
            "not created by a pull-through cache rule".to_owned()
        )
    );

    // A template for the rule's prefix arrives as a CloudTrail event: the registry is re-read
    // and every repository re-judged.
    app.ecr
        .create_repository_creation_template()
        .prefix(&rule_prefix)
        .applied_for(RctAppliedFor::PullThroughCache)
        .send()
        .await
        .expect("creation template");
    app.wait_for_drain().await;
    let verdicts = ecra4(&app, &[&cached, &own]).await;
    assert_eq!(verdicts[0].0, "PASS", "{verdicts:?}");
    assert!(
        verdicts[0].1.ends_with(&format!("template {rule_prefix}")),
        "{verdicts:?}"
    );
    assert_eq!(verdicts[1].0, "PASS", "{verdicts:?}");
    let (from, to, cause_kind, cause) = ecra4_transition(&app, &cached).await;
    assert_eq!(
        (from.as_deref(), to.as_str(), cause_kind.as_str()),
        (Some("FAIL"), "PASS", "registry_changed"),
        "caused by {cause}"
    );
    assert!(!cause.starts_with("reconcile/"), "{cause}");

    // With no event flowing, the template is narrowed to replication only; reconcile sees the
    // rule uncovered again and records the transition as observed by reconcile.
    app.stop_worker().await;
    app.remove_rules().await;
    app.ecr
        .update_repository_creation_template()
        .prefix(&rule_prefix)
        .applied_for(RctAppliedFor::Replication)
        .send()
        .await
        .expect("update template");
    let report = app.reconciler().sweep(&()).await.expect("sweep");
    assert_eq!(
        report.changes.get(&DriftKind::RepositoryChanged),
        Some(&1),
        "only the cached repository changed: {report:?}"
    );
    let verdicts = ecra4(&app, &[&cached, &own]).await;
    assert_eq!(verdicts[0].0, "FAIL", "{verdicts:?}");
    let (from, to, _, cause) = ecra4_transition(&app, &cached).await;
    assert_eq!((from.as_deref(), to.as_str()), (Some("PASS"), "FAIL"));
    assert!(cause.starts_with("reconcile/"), "{cause}");
    let verify = ecr_audit::evidence::verify_database(app.store.pool())
        .await
        .expect("verify");
    assert!(
        matches!(verify, ecr_audit::evidence::ChainReport::Valid { .. }),
        "{verify:?}"
    );
    app.finish().await;
}
