"""Basic and enhanced scans, and Inspector2 coverage and findings (issue item 5)."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from support import digest_of, oci_manifest, wait_for


def findings(ecr, repository: str, digest: str) -> dict:
    return ecr.describe_image_scan_findings(repositoryName=repository, imageId={"imageDigest": digest})


def enhanced_registry(ecr) -> None:
    ecr.put_registry_scanning_configuration(
        scanType="ENHANCED",
        rules=[
            {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]},
            {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "prod-*", "filterType": "WILDCARD"}]},
        ],
    )


def test_scan_on_push_walks_in_progress_to_complete(ecr, control):
    control("POST", "/_emulator/config", {"scan_delay_seconds": 0.5})
    control("POST", "/_emulator/scan-results", {"repositoryName": "scanned", "findingSeverityCounts": {"HIGH": 2, "LOW": 1}})
    ecr.create_repository(repositoryName="scanned", imageScanningConfiguration={"scanOnPush": True})
    image = oci_manifest("scan")
    ecr.put_image(repositoryName="scanned", imageManifest=image, imageTag="v1")

    assert findings(ecr, "scanned", digest_of(image))["imageScanStatus"]["status"] == "IN_PROGRESS"
    done = wait_for(lambda: findings(ecr, "scanned", digest_of(image)), lambda r: r["imageScanStatus"]["status"] != "IN_PROGRESS")
    assert done["imageScanStatus"]["status"] == "COMPLETE"
    assert done["imageScanFindings"]["findingSeverityCounts"] == {"HIGH": 2, "LOW": 1}
    assert sorted(f["severity"] for f in done["imageScanFindings"]["findings"]) == ["HIGH", "HIGH", "LOW"]
    [detail] = ecr.describe_images(repositoryName="scanned")["imageDetails"]
    assert detail["imageScanFindingsSummary"]["findingSeverityCounts"] == {"HIGH": 2, "LOW": 1}


def test_a_registry_rule_with_a_wildcard_starts_basic_scans(ecr):
    ecr.put_registry_scanning_configuration(
        scanType="BASIC", rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "svc-*", "filterType": "WILDCARD"}]}]
    )
    ecr.create_repository(repositoryName="svc-a")
    ecr.create_repository(repositoryName="my-svc-a")
    for repository in ("svc-a", "my-svc-a"):
        ecr.put_image(repositoryName=repository, imageManifest=oci_manifest(repository), imageTag="v1")

    assert findings(ecr, "svc-a", digest_of(oci_manifest("svc-a")))["imageScanStatus"]["status"] == "COMPLETE"
    with pytest.raises(ClientError) as never:
        findings(ecr, "my-svc-a", digest_of(oci_manifest("my-svc-a")))
    assert never.value.response["Error"]["Code"] == "ScanNotFoundException"
    configs = ecr.batch_get_repository_scanning_configuration(repositoryNames=["svc-a", "my-svc-a"])["scanningConfigurations"]
    assert {c["repositoryName"]: c["scanFrequency"] for c in configs} == {"svc-a": "SCAN_ON_PUSH", "my-svc-a": "MANUAL"}


def test_a_configured_status_such_as_unsupported_image(ecr, control):
    ecr.create_repository(repositoryName="odd", imageScanningConfiguration={"scanOnPush": True})
    image = oci_manifest("odd")
    control("POST", "/_emulator/scan-results", {"repositoryName": "odd", "imageDigest": digest_of(image), "status": "UNSUPPORTED_IMAGE"})
    ecr.put_image(repositoryName="odd", imageManifest=image, imageTag="v1")

    result = findings(ecr, "odd", digest_of(image))
    assert result["imageScanStatus"]["status"] == "UNSUPPORTED_IMAGE"
    assert "imageScanFindings" not in result


def test_start_image_scan_is_a_manual_scan_once_a_day(ecr):
    ecr.create_repository(repositoryName="manual")
    image = oci_manifest("manual")
    ecr.put_image(repositoryName="manual", imageManifest=image, imageTag="v1")

    started = ecr.start_image_scan(repositoryName="manual", imageId={"imageTag": "v1"})
    assert started["imageScanStatus"]["status"] == "IN_PROGRESS"
    assert findings(ecr, "manual", digest_of(image))["imageScanStatus"]["status"] == "COMPLETE"
    with pytest.raises(ClientError) as again:
        ecr.start_image_scan(repositoryName="manual", imageId={"imageTag": "v1"})
    assert again.value.response["Error"]["Code"] == "LimitExceededException"


def test_enhanced_scanning_answers_through_ecr_and_inspector(ecr, client, control):
    inspector = client("inspector2")
    enhanced_registry(ecr)
    control("POST", "/_emulator/scan-results", {"findingSeverityCounts": {"CRITICAL": 1, "MEDIUM": 2}})
    ecr.create_repository(repositoryName="prod-api")
    ecr.create_repository(repositoryName="tools")
    image, other = oci_manifest("prod"), oci_manifest("tools")
    ecr.put_image(repositoryName="prod-api", imageManifest=image, imageTag="v1")
    ecr.put_image(repositoryName="tools", imageManifest=other, imageTag="v1")

    configs = ecr.batch_get_repository_scanning_configuration(repositoryNames=["prod-api", "tools"])["scanningConfigurations"]
    assert {c["repositoryName"]: c["scanFrequency"] for c in configs} == {"prod-api": "CONTINUOUS_SCAN", "tools": "SCAN_ON_PUSH"}
    result = findings(ecr, "prod-api", digest_of(image))
    assert result["imageScanStatus"]["status"] == "ACTIVE"
    assert result["imageScanFindings"]["findingSeverityCounts"] == {"CRITICAL": 1, "MEDIUM": 2}
    assert len(result["imageScanFindings"]["enhancedFindings"]) == 3

    covered = inspector.list_coverage(filterCriteria={"ecrRepositoryName": [{"comparison": "EQUALS", "value": "prod-api"}]})
    [resource] = covered["coveredResources"]
    assert resource["resourceType"] == "AWS_ECR_CONTAINER_IMAGE"
    assert resource["resourceId"] == f"arn:aws:ecr:us-east-1:123456789012:repository/prod-api/{digest_of(image)}"
    assert resource["scanStatus"] == {"statusCode": "ACTIVE", "reason": "SUCCESSFUL"}

    by_hash = inspector.list_findings(filterCriteria={"ecrImageHash": [{"comparison": "EQUALS", "value": digest_of(image)}]})
    assert sorted(f["severity"] for f in by_hash["findings"]) == ["CRITICAL", "MEDIUM", "MEDIUM"]
    assert {f["resources"][0]["details"]["awsEcrContainerImage"]["imageHash"] for f in by_hash["findings"]} == {digest_of(image)}
    assert len(inspector.list_findings()["findings"]) == 6
    paged = inspector.list_findings(maxResults=4)
    assert len(paged["findings"]) == 4 and paged["nextToken"]
