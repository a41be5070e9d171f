"""The `/_emulator/...` control API: knobs, injected faults, counters, recent events.

Plain JSON over HTTP so tests in any language (the Rust tests included) can
drive the emulator with an HTTP client and no AWS signing.
"""
from __future__ import annotations

import json
from typing import Any, Callable
from urllib.parse import parse_qs

from . import events
from .counters import COUNTER
from .faults import FAULTS
from .state import LOCK, STORE

Response = tuple[int, Any]
OUTCOME_KEYS = {"account", "region", "repositoryName", "imageDigest", "status", "description", "findingSeverityCounts"}


class BadRequest(Exception):
    pass


def _config(method: str, body: dict[str, Any]) -> Response:
    if method == "POST":
        unknown = set(body) - set(STORE.settings.to_json())
        if unknown:
            raise BadRequest(f"unknown settings: {sorted(unknown)}")
        STORE.settings.update(body)
    return 200, STORE.settings.to_json()


def _identity(method: str, body: dict[str, Any]) -> Response:
    if method == "POST":
        if not str(body.get("arn", "")).startswith("arn:"):
            raise BadRequest("'arn' (an IAM principal ARN) is required")
        STORE.identity = {k: str(v) for k, v in body.items() if k in ("arn", "type")}
    elif method == "DELETE":
        STORE.identity = None
    return 200, STORE.identity or {}


def _scan_results(method: str, body: dict[str, Any]) -> Response:
    if method == "POST":
        unknown = set(body) - OUTCOME_KEYS
        if unknown:
            raise BadRequest(f"unknown keys {sorted(unknown)}; allowed: {sorted(OUTCOME_KEYS)}")
        with LOCK:
            STORE.scan_outcomes.append(dict(body))
    elif method == "DELETE":
        with LOCK:
            STORE.scan_outcomes.clear()
    return 200, {"scanResults": STORE.scan_outcomes}


def _faults(method: str, body: dict[str, Any]) -> Response:
    if method == "POST":
        try:
            FAULTS.add(body)
        except (TypeError, ValueError) as problem:
            raise BadRequest(str(problem))
    elif method == "DELETE":
        FAULTS.clear()
    return 200, {"faults": FAULTS.to_json()}


def _requests(method: str, body: dict[str, Any], query: dict[str, str]) -> Response:
    unknown = set(query) - {"account", "region", "by"}
    if unknown or query.get("by", "account") != "account":
        raise BadRequest("query parameters: account=ID, region=NAME, by=account")
    account, region = query.get("account"), query.get("region")
    if method == "DELETE":
        COUNTER.clear(account, region)
    if "by" in query:
        return 200, COUNTER.by_account()
    return 200, COUNTER.snapshot(account, region)


def _events(method: str, body: dict[str, Any], query: dict[str, str]) -> Response:
    if set(query) - {"account"}:
        raise BadRequest("query parameters: account=ID")
    if method == "DELETE":
        events.RECENT.clear()
    return 200, {"events": [e for e in list(events.RECENT) if query.get("account", e["account"]) == e["account"]]}


def _without_query(handler: Callable[[str, dict[str, Any]], Response]) -> Callable[[str, dict[str, Any], dict[str, str]], Response]:
    def handle(method: str, body: dict[str, Any], query: dict[str, str]) -> Response:
        if query:
            raise BadRequest(f"this endpoint takes no query parameters, got {sorted(query)}")
        return handler(method, body)

    return handle


ROUTES: dict[str, tuple[set[str], Callable[[str, dict[str, Any], dict[str, str]], Response]]] = {
    "/_emulator/config": ({"GET", "POST"}, _without_query(_config)),
    "/_emulator/identity": ({"GET", "POST", "DELETE"}, _without_query(_identity)),
    "/_emulator/scan-results": ({"GET", "POST", "DELETE"}, _without_query(_scan_results)),
    "/_emulator/faults": ({"GET", "POST", "DELETE"}, _without_query(_faults)),
    "/_emulator/requests": ({"GET", "DELETE"}, _requests),
    "/_emulator/events": ({"GET", "DELETE"}, _events),
}


def handle(method: str, path: str, query_string: str, raw_body: bytes, reset: Callable[[], None]) -> Response:
    """Answers one control request with (HTTP status, JSON value)."""
    path = path.rstrip("/")
    if path == "/_emulator/reset":
        if method != "POST":
            return 405, {"error": "POST to reset"}
        reset()
        return 200, {"status": "ok"}
    if path not in ROUTES:
        return 404, {"error": f"unknown control endpoint {path}", "endpoints": sorted([*ROUTES, "/_emulator/reset"])}
    methods, handler = ROUTES[path]
    if method not in methods:
        return 405, {"error": f"{path} accepts {sorted(methods)}"}
    try:
        body = json.loads(raw_body or b"{}")
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        query = {key: values[-1] for key, values in parse_qs(query_string, keep_blank_values=True).items()}
        return handler(method, body, query)
    except (ValueError, BadRequest) as problem:
        return 400, {"error": str(problem)}
