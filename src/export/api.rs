//! The read-only JSON API: `/v1/posture`, `/v1/images` and `/v1/images/{digest}/history`,
//! the CLI's `posture`, `images` and `explain` views in the shapes of their `--format json`,
//! so on-call and dashboards read them without database credentials (docs/RUNBOOK.md).
//!
//! Off unless the worker is started with `ECR_AUDIT_API=on`; then every `/v1/` request must
//! carry `Authorization: Bearer TOKEN` with the token of `ECR_AUDIT_API_TOKEN_FILE`, or gets
//! 401. The routes share the HTTP server of `/metrics` (`src/export/http.rs`), so they are
//! held to its connection cap, header-read timeout and request timeout, and read through its
//! own small database pool.

use std::fmt::Write as _;
use std::path::Path;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tracing::warn;

use super::http::HttpState;
use crate::domain::{ScanStatus, SignatureStatus};
use crate::evidence::timeline::{DigestQuery, digest_timeline};
use crate::readmodel::ImageFilter;

/// Rows `/v1/images` returns when no `limit` is given, and the most it returns at once.
pub const DEFAULT_IMAGES_LIMIT: usize = 100;
pub const MAX_IMAGES_LIMIT: usize = 1000;
/// The most evidence records one history answer reads (the CLI's default `--limit`).
pub const MAX_HISTORY_RECORDS: u32 = 1000;
/// The shortest token accepted: a guessable token is no protection.
const MIN_TOKEN_CHARS: usize = 16;

/// Why the API could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ApiConfigError {
    #[error("reading the API token file: {0}")]
    Read(#[from] std::io::Error),
    #[error("the API token file holds {0} characters; at least {MIN_TOKEN_CHARS} are needed")]
    TooShort(usize),
}

/// The bearer token, kept only as its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ApiToken([u8; 32]);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

impl ApiToken {
    /// Reads the token from a file (surrounding whitespace, such as a final newline, is not
    /// part of it).
    ///
    /// # Errors
    /// When the file cannot be read or the token is shorter than 16 characters.
    pub fn from_file(path: &Path) -> Result<Self, ApiConfigError> {
        Self::new(std::fs::read_to_string(path)?.trim())
    }

    /// # Errors
    /// When the token is shorter than 16 characters.
    pub fn new(token: &str) -> Result<Self, ApiConfigError> {
        let chars = token.chars().count();
        if chars < MIN_TOKEN_CHARS {
            return Err(ApiConfigError::TooShort(chars));
        }
        Ok(Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// Compares the SHA-256 of what was presented with the token's, every byte whatever the
    /// first difference: the time taken says nothing about the token, not even its length.
    fn accepts(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let difference = self
            .0
            .iter()
            .zip(presented.iter())
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// The `/v1/` routes, each behind the bearer token.
pub(crate) fn routes(token: ApiToken) -> Router<HttpState> {
    Router::new()
        .route("/v1/posture", get(posture))
        .route("/v1/images", get(images))
        .route("/v1/images/{digest}/history", get(history))
        .route_layer(middleware::from_fn(move |request: Request, next: Next| {
            require_token(token, request, next)
        }))
}

/// Whether the request carries `Authorization: Bearer TOKEN` with the configured token.
fn authorized(token: ApiToken, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, presented)| {
            scheme.eq_ignore_ascii_case("bearer") && token.accepts(presented.trim())
        })
}

async fn require_token(token: ApiToken, request: Request, next: Next) -> Response {
    match authorized(token, request.headers()) {
        true => next.run(request).await,
        false => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            error_body("a valid bearer token is required (Authorization: Bearer TOKEN)"),
        )
            .into_response(),
    }
}

/// What a request could not be answered with.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the database could not answer")]
    Database(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Database(detail) => {
                // The cause goes to the log, not to the client.
                warn!(error = %detail, "API request failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, error_body(&self.to_string())).into_response()
    }
}

fn error_body(message: &str) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{}\n", serde_json::json!({ "error": message })),
    )
}

/// The CLI's `--format json` output, byte for byte.
fn json(value: &impl Serialize) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text + "\n").into_response(),
        Err(err) => ApiError::Database(err.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PostureParams {
    repository: Option<String>,
}

async fn posture(
    State(state): State<HttpState>,
    Query(params): Query<PostureParams>,
) -> Result<Response, ApiError> {
    let rows = state
        .store
        .posture(params.repository.as_deref())
        .await
        .map_err(|e| ApiError::Database(e.to_string()))?;
    Ok(json(&rows))
}

/// `/v1/images` takes the filters of `ecr-audit images` and a page.
#[derive(Debug, Default, Deserialize)]
struct ImagesParams {
    repository: Option<String>,
    digest: Option<String>,
    #[serde(default)]
    in_use: bool,
    signature: Option<String>,
    scan: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
}

impl ImagesParams {
    fn filter(&self) -> Result<ImageFilter, ApiError> {
        let signature = match &self.signature {
            Some(s) => Some(
                SignatureStatus::from_str_opt(&s.to_ascii_uppercase()).ok_or_else(|| {
                    ApiError::BadRequest(format!("signature: unknown status {s:?}"))
                })?,
            ),
            None => None,
        };
        let scan = match &self.scan {
            Some(s) => Some(
                ScanStatus::from_str_opt(&s.to_ascii_uppercase())
                    .ok_or_else(|| ApiError::BadRequest(format!("scan: unknown status {s:?}")))?,
            ),
            None => None,
        };
        Ok(ImageFilter {
            in_use: self.in_use,
            signature,
            scan,
        })
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.unwrap_or(DEFAULT_IMAGES_LIMIT) {
            n @ 1..=MAX_IMAGES_LIMIT => Ok(n),
            n => Err(ApiError::BadRequest(format!(
                "limit: {n} is not between 1 and {MAX_IMAGES_LIMIT}"
            ))),
        }
    }

    /// The query string of the page after this one.
    fn next_page(&self, offset: usize) -> String {
        let mut query = String::new();
        let mut add = |key: &str, value: &str| {
            let _ = write!(
                query,
                "{}{key}={}",
                if query.is_empty() { "" } else { "&" },
                encode(value)
            );
        };
        for (key, value) in [
            ("repository", &self.repository),
            ("digest", &self.digest),
            ("signature", &self.signature),
            ("scan", &self.scan),
        ] {
            if let Some(value) = value {
                add(key, value);
            }
        }
        if self.in_use {
            add("in_use", "true");
        }
        add(
            "limit",
            &self.limit.unwrap_or(DEFAULT_IMAGES_LIMIT).to_string(),
        );
        add("offset", &offset.to_string());
        query
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn images(
    State(state): State<HttpState>,
    Query(params): Query<ImagesParams>,
) -> Result<Response, ApiError> {
    let filter = params.filter()?;
    let limit = params.limit()?;
    let rows = state
        .store
        .images(params.repository.as_deref())
        .await
        .map_err(|e| ApiError::Database(e.to_string()))?;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|row| filter.keeps(row))
        .filter(|row| params.digest.as_deref().is_none_or(|d| row.digest == d))
        .collect();
    let total = rows.len();
    let page: Vec<_> = rows.into_iter().skip(params.offset).take(limit).collect();
    let mut response = json(&page);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&total.to_string()) {
        headers.insert("x-total-count", value);
    }
    let next = params.offset.saturating_add(limit);
    if next < total
        && let Ok(value) = HeaderValue::from_str(&format!(
            "</v1/images?{}>; rel=\"next\"",
            params.next_page(next)
        ))
    {
        headers.insert(header::LINK, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    repository: Option<String>,
    account: Option<String>,
    region: Option<String>,
    limit: Option<u32>,
}

async fn history(
    State(state): State<HttpState>,
    UrlPath(digest): UrlPath<String>,
    Query(params): Query<HistoryParams>,
) -> Result<Response, ApiError> {
    let limit = match params.limit.unwrap_or(MAX_HISTORY_RECORDS) {
        n @ 1..=MAX_HISTORY_RECORDS => n,
        n => {
            return Err(ApiError::BadRequest(format!(
                "limit: {n} is not between 1 and {MAX_HISTORY_RECORDS}"
            )));
        }
    };
    let pool = state.store.pool();
    let repository = match params.repository {
        Some(repository) => repository,
        None => repository_of(pool, &digest).await?,
    };
    let query = DigestQuery {
        repository,
        digest,
        account: params.account,
        region: params.region,
    };
    let database = |e: sqlx::Error| ApiError::Database(e.to_string());
    let Some(mut timeline) = digest_timeline(pool, &query, limit)
        .await
        .map_err(database)?
    else {
        return Err(ApiError::NotFound(format!(
            "no evidence names {}@{}",
            query.repository, query.digest
        )));
    };
    let alerts = crate::alerts::outbox::sent_for(pool, &timeline.seqs())
        .await
        .map_err(database)?;
    timeline.add_alerts(&alerts);
    let mut response = json(&timeline.entries);
    if timeline.truncated {
        response
            .headers_mut()
            .insert("x-history-truncated", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The one repository whose evidence names the digest; a digest in several repositories
/// needs `?repository=`.
async fn repository_of(pool: &sqlx::PgPool, digest: &str) -> Result<String, ApiError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT repository FROM (
             SELECT repository FROM evidence
              WHERE digest = $1 AND repository IS NOT NULL ORDER BY seq LIMIT 1000) named
          LIMIT 2",
    )
    .bind(digest)
    .fetch_all(pool)
    .await
    .map_err(|e| ApiError::Database(e.to_string()))?;
    match names.as_slice() {
        [] => Err(ApiError::NotFound(format!("no evidence names {digest}"))),
        [one] => Ok(one.clone()),
        _ => Err(ApiError::BadRequest(format!(
            "{digest} is in more than one repository: add ?repository=NAME"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_compared_whole_and_never_printed() {
        let token = ApiToken::new("correct horse battery staple").expect("long enough");
        assert!(token.accepts("correct horse battery staple"));
        assert!(!token.accepts("correct horse battery stapl"));
        assert!(!token.accepts(""));
        assert!(!format!("{token:?}").contains("horse"));
        assert!(matches!(
            ApiToken::new("short"),
            Err(ApiConfigError::TooShort(5))
        ));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer correct horse battery staple"),
        );
        assert!(authorized(token, &headers));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic correct horse battery staple"),
        );
        assert!(!authorized(token, &headers));
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let params = ImagesParams {
            repository: Some("team/app one".into()),
            signature: Some("UNSIGNED".into()),
            in_use: true,
            limit: Some(2),
            ..ImagesParams::default()
        };
        assert_eq!(
            params.next_page(4),
            "repository=team%2Fapp%20one&signature=UNSIGNED&in_use=true&limit=2&offset=4"
        );
        assert!(params.filter().is_ok());
        let bad = ImagesParams {
            scan: Some("DONE".into()),
            limit: Some(5000),
            ..ImagesParams::default()
        };
        assert!(bad.filter().is_err());
        assert!(bad.limit().is_err());
    }
}
