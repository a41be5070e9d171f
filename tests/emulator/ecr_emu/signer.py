"""AWS Signer calls that managed signing and its audit need and moto lacks.

Adds `ListSigningProfiles` and `RevokeSigningProfile`, answers a missing
profile with 404 `ResourceNotFoundException` (moto crashes with a 500), shows
the revocation record in `GetSigningProfile`, and knows the Notation platform
that container-image profiles use.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from moto.signer import urls as signer_urls
from moto.signer.models import SignerBackend, SigningProfile
from moto.signer.responses import SignerResponse

from . import paging
from .errors import AwsError

NOTATION_PLATFORM = {
    "platformId": "Notation-OCI-SHA384-ECDSA",
    "displayName": "Notation for OCI registries",
    "partner": "AWSSigner",
    "target": "SHA384-ECDSA",
    "category": "AWS",
    "signingConfiguration": {
        "encryptionAlgorithmOptions": {"allowedValues": ["ECDSA"], "defaultValue": "ECDSA"},
        "hashAlgorithmOptions": {"allowedValues": ["SHA384"], "defaultValue": "SHA384"},
    },
    "signingImageFormat": {"supportedFormats": ["JSONDetached"], "defaultFormat": "JSONDetached"},
    "maxSizeInMB": 2048,
    "revocationSupported": True,
}


def _not_found(name: str) -> AwsError:
    return AwsError("ResourceNotFoundException", f"Signing profile {name} not found.")


def get_signing_profile(self: SignerBackend, profile_name: str) -> SigningProfile:
    profile = self.signing_profiles.get(profile_name)
    if profile is None:
        raise _not_found(profile_name)
    return profile


def cancel_signing_profile(self: SignerBackend, profile_name: str) -> None:
    get_signing_profile(self, profile_name).cancel()


def _profile_json(profile: SigningProfile, with_revocation: bool) -> dict[str, Any]:
    out = {k: v for k, v in profile.to_dict().items() if v is not None}
    record = getattr(profile, "revocation_record", None)
    if record and with_revocation:
        out["revocationRecord"] = record
        out["statusReason"] = profile.status_reason
    return out


def _json(body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    return json.dumps(body), {"Content-Type": "application/json"}


def get_signing_profile_response(self: SignerResponse) -> tuple[str, dict[str, str]]:
    profile = self.signer_backend.get_signing_profile(profile_name=self.path.split("/")[-1])
    return _json(_profile_json(profile, with_revocation=True))


def revoke_signing_profile(self: SignerResponse) -> tuple[str, dict[str, str]]:
    """RevokeSigningProfile: the profile becomes Revoked from `effectiveTime` on."""
    name = self.path.rstrip("/").split("/")[-2]
    profile = self.signer_backend.get_signing_profile(profile_name=name)
    params = json.loads(self.body or "{}")
    missing = [k for k in ("profileVersion", "reason", "effectiveTime") if not params.get(k)]
    if missing:
        raise AwsError("ValidationException", f"Missing required parameters: {', '.join(missing)}")
    if params["profileVersion"] != profile.profile_version:
        raise AwsError("ValidationException", f"Profile version {params['profileVersion']} does not match {name}.")
    profile.status = "Revoked"
    profile.revocation_record = {
        "revocationEffectiveFrom": float(params["effectiveTime"]),
        "revokedAt": datetime.now(timezone.utc).timestamp(),
        "revokedBy": f"arn:aws:iam::{self.current_account}:user/emulator",
    }
    profile.status_reason = params["reason"]
    return _json({})


def list_signing_profiles(self: SignerResponse) -> tuple[str, dict[str, str]]:
    """ListSigningProfiles: canceled profiles only with includeCanceled; statuses and platformId filters; paging."""
    query = self.querystring
    include_canceled = (query.get("includeCanceled") or ["false"])[0].lower() == "true"
    statuses = query.get("statuses") or []
    platform = (query.get("platformId") or [None])[0]
    profiles = [
        p
        for p in self.signer_backend.signing_profiles.values()
        if (include_canceled or p.status != "Canceled")
        and (not statuses or p.status in statuses)
        and (platform is None or p.platform_id == platform)
    ]
    max_results = (query.get("maxResults") or [None])[0]
    token = (query.get("nextToken") or [None])[0]
    found, next_token = paging.page(profiles, max_results, token, 100, paging.service_error("ValidationException"))
    body: dict[str, Any] = {"profiles": [_profile_json(p, with_revocation=False) for p in found]}
    if next_token:
        body["nextToken"] = next_token
    return _json(body)


def install() -> None:
    if NOTATION_PLATFORM not in SignerBackend.platforms:
        SignerBackend.platforms.append(NOTATION_PLATFORM)
    SignerBackend.get_signing_profile = get_signing_profile
    SignerBackend.cancel_signing_profile = cancel_signing_profile
    SignerResponse.get_signing_profile = get_signing_profile_response
    SignerResponse.revoke_signing_profile = revoke_signing_profile
    SignerResponse.list_signing_profiles = list_signing_profiles
    signer_urls.url_paths.update(
        {
            "{0}/signing-profiles$": SignerResponse.dispatch,
            "{0}/signing-profiles/(?P<profile_name>[^/]+)/revoke$": SignerResponse.dispatch,
        }
    )
