//! Deploy-time verdicts (issue 19) through the real worker: signed and scanned images are
//! allowed; unsigned, untrusted, critical findings, failing ECR.2, an unknown digest and a tag
//! reference are denied in strict mode and allowed with warnings in audit mode, through
//! `/v1/verdict`, a Kubernetes `AdmissionReview` and a Gatekeeper `ProviderRequest`;
//! malformed and oversized bodies get 400. Managed signing is registry-wide, so this runs in
//! an account of its own.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ecr::types::{
    ImageScanningConfiguration, ImageTagMutability, SigningConfiguration, SigningRepositoryFilter,
    SigningRepositoryFilterType, SigningRule,
};
use ecr_audit::export::deploy_policy::DeployPolicy;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{REGION, TestApp, emulator_control, metric_value, push_image};

const WAIT: Duration = Duration::from_secs(45);

async fn profile(app: &TestApp, name: &str) -> String {
    aws_sdk_signer::Client::new(&app.sdk)
        .put_signing_profile()
        .profile_name(format!("{}{name}", app.prefix.replace('-', "_")))
        .platform_id("Notation-OCI-SHA384-ECDSA")
        .send()
        .await
        .expect("signing profile")
        .arn()
        .expect("arn")
        .to_owned()
}

fn rule(arn: &str, filter: String) -> SigningRule {
    SigningRule::builder()
        .signing_profile_arn(arn)
        .repository_filters(
            SigningRepositoryFilter::builder()
                .filter(filter)
                .filter_type(SigningRepositoryFilterType::WildcardMatch)
                .build()
                .expect("filter"),
        )
        .build()
        .expect("rule")
}

/// A scanned repository (with `critical` findings) and one pushed image; its digest.
async fn image(app: &TestApp, name: &str, immutable: bool, critical: i64) -> (String, String) {
    let repository = app.repo(name);
    app.ecr
        .create_repository()
        .repository_name(&repository)
        .image_tag_mutability(if immutable {
            ImageTagMutability::Immutable
        } else {
            ImageTagMutability::Mutable
        })
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(true)
                .build(),
        )
        .send()
        .await
        .expect("create repository");
    emulator_control(
        "/_emulator/scan-results",
        json!({"repositoryName": repository, "status": "COMPLETE",
               "findingSeverityCounts": {"CRITICAL": critical, "HIGH": 1}}),
    )
    .await;
    let digest = push_image(
        &app.ecr,
        &repository,
        "v1",
        &format!("{}{name}", app.prefix),
    )
    .await;
    (repository, digest)
}

async fn settled(app: &TestApp, repository: &str, digest: &str, signature: &str) {
    app.eventually(
        &format!("{repository} {signature} and scanned"),
        WAIT,
        || async {
            let row = app
                .store
                .images(Some(repository))
                .await
                .ok()?
                .into_iter()
                .find(|i| i.digest == digest)?;
            let posture = app.store.posture(Some(repository)).await.ok()?;
            (row.signature.status.as_deref() == Some(signature)
                && row.scan.status.as_deref() == Some("SCANNED")
                && posture.first()?.controls.contains_key("ECR.2"))
            .then_some(())
        },
    )
    .await;
}

fn policy(trusted: &str) -> Arc<DeployPolicy> {
    let text = json!({
        "requirements": {
            "signature": {"status": ["SIGNED"], "identities": [format!("signer:{trusted}")]},
            "scan": {"status": ["SCANNED"], "max_findings": {"critical": 0}},
            "controls": ["ECR.2"],
            "max_verification_age_seconds": 86400
        },
        "scopes": [{"name": "prod", "clusters": ["prod"], "mode": "strict"}],
        "default": {"mode": "audit"}
    });
    Arc::new(DeployPolicy::parse(text.to_string().as_bytes()).expect("policy"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn verdict(base: &str, image: &str, cluster: Option<&str>) -> Value {
    let mut query = vec![("image", image)];
    query.extend(cluster.map(|c| ("cluster", c)));
    let response = client()
        .get(format!("{base}/v1/verdict"))
        .query(&query)
        .send()
        .await
        .expect("verdict");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

async fn post(url: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect(url);
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

/// An `admission.k8s.io/v1` review of a Deployment running `images` (as Kubernetes sends it).
fn deployment_review(images: &[&str]) -> String {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "payments",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:ci:deployer", "groups": ["system:serviceaccounts"]},
            "object": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "payments", "namespace": "shop"},
                "spec": {"selector": {"matchLabels": {"app": "payments"}},
                         "template": {"metadata": {"labels": {"app": "payments"}},
                                      "spec": {"initContainers": [{"name": "init", "image": images[0]}],
                                               "containers": containers}}}
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
    .to_string()
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn verdicts_allow_the_compliant_and_deny_in_strict_what_fails_with_its_reason() {
    let mut app = TestApp::new_in_own_account().await;
    emulator_control(
        "/_emulator/config",
        json!({"signing_delay_seconds": 0.5, "scan_delay_seconds": 0.5}),
    )
    .await;
    let trusted = profile(&app, "trusted").await;
    let other = profile(&app, "other").await;
    app.ecr
        .put_signing_configuration()
        .signing_configuration(
            SigningConfiguration::builder()
                .rules(rule(&trusted, format!("{}good*", app.prefix)))
                .rules(rule(&other, format!("{}other*", app.prefix)))
                .build()
                .expect("configuration"),
        )
        .send()
        .await
        .expect("signing configuration");
    app.deploy_policy = Some(policy(&trusted));
    app.start_worker().await;
    let (good, good_digest) = image(&app, "good", true, 0).await;
    let (critical, critical_digest) = image(&app, "goodcritical", true, 2).await;
    let (mutable, mutable_digest) = image(&app, "goodmutable", false, 0).await;
    let (untrusted, untrusted_digest) = image(&app, "other", true, 0).await;
    let (unsigned, unsigned_digest) = image(&app, "plain", true, 0).await;
    for (repository, digest) in [
        (&good, &good_digest),
        (&critical, &critical_digest),
        (&mutable, &mutable_digest),
        (&untrusted, &untrusted_digest),
    ] {
        settled(&app, repository, digest, "SIGNED").await;
    }
    settled(&app, &unsigned, &unsigned_digest, "UNSIGNED").await;
    app.wait_for_drain().await;

    let base = format!("http://{}", app.http_addr.expect("worker started"));
    let registry = format!("{}.dkr.ecr.{REGION}.amazonaws.com", app.account);
    let by_digest = |repository: &str, digest: &str| format!("{registry}/{repository}@{digest}");
    // The view follows the commits through notifications, within milliseconds.
    view_holds(&app, &base, &by_digest(&unsigned, &unsigned_digest)).await;
    view_holds(&app, &base, &by_digest(&good, &good_digest)).await;
    let unknown_digest = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (
            by_digest(&unsigned, &unsigned_digest),
            "signature is UNSIGNED",
        ),
        (
            by_digest(&untrusted, &untrusted_digest),
            "no signature from an allowed identity",
        ),
        (
            by_digest(&critical, &critical_digest),
            "2 critical findings (at most 0 allowed)",
        ),
        (
            by_digest(&mutable, &mutable_digest),
            "repository control ECR.2 is FAIL",
        ),
        (
            by_digest(&good, &unknown_digest),
            "the ledger has never seen",
        ),
        (format!("{registry}/{good}:v1"), "tags are mutable"),
        (
            "docker.io/library/nginx:1.27".to_owned(),
            "not an ECR image reference",
        ),
    ];

    // Signed, scanned, ECR.2 passing, by digest: allowed everywhere, citing its evidence.
    let allowed = verdict(&base, &by_digest(&good, &good_digest), Some("prod")).await;
    assert_eq!(allowed["decision"], "allow", "{allowed:#}");
    assert_eq!(allowed["mode"], "strict");
    assert_eq!(allowed["reasons"], json!([]));
    assert_eq!(allowed["digest"], good_digest.as_str());
    assert_eq!(allowed["policy_version"].as_str().map(str::len), Some(64));
    assert!(allowed["evidence"]["seq"].as_i64().is_some(), "{allowed:#}");
    assert_eq!(allowed["evidence"]["hash"].as_str().map(str::len), Some(64));

    // The view was waited for with audit-mode verdicts: counted from here.
    let before = app.scrape().await;
    let warned_before = metric_value(
        &before,
        "ecr_audit_deploy_verdicts_total",
        &[("decision", "warn"), ("mode", "audit")],
    )
    .unwrap_or_default();
    for (image, reason) in &cases {
        let strict = verdict(&base, image, Some("prod")).await;
        assert_eq!(strict["decision"], "deny", "{strict:#}");
        assert!(
            strict["reasons"].to_string().contains(reason),
            "{strict:#} should say {reason}"
        );
        let audit = verdict(&base, image, Some("staging")).await;
        assert_eq!(audit["decision"], "allow", "{audit:#}");
        assert_eq!(audit["mode"], "audit");
        assert!(
            audit["warnings"].to_string().contains(reason),
            "{audit:#} should warn {reason}"
        );
    }
    // Each verdict is counted by decision and mode: denials in strict, would-be denials in audit.
    let metrics = app.scrape().await;
    let count = |decision: &str, mode: &str| {
        metric_value(
            &metrics,
            "ecr_audit_deploy_verdicts_total",
            &[("decision", decision), ("mode", mode)],
        )
    };
    assert_eq!(
        count("deny", "strict"),
        Some(cases.len() as f64),
        "{metrics}"
    );
    assert_eq!(
        count("warn", "audit"),
        Some(warned_before + cases.len() as f64)
    );
    assert_eq!(count("allow", "strict"), Some(1.0));
    let tagged = verdict(&base, &cases[5].0, None).await;
    assert_eq!(
        tagged["digest"],
        good_digest.as_str(),
        "the tag resolves to its digest"
    );
    assert_eq!(tagged["known"], true);

    // Kubernetes: each failing image named with its reason in strict mode, warnings in audit.
    let images = [
        by_digest(&good, &good_digest),
        by_digest(&unsigned, &unsigned_digest),
        by_digest(&critical, &critical_digest),
    ];
    let review = deployment_review(&images.iter().map(String::as_str).collect::<Vec<_>>());
    let (status, strict) = post(&format!("{base}/v1/admission/prod"), review.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(strict["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(strict["kind"], "AdmissionReview");
    let response = &strict["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], false, "{strict:#}");
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.contains(&format!(
            "containers[c1] {}: signature is UNSIGNED",
            images[1]
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "containers[c2] {}: 2 critical findings",
            images[2]
        )),
        "{message}"
    );
    assert!(
        !message.contains(&images[0]),
        "the compliant image is not named: {message}"
    );
    let (status, audit) = post(&format!("{base}/v1/admission"), review).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(audit["response"]["allowed"], true, "{audit:#}");
    assert!(audit["response"].get("status").is_none());
    let warnings = audit["response"]["warnings"].to_string();
    assert!(
        warnings.contains("containers[c1]") && warnings.contains("signature is UNSIGNED"),
        "{warnings}"
    );
    assert!(
        warnings.contains("containers[c2]") && warnings.contains("2 critical findings"),
        "{warnings}"
    );

    // Gatekeeper: one item per key; a denied key carries its reasons as the error.
    let provider = json!({
        "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
        "kind": "ProviderRequest",
        "request": {"keys": [images[0], images[1]]}
    });
    let (status, answer) = post(
        &format!("{base}/v1/gatekeeper?cluster=prod"),
        provider.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["kind"], "ProviderResponse");
    assert_eq!(answer["response"]["systemError"], "");
    let items = answer["response"]["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(
        (items[0]["key"].as_str(), items[0]["error"].as_str()),
        (Some(images[0].as_str()), Some(""))
    );
    assert_eq!(items[0]["value"]["decision"], "allow");
    assert_eq!(items[1]["value"]["decision"], "deny");
    assert!(
        items[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("signature is UNSIGNED")),
        "{answer:#}"
    );

    // Malformed and oversized bodies: a clear 400, and the server keeps serving.
    for (path, body) in [
        ("/v1/admission", "{".to_owned()),
        (
            "/v1/admission",
            json!({"apiVersion": "v1", "kind": "Pod"}).to_string(),
        ),
        ("/v1/gatekeeper", "[1,2]".to_owned()),
        (
            "/v1/admission",
            format!("{{\"pad\": \"{}\"}}", "x".repeat(3 * 1024 * 1024)),
        ),
    ] {
        let (status, error) = post(&format!("{base}{path}"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {error}");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{error}"
        );
    }
    every_verdict_is_evidence(&app, &by_digest(&unsigned, &unsigned_digest)).await;
    let missing = client()
        .get(format!("{base}/v1/verdict"))
        .send()
        .await
        .expect("verdict");
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        StatusCode::OK
    );
    app.finish().await;
}

/// Waits until the worker's view holds `image` as the ledger does (known, its digest judged).
async fn view_holds(app: &TestApp, base: &str, image: &str) {
    app.eventually(&format!("the verdict view holds {image}"), WAIT, || async {
        let answer = verdict(base, image, None).await;
        (answer["known"] == true && answer["stale"] == false).then_some(())
    })
    .await;
}

/// Every verdict given is on the evidence chain once the recorder has flushed: the counts of
/// the `deploy_verdict` records add up to the verdicts counted, the chain still verifies, and
/// the strict denial of `unsigned` names who asked, the reason and the record it cites.
/// Waits until the `deploy_verdict` records' counts add up to the verdicts counted (and to
/// the recorded count); returns that number.
async fn recorded_verdicts(app: &TestApp) -> f64 {
    let given = |metrics: &str| {
        ["allow", "warn", "deny"]
            .iter()
            .flat_map(|d| ["audit", "strict"].map(|m| (*d, m)))
            .filter_map(|(d, m)| {
                metric_value(
                    metrics,
                    "ecr_audit_deploy_verdicts_total",
                    &[("decision", d), ("mode", m)],
                )
            })
            .sum::<f64>()
    };
    app.eventually("every verdict recorded", WAIT, || async {
        let metrics = app.scrape().await;
        let recorded: Option<i64> = sqlx::query_scalar(
            "SELECT sum((detail->>'count')::bigint)::bigint FROM evidence
                  WHERE kind = 'deploy_verdict'",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        let total = given(&metrics);
        (recorded? as f64 == total
            && metric_value(
                &metrics,
                "ecr_audit_deploy_verdict_records_total",
                &[("outcome", "recorded")],
            ) == Some(total))
        .then_some(total)
    })
    .await
}

async fn every_verdict_is_evidence(app: &TestApp, unsigned: &str) {
    let counted = recorded_verdicts(app).await;
    assert!(counted > 20.0, "{counted} verdicts");
    let records: i64 =
        sqlx::query_scalar("SELECT count(*) FROM evidence WHERE kind = 'deploy_verdict'")
            .fetch_one(&app.pool)
            .await
            .expect("records");
    assert!(
        (records as f64) < counted,
        "identical decisions are folded: {records} records for {counted} verdicts"
    );
    let (detail, digest, cited_hash): (Value, String, Option<String>) = sqlx::query_as(
        "SELECT v.detail, v.digest, c.hash FROM evidence v
           LEFT JOIN evidence c ON c.seq = (v.detail->'cites'->>'seq')::bigint
          WHERE v.kind = 'deploy_verdict' AND v.detail->>'image' = $1
            AND v.detail->>'mode' = 'strict' AND v.detail->'asked_by'->>'cluster' = 'prod'
          ORDER BY v.seq LIMIT 1",
    )
    .bind(unsigned)
    .fetch_one(&app.pool)
    .await
    .expect("the strict denial of the unsigned image");
    assert_eq!(detail["decision"], "deny", "{detail:#}");
    assert_eq!(detail["scope"], "prod");
    assert_eq!(detail["known"], true);
    assert!(
        detail["reasons"]
            .to_string()
            .contains("signature is UNSIGNED"),
        "{detail:#}"
    );
    assert_eq!(
        unsigned.rsplit('@').next(),
        Some(digest.as_str()),
        "the record names the digest judged"
    );
    assert_eq!(
        detail["cites"]["hash"].as_str(),
        cited_hash.as_deref(),
        "the record cites a record of the chain by its hash"
    );
    let report = ecr_audit::evidence::verify_database(&app.pool)
        .await
        .expect("verify");
    assert!(
        matches!(report, ecr_audit::evidence::ChainReport::Valid { .. }),
        "{report:?}"
    );
}

fn openssl(args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1"])
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a server certificate for 127.0.0.1 it issued, written to `dir` as
/// `NAME-ca.crt`, `NAME.crt` and `NAME.key`; the CA's PEM text (what a client trusts).
fn certificate(dir: &std::path::Path, name: &str) -> String {
    let path = |suffix: &str| dir.join(format!("{name}{suffix}")).display().to_string();
    let (ca, ca_key) = (path("-ca.crt"), path("-ca.key"));
    openssl(&[
        "-subj",
        &format!("/CN={name} CA"),
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&[
        "-subj",
        &format!("/CN={name}"),
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        &path(".key"),
        "-out",
        &path(".crt"),
    ]);
    std::fs::read_to_string(&ca).expect("CA certificate")
}

fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("PEM"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_webhook_is_served_over_tls_and_a_renewed_certificate_is_used_without_a_restart() {
    let mut app = TestApp::new().await;
    let dir = std::env::temp_dir().join(format!("{}tls", app.prefix));
    std::fs::create_dir_all(&dir).expect("dir");
    let first = certificate(&dir, "first");
    let (cert, key) = (dir.join("served.crt"), dir.join("served.key"));
    std::fs::copy(dir.join("first.crt"), &cert).expect("copy");
    std::fs::copy(dir.join("first.key"), &key).expect("copy");
    app.admission_tls = Some(Arc::new(
        ecr_audit::export::tls::TlsFiles::load(cert.clone(), key.clone()).expect("TLS"),
    ));
    app.deploy_policy = Some(policy(
        "arn:aws:signer:us-east-1:000000000000:/signing-profiles/x",
    ));
    app.start_worker().await;
    let base = format!("https://{}", app.admission_addr.expect("TLS listener"));
    let review = deployment_review(&["docker.io/library/nginx:1.27"]);
    let answer = trusting(&first)
        .post(format!("{base}/v1/admission/prod"))
        .body(review.clone())
        .send()
        .await
        .expect("HTTPS");
    let answer: Value = answer.json().await.expect("JSON");
    assert_eq!(answer["response"]["allowed"], false, "{answer:#}");
    assert!(
        answer["response"]["status"]["message"]
            .to_string()
            .contains("not an ECR image reference")
    );

    // A renewal replaces both files; the next connection is served with the new pair.
    let second = certificate(&dir, "second");
    std::fs::copy(dir.join("second.key"), &key).expect("copy");
    std::fs::copy(dir.join("second.crt"), &cert).expect("copy");
    let renewed = app
        .eventually(
            "the renewed certificate served",
            Duration::from_secs(10),
            || async {
                trusting(&second)
                    .get(format!("{base}/healthz"))
                    .send()
                    .await
                    .ok()
            },
        )
        .await;
    assert_eq!(renewed.status(), StatusCode::OK);
    assert!(
        trusting(&first)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}

fn policy_failing_closed_in_prod() -> Arc<DeployPolicy> {
    let text = json!({
        "requirements": {"signature": {"status": ["SIGNED"]}, "scan": {"max_findings": {"critical": 0}}},
        "scopes": [{"name": "prod", "clusters": ["prod"], "mode": "strict", "stale": "fail-closed"}],
        "default": {"mode": "audit"}
    });
    Arc::new(DeployPolicy::parse(text.to_string().as_bytes()).expect("policy"))
}

/// An image pushed while no event reaches the worker is unknown to the ledger: its verdict asks
/// for an on-demand evaluation, and a moment later the image is known and judged, with an
/// evidence record saying how it was seen. A made-up digest is looked up and records nothing.
/// When the view's connections are cut it reads everything again and keeps following. A view
/// older than its bound makes every verdict say so: the fail-closed scope denies, the
/// fail-open one judges from what the view holds and warns.
#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn unknown_images_are_evaluated_on_demand_and_a_stale_view_says_so() {
    let mut app = TestApp::new_in_own_account().await;
    app.deploy_policy = Some(policy_failing_closed_in_prod());
    app.start_worker().await;
    let (repository, seen) = image(&app, "seen", true, 0).await;
    settled(&app, &repository, &seen, "UNSIGNED").await;
    app.wait_for_drain().await;
    let base = format!("http://{}", app.http_addr.expect("worker started"));
    let registry = format!("{}.dkr.ecr.{REGION}.amazonaws.com", app.account);
    let by_digest = |digest: &str| format!("{registry}/{repository}@{digest}");
    view_holds(&app, &base, &by_digest(&seen)).await;

    // Events stop reaching the queue: a push now is unknown to the ledger until asked about.
    app.remove_rules().await;
    let unseen = push_image(
        &app.ecr,
        &repository,
        "v2",
        &format!("{}unseen", app.prefix),
    )
    .await;
    let first = verdict(&base, &by_digest(&unseen), Some("prod")).await;
    assert_eq!(first["known"], false, "{first:#}");
    assert_eq!(first["decision"], "deny");
    assert!(
        first["reasons"]
            .to_string()
            .contains("the ledger has never seen"),
        "{first:#}"
    );
    assert!(
        first["notes"].to_string().contains("on-demand evaluation"),
        "{first:#}"
    );
    view_holds(&app, &base, &by_digest(&unseen)).await;
    let judged = verdict(&base, &by_digest(&unseen), Some("prod")).await;
    assert_eq!(judged["digest"], unseen.as_str());
    assert!(
        judged["reasons"].to_string().contains("signature is"),
        "judged by its signature now: {judged:#}"
    );
    let how: Vec<String> = sqlx::query_scalar(
        "SELECT detail->>'detail_type' FROM evidence WHERE digest = $1 AND kind = 'image_pushed'",
    )
    .bind(&unseen)
    .fetch_all(&app.pool)
    .await
    .expect("records");
    assert_eq!(how, ["ecr-audit On-demand"]);

    // A digest ECR does not hold: looked up once, nothing recorded about it.
    let made_up = format!("sha256:{}", "1".repeat(64));
    for _ in 0..3 {
        let answer = verdict(&base, &by_digest(&made_up), None).await;
        assert_eq!(answer["known"], false);
        assert_eq!(
            answer["decision"], "allow",
            "audit admits the unknown with a warning"
        );
    }
    app.eventually("the made-up digest looked up", WAIT, || async {
        let metrics = app.scrape().await;
        let outcome = |o: &str| {
            metric_value(
                &metrics,
                "ecr_audit_on_demand_evaluations_total",
                &[("outcome", o)],
            )
        };
        (outcome("absent") == Some(1.0) && outcome("evaluated") == Some(1.0)).then_some(())
    })
    .await;
    let about: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM evidence WHERE digest = $1 AND kind <> 'deploy_verdict'",
    )
    .bind(&made_up)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(
        about, 0,
        "a made-up reference fills nothing but verdict records"
    );

    // Cut the view's connections: it reads everything again and follows later commits.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'ecr-audit verdict view' AND datname = current_database()",
    )
    .execute(&app.pool)
    .await
    .expect("terminate");
    sqlx::query("UPDATE images SET scan_critical = 5 WHERE digest = $1")
        .bind(&seen)
        .execute(&app.pool)
        .await
        .expect("update");
    app.eventually("the view follows after reconnecting", WAIT, || async {
        let answer = verdict(&base, &by_digest(&seen), None).await;
        answer["reasons"]
            .to_string()
            .contains("5 critical findings")
            .then_some(())
    })
    .await;
    let metrics = app.scrape().await;
    assert!(
        metric_value(
            &metrics,
            "ecr_audit_verdict_view_reloads_total",
            &[("what", "full")]
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    // The heartbeat confirms the view current: the gauge alerts watch is seconds old at most.
    let fresh = metric_value(
        &metrics,
        "ecr_audit_verdict_view_fresh_timestamp_seconds",
        &[],
    )
    .expect("the freshness gauge");
    let age = chrono::Utc::now().timestamp() as f64 - fresh;
    assert!((-1.0..5.0).contains(&age), "view confirmed {age} s ago");

    // A bound of zero: every verdict comes from a view older than its bound.
    app.stop_worker().await;
    app.verdict_max_staleness = Duration::ZERO;
    app.start_worker().await;
    let base = format!("http://{}", app.http_addr.expect("worker started"));
    let strict = verdict(&base, &by_digest(&seen), Some("prod")).await;
    assert_eq!(strict["decision"], "deny", "{strict:#}");
    assert_eq!(strict["stale"], true);
    assert!(
        strict["reasons"].to_string().contains("the ledger view"),
        "{strict:#}"
    );
    app.eventually("a stale view judged fail-open", WAIT, || async {
        let audit = verdict(&base, &by_digest(&seen), None).await;
        let warnings = audit["warnings"].to_string();
        (audit["decision"] == "allow"
            && audit["stale"] == true
            && warnings.contains("5 critical findings")
            && warnings.contains("s old (bound 0 s)"))
        .then_some(())
    })
    .await;
    app.finish().await;
}
