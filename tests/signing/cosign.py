"""Cosign key-based signatures as `cosign sign --key` makes them.

The signed payload is the simple-signing JSON naming the image's manifest digest; the signature
is ECDSA P-256 with SHA-256 over those exact bytes, DER-encoded and then base64 (standard
alphabet), which cosign stores in the `dev.cosignproject.cosign/signature` annotation of the
signature layer whose blob is the payload.
"""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def new_key():
    """A fresh ECDSA P-256 key, the kind `cosign generate-key-pair` makes."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_pem(key) -> bytes:
    """The public half as PEM (SubjectPublicKeyInfo), the format of cosign.pub."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def simple_signing_payload(docker_reference: str, manifest_digest: str, optional=None) -> bytes:
    """The payload cosign signs: identity, the manifest digest and the signature type."""
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": "cosign container image signature",
        },
        "optional": optional,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def sign_payload(payload: bytes, key) -> str:
    """The base64 DER ECDSA signature over `payload` (SHA-256)."""
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def sign_simple_signing(docker_reference: str, manifest_digest: str, key, optional=None):
    """(payload bytes, base64 signature) for an image, as `cosign sign --key` produces."""
    payload = simple_signing_payload(docker_reference, manifest_digest, optional)
    return payload, sign_payload(payload, key)
