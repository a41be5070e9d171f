"""Notary Project signatures as `notation sign` builds them, in both envelope formats.

JWS (`application/jose+json`) is made with jwcrypto, COSE_Sign1 (`application/cose`) with
pycose; the X.509 side comes from pki.py. The envelope shape follows docs/SIGNATURES.md
("Cryptographic verification"): payload `{"targetArtifact": descriptor}`, protected headers
`alg`, `cty`, `crit`, `io.cncf.notary.signingScheme`, the signing time (or authentic signing
time for `notary.x509.signingAuthority`), the optional expiry and any extended attributes;
unprotected `x5c`/`x5chain` (leaf first) and `io.cncf.notary.signingAgent`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk, jws
from jwcrypto.common import JWSEHeaderParameter
from pycose.keys import EC2Key, RSAKey
from pycose.messages import Sign1Message

import pki

PAYLOAD_MEDIA_TYPE = "application/vnd.cncf.notary.payload.v1+json"
JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
SIGNING_AGENT = "ecr-audit-tests/1.0"

SCHEME = "io.cncf.notary.signingScheme"
SIGNING_TIME = "io.cncf.notary.signingTime"
AUTHENTIC_SIGNING_TIME = "io.cncf.notary.authenticSigningTime"
EXPIRY = "io.cncf.notary.expiry"

# AWS Signer's extended attributes: the signing profile version and job that made the signature.
SIGNER_PROFILE_VERSION = "com.amazonaws.signer.signingProfileVersion"
SIGNER_JOB = "com.amazonaws.signer.signingJob"

# (JWS alg, COSE alg) per signing key, as the specification's algorithm selection table says.
_EC_ALGS = {256: ("ES256", -7), 384: ("ES384", -35), 521: ("ES512", -36)}
_RSA_ALGS = {2048: ("PS256", -37), 3072: ("PS384", -38), 4096: ("PS512", -39)}


def algorithms_for(key):
    """(JWS alg, COSE alg) for a private key; RSA keys of other sizes get PS256."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _EC_ALGS[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return _RSA_ALGS.get(key.key_size, ("PS256", -37))
    raise TypeError("key must be an EC or RSA private key")


def payload_bytes(descriptor: dict) -> bytes:
    """The signed payload: the target artifact's descriptor (mediaType, digest, size, …)."""
    return json.dumps({"targetArtifact": descriptor}, separators=(",", ":")).encode()


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signed_attributes(scheme, signing_time, expiry, extended_attributes, extra_crit):
    """The Notary attributes (name -> datetime or value) and the crit list, format-neutral."""
    signing_time = signing_time or pki.now()
    attributes = {SCHEME: scheme}
    crit = [SCHEME]
    if scheme == "notary.x509.signingAuthority":
        attributes[AUTHENTIC_SIGNING_TIME] = signing_time
        crit.append(AUTHENTIC_SIGNING_TIME)
    else:
        attributes[SIGNING_TIME] = signing_time
    if expiry is not None:
        attributes[EXPIRY] = expiry
        crit.append(EXPIRY)
    for name, value in (extended_attributes or {}).items():
        attributes[name] = value
    for name in extra_crit or ():
        attributes.setdefault(name, "must-be-understood")
        if name not in crit:
            crit.append(name)
    return attributes, crit


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jws(
    descriptor,
    key,
    chain,
    scheme="notary.x509",
    signing_time=None,
    expiry=None,
    extended_attributes=None,
    extra_crit=None,
) -> bytes:
    """A flattened JWS JSON envelope over `descriptor` signed with `key`.

    `chain` is a list of cryptography certificates, leaf first. Times are aware datetimes.
    """
    attributes, crit = _signed_attributes(scheme, signing_time, expiry, extended_attributes, extra_crit)
    alg, _ = algorithms_for(key)
    protected = {"alg": alg, "cty": PAYLOAD_MEDIA_TYPE, "crit": crit}
    for name, value in attributes.items():
        protected[name] = _rfc3339(value) if isinstance(value, dt.datetime) else value
    unprotected = {
        "x5c": [base64.b64encode(pki.der(cert)).decode() for cert in chain],
        "io.cncf.notary.signingAgent": SIGNING_AGENT,
    }
    # jwcrypto refuses crit names it does not know, so the Notary ones are registered.
    signing_key = jwk.JWK.from_pyca(key)
    registry = {name: JWSEHeaderParameter(name, False, True, None) for name in crit}
    token = jws.JWS(payload_bytes(descriptor), header_registry=registry)
    token.add_signature(
        signing_key,
        alg=None,
        protected=json.dumps(protected, separators=(",", ":")),
        header=json.dumps(unprotected),
    )
    return token.serialize(compact=False).encode()


def _cose_key(key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return EC2Key._from_cryptography_key(key)
    return RSAKey._from_cryptography_key(key)


def sign_cose(
    descriptor,
    key,
    chain,
    scheme="notary.x509",
    signing_time=None,
    expiry=None,
    extended_attributes=None,
    extra_crit=None,
) -> bytes:
    """A COSE_Sign1_Tagged envelope over `descriptor`; same parameters as sign_jws."""
    attributes, crit = _signed_attributes(scheme, signing_time, expiry, extended_attributes, extra_crit)
    _, alg = algorithms_for(key)
    protected = {1: alg, 2: crit, 3: PAYLOAD_MEDIA_TYPE}
    for name, value in attributes.items():
        # Times are CBOR tag 1 (epoch seconds), as the COSE envelope section requires.
        protected[name] = cbor2.CBORTag(1, int(value.timestamp())) if isinstance(value, dt.datetime) else value
    unprotected = {33: [pki.der(cert) for cert in chain], "io.cncf.notary.signingAgent": SIGNING_AGENT}
    message = Sign1Message(phdr=protected, uhdr=unprotected, payload=payload_bytes(descriptor))
    message.key = _cose_key(key)
    return message.encode(tag=True)
