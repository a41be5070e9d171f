"""infra/cloudformation/ecs-deploy-hook.yaml and its handler (infra/ecs-deploy-hook/handler.py).

Static: the function's role grants exactly the AWS calls the handler makes. Deployed into the
emulator: the stack creates the function from the packaged zip with the settings the handler
reads. The handler deciding against the real worker's verdict API is in
tests/ops/test_ecs_deploy_hook.py. moto runs no Lambda code here and enforces no IAM.
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from infra_support import ClientFactory, Stack, delete, deploy, load_template, new_account_id, statements

ROOT = Path(__file__).resolve().parents[2]
HANDLER = ROOT / "infra" / "ecs-deploy-hook" / "handler.py"
#: boto3 client name -> IAM service prefix.
PREFIX = {"ecs": "ecs", "secretsmanager": "secretsmanager"}


def calls_in_handler() -> set[str]:
    """`service:Operation` for every `boto3.client("service").operation(...)` in the handler."""
    tree = ast.parse(HANDLER.read_text())
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Attribute)
                and node.func.value.func.attr == "client"):
            service = node.func.value.args[0].value  # type: ignore[attr-defined]
            operation = "".join(part.title() for part in node.func.attr.split("_"))
            found.add(f"{PREFIX[service]}:{operation}")
    return found


def granted_to_function() -> set[str]:
    template = load_template("ecs-deploy-hook.yaml")
    resources = template["Resources"]
    documents = [p["PolicyDocument"] for p in resources["HookFunctionRole"]["Properties"]["Policies"]]
    documents.append(resources["HookTokenPolicy"]["Properties"]["PolicyDocument"])
    actions = set()
    for statement in (s for d in documents for s in statements(d)):
        listed = statement["Action"]
        actions.update(listed if isinstance(listed, list) else [listed])
    return actions


def test_the_function_may_make_exactly_the_calls_the_handler_makes() -> None:
    assert calls_in_handler() == {"ecs:DescribeServiceRevisions", "secretsmanager:GetSecretValue"}
    assert granted_to_function() == calls_in_handler()


def test_ecs_may_only_invoke_the_function() -> None:
    role = load_template("ecs-deploy-hook.yaml")["Resources"]["EcsInvokeRole"]["Properties"]
    [policy] = role["Policies"]
    [statement] = statements(policy["PolicyDocument"])
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == {"Fn::GetAtt": "HookFunction.Arn"} or statement["Resource"] == {"Fn::GetAtt": ["HookFunction", "Arn"]}


@pytest.fixture(scope="module")
def hook_stack(aws: ClientFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    account = new_account_id()
    archive = tmp_path_factory.mktemp("hook") / "hook.zip"
    subprocess.run([str(ROOT / "scripts" / "package-deploy-hook"), str(archive)], check=True, capture_output=True)
    s3, ec2 = aws("s3", account), aws("ec2", account)
    s3.create_bucket(Bucket=f"hook-code-{account}")
    s3.put_object(Bucket=f"hook-code-{account}", Key="ecr-audit/ecs-deploy-hook.zip", Body=archive.read_bytes())
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="hook", Description="hook", VpcId=vpc)["GroupId"]
    stack = deploy(aws, account, "ecs-deploy-hook.yaml", {
        "CodeS3Bucket": f"hook-code-{account}", "VerdictUrl": "http://ecr-audit.internal:9464",
        "SubnetIds": subnet, "SecurityGroupIds": group})
    yield stack
    delete(aws, stack)


def test_the_stack_creates_the_function_with_the_settings_the_handler_reads(aws: ClientFactory, hook_stack: Stack) -> None:
    function = aws("lambda", hook_stack.account).get_function(FunctionName=hook_stack.outputs["HookFunctionArn"])
    configuration = function["Configuration"]
    assert configuration["Handler"] == "handler.handler" and configuration["Runtime"].startswith("python3")
    variables = configuration["Environment"]["Variables"]
    read = set(re.findall(r"[\"'](ECR_AUDIT_[A-Z_]+)[\"']", HANDLER.read_text()))
    assert set(variables) <= read, f"the stack sets variables the handler never reads: {set(variables) - read}"
    assert variables["ECR_AUDIT_VERDICT_URL"] == "http://ecr-audit.internal:9464"
    assert variables["ECR_AUDIT_HOOK_ON_ERROR"] == "fail"
    assert hook_stack.outputs["EcsInvokeRoleArn"].startswith(f"arn:aws:iam::{hook_stack.account}:role/")
