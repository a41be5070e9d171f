"""What ECR does by itself, emitted as AWS emits it: replication, pull-through cache, lifecycle
expiry (issue 16 item 4), and the pull and in-use facts of item 5."""
from __future__ import annotations

import json
import urllib.error
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from support import digest_of, oci_manifest

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"


def of_type(events: list[dict], detail_type: str) -> list[dict]:
    return [e for e in events if e["detail-type"] == detail_type]


def in_region(endpoint: str, service: str, region: str):
    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def recent(control, account: str) -> list[dict]:
    return control("GET", f"/_emulator/events?account={account}")["events"]


# ------------------------------------------------------------------ replication
def test_push_replicates_to_every_destination_with_replication_action(ecr, endpoint, control):
    ecr.put_replication_configuration(replicationConfiguration={"rules": [{
        "destinations": [{"region": "eu-west-1", "registryId": ACCOUNT}, {"region": "us-east-1", "registryId": OTHER_ACCOUNT}],
        "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}],
    }]})
    ecr.create_repository(repositoryName="prod/api")
    ecr.create_repository(repositoryName="dev/api")
    image = oci_manifest("replicated")
    ecr.put_image(repositoryName="prod/api", imageManifest=image, imageTag="v1")
    ecr.put_image(repositoryName="dev/api", imageManifest=oci_manifest("not replicated"), imageTag="v1")

    eu = in_region(endpoint, "ecr", "eu-west-1")
    [replica] = eu.describe_images(repositoryName="prod/api")["imageDetails"]
    assert replica["imageDigest"] == digest_of(image) and replica["imageTags"] == ["v1"]
    assert [r["repositoryName"] for r in eu.describe_repositories()["repositories"]] == ["prod/api"]

    [in_eu] = [e for e in of_type(recent(control, ACCOUNT), "ECR Replication Action") if e["region"] == "eu-west-1"]
    assert in_eu["source"] == "aws.ecr"
    assert in_eu["resources"] == [f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/prod/api"]
    assert in_eu["detail"] == {
        "result": "SUCCESS", "repository-name": "prod/api", "image-digest": digest_of(image),
        "source-account": ACCOUNT, "action-type": "REPLICATE", "source-region": "us-east-1", "image-tag": "v1",
    }
    [cross_account] = of_type(recent(control, OTHER_ACCOUNT), "ECR Replication Action")
    assert cross_account["account"] == OTHER_ACCOUNT and cross_account["detail"]["source-account"] == ACCOUNT


def test_deletes_are_not_replicated(ecr, endpoint):
    ecr.put_replication_configuration(replicationConfiguration={"rules": [{
        "destinations": [{"region": "eu-west-1", "registryId": ACCOUNT}]}]})
    ecr.create_repository(repositoryName="kept")
    image = oci_manifest("kept")
    ecr.put_image(repositoryName="kept", imageManifest=image, imageTag="v1")
    ecr.batch_delete_image(repositoryName="kept", imageIds=[{"imageTag": "v1"}])
    assert len(in_region(endpoint, "ecr", "eu-west-1").describe_images(repositoryName="kept")["imageDetails"]) == 1


# ------------------------------------------------------------------ pull-through cache
def test_pull_through_cache_creates_repository_and_image_with_its_event(ecr, control, event_queue):
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="ecr-public", upstreamRegistryUrl="public.ecr.aws")
    pulled = control("POST", "/_emulator/pull", {"repositoryName": "ecr-public/docker/library/alpine", "imageTag": "3.20"})
    assert pulled["pullThroughCache"] is True

    [image] = ecr.describe_images(repositoryName="ecr-public/docker/library/alpine")["imageDetails"]
    assert image["imageDigest"] == pulled["imageDigest"] and image["imageTags"] == ["3.20"]
    assert "lastRecordedPullTime" in image

    [event] = of_type(event_queue(), "ECR Pull Through Cache Action")
    assert event["resources"] == [f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/ecr-public/docker/library/alpine"]
    assert event["detail"] == {
        "rule-version": "1", "sync-status": "SUCCESS", "ecr-repository-prefix": "ecr-public",
        "repository-name": "ecr-public/docker/library/alpine", "upstream-registry-url": "public.ecr.aws",
        "image-tag": "3.20", "image-digest": pulled["imageDigest"],
    }
    # A second pull of the same tag is served from the cache: same digest.
    again = control("POST", "/_emulator/pull", {"repositoryName": "ecr-public/docker/library/alpine", "imageTag": "3.20"})
    assert again["imageDigest"] == pulled["imageDigest"] and again["pullThroughCache"] is False


def test_pull_of_a_missing_image_without_cache_rule_is_404(control):
    with pytest.raises(urllib.error.HTTPError) as missing:
        control("POST", "/_emulator/pull", {"repositoryName": "nowhere", "imageTag": "v1"})
    assert missing.value.code == 404


# ------------------------------------------------------------------ pull time and in-use
def test_last_recorded_pull_time_comes_from_pulls_and_batch_get_image(ecr, control):
    ecr.create_repository(repositoryName="pulled")
    ecr.put_image(repositoryName="pulled", imageManifest=oci_manifest("a"), imageTag="a")
    ecr.put_image(repositoryName="pulled", imageManifest=oci_manifest("b"), imageTag="b")
    ecr.put_image(repositoryName="pulled", imageManifest=oci_manifest("c"), imageTag="c")
    control("POST", "/_emulator/pull", {"repositoryName": "pulled", "imageTag": "a"})
    ecr.batch_get_image(repositoryName="pulled", imageIds=[{"imageTag": "b"}])

    details = {d["imageTags"][0]: d for d in ecr.describe_images(repositoryName="pulled")["imageDetails"]}
    assert "lastRecordedPullTime" not in details["c"]
    for tag in ("a", "b"):
        assert datetime.now(timezone.utc) - details[tag]["lastRecordedPullTime"] < timedelta(minutes=1)


def test_inspector_coverage_reports_in_use_and_pull_time(ecr, client, control):
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}])
    ecr.create_repository(repositoryName="running")
    image = oci_manifest("running")
    ecr.put_image(repositoryName="running", imageManifest=image, imageTag="v1")
    control("POST", "/_emulator/in-use", {"repositoryName": "running", "imageDigest": digest_of(image),
                                          "inUseCount": 3, "lastInUseAt": "2026-11-30T12:00:00Z"})
    control("POST", "/_emulator/pull", {"repositoryName": "running", "imageTag": "v1"})

    [covered] = client("inspector2").list_coverage()["coveredResources"]
    metadata = covered["resourceMetadata"]["ecrImage"]
    assert metadata["inUseCount"] == 3
    assert metadata["lastInUseAt"] == datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    assert "imagePulledAt" in metadata


def test_coverage_without_in_use_facts_has_none(ecr, client):
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}])
    ecr.create_repository(repositoryName="idle")
    ecr.put_image(repositoryName="idle", imageManifest=oci_manifest("idle"), imageTag="v1")
    [covered] = client("inspector2").list_coverage()["coveredResources"]
    assert set(covered["resourceMetadata"]["ecrImage"]) == {"tags"}


# ------------------------------------------------------------------ lifecycle expiry
def _push_three(ecr, name: str) -> list[str]:
    digests = []
    for seed in ("one", "two", "three"):
        manifest = oci_manifest(f"{name}-{seed}")
        ecr.put_image(repositoryName=name, imageManifest=manifest, imageTag=seed)
        digests.append(digest_of(manifest))
    return digests


def test_lifecycle_count_rule_expires_oldest_and_emits_policy_execution_event(ecr, control, event_queue):
    ecr.create_repository(repositoryName="trimmed")
    oldest, _, _ = _push_three(ecr, "trimmed")
    policy = {"rules": [{"rulePriority": 1, "description": "keep two",
                         "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2},
                         "action": {"type": "expire"}}]}
    ecr.put_lifecycle_policy(repositoryName="trimmed", lifecyclePolicyText=json.dumps(policy))
    event_queue()

    result = control("POST", "/_emulator/lifecycle", {"repositoryName": "trimmed"})
    assert [e["imageDigest"] for e in result["expired"]] == [oldest]
    left = ecr.describe_images(repositoryName="trimmed")["imageDetails"]
    assert len(left) == 2 and result["expired"][0]["imageDigest"] not in {d["imageDigest"] for d in left}

    [event] = of_type(event_queue(), "AWS Service Event via CloudTrail")
    assert event["source"] == "aws.ecr" and event["id"] == result["eventId"]
    record = event["detail"]
    assert record["eventName"] == "PolicyExecutionEvent" and record["eventType"] == "AwsServiceEvent"
    assert record["eventSource"] == "ecr.amazonaws.com" and record["userIdentity"]["invokedBy"] == "AWS Internal"
    assert record["resources"] == [{"ARN": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/trimmed",
                                    "accountId": ACCOUNT, "type": "AWS::ECR::Repository"}]
    details = record["serviceEventDetails"]
    assert details["repositoryName"] == "trimmed"
    [rule] = details["lifecycleEventPolicy"]["lifecycleEventRules"]
    assert rule["lifecycleEventSelection"] == {"tagStatus": "Any", "tagPrefixList": [],
                                               "countType": "Image count more than", "countNumber": 2}
    [action] = details["lifecycleEventImageActions"]
    assert action["rulePriority"] == 1 and action["lifecycleEventImage"]["digest"] == result["expired"][0]["imageDigest"]
    assert action["lifecycleEventImage"]["tagStatus"] == "Tagged"


def test_lifecycle_age_rule_and_priority_order(ecr, control):
    ecr.create_repository(repositoryName="aged")
    one, two, three = _push_three(ecr, "aged")
    ecr.batch_delete_image(repositoryName="aged", imageIds=[{"imageTag": "three"}])
    ecr.put_image(repositoryName="aged", imageManifest=oci_manifest("aged-untagged"))  # an untagged image
    policy = {"rules": [
        # Rule 1 claims the "one*" image: rule 2 cannot expire it although it is old enough.
        {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["one"],
                                          "countType": "imageCountMoreThan", "countNumber": 5}, "action": {"type": "expire"}},
        {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "sinceImagePushed",
                                          "countUnit": "days", "countNumber": 14}, "action": {"type": "expire"}},
    ]}
    ecr.put_lifecycle_policy(repositoryName="aged", lifecyclePolicyText=json.dumps(policy))
    assert control("POST", "/_emulator/lifecycle", {"repositoryName": "aged"})["expired"] == []

    later = (datetime.now(timezone.utc) + timedelta(days=15)).isoformat()
    result = control("POST", "/_emulator/lifecycle", {"repositoryName": "aged", "at": later})
    assert {e["imageDigest"] for e in result["expired"]} == {two, digest_of(oci_manifest("aged-untagged"))}
    assert [d["imageDigest"] for d in ecr.describe_images(repositoryName="aged")["imageDetails"]] == [one]


def test_lifecycle_without_policy_is_404(ecr, control):
    ecr.create_repository(repositoryName="unmanaged")
    with pytest.raises(urllib.error.HTTPError) as missing:
        control("POST", "/_emulator/lifecycle", {"repositoryName": "unmanaged"})
    assert missing.value.code == 404


# ------------------------------------------------------------------ CloudTrail and scan changes
def test_batch_delete_image_is_recorded_by_cloudtrail(ecr, event_queue):
    ecr.create_repository(repositoryName="pruned")
    ecr.put_image(repositoryName="pruned", imageManifest=oci_manifest("pruned"), imageTag="v1")
    ecr.batch_delete_image(repositoryName="pruned", imageIds=[{"imageTag": "v1"}])
    [record] = [e["detail"] for e in of_type(event_queue(), "AWS API Call via CloudTrail")
                if e["detail"]["eventName"] == "BatchDeleteImage"]
    assert record["requestParameters"]["repositoryName"] == "pruned"
    assert record["responseElements"]["imageIds"][0]["imageTag"] == "v1"


def test_scan_resource_change_names_the_changed_repositories(ecr, event_queue):
    for name in ("prod-api", "prod-web", "dev-api"):
        ecr.create_repository(repositoryName=name)
    event_queue()
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "prod-*", "filterType": "WILDCARD"}]}])
    [event] = of_type(event_queue(), "ECR Scan Resource Change")
    assert {r["repository-name"] for r in event["detail"]["repositories"]} == {"prod-api", "prod-web"}


# ------------------------------------------------------------------ repositories ECR creates by itself
def test_pull_through_repository_takes_its_creation_template(ecr, control):
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="quay", upstreamRegistryUrl="quay.io")
    policy = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan",
                                                                     "countNumber": 1}, "action": {"type": "expire"}}]})
    ecr.create_repository_creation_template(prefix="ROOT", appliedFor=["PULL_THROUGH_CACHE"], imageTagMutability="MUTABLE")
    ecr.create_repository_creation_template(
        prefix="quay", appliedFor=["PULL_THROUGH_CACHE"], imageTagMutability="IMMUTABLE", lifecyclePolicy=policy,
        resourceTags=[{"Key": "origin", "Value": "cache"}])
    ecr.create_repository_creation_template(prefix="quay/coreos", appliedFor=["REPLICATION"], imageTagMutability="MUTABLE")
    control("POST", "/_emulator/pull", {"repositoryName": "quay/coreos/etcd", "imageTag": "v3.5"})

    [repo] = ecr.describe_repositories(repositoryNames=["quay/coreos/etcd"])["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert ecr.get_lifecycle_policy(repositoryName="quay/coreos/etcd")["lifecyclePolicyText"] == policy
    assert ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"] == [{"Key": "origin", "Value": "cache"}]


def test_replicated_repository_takes_the_destination_template(ecr, endpoint):
    eu = in_region(endpoint, "ecr", "eu-west-1")
    eu.create_repository_creation_template(prefix="ROOT", appliedFor=["REPLICATION"], imageTagMutability="IMMUTABLE")
    ecr.put_replication_configuration(replicationConfiguration={"rules": [{
        "destinations": [{"region": "eu-west-1", "registryId": ACCOUNT}]}]})
    ecr.create_repository(repositoryName="svc")
    ecr.put_image(repositoryName="svc", imageManifest=oci_manifest("svc"), imageTag="v1")
    assert eu.describe_repositories(repositoryNames=["svc"])["repositories"][0]["imageTagMutability"] == "IMMUTABLE"
    assert ecr.describe_repositories(repositoryNames=["svc"])["repositories"][0]["imageTagMutability"] == "MUTABLE"
