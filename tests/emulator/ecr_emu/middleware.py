"""The WSGI layer in front of moto's server application.

For each request it: answers `/_emulator/...` itself (blob download URLs and
the Signer roots included); counts signed AWS calls;
applies injected latency and faults; runs calls to the services the extension
changes under the shared lock; writes the CloudTrail event of state-changing
ECR calls from the finished response; answers operations moto lacks with an
AWS-shaped 501 instead of a crash page; and resets the extension's state along
with moto's on `POST /moto-api/reset`.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable

from moto.moto_api._internal.models import moto_api_backend

from . import assume_role, blobs, calls, cloudtrail, control, signer_revocation
from .counters import COUNTER
from .faults import FAULTS, error_response, render_error
from .state import LOCK, STORE

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: Services whose calls run under the lock (SQS is left out: long polls would hold it).
LOCKED_SERVICES = {"ecr", "signer", "inspector2", "events"}
#: Services moto lacks entirely, answered by the extension itself: signing name → handler
#: returning (HTTP status, body). Filled by the modules' install() (ecr_public.py).
OWN_SERVICES: dict[str, Callable[[calls.AwsCall], tuple[int, bytes]]] = {}
STATUS_TEXT = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 501: "Not Implemented"}


def _status_line(status: int) -> str:
    return f"{status} {STATUS_TEXT.get(status, 'Error')}"


def _reply(start_response: Callable[..., Any], status: int, headers: list[tuple[str, str]], body: bytes) -> list[bytes]:
    start_response(_status_line(status), [*headers, ("Content-Length", str(len(body)))])
    return [body]


def _run(app: WsgiApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Runs the wrapped application to completion and returns its status line, headers and body."""
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured.update(status=status, headers=headers)

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return captured["status"], captured["headers"], body


def reset_everything() -> None:
    """moto's backends and the extension's state, counters, faults and recent events."""
    with LOCK:
        moto_api_backend.reset()
        STORE.reset()


class EmulatorMiddleware:
    def __init__(self, moto_app: WsgiApp) -> None:
        self.moto_app = moto_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path.startswith(blobs.BLOB_PATH) and method in ("GET", "HEAD"):
            status, headers, body = blobs.serve(path, environ.get("QUERY_STRING", ""))
            return _reply(start_response, status, headers, b"" if method == "HEAD" else body)
        signer_answer = signer_revocation.serve(path, environ.get("QUERY_STRING", "")) if method == "GET" else None
        if signer_answer is not None:
            return _reply(start_response, *signer_answer)
        if path.startswith("/_emulator"):
            status, value = control.handle(method, path, environ.get("QUERY_STRING", ""), calls.read_body(environ), reset_everything)
            return _reply(start_response, status, [("Content-Type", "application/json")], json.dumps(value).encode())
        if path.rstrip("/") == "/moto-api/reset" and method == "POST":
            reset_everything()
            return _reply(start_response, 200, [("Content-Type", "application/json")], b'{"status": "ok"}')
        call = calls.parse(environ, calls.read_body(environ))
        if call is None:
            return self.moto_app(environ, start_response)
        return self._aws_call(environ, start_response, call)

    def _aws_call(self, environ: dict[str, Any], start_response: Callable[..., Any], call: calls.AwsCall) -> Iterable[bytes]:
        COUNTER.record(call.key, call.account, call.region)
        assume_role.record(call)
        content_type = environ.get("CONTENT_TYPE") or "application/x-amz-json-1.1"
        latency_ms, fault = FAULTS.decide(call)
        if latency_ms:
            time.sleep(latency_ms / 1000)
        if fault is not None:
            return _reply(start_response, *error_response(call, fault, content_type))
        try:
            return self._forward(environ, start_response, call)
        except NotImplementedError:
            message = f"The emulator does not implement {call.service}.{call.operation}"
            return _reply(start_response, *render_error(call, "NotImplemented", message, 501, content_type))

    def _forward(self, environ: dict[str, Any], start_response: Callable[..., Any], call: calls.AwsCall) -> Iterable[bytes]:
        own = OWN_SERVICES.get(call.service)
        if own is not None:
            with LOCK:
                status, body = own(call)
                if cloudtrail.is_recorded(call):
                    cloudtrail.record(environ, call, status, {}, body)
            content_type = environ.get("CONTENT_TYPE") or "application/x-amz-json-1.1"
            return _reply(start_response, status, [("Content-Type", content_type)], body)
        if call.service not in LOCKED_SERVICES:
            return self.moto_app(environ, start_response)
        with LOCK:
            status, headers, body = _run(self.moto_app, environ)
            if cloudtrail.is_recorded(call):
                cloudtrail.record(environ, call, int(status.split()[0]), {k.lower(): v for k, v in headers}, body)
        start_response(status, headers)
        return [body]
