"""Lifecycle policy expiry, run on demand, with the CloudTrail `PolicyExecutionEvent`.

AWS evaluates a repository's lifecycle policy by itself, within 24 hours; the
emulator runs it when asked (`POST /_emulator/lifecycle`, optionally "as of" a
later time so that `sinceImagePushed` rules can be tested without waiting). The
evaluation follows the user guide's "Lifecycle policy evaluation rules": rules
in `rulePriority` order; an image selected by a rule is not considered by any
later rule; `imageCountMoreThan` keeps the newest `countNumber` selected images;
`sinceImagePushed` expires those pushed more than `countNumber` days ago. The
expired images are deleted and one `AWS Service Event via CloudTrail` event
carries the `PolicyExecutionEvent` record, shaped as the AWS knowledge-center
article "ecr-lifecycle-policy-events" shows it.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecr.models import ECRBackend, Image, Repository, ecr_backends

from . import events, wildcard
from .control import BadRequest, Response
from .state import DEFAULT_REGION, LOCK, STORE

KEYS = {"account", "region", "repositoryName", "at"}
COUNT_TYPES = {"imageCountMoreThan": "Image count more than", "sinceImagePushed": "Since image pushed"}
TAG_STATUS = {"tagged": "Tagged", "untagged": "Untagged", "any": "Any"}


def _selects(selection: dict[str, Any], image: Image) -> bool:
    status = selection.get("tagStatus", "any")
    tags = list(image.image_tags)
    if status == "untagged":
        return not tags
    if status == "any":
        return True
    if not tags:
        return False
    # "If you specify multiple tags, only the images with all specified tags are selected."
    prefixes = selection.get("tagPrefixList") or []
    patterns = selection.get("tagPatternList") or []
    return all(any(t.startswith(p) for t in tags) for p in prefixes) and all(
        any(wildcard.matches(p, t) for t in tags) for p in patterns
    )


def _expired_by(selection: dict[str, Any], chosen: list[Image], at: datetime) -> list[Image]:
    number = int(selection.get("countNumber", 0))
    if selection.get("countType") == "imageCountMoreThan":
        # Push times have whole seconds; the repository keeps images in push order, which
        # breaks ties (a later position is a later push).
        pushed = {id(image): (image.image_pushed_at, position) for position, image in enumerate(chosen)}
        newest_first = sorted(chosen, key=lambda image: pushed[id(image)], reverse=True)
        return newest_first[number:]
    limit = (at - timedelta(days=number)).timestamp()
    return [image for image in chosen if image.image_pushed_at < limit]


def evaluate(policy: dict[str, Any], repo_images: list[Image], at: datetime) -> list[tuple[Image, dict[str, Any]]]:
    """(image, rule) for every image the policy expires at `at`."""
    available = list(repo_images)
    expired: list[tuple[Image, dict[str, Any]]] = []
    for rule in sorted(policy.get("rules") or [], key=lambda r: int(r.get("rulePriority", 0))):
        selection = rule.get("selection") or {}
        chosen = [image for image in available if _selects(selection, image)]
        available = [image for image in available if image not in chosen]
        expired.extend((image, rule) for image in _expired_by(selection, chosen, at))
    return expired


def _event_rule(rule: dict[str, Any]) -> dict[str, Any]:
    selection = rule.get("selection") or {}
    event_selection: dict[str, Any] = {
        "tagStatus": TAG_STATUS.get(selection.get("tagStatus", "any"), "Any"),
        "tagPrefixList": list(selection.get("tagPrefixList") or []),
        "countType": COUNT_TYPES.get(selection.get("countType", ""), selection.get("countType")),
        "countNumber": selection.get("countNumber"),
    }
    if selection.get("countUnit"):
        event_selection["countUnit"] = selection["countUnit"]
    return {"rulePriority": rule.get("rulePriority"), "description": rule.get("description", ""),
            "lifecycleEventSelection": event_selection, "action": "expire"}


def _image_action(image: Image, rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "lifecycleEventImage": {
            "digest": image.image_digest,
            "tagStatus": "Tagged" if image.image_tags else "Untagged",
            "tagList": list(image.image_tags),
            "pushedAt": int(image.image_pushed_at * 1000),
        },
        "rulePriority": rule.get("rulePriority"),
    }


def policy_execution_record(repo: Repository, policy_text: str, policy: dict[str, Any],
                            expired: list[tuple[Image, dict[str, Any]]], at: datetime) -> dict[str, Any]:
    account, region = repo.registry_id, repo.region_name
    return {
        "eventVersion": "1.05",
        "userIdentity": {"accountId": account, "invokedBy": "AWS Internal"},
        "eventTime": events.iso_seconds(at),
        "eventSource": "ecr.amazonaws.com",
        "eventName": "PolicyExecutionEvent",
        "awsRegion": region,
        "sourceIPAddress": "AWS Internal",
        "userAgent": "AWS Internal",
        "requestParameters": None,
        "responseElements": None,
        "eventID": str(uuid.uuid4()),
        "readOnly": True,
        "resources": [{"ARN": repo.arn, "accountId": account, "type": "AWS::ECR::Repository"}],
        "eventType": "AwsServiceEvent",
        "recipientAccountId": account,
        "serviceEventDetails": {
            "repositoryName": repo.name,
            "lifecycleEventPolicy": {
                "lifecycleEventRules": [_event_rule(r) for r in sorted(policy.get("rules") or [], key=lambda r: int(r.get("rulePriority", 0)))],
                "lastEvaluatedAt": 0,
                "policyVersion": 1,
                # Stable per policy text: the same policy keeps its id.
                "policyId": str(uuid.UUID(hashlib.md5(policy_text.encode()).hexdigest())),  # noqa: S324 (an id, not security)
            },
            "lifecycleEventImageActions": [_image_action(image, rule) for image, rule in expired],
        },
    }


def _remove(backend: ECRBackend, repo: Repository, image: Image) -> None:
    repo.images.remove(image)
    STORE.registry(backend.account_id, backend.region_name).forget_image(repo.name, image.image_digest)


def run(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - KEYS
    if unknown or not body.get("repositoryName"):
        raise BadRequest(f"keys: repositoryName (optional account, region, at: ISO-8601 time); unknown: {sorted(unknown)}")
    account, region = str(body.get("account", DEFAULT_ACCOUNT_ID)), str(body.get("region", DEFAULT_REGION))
    at = datetime.fromisoformat(str(body["at"]).replace("Z", "+00:00")) if body.get("at") else datetime.now(timezone.utc)
    backend = ecr_backends[account][region]
    repo = backend.repositories.get(str(body["repositoryName"]))
    if repo is None:
        raise LookupError(f"no repository {body['repositoryName']} in {account}/{region}")
    if not repo.lifecycle_policy:
        raise LookupError(f"repository {repo.name} has no lifecycle policy")
    policy = json.loads(repo.lifecycle_policy)
    expired = evaluate(policy, repo.images, at)
    for image, _ in expired:
        _remove(backend, repo, image)
    event = None
    if expired:
        record = policy_execution_record(repo, repo.lifecycle_policy, policy, expired, at)
        event = events.emit(account, region, "aws.ecr", "AWS Service Event via CloudTrail", record)
    return {"expired": [{"imageDigest": image.image_digest, "imageTags": list(image.image_tags),
                         "rulePriority": rule.get("rulePriority")} for image, rule in expired],
            "eventId": event["id"] if event else None}


def _route(method: str, body: dict[str, Any], query: dict[str, str]) -> Response:
    if query:
        raise BadRequest("this endpoint takes no query parameters")
    with LOCK:
        try:
            return 200, run(body)
        except LookupError as missing:
            return 404, {"error": str(missing)}


ROUTES = {"/_emulator/lifecycle": ({"POST"}, _route)}
