"""Private image replication as configured by `PutReplicationConfiguration`.

moto stores the configuration and does nothing with it. Here every new push
(a new digest, or a tag added to one) into a repository that a rule selects is
copied at once to each of the rule's destinations (another region, another
account, or both): the destination repository is created when missing, the
image gets the same digest and tag, and the destination registry receives the
`ECR Replication Action` event, with the source account and region. Deletes
are not replicated (the user guide: replication copies pushes only).
"""
from __future__ import annotations

from typing import Any

from moto.ecr.models import ECRBackend, Image, Repository, ecr_backends

from . import creation, events, images, manifests
from .errors import AwsError
from .state import LOCK

_ECR_PUT_IMAGE = ECRBackend.put_image


def _selected(rule: dict[str, Any], repository: str) -> bool:
    """No filter = every repository; PREFIX_MATCH filters select names starting with them."""
    filters = rule.get("repositoryFilters") or []
    return not filters or any(repository.startswith(f.get("filter", "")) for f in filters if f.get("filterType") == "PREFIX_MATCH")


def destinations(backend: ECRBackend, repository: str) -> list[tuple[str, str]]:
    """(account, region) of every destination the registry's replication rules send `repository` to."""
    config = getattr(backend, "replication_config", None) or {}
    found: list[tuple[str, str]] = []
    for rule in config.get("rules") or []:
        if _selected(rule, repository):
            for destination in rule.get("destinations") or []:
                target = (str(destination["registryId"]), str(destination["region"]))
                if target not in found and target != (backend.account_id, backend.region_name):
                    found.append(target)
    return found


def _store_replica(target: ECRBackend, name: str, manifest: manifests.Manifest, tag: str | None) -> str:
    """Stores the image in the destination; returns the event's `result`."""
    repo = target.repositories.get(name)
    if repo is None:
        repo = creation.create_repository(target, name, "REPLICATION")
    image = images.find(repo, manifest.digest)
    if image is not None and (tag is None or tag in image.image_tags):
        return "SUCCESS"
    try:
        if tag is not None:
            images._claim_tag(repo, tag, manifest.digest)
    except AwsError:  # an immutable tag held by another image in the destination
        return "FAILED"
    if image is None:
        image = Image(target.account_id, tag, manifest.text, repo.name, manifest.media_type, manifest.digest)
        image.emu_manifest = manifest
        repo.images.append(image)
    else:
        image.update_tag(tag)
    return "SUCCESS"


def replicate(backend: ECRBackend, repo: Repository, image: Image, tag: str | None) -> None:
    manifest = images.manifest_of(image)
    for account, region in destinations(backend, repo.name):
        target = ecr_backends[account][region]
        result = _store_replica(target, repo.name, manifest, tag)
        detail: dict[str, Any] = {
            "result": result,
            "repository-name": repo.name,
            "image-digest": manifest.digest,
            "source-account": backend.account_id,
            "action-type": "REPLICATE",
            "source-region": backend.region_name,
        }
        if tag:
            detail["image-tag"] = tag
        arn = f"arn:aws:ecr:{region}:{account}:repository/{repo.name}"
        events.emit(account, region, "aws.ecr", "ECR Replication Action", detail, [arn])


def put_image(self: ECRBackend, repository_name: str, image_manifest: str, image_tag: str | None,
              image_manifest_mediatype: str | None = None, digest: str | None = None) -> Image:
    image = _ECR_PUT_IMAGE(self, repository_name, image_manifest, image_tag, image_manifest_mediatype, digest)
    with LOCK:
        replicate(self, self._get_repository(repository_name), image, image_tag)
    return image


def install() -> None:
    """After ecr.install(): wraps its PutImage."""
    global _ECR_PUT_IMAGE
    _ECR_PUT_IMAGE = ECRBackend.put_image
    ECRBackend.put_image = put_image  # type: ignore[method-assign]
