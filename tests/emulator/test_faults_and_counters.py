"""Injected faults look like AWS errors to the SDK, and every call is counted (issue items 7 and 8)."""
from __future__ import annotations

import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

CALLS = 200


def outcomes(ecr, calls: int) -> list[str]:
    results = []
    for _ in range(calls):
        try:
            ecr.describe_repositories()
            results.append("ok")
        except ClientError as error:
            results.append(f"{error.response['ResponseMetadata']['HTTPStatusCode']} {error.response['Error']['Code']}")
    return results


def test_throttling_at_the_configured_rate(ecr, control):
    control("POST", "/_emulator/faults", {"service": "ecr", "operation": "DescribeRepositories", "error": "ThrottlingException", "rate": 0.3, "seed": 7})

    results = outcomes(ecr, CALLS)

    assert set(results) == {"ok", "400 ThrottlingException"}
    assert 0.2 < results.count("400 ThrottlingException") / CALLS < 0.4


def test_the_sdk_retries_injected_throttling_and_5xx(client, control):
    control("POST", "/_emulator/faults", {"service": "ecr", "operation": "DescribeRepositories", "error": "ThrottlingException", "count": 2})
    control("POST", "/_emulator/faults", {"service": "ecr", "operation": "DescribeRepositories", "error": "ServerException", "count": 1})
    retrying = client("ecr", attempts=5)

    response = retrying.describe_repositories()

    assert response["ResponseMetadata"]["RetryAttempts"] == 3
    assert control("GET", "/_emulator/faults")["faults"] == []


def test_a_5xx_fault_and_its_status(ecr, control):
    control("POST", "/_emulator/faults", {"service": "ecr", "operation": "*", "error": "ServiceUnavailableException"})
    assert outcomes(ecr, 1) == ["503 ServiceUnavailableException"]
    control("DELETE", "/_emulator/faults")
    assert outcomes(ecr, 1) == ["ok"]


def test_a_fault_can_name_one_repository(ecr, control):
    for name in ("open", "denied"):
        ecr.create_repository(repositoryName=name)
    control("POST", "/_emulator/faults", {"service": "ecr", "operation": "DescribeImages", "error": "AccessDeniedException",
                                          "repository": "denied"})

    assert ecr.describe_images(repositoryName="open")["imageDetails"] == []
    with pytest.raises(ClientError) as denied:
        ecr.describe_images(repositoryName="denied")
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # A call that names no repository is not about it.
    assert ecr.describe_repositories()["repositories"]


def test_restjson_services_get_their_model_status(client, control):
    control("POST", "/_emulator/faults", {"service": "inspector2", "operation": "ListFindings", "error": "ThrottlingException"})
    with pytest.raises(ClientError) as throttled:
        client("inspector2").list_findings()
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"


def test_added_latency(ecr, control):
    control("POST", "/_emulator/faults", {"service": "ecr", "operation": "DescribeRepositories", "latency_ms": 300})
    started = time.monotonic()
    ecr.describe_repositories()
    assert time.monotonic() - started >= 0.3


def test_requests_are_counted_per_operation(client, control):
    ecr, sqs, inspector = client("ecr"), client("sqs"), client("inspector2")
    ecr.create_repository(repositoryName="counted")
    for _ in range(3):
        ecr.describe_repositories()
    sqs.create_queue(QueueName="counted")
    inspector.list_coverage()

    assert control("GET", "/_emulator/requests") == {
        "ecr.CreateRepository": 1,
        "ecr.DescribeRepositories": 3,
        "inspector2.ListCoverage": 1,
        "sqs.CreateQueue": 1,
    }
    control("DELETE", "/_emulator/requests")
    assert control("GET", "/_emulator/requests") == {}


def test_operations_moto_lacks_answer_an_aws_shaped_501(ecr):
    with pytest.raises(ClientError) as missing:
        ecr.put_account_setting(name="BASIC_SCAN_TYPE_VERSION", value="AWS_NATIVE")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert missing.value.response["Error"]["Code"] == "NotImplemented"


def test_moto_reset_also_resets_the_extension(ecr, control, endpoint):
    control("POST", "/_emulator/faults", {"service": "sqs", "error": "ThrottlingException"})
    control("POST", "/_emulator/config", {"scan_delay_seconds": 9})
    ecr.create_repository(repositoryName="before-reset")

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()

    assert control("GET", "/_emulator/faults") == {"faults": []}
    assert control("GET", "/_emulator/requests") == {}
    assert control("GET", "/_emulator/events") == {"events": []}
    assert control("GET", "/_emulator/config")["scan_delay_seconds"] == 2.0
    assert ecr.describe_repositories()["repositories"] == []
