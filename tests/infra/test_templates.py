"""Static checks of the templates that neither cfn-lint nor checkov make (no emulator needed).

They guard the decisions behind the templates: the two copies of the event patterns and
of the read-only permissions stay equal, "*" resources stay limited to actions that
support nothing narrower, the routing part deploys without ECS, and every lint
suppression is justified and listed in docs/DEPLOY.md.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from infra_support import TEMPLATES, as_list, load_template

DEPLOY_MD = Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md"

CENTRAL = load_template("central.yaml")
SPOKE = load_template("spoke.yaml")

ECR_DETAIL_TYPES = {
    "ECR Image Action", "ECR Image Scan", "ECR Referrer Action", "ECR Scan Resource Change",
    "ECR Replication Action", "ECR Pull Through Cache Action",
}
POSTURE_CALLS = {
    "CreateRepository", "DeleteRepository", "PutImageTagMutability", "PutLifecyclePolicy",
    "DeleteLifecyclePolicy", "SetRepositoryPolicy", "DeleteRepositoryPolicy", "PutRegistryPolicy",
    "DeleteRegistryPolicy", "PutImageScanningConfiguration", "PutRegistryScanningConfiguration",
    "PutSigningConfiguration", "DeleteSigningConfiguration", "CreatePullThroughCacheRule",
    "DeletePullThroughCacheRule", "CreateRepositoryCreationTemplate",
    "UpdateRepositoryCreationTemplate", "DeleteRepositoryCreationTemplate",
    "PutReplicationConfiguration", "PutAccountSetting", "UpdateImageStorageClass", "BatchDeleteImage", "PutImage",
    # Lifecycle expiry, delivered as "AWS Service Event via CloudTrail".
    "PolicyExecutionEvent",
}
# Actions that support no resource type (Service Authorization Reference), so "*" is the
# only possible Resource for them.
STAR_ONLY_ACTIONS = {
    "ecr:GetRegistryPolicy", "ecr:GetRegistryScanningConfiguration", "ecr:GetSigningConfiguration",
    "ecr:DescribePullThroughCacheRules", "ecr:DescribeRepositoryCreationTemplates", "ecr:GetAuthorizationToken",
    "inspector2:ListFindings", "inspector2:ListCoverage", "inspector2:ListFindingAggregations",
    "signer:ListSigningProfiles", "signer:GetRevocationStatus", "sts:GetCallerIdentity",
    "organizations:ListAccounts",
}
ROUTING_RESOURCES = {
    "DeadLetterQueue", "Queue", "QueuePolicy", "DeadLetterQueuePolicy", "EcrEventsRule", "InspectorEventsRule",
    "CloudTrailEventsRule", "SignerRevocationEventsRule", "EcrPublicCloudTrailEventsRule", "DeadLetterQueueAlarm",
    "TaskRole",
}
RULE_PAIRS = [
    ("EcrEventsRule", "EcrEventsForwardRule"),
    ("InspectorEventsRule", "InspectorEventsForwardRule"),
    ("CloudTrailEventsRule", "CloudTrailEventsForwardRule"),
    ("SignerRevocationEventsRule", "SignerRevocationEventsForwardRule"),
    ("EcrPublicCloudTrailEventsRule", "EcrPublicCloudTrailEventsForwardRule"),
]


def resources(template: dict[str, Any], kind: str | None = None) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if kind is None or r["Type"] == kind}


def policy_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(resource name, statement) for every identity-policy statement of the template."""
    found = []
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in properties.get("Policies", []) if isinstance(p, dict) and "PolicyDocument" in p]
        elif resource["Type"] == "AWS::IAM::Policy":
            documents = [properties["PolicyDocument"]]
        for document in documents:
            for statement in document["Statement"]:
                if "Fn::If" in statement:  # [condition, statement, AWS::NoValue]
                    statement = statement["Fn::If"][1]
                found.append((name, statement))
    return found


def read_only_actions(template: dict[str, Any], role: str, policy: str) -> set[str]:
    for entry in template["Resources"][role]["Properties"]["Policies"]:
        if entry.get("PolicyName") == policy:
            return {a for s in entry["PolicyDocument"]["Statement"] for a in as_list(s["Action"])}
    raise AssertionError(f"{role} has no policy {policy}")


def test_event_patterns_are_the_same_in_both_templates() -> None:
    for central_rule, spoke_rule in RULE_PAIRS:
        central = CENTRAL["Resources"][central_rule]["Properties"]["EventPattern"]
        spoke = SPOKE["Resources"][spoke_rule]["Properties"]["EventPattern"]
        assert central == spoke, f"{central_rule} and {spoke_rule} drifted apart"


def test_patterns_select_what_the_worker_needs() -> None:
    rules = CENTRAL["Resources"]
    ecr = rules["EcrEventsRule"]["Properties"]["EventPattern"]
    assert ecr["source"] == ["aws.ecr"] and set(ecr["detail-type"]) == ECR_DETAIL_TYPES

    cloudtrail = rules["CloudTrailEventsRule"]["Properties"]["EventPattern"]
    assert cloudtrail["source"] == ["aws.ecr"]
    assert "AWS API Call via CloudTrail" in cloudtrail["detail-type"]
    assert cloudtrail["detail"]["eventSource"] == ["ecr.amazonaws.com"]
    assert set(cloudtrail["detail"]["eventName"]) == POSTURE_CALLS
    # Failed calls are routed: a denied attempt to weaken a control is evidence.
    assert "errorCode" not in cloudtrail["detail"]

    signer = rules["SignerRevocationEventsRule"]["Properties"]["EventPattern"]
    assert signer == {
        "source": ["aws.signer"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {
            "eventSource": ["signer.amazonaws.com"],
            # The two calls src/parse/signer.rs turns into Change::SignerRevoked.
            "eventName": ["RevokeSignature", "RevokeSigningProfile"],
            "errorCode": [{"exists": False}],
        },
    }

    public = rules["EcrPublicCloudTrailEventsRule"]["Properties"]["EventPattern"]
    assert public == {
        "source": ["aws.ecr-public"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {
            "eventSource": ["ecr-public.amazonaws.com"],
            # The calls src/parse/public.rs turns into a re-read of one public repository (ECR.4).
            "eventName": ["CreateRepository", "DeleteRepository", "TagResource", "UntagResource"],
        },
    }

    inspector = rules["InspectorEventsRule"]["Properties"]["EventPattern"]
    assert inspector["source"] == ["aws.inspector2"]
    branches = {tuple(b["detail-type"]): b["detail"] for b in inspector["$or"]}
    assert branches[("Inspector2 Finding",)] == {"resources": {"type": ["AWS_ECR_CONTAINER_IMAGE"]}}
    assert "repository-name" in branches[("Inspector2 Scan",)]

    for template in (CENTRAL, SPOKE):
        for name, rule in resources(template, "AWS::Events::Rule").items():
            pattern = rule["Properties"]["EventPattern"]
            # Forwarded events keep their spoke's account id: a filter on it would drop them.
            assert "account" not in pattern, name
            assert rule["Properties"]["EventBusName"] == "default", name


PARSE_SOURCES = Path(__file__).resolve().parents[2] / "src" / "parse"


def test_every_routed_ecr_detail_type_and_ledger_call_is_evaluated_by_the_parser() -> None:
    """The ledger events (replication, pull-through sync, lifecycle expiry, BatchDeleteImage,
    DeleteRepository) are routed, and each routed ECR detail-type is one the parser turns into
    a change rather than "not evaluated by this version"."""
    parser = "\n".join(p.read_text() for p in PARSE_SOURCES.glob("*.rs") if not p.name.startswith("tests"))
    for detail_type in ECR_DETAIL_TYPES:
        assert f'("aws.ecr", "{detail_type}")' in parser, detail_type
    for template, rule in ((CENTRAL, "CloudTrailEventsRule"), (SPOKE, "CloudTrailEventsForwardRule")):
        pattern = template["Resources"][rule]["Properties"]["EventPattern"]
        assert "AWS Service Event via CloudTrail" in pattern["detail-type"], rule
        for call in ("BatchDeleteImage", "DeleteRepository", "PolicyExecutionEvent"):
            assert call in pattern["detail"]["eventName"], (rule, call)
            assert f'"{call}"' in parser, call
    assert '"AWS Service Event via CloudTrail"' in parser


def test_central_rules_target_the_queue_without_a_role() -> None:
    for name, rule in resources(CENTRAL, "AWS::Events::Rule").items():
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["Queue", "Arn"]}, name
        assert "RoleArn" not in target, f"{name}: SQS targets take no RoleArn"


def test_spoke_rules_forward_with_a_role() -> None:
    for name, rule in resources(SPOKE, "AWS::Events::Rule").items():
        (target,) = rule["Properties"]["Targets"]
        assert target["RoleArn"] == {"Fn::GetAtt": ["ForwarderRole", "Arn"]}, name
        assert "event-bus/default" in str(target["Arn"]), name


def test_queue_policy_admits_exactly_the_stack_rules() -> None:
    statement = CENTRAL["Resources"]["QueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    source_arns = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert sorted(source_arns, key=str) == sorted(
        [{"Fn::GetAtt": [name, "Arn"]} for name in resources(CENTRAL, "AWS::Events::Rule")], key=str
    )


def test_queues() -> None:
    queue = CENTRAL["Resources"]["Queue"]["Properties"]
    dlq = CENTRAL["Resources"]["DeadLetterQueue"]["Properties"]
    assert queue["MaximumMessageSize"] == 1048576 and dlq["MaximumMessageSize"] == 1048576
    assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] == 60
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600 > queue["MessageRetentionPeriod"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert CENTRAL["Parameters"]["MaxReceiveCount"]["Default"] == 5


def test_read_only_permissions_are_the_same_in_both_templates() -> None:
    central = read_only_actions(CENTRAL, "TaskRole", "read-ecr-posture") - {"sts:GetCallerIdentity"}
    spoke = read_only_actions(SPOKE, "ReaderRole", "read-ecr-posture")
    assert central == spoke
    assert all(a.split(":")[1].startswith(("Describe", "List", "Get", "BatchGet")) for a in spoke), spoke


@pytest.mark.parametrize("template", ["central.yaml", "spoke.yaml"])
def test_star_resources_only_where_iam_allows_nothing_narrower(template: str) -> None:
    for name, statement in policy_statements(load_template(template)):
        if statement["Effect"] != "Allow":
            continue
        if "*" in as_list(statement["Resource"]):
            extra = set(as_list(statement["Action"])) - STAR_ONLY_ACTIONS
            assert not extra, f"{name}/{statement.get('Sid')}: {extra} support resource-level permissions"
        assert not any("*" == a or a.endswith(":*") for a in as_list(statement["Action"])), (name, statement)


def test_routing_deploys_without_the_service() -> None:
    unconditional = {name for name, r in CENTRAL["Resources"].items() if "Condition" not in r}
    assert unconditional == ROUTING_RESOURCES
    ecs_like = {name for name, r in CENTRAL["Resources"].items()
                if r["Type"].split("::")[1] in {"ECS", "EC2", "Logs"} or name == "ExecutionRole"}
    # ServiceWithMigrateSecret is ServiceEnabled and a migrate secret (the owner's URL).
    assert all(CENTRAL["Resources"][name]["Condition"] in {"ServiceEnabled", "ServiceWithMigrateSecret"}
               for name in ecs_like)
    assert CENTRAL["Conditions"]["ServiceWithMigrateSecret"]["Fn::And"][0] == {"Condition": "ServiceEnabled"}


def test_outputs() -> None:
    outputs = CENTRAL["Outputs"]
    for key in ("QueueUrl", "QueueArn", "DeadLetterQueueUrl", "DeadLetterQueueArn", "EcrEventsRuleArn",
                "InspectorEventsRuleArn", "CloudTrailEventsRuleArn", "SignerRevocationEventsRuleArn", "TaskRoleArn",
                "AlertBusName", "AlertBusArn",
                "ClusterName", "ServiceName"):
        assert key in outputs, key


def _suppressions() -> list[tuple[str, str, str, str]]:
    """(template, resource, check id, justification) for every checkov and cfn-lint suppression."""
    found = []
    for path in sorted(TEMPLATES.glob("*.yaml")):
        text = path.read_text()
        for name, resource in load_template(path.name)["Resources"].items():
            metadata = resource.get("Metadata", {})
            for skip in metadata.get("checkov", {}).get("skip", []):
                found.append((path.name, name, skip["id"], skip.get("comment", "")))
            for check in metadata.get("cfn-lint", {}).get("config", {}).get("ignore_checks", []):
                # The justification of a cfn-lint suppression is the YAML comment above it.
                block = text[text.index(f"\n  {name}:\n"):]
                block = block[:block.index("ignore_checks")]
                comment = " ".join(line.strip(" #") for line in block.splitlines() if line.strip().startswith("#"))
                found.append((path.name, name, check, comment))
    return found


def test_every_suppression_is_justified_and_documented() -> None:
    documented = DEPLOY_MD.read_text() if DEPLOY_MD.exists() else ""
    suppressions = _suppressions()
    assert suppressions, "expected the SQS and log group suppressions"
    for template, resource, check, comment in suppressions:
        assert len(comment) > 40, f"{template}/{resource}: {check} needs a written justification"
        rows = [line for line in documented.splitlines() if line.startswith("|")]
        listed = any(
            re.search(rf"\b{re.escape(check)}\b", row) and re.search(rf"`{re.escape(resource)}`", row)
            and template in row
            for row in rows
        )
        assert listed, f"{template}/{resource}: {check} is not listed in a table row of docs/DEPLOY.md"


def _deny_statements(policy: str) -> list[dict[str, Any]]:
    document = CENTRAL["Resources"][policy]["Properties"]["PolicyDocument"]
    return [s for s in document["Statement"] if s["Effect"] == "Deny" and "sqs:SendMessage" in as_list(s["Action"])]


@pytest.mark.parametrize("policy,queue", [("QueuePolicy", "Queue"), ("DeadLetterQueuePolicy", "DeadLetterQueue")])
def test_queue_policies_deny_every_sender_but_the_stack_rules(policy: str, queue: str) -> None:
    """Issue 14 part 5: an explicit Deny of sqs:SendMessage for everyone else, on every queue."""
    properties = CENTRAL["Resources"][policy]["Properties"]
    assert properties["Queues"] == [{"Ref": queue}]
    (deny,) = _deny_statements(policy)
    assert deny["Principal"] == "*"
    assert deny["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
    rule_arns = sorted(([{"Fn::GetAtt": [name, "Arn"]} for name in resources(CENTRAL, "AWS::Events::Rule")]), key=str)
    condition_if = deny["Condition"]["Fn::If"]
    assert condition_if[0] == "HasRedriveRole"
    with_role, without_role = condition_if[1], condition_if[2]
    # Only the negated, non-IfExists form denies callers without an aws:SourceArn: every other
    # operator (ArnNotEqualsIfExists, ArnEquals, Null...) would leave them out of the Deny.
    assert set(without_role) == {"ArnNotEquals"}
    assert set(without_role["ArnNotEquals"]) == {"aws:SourceArn"}
    assert sorted(without_role["ArnNotEquals"]["aws:SourceArn"], key=str) == rule_arns
    assert set(with_role) == {"ArnNotEquals"}
    assert sorted(with_role["ArnNotEquals"]["aws:SourceArn"], key=str) == rule_arns
    assert with_role["ArnNotEquals"]["aws:PrincipalArn"] == {"Ref": "RedriveRoleArn"}
    # The Allow for EventBridge stays, for exactly the same rules.
    (allow,) = [s for s in properties["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert sorted(allow["Condition"]["ArnEquals"]["aws:SourceArn"], key=str) == rule_arns


def test_every_queue_has_a_policy_with_the_sender_deny() -> None:
    covered = {q["Ref"] for p in resources(CENTRAL, "AWS::SQS::QueuePolicy").values() for q in p["Properties"]["Queues"]}
    assert covered == set(resources(CENTRAL, "AWS::SQS::Queue"))
    for name in resources(CENTRAL, "AWS::SQS::QueuePolicy"):
        assert len(_deny_statements(name)) == 1, name
