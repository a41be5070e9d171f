//! Deploy-time verdicts from the ledger (docs/ENFORCEMENT.md): `GET /v1/verdict` for scripts,
//! CI and ECS hooks, `POST /v1/admission` for a Kubernetes validating webhook and
//! `POST /v1/gatekeeper` for a Gatekeeper external data provider, all judged by the deploy
//! policy (`src/export/deploy_policy.rs`) against what the ledger holds for the image.
//!
//! Served on the worker's HTTP server when `ECR_AUDIT_DEPLOY_POLICY` is set, within its
//! connection cap and timeouts; request bodies larger than [`MAX_BODY_BYTES`] get 400.

use std::sync::Arc;
use std::time::Instant;

use super::deploy_policy::{Decision, DeployPolicy, Mode, StaleAnswer, UnknownAnswer, Where};
use super::http::HttpState;
use super::on_demand::{Asked, OnDemand, Target};
use super::recorder::{NoteKey, VerdictNote, VerdictRecorder};
use super::view::{LedgerView, Lookup};
use crate::evidence::detail::{CitedRecord, GivenVerdict, VerdictAsker, VerdictDecision};
use crate::store::verdict::{ImageKey, VerdictInputs};
use crate::telemetry::{DeployDecision, DeployMode, Happened};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The largest request body read; Kubernetes caps objects near 1.5 MiB, so a review of any
/// real Pod or workload fits.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// The most images one admission or Gatekeeper request may ask about.
pub const MAX_IMAGES_PER_REQUEST: usize = 256;
/// Kubernetes truncates longer warnings; cut them ourselves so the end says so.
const MAX_WARNING_CHARS: usize = 256;

/// An image reference in an ECR registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrReference {
    pub account: String,
    pub region: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl EcrReference {
    /// `ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG][@sha256:HEX]`; `None` for anything
    /// else (Docker Hub, other registries, a malformed reference).
    pub fn parse(reference: &str) -> Option<Self> {
        let (host, path) = reference.split_once('/')?;
        let (account, rest) = host.split_once(".dkr.ecr.")?;
        let region = rest
            .strip_suffix(".amazonaws.com")
            .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
        let valid_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        if !valid_account || region.is_empty() || region.contains('.') {
            return None;
        }
        let (name, digest) = match path.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (path, None),
        };
        if let Some(d) = digest {
            let hex = d.strip_prefix("sha256:")?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
        }
        // A tag follows the last `:` of the last path segment.
        let last = name.rsplit('/').next().unwrap_or(name);
        let (repository, tag) = match last.rsplit_once(':') {
            Some((_, tag)) => (&name[..name.len() - tag.len() - 1], Some(tag)),
            None => (name, None),
        };
        if repository.is_empty() || tag.is_some_and(str::is_empty) {
            return None;
        }
        Some(Self {
            account: account.to_owned(),
            region: region.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }
}

/// The evidence record a verdict cites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceRef {
    pub seq: i64,
    pub hash: String,
}

/// One image's verdict: the `GET /v1/verdict` body (docs/ENFORCEMENT.md).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub image: String,
    pub decision: Decision,
    pub mode: Mode,
    pub scope: String,
    pub policy_version: String,
    /// Whether the ledger knows the image.
    pub known: bool,
    pub account: Option<String>,
    pub region: Option<String>,
    pub repository: Option<String>,
    pub digest: Option<String>,
    pub tag: Option<String>,
    /// Every requirement the image fails (also when audit mode admits it).
    pub reasons: Vec<String>,
    /// What the caller should show when it admits: the reasons in audit mode, and notes.
    pub warnings: Vec<String>,
    pub evidence: Option<EvidenceRef>,
    /// Whether the view was older than its bound (`ECR_AUDIT_VERDICT_MAX_STALENESS`).
    pub stale: bool,
    /// What was done about the request (an on-demand evaluation), never a reason to deny.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Who asks and for which deployment target.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Asker {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    /// The ECS service of a deployment hook.
    pub service: Option<String>,
    /// The Kubernetes user of an admission review.
    pub user: Option<String>,
}

/// What the verdict routes share: the policy, the view they read, and where decisions go.
#[derive(Clone)]
pub struct VerdictService {
    pub policy: Arc<DeployPolicy>,
    pub view: Arc<LedgerView>,
    /// Puts every decision on the evidence chain; `None` only in tests of the answer alone.
    pub recorder: Option<VerdictRecorder>,
    /// Evaluates digests the ledger does not know.
    pub on_demand: Option<OnDemand>,
}

pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/verdict", get(verdict_get))
        .route("/v1/admission", post(admission))
        .route("/v1/admission/{cluster}", post(admission_in))
        .route("/v1/gatekeeper", post(gatekeeper))
}

fn service(state: &HttpState) -> Option<&VerdictService> {
    state.verdicts.as_ref()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{}\n", json!({ "error": message })),
    )
        .into_response()
}

fn json_response(value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text + "\n").into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct VerdictParams {
    image: Option<String>,
    cluster: Option<String>,
    namespace: Option<String>,
    service: Option<String>,
}

async fn verdict_get(
    State(state): State<HttpState>,
    Query(params): Query<VerdictParams>,
) -> Response {
    let Some(service) = service(&state) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(image) = params.image.filter(|i| !i.is_empty()) else {
        return bad_request(
            "image: a reference is required (?image=ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO@sha256:…)",
        );
    };
    let asker = Asker {
        cluster: params.cluster,
        namespace: params.namespace,
        service: params.service,
        user: None,
    };
    json_response(&judge(service, &state.metrics, &asker, &image))
}

/// Judges one reference for one asker from the view, and records the verdict: a log line,
/// `ecr_audit_deploy_verdicts_total` and, off the answer's path, a `deploy_verdict` record.
pub(crate) fn judge(
    service: &VerdictService,
    metrics: &crate::telemetry::Metrics,
    asker: &Asker,
    image: &str,
) -> Verdict {
    let verdict = decide(service, asker, image, Instant::now());
    let decision = match verdict.decision {
        Decision::Deny => DeployDecision::Deny,
        Decision::Allow if !verdict.reasons.is_empty() => DeployDecision::Warn,
        Decision::Allow => DeployDecision::Allow,
    };
    let mode = match verdict.mode {
        Mode::Audit => DeployMode::Audit,
        Mode::Strict => DeployMode::Strict,
    };
    Happened::DeployVerdict {
        decision,
        mode,
        image,
        digest: verdict.digest.as_deref(),
        scope: &verdict.scope,
        cluster: asker.cluster.as_deref(),
        namespace: asker.namespace.as_deref(),
        user: asker.user.as_deref(),
        policy_version: &verdict.policy_version,
    }
    .record(metrics);
    if let Some(recorder) = &service.recorder {
        recorder.note(note(&verdict, decision, asker));
    }
    verdict
}

/// The decision as the recorder folds it.
fn note(verdict: &Verdict, decision: DeployDecision, asker: &Asker) -> VerdictNote {
    VerdictNote {
        key: NoteKey {
            verdict: GivenVerdict {
                decision: match decision {
                    DeployDecision::Allow => VerdictDecision::Allow,
                    DeployDecision::Warn => VerdictDecision::Warn,
                    DeployDecision::Deny => VerdictDecision::Deny,
                },
                mode: verdict.mode,
                scope: verdict.scope.clone(),
                policy_version: verdict.policy_version.clone(),
                image: verdict.image.clone(),
                known: verdict.known,
                stale: verdict.stale,
                reasons: verdict.reasons.clone(),
                asked_by: VerdictAsker {
                    cluster: asker.cluster.clone(),
                    namespace: asker.namespace.clone(),
                    service: asker.service.clone(),
                    user: asker.user.clone(),
                },
                cites: verdict.evidence.as_ref().map(|e| CitedRecord {
                    seq: e.seq,
                    hash: e.hash.clone(),
                }),
            },
            account: verdict.account.clone(),
            region: verdict.region.clone(),
            repository: verdict.repository.clone(),
            digest: verdict.digest.clone(),
            tag: verdict.tag.clone(),
        },
        at: chrono::Utc::now(),
    }
}

fn decide(service: &VerdictService, asker: &Asker, image: &str, now: Instant) -> Verdict {
    let policy = &service.policy;
    let reference = EcrReference::parse(image);
    let at = Where {
        cluster: asker.cluster.as_deref(),
        namespace: asker.namespace.as_deref(),
        account: reference.as_ref().map(|r| r.account.as_str()),
    };
    let scope = policy.scope(&at);
    let mut verdict = blank(policy, scope, image, reference.as_ref());
    let Some(reference) = reference else {
        verdict.reasons.push("not an ECR image reference (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG|@sha256:…])".to_owned());
        return unknown(verdict, scope.unknown_answer());
    };
    let key = match (&reference.digest, &reference.tag) {
        (Some(d), _) => ImageKey::Digest(d),
        (None, Some(t)) => ImageKey::Tag(t),
        (None, None) => ImageKey::Tag("latest"),
    };
    let repository = (
        reference.account.as_str(),
        reference.region.as_str(),
        reference.repository.as_str(),
    );
    match service.view.lookup(repository, key, now) {
        Lookup::Found(inputs) => judged(verdict, policy, &reference, *inputs, scope.mode),
        Lookup::Missing => {
            never_seen(&mut verdict, &reference, key);
            ask_on_demand(service, &mut verdict, &reference, now);
            unknown(verdict, scope.unknown_answer())
        }
        Lookup::Stale { age, held } => stale(service, verdict, &reference, key, (age, held), scope),
    }
}

/// A verdict from a view older than its bound: judged from what the view holds, then the
/// scope's `stale` choice: `fail-open` warns, `fail-closed` denies.
fn stale(
    service: &VerdictService,
    verdict: Verdict,
    reference: &EcrReference,
    key: ImageKey<'_>,
    (age, held): (Option<std::time::Duration>, Option<Box<VerdictInputs>>),
    scope: &super::deploy_policy::Scope,
) -> Verdict {
    let note = match age {
        Some(age) => format!(
            "the ledger view is {:.1} s old (bound {} s): changes since may be missing",
            age.as_secs_f64(),
            service.view.max_staleness().as_secs()
        ),
        None => "the ledger view has not been loaded from the database yet".to_owned(),
    };
    let mut verdict = match held {
        Some(inputs) => judged(verdict, &service.policy, reference, *inputs, scope.mode),
        None => {
            let mut verdict = verdict;
            never_seen(&mut verdict, reference, key);
            verdict
        }
    };
    verdict.stale = true;
    match scope.stale {
        StaleAnswer::FailOpen => {
            if !verdict.known {
                verdict = unknown(verdict, UnknownAnswer::Warn);
            }
            verdict.warnings.push(note);
        }
        StaleAnswer::FailClosed => {
            verdict.reasons.push(note);
            verdict.decision = Decision::Deny;
        }
    }
    verdict
}

fn never_seen(verdict: &mut Verdict, reference: &EcrReference, key: ImageKey<'_>) {
    verdict.reasons.push(match key {
        ImageKey::Digest(d) => {
            format!("the ledger has never seen {d} in {}", reference.repository)
        }
        ImageKey::Tag(t) => format!(
            "the ledger knows no image tagged {t} in {}",
            reference.repository
        ),
    });
}

/// Asks for a digest the ledger does not know to be evaluated, and says so in the verdict.
fn ask_on_demand(
    service: &VerdictService,
    verdict: &mut Verdict,
    reference: &EcrReference,
    now: Instant,
) {
    let (Some(on_demand), Some(digest)) = (&service.on_demand, &reference.digest) else {
        return;
    };
    let Some(target) = Target::of(
        &reference.account,
        &reference.region,
        &reference.repository,
        digest,
    ) else {
        return;
    };
    let note = match on_demand.ask(target, now) {
        Asked::Queued | Asked::Recently => {
            "an on-demand evaluation was requested: if ECR holds the image, ask again in a few seconds"
        }
        Asked::Busy => "too many unknown images are being evaluated: ask again later",
    };
    verdict.notes.push(note.to_owned());
}

/// A verdict that admits, before anything is judged.
fn blank(
    policy: &DeployPolicy,
    scope: &super::deploy_policy::Scope,
    image: &str,
    reference: Option<&EcrReference>,
) -> Verdict {
    Verdict {
        image: image.to_owned(),
        decision: Decision::Allow,
        mode: scope.mode,
        scope: scope.name.clone(),
        policy_version: policy.version.clone(),
        known: false,
        account: reference.map(|r| r.account.clone()),
        region: reference.map(|r| r.region.clone()),
        repository: reference.map(|r| r.repository.clone()),
        digest: reference.and_then(|r| r.digest.clone()),
        tag: reference.and_then(|r| r.tag.clone()),
        reasons: Vec::new(),
        warnings: Vec::new(),
        evidence: None,
        stale: false,
        notes: Vec::new(),
    }
}

fn unknown(mut verdict: Verdict, answer: UnknownAnswer) -> Verdict {
    match answer {
        UnknownAnswer::Deny => verdict.decision = Decision::Deny,
        UnknownAnswer::Warn => verdict.warnings.clone_from(&verdict.reasons),
    }
    verdict
}

fn judged(
    mut verdict: Verdict,
    policy: &DeployPolicy,
    reference: &EcrReference,
    inputs: VerdictInputs,
    mode: Mode,
) -> Verdict {
    verdict.known = true;
    verdict.digest = Some(inputs.image.digest.clone());
    verdict.evidence = inputs.evidence.map(|(seq, hash)| EvidenceRef { seq, hash });
    verdict.reasons = policy.failures(
        &inputs.image,
        inputs.checked_at,
        inputs.posture.as_ref(),
        chrono::Utc::now(),
    );
    if reference.digest.is_none() {
        let note = format!(
            "tags are mutable: {}:{} resolved to {} as the ledger knows it now; deploy by digest",
            reference.repository,
            reference.tag.as_deref().unwrap_or("latest"),
            inputs.image.digest
        );
        if policy.require_digest {
            verdict.reasons.push(note);
        } else {
            verdict.warnings.push(note);
        }
    }
    if !verdict.reasons.is_empty() {
        match mode {
            Mode::Strict => verdict.decision = Decision::Deny,
            Mode::Audit => {
                let mut warnings = verdict.reasons.clone();
                warnings.append(&mut verdict.warnings);
                verdict.warnings = warnings;
            }
        }
    }
    verdict
}

/// Reads the body whole, up to [`MAX_BODY_BYTES`].
async fn body(request: Request) -> Result<Bytes, Response> {
    axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            bad_request(&format!(
                "the request body is larger than {MAX_BODY_BYTES} bytes or could not be read"
            ))
        })
}

async fn admission(State(state): State<HttpState>, request: Request) -> Response {
    review(state, None, request).await
}

async fn admission_in(
    State(state): State<HttpState>,
    UrlPath(cluster): UrlPath<String>,
    request: Request,
) -> Response {
    review(state, Some(cluster), request).await
}

async fn review(state: HttpState, cluster: Option<String>, request: Request) -> Response {
    let Some(service) = service(&state) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = match body(request).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let review = match super::admission::AdmissionRequest::parse(&bytes) {
        Ok(r) => r,
        Err(message) => return bad_request(&message),
    };
    let asker = Asker {
        cluster,
        namespace: review.namespace.clone(),
        service: None,
        user: review.user.clone(),
    };
    let mut verdicts = Vec::with_capacity(review.images.len());
    for image in &review.images {
        verdicts.push((
            image.clone(),
            judge(service, &state.metrics, &asker, &image.image),
        ));
    }
    json_response(&super::admission::response(&review, &verdicts))
}

#[derive(Debug, Deserialize)]
struct GatekeeperParams {
    cluster: Option<String>,
}

async fn gatekeeper(
    State(state): State<HttpState>,
    Query(params): Query<GatekeeperParams>,
    request: Request,
) -> Response {
    let Some(service) = service(&state) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = match body(request).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let keys = match provider_keys(&bytes) {
        Ok(k) => k,
        Err(message) => return bad_request(&message),
    };
    let asker = Asker {
        cluster: params.cluster,
        ..Asker::default()
    };
    let mut items = Vec::with_capacity(keys.len());
    for key in keys {
        let verdict = judge(service, &state.metrics, &asker, &key);
        let error = match verdict.decision {
            Decision::Allow => String::new(),
            Decision::Deny => format!("{key}: {}", verdict.reasons.join("; ")),
        };
        items.push(json!({ "key": key, "value": verdict, "error": error }));
    }
    json_response(&json!({
        "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
        "kind": "ProviderResponse",
        "response": { "idempotent": true, "items": items, "systemError": "" },
    }))
}

#[derive(Debug, Deserialize)]
struct ProviderRequest {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    request: ProviderKeys,
}

#[derive(Debug, Deserialize)]
struct ProviderKeys {
    keys: Vec<String>,
}

/// The keys of a Gatekeeper `ProviderRequest`, or why the body is not one.
fn provider_keys(bytes: &[u8]) -> Result<Vec<String>, String> {
    let request: ProviderRequest = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a Gatekeeper ProviderRequest: {e}"))?;
    if request.api_version != "externaldata.gatekeeper.sh/v1beta1"
        && request.api_version != "externaldata.gatekeeper.sh/v1alpha1"
    {
        return Err(format!(
            "apiVersion {:?} is not externaldata.gatekeeper.sh/v1beta1",
            request.api_version
        ));
    }
    if request.kind != "ProviderRequest" {
        return Err(format!("kind {:?} is not ProviderRequest", request.kind));
    }
    if request.request.keys.len() > MAX_IMAGES_PER_REQUEST {
        return Err(format!("more than {MAX_IMAGES_PER_REQUEST} keys"));
    }
    Ok(request.request.keys)
}

/// A warning Kubernetes shows whole.
pub(crate) fn short(text: &str) -> String {
    if text.chars().count() <= MAX_WARNING_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_WARNING_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_references_are_told_from_others() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = EcrReference::parse(&format!(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:v1@{digest}"
        ))
        .expect("ECR");
        assert_eq!(
            (r.account.as_str(), r.region.as_str(), r.repository.as_str()),
            ("123456789012", "eu-west-1", "team/app")
        );
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (Some("v1"), Some(digest.as_str()))
        );
        let tagged =
            EcrReference::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com/app:2").expect("ECR");
        assert_eq!(
            (tagged.repository.as_str(), tagged.tag.as_deref()),
            ("app", Some("2"))
        );
        for other in [
            "nginx:1.27",
            "docker.io/library/nginx",
            "ghcr.io/org/app@sha256:00",
            "12345.dkr.ecr.us-east-1.amazonaws.com/app",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app@sha256:short",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:",
        ] {
            assert_eq!(EcrReference::parse(other), None, "{other}");
        }
    }

    #[test]
    fn provider_requests_are_checked() {
        let ok = br#"{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest","request":{"keys":["a","b"]}}"#;
        assert_eq!(provider_keys(ok), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert!(provider_keys(b"{").is_err());
        assert!(
            provider_keys(br#"{"apiVersion":"v1","kind":"ProviderRequest","request":{"keys":[]}}"#)
                .is_err()
        );
        assert_eq!(short(&"x".repeat(300)).chars().count(), MAX_WARNING_CHARS);
    }
}
