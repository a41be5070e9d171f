"""Wires the ECR behaviour of the extension into moto's ECR backend and responses.

Existing operations keep moto's parsing and serialisation (driven by the
botocore model, so member names and error shapes are AWS's); only the backend
methods whose behaviour differs from AWS are replaced. Operations moto lacks
are added as response methods, which moto's dispatcher finds by name.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from moto.core.responses import ActionResult
from moto.ecr.models import ECRBackend, Image, Repository, RepoTagMutability
from moto.ecr.responses import ECRResponse

from . import blobs, images, manifests, paging, registry_settings, scanning, signing
from .errors import AwsError
from .state import STORE, RegistryState

bad_token = paging.service_error("InvalidParameterException")
#: ImageTagMutabilityExclusionFilter.filter in the API reference (botocore checks only the length).
EXCLUSION_FILTER = re.compile(r"^[0-9a-zA-Z._*-]{1,128}$")
_MOTO_PUT_IMAGE_TAG_MUTABILITY = ECRBackend.put_image_tag_mutability


def _check_exclusion_filters(mutability: str | None, filters: list[dict[str, str]] | None) -> None:
    for exclusion in filters or []:
        if not EXCLUSION_FILTER.match(str(exclusion.get("filter", ""))):
            raise AwsError(
                "InvalidParameterException",
                f"Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
                f"'{exclusion.get('filter')}' is not a valid tag filter",
            )
    if mutability in list(RepoTagMutability):
        ECRBackend.validate_image_tag_mutability_params_compatibility(mutability, filters or None)


def create_repository(self: ECRBackend, *args: Any, **kwargs: Any) -> Repository:
    """CreateRepository with the tag filter pattern checked (moto checks only filterType)."""
    _check_exclusion_filters(kwargs.get("image_tag_mutability"), kwargs.get("image_tag_mutability_exclusion_filters"))
    return scanning.create_repository(self, *args, **kwargs)


def put_image_tag_mutability(
    self: ECRBackend,
    registry_id: str | None,
    repository_name: str,
    image_tag_mutability: str,
    image_tag_mutability_exclusion_filters: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """As CreateRepository: filters only with a *_WITH_EXCLUSION mode (moto silently turned MUTABLE plus
    filters into MUTABLE_WITH_EXCLUSION), and the response echoes the filters as AWS's does."""
    _check_exclusion_filters(image_tag_mutability, image_tag_mutability_exclusion_filters)
    response = _MOTO_PUT_IMAGE_TAG_MUTABILITY(
        self, registry_id, repository_name, image_tag_mutability, image_tag_mutability_exclusion_filters
    )
    if image_tag_mutability_exclusion_filters:
        response["imageTagMutabilityExclusionFilters"] = image_tag_mutability_exclusion_filters
    return response


def put_image(
    self: ECRBackend,
    repository_name: str,
    image_manifest: str,
    image_tag: str | None,
    image_manifest_mediatype: str | None = None,
    digest: str | None = None,
) -> Image:
    """PutImage: digest = sha256 of the manifest bytes; a new image may start a scan and signing."""
    repo = self._get_repository(repository_name)
    manifest = manifests.parse(image_manifest, image_manifest_mediatype)
    if digest and digest != manifest.digest:
        raise AwsError(
            "ImageDigestDoesNotMatchException",
            f"Invalid parameter at 'imageDigest' failed to satisfy constraint: '{digest}' does not match "
            f"the digest of the image manifest, '{manifest.digest}'",
        )
    blobs.check_layers_present(self, repo, manifest)
    image, is_new = images.store(self, repo, manifest, image_tag)
    if is_new:
        scanning.on_push(self, repo, image)
        signing.on_push(self, repo, image)
    return image


def batch_delete_image(
    self: ECRBackend, repository_name: str, registry_id: str | None = None, image_ids: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return images.delete(self, self._get_repository(repository_name, registry_id), image_ids or [])


def _image_detail(registry: RegistryState, repo: Repository, image: Image) -> dict[str, Any]:
    manifest = images.manifest_of(image)
    detail: dict[str, Any] = {
        "registryId": repo.registry_id,
        "repositoryName": repo.name,
        "imageDigest": manifest.digest,
        "imageSizeInBytes": manifest.blob_sizes or manifest.size,
        "imagePushedAt": datetime.fromtimestamp(image.image_pushed_at, tz=timezone.utc),
        "imageManifestMediaType": manifest.media_type,
        "imageStatus": "ACTIVE",
    }
    if image.image_tags:
        detail["imageTags"] = list(image.image_tags)
    if manifest.artifact_media_type:
        detail["artifactMediaType"] = manifest.artifact_media_type
    if manifest.subject_digest:
        detail["subjectManifestDigest"] = manifest.subject_digest
    detail.update(scanning.summary(registry, repo.name, manifest.digest))
    return detail


def _tag_status_ok(image: Image, tag_status: str) -> bool:
    return tag_status == "ANY" or (tag_status == "TAGGED") == bool(image.image_tags)


def describe_images(self: ECRResponse) -> ActionResult:
    """DescribeImages with artifact, subject and scan members, the tagStatus filter and paging."""
    repo = self.ecr_backend._get_repository(self._get_param("repositoryName"), self._get_param("registryId"))
    image_ids = self._get_param("imageIds")
    if image_ids:
        chosen = list({id(i): i for i in (repo._get_image(x.get("imageTag"), x.get("imageDigest")) for x in image_ids)}.values())
    else:
        tag_status = (self._get_param("filter") or {}).get("tagStatus", "ANY")
        chosen = [image for image in repo.images if _tag_status_ok(image, tag_status)]
    found, token = paging.page(chosen, self._get_param("maxResults"), self._get_param("nextToken"), 100, bad_token)
    registry = STORE.registry(self.current_account, self.region)
    return ActionResult({"imageDetails": [_image_detail(registry, repo, image) for image in found], "nextToken": token})


def list_images(self: ECRResponse) -> ActionResult:
    """ListImages with paging (moto returns everything at once)."""
    repo = self.ecr_backend._get_repository(self._get_param("repositoryName"), self._get_param("registryId"))
    tag_status = (self._get_param("filter") or {}).get("tagStatus", "ANY")
    ids = [
        {"imageDigest": image.image_digest, **({"imageTag": tag} if tag else {})}
        for image in repo.images
        if _tag_status_ok(image, tag_status)
        for tag in (image.image_tags or [None])
    ]
    found, token = paging.page(ids, self._get_param("maxResults"), self._get_param("nextToken"), 100, bad_token)
    return ActionResult({"imageIds": found, "nextToken": token})


def list_image_referrers(self: ECRResponse) -> ActionResult:
    """ListImageReferrers: the artifacts whose subject is the given digest, filtered by artifact type."""
    repo = self.ecr_backend._get_repository(self._get_param("repositoryName"), self._get_param("registryId"))
    subject = (self._get_param("subjectId") or {}).get("imageDigest")
    wanted = (self._get_param("filter") or {}).get("artifactTypes") or []
    status = (self._get_param("filter") or {}).get("artifactStatus", "ACTIVE")
    referrers = [
        images.manifest_of(image)
        for image in images.referrers_of(repo, subject)
        if status in ("ACTIVE", "ANY") and (not wanted or images.manifest_of(image).artifact_media_type in wanted)
    ]
    found, token = paging.page(referrers, self._get_param("maxResults"), self._get_param("nextToken"), 20, bad_token)
    return ActionResult({"referrers": [_referrer(m) for m in found], "nextToken": token})


def _referrer(manifest: manifests.Manifest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "digest": manifest.digest,
        "mediaType": manifest.media_type,
        "size": manifest.size,
        "artifactStatus": "ACTIVE",
    }
    if manifest.artifact_media_type:
        out["artifactType"] = manifest.artifact_media_type
    if manifest.annotations:
        out["annotations"] = manifest.annotations
    return out


def get_registry_scanning_configuration(self: ECRResponse) -> ActionResult:
    return ActionResult({"registryId": self.current_account,
                         "scanningConfiguration": self.ecr_backend.registry_scanning_configuration})


def put_registry_scanning_configuration(self: ECRResponse) -> ActionResult:
    """Answers the configuration as stored (moto echoed the request, so an omitted scanType came back null)."""
    self.ecr_backend.put_registry_scanning_configuration(self._get_param("scanType"), self._get_param("rules"))
    return ActionResult({"registryScanningConfiguration": self.ecr_backend.registry_scanning_configuration})


def put_signing_configuration(self: ECRResponse) -> ActionResult:
    return ActionResult(signing.put_configuration(self.ecr_backend, self._get_param("signingConfiguration") or {}))


def get_signing_configuration(self: ECRResponse) -> ActionResult:
    return ActionResult(signing.get_configuration(self.ecr_backend))


def delete_signing_configuration(self: ECRResponse) -> ActionResult:
    return ActionResult(signing.delete_configuration(self.ecr_backend))


def describe_image_signing_status(self: ECRResponse) -> ActionResult:
    return ActionResult(
        signing.describe_status(
            self.ecr_backend, self._get_param("repositoryName"), self._get_param("imageId") or {}, self._get_param("registryId")
        )
    )


BACKEND_METHODS = {
    "put_image": put_image,
    "batch_delete_image": batch_delete_image,
    "start_image_scan": scanning.start_image_scan,
    "describe_image_scan_findings": scanning.describe_image_scan_findings,
    "batch_get_repository_scanning_configuration": scanning.batch_get_repository_scanning_configuration,
    "put_registry_scanning_configuration": scanning.put_registry_scanning_configuration,
    "create_repository": create_repository,
    "put_image_tag_mutability": put_image_tag_mutability,
}
RESPONSE_METHODS = {
    "describe_images": describe_images,
    "list_images": list_images,
    "list_image_referrers": list_image_referrers,
    "put_signing_configuration": put_signing_configuration,
    "get_signing_configuration": get_signing_configuration,
    "delete_signing_configuration": delete_signing_configuration,
    "describe_image_signing_status": describe_image_signing_status,
    "get_registry_scanning_configuration": get_registry_scanning_configuration,
    "put_registry_scanning_configuration": put_registry_scanning_configuration,
    **registry_settings.RESPONSE_METHODS,
}


def install() -> None:
    for name, method in BACKEND_METHODS.items():
        setattr(ECRBackend, name, method)
    for name, method in RESPONSE_METHODS.items():
        setattr(ECRResponse, name, method)
