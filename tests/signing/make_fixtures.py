"""Writes signature fixtures for the Rust verifier's tests: `make_fixtures.py OUTDIR`.

OUTDIR receives
  trustpolicy.json        a Notation trust policy (version 1.0) for the scopes below
  truststore/x509/…       Notation's trust-store layout: ca/test, ca/other, signingAuthority/aws-signer
  subject.json            the descriptor every good signature signs
  CASE.jws / CASE.cose    Notary envelopes, good and hostile (see CASES printed in cases.json)
  cosign-*.payload/.sig   Cosign simple-signing payloads and base64 signatures, cosign.pub
  cases.json              one entry per envelope: file, media type, scope, what it exercises

Nothing here is secret: every key is made fresh on each run and thrown away.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import sys

import cbor2
from cryptography.x509.oid import ExtendedKeyUsageOID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cosign  # noqa: E402
import notation  # noqa: E402
import pki  # noqa: E402

REGISTRY = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
SCOPE_CA = f"{REGISTRY}/team/app"
SCOPE_SIGNER = f"{REGISTRY}/team/signed"
PROFILE_ARN = "arn:aws:signer:us-east-1:111122223333:/signing-profiles/app_profile"
PROFILE_VERSION_ARN = f"{PROFILE_ARN}/abcdef1234"
OTHER_PROFILE_VERSION_ARN = "arn:aws:signer:us-east-1:111122223333:/signing-profiles/other_profile/0123456789"
JOB_ARN = "arn:aws:signer:us-east-1:111122223333:/signing-jobs/2f8c5b1e-1111-2222-3333-444455556666"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
TRUSTED_SUBJECT = "x509.subject: C=US, ST=WA, O=ecr-audit tests, CN=ecr-audit test signer"


def descriptor_of(content: bytes, media_type=MANIFEST_MEDIA_TYPE) -> dict:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(content).hexdigest(),
        "size": len(content),
    }


SUBJECT = descriptor_of(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}')
OTHER = descriptor_of(b"another image manifest")


def trust_policy() -> dict:
    return {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": "team-app",
                "registryScopes": [SCOPE_CA],
                "signatureVerification": {"level": "strict"},
                "trustStores": ["ca:test"],
                "trustedIdentities": [TRUSTED_SUBJECT],
            },
            {
                "name": "signer",
                "registryScopes": [SCOPE_SIGNER],
                "signatureVerification": {"level": "strict"},
                "trustStores": ["signingAuthority:aws-signer"],
                "trustedIdentities": [PROFILE_ARN],
            },
        ],
    }


class Writer:
    def __init__(self, outdir: str):
        self.outdir = outdir
        self.cases = []

    def write(self, name: str, data: bytes) -> str:
        with open(os.path.join(self.outdir, name), "wb") as handle:
            handle.write(data)
        return name

    def envelope(self, case: str, fmt: str, data: bytes, scope=SCOPE_CA, note=""):
        ext = "jws" if fmt == "jws" else "cose"
        media_type = notation.JWS_MEDIA_TYPE if fmt == "jws" else notation.COSE_MEDIA_TYPE
        name = self.write(f"{case}.{ext}", data)
        self.cases.append({"case": case, "file": name, "mediaType": media_type, "scope": scope, "note": note})

    def both(self, case: str, sign_args: dict, scope=SCOPE_CA, note=""):
        """Signs the same thing as JWS (CASE.jws) and COSE (CASE.cose)."""
        self.envelope(case, "jws", notation.sign_jws(**sign_args), scope, note)
        self.envelope(case, "cose", notation.sign_cose(**sign_args), scope, note)


def store(outdir, kind, name, certs):
    directory = os.path.join(outdir, "truststore", "x509", kind, name)
    os.makedirs(directory, exist_ok=True)
    for index, cert in enumerate(certs):
        with open(os.path.join(directory, f"root{index}.pem"), "wb") as handle:
            handle.write(pki.pem(cert))


def jws_by_hand(protected: dict, payload: bytes, signature: bytes, x5c) -> bytes:
    b64 = notation._b64url
    return json.dumps(
        {
            "payload": b64(payload),
            "protected": b64(json.dumps(protected).encode()),
            "header": {"x5c": [base64.b64encode(pki.der(c)).decode() for c in x5c]},
            "signature": b64(signature),
        }
    ).encode()


def hostile_jws(w: Writer, leaf: pki.Identity):
    import hmac

    now = pki.now()
    base = {
        "cty": notation.PAYLOAD_MEDIA_TYPE,
        "crit": [notation.SCHEME],
        notation.SCHEME: "notary.x509",
        notation.SIGNING_TIME: notation._rfc3339(now),
    }
    payload = notation.payload_bytes(SUBJECT)
    w.envelope("alg_none", "jws", jws_by_hand({"alg": "none", **base}, payload, b"", leaf.chain))
    protected = {"alg": "HS256", **base}
    signing_input = (
        notation._b64url(json.dumps(protected).encode()) + "." + notation._b64url(payload)
    ).encode()
    mac = hmac.new(b"shared secret", signing_input, hashlib.sha256).digest()
    w.envelope("hs256", "jws", jws_by_hand(protected, payload, mac, leaf.chain))
    w.envelope("junk", "jws", b"\x00junk-envelope!")
    w.envelope("deep_nesting", "jws", b'{"payload":' + b"[" * 20000 + b"]" * 20000 + b"}")
    w.envelope("malformed", "jws", b'{"payload": "abc", "protected": ')


def hostile_cose(w: Writer, leaf: pki.Identity):
    w.envelope("junk", "cose", b"\x00junk-envelope!")
    w.envelope("malformed", "cose", cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"x"]))[:-3])
    w.envelope("deep_nesting", "cose", b"\x81" * 20000 + b"\x00")
    # A COSE_Sign1 claiming HMAC 256/256 (alg 5): a MAC algorithm is never a signature.
    protected = cbor2.dumps({1: 5, 2: [notation.SCHEME], 3: notation.PAYLOAD_MEDIA_TYPE, notation.SCHEME: "notary.x509",
                             notation.SIGNING_TIME: cbor2.CBORTag(1, int(pki.now().timestamp()))})
    message = [protected, {33: [pki.der(c) for c in leaf.chain]}, notation.payload_bytes(SUBJECT), b"\x01" * 32]
    w.envelope("hs256", "cose", cbor2.dumps(cbor2.CBORTag(18, message)))


def flip_last_signature_byte_jws(data: bytes) -> bytes:
    envelope = json.loads(data)
    signature = bytearray(base64.urlsafe_b64decode(envelope["signature"] + "=="))
    signature[-1] ^= 0x01
    envelope["signature"] = notation._b64url(bytes(signature))
    return json.dumps(envelope).encode()


def flip_last_signature_byte_cose(data: bytes) -> bytes:
    tagged = cbor2.loads(data)
    parts = list(tagged.value)
    signature = bytearray(parts[3])
    signature[-1] ^= 0x01
    parts[3] = bytes(signature)
    return cbor2.dumps(cbor2.CBORTag(18, parts))


def main(outdir: str):
    os.makedirs(outdir, exist_ok=True)
    w = Writer(outdir)
    now = pki.now()
    day = dt.timedelta(days=1)

    root, intermediate, leaf = pki.make_hierarchy()
    other_root, _, stranger = pki.make_hierarchy(root_name="someone else's root")
    signer_root = pki.make_root("AWS Signer test root", key_type="ec-p384")
    signer_ca = pki.make_intermediate(signer_root, "AWS Signer test issuing CA", key_type="ec-p384")
    signer_leaf = pki.signer_like_leaf(signer_ca, PROFILE_VERSION_ARN)
    other_signer_leaf = pki.signer_like_leaf(signer_ca, OTHER_PROFILE_VERSION_ARN)

    store(outdir, "ca", "test", [root.cert])
    store(outdir, "ca", "other", [other_root.cert])
    store(outdir, "signingAuthority", "aws-signer", [signer_root.cert])
    w.write("trustpolicy.json", json.dumps(trust_policy(), indent=2).encode())
    w.write("subject.json", json.dumps(SUBJECT).encode())
    w.write("other.json", json.dumps(OTHER).encode())

    good = {"descriptor": SUBJECT, "key": leaf.key, "chain": leaf.chain}
    w.both("good", good, note="EC P-256 leaf under the ca:test root")
    rsa_leaf = pki.make_leaf(intermediate, key_type="rsa-3072")
    w.both("good_rsa", {**good, "key": rsa_leaf.key, "chain": rsa_leaf.chain}, note="RSA 3072, PS384")
    w.both("good_expiry_future", {**good, "expiry": now + 30 * day})
    signer = {
        "descriptor": SUBJECT,
        "key": signer_leaf.key,
        "chain": signer_leaf.chain,
        "scheme": "notary.x509.signingAuthority",
        "extended_attributes": {notation.SIGNER_PROFILE_VERSION: PROFILE_VERSION_ARN, notation.SIGNER_JOB: JOB_ARN},
    }
    w.both("good_signer", signer, scope=SCOPE_SIGNER, note="AWS Signer-like, signingAuthority")
    w.both(
        "signer_other_profile",
        {**signer, "key": other_signer_leaf.key, "chain": other_signer_leaf.chain,
         "extended_attributes": {notation.SIGNER_PROFILE_VERSION: OTHER_PROFILE_VERSION_ARN, notation.SIGNER_JOB: JOB_ARN}},
        scope=SCOPE_SIGNER,
    )
    w.both("signer_scheme_x509", {**signer, "scheme": "notary.x509"}, scope=SCOPE_SIGNER,
           note="a signingAuthority store needs the signingAuthority scheme")

    w.both("other_digest", {**good, "descriptor": OTHER}, note="a real signature of another digest")
    w.both("other_media_type", {**good, "descriptor": {**SUBJECT, "mediaType": "application/vnd.oci.image.index.v1+json"}})
    w.both("other_size", {**good, "descriptor": {**SUBJECT, "size": SUBJECT["size"] + 1}})
    w.both("untrusted_root", {**good, "key": stranger.key, "chain": stranger.chain})
    intruder = pki.make_leaf(intermediate, common_name="intruder", organization="elsewhere")
    w.both("identity_outside", {**good, "key": intruder.key, "chain": intruder.chain})
    expired = pki.make_leaf(intermediate, not_before=now - 700 * day, not_after=now - 300 * day)
    w.both("expired_cert", {**good, "key": expired.key, "chain": expired.chain, "signing_time": now - 400 * day})
    w.both("signed_outside_validity", {**good, "signing_time": now - 3 * 365 * day})
    w.both(
        "expiry_passed",
        {**good, "signing_time": now - dt.timedelta(minutes=30), "expiry": now - dt.timedelta(minutes=1)},
    )
    w.both("unknown_crit", {**good, "extra_crit": ["com.example.mustUnderstand"]})
    wrong_eku = pki.make_leaf(intermediate, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    w.both("wrong_eku", {**good, "key": wrong_eku.key, "chain": wrong_eku.chain})
    absurd = pki.make_leaf(
        intermediate,
        not_before=dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc),
        not_after=dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc),
    )
    w.both("absurd_dates", {**good, "key": absurd.key, "chain": absurd.chain})

    # 100 certificates: the leaf, 98 intermediates and the root, each issuing the next.
    issuer = root
    for index in range(98):
        issuer = pki.make_intermediate(issuer, f"link {index}")
    long_leaf = pki.make_leaf(issuer)
    w.both("chain_100", {**good, "key": long_leaf.key, "chain": long_leaf.chain})

    big = {**SUBJECT, "annotations": {"padding": "x" * 80_000}}
    w.both("oversized", {**good, "descriptor": big})
    w.envelope("bad_signature", "jws", flip_last_signature_byte_jws(notation.sign_jws(**good)))
    w.envelope("bad_signature", "cose", flip_last_signature_byte_cose(notation.sign_cose(**good)))
    hostile_jws(w, leaf)
    hostile_cose(w, leaf)

    key = cosign.new_key()
    w.write("cosign.pub", cosign.public_key_pem(key))
    other_key = cosign.new_key()
    w.write("cosign-other.pub", cosign.public_key_pem(other_key))
    for case, digest, signing_key in (
        ("good", SUBJECT["digest"], key),
        ("other_digest", OTHER["digest"], key),
        ("other_key", SUBJECT["digest"], other_key),
    ):
        payload, signature = cosign.sign_simple_signing(f"{SCOPE_CA}", digest, signing_key)
        w.write(f"cosign-{case}.payload", payload)
        w.write(f"cosign-{case}.sig", signature.encode())

    w.write("cases.json", json.dumps(w.cases, indent=1).encode())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixtures.py OUTDIR")
    main(sys.argv[1])
