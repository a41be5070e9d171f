"""Managed signing pushes real Notary Project signatures that verify against the emulated Signer root (issue 15, item 8).

The checks here use `cryptography` and `cbor2` directly (not the library that
wrote the envelopes): chain to the root from `/_emulator/signer/roots`,
signature over the signed bytes, payload = the image's descriptor, AWS Signer's
extended attributes critical in the protected header.
"""
from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from datetime import datetime, timezone

import boto3
import botocore.config
import cbor2
import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from support import digest_of, oci_manifest

NOTATION = "Notation-OCI-SHA384-ECDSA"
SIGNATURE = "application/vnd.cncf.notary.signature"
PROFILE_VERSION = "com.amazonaws.signer.signingProfileVersion"
JOB = "com.amazonaws.signer.signingJob"
SCHEME = "io.cncf.notary.signingScheme"
AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
EXPIRY = "io.cncf.notary.expiry"


@pytest.fixture
def signer(client):
    return client("signer")


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def get(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return response.read()


def emulated_root(endpoint: str) -> x509.Certificate:
    [root] = x509.load_pem_x509_certificates(get(f"{endpoint}/_emulator/signer/roots?partition=aws"))
    return root


def verify_chain(chain: list[x509.Certificate], root: x509.Certificate) -> None:
    """Each certificate is signed by the next; the last one is the emulated root."""
    assert chain[-1] == root
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)
    leaf_usage = chain[0].extensions.get_extension_for_class(x509.KeyUsage).value
    assert leaf_usage.digital_signature and not chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def verify_es384(certificate: x509.Certificate, raw_signature: bytes, signed: bytes) -> None:
    """A JOSE/COSE ECDSA signature is r‖s; cryptography wants DER."""
    half = len(raw_signature) // 2
    der = encode_dss_signature(int.from_bytes(raw_signature[:half], "big"), int.from_bytes(raw_signature[half:], "big"))
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(der, signed, ec.ECDSA(hashes.SHA384()))


def push_signed(ecr, signer, format_parameters: dict[str, str] | None = None) -> tuple[dict, str, dict]:
    """Creates a profile, signs every repository with it, pushes an image; returns (profile, image, signature manifest)."""
    created = signer.put_signing_profile(profileName="releases", platformId=NOTATION, **(
        {"signingParameters": format_parameters} if format_parameters else {}))
    ecr.put_signing_configuration(signingConfiguration={"rules": [{"signingProfileArn": created["arn"]}]})
    ecr.create_repository(repositoryName="team-api")
    image = oci_manifest("to-sign")
    ecr.put_image(repositoryName="team-api", imageManifest=image, imageTag="v1")
    [referrer] = ecr.list_image_referrers(repositoryName="team-api", subjectId={"imageDigest": digest_of(image)})["referrers"]
    assert referrer["artifactType"] == SIGNATURE
    pushed = ecr.batch_get_image(repositoryName="team-api", imageIds=[{"imageDigest": referrer["digest"]}])["images"][0]
    return created, image, json.loads(pushed["imageManifest"])


def envelope_of(ecr, signature: dict) -> bytes:
    """The envelope blob, fetched the way the worker does: GetDownloadUrlForLayer, then an HTTP GET."""
    [layer] = signature["layers"]
    url = ecr.get_download_url_for_layer(repositoryName="team-api", layerDigest=layer["digest"])["downloadUrl"]
    envelope = get(url)
    assert "sha256:" + hashlib.sha256(envelope).hexdigest() == layer["digest"]
    assert len(envelope) == layer["size"]
    return envelope


def check_subject(signature: dict, image: str) -> dict:
    descriptor = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(image), "size": len(image.encode())}
    assert signature["artifactType"] == SIGNATURE
    assert signature["subject"] == descriptor
    return descriptor


def test_managed_signing_pushes_a_jws_signature_that_verifies_against_the_emulated_root(ecr, signer, endpoint, control):
    created, image, signature = push_signed(ecr, signer)
    descriptor = check_subject(signature, image)
    assert signature["layers"][0]["mediaType"] == "application/jose+json"
    envelope = json.loads(envelope_of(ecr, signature))

    protected = json.loads(b64url(envelope["protected"]))
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in envelope["header"]["x5c"]]
    verify_chain(chain, emulated_root(endpoint))
    verify_es384(chain[0], b64url(envelope["signature"]), f"{envelope['protected']}.{envelope['payload']}".encode())
    assert json.loads(b64url(envelope["payload"])) == {"targetArtifact": descriptor}

    assert protected["alg"] == "ES384"
    assert protected["cty"] == "application/vnd.cncf.notary.payload.v1+json"
    assert protected[SCHEME] == "notary.x509.signingAuthority"
    assert {SCHEME, AUTHENTIC_TIME, EXPIRY, PROFILE_VERSION, JOB} <= set(protected["crit"])
    assert protected[PROFILE_VERSION] == created["profileVersionArn"]
    [job] = control("GET", "/_emulator/signer/jobs")["jobs"]
    assert protected[JOB] == job["jobArn"]
    assert job["jobArn"].startswith("arn:aws:signer:us-east-1:123456789012:/signing-jobs/")
    signed_at = datetime.fromisoformat(protected[AUTHENTIC_TIME].replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - signed_at).total_seconds()) < 60
    # 135 months, the default signature validity period of a profile.
    assert 4000 < (datetime.fromisoformat(protected[EXPIRY].replace("Z", "+00:00")) - signed_at).days < 4200

    thumbprints = json.loads(signature["annotations"]["io.cncf.notary.x509chain.thumbprint#S256"])
    assert thumbprints == [hashlib.sha256(base64.b64decode(c)).hexdigest() for c in envelope["header"]["x5c"]]


def test_cose_on_request_through_the_profile_signing_parameters(ecr, signer, endpoint):
    created, image, signature = push_signed(ecr, signer, {"signatureFormat": "cose"})
    assert signer.get_signing_profile(profileName="releases")["signingParameters"] == {"signatureFormat": "cose"}
    descriptor = check_subject(signature, image)
    assert signature["layers"][0]["mediaType"] == "application/cose"

    message = cbor2.loads(envelope_of(ecr, signature))
    assert isinstance(message, cbor2.CBORTag) and message.tag == 18  # COSE_Sign1_Tagged
    protected_bytes, unprotected, payload, raw_signature = message.value
    protected = cbor2.loads(protected_bytes)
    chain = [x509.load_der_x509_certificate(der) for der in unprotected[33]]  # x5chain
    verify_chain(chain, emulated_root(endpoint))
    verify_es384(chain[0], raw_signature, cbor2.dumps(["Signature1", protected_bytes, b"", payload]))
    assert json.loads(payload) == {"targetArtifact": descriptor}
    assert protected[1] == -35  # ES384
    assert protected[SCHEME] == "notary.x509.signingAuthority"
    assert protected[PROFILE_VERSION] == created["profileVersionArn"]
    assert {PROFILE_VERSION, JOB, SCHEME, AUTHENTIC_TIME} <= set(protected[2])


def test_an_unknown_signature_format_is_refused(signer):
    with pytest.raises(ClientError) as refused:
        signer.put_signing_profile(profileName="odd", platformId=NOTATION, signingParameters={"signatureFormat": "pgp"})
    assert refused.value.response["Error"]["Code"] == "ValidationException"


def test_each_profile_version_has_its_own_leaf_under_one_root(ecr, signer, endpoint, client):
    first, _, signature = push_signed(ecr, signer)
    first_chain = json.loads(envelope_of(ecr, signature))["header"]["x5c"]
    second = signer.put_signing_profile(profileName="other", platformId=NOTATION)
    ecr.put_signing_configuration(signingConfiguration={"rules": [{"signingProfileArn": second["arn"]}]})
    image = oci_manifest("second")
    ecr.put_image(repositoryName="team-api", imageManifest=image, imageTag="v2")
    [referrer] = ecr.list_image_referrers(repositoryName="team-api", subjectId={"imageDigest": digest_of(image)})["referrers"]
    other = json.loads(ecr.batch_get_image(repositoryName="team-api", imageIds=[{"imageDigest": referrer["digest"]}])["images"][0]["imageManifest"])
    second_chain = json.loads(envelope_of(ecr, other))["header"]["x5c"]
    assert first_chain[0] != second_chain[0]
    assert first_chain[1:] == second_chain[1:]
    assert x509.load_der_x509_certificate(base64.b64decode(second_chain[-1])) == emulated_root(endpoint)


def test_a_profile_of_another_account_signs_with_that_accounts_leaf(ecr, client, endpoint):
    credentials = client("sts").assume_role(RoleArn="arn:aws:iam::210987654321:role/signer", RoleSessionName="central-signer")["Credentials"]
    owner = boto3.client(
        "signer", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"], aws_session_token=credentials["SessionToken"],
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    shared = owner.put_signing_profile(profileName="central", platformId=NOTATION)
    ecr.put_signing_configuration(signingConfiguration={"rules": [{"signingProfileArn": shared["arn"]}]})
    ecr.create_repository(repositoryName="team-api")
    image = oci_manifest("cross-account")
    ecr.put_image(repositoryName="team-api", imageManifest=image, imageTag="v1")
    [referrer] = ecr.list_image_referrers(repositoryName="team-api", subjectId={"imageDigest": digest_of(image)})["referrers"]
    signature = json.loads(ecr.batch_get_image(repositoryName="team-api", imageIds=[{"imageDigest": referrer["digest"]}])["images"][0]["imageManifest"])
    envelope = json.loads(envelope_of(ecr, signature))
    protected = json.loads(b64url(envelope["protected"]))
    assert protected[PROFILE_VERSION] == shared["profileVersionArn"]
    assert protected[JOB].startswith("arn:aws:signer:us-east-1:210987654321:/signing-jobs/")
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in envelope["header"]["x5c"]]
    verify_chain(chain, emulated_root(endpoint))
    assert chain[1].subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "210987654321"
