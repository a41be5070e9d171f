"""Reading image manifests the way ECR does.

ECR names every manifest by the sha256 of its exact bytes, so two pushes of
the same bytes are the same image and a re-serialised manifest is another
one. OCI 1.1 manifests may carry `artifactType` and `subject`: those make the
manifest an artifact about another image (a signature, an SBOM) rather than
an image.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .errors import AwsError

NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"{}").hexdigest()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """The facts ECR derives from one pushed manifest."""

    text: str
    digest: str
    media_type: str
    artifact_type: str | None
    config_media_type: str | None
    subject_digest: str | None
    annotations: dict[str, str]
    blob_sizes: int
    #: The config and layer digests the manifest names, in order (empty for an index).
    blob_digests: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.text.encode("utf-8"))

    @property
    def is_artifact(self) -> bool:
        """An artifact describes another image (it has a subject or an artifact type)."""
        return self.artifact_type is not None or self.subject_digest is not None

    @property
    def artifact_media_type(self) -> str | None:
        """What DescribeImages reports as `artifactMediaType`."""
        return self.artifact_type or self.config_media_type


def invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterException", message)


def parse(text: str, declared_media_type: str | None) -> Manifest:
    """Parses a manifest as pushed with PutImage; raises InvalidParameterException if unusable."""
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        raise invalid("Invalid parameter at 'imageManifest' failed to satisfy constraint: 'Invalid JSON syntax'")
    if not isinstance(body, dict):
        raise invalid("Invalid parameter at 'imageManifest' failed to satisfy constraint: 'Invalid JSON syntax'")
    media_type = declared_media_type or body.get("mediaType")
    if not media_type:
        raise invalid("image manifest mediatype not provided in manifest or parameter")
    config = body.get("config") if isinstance(body.get("config"), dict) else {}
    subject = body.get("subject") if isinstance(body.get("subject"), dict) else {}
    blobs = [config, *[layer for layer in body.get("layers") or [] if isinstance(layer, dict)]]
    return Manifest(
        text=text,
        digest=sha256_digest(text.encode("utf-8")),
        media_type=media_type,
        artifact_type=body.get("artifactType"),
        config_media_type=config.get("mediaType"),
        subject_digest=subject.get("digest"),
        annotations=dict(body.get("annotations") or {}),
        blob_sizes=sum(int(blob.get("size") or 0) for blob in blobs),
        blob_digests=tuple(str(blob["digest"]) for blob in blobs if blob.get("digest")),
    )
