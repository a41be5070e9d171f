//! Judging current digests again without an event about them (src/store/reverify.rs): an AWS
//! Signer revocation makes due the re-checks of the digests whose stored verifications name the
//! revoked job or profile version, and scheduled re-verification those whose verdict is stale.

use chrono::{Duration, Utc};
use ecr_audit::parse::{Change, SignerRevocation};
use ecr_audit::plan::{EventPlan, Plan, Reverify};
use ecr_audit::store::Store;
use sqlx::PgPool;

use crate::fixtures::audit_event;
use crate::helpers::{ACCOUNT, REGION};

const JOB: &str = "arn:aws:signer:us-east-1:123456789012:/signing-jobs/job-1";
const OTHER_JOB: &str = "arn:aws:signer:us-east-1:123456789012:/signing-jobs/job-2";
const PROFILE_VERSION: &str = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/release/v1";

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

/// An image (`present`, with a signature verdict checked `age` ago) and, when `job` is set,
/// a verified signature of it by that Signer job.
async fn image(
    pool: &PgPool,
    repository: &str,
    n: u32,
    status: &str,
    age: Duration,
    present: bool,
) {
    sqlx::query(
        "INSERT INTO images (account, region, repository, digest, present, state_changed_at, pushed_at,
                             signature_status, signature_checked_at)
         VALUES ($1, $2, $3, $4, $5, now(), now() - interval '30 days', $6, $7)",
    )
    .bind(ACCOUNT)
    .bind(REGION)
    .bind(repository)
    .bind(digest(n))
    .bind(present)
    .bind(status)
    .bind(Utc::now() - age)
    .execute(pool)
    .await
    .expect("image");
}

async fn verified_by(pool: &PgPool, repository: &str, n: u32, job: &str, profile_version: &str) {
    let detail = serde_json::json!({
        "reference": format!("sha256:{:064x}", n + 1000),
        "envelope_digest": format!("sha256:{:064x}", n + 2000),
        "policy_version": "sha256:test",
        "result": "verified",
        "scheme": "notary.x509.signingAuthority",
        "identity": "CN=release",
        "signer_profile_version_arn": profile_version,
        "signer_job_arn": job,
        "signing_time": null,
        "expiry": null,
        "warnings": [],
    });
    sqlx::query(
        "INSERT INTO signature_verifications
              (envelope_digest, policy_version, subject_digest, scope, reference, result, detail)
         VALUES ($1, 'sha256:test', $2, $3, $4, 'verified', $5)",
    )
    .bind(format!("sha256:{:064x}", n + 2000))
    .bind(digest(n))
    .bind(format!(
        "{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}"
    ))
    .bind(format!("sha256:{:064x}", n + 1000))
    .bind(detail)
    .execute(pool)
    .await
    .expect("verification");
}

async fn due_now(pool: &PgPool) -> Vec<(String, String)> {
    due_by(pool, Utc::now()).await
}

/// The re-checks due by `at`.
async fn due_by(pool: &PgPool, at: chrono::DateTime<Utc>) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT repository, digest FROM signature_rechecks WHERE due_at <= $1
          ORDER BY repository, digest",
    )
    .bind(at)
    .fetch_all(pool)
    .await
    .expect("rechecks")
}

/// After a revocation, when every worker's cached Signer answer has expired.
fn settled() -> chrono::DateTime<Utc> {
    Utc::now() + ecr_audit::store::REVOCATION_SETTLE
}

fn revocation_plan(id: &str, revocation: SignerRevocation) -> Plan {
    let event = audit_event(id, Change::SignerRevoked { revocation }, None);
    let (plan, _) = ecr_audit::plan::start(event);
    Plan::Event(Box::new(plan))
}

#[sqlx::test(migrations = "./migrations")]
async fn a_revoked_job_makes_exactly_the_digests_it_signed_due_now(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let day = Duration::days(1);
    image(&pool, "team/app", 1, "SIGNED", day, true).await;
    verified_by(&pool, "team/app", 1, JOB, PROFILE_VERSION).await;
    // The same job signed a digest in another repository; a second job signed a third digest.
    image(&pool, "team/web", 2, "SIGNED", day, true).await;
    verified_by(&pool, "team/web", 2, JOB, PROFILE_VERSION).await;
    image(&pool, "team/app", 3, "SIGNED", day, true).await;
    verified_by(&pool, "team/app", 3, OTHER_JOB, PROFILE_VERSION).await;
    // A deleted digest signed by the job is not judged again.
    image(&pool, "team/app", 4, "SIGNED", day, false).await;
    verified_by(&pool, "team/app", 4, JOB, PROFILE_VERSION).await;

    let outcome = store
        .commit_batch(&[revocation_plan(
            "revoke-1",
            SignerRevocation::RevokeSignature {
                job_id: "job-1".into(),
                job_owner: None,
                reason: Some("key leak".into()),
            },
        )])
        .await
        .expect("commit");
    assert_eq!(outcome.reverify_scheduled, 2);
    assert!(
        due_now(&pool).await.is_empty(),
        "not before the workers' cached Signer answers expired"
    );
    assert_eq!(
        due_by(&pool, settled()).await,
        [
            ("team/app".to_owned(), digest(1)),
            ("team/web".to_owned(), digest(2))
        ]
    );
    // The revocation itself is evidence.
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM evidence ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("evidence");
    assert_eq!(kinds, ["signer_revoked"]);

    // A revoked profile version names every digest signed under it.
    let outcome = store
        .commit_batch(&[revocation_plan(
            "revoke-2",
            SignerRevocation::RevokeSigningProfile {
                profile_name: "release".into(),
                profile_version: "v1".into(),
                effective_time: None,
                reason: None,
            },
        )])
        .await
        .expect("commit");
    assert_eq!(outcome.reverify_scheduled, 3);
    assert_eq!(due_by(&pool, settled()).await.len(), 3);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_revocation_brings_a_later_recheck_forward_and_keeps_an_earlier_one(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    image(&pool, "team/app", 1, "UNTRUSTED", Duration::hours(1), true).await;
    verified_by(&pool, "team/app", 1, JOB, PROFILE_VERSION).await;
    let later = Utc::now() + Duration::hours(4);
    sqlx::query(
        "INSERT INTO signature_rechecks (account, region, repository, digest, pushed_at, due_at, attempts)
         VALUES ($1, $2, 'team/app', $3, now(), $4, 2)",
    )
    .bind(ACCOUNT)
    .bind(REGION)
    .bind(digest(1))
    .bind(later)
    .execute(&pool)
    .await
    .expect("recheck");
    let plan = EventPlan {
        reverify: Some(Reverify::NamingSigner { arn: JOB.into() }),
        ..EventPlan::new(audit_event(
            "revoke-3",
            Change::Ignored {
                reason: "carrier".into(),
            },
            None,
        ))
    };
    store
        .commit_batch(&[Plan::Event(Box::new(plan))])
        .await
        .expect("commit");
    let (due, attempts): (chrono::DateTime<Utc>, i32) =
        sqlx::query_as("SELECT due_at, attempts FROM signature_rechecks WHERE digest = $1")
            .bind(digest(1))
            .fetch_one(&pool)
            .await
            .expect("recheck");
    assert!(due <= settled() && due < later, "brought forward: {due}");
    assert_eq!(attempts, 2, "the re-check's history is kept");
}

#[sqlx::test(migrations = "./migrations")]
async fn scheduled_reverification_picks_stale_verdicts_oldest_first_within_the_limit(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    image(&pool, "team/app", 1, "SIGNED", Duration::days(3), true).await;
    image(&pool, "team/app", 2, "UNTRUSTED", Duration::days(2), true).await;
    image(&pool, "team/app", 3, "SIGNED", Duration::days(5), true).await;
    // Fresh, deleted, or without a signature verdict that re-verification could change.
    image(&pool, "team/app", 4, "SIGNED", Duration::hours(1), true).await;
    image(&pool, "team/app", 5, "SIGNED", Duration::days(9), false).await;
    image(&pool, "team/app", 6, "UNSIGNED", Duration::days(9), true).await;

    let now = Utc::now();
    let stale_before = now - Duration::days(1);
    let first = store
        .schedule_stale_reverifications(stale_before, 2, now)
        .await
        .expect("schedule");
    assert_eq!(first, 2);
    assert_eq!(
        due_now(&pool).await,
        [
            ("team/app".to_owned(), digest(1)),
            ("team/app".to_owned(), digest(3))
        ],
        "the two oldest verdicts first"
    );
    let second = store
        .schedule_stale_reverifications(stale_before, 10, now)
        .await
        .expect("schedule");
    assert_eq!(second, 1, "a digest already due is not chosen twice");
    assert_eq!(due_now(&pool).await.len(), 3);

    let age = store
        .oldest_signature_verdict_age(now)
        .await
        .expect("age")
        .expect("some verdict");
    assert!((age - 5.0 * 86400.0).abs() < 5.0, "{age}");
}

/// End to end: ECR managed signing signs a push (`SIGNED` under the emulator's Signer roots);
/// then AWS Signer's `RevokeSignature` of that signing job travels CloudTrail → EventBridge
/// (the production pattern) → SQS → the worker, which re-judges the digest: `UNTRUSTED`, the
/// check `revoked`, with the transition's evidence and the revocation's own record.
#[tokio::test]
async fn a_revoked_signing_job_turns_its_signed_digest_untrusted_through_the_queue() {
    let mut app = crate::helpers::TestApp::new_in_own_account().await;
    app.route_signer_revocations().await;
    let signer = aws_sdk_signer::Client::new(&app.sdk);
    // Every repository of the test (`PREFIX*`) signed by a new profile.
    crate::managed_verdicts::managed_signing(&app, "").await;
    let repository = app.create_repository("app").await;
    app.start_worker().await;
    let digest = crate::helpers::push_image(&app.ecr, &repository, "v1", &app.prefix).await;

    let wait = std::time::Duration::from_secs(60);
    let signed = app
        .eventually("SIGNED by managed signing", wait, || async {
            image_row(&app, &repository, &digest)
                .await
                .filter(|i| i.signature.status.as_deref() == Some("SIGNED"))
        })
        .await;
    let job_arn = signing_job(&signed).expect("the verified managed signature names its job");
    let job_id = job_arn.rsplit('/').next().expect("job id").to_owned();

    signer
        .revoke_signature()
        .job_id(&job_id)
        .reason("signing key compromised")
        .send()
        .await
        .expect("revoke signature");

    // Judged again once every worker's cached Signer answer has expired (REVOCATION_SETTLE).
    let settle = std::time::Duration::from_secs(150);
    let untrusted = app
        .eventually("UNTRUSTED after the revocation", settle, || async {
            image_row(&app, &repository, &digest)
                .await
                .filter(|i| i.signature.status.as_deref() == Some("UNTRUSTED"))
        })
        .await;
    let checks = failed_checks(&untrusted);
    assert!(checks.iter().any(|c| c == "revoked"), "{checks:?}");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM evidence WHERE kind IN ('signer_revoked', 'signature_transition') ORDER BY seq")
            .fetch_all(&app.pool)
            .await
            .expect("evidence");
    assert!(kinds.iter().any(|k| k == "signer_revoked"), "{kinds:?}");
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("signature_transition"),
        "{kinds:?}"
    );
    app.finish().await;
}

async fn image_row(
    app: &crate::helpers::TestApp,
    repository: &str,
    digest: &str,
) -> Option<ecr_audit::readmodel::ImageRow> {
    app.store
        .images(Some(repository))
        .await
        .ok()?
        .into_iter()
        .find(|i| i.digest == digest)
}

/// The signing job of the image's verified AWS Signer signature.
fn signing_job(row: &ecr_audit::readmodel::ImageRow) -> Option<String> {
    row.signature
        .verifications
        .iter()
        .find_map(|v| match &v.result {
            ecr_audit::facts::VerificationResult::Verified {
                signer_job_arn: Some(job),
                ..
            } => Some(job.clone()),
            _ => None,
        })
}

/// The checks the image's signatures failed.
fn failed_checks(row: &ecr_audit::readmodel::ImageRow) -> Vec<String> {
    row.signature
        .verifications
        .iter()
        .filter_map(|v| match &v.result {
            ecr_audit::facts::VerificationResult::Rejected { check, .. } => Some(check.clone()),
            _ => None,
        })
        .collect()
}
