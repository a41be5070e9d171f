"""spoke.yaml deployed into a second emulator account, next to central.yaml.

Emulator gaps that matter here (besides those listed in test_central_stack.py):
- moto forwards an event to another account's bus without checking the central bus
  policy or the rule's RoleArn, so the forwarding test proves the wiring (target ARN,
  patterns), not the permissions;
- a forwarded event keeps its `id`, `account` and `region` (the emulator forwards the
  event itself, as EventBridge does; moto alone re-stamped it with the central account);
- IAM does not evaluate trust policies: that only the central task role (with the
  external id) can assume the reader role is checked by reading the policy, not by
  trying.
"""
from __future__ import annotations

import json
import secrets

from infra_support import (
    REGION,
    ClientFactory,
    Stack,
    as_list,
    delete,
    deploy,
    drain,
    image_action,
    new_account_id,
    policy_document,
    put_events,
    statements,
)


def rule_name(arn: str) -> str:
    return arn.rsplit("/", 1)[1]


def test_reader_role_trusts_only_the_central_task_role(aws: ClientFactory, spoke_stack: Stack, central_stack: Stack) -> None:
    iam = aws("iam", spoke_stack.account)
    role = iam.get_role(RoleName="ecr-audit-reader")["Role"]
    assert role["Arn"] == spoke_stack.outputs["ReaderRoleArn"]
    trust = statements(policy_document(role["AssumeRolePolicyDocument"]))
    assert len(trust) == 1
    assert trust[0]["Principal"] == {"AWS": central_stack.outputs["TaskRoleArn"]}
    assert trust[0]["Action"] == "sts:AssumeRole"
    assert trust[0]["Condition"] == {"StringEquals": {"sts:ExternalId": "ecr-audit-test-external-id"}}


def test_reader_role_is_read_only(aws: ClientFactory, spoke_stack: Stack) -> None:
    iam = aws("iam", spoke_stack.account)
    actions: set[str] = set()
    for name in iam.list_role_policies(RoleName="ecr-audit-reader")["PolicyNames"]:
        for statement in statements(policy_document(iam.get_role_policy(RoleName="ecr-audit-reader", PolicyName=name)["PolicyDocument"])):
            assert statement["Effect"] == "Allow"
            actions.update(as_list(statement["Action"]))
            if statement["Resource"] == "*":
                # Registry-wide ECR reads, Signer revocation and Inspector coverage name no
                # resource IAM can scope.
                assert statement["Sid"] in {"EcrRegistry", "SignerRevocation", "InspectorCoverage"}
    readers = ("Describe", "List", "Get", "BatchGet")
    assert all(action.split(":")[1].startswith(readers) for action in actions), actions
    assert {"ecr:DescribeRepositories", "signer:GetSigningProfile", "kms:DescribeKey"} <= actions


def test_forward_rules_target_the_central_default_bus(aws: ClientFactory, spoke_stack: Stack, central_account: str) -> None:
    events = aws("events", spoke_stack.account)
    central_bus = f"arn:aws:events:{REGION}:{central_account}:event-bus/default"
    assert spoke_stack.outputs["CentralEventBusArn"] == central_bus
    for key in ("EcrEventsForwardRuleArn", "InspectorEventsForwardRuleArn", "CloudTrailEventsForwardRuleArn",
                "SignerRevocationEventsForwardRuleArn"):
        name = rule_name(spoke_stack.outputs[key])
        rule = events.describe_rule(Name=name, EventBusName="default")
        assert rule["State"] == "ENABLED"
        targets = events.list_targets_by_rule(Rule=name, EventBusName="default")["Targets"]
        assert len(targets) == 1
        assert targets[0]["Arn"] == central_bus
        # Cross-account bus targets need a role; SQS targets (central) must not have one.
        assert targets[0]["RoleArn"] == spoke_stack.outputs["ForwarderRoleArn"]

    iam = aws("iam", spoke_stack.account)
    forwarder = rule_name(spoke_stack.outputs["ForwarderRoleArn"])
    resources = []
    for name in iam.list_role_policies(RoleName=forwarder)["PolicyNames"]:
        for statement in statements(policy_document(iam.get_role_policy(RoleName=forwarder, PolicyName=name)["PolicyDocument"])):
            assert as_list(statement["Action"]) == ["events:PutEvents"]
            resources.extend(as_list(statement["Resource"]))
    assert resources == [central_bus]


def test_spoke_patterns_equal_central_patterns(aws: ClientFactory, spoke_stack: Stack, central_stack: Stack) -> None:
    spoke_events = aws("events", spoke_stack.account)
    central_events = aws("events", central_stack.account)
    for spoke_key, central_key in (("EcrEventsForwardRuleArn", "EcrEventsRuleArn"),
                                   ("InspectorEventsForwardRuleArn", "InspectorEventsRuleArn"),
                                   ("CloudTrailEventsForwardRuleArn", "CloudTrailEventsRuleArn"),
                                   ("SignerRevocationEventsForwardRuleArn", "SignerRevocationEventsRuleArn"),
                                   ("EcrPublicCloudTrailEventsForwardRuleArn", "EcrPublicCloudTrailEventsRuleArn")):
        spoke_pattern = spoke_events.describe_rule(Name=rule_name(spoke_stack.outputs[spoke_key]))["EventPattern"]
        central_pattern = central_events.describe_rule(Name=rule_name(central_stack.outputs[central_key]))["EventPattern"]
        assert json.loads(spoke_pattern) == json.loads(central_pattern)


def test_spoke_events_reach_the_central_queue(aws: ClientFactory, spoke_stack: Stack, central_stack: Stack) -> None:
    forwarded, dropped = secrets.token_hex(6), secrets.token_hex(6)
    put_events(aws, spoke_stack.account, [image_action(forwarded), image_action(dropped, "ECR Something Else")])
    received = drain(aws, central_stack, {forwarded})
    assert forwarded in received, "a spoke's ECR Image Action did not reach the central queue"
    assert dropped not in received
    body = received[forwarded]
    assert body["source"] == "aws.ecr" and body["detail-type"] == "ECR Image Action"
    # The worker picks the spoke's reader role by this account id.
    assert body["account"] == spoke_stack.account
    assert body["detail"]["repository-name"] == f"team/app-{forwarded}"


def test_second_region_of_an_account_skips_the_reader_role(aws: ClientFactory, central_stack: Stack,
                                                            central_account: str) -> None:
    # IAM is global: a second spoke stack in the same account (another region) must not try
    # to create the named role again. A fresh account stands in for "the same account".
    account = new_account_id()
    stack = deploy(aws, account, "spoke.yaml", {
        "CentralAccountId": central_account,
        "CentralTaskRoleArn": central_stack.outputs["TaskRoleArn"],
        "CreateReaderRole": "false",
    })
    try:
        assert "ReaderRoleArn" not in stack.outputs
        roles = {r["RoleName"] for r in aws("iam", account).list_roles()["Roles"]}
        assert "ecr-audit-reader" not in roles
        assert stack.outputs["EcrEventsForwardRuleArn"]
    finally:
        delete(aws, stack)
