"""ECS deployment lifecycle hook: asks ecr-audit's verdict API about every image of the service
revision being deployed, and fails the deployment when ecr-audit denies one.

ECS invokes this Lambda at the lifecycle stages the service names (docs/ENFORCEMENT.md, "ECS");
the payload carries `targetServiceRevisionArn`. The revision lists each container's image and
the digest ECS resolved it to when the deployment began, so the verdict is about the bytes that
will run, not about a tag that may move. The answer is ECS's `hookStatus`:

- `SUCCEEDED` when every image is allowed (in audit mode ecr-audit allows and warns; the warnings
  are logged here and recorded by ecr-audit as evidence);
- `FAILED` when any image is denied (ECS rolls the deployment back), naming each and why;
- `IN_PROGRESS` (ECS calls again after `callBackDelay`) while the verdict API cannot be reached,
  at most `ECR_AUDIT_HOOK_ATTEMPTS` times; then `ECR_AUDIT_HOOK_ON_ERROR` decides: `fail` (the
  default: fail closed) or `succeed`.

Configuration (environment): `ECR_AUDIT_VERDICT_URL` (the worker's base URL, e.g.
`http://ecr-audit.internal:9464`), `ECR_AUDIT_TOKEN_SECRET_ARN` (optional: a Secrets Manager
secret holding the API's bearer token), `ECR_AUDIT_HOOK_ATTEMPTS` (3), `ECR_AUDIT_HOOK_ON_ERROR`
(`fail`), `ECR_AUDIT_HOOK_TIMEOUT` (seconds per request, 3). Standard library and boto3 only (both
in the Lambda Python runtime).
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import boto3

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)
CALLBACK_DELAY = 10
_TOKEN: str | None = None


class VerdictUnavailable(Exception):
    """The verdict API did not answer usefully (unreachable, timed out, 5xx, not JSON)."""


def setting(name: str, default: str) -> str:
    return os.environ.get(name, default)


def bearer_token() -> str | None:
    """The API token from Secrets Manager, read once per Lambda environment."""
    global _TOKEN
    secret = os.environ.get("ECR_AUDIT_TOKEN_SECRET_ARN")
    if not secret:
        return None
    if _TOKEN is None:
        _TOKEN = boto3.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"].strip()
    return _TOKEN


def images_of(revision_arn: str) -> list[dict[str, str]]:
    """Each container of the revision: its name, image reference and resolved digest."""
    answer = boto3.client("ecs").describe_service_revisions(serviceRevisionArns=[revision_arn])
    revisions = answer.get("serviceRevisions", [])
    if not revisions:
        raise LookupError(f"service revision {revision_arn} not found: {answer.get('failures')}")
    return revisions[0].get("containerImages", [])


def pinned_reference(container: dict[str, str]) -> str:
    """`REGISTRY/REPOSITORY@DIGEST` when ECS resolved a digest, else the reference as written."""
    image, digest = container.get("image", ""), container.get("imageDigest")
    if not digest:
        return image
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return f"{name}@{digest}"


def ask(image: str, cluster: str, service: str) -> dict[str, Any]:
    """The verdict API's answer for one image (docs/ENFORCEMENT.md, "GET /v1/verdict")."""
    query = urllib.parse.urlencode({"image": image, "cluster": cluster, "service": service})
    request = urllib.request.Request(f"{setting('ECR_AUDIT_VERDICT_URL', '').rstrip('/')}/v1/verdict?{query}")
    token = bearer_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=float(setting("ECR_AUDIT_HOOK_TIMEOUT", "3"))) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as problem:
        if problem.code < 500:
            # A refusal of the request itself (bad reference, no token) is an answer: deny.
            return {"decision": "deny", "reasons": [f"verdict API refused the request: HTTP {problem.code}"]}
        raise VerdictUnavailable(f"HTTP {problem.code}") from problem
    except (urllib.error.URLError, TimeoutError, ValueError) as problem:
        raise VerdictUnavailable(str(problem)) from problem


def service_names(service_arn: str) -> tuple[str, str]:
    """(cluster, service) from `arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE`."""
    parts = service_arn.split(":", 5)[-1].split("/")
    return (parts[1], parts[2]) if len(parts) == 3 else ("", parts[-1])


def judge(event: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(denials, warnings) for every image of the target revision."""
    cluster, service = service_names(event.get("serviceArn", ""))
    denials, warnings = [], []
    for container in images_of(event["targetServiceRevisionArn"]):
        image = pinned_reference(container)
        answer = ask(image, cluster, service)
        reasons = "; ".join(answer.get("reasons") or []) or "no reason given"
        if answer.get("decision") != "allow":
            denials.append(f"{container.get('containerName')}: {image}: {reasons}")
        warnings.extend(f"{container.get('containerName')}: {w}" for w in answer.get("warnings") or [])
    return denials, warnings


def handler(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    details = dict(event.get("hookDetails") or {})
    try:
        denials, warnings = judge(event)
    except VerdictUnavailable as problem:
        attempts = int(details.get("attempts", 0)) + 1
        LOG.warning("verdict API unavailable (attempt %d): %s", attempts, problem)
        if attempts < int(setting("ECR_AUDIT_HOOK_ATTEMPTS", "3")):
            return {"hookStatus": "IN_PROGRESS", "callBackDelay": CALLBACK_DELAY,
                    "hookDetails": {**details, "attempts": attempts}}
        fail_open = setting("ECR_AUDIT_HOOK_ON_ERROR", "fail") == "succeed"
        LOG.error("verdict API unavailable after %d attempts; %s", attempts, "deploying (fail open)" if fail_open else "failing the deployment")
        return {"hookStatus": "SUCCEEDED" if fail_open else "FAILED"}
    for warning in warnings:
        LOG.warning("ecr-audit warns: %s", warning)
    if denials:
        for denial in denials:
            LOG.error("ecr-audit denies: %s", denial)
        return {"hookStatus": "FAILED"}
    return {"hookStatus": "SUCCEEDED"}
