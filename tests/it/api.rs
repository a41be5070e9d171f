//! The read-only `/v1/` API (issue 20, part 6) through the real worker: absent when off,
//! 401 without or with a wrong bearer token, the CLI's `--format json` answers with the
//! token, pages of images, 404 for a digest no evidence names.

use std::time::Duration;

use ecr_audit::export::api::ApiToken;
use reqwest::StatusCode;
use serde_json::Value;

use crate::cli::{ecr_audit, unsigned_push};
use crate::helpers::{TestApp, push_image};

const TOKEN: &str = "s3cret-token-for-the-api-test";

fn cli_json(app: &TestApp, args: &[&str]) -> Value {
    let output = ecr_audit(app).args(args).output().expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("CLI JSON")
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect(url)
}

async fn get_json(url: &str) -> Value {
    let response = get(url, Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.expect("API JSON")
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn the_api_answers_as_the_cli_does_behind_its_token_and_is_absent_when_off() {
    let mut app = TestApp::new().await;
    let (repository, digest) = unsigned_push(&mut app, "api-app", "api-1").await;
    let off = app.http_addr.expect("worker started");
    assert_eq!(
        get(&format!("http://{off}/v1/posture"), Some(TOKEN))
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "the API is off by default"
    );
    app.stop_worker().await;

    // The same worker with the API on.
    app.api = Some(ApiToken::new(TOKEN).expect("token"));
    app.start_worker().await;
    let other = push_image(&app.ecr, &repository, "v2", "api-2").await;
    app.eventually("both digests UNSIGNED", Duration::from_secs(30), || async {
        let images = app.store.images(Some(&repository)).await.ok()?;
        (images
            .iter()
            .filter(|i| i.signature.status.as_deref() == Some("UNSIGNED"))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    app.wait_for_drain().await;
    let base = format!("http://{}", app.http_addr.expect("worker started"));

    let posture = format!("{base}/v1/posture");
    let missing = get(&posture, None).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    assert_eq!(
        get(&posture, Some("s3cret-token-for-the-api-tesT"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_json(&posture).await,
        cli_json(&app, &["posture", "--format", "json"])
    );

    let images = get_json(&format!(
        "{base}/v1/images?repository={repository}&signature=unsigned"
    ))
    .await;
    assert_eq!(images.as_array().map(Vec::len), Some(2), "{images:#}");
    assert_eq!(
        images,
        cli_json(
            &app,
            &["images", "--format", "json", "--repository", &repository]
                .into_iter()
                .chain(["--signature", "UNSIGNED"])
                .collect::<Vec<_>>()
        )
    );
    let one = get_json(&format!("{base}/v1/images?digest={other}")).await;
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    assert_eq!(one[0]["digest"], other.as_str());

    // Pages: the first holds `limit` rows and links to the next, which holds the rest.
    let first = get(
        &format!("{base}/v1/images?repository={repository}&limit=1"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.headers().get("x-total-count").map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    let link = first
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a Link to the next page");
    let page: Value = first.json().await.expect("JSON");
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .map(|(path, _)| path.to_owned())
        .expect("<path>");
    let second = get_json(&format!("{base}{next}")).await;
    assert_eq!(second.as_array().map(Vec::len), Some(1));
    assert_ne!(page[0]["digest"], second[0]["digest"]);
    assert_eq!(
        get(&format!("{base}/v1/images?scan=DONE"), Some(TOKEN))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );

    // A digest's history is `explain`'s, with or without the repository named.
    let explained = cli_json(
        &app,
        &[
            "explain",
            &format!("{repository}@{digest}"),
            "--format",
            "json",
        ],
    );
    let history = format!("{base}/v1/images/{digest}/history");
    assert_eq!(
        get_json(&format!("{history}?repository={repository}")).await,
        explained
    );
    assert_eq!(get_json(&history).await, explained);
    let unknown = format!("{base}/v1/images/sha256:{}/history", "0".repeat(64));
    assert_eq!(
        get(&unknown, Some(TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&unknown, None).await.status(), StatusCode::UNAUTHORIZED);
    app.finish().await;
}

#[tokio::test]
async fn the_worker_will_not_start_the_api_without_a_usable_token() {
    let app = TestApp::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let short = dir.path().join("token");
    std::fs::write(&short, "short\n").expect("write");
    for (file, expected) in [
        (None, "needs ECR_AUDIT_API_TOKEN_FILE"),
        (Some(short.as_path()), "at least 16"),
    ] {
        let mut command = ecr_audit(&app);
        command
            .arg("worker")
            .env("ECR_AUDIT_QUEUE_URL", &app.queue_url)
            .env("ECR_AUDIT_API", "on")
            .env_remove("ECR_AUDIT_API_TOKEN_FILE");
        if let Some(file) = file {
            command.env("ECR_AUDIT_API_TOKEN_FILE", file);
        }
        let output = command
            .timeout(Duration::from_secs(20))
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
    app.finish().await;
}
