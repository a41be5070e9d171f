//! Alerts on state through the real worker: a repository created MUTABLE after start-up raises
//! one `CONTROL_FAILING` alert once the grace period is over, while what the first sweep finds
//! (the backlog of history) lands in the baseline class and never pages.

use std::collections::BTreeSet;
use std::time::Duration;

use ecr_audit::domain::{AccountId, Region};
use ecr_audit::source::reconcile::Reconciler;

use crate::helpers::{REGION, TestApp, metric_value};

const WAIT: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(3);

/// The `CONTROL_FAILING` alerts queued: (repository, control, published).
async fn failing_alerts(app: &TestApp) -> Vec<(String, String, bool)> {
    sqlx::query_as(
        "SELECT detail->>'repository', detail->>'control', published_at IS NOT NULL
           FROM alert_outbox WHERE detail->>'alert' = 'CONTROL_FAILING' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("outbox")
}

fn failing(scraped: &str, control: &str, class: &str) -> Option<f64> {
    metric_value(
        scraped,
        "ecr_audit_failing_findings",
        &[("control", control), ("class", class)],
    )
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn a_repository_created_mutable_alerts_after_the_grace_while_the_backlog_stays_baseline() {
    let mut app = TestApp::new_in_own_account().await;
    // History: two MUTABLE repositories that exist before ecr-audit starts. Their names miss
    // the test's routing prefix, so no event of their creation reaches the worker: only the
    // first sweep sees them, as it sees an estate's past.
    let backlog: Vec<String> = ["one", "two"]
        .iter()
        .map(|n| format!("old-{}{n}", app.prefix))
        .collect();
    for name in &backlog {
        app.ecr
            .create_repository()
            .repository_name(name)
            .send()
            .await
            .expect("create");
    }
    let bus = format!("{}alerts", app.prefix);
    app.events
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("bus");
    app.alert_bus = Some(bus);
    app.failing_grace = GRACE;
    let account = AccountId::parse(&app.account).expect("account");
    app.reconcile = Some((
        Box::new(move |pipeline, registry| {
            Reconciler::new(
                pipeline,
                registry,
                vec![(account.clone(), Region::parse(REGION).expect("region"))],
            )
        }),
        Duration::from_secs(3600),
    ));
    app.start_worker().await;
    app.eventually("the first sweep", WAIT, || async {
        let done: Option<bool> = sqlx::query_scalar(
            "SELECT succeeded FROM reconcile_runs WHERE finished_at IS NOT NULL LIMIT 1",
        )
        .fetch_optional(&app.pool)
        .await
        .expect("runs");
        done.map(|ok| assert!(ok, "the first sweep failed"))
    })
    .await;

    // After start-up, a repository is created MUTABLE (CreateRepository reaches the worker).
    let fresh = app.create_repository("fresh").await;
    let alerts = app
        .eventually("the state alert", WAIT, || async {
            let alerts = failing_alerts(&app).await;
            alerts
                .iter()
                .any(|(r, c, published)| r == &fresh && c == "ECR.2" && *published)
                .then_some(alerts)
        })
        .await;
    // Not before the grace period: the failure started with the event.
    let (since, queued): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "SELECT c.failing_since, o.created_at FROM control_results c, alert_outbox o
              WHERE c.repository = $1 AND c.control = 'ECR.2'
                AND o.detail->>'repository' = $1 AND o.detail->>'control' = 'ECR.2'",
        )
        .bind(&fresh)
        .fetch_one(&app.pool)
        .await
        .expect("failure and alert");
    assert!(
        (queued - since).to_std().expect("after") >= GRACE,
        "{since} {queued}"
    );
    // Only the new repository pages; the backlog never does.
    let paged: BTreeSet<&str> = alerts.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(paged, BTreeSet::from([fresh.as_str()]), "{alerts:?}");

    // Once per finding: later checks add nothing.
    tokio::time::sleep(GRACE).await;
    let again = failing_alerts(&app).await;
    let ecr2: Vec<_> = again.iter().filter(|(_, c, _)| c == "ECR.2").collect();
    assert_eq!(ecr2.len(), 1, "{again:?}");
    assert_eq!(again.len(), alerts.len(), "{again:?}");

    // The gauges: the backlog counted as baseline, the new failure as new and overdue.
    let scraped = app.scrape().await;
    assert_eq!(
        failing(&scraped, "ECR.2", "baseline"),
        Some(2.0),
        "{scraped}"
    );
    assert_eq!(failing(&scraped, "ECR.2", "new"), Some(1.0), "{scraped}");
    assert_eq!(
        metric_value(
            &scraped,
            "ecr_audit_failing_findings_overdue",
            &[("control", "ECR.2")]
        ),
        Some(1.0),
        "{scraped}"
    );

    // Fixed, the finding is gone from the gauges.
    app.ecr
        .put_image_tag_mutability()
        .repository_name(&fresh)
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
        .send()
        .await
        .expect("immutable");
    app.eventually("the fix recorded", WAIT, || async {
        let scraped = app.scrape().await;
        (failing(&scraped, "ECR.2", "new") == Some(0.0)).then_some(())
    })
    .await;
    app.finish().await;
}
