"""Signs real images for the end-to-end verdict tests: `sign_for_pipeline.py OUTDIR SUBJECTS_JSON`.

SUBJECTS_JSON is a list of descriptors of image manifests to sign (`mediaType`, `digest`,
`size`). OUTDIR receives, once: `ca.pem` (the root of the trusted `ca` store), `cosign.pub` (a
Cosign public key) and `identities.json` (the trusted leaf subject and another one, as
trustedIdentities values); and for the N-th subject (from 0):
  N-trusted.jws / .cose    signed by a leaf under that root with the trusted subject
  N-untrusted-root.jws     signed by a leaf under a root no store holds
  N-other-identity.jws     signed under the trusted root by a leaf with another subject
  N-expired.jws            signed under the trusted root by a leaf whose validity has ended
  N-cosign.payload/.sig    a simple-signing payload for the subject and its base64 signature

Keys are made fresh on each run and thrown away.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cosign  # noqa: E402
import notation  # noqa: E402
import pki  # noqa: E402

TRUSTED_SUBJECT = "x509.subject: C=US, ST=WA, O=ecr-audit tests, CN=ecr-audit test signer"
OTHER_SUBJECT = "x509.subject: C=US, ST=WA, O=ecr-audit tests, CN=someone else"


def main(outdir: str, subjects_path: str) -> None:
    with open(subjects_path, encoding="utf-8") as f:
        subjects = json.load(f)
    os.makedirs(outdir, exist_ok=True)

    def write(name: str, data: bytes) -> None:
        with open(os.path.join(outdir, name), "wb") as out:
            out.write(data)

    now = pki.now()
    root, intermediate, leaf = pki.make_hierarchy()
    _, _, stranger = pki.make_hierarchy(root_name="a root nobody trusts")
    other = pki.make_leaf(intermediate, common_name="someone else")
    expired = pki.make_leaf(
        intermediate,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    key = cosign.new_key()
    write("ca.pem", pki.pem(root.cert))
    write("cosign.pub", cosign.public_key_pem(key))
    write("identities.json", json.dumps({"trusted": TRUSTED_SUBJECT, "other": OTHER_SUBJECT}).encode())

    for n, subject in enumerate(subjects):
        write(f"{n}-trusted.jws", notation.sign_jws(subject, leaf.key, leaf.chain, signing_time=now))
        write(f"{n}-trusted.cose", notation.sign_cose(subject, leaf.key, leaf.chain, signing_time=now))
        write(f"{n}-untrusted-root.jws", notation.sign_jws(subject, stranger.key, stranger.chain, signing_time=now))
        write(f"{n}-other-identity.jws", notation.sign_jws(subject, other.key, other.chain, signing_time=now))
        signed_when_valid = now - dt.timedelta(days=2)
        write(f"{n}-expired.jws", notation.sign_jws(subject, expired.key, expired.chain, signing_time=signed_when_valid))
        payload, signature = cosign.sign_simple_signing("ecr-audit/e2e", subject["digest"], key)
        write(f"{n}-cosign.payload", payload)
        write(f"{n}-cosign.sig", signature.encode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
