"""Managed signing and the Signer calls it depends on (issue items 3 and 4)."""
from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from support import digest_of, oci_manifest, wait_for

NOTATION = "Notation-OCI-SHA384-ECDSA"
SIGNATURE = "application/vnd.cncf.notary.signature"


@pytest.fixture
def signer(client):
    return client("signer")


def profile(signer, name: str) -> dict:
    return signer.put_signing_profile(profileName=name, platformId=NOTATION)


def sign_repositories(ecr, profile_arn: str, *filters: str) -> None:
    rule = {"signingProfileArn": profile_arn}
    if filters:
        rule["repositoryFilters"] = [{"filter": f, "filterType": "WILDCARD_MATCH"} for f in filters]
    ecr.put_signing_configuration(signingConfiguration={"rules": [rule]})


def statuses(ecr, repository: str, digest: str) -> list[dict]:
    return ecr.describe_image_signing_status(repositoryName=repository, imageId={"imageDigest": digest})["signingStatuses"]


def test_signing_configuration_round_trip(ecr, signer):
    with pytest.raises(ClientError) as missing:
        ecr.get_signing_configuration()
    assert missing.value.response["Error"]["Code"] == "SigningConfigurationNotFoundException"

    arn = profile(signer, "releases")["arn"]
    sign_repositories(ecr, arn, "team-*")
    got = ecr.get_signing_configuration()
    assert got["registryId"] == "123456789012"
    assert got["signingConfiguration"]["rules"][0]["signingProfileArn"] == arn

    deleted = ecr.delete_signing_configuration()
    assert deleted["signingConfiguration"] == got["signingConfiguration"]
    with pytest.raises(ClientError) as gone:
        ecr.delete_signing_configuration()
    assert gone.value.response["Error"]["Code"] == "SigningConfigurationNotFoundException"


def test_push_is_signed_after_the_delay_and_the_signature_is_a_referrer(ecr, signer, control):
    control("POST", "/_emulator/config", {"signing_delay_seconds": 0.5})
    arn = profile(signer, "releases")["arn"]
    sign_repositories(ecr, arn, "team-*")
    ecr.create_repository(repositoryName="team-api")
    image = oci_manifest("signed")
    ecr.put_image(repositoryName="team-api", imageManifest=image, imageTag="v1")

    assert statuses(ecr, "team-api", digest_of(image)) == [{"signingProfileArn": arn, "status": "IN_PROGRESS"}]
    assert ecr.list_image_referrers(repositoryName="team-api", subjectId={"imageDigest": digest_of(image)})["referrers"] == []

    done = wait_for(lambda: statuses(ecr, "team-api", digest_of(image)), lambda s: s[0]["status"] != "IN_PROGRESS")
    assert done == [{"signingProfileArn": arn, "status": "COMPLETE"}]
    referrers = ecr.list_image_referrers(repositoryName="team-api", subjectId={"imageDigest": digest_of(image)})["referrers"]
    assert [r["artifactType"] for r in referrers] == [SIGNATURE]
    signature = ecr.batch_get_image(repositoryName="team-api", imageIds=[{"imageDigest": referrers[0]["digest"]}])["images"][0]
    assert "imageTag" not in signature["imageId"]
    assert digest_of(image) in signature["imageManifest"]


def test_unmatched_repository_gets_no_signing_status(ecr, signer):
    sign_repositories(ecr, profile(signer, "releases")["arn"], "team-*")
    ecr.create_repository(repositoryName="scratch")
    image = oci_manifest("unsigned")
    ecr.put_image(repositoryName="scratch", imageManifest=image, imageTag="v1")
    assert statuses(ecr, "scratch", digest_of(image)) == []


@pytest.mark.parametrize("end_of_profile", ["revoke", "cancel"])
def test_a_revoked_or_canceled_profile_fails_signing(ecr, signer, end_of_profile):
    created = profile(signer, "doomed")
    if end_of_profile == "revoke":
        signer.revoke_signing_profile(
            profileName="doomed", profileVersion=created["profileVersion"], reason="key compromised", effectiveTime=time.time()
        )
    else:
        signer.cancel_signing_profile(profileName="doomed")
    sign_repositories(ecr, created["arn"])
    ecr.create_repository(repositoryName="anything")
    image = oci_manifest(end_of_profile)
    ecr.put_image(repositoryName="anything", imageManifest=image, imageTag="v1")

    [status] = statuses(ecr, "anything", digest_of(image))
    assert status["status"] == "FAILED"
    assert status["failureCode"] == {"revoke": "SIGNING_PROFILE_REVOKED", "cancel": "SIGNING_PROFILE_CANCELED"}[end_of_profile]
    assert status["failureReason"]
    assert ecr.list_image_referrers(repositoryName="anything", subjectId={"imageDigest": digest_of(image)})["referrers"] == []


def test_signer_revocation_listing_and_missing_profile(signer):
    created = profile(signer, "kept")
    profile(signer, "dropped")
    signer.cancel_signing_profile(profileName="dropped")
    signer.revoke_signing_profile(profileName="kept", profileVersion=created["profileVersion"], reason="rotated", effectiveTime=time.time())

    got = signer.get_signing_profile(profileName="kept")
    assert got["status"] == "Revoked"
    assert got["statusReason"] == "rotated"
    assert got["revocationRecord"]["revokedBy"].startswith("arn:aws:iam::")
    assert [p["profileName"] for p in signer.list_signing_profiles()["profiles"]] == ["kept"]
    assert sorted(p["profileName"] for p in signer.list_signing_profiles(includeCanceled=True)["profiles"]) == ["dropped", "kept"]
    assert [p["status"] for p in signer.list_signing_profiles(statuses=["Revoked"])["profiles"]] == ["Revoked"]

    with pytest.raises(ClientError) as missing:
        signer.get_signing_profile(profileName="nobody")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
