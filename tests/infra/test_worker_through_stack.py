"""central.yaml feeding the real ecr-audit worker: ECR calls -> the stack's rules -> its queue -> the worker.

The test works in an account of its own (STS AssumeRole into a fresh 12-digit account, as
ECS gives a task its role) so it shares nothing with other users of the emulator:

1. deploys central.yaml (routing only, DeployService=false) with CreateStack and reads the
   queue URL from the stack's outputs;
2. creates a fresh Postgres database, runs `ecr-audit migrate`, and starts
   `ecr-audit worker` on that queue with the credentials of the stack's own TaskRole;
3. makes real ECR calls as named people: repositories, a lifecycle policy, enhanced
   scanning, managed signing, pushes, and a tag-mutability regression;
4. reads the outcome with `ecr-audit posture --format json` and `images --format json`.

Each rule of the stack is proven by something only its events carry: `pushed_by` comes
only from CloudTrail `PutImage` (CloudTrailEventsRule), the signature from the signature's
`ECR Image Action` (EcrEventsRule), the scan result from `Inspector2 Scan`
(InspectorEventsRule, whose pattern wants an ECR repository ARN); and the stack's queue is
drained while its DLQ stays empty.

What the emulator ignores here, so what this test cannot prove (see also
test_central_stack.py):
- `AWS::SQS::QueuePolicy`: the queue and DLQ policies are not created, and EventBridge
  delivers to SQS without any permission check, so the `aws:SourceArn` conditions are not
  exercised;
- IAM is not enforced: the worker acts with the TaskRole's credentials, but nothing checks
  that the role's read-only permissions suffice;
- `AWS::CloudWatch::Alarm` (the DLQ alarm) does not exist, and the rules' `DeadLetterConfig`
  is never used (no delivery ever fails);
- the `Rules` section of the template is not evaluated;
- events arrive exactly once, in order, at once (AWS: at least once, any order, best effort).
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError
from infra_support import REGION, Stack, delete, deploy, new_account_id

ROOT = Path(__file__).resolve().parents[2]
PEOPLE = {
    "alice": "arn:aws:iam::{account}:user/alice",
    "ci": "arn:aws:sts::{account}:assumed-role/github-actions/run-42",
    "bob": "arn:aws:iam::{account}:user/bob",
    "mallory": "arn:aws:sts::{account}:assumed-role/AdminSSO/mallory",
}
LIFECYCLE = json.dumps({"rules": [{"rulePriority": 1, "selection": {
    "tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
    "action": {"type": "expire"}}]})
DEADLINE = 90.0


# ------------------------------------------------------------------ plumbing
def binary() -> Path:
    path = Path(os.environ.get("ECR_AUDIT_BIN") or ROOT / "target" / "debug" / "ecr-audit")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no ecr-audit binary at {path}: `cargo build --bin ecr-audit`, or set ECR_AUDIT_BIN", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Session:
    """boto3 clients signed with one set of STS credentials, i.e. acting in their account."""

    def __init__(self, endpoint: str, credentials: dict[str, str]):
        self.endpoint, self.credentials = endpoint, credentials

    def client(self, service: str, caller: str | None = None) -> Any:
        made = boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.credentials["AccessKeyId"],
            aws_secret_access_key=self.credentials["SecretAccessKey"],
            aws_session_token=self.credentials["SessionToken"],
            config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 3}),
        )
        if caller:
            def as_caller(request: Any, **_: Any) -> None:
                request.headers["x-emulator-caller-arn"] = caller
            made.meta.events.register("before-sign.*.*", as_caller)
        return made

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.credentials["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": self.credentials["SecretAccessKey"],
                "AWS_SESSION_TOKEN": self.credentials["SessionToken"]}


def assume(endpoint: str, role_arn: str, session_name: str) -> Session:
    sts = boto3.client("sts", endpoint_url=endpoint, region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    return Session(endpoint, sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"])


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh, empty database on the services' Postgres; dropped afterwards."""
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        pytest.fail('DATABASE_URL is not set: run `eval "$(scripts/services up)"` first', pytrace=False)
    name = f"infra_{secrets.token_hex(4)}"
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", admin_url, "-c", f'CREATE DATABASE "{name}"'], check=True)
    parts = urllib.parse.urlsplit(admin_url)
    yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    subprocess.run(["psql", "-X", "-q", admin_url, "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=False)


@pytest.fixture(scope="module")
def account() -> str:
    return new_account_id()


@pytest.fixture(scope="module")
def deployer(account: str) -> Session:
    return assume(os.environ["AWS_ENDPOINT_URL"], f"arn:aws:iam::{account}:role/deployer", "deploy")


@pytest.fixture(scope="module")
def stack(deployer: Session, account: str) -> Iterator[Stack]:
    def aws(service: str, _account: str) -> Any:
        return deployer.client(service)

    deployed = deploy(aws, account, "central.yaml", {"DeployService": "false"})
    yield deployed
    delete(aws, deployed)


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, env: dict[str, str], http: str):
        self.process, self.log, self.env, self.http = process, log, env, http

    def run(self, *args: str) -> Any:
        done = subprocess.run([str(binary()), *args], env=self.env, capture_output=True, timeout=60)
        assert done.returncode == 0, f"ecr-audit {' '.join(args)}: {done.stderr.decode()[-2000:]}"
        return json.loads(done.stdout)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def emulator_trust(endpoint: str, directory: Path) -> dict[str, str]:
    """What the worker verifies managed signatures with: the emulator's Signer roots (not
    AWS's, so the default policy would call them untrusted) and a strict policy for any
    identity, in Notation's layout."""
    store = directory / "truststore" / "x509" / "signingAuthority" / "aws-signer-ts"
    store.mkdir(parents=True)
    with urllib.request.urlopen(f"{endpoint}/_emulator/signer/roots", timeout=10) as response:
        (store / "emulator-signer-roots.pem").write_bytes(response.read())
    policy = directory / "trustpolicy.json"
    policy.write_text(json.dumps({"version": "1.0", "trustPolicies": [{
        "name": "emulator-signer", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": ["signingAuthority:aws-signer-ts"], "trustedIdentities": ["*"]}]}))
    return {"ECR_AUDIT_TRUST_POLICY": str(policy), "ECR_AUDIT_TRUST_STORE": str(directory / "truststore")}


@pytest.fixture(scope="module")
def worker(stack: Stack, deployer: Session, database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    # The worker acts as the stack's TaskRole, as the ECS task would.
    task_role = assume(deployer.endpoint, stack.outputs["TaskRoleArn"], "ecr-audit-task")
    http = f"127.0.0.1:{free_port()}"
    trust = emulator_trust(deployer.endpoint, tmp_path_factory.mktemp("trust"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION", "ECR_AUDIT_"))},
           **task_role.env(),
           "DATABASE_URL": database,
           "ECR_AUDIT_QUEUE_URL": stack.outputs["QueueUrl"],
           "ECR_AUDIT_HTTP_ADDR": http,
           "ECR_AUDIT_LOG_FORMAT": "json",
           "ECR_AUDIT_SIGNING_GRACE": "2s",
           "ECR_AUDIT_RECHECK_POLL": "1s",
           **trust}
    migrated = subprocess.run([str(binary()), "migrate"], env=env, capture_output=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr.decode()[-2000:]

    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen([str(binary()), "worker"], env=env, stdout=output, stderr=subprocess.STDOUT)
    running = Worker(process, log, env, http)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"the worker exited with {process.returncode}:\n{running.tail()}"
            try:
                urllib.request.urlopen(f"http://{http}/readyz", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"the worker was not ready within 30 s:\n{running.tail()}"
                time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def eventually(probe: Callable[[], Any], check: Callable[[Any], None], worker: Worker) -> Any:
    """Re-runs `probe` until `check` passes (or DEADLINE), then returns its value."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = probe()
        try:
            check(value)
            return value
        except AssertionError as unmet:
            if time.monotonic() > deadline:
                raise AssertionError(f"{unmet}\n--- worker log (tail) ---\n{worker.tail()}") from unmet
        time.sleep(0.5)


def notation_profile(session: Session) -> str:
    return session.client("signer").put_signing_profile(
        profileName=f"release_{secrets.token_hex(3)}", platformId="Notation-OCI-SHA384-ECDSA")["arn"]


def manifest(seed: str) -> str:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 7,
                   "digest": "sha256:" + seed.encode().hex().ljust(64, "0")[:64]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 100,
                    "digest": "sha256:" + "ab" * 32}],
    })


# ------------------------------------------------------------------ the test
def test_ecr_calls_reach_the_worker_through_the_stack(worker: Worker, stack: Stack, deployer: Session, account: str) -> None:
    people = {name: arn.format(account=account) for name, arn in PEOPLE.items()}
    as_ = {name: deployer.client("ecr", caller=arn) for name, arn in people.items()}
    key = deployer.client("kms").create_key(Description="ecr images")["KeyMetadata"]["Arn"]
    endpoint = deployer.endpoint
    scan_result = urllib.request.Request(
        f"{endpoint}/_emulator/scan-results", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"account": account, "repositoryName": "team/web", "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 2}}).encode())
    urllib.request.urlopen(scan_result, timeout=10).close()

    as_["alice"].put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "team/*", "filterType": "WILDCARD"}]}])
    as_["alice"].put_signing_configuration(signingConfiguration={"rules": [
        {"signingProfileArn": notation_profile(deployer), "repositoryFilters": [{"filter": "team/api", "filterType": "WILDCARD_MATCH"}]}]})
    as_["alice"].create_repository(repositoryName="team/api", imageTagMutability="IMMUTABLE",
                                   encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key})
    as_["alice"].put_lifecycle_policy(repositoryName="team/api", lifecyclePolicyText=LIFECYCLE)
    as_["bob"].create_repository(repositoryName="team/web")

    api = as_["ci"].put_image(repositoryName="team/api", imageManifest=manifest("api-1"), imageTag="1.0.0")["image"]["imageId"]["imageDigest"]
    web = as_["bob"].put_image(repositoryName="team/web", imageManifest=manifest("web-1"), imageTag="latest")["image"]["imageId"]["imageDigest"]
    # The regression: a person makes the production repository's tags mutable.
    as_["mallory"].put_image_tag_mutability(repositoryName="team/api", imageTagMutability="MUTABLE")
    # A failed call: routed by the stack's rule and recorded as failed_api_call evidence.
    with pytest.raises(ClientError, match="RepositoryNotFoundException"):
        as_["mallory"].delete_repository(repositoryName="team/gone")

    def images_check(rows: list[dict[str, Any]]) -> None:
        by_digest = {row["digest"]: row for row in rows}
        assert api in by_digest and web in by_digest, f"images so far: {sorted(by_digest)}"
        api_row, web_row = by_digest[api], by_digest[web]
        assert (api_row["account"], api_row["repository"], api_row["tags"]) == (account, "team/api", ["1.0.0"])
        assert api_row["pushed_by"] == people["ci"], api_row
        assert web_row["pushed_by"] == people["bob"], web_row
        assert api_row["signature"]["status"] == "SIGNED", api_row["signature"]
        assert web_row["signature"]["status"] == "UNSIGNED", web_row["signature"]
        assert api_row["scan"]["status"] == "SCANNED", api_row["scan"]
        assert (web_row["scan"]["status"], web_row["scan"]["critical"], web_row["scan"]["high"]) == ("SCANNED", 1, 2), web_row["scan"]
        signatures = [row for row in rows if row["artifact_of"] == api]
        assert [row["artifact_kind"] for row in signatures] == ["notation_signature"], signatures

    images = eventually(lambda: worker.run("images", "--format", "json"), images_check, worker)
    assert {row["repository"] for row in images} == {"team/api", "team/web"}

    def posture_check(rows: list[dict[str, Any]]) -> None:
        by_name = {row["repository"]: row["controls"] for row in rows}
        assert set(by_name) == {"team/api", "team/web"}, by_name
        # Security Hub's four controls; other checks of the binary are not this test's business.
        statuses = {name: {control: controls[control]["status"] for control in ("ECR.1", "ECR.2", "ECR.3", "ECR.5") if control in controls}
                    for name, controls in by_name.items()}
        assert statuses["team/api"] == {"ECR.1": "PASS", "ECR.2": "FAIL", "ECR.3": "PASS", "ECR.5": "PASS"}, by_name["team/api"]
        assert statuses["team/web"] == {"ECR.1": "PASS", "ECR.2": "FAIL", "ECR.3": "FAIL", "ECR.5": "FAIL"}, by_name["team/web"]

    posture = eventually(lambda: worker.run("posture", "--format", "json"), posture_check, worker)
    assert {row["account"] for row in posture} == {account}

    # Everything went through the stack's queue, which is now empty, and nothing was dead-lettered.
    sqs = deployer.client("sqs")
    for url in (stack.outputs["QueueUrl"], stack.outputs["DeadLetterQueueUrl"]):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}, (url, attributes)
    with urllib.request.urlopen(f"{endpoint}/_emulator/requests?account={account}", timeout=10) as answer:
        calls = json.load(answer)
    assert calls.get("sqs.ReceiveMessage", 0) > 0
    assert calls.get("sqs.DeleteMessageBatch", 0) + calls.get("sqs.DeleteMessage", 0) > 0
    assert worker.process.poll() is None, worker.tail()
