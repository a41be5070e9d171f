"""ECR's layer upload and download calls, and the download URLs the emulator serves (issue 15, item 8)."""
from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import pytest
from botocore.exceptions import ClientError

REPOSITORY = "team-api"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(ecr, data: bytes, part_size: int = 4) -> dict:
    """Pushes `data` through InitiateLayerUpload, UploadLayerPart (in `part_size` pieces) and CompleteLayerUpload."""
    upload_id = ecr.initiate_layer_upload(repositoryName=REPOSITORY)["uploadId"]
    for first in range(0, len(data), part_size):
        part = data[first:first + part_size]
        answer = ecr.upload_layer_part(
            repositoryName=REPOSITORY, uploadId=upload_id, partFirstByte=first, partLastByte=first + len(part) - 1,
            layerPartBlob=part,
        )
        assert answer["lastByteReceived"] == first + len(part) - 1
    return ecr.complete_layer_upload(repositoryName=REPOSITORY, uploadId=upload_id, layerDigests=[sha256(data)])


def reference(ecr, data: bytes, repository: str = REPOSITORY) -> None:
    """Pushes a manifest whose one layer is `data`: ECR hands out download URLs only for referenced layers."""
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256(data), "size": len(data)}],
    }
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return response.read()


def error_code(problem: pytest.ExceptionInfo[ClientError]) -> str:
    return problem.value.response["Error"]["Code"]


@pytest.fixture(autouse=True)
def repository(ecr) -> None:
    ecr.create_repository(repositoryName=REPOSITORY)


def test_a_blob_pushed_in_parts_is_read_back_through_the_download_url(ecr, endpoint):
    data = b'{"payload": "a real blob, uploaded in several parts"}'
    completed = upload(ecr, data)
    assert completed["layerDigest"] == sha256(data)
    assert completed["repositoryName"] == REPOSITORY

    availability = ecr.batch_check_layer_availability(repositoryName=REPOSITORY, layerDigests=[sha256(data), sha256(b"other")])
    assert availability["layers"] == [{"layerDigest": sha256(data), "layerAvailability": "AVAILABLE", "layerSize": len(data)}]
    assert [(f["layerDigest"], f["failureCode"]) for f in availability["failures"]] == [(sha256(b"other"), "MissingLayerDigest")]

    with pytest.raises(ClientError) as unreferenced:
        ecr.get_download_url_for_layer(repositoryName=REPOSITORY, layerDigest=sha256(data))
    assert error_code(unreferenced) == "LayersNotFoundException"

    reference(ecr, data)
    answer = ecr.get_download_url_for_layer(repositoryName=REPOSITORY, layerDigest=sha256(data))
    assert answer["layerDigest"] == sha256(data)
    assert answer["downloadUrl"].startswith(endpoint + "/_emulator/blobs/123456789012/us-east-1/team-api/sha256%3A")
    assert fetch(answer["downloadUrl"]) == data


def test_a_tampered_download_url_is_refused(ecr):
    data = b"blob"
    upload(ecr, data)
    reference(ecr, data)
    url = ecr.get_download_url_for_layer(repositoryName=REPOSITORY, layerDigest=sha256(data))["downloadUrl"]
    scheme, netloc, path, query, _ = urlsplit(url)
    later = query.replace("expires=", "expires=9")
    for bad in (urlunsplit((scheme, netloc, path, later, "")), urlunsplit((scheme, netloc, path.replace("team-api", "other"), query, ""))):
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch(bad)
        assert refused.value.code == 403


def test_a_part_that_leaves_a_gap_is_refused(ecr):
    upload_id = ecr.initiate_layer_upload(repositoryName=REPOSITORY)["uploadId"]
    ecr.upload_layer_part(repositoryName=REPOSITORY, uploadId=upload_id, partFirstByte=0, partLastByte=3, layerPartBlob=b"abcd")
    with pytest.raises(ClientError) as gap:
        ecr.upload_layer_part(repositoryName=REPOSITORY, uploadId=upload_id, partFirstByte=5, partLastByte=6, layerPartBlob=b"fg")
    assert error_code(gap) == "InvalidLayerPartException"
    assert gap.value.response["lastValidByteReceived"] == 3
    with pytest.raises(ClientError) as short:
        ecr.upload_layer_part(repositoryName=REPOSITORY, uploadId=upload_id, partFirstByte=4, partLastByte=9, layerPartBlob=b"e")
    assert error_code(short) == "InvalidLayerPartException"
    # The refused parts left nothing behind: the upload continues at byte 4.
    ecr.upload_layer_part(repositoryName=REPOSITORY, uploadId=upload_id, partFirstByte=4, partLastByte=4, layerPartBlob=b"e")
    done = ecr.complete_layer_upload(repositoryName=REPOSITORY, uploadId=upload_id, layerDigests=[sha256(b"abcde")])
    assert done["layerDigest"] == sha256(b"abcde")


def test_complete_checks_the_digest_and_refuses_empty_unknown_and_repeated_uploads(ecr):
    upload_id = ecr.initiate_layer_upload(repositoryName=REPOSITORY)["uploadId"]
    with pytest.raises(ClientError) as empty:
        ecr.complete_layer_upload(repositoryName=REPOSITORY, uploadId=upload_id, layerDigests=[sha256(b"")])
    assert error_code(empty) == "EmptyUploadException"

    ecr.upload_layer_part(repositoryName=REPOSITORY, uploadId=upload_id, partFirstByte=0, partLastByte=2, layerPartBlob=b"abc")
    with pytest.raises(ClientError) as wrong:
        ecr.complete_layer_upload(repositoryName=REPOSITORY, uploadId=upload_id, layerDigests=[sha256(b"abd")])
    assert error_code(wrong) == "InvalidLayerException"

    with pytest.raises(ClientError) as unknown:
        ecr.complete_layer_upload(repositoryName=REPOSITORY, uploadId="no-such-upload", layerDigests=[sha256(b"abc")])
    assert error_code(unknown) == "UploadNotFoundException"

    upload(ecr, b"abc")
    with pytest.raises(ClientError) as again:
        upload(ecr, b"abc")
    assert error_code(again) == "LayerAlreadyExistsException"


def test_unknown_digest_and_unknown_repository(ecr):
    with pytest.raises(ClientError) as missing:
        ecr.get_download_url_for_layer(repositoryName=REPOSITORY, layerDigest=sha256(b"never pushed"))
    assert error_code(missing) == "LayersNotFoundException"
    with pytest.raises(ClientError) as no_repository:
        ecr.initiate_layer_upload(repositoryName="nowhere")
    assert error_code(no_repository) == "RepositoryNotFoundException"


def test_blobs_are_per_repository_and_gone_after_reset(ecr, control):
    upload(ecr, b"only here")
    reference(ecr, b"only here")
    ecr.create_repository(repositoryName="elsewhere")
    reference(ecr, b"only here", "elsewhere")
    with pytest.raises(ClientError) as other:
        ecr.get_download_url_for_layer(repositoryName="elsewhere", layerDigest=sha256(b"only here"))
    assert error_code(other) == "LayersNotFoundException"
    url = ecr.get_download_url_for_layer(repositoryName=REPOSITORY, layerDigest=sha256(b"only here"))["downloadUrl"]

    control("POST", "/_emulator/reset")
    with pytest.raises(urllib.error.HTTPError) as gone:
        fetch(url)
    assert gone.value.code == 404


def test_upload_calls_get_cloudtrail_events_without_the_blob(ecr, control):
    upload(ecr, b"traced")
    trail = [e["detail"] for e in control("GET", "/_emulator/events")["events"] if e["detail-type"] == "AWS API Call via CloudTrail"]
    names = [d["eventName"] for d in trail]
    assert names == ["CreateRepository", "InitiateLayerUpload", "UploadLayerPart", "UploadLayerPart", "CompleteLayerUpload"]
    assert all("layerPartBlob" not in json.dumps(d["requestParameters"]) for d in trail)


def test_batch_get_image_returns_the_exact_bytes_pushed(ecr):
    manifest = '{"schemaVersion":2,  "mediaType":"application/vnd.oci.image.manifest.v1+json",\n "config":{}, "layers":[]}'
    ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest, imageTag="odd-spacing")
    got = ecr.batch_get_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": "odd-spacing"}])["images"][0]
    assert got["imageManifest"] == manifest
    assert got["imageId"]["imageDigest"] == sha256(manifest.encode())


def test_with_require_layers_put_image_needs_its_blobs_uploaded_first(ecr, control):
    config, layer = b'{"architecture":"amd64"}', b"layer bytes"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": len(layer)}],
    })
    assert control("POST", "/_emulator/config", {"require_layers": True})["require_layers"] is True
    upload(ecr, config)
    with pytest.raises(ClientError) as missing:
        ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest, imageTag="v1")
    assert error_code(missing) == "LayersNotFoundException"
    assert sha256(layer) in missing.value.response["Error"]["Message"]
    assert sha256(config) not in missing.value.response["Error"]["Message"]

    upload(ecr, layer)
    pushed = ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest, imageTag="v1")
    assert pushed["image"]["imageId"]["imageDigest"] == sha256(manifest.encode())


def test_repository_names_with_slashes_have_working_download_urls(ecr):
    ecr.create_repository(repositoryName="team/api/service")
    upload_id = ecr.initiate_layer_upload(repositoryName="team/api/service")["uploadId"]
    ecr.upload_layer_part(repositoryName="team/api/service", uploadId=upload_id, partFirstByte=0, partLastByte=4, layerPartBlob=b"nest!")
    ecr.complete_layer_upload(repositoryName="team/api/service", uploadId=upload_id, layerDigests=[sha256(b"nest!")])
    reference(ecr, b"nest!", "team/api/service")
    url = ecr.get_download_url_for_layer(repositoryName="team/api/service", layerDigest=sha256(b"nest!"))["downloadUrl"]
    assert "/team/api/service/" in url
    assert fetch(url) == b"nest!"
