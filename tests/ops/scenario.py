"""The operators' scenario: a small ECR estate driven through real API calls against the
emulator, in an AWS account of its own, while the real worker consumes the queue.

Everything a dashboard panel or an alert rule looks at is made to happen for real: signed,
unsigned, failed-signing and scanned images; repositories failing controls; a regression of
tag immutability by a person; a poison message; a message in the dead-letter queue; events
delivered twenty minutes late; throttling that outlasts the SDK's retries; and a change made
while the routing was cut, which only a reconcile sweep can notice.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ops_support import REGION, http_json

ClientFactory = Callable[..., Any]

LIFECYCLE = json.dumps({"rules": [{"rulePriority": 1, "description": "expire untagged", "selection": {
    "tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
    "action": {"type": "expire"}}]})

# name -> settings. Signing: "release" (active profile), "legacy" (revoked profile), None.
REPOSITORIES: dict[str, dict[str, Any]] = {
    "payments/api": {"mutability": "IMMUTABLE", "scan_on_push": True, "kms": "customer", "lifecycle": True, "signing": "release"},
    # The regression target: IMMUTABLE (ECR.2 PASS) until mallory makes it MUTABLE.
    "payments/web": {"mutability": "IMMUTABLE", "scan_on_push": True, "kms": "customer", "lifecycle": True, "signing": "release"},
    # Fails ECR.1, ECR.2, ECR.3 and ECR.5; nobody signs its images.
    "legacy/tools": {"mutability": "MUTABLE", "scan_on_push": False, "kms": None, "lifecycle": False, "signing": None},
    "search/batch": {"mutability": "IMMUTABLE_WITH_EXCLUSION", "scan_on_push": True, "kms": "aws", "lifecycle": True, "signing": "legacy"},
    # Throttled while its push is processed; its lifecycle policy is deleted while routing is cut.
    "platform/base": {"mutability": "IMMUTABLE", "scan_on_push": True, "kms": "customer", "lifecycle": True, "signing": "release"},
    # Encrypted with a KMS key the auditor cannot describe (deleted, or in an account it cannot
    # read): ECR.5 is UNKNOWN, never PASS.
    "vendor/mirror": {"mutability": "IMMUTABLE", "scan_on_push": True, "kms": "unreadable", "lifecycle": True, "signing": None},
}
REGRESSED = "payments/web"
DRIFTED = "platform/base"
LATE_EVENTS = 12
LATE_BY = timedelta(minutes=20)


def manifest(repository: str, n: int) -> str:
    def digest(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1024,
                   "digest": digest(f"{repository}-config-{n}")},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 4_194_304,
                    "digest": digest(f"{repository}-layer-{n}")}],
    })


class Scenario:
    def __init__(self, client: ClientFactory, account: str, endpoint: str, queue_url: str, dlq_url: str,
                 cloudtrail_rule: str, queue_arn: str) -> None:
        self.client = client
        self.account = account
        self.endpoint = endpoint
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self.cloudtrail_rule = cloudtrail_rule
        self.queue_arn = queue_arn
        self.fault_ids: list[str] = []
        self.pushes = 0

    def person(self, name: str) -> str:
        return f"arn:aws:iam::{self.account}:user/{name}"

    # ---------------------------------------------------------------- estate
    def signing_and_scans(self) -> None:
        signer, ecr = self.client("signer"), self.client("ecr", caller="alice")
        release = signer.put_signing_profile(profileName="release_signer", platformId="Notation-OCI-SHA384-ECDSA")
        legacy = signer.put_signing_profile(profileName="legacy_signer", platformId="Notation-OCI-SHA384-ECDSA")
        signer.revoke_signing_profile(profileName="legacy_signer", profileVersion=legacy["profileVersion"],
                                      reason="key rotated", effectiveTime=time.time() - 60)
        profiles = {"release": release["arn"], "legacy": legacy["arn"]}
        rules = [{"signingProfileArn": profiles[spec["signing"]],
                  "repositoryFilters": [{"filter": name, "filterType": "WILDCARD_MATCH"}]}
                 for name, spec in REPOSITORIES.items() if spec["signing"]]
        ecr.put_signing_configuration(signingConfiguration={"rules": rules})
        scan = f"{self.endpoint}/_emulator/scan-results"
        http_json(scan, {"account": self.account, "repositoryName": "payments/api",
                         "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 3, "MEDIUM": 7}})
        http_json(scan, {"account": self.account, "repositoryName": "search/batch", "status": "UNSUPPORTED_IMAGE"})

    def repositories(self) -> None:
        key = self.client("kms").create_key(Description="ecr images")["KeyMetadata"]["Arn"]
        for i, (name, spec) in enumerate(REPOSITORIES.items()):
            ecr = self.client("ecr", caller="alice" if i % 2 else "bob")
            request: dict[str, Any] = {"repositoryName": name, "imageTagMutability": spec["mutability"],
                                       "imageScanningConfiguration": {"scanOnPush": spec["scan_on_push"]}}
            if spec["mutability"].endswith("_WITH_EXCLUSION"):
                request["imageTagMutabilityExclusionFilters"] = [{"filterType": "WILDCARD", "filter": "latest"}]
            if spec["kms"] == "customer":
                request["encryptionConfiguration"] = {"encryptionType": "KMS", "kmsKey": key}
            elif spec["kms"] == "aws":
                request["encryptionConfiguration"] = {"encryptionType": "KMS"}
            elif spec["kms"] == "unreadable":
                request["encryptionConfiguration"] = {"encryptionType": "KMS", "kmsKey": (
                    f"arn:aws:kms:{REGION}:{self.account}:key/0b9e7f3c-dead-4000-8000-000000000000")}
            ecr.create_repository(**request)
            if spec["lifecycle"]:
                ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=LIFECYCLE)

    def push(self, repository: str, who: str, tag: str) -> None:
        self.client("ecr", caller=who).put_image(
            repositoryName=repository, imageTag=tag, imageManifest=manifest(repository, self.pushes),
            imageManifestMediaType="application/vnd.oci.image.manifest.v1+json")
        self.pushes += 1

    def first_pushes(self) -> None:
        for name in REPOSITORIES:
            if name != DRIFTED:
                self.push(name, "ci", "1.0.0")
                self.push(name, "ci", "1.0.1")
        self.push("legacy/tools", "alice", "hotfix")

    # ---------------------------------------------------------------- what goes wrong
    def regression(self) -> None:
        """mallory makes a production repository's tags mutable: ECR.2 PASS -> FAIL."""
        self.client("ecr", caller="mallory").put_image_tag_mutability(repositoryName=REGRESSED, imageTagMutability="MUTABLE")

    def poison_message(self) -> None:
        self.client("sqs").send_message(QueueUrl=self.queue_url, MessageBody='{"detail-type": "ECR Image Action", trunc')

    def dead_letter(self) -> None:
        """A message as SQS's redrive leaves it in the dead-letter queue."""
        body = self.recent_envelope()
        body["id"] = str(uuid.uuid4())
        self.client("sqs").send_message(QueueUrl=self.dlq_url, MessageBody=json.dumps(body))

    def recent_envelope(self) -> dict[str, Any]:
        events = http_json(f"{self.endpoint}/_emulator/events")["events"]
        mine = [e for e in events if e.get("account") == self.account and e.get("detail-type") == "ECR Image Action"
                and e.get("detail", {}).get("action-type") == "PUSH"]
        assert mine, "the emulator emitted no ECR Image Action for this account"
        return mine[-1]

    def late_events(self) -> None:
        """Real push events delivered twenty minutes after they happened (as after an outage of
        the queue, which EventBridge retries for up to a day): their lag is twenty minutes."""
        events = http_json(f"{self.endpoint}/_emulator/events")["events"]
        mine = [e for e in events if e.get("account") == self.account and e.get("detail-type") == "ECR Image Action"]
        assert mine, "the emulator emitted no ECR Image Action for this account"
        then = (datetime.now(timezone.utc) - LATE_BY).strftime("%Y-%m-%dT%H:%M:%SZ")
        sqs = self.client("sqs")
        for n in range(LATE_EVENTS):
            late = dict(mine[n % len(mine)], id=str(uuid.uuid4()), time=then)
            sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(late))

    def throttle(self) -> None:
        """ECR DescribeImages throttled for longer than the SDK retries, until `end_throttling`:
        a push processed meanwhile goes back to the queue (a retry, counted with its cause) and
        succeeds on a later receive. The emulator's faults are global, so the rule also retires
        by itself after 60 injected errors should the test die before lifting it."""
        answer = http_json(f"{self.endpoint}/_emulator/faults", {
            "service": "ecr", "operation": "DescribeImages", "error": "ThrottlingException", "rate": 1, "count": 60})
        self.fault_ids += [f["id"] for f in answer["faults"]]

    def end_throttling(self) -> None:
        self.clear_faults()

    def change_while_routing_is_cut(self) -> None:
        """The CloudTrail rule loses its target while mallory deletes a lifecycle policy: no event
        reaches the queue, so only a reconcile sweep can see that ECR.3 now fails."""
        events = self.client("events")
        events.remove_targets(Rule=self.cloudtrail_rule, Ids=["queue"])
        try:
            self.client("ecr", caller="mallory").delete_lifecycle_policy(repositoryName=DRIFTED)
        finally:
            events.put_targets(Rule=self.cloudtrail_rule, Targets=[{"Id": "queue", "Arn": self.queue_arn}])

    def clear_faults(self) -> None:
        """Removes the rules this scenario added if they are still active (they retire by count)."""
        active = http_json(f"{self.endpoint}/_emulator/faults")["faults"]
        if any(f["id"] in self.fault_ids for f in active):
            http_json(f"{self.endpoint}/_emulator/faults", method="DELETE")

    def queue_depth(self, url: str) -> int:
        attributes = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
