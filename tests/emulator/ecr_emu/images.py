"""Storing, tagging and deleting images in moto's ECR repositories, as ECR does.

moto derives digests from layer digests (or at random) and deletes an image
when a new push takes its only tag. Here an image is keyed by the sha256 of
its manifest bytes, a moved tag leaves the old image behind untagged, tag
immutability honours wildcard exclusion filters, and every push and delete
emits the `ECR Image Action` event AWS would put on the default bus.
"""
from __future__ import annotations

import re
from typing import Any

from moto.ecr.exceptions import ImageAlreadyExistsException
from moto.ecr.models import ECRBackend, Image, Repository

from . import events, manifests, wildcard
from .errors import AwsError
from .state import STORE

DIGEST_PATTERN = re.compile(r"[a-zA-Z0-9_+.-]+:[a-fA-F0-9]+")


def manifest_of(image: Image) -> manifests.Manifest:
    """The parsed manifest of a stored image: kept from the push, or parsed once if moto stored the image."""
    parsed = getattr(image, "emu_manifest", None)
    if parsed is None:
        parsed = manifests.parse(image.image_manifest, image.image_manifest_media_type)
        image.emu_manifest = parsed
    return parsed


def find(repo: Repository, digest: str) -> Image | None:
    return next((image for image in repo.images if image.image_digest == digest), None)


def tag_is_immutable(repo: Repository, tag: str) -> bool:
    """Whether `tag` may not move in `repo`, given its mutability mode and exclusion filters."""
    mode = repo.image_tag_mutability  # a str (or moto's str-valued enum)
    excluded = wildcard.any_filter_matches(repo.image_tag_mutability_exclusion_filters or [], tag) is not None
    if mode == "IMMUTABLE":
        return True
    if mode == "IMMUTABLE_WITH_EXCLUSION":
        return not excluded
    if mode == "MUTABLE_WITH_EXCLUSION":
        return excluded
    return False


def _drop_tag(image: Image, tag: str) -> None:
    image.image_tags.remove(tag)
    image.image_tag = image.image_tags[-1] if image.image_tags else None


def _claim_tag(repo: Repository, tag: str, digest: str) -> None:
    """Takes `tag` away from whichever other image holds it, unless the tag is immutable."""
    holder = next((image for image in repo.images if tag in image.image_tags), None)
    if holder is None or holder.image_digest == digest:
        return
    if tag_is_immutable(repo, tag):
        raise AwsError(
            "ImageTagAlreadyExistsException",
            f"The image tag '{tag}' already exists in the '{repo.name}' repository "
            "and cannot be overwritten because the tag is immutable.",
        )
    _drop_tag(holder, tag)


def store(backend: ECRBackend, repo: Repository, manifest: manifests.Manifest, tag: str | None) -> tuple[Image, bool]:
    """Stores a pushed manifest under `tag`; returns the image and whether it is new."""
    image = find(repo, manifest.digest)
    if image is not None and (tag is None or tag in image.image_tags):
        raise ImageAlreadyExistsException(
            repository_name=repo.name, registry_id=repo.registry_id, digest=manifest.digest, image_tag=tag or "null"
        )
    if tag is not None:
        _claim_tag(repo, tag, manifest.digest)
    is_new = image is None
    if image is None:
        image = Image(backend.account_id, tag, manifest.text, repo.name, manifest.media_type, manifest.digest)
        image.emu_manifest = manifest
        repo.images.append(image)
        STORE.registry(backend.account_id, backend.region_name).forget_image(repo.name, manifest.digest)
    else:
        image.update_tag(tag)
    emit_image_action(backend, repo.name, "PUSH", manifest, tag)
    return image, is_new


def emit_image_action(
    backend: ECRBackend, repository: str, action: str, manifest: manifests.Manifest, tag: str | None
) -> None:
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": manifest.digest,
        "action-type": action,
    }
    if tag:
        detail["image-tag"] = tag
    detail["manifest-media-type"] = manifest.media_type
    if manifest.is_artifact and manifest.artifact_media_type:
        detail["artifact-media-type"] = manifest.artifact_media_type
    events.emit(backend.account_id, backend.region_name, "aws.ecr", "ECR Image Action", detail)


def delete(backend: ECRBackend, repo: Repository, image_ids: list[dict[str, str]]) -> dict[str, Any]:
    """BatchDeleteImage: removes tags or whole images, one DELETE event per removed id."""
    deleted: list[dict[str, str]] = []
    failures: list[dict[str, Any]] = []
    for image_id in image_ids:
        failure = _delete_one(backend, repo, image_id, deleted)
        if failure is not None:
            failures.append(failure)
    return {"imageIds": deleted, "failures": failures}


def _delete_one(
    backend: ECRBackend, repo: Repository, image_id: dict[str, str], deleted: list[dict[str, str]]
) -> dict[str, Any] | None:
    digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
    if not digest and not tag:
        return _failure(image_id, "MissingDigestAndTag", "Invalid request parameters: both tag and digest cannot be null")
    if digest and not DIGEST_PATTERN.fullmatch(digest):
        return _failure(image_id, "InvalidImageDigest", "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'")
    image = find(repo, digest) if digest else next((i for i in repo.images if tag in i.image_tags), None)
    if image is None or (digest and tag and tag not in image.image_tags):
        return _failure(image_id, "ImageNotFound", "Requested image not found")
    manifest = manifest_of(image)
    if not digest and len(image.image_tags) > 1:
        _drop_tag(image, tag)
        removed = [tag]
    else:
        repo.images.remove(image)
        STORE.registry(backend.account_id, backend.region_name).forget_image(repo.name, image.image_digest)
        removed = list(image.image_tags) or [None]
    for removed_tag in removed:
        deleted.append({"imageDigest": manifest.digest, **({"imageTag": removed_tag} if removed_tag else {})})
        emit_image_action(backend, repo.name, "DELETE", manifest, removed_tag)
    return None


def _failure(image_id: dict[str, str], code: str, reason: str) -> dict[str, Any]:
    return {"imageId": dict(image_id), "failureCode": code, "failureReason": reason}


def referrers_of(repo: Repository, subject_digest: str) -> list[Image]:
    return [image for image in repo.images if manifest_of(image).subject_digest == subject_digest]
