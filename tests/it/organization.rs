//! Org-wide accounts through the real worker: AWS Organizations discovery at every reconcile
//! sweep, the reader role from a pattern, the external id on every AssumeRole, an account added
//! after start-up swept without a configuration change, and one that leaves reported.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ecr_audit::domain::{AccountId, Region};
use ecr_audit::enrich::accounts::{AccountAccess, RolePattern};
use ecr_audit::enrich::organization::OrganizationReader;
use ecr_audit::source::reconcile::{Discovery, Reconciler};
use ecr_audit::telemetry::Metrics;
use serde_json::Value;

use crate::helpers::{REGION, TestApp, metric_value};

const PATTERN: &str = "arn:aws:iam::{account}:role/ecr-audit-reader";
const EXTERNAL_ID: &str = "ecr-audit-org-test";
const WAIT: Duration = Duration::from_secs(60);

/// Creates a member account in the test's organization; returns its id.
async fn create_account(org: &aws_sdk_organizations::Client, name: &str) -> String {
    let status = org
        .create_account()
        .email(format!("{name}@example.com"))
        .account_name(name)
        .send()
        .await
        .expect("create account");
    status
        .create_account_status()
        .and_then(|s| s.account_id())
        .expect("moto creates accounts at once")
        .to_owned()
}

/// Creates a repository (tags MUTABLE, ECR's default) in `account`, through its own
/// credentials (moto maps AssumeRole credentials to the role's account).
async fn create_repository_in(app: &TestApp, account: &str, name: &str) {
    let credentials = aws_sdk_sts::Client::new(&app.sdk)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/test-setup"))
        .role_session_name("test-setup")
        .send()
        .await
        .expect("assume role")
        .credentials()
        .cloned()
        .expect("credentials");
    let sdk = app
        .sdk
        .to_builder()
        .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(
            aws_sdk_sts::config::Credentials::new(
                credentials.access_key_id(),
                credentials.secret_access_key(),
                Some(credentials.session_token().to_owned()),
                None,
                "test-setup",
            ),
        ))
        .build();
    aws_sdk_ecr::Client::new(&sdk)
        .create_repository()
        .repository_name(name)
        .send()
        .await
        .expect("create repository");
}

/// Creates an organization whose management account is the caller's; returns its root id.
async fn create_organization(org: &aws_sdk_organizations::Client) -> String {
    org.create_organization()
        .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
        .send()
        .await
        .expect("create organization");
    org.list_roots().send().await.expect("roots").roots()[0]
        .id()
        .expect("root id")
        .to_owned()
}

/// Creates an organizational unit under `parent`; returns its id.
async fn create_unit(org: &aws_sdk_organizations::Client, parent: &str, name: &str) -> String {
    org.create_organizational_unit()
        .parent_id(parent)
        .name(name)
        .send()
        .await
        .expect("create OU")
        .organizational_unit()
        .and_then(|u| u.id())
        .expect("OU id")
        .to_owned()
}

/// The AssumeRole requests the emulator received from `account` (`clear`: forget them all).
async fn assume_role_requests(account: &str, clear: bool) -> Vec<Value> {
    let url = format!(
        "{}/_emulator/assume-role-requests?account={account}",
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
    body["requests"].as_array().cloned().unwrap_or_default()
}

/// The accounts whose repository `name` is in the posture view.
async fn accounts_with(app: &TestApp, name: &str) -> BTreeSet<String> {
    app.store
        .posture(Some(name))
        .await
        .expect("posture")
        .into_iter()
        .map(|row| row.account)
        .collect()
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn an_organization_is_discovered_and_an_account_added_later_is_swept_without_reconfiguration()
{
    // The central account is the organization's management account.
    let mut central = TestApp::new_in_own_account().await;
    let org = aws_sdk_organizations::Client::new(&central.sdk);
    create_organization(&org).await;
    let mut members = Vec::new();
    for n in 0..3 {
        members.push(create_account(&org, &format!("{}m{n}", central.prefix)).await);
    }
    let name = central.repo("app");
    create_repository_in(&central, &central.account, &name).await;
    for member in &members {
        create_repository_in(&central, member, &name).await;
    }

    // The worker as `ECR_AUDIT_ORGANIZATION=true` with a role pattern and an external id builds it.
    let home = AccountId::parse(&central.account).expect("account");
    let access = Arc::new(
        AccountAccess::new(
            home,
            Vec::new(),
            vec![Region::parse(REGION).expect("region")],
        )
        .with_pattern(Some(RolePattern::parse(PATTERN).expect("pattern")))
        .with_external_id(Some(EXTERNAL_ID.to_owned())),
    );
    central.access = Some(Arc::clone(&access));
    let reader = OrganizationReader::new(
        &central.sdk,
        None,
        Some(EXTERNAL_ID),
        Vec::new(),
        Arc::new(Metrics::new()),
    )
    .await;
    let reader = Arc::new(std::sync::Mutex::new(Some(reader)));
    central.reconcile = Some((
        Box::new(move |pipeline, registry| {
            let reader = reader.lock().expect("reader").take().expect("one worker");
            Reconciler::new(
                pipeline,
                registry,
                ecr_audit::enrich::accounts::SweepTargets::Shared(Arc::clone(&access)),
            )
            .with_discovery(Discovery {
                reader,
                access: Arc::clone(&access),
            })
        }),
        Duration::from_secs(3),
    ));
    assume_role_requests(&central.account, true).await;
    central.start_worker().await;

    // The first sweep: the management account and the three members (four accounts).
    let mut expected: BTreeSet<String> = members.iter().cloned().collect();
    expected.insert(central.account.clone());
    central
        .eventually("the first sweep of every account", WAIT, || async {
            (accounts_with(&central, &name).await == expected).then_some(())
        })
        .await;

    // A fifth account joins after start-up: the next sweep reads it, nothing reconfigured.
    let added = create_account(&org, &format!("{}late", central.prefix)).await;
    create_repository_in(&central, &added, &name).await;
    expected.insert(added.clone());
    central
        .eventually("the added account swept", WAIT, || async {
            (accounts_with(&central, &name).await == expected).then_some(())
        })
        .await;
    let scraped = central.scrape().await;
    assert_eq!(
        metric_value(&scraped, "ecr_audit_organization_accounts", &[]),
        Some(5.0),
        "{scraped}"
    );
    assert_eq!(
        metric_value(
            &scraped,
            "ecr_audit_organization_account_changes_total",
            &[("change", "joined")]
        ),
        Some(1.0)
    );

    // Every member was read through the pattern's role, and every AssumeRole presented the
    // external id; the management account was read with the worker's own credentials.
    let requests = assume_role_requests(&central.account, false).await;
    let roles: BTreeSet<&str> = requests
        .iter()
        .filter_map(|r| r["roleArn"].as_str())
        .collect();
    for member in members.iter().chain([&added]) {
        let role = PATTERN.replace("{account}", member);
        assert!(
            roles.contains(role.as_str()),
            "{role} not assumed: {roles:?}"
        );
    }
    assert!(
        !roles.iter().any(|r| r.contains(&central.account)),
        "{roles:?}"
    );
    let reader_requests: Vec<&Value> = requests
        .iter()
        .filter(|r| {
            r["roleArn"]
                .as_str()
                .is_some_and(|a| a.ends_with("/ecr-audit-reader"))
        })
        .collect();
    assert!(!reader_requests.is_empty());
    for request in &reader_requests {
        assert_eq!(request["externalId"], EXTERNAL_ID, "{request}");
    }
    // One AssumeRole per account, however many regions and sweeps: the regional clients
    // share the role's cached credentials.
    let mut per_role = std::collections::BTreeMap::<&str, u32>::new();
    for request in &reader_requests {
        *per_role
            .entry(request["roleArn"].as_str().unwrap_or(""))
            .or_default() += 1;
    }
    assert!(per_role.values().all(|n| *n == 1), "{per_role:?}");

    // An account that leaves the organization is reported; what was recorded about it stays.
    let leaving = members[0].clone();
    org.remove_account_from_organization()
        .account_id(&leaving)
        .send()
        .await
        .expect("remove account");
    central
        .eventually("the departure reported", WAIT, || async {
            let scraped = central.scrape().await;
            (metric_value(
                &scraped,
                "ecr_audit_organization_account_changes_total",
                &[("change", "left")],
            ) == Some(1.0))
            .then_some(())
        })
        .await;
    assert!(accounts_with(&central, &name).await.contains(&leaving));
    central.finish().await;
}

#[tokio::test]
async fn organizational_units_are_read_with_their_child_units_and_only_active_accounts() {
    let app = TestApp::new_in_own_account().await;
    let org = aws_sdk_organizations::Client::new(&app.sdk);
    let root = create_organization(&org).await;
    let workloads = create_unit(&org, &root, "workloads").await;
    let eu = create_unit(&org, &workloads, "workloads-eu").await;
    let sandbox = create_unit(&org, &root, "sandbox").await;
    let mut placed = Vec::new();
    for (name, parent) in [
        ("direct", &workloads),
        ("nested", &eu),
        ("closed", &eu),
        ("sandbox", &sandbox),
    ] {
        let account = create_account(&org, &format!("{}{name}", app.prefix)).await;
        org.move_account()
            .account_id(&account)
            .source_parent_id(&root)
            .destination_parent_id(parent)
            .send()
            .await
            .expect("move account");
        placed.push(account);
    }
    org.close_account()
        .account_id(&placed[2])
        .send()
        .await
        .expect("close account");

    let metrics = Arc::new(Metrics::new());
    let reader =
        OrganizationReader::new(&app.sdk, None, None, vec![workloads], Arc::clone(&metrics)).await;
    let found: BTreeSet<String> = reader
        .active_accounts()
        .await
        .expect("discovery")
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    // The OU's own account and its child OU's active one; not the closed one, not the sandbox,
    // not the management account (in the root).
    assert_eq!(
        found,
        BTreeSet::from([placed[0].clone(), placed[1].clone()])
    );
    let scraped = metrics.render().expect("render");
    for operation in [
        "organizations:ListAccountsForParent",
        "organizations:ListOrganizationalUnitsForParent",
    ] {
        assert!(
            metric_value(
                &scraped,
                "ecr_audit_aws_api_calls_total",
                &[("operation", operation), ("outcome", "ok")]
            )
            .is_some_and(|n| n >= 2.0),
            "{operation}: {scraped}"
        );
    }
}
