"""ECR's layer (blob) API and the download URLs the emulator serves itself.

moto stores manifests only. Clients that push real artifacts (a Notation or
Cosign signature, an SBOM) upload their blobs first with `InitiateLayerUpload`,
`UploadLayerPart` and `CompleteLayerUpload`, check them with
`BatchCheckLayerAvailability`, and a reader fetches one through the URL that
`GetDownloadUrlForLayer` returns. Blobs live in memory per (account, region,
repository) under a total size cap; the URL is
`http://HOST/_emulator/blobs/ACCOUNT/REGION/REPOSITORY/DIGEST?expires=...&signature=...`,
answered by `serve()` (AWS answers with a presigned S3 HTTPS URL instead).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from moto.core.responses import ActionResult
from moto.ecr.models import ECRBackend, Repository
from moto.ecr.responses import ECRResponse

from . import images
from .errors import AwsError
from .manifests import Manifest
from .state import LOCK, STORE

#: What InitiateLayerUpload tells clients to send per part (AWS answers a partSize too).
PART_SIZE = 10 * 1024 * 1024
#: How long a download URL stays valid (an assumption: S3 presigned URLs carry their own expiry).
URL_LIFETIME_SECONDS = 3600
BLOB_PATH = "/_emulator/blobs/"
#: Signs download URLs so that a hand-made or edited URL is refused, as S3 refuses a bad signature.
_URL_KEY = secrets.token_bytes(32)


def _cap_bytes() -> int:
    value = os.environ.get("ECR_EMU_BLOB_CAP_BYTES")
    return int(value) if value else 256 * 1024 * 1024


@dataclass
class Upload:
    """An upload started by InitiateLayerUpload and not yet completed."""

    account: str
    region: str
    repository: str
    data: bytearray = field(default_factory=bytearray)


@dataclass
class BlobStore:
    """Every uploaded blob and every open upload; `clear()` on reset."""

    blobs: dict[tuple[str, str, str], dict[str, bytes]] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)

    def clear(self) -> None:
        self.blobs.clear()
        self.uploads.clear()

    def used_bytes(self) -> int:
        stored = sum(len(blob) for repository in self.blobs.values() for blob in repository.values())
        return stored + sum(len(upload.data) for upload in self.uploads.values())

    def repository(self, account: str, region: str, repository: str) -> dict[str, bytes]:
        return self.blobs.setdefault((account, region, repository), {})

    def get(self, account: str, region: str, repository: str, digest: str) -> bytes | None:
        return self.blobs.get((account, region, repository), {}).get(digest)

    def put(self, account: str, region: str, repository: str, data: bytes) -> str:
        """Stores `data` (internal pushes such as managed signing); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._check_room(len(data))
        self.repository(account, region, repository)[digest] = bytes(data)
        return digest

    def _check_room(self, extra: int) -> None:
        if self.used_bytes() + extra > _cap_bytes():
            raise AwsError(
                "LimitExceededException",
                f"The emulator's blob store is full ({_cap_bytes()} bytes, ECR_EMU_BLOB_CAP_BYTES).",
            )


BLOBS = BlobStore()


def _repository(response: ECRResponse) -> Repository:
    return response.ecr_backend._get_repository(response._get_param("repositoryName"), response._get_param("registryId"))


def _upload(response: ECRResponse, repo: Repository) -> tuple[str, Upload]:
    upload_id = str(response._get_param("uploadId") or "")
    upload = BLOBS.uploads.get(upload_id)
    backend: ECRBackend = response.ecr_backend
    if upload is None or (upload.account, upload.region, upload.repository) != (backend.account_id, backend.region_name, repo.name):
        raise AwsError(
            "UploadNotFoundException",
            f"Upload with upload id '{upload_id}' is not found in repository '{repo.name}' in registry '{repo.registry_id}'.",
        )
    return upload_id, upload


def initiate_layer_upload(self: ECRResponse) -> ActionResult:
    """InitiateLayerUpload: a new upload id in the repository."""
    repo = _repository(self)
    upload_id = str(uuid.uuid4())
    BLOBS.uploads[upload_id] = Upload(self.ecr_backend.account_id, self.ecr_backend.region_name, repo.name)
    return ActionResult({"uploadId": upload_id, "partSize": PART_SIZE})


def _invalid_part(repo: Repository, upload_id: str, upload: Upload, message: str) -> AwsError:
    error = AwsError("InvalidLayerPartException", message)
    # The API's InvalidLayerPartException carries these members besides the message (moto serialises the
    # snake_case attributes of an exception as the model's members).
    error.registry_id, error.repository_name, error.upload_id = repo.registry_id, repo.name, upload_id
    error.last_valid_byte_received = len(upload.data) - 1
    return error


def _part_bytes(raw: Any) -> bytes:
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    try:
        return base64.b64decode(str(raw or ""), validate=True)
    except ValueError:
        raise AwsError("InvalidParameterException", "Invalid parameter at 'layerPartBlob': not base64")


def upload_layer_part(self: ECRResponse) -> ActionResult:
    """UploadLayerPart: parts arrive in order; a part that does not start right after the last byte received, or
    whose range does not match its length, is refused with InvalidLayerPartException."""
    repo = _repository(self)
    upload_id, upload = _upload(self, repo)
    part = _part_bytes(self._get_param("layerPartBlob"))
    first, last = self._get_param("partFirstByte"), self._get_param("partLastByte")
    if not isinstance(first, int) or not isinstance(last, int):
        raise AwsError("InvalidParameterException", "partFirstByte and partLastByte are required")
    if first != len(upload.data):
        raise _invalid_part(repo, upload_id, upload, f"The part starts at byte {first}; byte {len(upload.data)} was expected next.")
    if last - first + 1 != len(part):
        raise _invalid_part(
            repo, upload_id, upload, f"The part range {first}-{last} does not match its length of {len(part)} bytes."
        )
    BLOBS._check_room(len(part))
    upload.data.extend(part)
    return ActionResult(
        {"registryId": repo.registry_id, "repositoryName": repo.name, "uploadId": upload_id, "lastByteReceived": last}
    )


def complete_layer_upload(self: ECRResponse) -> ActionResult:
    """CompleteLayerUpload: the digest must be the sha256 of the bytes received (else InvalidLayerException);
    an empty upload is EmptyUploadException; a blob the repository already holds is LayerAlreadyExistsException."""
    repo = _repository(self)
    upload_id, upload = _upload(self, repo)
    digests = self._get_param("layerDigests") or []
    if not upload.data:
        raise AwsError("EmptyUploadException", f"The upload '{upload_id}' contains no layer parts.")
    actual = "sha256:" + hashlib.sha256(upload.data).hexdigest()
    if actual not in digests:
        raise AwsError(
            "InvalidLayerException",
            f"The layer digest calculation performed by Amazon ECR upon receipt of the image layer ({actual}) "
            f"does not match the digest specified ({', '.join(digests)}).",
        )
    stored = BLOBS.repository(upload.account, upload.region, upload.repository)
    del BLOBS.uploads[upload_id]
    if actual in stored:
        raise AwsError("LayerAlreadyExistsException", f"The layer '{actual}' already exists in the repository '{repo.name}'.")
    stored[actual] = bytes(upload.data)
    return ActionResult(
        {"registryId": repo.registry_id, "repositoryName": repo.name, "uploadId": upload_id, "layerDigest": actual}
    )


def batch_check_layer_availability(self: ECRResponse) -> ActionResult:
    """BatchCheckLayerAvailability: AVAILABLE with the size for stored blobs, a MissingLayerDigest failure otherwise."""
    repo = _repository(self)
    stored = BLOBS.repository(self.ecr_backend.account_id, self.ecr_backend.region_name, repo.name)
    layers: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for digest in self._get_param("layerDigests") or []:
        if not images.DIGEST_PATTERN.fullmatch(str(digest)):
            failures.append({"layerDigest": digest, "failureCode": "InvalidLayerDigest", "failureReason": "Invalid layer digest"})
        elif digest in stored:
            layers.append({"layerDigest": digest, "layerAvailability": "AVAILABLE", "layerSize": len(stored[digest])})
        else:
            failures.append({"layerDigest": digest, "failureCode": "MissingLayerDigest", "failureReason": "Could not find layer"})
    return ActionResult({"layers": layers, "failures": failures})


def _url_signature(blob: tuple[str, str, str, str], expires: int) -> str:
    return hmac.new(_URL_KEY, f"{'/'.join(blob)}?{expires}".encode(), hashlib.sha256).hexdigest()


def download_url(host: str, account: str, region: str, repository: str, digest: str) -> str:
    """A URL the emulator serves for one blob, valid for URL_LIFETIME_SECONDS."""
    path = BLOB_PATH + "/".join(quote(part, safe="/") for part in (account, region, repository, digest))
    expires = int(time.time() + URL_LIFETIME_SECONDS)
    signature = _url_signature((account, region, repository, digest), expires)
    return f"http://{host}{path}?expires={expires}&signature={signature}"


def _blob_of(path: str) -> tuple[str, str, str, str] | None:
    """(account, region, repository, digest) of a decoded download path; repository names may hold slashes."""
    parts = unquote(path[len(BLOB_PATH):]).split("/")
    if len(parts) < 4:
        return None
    return parts[0], parts[1], "/".join(parts[2:-1]), parts[-1]


def _referenced(repo: Repository, digest: str) -> bool:
    return any(digest in images.manifest_of(image).blob_digests for image in repo.images)


def get_download_url_for_layer(self: ECRResponse) -> ActionResult:
    """GetDownloadUrlForLayer: a URL for a stored blob that an image of the repository references (the API
    reference: "You can only get URLs for image layers that are referenced in an image"), else LayersNotFoundException."""
    repo = _repository(self)
    digest = str(self._get_param("layerDigest") or "")
    account, region = self.ecr_backend.account_id, self.ecr_backend.region_name
    if BLOBS.get(account, region, repo.name, digest) is None or not _referenced(repo, digest):
        raise AwsError("LayersNotFoundException", f"The layer '{digest}' could not be found in the repository '{repo.name}'.")
    host = self.headers.get("Host") or "127.0.0.1"
    return ActionResult({"downloadUrl": download_url(host, account, region, repo.name, digest), "layerDigest": digest})


def serve(path: str, query_string: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answers GET on a download URL: the blob (200), 403 for a bad or expired signature, 404 for a gone blob."""
    query = {key: values[-1] for key, values in parse_qs(query_string).items()}
    try:
        expires = int(query.get("expires", ""))
    except ValueError:
        return _plain(403, "AccessDenied: missing or malformed expires")
    wanted = _blob_of(path)
    if wanted is None or not hmac.compare_digest(query.get("signature", ""), _url_signature(wanted, expires)):
        return _plain(403, "SignatureDoesNotMatch")
    if time.time() > expires:
        return _plain(403, "AccessDenied: Request has expired")
    with LOCK:
        blob = BLOBS.get(*wanted)
    if blob is None:
        return _plain(404, "NoSuchKey")
    return 200, [("Content-Type", "application/octet-stream"), ("ETag", f'"{wanted[3]}"')], blob


def _plain(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "text/plain")], message.encode()


def check_layers_present(backend: ECRBackend, repo: Repository, manifest: Manifest) -> None:
    """With `require_layers` on, PutImage refuses a manifest naming a config or layer the repository does not hold
    (the PutImage API reference lists LayersNotFoundException)."""
    if not STORE.settings.require_layers:
        return
    stored = BLOBS.repository(backend.account_id, backend.region_name, repo.name)
    missing = [digest for digest in manifest.blob_digests if digest not in stored]
    if missing:
        raise AwsError(
            "LayersNotFoundException",
            f"The specified layers could not be found, or the specified layer is not valid for this repository: {', '.join(missing)}",
        )


RESPONSE_METHODS = {
    "initiate_layer_upload": initiate_layer_upload,
    "upload_layer_part": upload_layer_part,
    "complete_layer_upload": complete_layer_upload,
    "batch_check_layer_availability": batch_check_layer_availability,
    "get_download_url_for_layer": get_download_url_for_layer,
}


def install() -> None:
    for name, method in RESPONSE_METHODS.items():
        setattr(ECRResponse, name, method)
    STORE.on_reset(BLOBS.clear)
