"""Injected failures and latency, switchable at run time, for reliability tests.

A rule names a service and an operation (or `*`), an error code, the fraction
of matching calls that fail (`rate`), optional added latency, optionally
how many failures to inject before the rule retires itself (`count`), and
optionally the one repository (`repositoryName` of the request) it applies to. The
error is written the way the service's protocol writes errors, with the HTTP
status the service model gives that error, so an AWS SDK classifies and
retries it exactly as it would against AWS.
"""
from __future__ import annotations

import json
import os
import random
import threading
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import UnknownServiceError
from botocore.loaders import create_loader

from .calls import MODEL_NAMES, AwsCall

THROTTLING = {"ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded"}
STATUS_BY_CODE = {
    "InternalServerError": 500,
    "InternalFailure": 500,
    "InternalServerException": 500,
    "InternalServiceErrorException": 500,
    "ServerException": 500,
    "ServiceUnavailable": 503,
    "ServiceUnavailableException": 503,
}

_LOADER = create_loader()
_LOCK = threading.Lock()


@dataclass
class Fault:
    service: str
    operation: str = "*"
    error: str | None = None
    rate: float = 1.0
    latency_ms: int = 0
    status: int | None = None
    message: str | None = None
    count: int | None = None
    repository: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def applies_to(self, call: AwsCall) -> bool:
        if not (self.service in ("*", call.service) and self.operation in ("*", call.operation)):
            return False
        if self.repository is None:
            return True
        # Only calls about one repository: what a repository policy that denies a caller does.
        body = call.json_body() or {}
        return body.get("repositoryName") == self.repository


class Faults:
    """The active fault rules and the random source that decides each call."""

    def __init__(self) -> None:
        self.rules: list[Fault] = []
        self.random = random.Random(_seed())

    def add(self, body: dict[str, Any]) -> Fault:
        known = set(Fault.__dataclass_fields__) - {"id"}
        unknown = set(body) - known - {"seed"}
        if unknown or "service" not in body:
            raise ValueError(f"a fault needs 'service' and takes only {sorted(known)}; got {sorted(body)}")
        fault = Fault(**{k: v for k, v in body.items() if k in known})
        if not 0 <= float(fault.rate) <= 1:
            raise ValueError("'rate' must be between 0 and 1")
        with _LOCK:
            if "seed" in body:
                self.random.seed(body["seed"])
            self.rules.append(fault)
        return fault

    def clear(self) -> None:
        with _LOCK:
            self.rules.clear()
            self.random.seed(_seed())

    def to_json(self) -> list[dict[str, Any]]:
        with _LOCK:
            return [asdict(rule) for rule in self.rules]

    def decide(self, call: AwsCall) -> tuple[int, Fault | None]:
        """The latency to add (ms) and the fault to answer with, if any, for one call."""
        latency, chosen = 0, None
        with _LOCK:
            for rule in [r for r in self.rules if r.applies_to(call)]:
                if self.random.random() >= float(rule.rate):
                    continue
                latency += int(rule.latency_ms or 0)
                if rule.error and chosen is None:
                    chosen = rule
                    self._spend(rule)
        return latency, chosen

    def _spend(self, rule: Fault) -> None:
        if rule.count is not None:
            rule.count -= 1
            if rule.count <= 0:
                self.rules.remove(rule)


def _seed() -> int | None:
    value = os.environ.get("ECR_EMU_FAULT_SEED")
    return int(value) if value else None


FAULTS = Faults()


def _model_status(service: str, code: str) -> int | None:
    try:
        model = _LOADER.load_service_model(MODEL_NAMES.get(service, service), "service-2")
    except UnknownServiceError:
        return None
    return model.get("shapes", {}).get(code, {}).get("error", {}).get("httpStatusCode")


def status_for(call: AwsCall, fault: Fault) -> int:
    if fault.status:
        return int(fault.status)
    code = fault.error or ""
    return _model_status(call.service, code) or STATUS_BY_CODE.get(code) or (503 if code.startswith("ServiceUnavailable") else 400)


def error_response(call: AwsCall, fault: Fault, json_content_type: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The HTTP status, headers and body of the injected error, in the call's protocol."""
    code = fault.error or "InternalFailure"
    message = fault.message or ("Rate exceeded" if code in THROTTLING else "We encountered an internal error. Please try again.")
    return render_error(call, code, message, status_for(call, fault), json_content_type)


def render_error(call: AwsCall, code: str, message: str, status: int, json_content_type: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """An AWS error response in the call's protocol: awsJson, restJson or query."""
    request_id = str(uuid.uuid4())
    headers = [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", code)]
    if call.protocol == "query":
        sender = "Sender" if status < 500 else "Receiver"
        body = (
            f"<ErrorResponse><Error><Type>{sender}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers.append(("Content-Type", "text/xml"))
    elif call.protocol == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers.append(("Content-Type", json_content_type))
    else:
        body = json.dumps({"message": message}).encode()
        headers.append(("Content-Type", "application/json"))
    return status, headers, body
