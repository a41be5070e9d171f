"""Events reach an SQS queue through an EventBridge rule, shaped as AWS shapes them (issue item 6)."""
from __future__ import annotations

import json
import re
import uuid

import pytest
from botocore.exceptions import ClientError

from support import digest_of, oci_manifest

ENVELOPE = ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"]
EXPIRE_UNTAGGED = {
    "rules": [
        {
            "rulePriority": 1,
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
            "action": {"type": "expire"},
        }
    ]
}
ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def of_type(events: list[dict], detail_type: str) -> list[dict]:
    return [e for e in events if e["detail-type"] == detail_type]


def cloudtrail(events: list[dict], name: str) -> dict:
    [event] = [e for e in of_type(events, "AWS API Call via CloudTrail") if e["detail"]["eventName"] == name]
    return event


def assert_envelope(event: dict) -> None:
    assert list(event) == ENVELOPE
    assert event["version"] == "0"
    assert uuid.UUID(event["id"]).version == 4
    assert event["account"] == "123456789012"
    assert event["region"] == "us-east-1"
    assert ISO_SECONDS.match(event["time"])


def test_push_and_delete_emit_image_actions(ecr, event_queue):
    ecr.create_repository(repositoryName="acted")
    image = oci_manifest("acted")
    ecr.put_image(repositoryName="acted", imageManifest=image, imageTag="v1")
    ecr.batch_delete_image(repositoryName="acted", imageIds=[{"imageDigest": digest_of(image)}])

    push, delete = of_type(event_queue(), "ECR Image Action")
    for event in (push, delete):
        assert_envelope(event)
        assert event["source"] == "aws.ecr"
        assert event["resources"] == []
    assert push["detail"] == {
        "result": "SUCCESS",
        "repository-name": "acted",
        "image-digest": digest_of(image),
        "action-type": "PUSH",
        "image-tag": "v1",
        "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
    }
    assert delete["detail"]["action-type"] == "DELETE"
    assert delete["detail"]["image-tag"] == "v1"


def test_scans_emit_ecr_image_scan_and_inspector2_scan(ecr, control, event_queue):
    control("POST", "/_emulator/scan-results", {"findingSeverityCounts": {"CRITICAL": 2, "LOW": 1}})
    ecr.create_repository(repositoryName="basic", imageScanningConfiguration={"scanOnPush": True})
    ecr.put_image(repositoryName="basic", imageManifest=oci_manifest("basic"), imageTag="v1")
    ecr.put_registry_scanning_configuration(
        scanType="ENHANCED", rules=[{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "deep*", "filterType": "WILDCARD"}]}]
    )
    ecr.create_repository(repositoryName="deep")
    ecr.put_image(repositoryName="deep", imageManifest=oci_manifest("deep"), imageTag="v2")
    events = event_queue()

    [basic] = of_type(events, "ECR Image Scan")
    assert_envelope(basic)
    assert basic["resources"] == ["arn:aws:ecr:us-east-1:123456789012:repository/basic"]
    assert basic["detail"] == {
        "scan-status": "COMPLETE",
        "repository-name": "basic",
        "finding-severity-counts": {"CRITICAL": 2, "LOW": 1},
        "image-digest": digest_of(oci_manifest("basic")),
        "image-tags": ["v1"],
    }
    [enhanced] = of_type(events, "Inspector2 Scan")
    assert_envelope(enhanced)
    assert enhanced["source"] == "aws.inspector2"
    assert enhanced["detail"] == {
        "scan-status": "INITIAL_SCAN_COMPLETE",
        "repository-name": "arn:aws:ecr:us-east-1:123456789012:repository/deep",
        "finding-severity-counts": {"CRITICAL": 2, "HIGH": 0, "MEDIUM": 0, "TOTAL": 3},
        "image-digest": digest_of(oci_manifest("deep")),
        "image-tags": ["v2"],
    }


def test_signature_push_emits_its_own_image_action(ecr, client, event_queue):
    arn = client("signer").put_signing_profile(profileName="auto", platformId="Notation-OCI-SHA384-ECDSA")["arn"]
    ecr.put_signing_configuration(signingConfiguration={"rules": [{"signingProfileArn": arn}]})
    ecr.create_repository(repositoryName="signed")
    ecr.put_image(repositoryName="signed", imageManifest=oci_manifest("signed"), imageTag="v1")

    pushes = [e["detail"] for e in of_type(event_queue(), "ECR Image Action")]
    assert [p.get("artifact-media-type") for p in pushes] == [None, "application/vnd.cncf.notary.signature"]
    assert "image-tag" not in pushes[1]


def test_cloudtrail_records_successful_calls(ecr, event_queue):
    ecr.create_repository(repositoryName="trailed", imageTagMutability="IMMUTABLE")
    ecr.put_lifecycle_policy(repositoryName="trailed", lifecyclePolicyText=json.dumps(EXPIRE_UNTAGGED))
    ecr.describe_repositories()
    events = event_queue()

    assert {e["detail"]["eventName"] for e in events} == {"CreateRepository", "PutLifecyclePolicy"}
    created = cloudtrail(events, "CreateRepository")
    assert_envelope(created)
    assert created["source"] == "aws.ecr"
    detail = created["detail"]
    assert detail["eventSource"] == "ecr.amazonaws.com"
    assert detail["eventType"] == "AwsApiCall"
    assert uuid.UUID(detail["eventID"])
    assert ISO_SECONDS.match(detail["eventTime"])
    assert detail["userIdentity"]["arn"] == "arn:aws:iam::123456789012:user/emulator"
    assert detail["userIdentity"]["type"] == "IAMUser"
    assert detail["requestParameters"] == {"repositoryName": "trailed", "imageTagMutability": "IMMUTABLE"}
    assert detail["responseElements"]["repository"]["repositoryName"] == "trailed"
    assert "errorCode" not in detail


def test_cloudtrail_records_failed_calls_with_error_code(ecr, event_queue):
    with pytest.raises(ClientError):
        ecr.delete_repository(repositoryName="missing")

    failed = cloudtrail(event_queue(), "DeleteRepository")["detail"]
    assert failed["errorCode"] == "RepositoryNotFoundException"
    assert "missing" in failed["errorMessage"]
    assert failed["responseElements"] is None


def test_cloudtrail_caller_comes_from_control_api_or_header(ecr, control, event_queue):
    role_session = "arn:aws:sts::123456789012:assumed-role/Deployer/ci-run-7"
    control("POST", "/_emulator/identity", {"arn": role_session})
    ecr.create_repository(repositoryName="by-role")
    control("DELETE", "/_emulator/identity")

    def as_alice(request, **_):
        request.headers["x-emulator-caller-arn"] = "arn:aws:iam::123456789012:user/alice"

    ecr.meta.events.register("before-sign.ecr.DeleteRepository", as_alice)
    ecr.delete_repository(repositoryName="by-role")
    events = event_queue()

    role = cloudtrail(events, "CreateRepository")["detail"]["userIdentity"]
    assert role["type"] == "AssumedRole"
    assert role["arn"] == role_session
    assert role["principalId"].endswith(":ci-run-7")
    assert role["sessionContext"]["sessionIssuer"]["arn"] == "arn:aws:iam::123456789012:role/Deployer"
    alice = cloudtrail(events, "DeleteRepository")["detail"]["userIdentity"]
    assert (alice["type"], alice["arn"], alice["userName"]) == ("IAMUser", "arn:aws:iam::123456789012:user/alice", "alice")


def test_events_follow_the_account_header(client):
    other = "210987654321"

    def in_other_account(request, **_):
        request.headers["x-moto-account-id"] = other

    sqs, events, ecr = client("sqs"), client("events"), client("ecr")
    for c in (sqs, events, ecr):
        c.meta.events.register("before-sign.*.*", in_other_account)
    url = sqs.create_queue(QueueName="other-account")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-ecr", EventPattern='{"source": ["aws.ecr"]}')
    events.put_targets(Rule="all-ecr", Targets=[{"Id": "q", "Arn": arn}])
    ecr.create_repository(repositoryName="elsewhere")

    [message] = sqs.receive_message(QueueUrl=url)["Messages"]
    event = json.loads(message["Body"])
    assert event["account"] == other
    assert event["detail"]["userIdentity"]["arn"] == f"arn:aws:iam::{other}:user/emulator"


def test_patterns_match_inside_arrays_of_objects(client):
    """EventBridge matches `detail.resources.type` against every element of `detail.resources`
    (the Inspector2 Finding branch of infra/cloudformation/central.yaml relies on it)."""
    sqs, events = client("sqs"), client("events")
    url = sqs.create_queue(QueueName="findings")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="ecr-findings", EventPattern=json.dumps({
        "source": ["aws.inspector2"], "detail-type": ["Inspector2 Finding"],
        "detail": {"resources": {"type": ["AWS_ECR_CONTAINER_IMAGE"]}}}))
    events.put_targets(Rule="ecr-findings", Targets=[{"Id": "q", "Arn": arn}])

    def finding(name: str, *types: str) -> dict:
        detail = {"findingArn": name, "resources": [{"type": t, "id": f"{name}-{t}"} for t in types]}
        return {"Source": "aws.inspector2", "DetailType": "Inspector2 Finding", "Detail": json.dumps(detail)}

    events.put_events(Entries=[finding("ecr", "AWS_ECR_CONTAINER_IMAGE"), finding("ec2", "AWS_EC2_INSTANCE"),
                               finding("both", "AWS_EC2_INSTANCE", "AWS_ECR_CONTAINER_IMAGE"), finding("none")])

    received = [json.loads(m["Body"])["detail"]["findingArn"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert sorted(received) == ["both", "ecr"]


def test_a_topic_target_publishes_the_event_to_its_subscribers(client):
    """An SNS topic as a rule target (infra/cloudformation/alert-routing.yaml relies on it):
    the subscribers receive the event as the message, and a transformer's output when set."""
    sqs, events, sns = client("sqs"), client("events"), client("sns")
    url = sqs.create_queue(QueueName="paged")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    events.put_rule(Name="paging", EventPattern=json.dumps({"source": ["ecr-audit"], "detail": {"alert": ["UNSIGNED"]}}))
    events.put_targets(Rule="paging", Targets=[
        {"Id": "whole", "Arn": topic},
        {"Id": "short", "Arn": topic, "InputTransformer": {
            "InputPathsMap": {"alert": "$.detail.alert"}, "InputTemplate": '{"summary": "ecr-audit <alert>"}'}},
    ])

    events.put_events(Entries=[
        {"Source": "ecr-audit", "DetailType": "ECR Audit Signature Alert", "Detail": json.dumps({"alert": "UNSIGNED"})},
        {"Source": "ecr-audit", "DetailType": "ECR Audit Control Regressed And Restored",
         "Detail": json.dumps({"alert": "CONTROL_REGRESSED_AND_RESTORED"})},
    ])

    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert len(bodies) == 2, bodies  # the restore matched no rule
    [short] = [b for b in bodies if "summary" in b]
    [whole] = [b for b in bodies if "detail" in b]
    assert short == {"summary": "ecr-audit UNSIGNED"}
    assert whole["detail"] == {"alert": "UNSIGNED"} and whole["source"] == "ecr-audit"
