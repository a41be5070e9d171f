"""Several accounts, forwarding between them, per-account counters, and changes made without events."""
from __future__ import annotations

import json
import urllib.error

import boto3
import botocore.config
import pytest

from support import oci_manifest

CENTRAL = "123456789012"
SPOKE = "210987654321"
SPOKE_ROLE = f"arn:aws:iam::{SPOKE}:role/ecr-audit-test"


@pytest.fixture
def spoke(client, endpoint):
    """`spoke("ecr")`: a client acting in the spoke account through AssumeRole credentials, as the Rust tests do."""
    credentials = client("sts").assume_role(RoleArn=SPOKE_ROLE, RoleSessionName="spoke-session")["Credentials"]

    def make(service: str):
        return boto3.client(
            service, endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )

    return make


def queue_behind_rule(sqs, events, name: str, pattern: dict) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    return url, arn


def receive_all(sqs, url: str) -> list[dict]:
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_assumed_role_credentials_act_in_their_account(spoke, ecr):
    assert spoke("sts").get_caller_identity()["Account"] == SPOKE
    spoke("ecr").create_repository(repositoryName="spoke-only")
    assert [r["repositoryName"] for r in spoke("ecr").describe_repositories()["repositories"]] == ["spoke-only"]
    assert ecr.describe_repositories()["repositories"] == []


def test_spoke_events_carry_the_spoke_account_and_its_caller(spoke):
    url, _ = queue_behind_rule(spoke("sqs"), spoke("events"), "spoke-local", {"source": ["aws.ecr"]})
    spoke("ecr").create_repository(repositoryName="svc")
    spoke("ecr").put_image(repositoryName="svc", imageManifest=oci_manifest("spoke"), imageTag="v1")

    events = receive_all(spoke("sqs"), url)

    assert {e["detail-type"] for e in events} == {"ECR Image Action", "AWS API Call via CloudTrail"}
    assert {e["account"] for e in events} == {SPOKE}
    trail = [e["detail"] for e in events if e["detail-type"] == "AWS API Call via CloudTrail"]
    assert {d["recipientAccountId"] for d in trail} == {SPOKE}
    assert {d["userIdentity"]["arn"] for d in trail} == {f"arn:aws:sts::{SPOKE}:assumed-role/ecr-audit-test/spoke-session"}
    assert trail[0]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == SPOKE_ROLE


def test_a_spoke_rule_forwards_to_the_central_bus_and_queue(spoke, client, control, event_queue):
    # Central: the event_queue fixture's rule on the central default bus. Spoke: a rule whose
    # target is that bus (as spoke.yaml does), plus a local queue to compare ids with.
    spoke_events = spoke("events")
    spoke_events.put_rule(Name="to-central", EventPattern=json.dumps({"source": ["aws.ecr"]}))
    spoke_events.put_targets(Rule="to-central", Targets=[{
        "Id": "central-bus", "Arn": f"arn:aws:events:us-east-1:{CENTRAL}:event-bus/default",
        "RoleArn": f"arn:aws:iam::{SPOKE}:role/forwarder"}])

    spoke("ecr").create_repository(repositoryName="forwarded")
    spoke("ecr").put_image(repositoryName="forwarded", imageManifest=oci_manifest("fwd"), imageTag="v1")

    received = event_queue()
    emitted = control("GET", f"/_emulator/events?account={SPOKE}")["events"]
    assert len(received) == 3  # CreateRepository, Image Action, PutImage
    assert [(e["id"], e["account"], e["detail-type"]) for e in received] == [
        (e["id"], SPOKE, e["detail-type"]) for e in emitted
    ]
    assert all(e["region"] == "us-east-1" for e in received)
    push = next(e for e in received if e["detail-type"] == "ECR Image Action")
    assert push["detail"]["repository-name"] == "forwarded"
    assert control("GET", f"/_emulator/events?account={CENTRAL}")["events"] == []


def test_a_spoke_rule_can_target_the_central_queue_directly(spoke, client):
    sqs = client("sqs")
    url = sqs.create_queue(QueueName="central-direct")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    spoke("sqs").create_queue(QueueName="central-direct")  # a same-named queue in the spoke must stay empty
    spoke("events").put_rule(Name="direct", EventPattern=json.dumps({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"]}))
    spoke("events").put_targets(Rule="direct", Targets=[{"Id": "q", "Arn": arn}])

    spoke("ecr").create_repository(repositoryName="direct")
    spoke("ecr").put_image(repositoryName="direct", imageManifest=oci_manifest("direct"), imageTag="v1")

    [event] = receive_all(sqs, url)
    assert (event["account"], event["detail"]["repository-name"]) == (SPOKE, "direct")
    spoke_url = spoke("sqs").get_queue_url(QueueName="central-direct")["QueueUrl"]
    assert receive_all(spoke("sqs"), spoke_url) == []


def test_request_counters_per_account(spoke, ecr, control):
    control("DELETE", "/_emulator/requests")
    ecr.create_repository(repositoryName="central-repo")
    spoke_ecr = spoke("ecr")
    for name in ("svc-a", "svc-b", "svc-c"):
        spoke_ecr.create_repository(repositoryName=name)
    spoke_ecr.describe_repositories()
    spoke_ecr.batch_get_repository_scanning_configuration(repositoryNames=["svc-a", "svc-b", "svc-c"])

    assert control("GET", f"/_emulator/requests?account={SPOKE}") == {
        "ecr.BatchGetRepositoryScanningConfiguration": 1,
        "ecr.CreateRepository": 3,
        "ecr.DescribeRepositories": 1,
    }
    assert control("GET", f"/_emulator/requests?account={CENTRAL}") == {"ecr.CreateRepository": 1}
    assert control("GET", "/_emulator/requests")["ecr.CreateRepository"] == 4
    assert control("GET", "/_emulator/requests?by=account")[SPOKE]["ecr.CreateRepository"] == 3
    assert control("GET", f"/_emulator/requests?account={SPOKE}&region=eu-west-1") == {}

    control("DELETE", f"/_emulator/requests?account={SPOKE}")
    assert control("GET", f"/_emulator/requests?account={SPOKE}") == {}
    assert control("GET", "/_emulator/requests") == {"ecr.CreateRepository": 1}


def test_bad_counter_queries_are_refused(control):
    with pytest.raises(urllib.error.HTTPError) as refused:
        control("GET", "/_emulator/requests?acount=1")
    assert refused.value.code == 400


def test_changes_can_be_made_without_any_event(ecr, client, control, event_queue):
    ecr.create_repository(repositoryName="watched", imageScanningConfiguration={"scanOnPush": True})
    assert len(event_queue()) == 1
    control("DELETE", "/_emulator/events")

    assert control("POST", "/_emulator/config", {"emit_events": False})["emit_events"] is False
    ecr.put_image_tag_mutability(repositoryName="watched", imageTagMutability="IMMUTABLE")
    ecr.put_image(repositoryName="watched", imageManifest=oci_manifest("quiet"), imageTag="v1")  # scan completes at once too
    ecr.create_repository(repositoryName="unseen")
    ecr.delete_repository(repositoryName="unseen")
    client("events").put_events(Entries=[{"Source": "test.caller", "DetailType": "own", "Detail": "{}"}])

    # The state changed, but nothing reached the bus (except the caller's own PutEvents).
    assert ecr.describe_repositories(repositoryNames=["watched"])["repositories"][0]["imageTagMutability"] == "IMMUTABLE"
    assert ecr.describe_image_scan_findings(repositoryName="watched", imageId={"imageTag": "v1"})["imageScanStatus"]["status"] == "COMPLETE"
    assert event_queue() == []
    assert control("GET", "/_emulator/events") == {"events": []}

    control("POST", "/_emulator/config", {"emit_events": True})
    ecr.put_lifecycle_policy(repositoryName="watched", lifecyclePolicyText=json.dumps({"rules": [{
        "rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5},
        "action": {"type": "expire"}}]}))
    assert [e["detail"]["eventName"] for e in event_queue()] == ["PutLifecyclePolicy"]


def test_emit_events_takes_a_boolean_and_resets_to_true(control):
    with pytest.raises(urllib.error.HTTPError) as refused:
        control("POST", "/_emulator/config", {"emit_events": "no"})
    assert refused.value.code == 400
    control("POST", "/_emulator/config", {"emit_events": False})
    control("POST", "/_emulator/reset")
    assert control("GET", "/_emulator/config")["emit_events"] is True


def test_assume_role_requests_are_recorded_with_their_external_id(client, control):
    control("DELETE", "/_emulator/assume-role-requests")
    sts = client("sts")
    sts.assume_role(RoleArn=SPOKE_ROLE, RoleSessionName="with-id", ExternalId="ext-1")
    sts.assume_role(RoleArn=SPOKE_ROLE, RoleSessionName="without-id")
    assert control("GET", f"/_emulator/assume-role-requests?account={CENTRAL}")["requests"] == [
        {"account": CENTRAL, "roleArn": SPOKE_ROLE, "roleSessionName": "with-id", "externalId": "ext-1"},
        {"account": CENTRAL, "roleArn": SPOKE_ROLE, "roleSessionName": "without-id", "externalId": None},
    ]
    assert control("GET", f"/_emulator/assume-role-requests?account={SPOKE}")["requests"] == []
    control("DELETE", "/_emulator/assume-role-requests")
    assert control("GET", "/_emulator/assume-role-requests")["requests"] == []


def test_organizations_lists_active_accounts_per_unit_in_the_management_account(spoke):
    """What discovery calls, as moto answers them (docs/EMULATOR.md): the organization lives in the
    account that created it; closed accounts are SUSPENDED; removed ones are gone."""
    org = spoke("organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    prod = org.create_organizational_unit(ParentId=root, Name="prod")["OrganizationalUnit"]["Id"]
    eu = org.create_organizational_unit(ParentId=prod, Name="prod-eu")["OrganizationalUnit"]["Id"]
    ids = [org.create_account(Email=f"a{i}@example.com", AccountName=f"a{i}")["CreateAccountStatus"]["AccountId"] for i in range(3)]
    org.move_account(AccountId=ids[0], SourceParentId=root, DestinationParentId=eu)
    assert [u["Id"] for u in org.list_organizational_units_for_parent(ParentId=prod)["OrganizationalUnits"]] == [eu]
    assert [a["Id"] for a in org.list_accounts_for_parent(ParentId=eu)["Accounts"]] == [ids[0]]
    page = org.list_accounts(MaxResults=2)
    assert len(page["Accounts"]) == 2 and page["NextToken"]
    org.close_account(AccountId=ids[1])
    states = {a["Id"]: a["State"] for a in org.list_accounts()["Accounts"]}
    assert states[ids[1]] == "SUSPENDED" and states[ids[2]] == "ACTIVE" and states[SPOKE] == "ACTIVE"
    org.remove_account_from_organization(AccountId=ids[2])
    assert ids[2] not in {a["Id"] for a in org.list_accounts()["Accounts"]}
