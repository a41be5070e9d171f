"""Helpers shared by the CloudFormation template tests (tests/infra).

A module of its own, not conftest.py, so that `import` never picks up the emulator
tests' conftest when both directories are collected together.
"""
from __future__ import annotations

import ast
import json
import secrets
import time
from pathlib import Path
from typing import Any, Callable

import boto3
import botocore.config
import pytest
import yaml

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "cloudformation"
REGION = "us-east-1"

ClientFactory = Callable[[str, str], Any]


# ------------------------------------------------------------------ template parsing
class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that understands CloudFormation's short-form tags (!Ref, !Sub, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(name: str) -> dict[str, Any]:
    return yaml.load((TEMPLATES / name).read_text(), Loader=_CfnLoader)  # noqa: S506 (a SafeLoader)


# ------------------------------------------------------------------ emulator access
def new_account_id() -> str:
    """A random account id, so a test shares no state with other users of the emulator."""
    return "9" + "".join(str(secrets.randbelow(10)) for _ in range(11))


def client_factory(endpoint: str) -> ClientFactory:
    """`make("sqs", account)` -> a boto3 client for the emulator acting in `account`."""

    def make(service: str, account: str) -> Any:
        client = boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 3}),
        )

        def add_account(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        client.meta.events.register("before-sign.*.*", add_account)
        return client

    return make


def check_account_isolation(aws: ClientFactory, account: str) -> None:
    # If the server was started with MOTO_ACCOUNT_ID, moto ignores the header: every call
    # would land in one shared account and the cross-account test would prove nothing.
    seen = aws("sts", account).get_caller_identity()["Account"]
    if seen != account:
        pytest.fail(
            f"the emulator answers as account {seen}, not {account}: it was started with "
            "MOTO_ACCOUNT_ID, which disables per-request accounts",
            pytrace=False,
        )


class Stack:
    """A deployed stack: its name, id, account and outputs."""

    def __init__(self, name: str, stack_id: str, account: str, outputs: dict[str, str]):
        self.name, self.id, self.account, self.outputs = name, stack_id, account, outputs


def deploy(aws: ClientFactory, account: str, template: str, parameters: dict[str, str], timeout: float = 60.0) -> Stack:
    cfn = aws("cloudformation", account)
    name = f"ecr-audit-{Path(template).stem}-{secrets.token_hex(4)}"
    stack_id = cfn.create_stack(
        StackName=name,
        TemplateBody=(TEMPLATES / template).read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )["StackId"]
    deadline = time.monotonic() + timeout
    while True:
        stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
        status = stack["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{name} still {status} after {timeout} s", pytrace=False)
        time.sleep(0.2)
    assert status == "CREATE_COMPLETE", f"{name}: {status} {stack.get('StackStatusReason')}"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return Stack(name, stack_id, account, outputs)


def delete(aws: ClientFactory, stack: Stack, timeout: float = 60.0) -> None:
    cfn = aws("cloudformation", stack.account)
    cfn.delete_stack(StackName=stack.id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = cfn.describe_stacks(StackName=stack.id)["Stacks"][0]["StackStatus"]
        if status == "DELETE_COMPLETE":
            return
        assert not status.endswith("_FAILED"), f"{stack.name}: {status}"
        time.sleep(0.2)
    pytest.fail(f"{stack.name} was not deleted within {timeout} s", pytrace=False)


# ------------------------------------------------------------------ IAM documents
def policy_document(raw: Any) -> dict[str, Any]:
    """An IAM policy document as returned by the emulator.

    Real IAM returns URL-encoded JSON (boto3 decodes it into a dict). moto stores inline
    policies that CloudFormation created as the Python repr of the dict, which boto3
    hands back as a string: accept all three.
    """
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return ast.literal_eval(raw)


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = document.get("Statement", [])
    # A list entry that was !Ref AWS::NoValue comes back from moto as None.
    return [s for s in (found if isinstance(found, list) else [found]) if s]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------ events
# Shaped like the real events (docs/EMULATOR.md shows each); each carries a nonce in its detail
# so a test counts only its own events, even on a busy emulator.
def _entry(source: str, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> dict[str, Any]:
    return {
        "Source": source,
        "DetailType": detail_type,
        "Detail": json.dumps(detail),
        "Resources": resources or [],
        "EventBusName": "default",
    }


def nonce() -> str:
    return secrets.token_hex(6)


def image_action(tag: str, detail_type: str = "ECR Image Action") -> dict[str, Any]:
    return _entry(
        "aws.ecr",
        detail_type,
        {
            "result": "SUCCESS",
            "repository-name": f"team/app-{tag}",
            "image-digest": "sha256:" + "a" * 64,
            "action-type": "PUSH",
            "image-tag": "v1",
            "test-nonce": tag,
        },
    )


def cloudtrail_call(tag: str, account: str, event_name: str, error_code: str | None = None,
                    detail_type: str = "AWS API Call via CloudTrail") -> dict[str, Any]:
    repository = f"team/app-{tag}"
    detail: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:ci",
            "arn": f"arn:aws:sts::{account}:assumed-role/ci-deployer/ci",
            "accountId": account,
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{account}:role/ci-deployer"}},
        },
        "eventTime": "2026-01-02T03:04:05Z",
        "eventSource": "ecr.amazonaws.com",
        "eventName": event_name,
        "awsRegion": REGION,
        "sourceIPAddress": "192.0.2.1",
        "userAgent": "aws-cli/2",
        "requestParameters": {"repositoryName": repository, "imageTagMutability": "IMMUTABLE"},
        "responseElements": None if error_code else {"repositoryName": repository, "imageTagMutability": "IMMUTABLE"},
        "requestID": secrets.token_hex(16),
        "eventID": secrets.token_hex(16),
        "readOnly": event_name.startswith(("Describe", "Get", "List")),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
        "test-nonce": tag,
    }
    if error_code:
        detail["errorCode"] = error_code
        detail["errorMessage"] = "The repository does not exist"
    if detail_type == "AWS Service Event via CloudTrail":
        detail["eventType"] = "AwsServiceEvent"
        detail["userIdentity"] = {"type": "AWSService", "invokedBy": "ecr.amazonaws.com"}
        detail["requestParameters"] = detail["responseElements"] = None
        detail["serviceEventDetails"] = {"lifecycleEventImageActions": []}
    return _entry("aws.ecr", detail_type, detail)


def signer_call(tag: str, account: str, event_name: str, error_code: str | None = None) -> dict[str, Any]:
    """A CloudTrail record of an AWS Signer call as EventBridge delivers it (source aws.signer)."""
    entry = cloudtrail_call(tag, account, event_name, error_code)
    detail = json.loads(entry["Detail"])
    detail["eventSource"] = "signer.amazonaws.com"
    detail["requestParameters"] = (
        {"jobId": f"job-{tag}", "reason": "test"} if event_name == "RevokeSignature"
        else {"profileName": f"p{tag}", "profileVersion": "v1", "reason": "test", "effectiveTime": 1764547200}
    )
    detail["responseElements"] = None
    return _entry("aws.signer", "AWS API Call via CloudTrail", detail)


def inspector_scan(tag: str, repository_name: str) -> dict[str, Any]:
    return _entry(
        "aws.inspector2",
        "Inspector2 Scan",
        {
            "scan-status": "INITIAL_SCAN_COMPLETE",
            "repository-name": repository_name,
            "finding-severity-counts": {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2, "TOTAL": 3},
            "image-digest": "sha256:" + "b" * 64,
            "image-tags": ["v1"],
            "test-nonce": tag,
        },
        [repository_name] if repository_name.startswith("arn:") else [],
    )


def inspector_finding(tag: str, account: str, resource_type: str) -> dict[str, Any]:
    return _entry(
        "aws.inspector2",
        "Inspector2 Finding",
        {
            "awsAccountId": account,
            "findingArn": f"arn:aws:inspector2:{REGION}:{account}:finding/{tag}",
            "severity": "HIGH",
            "status": "ACTIVE",
            "type": "PACKAGE_VULNERABILITY",
            "resources": [
                {
                    "type": resource_type,
                    "id": f"arn:aws:ecr:{REGION}:{account}:repository/team/app-{tag}/sha256:{'c' * 64}",
                    "partition": "aws",
                    "region": REGION,
                    "details": {
                        "awsEcrContainerImage": {
                            "repositoryName": f"team/app-{tag}",
                            "imageHash": "sha256:" + "c" * 64,
                            "imageTags": ["v1"],
                            "registry": account,
                        }
                    },
                }
            ],
            "test-nonce": tag,
        },
    )


def unrelated(tag: str) -> dict[str, Any]:
    return _entry("aws.ec2", "EC2 Instance State-change Notification",
                  {"instance-id": "i-0123456789abcdef0", "state": "running", "test-nonce": tag})


def put_events(aws: ClientFactory, account: str, entries: list[dict[str, Any]]) -> None:
    events = aws("events", account)
    for start in range(0, len(entries), 10):  # PutEvents takes at most 10 entries
        answer = events.put_events(Entries=entries[start:start + 10])
        assert answer["FailedEntryCount"] == 0, answer["Entries"]


def drain(aws: ClientFactory, stack: Stack, expected: set[str], timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Receives the stack's queue until every expected nonce arrived (or the timeout), then
    once more, so that an event that must not arrive has had its chance. Returns
    nonce -> message body."""
    sqs = aws("sqs", stack.account)
    url = stack.outputs["QueueUrl"]
    bodies: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    last_round = False
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for message in messages:
            body = json.loads(message["Body"])
            tag = body.get("detail", {}).get("test-nonce")
            if tag is not None:
                bodies[tag] = body
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if messages:
            continue
        if last_round or time.monotonic() > deadline:
            return bodies
        if expected <= bodies.keys():
            last_round = True
