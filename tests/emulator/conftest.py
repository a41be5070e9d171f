"""Fixtures for the emulator's own tests: one server per session, a clean state per test.

The server is started the way `scripts/services` starts it (server.py as a
subprocess on a free port) and is only reached over HTTP, through boto3 (a
real AWS client) and the `/_emulator` control API.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import botocore.config
import pytest

SERVER = Path(__file__).with_name("server.py")
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"the emulator did not answer within 30 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("emulator") / "server.log"
    # The tests assume the emulator's defaults: the caller's own knobs must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_EMU_") and k != "MOTO_ACCOUNT_ID"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


Control = Callable[..., Any]


@pytest.fixture(scope="session")
def control(endpoint: str) -> Control:
    """`control("POST", "/_emulator/config", {...})` → the decoded JSON answer."""

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(endpoint + path, data=data, method=method)
        with urllib.request.urlopen(request) as response:
            return json.load(response)

    return call


@pytest.fixture(scope="session")
def client(endpoint: str) -> Callable[..., Any]:
    """`client("ecr")` → a boto3 client for the emulator (dummy credentials, one attempt unless asked)."""

    def make(service: str, attempts: int = 1, **kwargs: Any) -> Any:
        config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": attempts})
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
            **kwargs,
        )

    return make


@pytest.fixture(autouse=True)
def fresh(control: Control) -> None:
    """Every test starts from an empty emulator whose asynchronous work completes at once."""
    control("POST", "/_emulator/reset")
    control("POST", "/_emulator/config", {"signing_delay_seconds": 0, "scan_delay_seconds": 0})


@pytest.fixture
def ecr(client: Callable[..., Any]) -> Any:
    return client("ecr")


@pytest.fixture
def event_queue(client: Callable[..., Any]) -> Callable[[], list[dict[str, Any]]]:
    """An SQS queue behind an EventBridge rule for aws.ecr and aws.inspector2; returns a drain function."""
    sqs, events = client("sqs"), client("events")
    url = sqs.create_queue(QueueName="ecr-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="ecr-events", EventPattern=json.dumps({"source": ["aws.ecr", "aws.inspector2"]}))
    events.put_targets(Rule="ecr-events", Targets=[{"Id": "queue", "Arn": arn}])

    def drain() -> list[dict[str, Any]]:
        bodies: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return drain
