"""Registry settings an auditor reads: pull-through cache rules, repository creation templates,
repository and registry policies; each write is recorded by CloudTrail like the other ECR calls."""
from __future__ import annotations

import json
from datetime import datetime

import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
PUBLIC_PULL = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "AnyonePulls", "Effect": "Allow", "Principal": "*",
                   "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}],
}
REPLICATE_FROM = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "Replicate", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
                   "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"], "Resource": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/*"}],
}
LIFECYCLE = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                                                   "countUnit": "days", "countNumber": 7}, "action": {"type": "expire"}}]})


def trail(events: list[dict]) -> list[tuple[str, str | None]]:
    """(eventName, errorCode) of the CloudTrail events, in order."""
    return [(e["detail"]["eventName"], e["detail"].get("errorCode")) for e in events if e["detail-type"] == "AWS API Call via CloudTrail"]


def error_code(call, **kwargs) -> str:
    with pytest.raises(ClientError) as failed:
        call(**kwargs)
    return failed.value.response["Error"]["Code"]


def test_pull_through_cache_rules_lifecycle(ecr, event_queue):
    created = ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="ecr-public", upstreamRegistryUrl="public.ecr.aws")
    assert created["upstreamRegistry"] == "ecr-public"
    assert created["registryId"] == ACCOUNT
    assert isinstance(created["createdAt"], datetime)
    ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix="docker-hub", upstreamRegistryUrl="registry-1.docker.io",
        credentialArn=f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:ecr-pullthroughcache/docker-hub-AbCdEf",
    )
    assert error_code(ecr.create_pull_through_cache_rule, ecrRepositoryPrefix="ecr-public",
                      upstreamRegistryUrl="public.ecr.aws") == "PullThroughCacheRuleAlreadyExistsException"
    assert error_code(ecr.create_pull_through_cache_rule, ecrRepositoryPrefix="elsewhere",
                      upstreamRegistryUrl="registry.example.com") == "UnsupportedUpstreamRegistryException"

    rules = ecr.describe_pull_through_cache_rules()["pullThroughCacheRules"]
    assert [(r["ecrRepositoryPrefix"], r["upstreamRegistryUrl"], r["upstreamRegistry"]) for r in rules] == [
        ("docker-hub", "registry-1.docker.io", "docker-hub"), ("ecr-public", "public.ecr.aws", "ecr-public")]
    [one] = ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["docker-hub"])["pullThroughCacheRules"]
    assert one["credentialArn"].endswith(":secret:ecr-pullthroughcache/docker-hub-AbCdEf")
    assert error_code(ecr.describe_pull_through_cache_rules, ecrRepositoryPrefixes=["nope"]) == "PullThroughCacheRuleNotFoundException"
    paged = ecr.describe_pull_through_cache_rules(maxResults=1)
    assert len(paged["pullThroughCacheRules"]) == 1 and paged["nextToken"]

    deleted = ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="ecr-public")
    assert deleted["ecrRepositoryPrefix"] == "ecr-public"
    assert error_code(ecr.delete_pull_through_cache_rule, ecrRepositoryPrefix="ecr-public") == "PullThroughCacheRuleNotFoundException"
    assert [r["ecrRepositoryPrefix"] for r in ecr.describe_pull_through_cache_rules()["pullThroughCacheRules"]] == ["docker-hub"]

    assert trail(event_queue()) == [
        ("CreatePullThroughCacheRule", None),
        ("CreatePullThroughCacheRule", None),
        ("CreatePullThroughCacheRule", "PullThroughCacheRuleAlreadyExistsException"),
        ("CreatePullThroughCacheRule", "UnsupportedUpstreamRegistryException"),
        ("DeletePullThroughCacheRule", None),
        ("DeletePullThroughCacheRule", "PullThroughCacheRuleNotFoundException"),
    ]


def test_pull_through_cache_cloudtrail_carries_the_request(ecr, event_queue):
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="quay", upstreamRegistryUrl="quay.io")
    [event] = [e for e in event_queue() if e["detail-type"] == "AWS API Call via CloudTrail"]
    assert event["detail"]["requestParameters"] == {"ecrRepositoryPrefix": "quay", "upstreamRegistryUrl": "quay.io"}
    assert event["detail"]["responseElements"]["upstreamRegistry"] == "quay"


def test_repository_creation_templates_lifecycle(ecr, event_queue):
    created = ecr.create_repository_creation_template(
        prefix="ecr-public",
        description="pull-through repositories",
        appliedFor=["PULL_THROUGH_CACHE"],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filter": "latest", "filterType": "WILDCARD"}],
        encryptionConfiguration={"encryptionType": "KMS"},
        lifecyclePolicy=LIFECYCLE,
        resourceTags=[{"Key": "team", "Value": "platform"}],
    )
    template = created["repositoryCreationTemplate"]
    assert created["registryId"] == ACCOUNT
    assert (template["prefix"], template["appliedFor"], template["imageTagMutability"]) == ("ecr-public", ["PULL_THROUGH_CACHE"], "IMMUTABLE_WITH_EXCLUSION")
    assert template["lifecyclePolicy"] == LIFECYCLE
    ecr.create_repository_creation_template(prefix="ROOT", appliedFor=["REPLICATION", "CREATE_ON_PUSH"])
    assert error_code(ecr.create_repository_creation_template, prefix="ROOT", appliedFor=["REPLICATION"]) == "TemplateAlreadyExistsException"
    assert error_code(ecr.create_repository_creation_template, prefix="loose", appliedFor=["REPLICATION"],
                      imageTagMutability="MUTABLE", imageTagMutabilityExclusionFilters=[{"filter": "x", "filterType": "WILDCARD"}]) == "InvalidParameterException"

    listed = ecr.describe_repository_creation_templates()["repositoryCreationTemplates"]
    assert [t["prefix"] for t in listed] == ["ROOT", "ecr-public"]
    assert [t["prefix"] for t in ecr.describe_repository_creation_templates(prefixes=["ROOT"])["repositoryCreationTemplates"]] == ["ROOT"]

    updated = ecr.update_repository_creation_template(prefix="ROOT", imageTagMutability="IMMUTABLE")["repositoryCreationTemplate"]
    assert (updated["imageTagMutability"], updated["appliedFor"]) == ("IMMUTABLE", ["REPLICATION", "CREATE_ON_PUSH"])
    assert updated["updatedAt"] >= updated["createdAt"]
    assert error_code(ecr.update_repository_creation_template, prefix="missing", imageTagMutability="IMMUTABLE") == "TemplateNotFoundException"

    assert ecr.delete_repository_creation_template(prefix="ecr-public")["repositoryCreationTemplate"]["prefix"] == "ecr-public"
    assert error_code(ecr.delete_repository_creation_template, prefix="ecr-public") == "TemplateNotFoundException"
    assert [t["prefix"] for t in ecr.describe_repository_creation_templates()["repositoryCreationTemplates"]] == ["ROOT"]

    assert trail(event_queue()) == [
        ("CreateRepositoryCreationTemplate", None),
        ("CreateRepositoryCreationTemplate", None),
        ("CreateRepositoryCreationTemplate", "TemplateAlreadyExistsException"),
        ("CreateRepositoryCreationTemplate", "InvalidParameterException"),
        ("UpdateRepositoryCreationTemplate", None),
        ("UpdateRepositoryCreationTemplate", "TemplateNotFoundException"),
        ("DeleteRepositoryCreationTemplate", None),
        ("DeleteRepositoryCreationTemplate", "TemplateNotFoundException"),
    ]


def test_repository_policy_round_trip_and_trail(ecr, event_queue):
    ecr.create_repository(repositoryName="shared")
    assert error_code(ecr.get_repository_policy, repositoryName="shared") == "RepositoryPolicyNotFoundException"

    ecr.set_repository_policy(repositoryName="shared", policyText=json.dumps(PUBLIC_PULL))
    assert json.loads(ecr.get_repository_policy(repositoryName="shared")["policyText"]) == PUBLIC_PULL
    ecr.delete_repository_policy(repositoryName="shared")
    assert error_code(ecr.delete_repository_policy, repositoryName="shared") == "RepositoryPolicyNotFoundException"

    events = event_queue()
    assert trail(events) == [
        ("CreateRepository", None),
        ("SetRepositoryPolicy", None),
        ("DeleteRepositoryPolicy", None),
        ("DeleteRepositoryPolicy", "RepositoryPolicyNotFoundException"),
    ]
    [set_policy] = [e for e in events if e["detail"].get("eventName") == "SetRepositoryPolicy"]
    assert json.loads(set_policy["detail"]["requestParameters"]["policyText"]) == PUBLIC_PULL


def test_registry_policy_round_trip_and_trail(ecr, event_queue):
    assert error_code(ecr.get_registry_policy) == "RegistryPolicyNotFoundException"
    ecr.put_registry_policy(policyText=json.dumps(REPLICATE_FROM))
    got = ecr.get_registry_policy()
    assert got["registryId"] == ACCOUNT and json.loads(got["policyText"]) == REPLICATE_FROM
    ecr.delete_registry_policy()
    assert error_code(ecr.get_registry_policy) == "RegistryPolicyNotFoundException"

    assert trail(event_queue()) == [("PutRegistryPolicy", None), ("DeleteRegistryPolicy", None)]
