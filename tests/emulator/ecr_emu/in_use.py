"""Inspector's "in use" facts about ECR images: `inUseCount`, `lastInUseAt`, `imagePulledAt`.

With enhanced scanning, Inspector's `ListCoverage` reports in
`resourceMetadata.ecrImage` how many running containers (ECS tasks, EKS pods)
use an image, when it was last seen in use, and when it was last pulled
(Inspector2 API reference, `EcrContainerImageMetadata`). Nothing runs in the
emulator, so `POST /_emulator/in-use` sets the first two per image; the pull
time is ECR's `lastRecordedPullTime` (see pulls.py).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID

from . import inspector, pulls
from .control import BadRequest, Response
from .state import DEFAULT_REGION, LOCK, STORE

#: (account, region, repository, digest) → {"inUseCount": int, "lastInUseAt": datetime}
IN_USE: dict[tuple[str, str, str, str], dict[str, Any]] = {}
KEYS = {"account", "region", "repositoryName", "imageDigest", "inUseCount", "lastInUseAt"}
_INSPECTOR_COVERED = inspector._covered


def _covered_with_use(account: str, region: str, record: Any, image: Any) -> dict[str, Any]:
    out = _INSPECTOR_COVERED(account, region, record, image)
    metadata = out["resourceMetadata"]["ecrImage"]
    metadata.update(IN_USE.get((account, region, record.repository, record.digest), {}))
    pulled = pulls.last_pull(account, region, record.repository, record.digest)
    if pulled is not None:
        metadata["imagePulledAt"] = pulled
    return out


def mark(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - KEYS
    if unknown or not body.get("repositoryName") or not body.get("imageDigest"):
        raise BadRequest(f"keys: repositoryName, imageDigest, inUseCount, lastInUseAt (optional account, region); unknown: {sorted(unknown)}")
    count = int(body.get("inUseCount", 1))
    if count < 0:
        raise BadRequest("inUseCount must be 0 or more")
    seen = body.get("lastInUseAt")
    moment = datetime.fromisoformat(str(seen).replace("Z", "+00:00")) if seen else datetime.now(timezone.utc).replace(microsecond=0)
    key = (str(body.get("account", DEFAULT_ACCOUNT_ID)), str(body.get("region", DEFAULT_REGION)),
           str(body["repositoryName"]), str(body["imageDigest"]))
    IN_USE[key] = {"inUseCount": count, "lastInUseAt": moment}
    return {"inUseCount": count, "lastInUseAt": moment.isoformat()}


def _route(method: str, body: dict[str, Any], query: dict[str, str]) -> Response:
    if query:
        raise BadRequest("this endpoint takes no query parameters")
    with LOCK:
        return 200, mark(body)


ROUTES = {"/_emulator/in-use": ({"POST"}, _route)}


def install() -> None:
    inspector._covered = _covered_with_use
    STORE.on_reset(IN_USE.clear)
