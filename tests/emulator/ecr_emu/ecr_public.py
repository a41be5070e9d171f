"""The few Amazon ECR Public calls ecr-audit needs, which moto does not have at all.

`CreateRepository`, `DescribeRepositories` (all, or by `repositoryNames`, with
paging), `DeleteRepository`, `TagResource`, `UntagResource` and
`ListTagsForResource`, over ECR Public's awsJson1_1 protocol (target prefix
`SpencerFrontendService`), per account. ECR Public exists only in us-east-1
(its API reference: "the us-east-1 Region"); a call signed for another region
is refused. Member names and errors follow the ECR Public API reference.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from . import paging
from .calls import AwsCall
from .state import STORE

REGION = "us-east-1"
Reply = tuple[int, bytes]
#: account → repository name → {"repository": {...}, "catalogData": {...}, "tags": {key: value}}
REPOSITORIES: dict[str, dict[str, dict[str, Any]]] = {}


class PublicError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _arn(account: str, name: str) -> str:
    return f"arn:aws:ecr-public::{account}:repository/{name}"


def _find(account: str, name: str) -> dict[str, Any]:
    entry = REPOSITORIES.get(account, {}).get(name)
    if entry is None:
        raise PublicError("RepositoryNotFoundException",
                          f"The repository with name '{name}' does not exist in the registry with id '{account}'")
    return entry


def _by_arn(account: str, arn: str) -> dict[str, Any]:
    prefix = f"arn:aws:ecr-public::{account}:repository/"
    if not arn.startswith(prefix):
        raise PublicError("InvalidParameterException", f"Invalid parameter at 'resourceArn' failed to satisfy constraint: '{arn}'")
    return _find(account, arn[len(prefix):])


def create_repository(account: str, body: dict[str, Any]) -> dict[str, Any]:
    name = str(body.get("repositoryName", ""))
    if not name:
        raise PublicError("InvalidParameterException", "repositoryName is required")
    registry = REPOSITORIES.setdefault(account, {})
    if name in registry:
        raise PublicError("RepositoryAlreadyExistsException",
                          f"The repository with name '{name}' already exists in the registry with id '{account}'")
    repository = {
        "repositoryArn": _arn(account, name),
        "registryId": account,
        "repositoryName": name,
        "repositoryUri": f"public.ecr.aws/emu{account[-6:]}/{name}",
        "createdAt": time.time(),
    }
    registry[name] = {"repository": repository, "catalogData": dict(body.get("catalogData") or {}),
                      "tags": {t["Key"]: t["Value"] for t in body.get("tags") or []}}
    return {"repository": repository, "catalogData": registry[name]["catalogData"]}


def describe_repositories(account: str, body: dict[str, Any]) -> dict[str, Any]:
    names = body.get("repositoryNames")
    if names:
        chosen = [_find(account, str(name))["repository"] for name in names]
    else:
        chosen = [entry["repository"] for entry in REPOSITORIES.get(account, {}).values()]

    def bad_token(message: str) -> PublicError:
        return PublicError("InvalidParameterException", message)

    found, token = paging.page(chosen, body.get("maxResults"), body.get("nextToken"), 100, bad_token)
    return {"repositories": found, **({"nextToken": token} if token else {})}


def delete_repository(account: str, body: dict[str, Any]) -> dict[str, Any]:
    entry = _find(account, str(body.get("repositoryName", "")))
    del REPOSITORIES[account][entry["repository"]["repositoryName"]]
    return {"repository": entry["repository"]}


def tag_resource(account: str, body: dict[str, Any]) -> dict[str, Any]:
    _by_arn(account, str(body.get("resourceArn", "")))["tags"].update({t["Key"]: t["Value"] for t in body.get("tags") or []})
    return {}


def untag_resource(account: str, body: dict[str, Any]) -> dict[str, Any]:
    tags = _by_arn(account, str(body.get("resourceArn", "")))["tags"]
    for key in body.get("tagKeys") or []:
        tags.pop(key, None)
    return {}


def list_tags_for_resource(account: str, body: dict[str, Any]) -> dict[str, Any]:
    tags = _by_arn(account, str(body.get("resourceArn", "")))["tags"]
    return {"tags": [{"Key": key, "Value": value} for key, value in tags.items()]}


OPERATIONS: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
    "CreateRepository": create_repository,
    "DescribeRepositories": describe_repositories,
    "DeleteRepository": delete_repository,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}


def _error(code: str, message: str, status: int = 400) -> Reply:
    return status, json.dumps({"__type": code, "message": message}).encode()


def handle(call: AwsCall) -> Reply:
    """Answers one ECR Public call with (HTTP status, JSON body)."""
    operation = OPERATIONS.get(call.operation)
    if operation is None:
        return _error("UnsupportedCommandException", f"The emulator does not implement ecr-public.{call.operation}")
    if call.region != REGION:
        return _error("InvalidParameterException", f"Amazon ECR Public is only available in {REGION}, not {call.region}")
    try:
        return 200, json.dumps(operation(call.account, call.json_body() or {})).encode()
    except PublicError as problem:
        return _error(problem.code, problem.message)


def install() -> None:
    STORE.on_reset(REPOSITORIES.clear)
