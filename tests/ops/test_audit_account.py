"""The first, read-only run against an account (`scripts/audit-account`), with the emulator
standing in for the account: an estate of its own is seeded through the ECR API, the script
runs with that account's credentials only, and the emulator's call counter proves that it
read and never wrote. The policy it tells the user to attach is the spoke reader role's.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from ops_support import REGION, ROOT, new_account_id
from scenario import manifest

POLICY = ROOT / "infra" / "iam" / "audit-account-read-only.json"
# Calls that need no IAM permission, or are authorized by another action (Service
# Authorization Reference; the same mapping as tests/infra/test_iam_matches_code.py).
NO_PERMISSION = {"sts:GetCallerIdentity"}
AUTHORIZED_BY = {"ecr:ListImageReferrers": "ecr:BatchGetImage"}
WRITE_VERB = re.compile(r"^(Put|Create|Delete|BatchDelete|Tag|Untag|Set|Start|Update|Upload|Initiate|Complete|Send|Revoke|Enable|Disable|Register|Deregister)")


def _policy_actions() -> set[str]:
    document = json.loads(POLICY.read_text())
    return {action for statement in document["Statement"] for action in statement["Action"]}


def _reader_role_actions() -> set[str]:
    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation short-form tags (!Ref, !Sub, …) as plain values: only actions matter here.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "infra" / "cloudformation" / "spoke.yaml").read_text(), Loader=Loader)
    actions: set[str] = set()
    for policy in template["Resources"]["ReaderRole"]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            listed = statement["Action"]
            actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_the_first_run_policy_is_the_reader_roles_read_only_set() -> None:
    actions = _policy_actions()
    assert actions == _reader_role_actions(), sorted(actions ^ _reader_role_actions())
    writes = sorted(a for a in actions if WRITE_VERB.match(a.split(":")[1]))
    assert writes == [], f"the first-run policy grants writes: {writes}"


def _calls(endpoint: str, account: str, method: str = "GET") -> dict[str, int]:
    request = urllib.request.Request(f"{endpoint}/_emulator/requests?account={account}", method=method)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


@pytest.fixture()
def account_estate() -> dict[str, Any]:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    account = new_account_id()
    base = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    credentials = boto3.client("sts", **base).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/first-run", RoleSessionName="first-run")["Credentials"]
    session = dict(aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
                   aws_session_token=credentials["SessionToken"])
    ecr = boto3.client("ecr", endpoint_url=endpoint, region_name=REGION, **session)
    ecr.create_repository(repositoryName="team/open", imageTagMutability="MUTABLE")
    ecr.create_repository(repositoryName="team/locked", imageTagMutability="IMMUTABLE",
                          imageScanningConfiguration={"scanOnPush": True})
    pushed = ecr.put_image(repositoryName="team/open", imageManifest=manifest("team/open", 1), imageTag="v1")
    _calls(endpoint, account, method="DELETE")
    return {"endpoint": endpoint, "account": account, "session": session,
            "digest": pushed["image"]["imageId"]["imageDigest"]}


def _run(env: dict[str, str], out: Path, *extra: str) -> str:
    done = subprocess.run([str(ROOT / "scripts" / "audit-account"), "--out", str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_first_run_reads_the_account_prints_the_findings_and_never_writes(account_estate: dict[str, Any], tmp_path: Path) -> None:
    binary = os.environ.get("ECR_AUDIT_BIN") or str(ROOT / "target" / "debug" / "ecr-audit")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ECR_AUDIT_", "DATABASE_URL"))}
    env.update({key.upper(): value for key, value in account_estate["session"].items()})
    env.update(AWS_ENDPOINT_URL=account_estate["endpoint"], AWS_REGION=REGION,
               ECR_AUDIT_BIN=binary, ECR_AUDIT_SIGNING_GRACE="0s", ECR_AUDIT_LOG_FORMAT="text",
               ECR_AUDIT_FIRST_RUN_DATABASE=f"first_run_{uuid.uuid4().hex[:12]}")

    first = _run(env, tmp_path, "--fresh")

    assert "reconciled 2 repositories and 1 images" in first
    open_row = next(line for line in first.splitlines() if " team/open " in line)
    assert re.search(r"team/open\s+FAIL\s+FAIL", open_row), open_row  # ECR.1 MANUAL, ECR.2 MUTABLE
    assert f"UNSIGNED   {account_estate['account']} {REGION} team/open@{account_estate['digest']} tags=v1" in first
    assert "every hash and link verified" in first
    export = tmp_path / "ecr-audit-ocsf.jsonl"
    findings = [json.loads(line) for line in export.read_text().splitlines()]
    assert any(f.get("class_uid") == 2003 for f in findings), "no OCSF Compliance Finding in the export"
    assert "infra/iam/audit-account-read-only.json" in first

    called = _calls(account_estate["endpoint"], account_estate["account"])
    actions = {"{}:{}".format(*key.split(".", 1)) for key in called}
    assert "ecr:DescribeRepositories" in actions and "ecr:DescribeImages" in actions
    writes = sorted(a for a in actions if WRITE_VERB.match(a.split(":")[1]))
    assert writes == [], f"the first run wrote to the account: {writes}"
    needed = {AUTHORIZED_BY.get(a, a) for a in actions} - NO_PERMISSION
    assert needed <= _policy_actions(), f"called but not in the policy: {sorted(needed - _policy_actions())}"

    second = _run(env, tmp_path)
    assert "0 change(s) recorded" in second, second
