"""`AWS API Call via CloudTrail` events for every state-changing ECR and ECR Public call.

In AWS, CloudTrail records each write call (successful or not) and hands it
to EventBridge on the default bus. ecr-audit learns who changed what from
these records, so the emulator writes one per ECR call that is not read-only
(and per Signer revocation call, see `signer_revocation`),
with the request members as `requestParameters`, the response as
`responseElements` (null on failure), and `errorCode`/`errorMessage` when the
call failed. The caller is configurable: a request header, or a default set
over the control API, or the assumed role whose STS credentials signed the
call, or an IAM user named `emulator` in the call's account.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from moto.sts.models import sts_backends

from . import events, signer_revocation
from .calls import AwsCall
from .state import STORE

READ_ONLY_PREFIXES = ("Describe", "Get", "List", "BatchGet", "BatchCheck", "Validate")
CALLER_ARN_HEADER = "HTTP_X_EMULATOR_CALLER_ARN"
CALLER_TYPE_HEADER = "HTTP_X_EMULATOR_CALLER_TYPE"
#: Request members CloudTrail does not log (binary payloads).
UNLOGGED_MEMBERS = ("layerPartBlob",)


#: Services whose every write call CloudTrail records here (ECR Public: source `aws.ecr-public`,
#: event source `ecr-public.amazonaws.com`, region us-east-1, like any AWS service's record).
RECORDED_SERVICES = ("ecr", "ecr-public")


def is_recorded(call: AwsCall) -> bool:
    return (call.service in RECORDED_SERVICES and not call.operation.startswith(READ_ONLY_PREFIXES)) or signer_revocation.is_recorded(call)


def _principal_id(prefix: str, arn: str) -> str:
    return prefix + hashlib.sha256(arn.encode()).hexdigest()[:17].upper()


def user_identity(arn: str, kind: str | None, access_key: str) -> dict[str, Any]:
    """A CloudTrail `userIdentity` for the principal `arn` (an IAM user, role, assumed role or root)."""
    account = arn.split(":")[4] if arn.count(":") >= 5 else ""
    resource = arn.split(":", 5)[5] if arn.count(":") >= 5 else arn
    identity: dict[str, Any] = {"type": kind or "IAMUser", "principalId": _principal_id("AIDA", arn), "arn": arn,
                                "accountId": account, "accessKeyId": access_key}
    if resource.startswith(("assumed-role/", "role/")):
        role = resource.split("/")[1]
        session = resource.split("/", 2)[2] if resource.startswith("assumed-role/") and resource.count("/") >= 2 else "emulator"
        role_arn = f"arn:aws:iam::{account}:role/{role}"
        identity.update(type=kind or "AssumedRole", principalId=f"{_principal_id('AROA', role_arn)}:{session}")
        identity["sessionContext"] = {
            "sessionIssuer": {"type": "Role", "principalId": _principal_id("AROA", role_arn), "arn": role_arn,
                              "accountId": account, "userName": role},
            "attributes": {"creationDate": events.iso_seconds(datetime.now(timezone.utc)), "mfaAuthenticated": "false"},
        }
    elif resource == "root":
        identity.update(type=kind or "Root", principalId=account)
    elif resource.startswith("user/"):
        identity["userName"] = resource.rsplit("/", 1)[-1]
    return identity


def caller(environ: dict[str, Any], call: AwsCall) -> dict[str, Any]:
    """The caller of this request: its header, else the configured default, else the assumed role of
    its STS credentials, else `user/emulator`."""
    if environ.get(CALLER_ARN_HEADER):
        return user_identity(environ[CALLER_ARN_HEADER], environ.get(CALLER_TYPE_HEADER), call.access_key)
    if STORE.identity:
        return user_identity(STORE.identity["arn"], STORE.identity.get("type"), call.access_key)
    assumed = sts_backends[call.account]["aws"].get_assumed_role_from_access_key(call.access_key)
    if assumed is not None:
        return user_identity(assumed.arn, None, call.access_key)
    return user_identity(f"arn:aws:iam::{call.account}:user/emulator", None, call.access_key)


def _error(body: dict[str, Any] | None, headers: dict[str, str]) -> tuple[str, str]:
    body = body or {}
    code = str(body.get("__type") or headers.get("x-amzn-errortype") or "InternalFailure")
    return code.rsplit("#", 1)[-1].split(":", 1)[0], str(body.get("message") or body.get("Message") or "")


def record(environ: dict[str, Any], call: AwsCall, status: int, headers: dict[str, str], body: bytes) -> None:
    """Emits the CloudTrail event for one finished ECR call."""
    try:
        response = json.loads(body) if body else None
    except ValueError:
        response = None
    parameters = signer_revocation.trail_parameters(environ, call) if call.service == "signer" else call.json_body()
    if parameters is not None:
        parameters = {k: v for k, v in parameters.items() if k not in UNLOGGED_MEMBERS}
    detail: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": caller(environ, call),
        "eventTime": events.iso_seconds(datetime.now(timezone.utc)),
        "eventSource": f"{call.service}.amazonaws.com",
        "eventName": call.operation,
        "awsRegion": call.region,
        "sourceIPAddress": environ.get("REMOTE_ADDR", "127.0.0.1"),
        "userAgent": environ.get("HTTP_USER_AGENT", ""),
    }
    if status >= 400:
        detail["errorCode"], detail["errorMessage"] = _error(response, headers)
    detail.update(
        {
            "requestParameters": parameters or None,
            "responseElements": response if status < 400 else None,
            "requestID": headers.get("x-amzn-requestid") or str(uuid.uuid4()),
            "eventID": str(uuid.uuid4()),
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": call.account,
            "eventCategory": "Management",
        }
    )
    events.emit(call.account, call.region, f"aws.{call.service}", "AWS API Call via CloudTrail", detail)
