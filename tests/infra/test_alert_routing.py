"""alert-routing.yaml deployed into the emulator beside central.yaml: the worker's paging alerts
reach the topic, the others stay on the bus.

What the emulator cannot show: AWS Chatbot and the PagerDuty API destination (moto's
CloudFormation has neither resource type, so they are off here: their parameters are empty),
the topic's KMS encryption and its policy (not enforced by moto). cfn-lint and checkov check
the whole template, those resources included (scripts/check-infra).
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest
from infra_support import ClientFactory, Stack, delete, deploy, load_template, nonce, put_events

PAGING = ["UNSIGNED", "UNTRUSTED", "SIGNING_FAILED", "CONTROL_REGRESSION", "CONTROL_UNKNOWN", "CONTROL_FAILING", "EXCEPTION_EXPIRED"]


@pytest.fixture(scope="module")
def routing(aws: ClientFactory, central_account: str, central_stack: Stack) -> Iterator[Stack]:
    # The bus name from its ARN: moto's Ref of an event bus is not its name (test_central_stack.py).
    bus_name = central_stack.outputs["AlertBusArn"].rsplit("/", 1)[1]
    # PagingAlerts is passed although it is the default: moto splits a CommaDelimitedList
    # given as input, not its default (test_the_default_paging_set_is_the_documented_one
    # checks that the default is the same list).
    stack = deploy(aws, central_account, "alert-routing.yaml", {"AlertBusName": bus_name, "PagingAlerts": ",".join(PAGING)})
    stack.outputs["BusName"] = bus_name
    yield stack
    delete(aws, stack)


def subscribed_queue(aws: ClientFactory, stack: Stack) -> str:
    sqs, sns = aws("sqs", stack.account), aws("sns", stack.account)
    url = sqs.create_queue(QueueName=f"paged-{nonce()}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack.outputs["AlertTopicArn"], Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    return url


def alert(bus: str, kind: str, tag: str) -> dict[str, Any]:
    detail = {"schema_version": "1", "alert_id": tag, "alert": kind, "account": "111122223333",
              "region": "us-east-1", "repository": "payments/api", "reason": "test"}
    return {"Source": "ecr-audit", "DetailType": "ECR Audit Signature Alert", "Detail": json.dumps(detail),
            "EventBusName": bus}


def received(aws: ClientFactory, account: str, url: str, want: int) -> list[dict[str, Any]]:
    sqs, bodies = aws("sqs", account), []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        bodies += [json.loads(m["Body"]) for m in messages]
        if not messages and len(bodies) >= want:
            break
    return bodies


def test_paging_alerts_reach_the_topic_and_the_others_stay_on_the_bus(aws: ClientFactory, routing: Stack) -> None:
    url = subscribed_queue(aws, routing)
    sent = {kind: f"{kind}-{nonce()}" for kind in PAGING + ["CONTROL_REGRESSED_AND_RESTORED"]}
    put_events(aws, routing.account, [alert(routing.outputs["BusName"], kind, tag) for kind, tag in sent.items()])

    bodies = received(aws, routing.account, url, len(PAGING))
    assert sorted(b["detail"]["alert_id"] for b in bodies) == sorted(sent[kind] for kind in PAGING)
    assert all(b["source"] == "ecr-audit" and b["detail"]["repository"] == "payments/api" for b in bodies)


def test_events_of_other_sources_on_the_bus_are_not_paged(aws: ClientFactory, routing: Stack) -> None:
    url = subscribed_queue(aws, routing)
    forged = alert(routing.outputs["BusName"], "UNSIGNED", nonce())
    forged["Source"] = "someone-else"
    put_events(aws, routing.account, [forged])
    assert received(aws, routing.account, url, 0) == []


def test_the_default_paging_set_is_the_documented_one() -> None:
    template = load_template("alert-routing.yaml")
    assert template["Parameters"]["PagingAlerts"]["Default"].split(",") == PAGING
    assert template["Parameters"]["PagerDutyRoutingKey"]["NoEcho"] is True
