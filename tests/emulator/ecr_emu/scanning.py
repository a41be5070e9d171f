"""Image scanning: which pushes start a scan, how scans end, and what they report.

moto starts no scan on push and answers DescribeImageScanFindings with a fixed
fake finding. Here the effective scan frequency of a repository decides
(registry rules with AWS's scanning filters, the repository's own scanOnPush
flag only while the registry has no scanning configuration, continuous winning over scan-on-push), a scan runs for the
configured delay, ends with the configured outcome, and emits the event AWS
emits: `ECR Image Scan` for basic scans, `Inspector2 Scan` for enhanced ones.
A registry scanning configuration that changes repositories' frequency under
enhanced scanning emits `ECR Scan Resource Change`.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from moto.ecr.exceptions import LimitExceededException, ScanNotFoundException
from moto.ecr.models import ECRBackend, Image, Repository, ecr_backends

from . import events, findings, images, wildcard
from .errors import AwsError
from .state import STORE, RegistryState, ScanRecord, schedule

#: Frequencies a registry rule may set per scan type (API reference of RegistryScanningRule:
#: ENHANCED supports CONTINUOUS_SCAN and SCAN_ON_PUSH, BASIC supports SCAN_ON_PUSH). MANUAL
#: is in the enum and accepted here as a rule that selects repositories for no scanning
#: (whether AWS accepts it is not documented).
RULE_FREQUENCIES = {"BASIC": {"SCAN_ON_PUSH", "MANUAL"}, "ENHANCED": {"CONTINUOUS_SCAN", "SCAN_ON_PUSH", "MANUAL"}}
SCAN_FILTER = re.compile(r"^[a-z0-9*](?:[._\-/a-z0-9*]?[a-z0-9*]+)*$")
MAX_RULES = 2
MAX_FILTERS = 100
#: BatchGetRepositoryScanningConfiguration's repositoryNames: 1 to 25 names (API reference).
MAX_NAMES_PER_BATCH = 25

SUCCESS = {False: "COMPLETE", True: "ACTIVE"}
DESCRIPTIONS = {
    "IN_PROGRESS": "The scan is in progress.",
    "COMPLETE": "The scan was completed successfully.",
    "FAILED": "The scan failed.",
    "UNSUPPORTED_IMAGE": "The operating system and/or package manager are not supported.",
    "SCAN_ELIGIBILITY_EXPIRED": "The image is no longer eligible for continuous scanning.",
    "FINDINGS_UNAVAILABLE": "Findings are not available for this image.",
}
ACTIVE_DESCRIPTIONS = {
    "CONTINUOUS_SCAN": "Continuous scan is selected for image.",
    "SCAN_ON_PUSH": "Scan on push is selected for image.",
    "MANUAL": "Manual scan is selected for image.",
}


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def is_enhanced(backend: ECRBackend) -> bool:
    return backend.registry_scanning_configuration.get("scanType") == "ENHANCED"


def effective_frequency(backend: ECRBackend, repo: Repository) -> tuple[str, list[dict[str, str]]]:
    """The repository's scan frequency and the filter that set it, as BatchGetRepositoryScanningConfiguration shows.

    Precedence: CONTINUOUS_SCAN (enhanced only), then SCAN_ON_PUSH, then MANUAL: "If scan
    on push is not specified, then the MANUAL scan frequency is set by default" (API
    reference, RegistryScanningRule), and "Any repositories not matching an enhanced
    scanning filter will have scanning disabled" (user guide). The repository's own
    deprecated scanOnPush flag counts only in a registry that never had a scanning
    configuration put (*assumed*: the registry-level configuration supersedes it).
    """
    matched: dict[str, dict[str, str]] = {}
    for rule in backend.registry_scanning_configuration.get("rules") or []:
        hit = wildcard.any_filter_matches(rule.get("repositoryFilters") or [], repo.name, wildcard.scan_filter_matches)
        if hit is not None:
            matched.setdefault(rule["scanFrequency"], hit)
    order = ("CONTINUOUS_SCAN", "SCAN_ON_PUSH") if is_enhanced(backend) else ("SCAN_ON_PUSH",)
    for frequency in order:
        if frequency in matched:
            return frequency, [matched[frequency]]
    legacy = not getattr(backend, "emu_registry_scanning_put", False)
    if legacy and (repo.image_scanning_configuration or {}).get("scanOnPush"):
        return "SCAN_ON_PUSH", []
    return "MANUAL", [matched["MANUAL"]] if "MANUAL" in matched else []


def _invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterException", f"Invalid parameter at 'rules' failed to satisfy constraint: '{message}'")


def _validate(scan_type: str, rules: list[dict[str, Any]]) -> None:
    """The limits of the API reference; the messages are the emulator's own."""
    if scan_type not in RULE_FREQUENCIES:
        raise AwsError("InvalidParameterException", "Invalid parameter at 'scanType' failed to satisfy constraint: 'Member must satisfy enum value set: [BASIC, ENHANCED]'")
    if len(rules) > MAX_RULES:
        raise _invalid(f"at most {MAX_RULES} rules are allowed")
    for rule in rules:
        frequency = rule.get("scanFrequency")
        if frequency not in RULE_FREQUENCIES[scan_type]:
            raise _invalid(f"scan frequency {frequency} is not supported for scan type {scan_type}")
        filters = rule.get("repositoryFilters") or []
        if len(filters) > MAX_FILTERS:
            raise _invalid(f"at most {MAX_FILTERS} repository filters are allowed per rule")
        for repository_filter in filters:
            if repository_filter.get("filterType") != "WILDCARD":
                raise _invalid("the only supported filterType is WILDCARD")
            if not SCAN_FILTER.match(str(repository_filter.get("filter", ""))) or len(repository_filter["filter"]) > 255:
                raise _invalid(f"'{repository_filter.get('filter')}' is not a valid repository filter")


def _frequencies(backend: ECRBackend) -> dict[str, str]:
    return {name: effective_frequency(backend, repo)[0] for name, repo in backend.repositories.items()}


def emit_scan_resource_change(backend: ECRBackend, changes: list[tuple[Repository, str, str]]) -> None:
    """`ECR Scan Resource Change`, shaped as the ECR user guide's example: one event, every changed repository."""
    detail = {
        "action-type": "SCAN_FREQUENCY_CHANGE",
        "repositories": [
            {"repository-name": repo.name, "repository-arn": repo.arn, "scan-frequency": new, "previous-scan-frequency": old}
            for repo, old, new in changes
        ],
        "resource-type": "REPOSITORY",
        "scan-type": backend.registry_scanning_configuration.get("scanType", "BASIC"),
    }
    events.emit(backend.account_id, backend.region_name, "aws.ecr", "ECR Scan Resource Change", detail)


def put_registry_scanning_configuration(self: ECRBackend, scan_type: str | None, rules: list[dict[str, Any]] | None) -> None:
    """Validates, stores, and reports every repository whose frequency changed under enhanced scanning.

    AWS documents the event "when enhanced scanning is turned on"; a change away from
    ENHANCED is reported too, with `scan-type` BASIC (*assumed*).
    """
    scan_type, rules = scan_type or "BASIC", list(rules or [])
    _validate(scan_type, rules)
    previous_type = self.registry_scanning_configuration.get("scanType", "BASIC")
    before = _frequencies(self)
    _MOTO_PUT_REGISTRY_SCANNING_CONFIGURATION(self, scan_type, rules)
    self.emu_registry_scanning_put = True
    after = _frequencies(self)
    if "ENHANCED" not in (previous_type, scan_type):
        return
    changes = [(self.repositories[name], before[name], after[name]) for name in sorted(after) if before[name] != after[name]]
    if changes:
        emit_scan_resource_change(self, changes)


def create_repository(self: ECRBackend, *args: Any, **kwargs: Any) -> Repository:
    """A new repository that an enhanced rule selects is a scan resource change too (*assumed*: previous MANUAL)."""
    repo = _MOTO_CREATE_REPOSITORY(self, *args, **kwargs)
    frequency, _ = effective_frequency(self, repo)
    if is_enhanced(self) and frequency != "MANUAL":
        emit_scan_resource_change(self, [(repo, "MANUAL", frequency)])
    return repo


_MOTO_PUT_REGISTRY_SCANNING_CONFIGURATION = ECRBackend.put_registry_scanning_configuration
_MOTO_CREATE_REPOSITORY = ECRBackend.create_repository


def batch_get_repository_scanning_configuration(self: ECRBackend, names: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Replaces moto's version, whose filter matching and rule precedence differ from AWS."""
    if not 1 <= len(names) <= MAX_NAMES_PER_BATCH:
        raise AwsError("InvalidParameterException", "Invalid parameter at 'repositoryNames' failed to satisfy constraint: "
                       f"'Member must have length less than or equal to {MAX_NAMES_PER_BATCH}'")
    configs, missing = [], []
    for name in names:
        repo = self.repositories.get(name)
        if repo is None:
            missing.append(name)
            continue
        frequency, applied = effective_frequency(self, repo)
        configs.append(
            {
                "repositoryArn": repo.arn,
                "repositoryName": repo.name,
                "scanOnPush": frequency != "MANUAL",
                "scanFrequency": frequency,
                "appliedScanFilters": applied,
            }
        )
    return configs, missing


def on_push(backend: ECRBackend, repo: Repository, image: Image) -> None:
    """Starts the scan a push triggers, if the repository scans on push; artifacts are never scanned."""
    if images.manifest_of(image).is_artifact:
        return
    frequency, _ = effective_frequency(backend, repo)
    if frequency != "MANUAL":
        start(backend, repo, image, frequency)


def start(backend: ECRBackend, repo: Repository, image: Image, frequency: str) -> ScanRecord:
    account, region = backend.account_id, backend.region_name
    record = ScanRecord(
        repository=repo.name, digest=image.image_digest, enhanced=is_enhanced(backend),
        frequency=frequency, started_at=now(),
    )
    STORE.registry(account, region).scans[(repo.name, image.image_digest)] = record
    schedule(STORE.settings.scan_delay, lambda: _finish(account, region, record))
    return record


def start_image_scan(self: ECRBackend, registry_id: str, repository_name: str, image_id: dict[str, str]) -> dict[str, Any]:
    """StartImageScan: a manual scan, at most once a day per image as in AWS."""
    repo = self._get_repository(repository_name, registry_id)
    image = repo._get_image(image_id.get("imageTag"), image_id.get("imageDigest"))
    registry = STORE.registry(self.account_id, self.region_name)
    key, today = (repo.name, image.image_digest), now().date().isoformat()
    if registry.manual_scan_days.get(key) == today:
        raise LimitExceededException()
    registry.manual_scan_days[key] = today
    start(self, repo, image, effective_frequency(self, repo)[0])
    return {
        "registryId": repo.registry_id,
        "repositoryName": repo.name,
        "imageId": {"imageDigest": image.image_digest, **({"imageTag": image_id["imageTag"]} if image_id.get("imageTag") else {})},
        "imageScanStatus": {"status": "IN_PROGRESS"},
    }


def _outcome(account: str, region: str, repository: str, digest: str) -> dict[str, Any]:
    """The most specific configured outcome (digest, then repository, then registry-wide); newest wins."""
    best: dict[str, Any] = {}
    best_rank = -1
    for outcome in STORE.scan_outcomes:
        if outcome.get("account", account) != account or outcome.get("region", region) != region:
            continue
        if outcome.get("repositoryName", repository) != repository or outcome.get("imageDigest", digest) != digest:
            continue
        rank = ("imageDigest" in outcome) * 2 + ("repositoryName" in outcome)
        if rank >= best_rank:
            best, best_rank = outcome, rank
    return best


def _finish(account: str, region: str, record: ScanRecord) -> None:
    registry = STORE.registry(account, region)
    backend = ecr_backends[account][region]
    repo = backend.repositories.get(record.repository)
    image = images.find(repo, record.digest) if repo else None
    if registry.scans.get((record.repository, record.digest)) is not record or image is None:
        return
    outcome = _outcome(account, region, record.repository, record.digest)
    status = outcome.get("status", "COMPLETE")
    record.status = SUCCESS[record.enhanced] if status in ("COMPLETE", "ACTIVE") else status
    record.description = outcome.get("description") or _description(record)
    record.completed_at = now()
    if record.status == SUCCESS[record.enhanced]:
        counts = {k: int(v) for k, v in (outcome.get("findingSeverityCounts") or {}).items() if int(v) > 0}
        record.severity_counts = counts
        record.findings = findings.generate(account, region, record.repository, record.digest, counts)
    _emit_completion(account, region, repo, image, record)


def _description(record: ScanRecord) -> str:
    if record.status == "ACTIVE":
        return ACTIVE_DESCRIPTIONS.get(record.frequency, ACTIVE_DESCRIPTIONS["SCAN_ON_PUSH"])
    return DESCRIPTIONS.get(record.status, record.status)


def _emit_completion(account: str, region: str, repo: Repository, image: Image, record: ScanRecord) -> None:
    tags = list(image.image_tags)
    if not record.enhanced:
        detail: dict[str, Any] = {"scan-status": record.status, "repository-name": repo.name}
        if record.status == "COMPLETE":
            detail["finding-severity-counts"] = dict(record.severity_counts)
        detail.update({"image-digest": record.digest, "image-tags": tags})
        events.emit(account, region, "aws.ecr", "ECR Image Scan", detail, [repo.arn])
    elif record.status == "ACTIVE":
        counts = {key: record.severity_counts.get(key, 0) for key in ("CRITICAL", "HIGH", "MEDIUM")}
        counts["TOTAL"] = sum(record.severity_counts.values())
        detail = {
            "scan-status": "INITIAL_SCAN_COMPLETE",
            "repository-name": repo.arn,
            "finding-severity-counts": counts,
            "image-digest": record.digest,
            "image-tags": tags,
        }
        events.emit(account, region, "aws.inspector2", "Inspector2 Scan", detail, [repo.arn])


def scan_record(registry: RegistryState, repository: str, digest: str) -> ScanRecord | None:
    return registry.scans.get((repository, digest))


def describe_image_scan_findings(self: ECRBackend, registry_id: str, repository_name: str, image_id: dict[str, Any]) -> dict[str, Any]:
    """DescribeImageScanFindings from the scan record; ScanNotFoundException if never scanned."""
    repo = self._get_repository(repository_name, registry_id)
    image = repo._get_image(image_id.get("imageTag"), image_id.get("imageDigest"))
    record = scan_record(STORE.registry(self.account_id, self.region_name), repo.name, image.image_digest)
    if record is None:
        shown = f"{{imageDigest:'{image_id.get('imageDigest') or 'null'}', imageTag:'{image_id.get('imageTag') or 'null'}'}}"
        raise ScanNotFoundException(image_id=shown, repository_name=repo.name, registry_id=repo.registry_id)
    response: dict[str, Any] = {
        "registryId": repo.registry_id,
        "repositoryName": repo.name,
        "imageId": {"imageDigest": image.image_digest, **({"imageTag": image_id["imageTag"]} if image_id.get("imageTag") else {})},
        "imageScanStatus": {"status": record.status, "description": record.description},
    }
    if record.status in SUCCESS.values():
        response["imageScanFindings"] = _findings_block(self, repo, image, record)
    return response


def _findings_block(backend: ECRBackend, repo: Repository, image: Image, record: ScanRecord) -> dict[str, Any]:
    block: dict[str, Any] = {
        "imageScanCompletedAt": record.completed_at,
        "vulnerabilitySourceUpdatedAt": record.completed_at,
        "findingSeverityCounts": dict(record.severity_counts),
    }
    if record.enhanced:
        pushed = datetime.fromtimestamp(image.image_pushed_at, tz=timezone.utc)
        block["enhancedFindings"] = [
            findings.enhanced(f, backend.account_id, backend.region_name, repo.name, record.digest,
                              list(image.image_tags), pushed, record.completed_at)
            for f in record.findings
        ]
    else:
        block["findings"] = [findings.basic(f) for f in record.findings]
    return block


def summary(registry: RegistryState, repository: str, digest: str) -> dict[str, Any]:
    """The `imageScanStatus` and `imageScanFindingsSummary` members of an image's DescribeImages entry."""
    record = scan_record(registry, repository, digest)
    if record is None:
        return {}
    out: dict[str, Any] = {"imageScanStatus": {"status": record.status, "description": record.description}}
    if record.status in SUCCESS.values():
        out["imageScanFindingsSummary"] = {
            "imageScanCompletedAt": record.completed_at,
            "vulnerabilitySourceUpdatedAt": record.completed_at,
            "findingSeverityCounts": dict(record.severity_counts),
        }
    return out
