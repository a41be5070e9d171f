"""Inspector2 `ListCoverage` and `ListFindings` for ECR images under enhanced scanning.

moto has no coverage and returns only findings injected by hand, ignoring
filters. Here both answer from the enhanced scans the emulator ran: each
scanned image is an `AWS_ECR_CONTAINER_IMAGE` resource, and its findings are
those of the scan's configured outcome. Filters use AWS's string comparisons.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from moto.core.responses import ActionResult
from moto.ecr.models import ecr_backends
from moto.inspector2 import urls as inspector_urls
from moto.inspector2.responses import Inspector2Response

from . import findings, images, paging
from .errors import AwsError
from .state import STORE, ScanRecord

#: Inspector coverage status for each terminal ECR scan status of an enhanced scan.
COVERAGE_STATUS = {
    "ACTIVE": ("ACTIVE", "SUCCESSFUL"),
    "IN_PROGRESS": ("ACTIVE", "PENDING_INITIAL_SCAN"),
    "UNSUPPORTED_IMAGE": ("INACTIVE", "UNSUPPORTED_OS"),
    "SCAN_ELIGIBILITY_EXPIRED": ("INACTIVE", "SCAN_ELIGIBILITY_EXPIRED"),
    "IMAGE_ARCHIVED": ("INACTIVE", "IMAGE_ARCHIVED"),
    "IMAGE_SIZE_EXCEEDED": ("INACTIVE", "IMAGE_SIZE_EXCEEDED"),
}


class ValidationError(AwsError):
    code = "ValidationException"
    reason = "OTHER"


def _string_filter_passes(filters: list[dict[str, str]], values: list[str]) -> bool:
    """AWS string filters: any positive filter must match one value; no NOT_EQUALS may match."""
    def hit(f: dict[str, str]) -> bool:
        if f.get("comparison") == "PREFIX":
            return any(v.startswith(f["value"]) for v in values)
        return f["value"] in values

    positive = [f for f in filters if f.get("comparison") != "NOT_EQUALS"]
    negative = [f for f in filters if f.get("comparison") == "NOT_EQUALS"]
    return (not positive or any(hit(f) for f in positive)) and not any(f["value"] in values for f in negative)


def _passes(criteria: dict[str, Any], fields: dict[str, list[str]]) -> bool:
    """Whether a resource or finding with these field values passes the criteria (unknown keys are ignored)."""
    return all(_string_filter_passes(criteria[key], values) for key, values in fields.items() if criteria.get(key))


def _enhanced_scans(account: str, region: str) -> Iterator[tuple[ScanRecord, Any]]:
    """(scan record, image) for every enhanced scan of an image that still exists."""
    backend = ecr_backends[account][region]
    for record in list(STORE.registry(account, region).scans.values()):
        repo = backend.repositories.get(record.repository)
        image = images.find(repo, record.digest) if repo and record.enhanced else None
        if image is not None:
            yield record, image


def _covered(account: str, region: str, record: ScanRecord, image: Any) -> dict[str, Any]:
    code, reason = COVERAGE_STATUS.get(record.status, ("INACTIVE", "INTERNAL_ERROR"))
    out: dict[str, Any] = {
        "resourceType": "AWS_ECR_CONTAINER_IMAGE",
        "resourceId": findings.image_resource_id(account, region, record.repository, record.digest),
        "accountId": account,
        "scanType": "PACKAGE",
        "scanStatus": {"statusCode": code, "reason": reason},
        "resourceMetadata": {
            "ecrImage": {"tags": list(image.image_tags)},
            "ecrRepository": {"name": record.repository, "scanFrequency": record.frequency},
        },
    }
    if record.completed_at:
        out["lastScannedAt"] = record.completed_at
    return out


def _coverage_fields(item: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "resourceType": [item["resourceType"]],
        "resourceId": [item["resourceId"]],
        "accountId": [item["accountId"]],
        "scanType": [item["scanType"]],
        "scanStatusCode": [item["scanStatus"]["statusCode"]],
        "scanStatusReason": [item["scanStatus"]["reason"]],
        "ecrRepositoryName": [item["resourceMetadata"]["ecrRepository"]["name"]],
        "ecrImageTags": item["resourceMetadata"]["ecrImage"]["tags"],
    }


def _finding_fields(item: dict[str, Any]) -> dict[str, list[str]]:
    resource = item["resources"][0]
    image = resource["details"]["awsEcrContainerImage"]
    return {
        "findingArn": [item["findingArn"]],
        "awsAccountId": [item["awsAccountId"]],
        "findingType": [item["type"]],
        "severity": [item["severity"]],
        "findingStatus": [item["status"]],
        "title": [item["title"]],
        "resourceType": [resource["type"]],
        "resourceId": [resource["id"]],
        "ecrImageHash": [image["imageHash"]],
        "ecrImageRepositoryName": [image["repositoryName"]],
        "ecrImageRegistry": [image["registry"]],
        "ecrImageTags": image["imageTags"],
        "vulnerabilityId": [item["packageVulnerabilityDetails"]["vulnerabilityId"]],
    }


def _listed(self: Inspector2Response, build: Callable[[str, str, ScanRecord, Any], list[dict[str, Any]]],
            fields: Callable[[dict[str, Any]], dict[str, list[str]]], default_size: int) -> tuple[list[dict[str, Any]], str | None]:
    account, region = self.current_account, self.region
    criteria = self._get_param("filterCriteria") or {}
    items = [item for record, image in _enhanced_scans(account, region) for item in build(account, region, record, image)]
    kept = [item for item in items if _passes(criteria, fields(item))]
    return paging.page(kept, self._get_param("maxResults"), self._get_param("nextToken"), default_size, ValidationError)


def list_coverage(self: Inspector2Response) -> ActionResult:
    found, token = _listed(self, lambda a, r, rec, img: [_covered(a, r, rec, img)], _coverage_fields, 200)
    return ActionResult({"coveredResources": found, "nextToken": token})


def _image_findings(account: str, region: str, record: ScanRecord, image: Any) -> list[dict[str, Any]]:
    pushed = datetime.fromtimestamp(image.image_pushed_at, tz=timezone.utc)
    return [
        findings.inspector(f, account, region, record.repository, record.digest, list(image.image_tags), pushed, record.completed_at)
        for f in record.findings
    ]


def list_findings(self: Inspector2Response) -> ActionResult:
    found, token = _listed(self, _image_findings, _finding_fields, 50)
    return ActionResult({"findings": found, "nextToken": token})


def install() -> None:
    Inspector2Response.list_coverage = list_coverage
    Inspector2Response.list_findings = list_findings
    inspector_urls.url_paths["{0}/coverage/list$"] = Inspector2Response.dispatch
