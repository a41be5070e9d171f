//! The Kubernetes side of deploy-time verdicts: every image an `admission.k8s.io/v1`
//! `AdmissionReview` of a Pod or a workload that creates Pods would run, and the review's
//! answer (docs/ENFORCEMENT.md, "Kubernetes").

use serde::Deserialize;
use serde_json::{Value, json};

use super::deploy_policy::Decision;
use super::verdict::{MAX_IMAGES_PER_REQUEST, Verdict, short};

/// One image of the object under review and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodImage {
    /// `containers[app]`, `initContainers[migrate]`, `ephemeralContainers[debug]`.
    pub container: String,
    pub image: String,
}

/// What the webhook needs of an `AdmissionReview` request.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub images: Vec<PodImage>,
}

#[derive(Debug, Deserialize)]
struct Review {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    request: Option<ReviewRequest>,
}

#[derive(Debug, Deserialize)]
struct ReviewRequest {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "userInfo")]
    user_info: Option<UserInfo>,
    #[serde(default)]
    object: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct GroupVersionKind {
    kind: String,
}

#[derive(Debug, Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: Option<String>,
}

impl AdmissionRequest {
    /// # Errors
    /// A message for the 400 answer when the body is not an `admission.k8s.io/v1`
    /// `AdmissionReview` with a request.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let review: Review =
            serde_json::from_slice(bytes).map_err(|e| format!("not an AdmissionReview: {e}"))?;
        if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
            return Err(format!(
                "{}/{} is not admission.k8s.io/v1 AdmissionReview",
                review.api_version, review.kind
            ));
        }
        let request = review
            .request
            .ok_or_else(|| "the AdmissionReview has no request".to_owned())?;
        let images = match &request.object {
            Some(object) => pod_spec(&request.kind.kind, object).map_or_else(Vec::new, images_of),
            // DELETE and CONNECT carry no object: nothing to run.
            None => Vec::new(),
        };
        if images.len() > MAX_IMAGES_PER_REQUEST {
            return Err(format!("more than {MAX_IMAGES_PER_REQUEST} images"));
        }
        Ok(Self {
            uid: request.uid,
            kind: request.kind.kind,
            namespace: request.namespace,
            name: request.name,
            user: request.user_info.and_then(|u| u.username),
            images,
        })
    }
}

/// The Pod spec an object of `kind` carries, where the kind keeps it.
fn pod_spec<'a>(kind: &str, object: &'a Value) -> Option<&'a Value> {
    let path: &[&str] = match kind {
        "Pod" => &["spec"],
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController"
        | "PodTemplate" => {
            if kind == "PodTemplate" {
                &["template", "spec"]
            } else {
                &["spec", "template", "spec"]
            }
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    };
    path.iter().try_fold(object, |value, key| value.get(key))
}

fn images_of(spec: &Value) -> Vec<PodImage> {
    let mut out = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(containers) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for container in containers {
            let name = container.get("name").and_then(Value::as_str).unwrap_or("?");
            let image = container.get("image").and_then(Value::as_str).unwrap_or("");
            out.push(PodImage {
                container: format!("{list}[{name}]"),
                image: image.to_owned(),
            });
        }
    }
    out
}

/// The `AdmissionReview` answer: denied when any image is denied, with each failing image
/// and why in `status.message`; warnings for what audit mode admits.
pub fn response(request: &AdmissionRequest, verdicts: &[(PodImage, Verdict)]) -> Value {
    let denied: Vec<String> = verdicts
        .iter()
        .filter(|(_, v)| v.decision == Decision::Deny)
        .map(|(p, v)| format!("{} {}: {}", p.container, p.image, v.reasons.join("; ")))
        .collect();
    let warnings: Vec<String> = verdicts
        .iter()
        .filter(|(_, v)| v.decision == Decision::Allow)
        .flat_map(|(p, v)| {
            v.warnings.iter().map(move |w| {
                short(&format!(
                    "{} {} ({}): {w}",
                    p.container,
                    p.image,
                    v.mode.as_str()
                ))
            })
        })
        .collect();
    let mut response = json!({ "uid": request.uid, "allowed": denied.is_empty() });
    if !denied.is_empty() {
        response["status"] = json!({
            "code": 403,
            "reason": "Forbidden",
            "message": format!("ecr-audit denied {}: {}", request.kind, denied.join(" | ")),
        });
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(kind: &str, object: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "batch", "version": "v1", "kind": kind},
                "resource": {"group": "batch", "version": "v1", "resource": "cronjobs"},
                "namespace": "payments",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:ci:deployer"},
                "object": object,
            }
        }))
        .expect("JSON")
    }

    #[test]
    fn every_container_of_every_kind_is_found() {
        let spec = json!({
            "initContainers": [{"name": "migrate", "image": "a"}],
            "containers": [{"name": "app", "image": "b"}, {"name": "side", "image": "c"}],
            "ephemeralContainers": [{"name": "debug", "image": "d"}],
        });
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}});
        let parsed = AdmissionRequest::parse(&review("CronJob", &cron)).expect("review");
        let images: Vec<&str> = parsed.images.iter().map(|i| i.image.as_str()).collect();
        assert_eq!(images, ["a", "b", "c", "d"]);
        assert_eq!(parsed.images[0].container, "initContainers[migrate]");
        assert_eq!(parsed.namespace.as_deref(), Some("payments"));
        assert_eq!(
            parsed.user.as_deref(),
            Some("system:serviceaccount:ci:deployer")
        );
        let deployment = json!({"spec": {"template": {"spec": spec}}});
        assert_eq!(
            AdmissionRequest::parse(&review("Deployment", &deployment))
                .expect("review")
                .images
                .len(),
            4
        );
        assert_eq!(
            AdmissionRequest::parse(&review("Pod", &json!({"spec": spec})))
                .expect("review")
                .images
                .len(),
            4
        );
        assert!(AdmissionRequest::parse(b"[]").is_err());
        assert!(
            AdmissionRequest::parse(
                br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#
            )
            .is_err()
        );
    }
}
