"""ECR managed signing, which moto lacks entirely.

A registry signing configuration holds up to ten rules, each a Signer profile
ARN and optional wildcard repository filters (none means every repository).
Each new image pushed into a matching repository gets one status per distinct
profile: IN_PROGRESS at once, then after the signing delay COMPLETE (a Notation
signature artifact whose subject is the image is pushed into the same
repository) or FAILED when the profile is missing, canceled or revoked at that
moment. Artifacts themselves (signatures, SBOMs) are not signed.
"""
from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import Any

from moto.ecr.models import ECRBackend, Image, Repository, ecr_backends
from moto.signer.models import SigningProfile, signer_backends

from . import images, manifests, notary, wildcard
from .errors import AwsError
from .state import STORE, SigningRecord, schedule

PROFILE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:signer:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):/signing-profiles/(?P<name>[a-zA-Z0-9_]{2,})$")
MAX_RULES = 10
MAX_FILTERS = 100


def _invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterException", message)


def _not_found(registry_id: str) -> AwsError:
    return AwsError(
        "SigningConfigurationNotFoundException",
        f"Signing configuration does not exist in the registry with id '{registry_id}'",
    )


def _validate(configuration: dict[str, Any]) -> None:
    rules = configuration.get("rules")
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise _invalid(f"Invalid parameter at 'signingConfiguration.rules': between 0 and {MAX_RULES} rules are allowed")
    for rule in rules:
        if not PROFILE_ARN.match(rule.get("signingProfileArn") or ""):
            raise _invalid(f"Invalid parameter at 'signingProfileArn': '{rule.get('signingProfileArn')}' is not a signing profile ARN")
        filters = rule.get("repositoryFilters") or []
        if len(filters) > MAX_FILTERS:
            raise _invalid(f"Invalid parameter at 'repositoryFilters': at most {MAX_FILTERS} filters are allowed per rule")
        if any(f.get("filterType") != "WILDCARD_MATCH" for f in filters):
            raise _invalid("Invalid parameter at 'filterType': only WILDCARD_MATCH is supported")


def put_configuration(backend: ECRBackend, configuration: dict[str, Any]) -> dict[str, Any]:
    _validate(configuration)
    STORE.registry(backend.account_id, backend.region_name).signing_configuration = copy.deepcopy(configuration)
    return {"signingConfiguration": configuration}


def get_configuration(backend: ECRBackend) -> dict[str, Any]:
    configuration = STORE.registry(backend.account_id, backend.region_name).signing_configuration
    if configuration is None:
        raise _not_found(backend.account_id)
    return {"registryId": backend.account_id, "signingConfiguration": configuration}


def delete_configuration(backend: ECRBackend) -> dict[str, Any]:
    response = get_configuration(backend)
    STORE.registry(backend.account_id, backend.region_name).signing_configuration = None
    return response


def matching_profiles(configuration: dict[str, Any] | None, repository: str) -> list[str]:
    """Distinct profile ARNs of the rules that apply to `repository`, in rule order."""
    profiles: list[str] = []
    for rule in (configuration or {}).get("rules") or []:
        filters = rule.get("repositoryFilters") or []
        applies = not filters or wildcard.any_filter_matches(filters, repository) is not None
        if applies and rule["signingProfileArn"] not in profiles:
            profiles.append(rule["signingProfileArn"])
    return profiles


def on_push(backend: ECRBackend, repo: Repository, image: Image) -> None:
    """Starts signing a newly pushed image if a rule matches its repository."""
    if images.manifest_of(image).is_artifact:
        return
    account, region = backend.account_id, backend.region_name
    registry = STORE.registry(account, region)
    profiles = matching_profiles(registry.signing_configuration, repo.name)
    if not profiles:
        return
    records = [SigningRecord(profile_arn=arn) for arn in profiles]
    key = (repo.name, image.image_digest)
    registry.signing[key] = records
    schedule(STORE.settings.signing_delay, lambda: _finish(account, region, key, records))


def _profile_of(profile_arn: str) -> SigningProfile | None:
    parsed = PROFILE_ARN.match(profile_arn)
    if not parsed:
        return None
    return signer_backends[parsed["account"]][parsed["region"]].signing_profiles.get(parsed["name"])


def _profile_problem(profile_arn: str) -> tuple[str, str] | None:
    """Why `profile_arn` cannot sign right now, as (failureCode, failureReason), or None if it can."""
    profile = _profile_of(profile_arn)
    if profile is None:
        return "SIGNING_PROFILE_NOT_FOUND", f"The signing profile '{profile_arn}' does not exist."
    if profile.status != "Active":
        return f"SIGNING_PROFILE_{profile.status.upper()}", f"The signing profile '{profile_arn}' is {profile.status.lower()}."
    return None


def _finish(account: str, region: str, key: tuple[str, str], records: list[SigningRecord]) -> None:
    if STORE.registry(account, region).signing.get(key) is not records:
        return
    backend = ecr_backends[account][region]
    repo = backend.repositories.get(key[0])
    image = images.find(repo, key[1]) if repo else None
    for record in records:
        problem = ("IMAGE_NOT_FOUND", "The image was deleted before it was signed.") if image is None else _profile_problem(record.profile_arn)
        if problem:
            record.status, (record.failure_code, record.failure_reason) = "FAILED", problem
            continue
        profile = _profile_of(record.profile_arn)
        signature = notary.signature_manifest(backend, repo, images.manifest_of(image), profile, datetime.now(timezone.utc))
        images.store(backend, repo, manifests.parse(signature, None), None)
        record.status = "COMPLETE"


def describe_status(backend: ECRBackend, repository_name: str, image_id: dict[str, str], registry_id: str | None) -> dict[str, Any]:
    """DescribeImageSigningStatus: one status per profile; an empty list when no rule matched."""
    repo = backend._get_repository(repository_name, registry_id)
    image = repo._get_image(image_id.get("imageTag"), image_id.get("imageDigest"))
    records = STORE.registry(backend.account_id, backend.region_name).signing.get((repo.name, image.image_digest), [])
    return {
        "repositoryName": repo.name,
        "imageId": {"imageDigest": image.image_digest, **({"imageTag": image_id["imageTag"]} if image_id.get("imageTag") else {})},
        "registryId": repo.registry_id,
        "signingStatuses": [record.to_api() for record in records],
    }
