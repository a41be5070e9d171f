"""The Kubernetes manifests of the admission webhook (infra/kubernetes/, docs/ENFORCEMENT.md).

Each document is validated, strictly (unknown fields refused), against the Kubernetes
OpenAPI schemas that kubernetes-validate bundles (pinned in tests/infra/requirements.txt,
so no download at test time); then what the schemas cannot say: the webhook sends every
workload kind the worker reads images from (src/export/admission.rs), answers within a
bound, never judges its own namespace, and the bundled policy is one the worker accepts.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import os

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "infra" / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSION = "1.33"


def documents() -> list[dict]:
    out = []
    for path in MANIFESTS:
        out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return out


def by_kind(kind: str) -> dict:
    (found,) = [d for d in documents() if d["kind"] == kind]
    return found


@pytest.mark.parametrize("document", documents(), ids=lambda d: f'{d["kind"]}/{d["metadata"]["name"]}')
def test_every_manifest_matches_the_kubernetes_schema(document: dict) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_what_kubernetes_would() -> None:
    broken = json.loads(json.dumps(by_kind("ValidatingWebhookConfiguration")))
    broken["webhooks"][0]["timeoutSecond"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_webhook_sends_every_kind_the_worker_reads_and_is_bounded() -> None:
    (webhook,) = by_kind("ValidatingWebhookConfiguration")["webhooks"]
    resources = {r for rule in webhook["rules"] for r in rule["resources"]}
    assert {"pods", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs"} <= resources
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["failurePolicy"] in ("Ignore", "Fail")
    assert 1 <= webhook["timeoutSeconds"] <= 10
    assert webhook["clientConfig"]["service"]["path"].startswith("/v1/admission/")
    excluded = webhook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["operator"] == "NotIn"
    assert by_kind("Deployment")["metadata"]["namespace"] in excluded["values"]


def test_the_bundled_policy_is_one_the_worker_accepts(tmp_path: pathlib.Path) -> None:
    policy = json.loads(by_kind("ConfigMap")["data"]["policy.json"])
    assert policy["default"]["mode"] in ("audit", "strict")
    binary = pathlib.Path(os.environ.get("ECR_AUDIT_BIN", ROOT / "target" / "debug" / "ecr-audit"))
    if not binary.exists():
        pytest.skip(f"{binary} not built")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ECR_AUDIT_")}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    env.update(DATABASE_URL="postgres://nobody@127.0.0.1:1/none", ECR_AUDIT_QUEUE_URL="http://127.0.0.1:1/q",
               ECR_AUDIT_DEPLOY_POLICY=str(tmp_path / "policy.json"), AWS_REGION="us-east-1")
    bad = dict(env, ECR_AUDIT_DEPLOY_POLICY=str(tmp_path / "bad.json"))
    (tmp_path / "bad.json").write_text(json.dumps(dict(policy, default={"mode": "enforce"})))
    refused = subprocess.run([binary, "worker"], env=bad, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "unknown variant `enforce`" in refused.stderr, refused.stderr
    accepted = subprocess.run([binary, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert "ECR_AUDIT_DEPLOY_POLICY" not in accepted.stderr, accepted.stderr
