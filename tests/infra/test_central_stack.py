"""central.yaml deployed into the emulator: the routing really routes.

What the emulator (moto 5.2.x CloudFormation) does NOT do with this template, so what
these tests cannot prove:
- `AWS::SQS::QueuePolicy` is ignored (the queue and DLQ policies are never created, and
  moto's SQS targets do not check permissions anyway);
- `AWS::Events::EventBusPolicy` is ignored (moto forwards cross-account events without
  any bus policy);
- `AWS::CloudWatch::Alarm` is ignored (the DLQ alarm does not exist in the emulator);
- the `Rules` section (the ServiceNeedsItsInputs assertions) is not evaluated;
- `Ref` of an `AWS::Events::EventBus` yields moto's Python object instead of the bus name,
  so the AlertBusName output is garbage there (AlertBusArn is right);
- `!Ref AWS::NoValue` inside a list stays behind as a null entry (IAM statements, the
  container environment), where CloudFormation removes it; in a role's `Policies` list
  it even fails the stack, which is why the alert-bus permission is a separate
  `AWS::IAM::Policy`;
- ECS, EC2 and Logs resources keep only part of their properties (see
  test_full_stack_with_the_service) and nothing runs;
- inline IAM policies come back as the Python repr of the document, not JSON;
- IAM is not enforced: nothing here proves that the roles' permissions suffice or that
  the `aws:SourceArn` conditions match real rule ARNs;
- rules deliver synchronously and disabled rules still deliver.
"""
from __future__ import annotations

import json
from typing import Any

from infra_support import (
    REGION,
    ClientFactory,
    Stack,
    as_list,
    cloudtrail_call,
    signer_call,
    delete,
    deploy,
    drain,
    image_action,
    inspector_finding,
    inspector_scan,
    new_account_id,
    nonce,
    policy_document,
    put_events,
    statements,
    unrelated,
)


# ------------------------------------------------------------------ tests
def test_stack_outputs(central_stack: Stack, central_account: str) -> None:
    outputs = central_stack.outputs
    for key in ("QueueUrl", "QueueArn", "DeadLetterQueueUrl", "DeadLetterQueueArn", "EcrEventsRuleArn",
                "InspectorEventsRuleArn", "CloudTrailEventsRuleArn", "TaskRoleArn", "AlertBusArn",
                "DefaultEventBusArn"):
        assert outputs.get(key), f"missing output {key}: {outputs}"
    assert outputs["QueueArn"].startswith(f"arn:aws:sqs:{REGION}:{central_account}:")
    assert outputs["DefaultEventBusArn"] == f"arn:aws:events:{REGION}:{central_account}:event-bus/default"
    # DeployService=false: no service outputs.
    assert not {"ClusterName", "ServiceName", "TaskDefinitionArn"} & outputs.keys()


def test_queues_are_configured(aws: ClientFactory, central_stack: Stack) -> None:
    sqs = aws("sqs", central_stack.account)
    queue = sqs.get_queue_attributes(QueueUrl=central_stack.outputs["QueueUrl"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=central_stack.outputs["DeadLetterQueueUrl"], AttributeNames=["All"])["Attributes"]
    assert queue["MaximumMessageSize"] == "1048576"
    assert queue["VisibilityTimeout"] == "60"
    assert queue["SqsManagedSseEnabled"] == "true"
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == central_stack.outputs["DeadLetterQueueArn"]
    assert int(redrive["maxReceiveCount"]) == 5
    assert dlq["MessageRetentionPeriod"] == "1209600"
    assert int(dlq["MessageRetentionPeriod"]) > int(queue["MessageRetentionPeriod"])
    assert dlq["SqsManagedSseEnabled"] == "true"


def test_rules_target_the_queue_on_the_default_bus(aws: ClientFactory, central_stack: Stack) -> None:
    events = aws("events", central_stack.account)
    for key in ("EcrEventsRuleArn", "InspectorEventsRuleArn", "CloudTrailEventsRuleArn",
                "SignerRevocationEventsRuleArn", "EcrPublicCloudTrailEventsRuleArn"):
        name = central_stack.outputs[key].rsplit("/", 1)[1]
        rule = events.describe_rule(Name=name, EventBusName="default")
        assert rule["State"] == "ENABLED"
        pattern = json.loads(rule["EventPattern"])
        assert "account" not in pattern, "forwarded spoke events must match too"
        targets = events.list_targets_by_rule(Rule=name, EventBusName="default")["Targets"]
        assert [t["Arn"] for t in targets] == [central_stack.outputs["QueueArn"]]
        # SQS targets take no RoleArn; failed deliveries go to the DLQ.
        assert "RoleArn" not in targets[0]
        assert targets[0]["DeadLetterConfig"]["Arn"] == central_stack.outputs["DeadLetterQueueArn"]


def test_routing(aws: ClientFactory, central_stack: Stack, central_account: str) -> None:
    ecr_arn = f"arn:aws:ecr:{REGION}:{central_account}:repository/team/app"
    wanted: dict[str, dict[str, Any]] = {}
    unwanted: dict[str, dict[str, Any]] = {}

    for detail_type in ("ECR Image Action", "ECR Image Scan", "ECR Referrer Action", "ECR Scan Resource Change",
                        "ECR Replication Action", "ECR Pull Through Cache Action"):
        wanted[nonce()] = {"make": lambda n, dt=detail_type: image_action(n, dt), "what": detail_type}
    wanted[nonce()] = {"make": lambda n: cloudtrail_call(n, central_account, "PutImageTagMutability"),
                       "what": "CloudTrail PutImageTagMutability"}
    wanted[nonce()] = {"make": lambda n: cloudtrail_call(n, central_account, "PutImage"), "what": "CloudTrail PutImage"}
    wanted[nonce()] = {"make": lambda n: cloudtrail_call(n, central_account, "PolicyExecutionEvent",
                                                         detail_type="AWS Service Event via CloudTrail"),
                       "what": "CloudTrail lifecycle expiry"}
    wanted[nonce()] = {"make": lambda n: inspector_scan(n, ecr_arn), "what": "Inspector2 Scan of an ECR image"}
    for name in ("RevokeSignature", "RevokeSigningProfile"):
        wanted[nonce()] = {"make": lambda n, c=name: signer_call(n, central_account, c), "what": f"Signer {name}"}
    unwanted[nonce()] = {"make": lambda n: signer_call(n, central_account, "RevokeSignature", error_code="AccessDeniedException"),
                         "what": "failed Signer revocation"}
    unwanted[nonce()] = {"make": lambda n: signer_call(n, central_account, "StartSigningJob"),
                         "what": "Signer call that revokes nothing"}

    # A denied attempt to weaken a control is evidence: routed like a successful call.
    wanted[nonce()] = {"make": lambda n: cloudtrail_call(n, central_account, "PutImageTagMutability",
                                                         error_code="AccessDenied"),
                       "what": "denied CloudTrail PutImageTagMutability"}
    unwanted[nonce()] = {"make": lambda n: cloudtrail_call(n, central_account, "DescribeRepositories"),
                         "what": "read-only CloudTrail call"}
    unwanted[nonce()] = {"make": lambda n: cloudtrail_call(n, central_account, "TagResource"),
                         "what": "CloudTrail call that changes no posture"}
    unwanted[nonce()] = {"make": lambda n: inspector_scan(n, "not-an-ecr-arn"), "what": "Inspector2 Scan without a repository ARN"}
    unwanted[nonce()] = {"make": lambda n: image_action(n, "ECR Something Else"), "what": "unknown ECR detail-type"}
    unwanted[nonce()] = {"make": unrelated, "what": "EC2 state change"}

    entries = [case["make"](n) for n, case in {**wanted, **unwanted}.items()]
    put_events(aws, central_account, entries)
    received = drain(aws, central_stack, set(wanted))

    missing = [case["what"] for n, case in wanted.items() if n not in received]
    leaked = [case["what"] for n, case in unwanted.items() if n in received]
    assert not missing, f"did not arrive: {missing}"
    assert not leaked, f"arrived but must not: {leaked}"

    # The body is the bare EventBridge envelope (no wrapper), as the worker expects.
    body = next(iter(received.values()))
    assert {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"} <= body.keys()


def test_only_inspector_findings_about_ecr_images_arrive(aws: ClientFactory, central_stack: Stack, central_account: str) -> None:
    # The pattern looks inside `detail.resources[]` (an array of objects), which the
    # emulator matches as EventBridge does (moto alone did not; see docs/EMULATOR.md).
    ecr_image, ec2_instance = nonce(), nonce()
    put_events(aws, central_account, [inspector_finding(ecr_image, central_account, "AWS_ECR_CONTAINER_IMAGE"),
                                      inspector_finding(ec2_instance, central_account, "AWS_EC2_INSTANCE")])
    received = drain(aws, central_stack, {ecr_image})
    assert ecr_image in received
    assert ec2_instance not in received


def test_task_role_is_scoped_to_this_stack(aws: ClientFactory, central_stack: Stack) -> None:
    iam = aws("iam", central_stack.account)
    role_name = central_stack.outputs["TaskRoleArn"].rsplit("/", 1)[1]
    role = iam.get_role(RoleName=role_name)["Role"]
    trust = policy_document(role["AssumeRolePolicyDocument"])
    assert [s["Principal"] for s in statements(trust)] == [{"Service": "ecs-tasks.amazonaws.com"}]

    by_action: dict[str, list[str]] = {}
    for policy_name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        document = policy_document(iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"])
        for statement in statements(document):
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                by_action.setdefault(action, []).extend(as_list(statement["Resource"]))

    outputs = central_stack.outputs
    assert by_action["sqs:ReceiveMessage"] == [outputs["QueueArn"]]
    assert by_action["sqs:DeleteMessage"] == [outputs["QueueArn"]]
    assert by_action["sqs:ChangeMessageVisibility"] == [outputs["QueueArn"]]
    assert sorted(by_action["sqs:GetQueueAttributes"]) == sorted([outputs["QueueArn"], outputs["DeadLetterQueueArn"]])
    assert by_action["sqs:GetQueueUrl"] == [outputs["DeadLetterQueueArn"]]
    assert by_action["events:PutEvents"] == [outputs["AlertBusArn"]]
    assert by_action["sts:AssumeRole"] == ["arn:aws:iam::*:role/ecr-audit-reader"]
    assert by_action["ecr:DescribeImages"] == [f"arn:aws:ecr:*:{central_stack.account}:repository/*"]
    # Nothing that writes: every action is a read, a queue consume or the alert put.
    verbs = ("Put", "Delete", "Create", "Set", "Update", "Tag", "Untag", "Start", "BatchDelete", "Upload", "Complete")
    writes = {a for a in by_action if a.split(":")[1].startswith(verbs)}
    assert writes <= {"sqs:DeleteMessage", "events:PutEvents"}, writes


def test_routing_only_stack_without_alert_bus(aws: ClientFactory) -> None:
    # Deployed in its own account: two central stacks in one account would both route
    # every event, which is not a layout anyone should run.
    account = new_account_id()
    stack = deploy(aws, account, "central.yaml", {"DeployService": "false", "MaxReceiveCount": "3"})
    try:
        assert "AlertBusArn" not in stack.outputs and "AlertBusName" not in stack.outputs
        queue = aws("sqs", account).get_queue_attributes(QueueUrl=stack.outputs["QueueUrl"], AttributeNames=["RedrivePolicy"])
        assert int(json.loads(queue["Attributes"]["RedrivePolicy"])["maxReceiveCount"]) == 3
        iam = aws("iam", account)
        role_name = stack.outputs["TaskRoleArn"].rsplit("/", 1)[1]
        assert "put-alerts" not in iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    finally:
        delete(aws, stack)


def test_full_stack_with_the_service(aws: ClientFactory) -> None:
    """DeployService=true instantiates in the emulator and wires the task definition.

    moto creates ECS, EC2 and Logs resources without running anything, so this proves the
    references between the conditional resources, not that the service starts. Its
    CloudFormation keeps only part of them: a task definition keeps its family, memory and
    container definitions (no roles, network mode, compatibilities or CPU); a service its
    cluster, task definition and desired count (no network configuration, launch type or
    deployment settings); a security group its ingress rules (no egress rules).
    """
    account = new_account_id()
    ec2 = aws("ec2", account)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    secret_arn = f"arn:aws:secretsmanager:{REGION}:{account}:secret:ecr-audit-db-AbCdEf"
    stack = deploy(aws, account, "central.yaml", {
        "DeployService": "true",
        "ContainerImage": f"{account}.dkr.ecr.{REGION}.amazonaws.com/ecr-audit:test",
        "DatabaseSecretArn": secret_arn,
        "VpcId": vpc,
        "SubnetIds": ",".join(subnets),
        "PrometheusCidr": "10.42.0.0/16",
        "SigningGrace": "10m",
        "Regions": "eu-west-1,eu-central-1,us-east-1",
        "AccountDiscovery": "true",
        "OrganizationUnitIds": "ou-ab12-11111111,ou-ab12-22222222",
        "ExternalId": "ecr-audit-0a1b2c",
        "FailingGrace": "72h",
    })
    try:
        for key in ("ClusterName", "ServiceName", "TaskDefinitionArn", "ServiceSecurityGroupId"):
            assert stack.outputs.get(key), key
        ecs = aws("ecs", account)
        task = ecs.describe_task_definition(taskDefinition=stack.outputs["TaskDefinitionArn"])["taskDefinition"]
        assert task["family"] == f"{stack.name}-worker"
        container = task["containerDefinitions"][0]
        assert container["name"] == "ecr-audit"
        assert container["command"] == ["worker"]
        assert container["portMappings"][0]["containerPort"] == 9464
        assert container["readonlyRootFilesystem"] is True
        environment = {e["name"]: e["value"] for e in container["environment"] if e}  # moto keeps NoValue as null
        assert environment["ECR_AUDIT_QUEUE_URL"] == stack.outputs["QueueUrl"]
        assert environment["ECR_AUDIT_HTTP_ADDR"] == "0.0.0.0:9464"
        assert environment["ECR_AUDIT_LOG_FORMAT"] == "json"
        assert environment["AWS_REGION"] == REGION
        assert environment["ECR_AUDIT_SIGNING_GRACE"] == "10m"
        # The audited estate: regions, Organizations discovery, the spoke role and the external id.
        assert environment["ECR_AUDIT_REGIONS"] == "eu-west-1,eu-central-1,us-east-1"
        assert environment["ECR_AUDIT_ORGANIZATION"] == "true"
        assert environment["ECR_AUDIT_ORGANIZATION_UNITS"] == "ou-ab12-11111111,ou-ab12-22222222"
        assert environment["ECR_AUDIT_ROLE_NAME_PATTERN"] == "arn:aws:iam::{account}:role/ecr-audit-reader"
        assert environment["ECR_AUDIT_EXTERNAL_ID"] == "ecr-audit-0a1b2c"
        assert environment["ECR_AUDIT_FAILING_GRACE"] == "72h"
        assert "ECR_AUDIT_ORGANIZATION_ROLE" not in environment
        assert "ECR_AUDIT_ALERT_BUS" not in environment and "ECR_AUDIT_RECONCILE_INTERVAL" not in environment
        assert container["secrets"] == [{"name": "DATABASE_URL", "valueFrom": secret_arn}]
        assert container["logConfiguration"]["options"]["awslogs-group"] == f"/ecs/{stack.name}/worker"

        service = ecs.describe_services(cluster=stack.outputs["ClusterName"], services=[stack.outputs["ServiceName"]])["services"][0]
        assert service["desiredCount"] == 2
        assert service["taskDefinition"].endswith(f"{stack.name}-worker:1")

        group = ec2.describe_security_groups(GroupIds=[stack.outputs["ServiceSecurityGroupId"]])["SecurityGroups"][0]
        assert [(p["FromPort"], p["IpRanges"][0]["CidrIp"]) for p in group["IpPermissions"]] == [(9464, "10.42.0.0/16")]
    finally:
        delete(aws, stack)
        for subnet in subnets:
            ec2.delete_subnet(SubnetId=subnet)
        ec2.delete_vpc(VpcId=vpc)
