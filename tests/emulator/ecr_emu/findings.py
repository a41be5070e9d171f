"""Made-up but well-formed vulnerability findings.

A configured outcome gives only severity counts; this module turns them into
findings with stable identifiers (the same image and counts always give the
same CVE names and finding ARNs) and renders them in the three shapes the APIs
use: ECR basic findings, ECR enhanced findings, and Inspector2 findings.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

SEVERITY_ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED", "UNTRIAGED")


def image_resource_id(account: str, region: str, repository: str, digest: str) -> str:
    """Inspector's id for an ECR image: the repository ARN, a slash, then the digest."""
    return f"arn:aws:ecr:{region}:{account}:repository/{repository}/{digest}"


def generate(account: str, region: str, repository: str, digest: str, counts: dict[str, int]) -> list[dict[str, Any]]:
    """One neutral finding per counted vulnerability, most severe first."""
    seed = hashlib.sha256(f"{account}/{region}/{repository}@{digest}".encode()).hexdigest()
    out: list[dict[str, Any]] = []
    for severity in sorted(counts, key=lambda s: SEVERITY_ORDER.index(s) if s in SEVERITY_ORDER else 99):
        for _ in range(int(counts[severity])):
            n = len(out) + 1
            number = int(seed[:6], 16) % 90000 + 10000 + n
            out.append(
                {
                    "id": f"CVE-2099-{number}",
                    "severity": severity,
                    "package": f"emulated-package-{n}",
                    "version": f"1.{n}.0",
                    "arn": f"arn:aws:inspector2:{region}:{account}:finding/{seed[:24]}{n:08x}",
                }
            )
    return out


def basic(finding: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": finding["id"],
        "description": f"Emulated vulnerability {finding['id']} in {finding['package']}.",
        "uri": f"https://nvd.nist.gov/vuln/detail/{finding['id']}",
        "severity": finding["severity"],
        "attributes": [
            {"key": "package_name", "value": finding["package"]},
            {"key": "package_version", "value": finding["version"]},
        ],
    }


def _ecr_image_details(account: str, repository: str, digest: str, tags: list[str], pushed_at: datetime) -> dict[str, Any]:
    return {
        "repositoryName": repository,
        "imageHash": digest,
        "imageTags": tags,
        "registry": account,
        "pushedAt": pushed_at,
        "architecture": "amd64",
        "platform": "LINUX",
    }


def _common(finding: dict[str, Any], account: str, observed: datetime) -> dict[str, Any]:
    return {
        "findingArn": finding["arn"],
        "awsAccountId": account,
        "type": "PACKAGE_VULNERABILITY",
        "title": f"{finding['id']} - {finding['package']}",
        "description": f"Emulated vulnerability {finding['id']} in {finding['package']}.",
        "severity": finding["severity"],
        "status": "ACTIVE",
        "firstObservedAt": observed,
        "lastObservedAt": observed,
        "updatedAt": observed,
        "fixAvailable": "YES",
        "exploitAvailable": "NO",
    }


def _package_details(finding: dict[str, Any], observed: datetime) -> dict[str, Any]:
    return {
        "vulnerabilityId": finding["id"],
        "source": "NVD",
        "sourceUrl": f"https://nvd.nist.gov/vuln/detail/{finding['id']}",
        "vendorSeverity": finding["severity"],
        "vendorCreatedAt": observed,
        "vulnerablePackages": [
            {"name": finding["package"], "version": finding["version"], "fixedInVersion": f"{finding['version']}-fixed"}
        ],
    }


def enhanced(
    finding: dict[str, Any], account: str, region: str, repository: str, digest: str, tags: list[str],
    pushed_at: datetime, observed: datetime,
) -> dict[str, Any]:
    """An ECR `EnhancedImageScanFinding`."""
    return {
        **_common(finding, account, observed),
        "packageVulnerabilityDetails": _package_details(finding, observed),
        "remediation": {"recommendation": {"text": f"Upgrade {finding['package']}.", "url": "https://example.invalid/"}},
        "resources": [
            {
                "type": "AWS_ECR_CONTAINER_IMAGE",
                "id": image_resource_id(account, region, repository, digest),
                "details": {"awsEcrContainerImage": _ecr_image_details(account, repository, digest, tags, pushed_at)},
            }
        ],
    }


def inspector(
    finding: dict[str, Any], account: str, region: str, repository: str, digest: str, tags: list[str],
    pushed_at: datetime, observed: datetime,
) -> dict[str, Any]:
    """An Inspector2 `Finding`: the enhanced shape, with Inspector's own spelling of a few members."""
    out = enhanced(finding, account, region, repository, digest, tags, pushed_at, observed)
    recommendation = out["remediation"]["recommendation"]
    recommendation["Url"] = recommendation.pop("url")
    out["resources"][0].update({"partition": "aws", "region": region})
    return out
