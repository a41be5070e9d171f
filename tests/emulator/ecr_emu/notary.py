"""The Notary Project signature that managed signing pushes: a real envelope, its blob, its manifest.

For each image signed with a Signer profile, `signature_manifest()`:
records a Signer signing job; signs the image descriptor with the leaf of the
profile version (`signer_pki`), signing scheme `notary.x509.signingAuthority`,
with AWS Signer's extended attributes `com.amazonaws.signer.signingProfileVersion`
and `com.amazonaws.signer.signingJob` in the protected header, both critical,
and the expiry of the profile's signature validity period; stores the envelope
and the empty config in the repository's blob store (`blobs`); and returns the
OCI signature manifest (artifact type `application/vnd.cncf.notary.signature`,
`subject` = the image, one layer: the envelope, `application/jose+json` by
default or `application/cose` when the profile's `signingParameters` has
`signatureFormat: cose`).

The envelope itself is written by the test signing library in `tests/signing/`
(`notation.sign_jws` / `notation.sign_cose`), the same code the tests use to
sign the way `notation sign` does.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Callable

from dateutil.relativedelta import relativedelta
from moto.ecr.models import ECRBackend, Repository
from moto.signer.models import SigningProfile
from moto.signer.responses import SignerResponse

from . import manifests
from .blobs import BLOBS
from .errors import AwsError
from .signer_pki import PKI, partition_of
from .signer_revocation import record_job
from .envelopes import sign_cose, sign_jws

SIGNING_SCHEME = "notary.x509.signingAuthority"
PROFILE_VERSION_ATTRIBUTE = "com.amazonaws.signer.signingProfileVersion"
JOB_ATTRIBUTE = "com.amazonaws.signer.signingJob"
FORMAT_PARAMETER = "signatureFormat"
#: signatureFormat value → (envelope media type, signing function).
FORMATS: dict[str, tuple[str, Callable[..., bytes]]] = {
    "jws": ("application/jose+json", sign_jws),
    "cose": ("application/cose", sign_cose),
}
EMPTY_CONFIG = b"{}"


def envelope_format(profile: SigningProfile) -> str:
    return str((getattr(profile, "signing_parameters", None) or {}).get(FORMAT_PARAMETER, "jws")).lower()


def signature_expiry(profile: SigningProfile, signed_at: datetime) -> datetime:
    """The end of the profile's signatureValidityPeriod (135 months unless the profile says otherwise)."""
    period = profile.signature_validity_period or {"value": 135, "type": "MONTHS"}
    unit = {"DAYS": "days", "MONTHS": "months", "YEARS": "years"}.get(str(period.get("type")).upper(), "months")
    return signed_at + relativedelta(**{unit: int(period.get("value", 135))})


def _thumbprints(chain_der: list[bytes]) -> str:
    return json.dumps([hashlib.sha256(der).hexdigest() for der in chain_der])


def signature_manifest(
    backend: ECRBackend, repo: Repository, subject: manifests.Manifest, profile: SigningProfile, signed_at: datetime
) -> str:
    """Signs `subject` with `profile`, stores the envelope blob, and returns the signature manifest to push."""
    partition = partition_of(profile.backend.region_name)
    chain = PKI.chain(profile.profile_version_arn)
    expiry = signature_expiry(profile, signed_at)
    job = record_job(profile, partition, signed_at, expiry)
    attributes = {PROFILE_VERSION_ATTRIBUTE: profile.profile_version_arn, JOB_ATTRIBUTE: job.arn}
    media_type, sign = FORMATS[envelope_format(profile)]
    descriptor = {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}
    envelope = sign(
        descriptor,
        chain[0].key,
        [issued.certificate for issued in chain],
        scheme=SIGNING_SCHEME,
        signing_time=signed_at,
        expiry=expiry,
        extended_attributes=attributes,
        extra_crit=list(attributes),
    )
    account, region = backend.account_id, backend.region_name
    envelope_digest = BLOBS.put(account, region, repo.name, envelope)
    BLOBS.put(account, region, repo.name, EMPTY_CONFIG)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifests.OCI_MANIFEST,
        "artifactType": manifests.NOTATION_SIGNATURE,
        "config": {"mediaType": manifests.OCI_EMPTY, "digest": manifests.OCI_EMPTY_DIGEST, "size": len(EMPTY_CONFIG)},
        "layers": [{"mediaType": media_type, "digest": envelope_digest, "size": len(envelope)}],
        "subject": descriptor,
        "annotations": {
            "io.cncf.notary.x509chain.thumbprint#S256": _thumbprints([issued.der() for issued in chain]),
            "org.opencontainers.image.created": signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    return json.dumps(manifest, separators=(",", ":"))


_MOTO_PUT_SIGNING_PROFILE = SignerResponse.put_signing_profile


def put_signing_profile(self: SignerResponse) -> str:
    """PutSigningProfile keeping `signingParameters` (moto drops them); `signatureFormat` must be jws or cose."""
    parameters = json.loads(self.body or "{}").get("signingParameters") or {}
    chosen = str(parameters.get(FORMAT_PARAMETER, "jws")).lower()
    if chosen not in FORMATS:
        raise AwsError("ValidationException", f"signingParameters.{FORMAT_PARAMETER} must be one of {sorted(FORMATS)}")
    answer = _MOTO_PUT_SIGNING_PROFILE(self)
    self.signer_backend.signing_profiles[self.path.rstrip("/").split("/")[-1]].signing_parameters = dict(parameters)
    return answer


def install() -> None:
    SignerResponse.put_signing_profile = put_signing_profile
