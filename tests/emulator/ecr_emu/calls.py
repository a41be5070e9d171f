"""Tells which AWS operation an incoming HTTP request is, before moto sees it.

Counting calls, injecting faults and writing CloudTrail records all need the
service, operation, account and region of a request. The service and region
come from the SigV4 credential scope, the operation from `X-Amz-Target` (JSON
protocols), the `Action` parameter (query protocol) or the method and path
matched against the botocore model (REST protocols), and the account the way
moto picks it.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from moto.core.request import Request
from moto.core.routing import get_service_router
from moto.iam.models import get_account_id_from

from .state import DEFAULT_REGION

#: SigV4 signing names whose botocore model has another name.
MODEL_NAMES = {"eventbridge": "events"}


@dataclass(frozen=True)
class AwsCall:
    service: str
    operation: str
    account: str
    region: str
    protocol: str
    access_key: str
    body: bytes

    @property
    def key(self) -> str:
        return f"{self.service}.{self.operation}"

    def json_body(self) -> dict[str, Any] | None:
        try:
            parsed = json.loads(self.body or b"null")
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None


def read_body(environ: dict[str, Any]) -> bytes:
    """Reads the request body and puts an unread copy back for moto."""
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length.isdigit():
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _credential_scope(environ: dict[str, Any]) -> tuple[str, str, str] | None:
    """(access key, region, service) from a SigV4 Authorization header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" not in auth:
        return None
    scope = auth.split("Credential=", 1)[1].split(",", 1)[0].strip()
    parts = scope.split("/")
    if len(parts) != 5:
        return None
    return parts[0], parts[2] or DEFAULT_REGION, parts[3].lower()


def _account(environ: dict[str, Any], access_key: str) -> str:
    if os.environ.get("MOTO_ACCOUNT_ID"):
        return os.environ["MOTO_ACCOUNT_ID"]
    return environ.get("HTTP_X_MOTO_ACCOUNT_ID") or get_account_id_from(access_key)


def _operation(environ: dict[str, Any], service: str, body: bytes) -> tuple[str, str]:
    """(operation, protocol) of the request."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1], "json"
    content_type = environ.get("CONTENT_TYPE", "")
    form = parse_qs(body.decode("utf-8", "replace")) if content_type.startswith("application/x-www-form-urlencoded") else {}
    action = (form.get("Action") or parse_qs(environ.get("QUERY_STRING", "")).get("Action") or [None])[0]
    if action:
        return action, "query"
    return _rest_operation(environ, service, body), "rest-json"


def _rest_operation(environ: dict[str, Any], service: str, body: bytes) -> str:
    probe = dict(environ, **{"wsgi.input": io.BytesIO(body)})
    try:
        operation, _ = get_service_router(MODEL_NAMES.get(service, service)).match(Request(probe))
        return str(operation.name)
    except Exception:  # any unknown service, path or method: count it, do not fail it
        return "Unknown"


def parse(environ: dict[str, Any], body: bytes) -> AwsCall | None:
    """The AWS call in `environ`, or None for requests that are not signed AWS calls."""
    scope = _credential_scope(environ)
    if scope is None:
        return None
    access_key, region, service = scope
    operation, protocol = _operation(environ, service, body)
    return AwsCall(
        service=service,
        operation=operation,
        account=_account(environ, access_key),
        region=region,
        protocol=protocol,
        access_key=access_key,
        body=body,
    )
