"""The ECS deployment hook (infra/ecs-deploy-hook/handler.py) deciding against the real worker.

After the operators' scenario has filled the ledger (conftest.py), a second `ecr-audit worker`
on the same database serves verdicts under a strict deploy policy for cluster `prod` that
requires ECR.2 (tag immutability). ECS services in the emulator run an image of
`payments/api` (IMMUTABLE) and one of `legacy/tools` (MUTABLE); the handler is called as ECS
calls it, with the lifecycle payload, reads the service revision's images
(`DescribeServiceRevisions`, answered by the emulator from the service's task definition) and
asks the worker's `/v1/verdict` about each. The handler runs in this process (moto runs no
Lambda code), with the same boto3 and standard library it has in the Lambda runtime.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from ops_support import REGION, ROOT, eventually, free_port, http_text, psql, start_process

HANDLER = ROOT / "infra" / "ecs-deploy-hook" / "handler.py"
POLICY = {
    "requirements": {"controls": ["ECR.2"], "require_digest": True},
    "scopes": [{"name": "prod", "clusters": ["prod"], "mode": "strict"}],
    "default": {"mode": "audit"},
}


def load_handler() -> Any:
    spec = importlib.util.spec_from_file_location("ecs_deploy_hook", HANDLER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def verdicts(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A worker serving verdicts on the scenario's ledger (its own idle queue); its address and
    credentials in the scenario's account."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    sts = boto3.client("sts", endpoint_url=endpoint, region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    credentials = sts.assume_role(RoleArn=f"arn:aws:iam::{world.account}:role/ecr-audit-hook",
                                  RoleSessionName="hook")["Credentials"]
    workdir = tmp_path_factory.mktemp("verdicts")
    policy = workdir / "deploy-policy.json"
    policy.write_text(json.dumps(POLICY))
    queue = world.scenario.client("sqs").create_queue(QueueName="ecr-audit-hook-idle")["QueueUrl"]
    addr = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_AUDIT_"))}
    env.update({
        "DATABASE_URL": world.database_url, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"], "ECR_AUDIT_QUEUE_URL": queue,
        "ECR_AUDIT_HTTP_ADDR": addr, "ECR_AUDIT_DEPLOY_POLICY": str(policy),
        "ECR_AUDIT_RECONCILE_INTERVAL": "0s", "ECR_AUDIT_LOG_FORMAT": "json",
    })
    binary = os.environ.get("ECR_AUDIT_BIN") or str(ROOT / "target" / "debug" / "ecr-audit")
    worker = start_process("verdicts", [binary, "worker"], env, workdir / "worker.log")
    try:
        def serving() -> bool:
            assert worker.alive(), f"the verdict worker exited:\n{worker.tail()}"
            try:
                return bool(http_text(f"http://{addr}/healthz"))
            except OSError:
                return False

        eventually("the verdict worker serving", serving, timeout=30)
        yield addr, credentials
    finally:
        worker.stop()


def one_digest(world: Any, repository: str) -> str:
    rows = psql(world.database_url, "SELECT digest FROM images WHERE present AND artifact_of IS NULL "
                f"AND account = '{world.account}' AND repository = '{repository}' ORDER BY digest LIMIT 1")
    assert rows, f"the scenario pushed no image to {repository}"
    return rows[0]["digest"]


def deploy_service(ecs: Any, account: str, name: str, repository: str, digest: str) -> dict[str, str]:
    image = f"{account}.dkr.ecr.{REGION}.amazonaws.com/{repository}@{digest}"
    family = ecs.register_task_definition(family=name, containerDefinitions=[
        {"name": "app", "image": image, "memory": 256}])["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="prod", serviceName=name, taskDefinition=family, desiredCount=1)
    return {  # the lifecycle payload ECS sends (docs/ENFORCEMENT.md, "ECS")
        "serviceArn": f"arn:aws:ecs:{REGION}:{account}:service/prod/{name}",
        "targetServiceRevisionArn": f"arn:aws:ecs:{REGION}:{account}:service-revision/prod/{name}/7150235681298173429",
        "testTrafficWeights": {}, "productionTrafficWeights": {},
    }


def test_the_hook_fails_a_deployment_ecr_audit_denies_and_lets_a_compliant_one_go(
    world: Any, verdicts: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    addr, credentials = verdicts
    for name, value in (("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"]),
                        ("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"]),
                        ("AWS_SESSION_TOKEN", credentials["SessionToken"]), ("AWS_REGION", REGION),
                        ("AWS_DEFAULT_REGION", REGION), ("ECR_AUDIT_VERDICT_URL", f"http://{addr}")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ECR_AUDIT_TOKEN_SECRET_ARN", raising=False)
    ecs = boto3.client("ecs")
    ecs.create_cluster(clusterName="prod")
    compliant = deploy_service(ecs, world.account, "api", "payments/api", one_digest(world, "payments/api"))
    mutable = deploy_service(ecs, world.account, "tools", "legacy/tools", one_digest(world, "legacy/tools"))
    handler = load_handler()

    assert handler.handler(compliant) == {"hookStatus": "SUCCEEDED"}
    with caplog.at_level("ERROR"):
        assert handler.handler(mutable) == {"hookStatus": "FAILED"}
    denial = " ".join(r.getMessage() for r in caplog.records)
    assert "legacy/tools@sha256:" in denial and "ECR.2" in denial, denial

    # The API unreachable: ECS is asked to call again, then the deployment fails closed.
    monkeypatch.setenv("ECR_AUDIT_VERDICT_URL", f"http://127.0.0.1:{free_port()}")
    first = handler.handler(compliant)
    assert first["hookStatus"] == "IN_PROGRESS" and first["hookDetails"] == {"attempts": 1}, first
    second = handler.handler({**compliant, "hookDetails": first["hookDetails"]})
    assert second["hookStatus"] == "IN_PROGRESS", second
    assert handler.handler({**compliant, "hookDetails": second["hookDetails"]}) == {"hookStatus": "FAILED"}
    monkeypatch.setenv("ECR_AUDIT_HOOK_ON_ERROR", "succeed")
    assert handler.handler({**compliant, "hookDetails": second["hookDetails"]}) == {"hookStatus": "SUCCEEDED"}
