"""Signer signing jobs and revocation: RevokeSignature, DescribeSigningJob, GetRevocationStatus, profileOwner.

Managed signing records one signing job per signature (`record_job`); its ARN is
the `com.amazonaws.signer.signingJob` attribute of the envelope.
`RevokeSignature` revokes a job; `RevokeSigningProfile` (in `signer.py`)
revokes a profile version from an effective time on. `GetRevocationStatus`
answers, of the entities it is given, those revoked: the job ARN if its job
was revoked, the profile version ARN if that version was revoked with an
effective time at or before `signatureTimestamp`, and each certificate hash
that names the leaf of such a profile version. `GetSigningProfile` with
`profileOwner` reads the profile of another emulator account (no
cross-account permission is checked). Both revocation calls get a CloudTrail
event (`eventSource: signer.amazonaws.com`, source `aws.signer`).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from moto.signer import urls as signer_urls
from moto.signer.models import SignerBackend, SigningProfile, signer_backends
from moto.signer.responses import SignerResponse

from . import signer
from .calls import AwsCall
from .errors import AwsError
from .signer_pki import PKI, certificate_hash
from .state import LOCK, STORE

#: Signer calls that get a CloudTrail event (AWS records every Signer write; these are the ones ecr-audit reads).
TRAIL_OPERATIONS = {"RevokeSignature", "RevokeSigningProfile"}


@dataclass
class SigningJob:
    """One signature made by managed signing."""

    job_id: str
    account: str
    region: str
    partition: str
    profile: SigningProfile
    profile_version: str
    created_at: datetime
    expires_at: datetime
    revocation: dict[str, Any] | None = None

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:signer:{self.region}:{self.account}:/signing-jobs/{self.job_id}"

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobId": self.job_id,
            "platformId": self.profile.platform_id,
            "platformDisplayName": next(
                (p["displayName"] for p in SignerBackend.platforms if p["platformId"] == self.profile.platform_id), ""
            ),
            "profileName": self.profile.name,
            "profileVersion": self.profile_version,
            "createdAt": self.created_at.timestamp(),
            "completedAt": self.created_at.timestamp(),
            "signatureExpiresAt": self.expires_at.timestamp(),
            "status": "Succeeded",
            "jobOwner": self.account,
            "jobInvoker": self.account,
            "requestedBy": f"arn:{self.partition}:iam::{self.account}:role/aws-service-role/ecr.amazonaws.com",
        }
        if self.revocation:
            out["revocationRecord"] = self.revocation
        return out


#: job id → job; cleared on reset (the signatures it made are gone too).
JOBS: dict[str, SigningJob] = {}


def record_job(profile: SigningProfile, partition: str, created_at: datetime, expires_at: datetime) -> SigningJob:
    backend = profile.backend
    job = SigningJob(str(uuid.uuid4()), backend.account_id, backend.region_name, partition, profile,
                     profile.profile_version, created_at, expires_at)
    JOBS[job.job_id] = job
    return job


def _json(body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    return json.dumps(body), {"Content-Type": "application/json"}


def _job(job_id: str, owner: str | None) -> SigningJob:
    job = JOBS.get(job_id)
    if job is None or (owner and job.account != owner):
        raise AwsError("ResourceNotFoundException", f"Signing job {job_id} not found.")
    return job


def describe_signing_job(self: SignerResponse) -> tuple[str, dict[str, str]]:
    return _json(_job(self.path.rstrip("/").split("/")[-1], None).to_api())


def revoke_signature(self: SignerResponse) -> tuple[str, dict[str, str]]:
    """RevokeSignature: every signature of the job is revoked, whatever its time."""
    params = json.loads(self.body or "{}")
    job = _job(self.path.rstrip("/").split("/")[-2], params.get("jobOwner"))
    if not params.get("reason"):
        raise AwsError("ValidationException", "Missing required parameter: reason")
    job.revocation = {
        "reason": params["reason"],
        "revokedAt": datetime.now(timezone.utc).timestamp(),
        "revokedBy": f"arn:{job.partition}:iam::{self.current_account}:user/emulator",
    }
    return _json({})


def get_signing_profile(self: SignerResponse) -> tuple[str, dict[str, str]]:
    """GetSigningProfile, reading another account's profile when `profileOwner` names one."""
    owner = (self.querystring.get("profileOwner") or [self.current_account])[0]
    name = self.path.rstrip("/").split("/")[-1]
    profile = signer_backends[owner][self.region].signing_profiles.get(name)
    if profile is None:
        raise AwsError("ResourceNotFoundException", f"Signing profile {name} not found.")
    body = signer._profile_json(profile, with_revocation=True)
    if getattr(profile, "signing_parameters", None):
        body["signingParameters"] = profile.signing_parameters
    return _json(body)


def _timestamp(raw: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(raw), tz=timezone.utc)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise AwsError("ValidationException", f"signatureTimestamp '{raw}' is not a timestamp")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _profile_version_revoked_at(profile_version_arn: str) -> float | None:
    """When the profile version was revoked from (its effective time), or None if it is not revoked."""
    try:
        _, _, _, region, account, resource = profile_version_arn.split(":", 5)
        _, _, name, version = resource.split("/")
    except ValueError:
        return None
    profile = signer_backends[account][region].signing_profiles.get(name)
    record = getattr(profile, "revocation_record", None)
    if profile is None or not record or profile.profile_version != version:
        return None
    return float(record["revocationEffectiveFrom"])


def revoked_entities(signed_at: datetime, profile_version_arn: str, job_arn: str, certificate_hashes: list[str]) -> list[str]:
    """The given entities that are revoked for a signature made at `signed_at`."""
    def version_revoked(arn: str) -> bool:
        effective = _profile_version_revoked_at(arn)
        return effective is not None and signed_at.timestamp() >= effective

    revoked: list[str] = []
    if version_revoked(profile_version_arn):
        revoked.append(profile_version_arn)
    job = JOBS.get(job_arn.rsplit("/", 1)[-1])
    if job is not None and job.arn == job_arn and job.revocation:
        revoked.append(job_arn)
    for composite in certificate_hashes:
        leaf_of = PKI.identify(composite)
        if leaf_of and version_revoked(leaf_of):
            revoked.append(composite)
    return revoked


def get_revocation_status(self: SignerResponse) -> tuple[str, dict[str, str]]:
    query = self.querystring
    required = ("signatureTimestamp", "platformId", "profileVersionArn", "jobArn", "certificateHashes")
    missing = [name for name in required if not query.get(name)]
    if missing:
        raise AwsError("ValidationException", f"Missing required parameters: {', '.join(missing)}")
    entities = revoked_entities(
        _timestamp(query["signatureTimestamp"][0]), query["profileVersionArn"][0], query["jobArn"][0],
        list(query["certificateHashes"]),
    )
    return _json({"revokedEntities": entities})


def is_recorded(call: AwsCall) -> bool:
    return call.service == "signer" and call.operation in TRAIL_OPERATIONS


def trail_parameters(environ: dict[str, Any], call: AwsCall) -> dict[str, Any]:
    """CloudTrail's requestParameters for a Signer call: the URI member as well as the body."""
    segments = environ.get("PATH_INFO", "").rstrip("/").split("/")
    parameters = dict(call.json_body() or {})
    if call.operation == "RevokeSigningProfile":
        parameters = {"profileName": segments[-2], **parameters}
    elif call.operation == "RevokeSignature":
        parameters = {"jobId": segments[-2], **parameters}
    return parameters


def _roots(query_string: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """`GET /_emulator/signer/roots[?partition=aws]`: the emulated Signer root certificates as PEM."""
    partition = (parse_qs(query_string).get("partition") or [None])[0]
    if partition not in (None, "aws", "aws-us-gov", "aws-cn"):
        return 400, [("Content-Type", "text/plain")], b"partition must be aws, aws-us-gov or aws-cn"
    return 200, [("Content-Type", "application/x-pem-file")], PKI.roots_pem(partition).encode()


def _job_json(job: SigningJob) -> dict[str, Any]:
    leaf, intermediate, root = PKI.chain(f"{job.profile.arn}/{job.profile_version}")
    return {
        "jobId": job.job_id,
        "jobArn": job.arn,
        "profileName": job.profile.name,
        "profileVersionArn": f"{job.profile.arn}/{job.profile_version}",
        "platformId": job.profile.platform_id,
        "signedAt": job.created_at.timestamp(),
        "revoked": job.revocation is not None,
        "certificateHashes": [
            certificate_hash(leaf.certificate, intermediate.certificate),
            certificate_hash(intermediate.certificate, root.certificate),
            certificate_hash(root.certificate, root.certificate),
        ],
    }


def _jobs(query_string: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """`GET /_emulator/signer/jobs`: every signing job managed signing ran, oldest first, with its certificate hashes."""
    with LOCK:
        body = {"jobs": [_job_json(job) for job in JOBS.values()]}
    return 200, [("Content-Type", "application/json")], json.dumps(body).encode()


CONTROL_ROUTES = {"/_emulator/signer/roots": _roots, "/_emulator/signer/jobs": _jobs}


def serve(path: str, query_string: str) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Answers GET on the Signer control endpoints; None for any other path."""
    route = CONTROL_ROUTES.get(path.rstrip("/"))
    return route(query_string) if route else None


def install() -> None:
    SignerResponse.get_signing_profile = get_signing_profile
    SignerResponse.revoke_signature = revoke_signature
    SignerResponse.describe_signing_job = describe_signing_job
    SignerResponse.get_revocation_status = get_revocation_status
    signer_urls.url_paths.update(
        {
            "{0}/revocations$": SignerResponse.dispatch,
            "{0}/signing-jobs/(?P<job_id>[^/]+)$": SignerResponse.dispatch,
            "{0}/signing-jobs/(?P<job_id>[^/]+)/revoke$": SignerResponse.dispatch,
        }
    )
    STORE.on_reset(JOBS.clear)
