"""Records the STS AssumeRole requests the server receives, with their parameters.

moto answers AssumeRole for any role ARN and ignores `ExternalId` (it evaluates no
trust policy), so a test cannot see through moto whether a caller presented the
external id a spoke role's trust condition asks for
(https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_common-scenarios_third-party.html).
The middleware hands every `sts.AssumeRole` call here; `GET /_emulator/assume-role-requests`
lists them (`?account=ID` keeps the caller's account) and `DELETE` forgets them.
"""
from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs

from .calls import AwsCall

#: Requests kept at most (oldest dropped first).
LIMIT = 10_000

_lock = threading.Lock()
_requests: list[dict[str, Any]] = []


def record(call: AwsCall) -> None:
    """Keeps the role, session name and external id of an AssumeRole call (query protocol)."""
    if call.key != "sts.AssumeRole":
        return
    form = {k: v[-1] for k, v in parse_qs(call.body.decode("utf-8", "replace")).items()}
    entry = {
        "account": call.account,
        "roleArn": form.get("RoleArn"),
        "roleSessionName": form.get("RoleSessionName"),
        "externalId": form.get("ExternalId"),
    }
    with _lock:
        _requests.append(entry)
        del _requests[:-LIMIT]


def clear() -> None:
    with _lock:
        _requests.clear()


def _requests_route(method: str, body: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
    account = query.get("account")
    if method == "DELETE":
        clear()
    with _lock:
        kept = [r for r in _requests if account in (None, r["account"])]
    return 200, {"requests": kept}


ROUTES = {"/_emulator/assume-role-requests": ({"GET", "DELETE"}, _requests_route)}
