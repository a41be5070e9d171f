"""Image pulls: `lastRecordedPullTime`, and pull-through cache repositories filled on a pull.

Nothing ever pulls from the emulator with a container runtime, so a pull is
simulated: `POST /_emulator/pull` (or an image read with `BatchGetImage`, the
manifest fetch of every real pull) records the pull time that `DescribeImages`
reports as `lastRecordedPullTime` and Inspector's coverage as `imagePulledAt`.
A pull of a repository or image that does not exist yet, under the prefix of a
pull-through cache rule, creates the repository and caches the image the way
ECR's pull-through cache does, and emits `ECR Pull Through Cache Action`.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import ServiceException
from moto.ecr.models import ECRBackend, Image, Repository, ecr_backends

from . import creation, ecr, events, images, manifests
from .control import BadRequest, Response
from .state import DEFAULT_REGION, LOCK, STORE

#: (account, region, repository, digest) → epoch seconds of the last recorded pull.
PULLED_AT: dict[tuple[str, str, str, str], float] = {}
PULL_KEYS = {"account", "region", "repositoryName", "imageTag", "imageDigest"}
_MOTO_BATCH_GET_IMAGE = ECRBackend.batch_get_image


def record_pull(account: str, region: str, repository: str, digest: str, moment: float | None = None) -> None:
    PULLED_AT[(account, region, repository, digest)] = moment if moment is not None else datetime.now(timezone.utc).timestamp()


def last_pull(account: str, region: str, repository: str, digest: str) -> datetime | None:
    moment = PULLED_AT.get((account, region, repository, digest))
    return datetime.fromtimestamp(moment, tz=timezone.utc) if moment is not None else None


def batch_get_image(self: ECRBackend, repository_name: str, registry_id: str | None = None,
                    image_ids: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """moto's BatchGetImage; every image it returns counts as pulled (the manifest fetch of a pull)."""
    response = _MOTO_BATCH_GET_IMAGE(self, repository_name, registry_id, image_ids)
    for image in response["images"]:
        record_pull(self.account_id, self.region_name, repository_name, image.image_digest)
    return response


def _cache_rule(account: str, region: str, repository: str) -> dict[str, Any] | None:
    """The pull-through cache rule whose prefix the repository name starts with (`prefix/…`)."""
    rules = STORE.registry(account, region).pull_through_cache_rules
    return next((rule for prefix, rule in rules.items() if repository.startswith(prefix + "/")), None)


def _upstream_manifest(rule: dict[str, Any], repository: str, tag: str) -> manifests.Manifest:
    """A stand-in for the upstream image: its bytes depend only on the upstream name and tag,
    so the same upstream image always caches as the same digest."""
    upstream = f"{rule['upstreamRegistryUrl']}/{repository.split('/', 1)[1]}:{tag}"
    seed = hashlib.sha256(upstream.encode()).hexdigest()
    body = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{seed}", "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(seed.encode()).hexdigest(), "size": 1024}],
        "annotations": {"org.opencontainers.image.ref.name": upstream},
    }
    return manifests.parse(json.dumps(body), body["mediaType"])


def _emit_cache_action(backend: ECRBackend, rule: dict[str, Any], repo: Repository, tag: str, digest: str) -> None:
    """Shaped as the ECR user guide's example ("Event for a pull through cache action")."""
    detail = {
        "rule-version": "1",
        "sync-status": "SUCCESS",
        "ecr-repository-prefix": rule["ecrRepositoryPrefix"],
        "repository-name": repo.name,
        "upstream-registry-url": rule["upstreamRegistryUrl"],
        "image-tag": tag,
        "image-digest": digest,
    }
    events.emit(backend.account_id, backend.region_name, "aws.ecr", "ECR Pull Through Cache Action", detail, [repo.arn])


def _pull_through(backend: ECRBackend, rule: dict[str, Any], name: str, tag: str) -> Image:
    repo = backend.repositories.get(name)
    if repo is None:
        repo = creation.create_repository(backend, name, "PULL_THROUGH_CACHE")
    manifest = _upstream_manifest(rule, name, tag)
    image = images.find(repo, manifest.digest)
    if image is None or tag not in image.image_tags:
        image, _ = images.store(backend, repo, manifest, tag)
    _emit_cache_action(backend, rule, repo, tag, manifest.digest)
    return image


def _find(repo: Repository | None, tag: str | None, digest: str | None) -> Image | None:
    if repo is None:
        return None
    if digest:
        return images.find(repo, digest)
    return next((image for image in repo.images if tag in image.image_tags), None)


def pull(body: dict[str, Any]) -> dict[str, Any]:
    """Pulls `repositoryName` by `imageTag` or `imageDigest`; fills a pull-through cache repository."""
    unknown = set(body) - PULL_KEYS
    if unknown or not body.get("repositoryName") or not (body.get("imageTag") or body.get("imageDigest")):
        raise BadRequest(f"keys: repositoryName and imageTag or imageDigest (optional account, region); unknown: {sorted(unknown)}")
    account, region = str(body.get("account", DEFAULT_ACCOUNT_ID)), str(body.get("region", DEFAULT_REGION))
    name, tag, digest = str(body["repositoryName"]), body.get("imageTag"), body.get("imageDigest")
    backend = ecr_backends[account][region]
    image = _find(backend.repositories.get(name), tag, digest)
    cached = False
    if image is None:
        rule = _cache_rule(account, region, name)
        if rule is None or not tag:
            raise LookupError(f"no image {tag or digest} in repository {name} and no pull-through cache rule for it")
        image, cached = _pull_through(backend, rule, name, str(tag)), True
    record_pull(account, region, name, image.image_digest)
    return {"repositoryName": name, "imageDigest": image.image_digest, "imageTags": list(image.image_tags),
            "pullThroughCache": cached}


def _pull_route(method: str, body: dict[str, Any], query: dict[str, str]) -> Response:
    if query:
        raise BadRequest("this endpoint takes no query parameters")
    with LOCK:
        try:
            return 200, pull(body)
        except LookupError as missing:
            return 404, {"error": str(missing)}
        except ServiceException as refused:  # e.g. the cached tag is immutable and held by another image
            return 409, {"error": f"{refused.code}: {refused.message}"}


ROUTES = {"/_emulator/pull": ({"POST"}, _pull_route)}


def _image_detail_with_pull_time(registry: Any, repo: Repository, image: Image) -> dict[str, Any]:
    detail = _ECR_IMAGE_DETAIL(registry, repo, image)
    pulled = last_pull(repo.account_id, repo.region_name, repo.name, image.image_digest)
    if pulled is not None:
        detail["lastRecordedPullTime"] = pulled
    return detail


_ECR_IMAGE_DETAIL = ecr._image_detail


def install() -> None:
    """After ecr.install(): wraps its DescribeImages detail (no edit of ecr.py needed)."""
    ECRBackend.batch_get_image = batch_get_image  # type: ignore[method-assign]
    ecr._image_detail = _image_detail_with_pull_time
    STORE.on_reset(PULLED_AT.clear)
