"""KMS `Sign`/`Verify` with `MessageType: DIGEST`.

moto signs and verifies with real keys (ECC_NIST_P256 with ECDSA_SHA_256 gives a
DER signature that `cryptography` verifies against `GetPublicKey`), but it
ignores `MessageType`: a DIGEST was hashed once more, so the signature matched
no verifier. Here a DIGEST is signed and verified as the pre-computed hash it
is, and a digest whose length is not the algorithm's hash length is refused
with `ValidationException`, as the KMS API reference describes.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from moto.kms.exceptions import ValidationException
from moto.kms.responses import KmsResponse

from .errors import AwsError

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_MOTO_SIGN = KmsResponse.sign
_MOTO_VERIFY = KmsResponse.verify


def _hash_of(algorithm: str) -> hashes.HashAlgorithm:
    return HASHES[algorithm.rsplit("_", 1)[-1]]()


def _scheme(algorithm: str) -> tuple[Any, ...]:
    """The `sign`/`verify` arguments after the data for a pre-hashed message."""
    prehashed = Prehashed(_hash_of(algorithm))
    if algorithm.startswith("ECDSA"):
        return (ec.ECDSA(prehashed),)
    if algorithm.startswith("RSASSA_PSS"):
        return (padding.PSS(mgf=padding.MGF1(_hash_of(algorithm)), salt_length=padding.PSS.DIGEST_LENGTH), prehashed)
    return (padding.PKCS1v15(), prehashed)


def _digest_and_key(response: KmsResponse) -> tuple[bytes, Any, str]:
    key = response.kms_backend.describe_key(response._get_param("KeyId"))
    algorithm = response._get_param("SigningAlgorithm")
    if key.key_usage != "SIGN_VERIFY" or algorithm not in key.signing_algorithms or algorithm.startswith("SM2"):
        raise ValidationException(f"KeyUsage or SigningAlgorithm {algorithm} is not valid for key {key.id}")
    digest = response._get_param("Message")  # moto's _get_param decodes Message from base64
    if len(digest) != _hash_of(algorithm).digest_size:
        raise ValidationException(
            f"Digest is invalid length for algorithm {algorithm}: expected {_hash_of(algorithm).digest_size} bytes, got {len(digest)}"
        )
    return digest, key, algorithm


def sign(self: KmsResponse) -> str:
    if self._get_param("MessageType") != "DIGEST":
        return _MOTO_SIGN(self)
    digest, key, algorithm = _digest_and_key(self)
    signature = key.private_key.private_key.sign(digest, *_scheme(algorithm))
    return json.dumps({"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(), "SigningAlgorithm": algorithm})


def verify(self: KmsResponse) -> str:
    if self._get_param("MessageType") != "DIGEST":
        return _MOTO_VERIFY(self)
    digest, key, algorithm = _digest_and_key(self)
    signature = base64.b64decode(self._get_param("Signature"))
    try:
        key.private_key.private_key.public_key().verify(signature, digest, *_scheme(algorithm))
        valid = True
    except InvalidSignature:
        valid = False
    if not valid:
        # The API reference: an invalid signature fails with KMSInvalidSignatureException.
        raise AwsError("KMSInvalidSignatureException", "The signature is not valid for this message and key")
    return json.dumps({"KeyId": key.arn, "SignatureValid": True, "SigningAlgorithm": algorithm})


def install() -> None:
    KmsResponse.sign = sign  # type: ignore[method-assign]
    KmsResponse.verify = verify  # type: ignore[method-assign]
