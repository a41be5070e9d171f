"""Signer revocation as ecr-audit reads it: GetRevocationStatus, RevokeSignature, profileOwner, CloudTrail (issue 15)."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from support import digest_of, oci_manifest

NOTATION = "Notation-OCI-SHA384-ECDSA"
OTHER_ACCOUNT = "210987654321"


@pytest.fixture
def signer(client):
    return client("signer")


@pytest.fixture
def revocations(endpoint):
    """A Signer client for GetRevocationStatus: its `data-` host prefix must not be put before the emulator's address."""
    return boto3.client(
        "signer", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1}),
    )


@pytest.fixture
def other_account(client, endpoint):
    """`other_account("signer")`: a client acting in OTHER_ACCOUNT through AssumeRole credentials."""
    credentials = client("sts").assume_role(RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/owner", RoleSessionName="owner")["Credentials"]

    def make(service: str):
        return boto3.client(
            service, endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )

    return make


def signed_image(ecr, signer, control, profile_name: str = "releases") -> tuple[dict, dict]:
    """Pushes an image that managed signing signs; returns (profile, signing job)."""
    created = signer.put_signing_profile(profileName=profile_name, platformId=NOTATION)
    ecr.put_signing_configuration(signingConfiguration={"rules": [{"signingProfileArn": created["arn"]}]})
    ecr.create_repository(repositoryName="team-api")
    image = oci_manifest(profile_name)
    ecr.put_image(repositoryName="team-api", imageManifest=image, imageTag="v1")
    [referrer] = ecr.list_image_referrers(repositoryName="team-api", subjectId={"imageDigest": digest_of(image)})["referrers"]
    manifest = json.loads(ecr.batch_get_image(repositoryName="team-api", imageIds=[{"imageDigest": referrer["digest"]}])["images"][0]["imageManifest"])
    assert manifest["subject"]["digest"] == digest_of(image)
    jobs = [e for e in control("GET", "/_emulator/signer/jobs")["jobs"] if e["profileName"] == profile_name]
    return created, jobs[-1]


def status(revocations, profile_version_arn: str, job_arn: str, hashes: list[str], at: datetime) -> list[str]:
    return revocations.get_revocation_status(
        signatureTimestamp=at, platformId=NOTATION, profileVersionArn=profile_version_arn, jobArn=job_arn,
        certificateHashes=hashes,
    ).get("revokedEntities", [])


def test_nothing_is_revoked_until_a_revocation_call(signer, revocations):
    created = signer.put_signing_profile(profileName="fresh", platformId=NOTATION)
    job_arn = "arn:aws:signer:us-east-1:123456789012:/signing-jobs/5f0b6e3a-0000-4000-8000-000000000000"
    assert status(revocations, created["profileVersionArn"], job_arn, ["ab" * 96], datetime.now(timezone.utc)) == []


def test_revoking_the_profile_revokes_signatures_made_from_its_effective_time(signer, revocations):
    created = signer.put_signing_profile(profileName="rotated", platformId=NOTATION)
    effective = datetime.now(timezone.utc)
    signer.revoke_signing_profile(profileName="rotated", profileVersion=created["profileVersion"], reason="rotated",
                                  effectiveTime=effective)
    job_arn = "arn:aws:signer:us-east-1:123456789012:/signing-jobs/5f0b6e3a-0000-4000-8000-000000000000"
    version = created["profileVersionArn"]
    assert status(revocations, version, job_arn, ["ab" * 96], effective + timedelta(minutes=1)) == [version]
    assert status(revocations, version, job_arn, ["ab" * 96], effective - timedelta(days=1)) == []


def test_revoke_signature_revokes_the_job_and_revoking_the_profile_its_leaf_certificate(ecr, signer, revocations, control):
    created, job = signed_image(ecr, signer, control)
    version, job_arn = created["profileVersionArn"], job["jobArn"]
    leaf_hash = job["certificateHashes"][0]
    now = datetime.now(timezone.utc)
    assert status(revocations, version, job_arn, job["certificateHashes"], now) == []

    signer.revoke_signature(jobId=job["jobId"], reason="pushed by mistake")
    assert status(revocations, version, job_arn, job["certificateHashes"], now) == [job_arn]
    described = signer.describe_signing_job(jobId=job["jobId"])
    assert described["revocationRecord"]["reason"] == "pushed by mistake"
    assert described["profileVersion"] == created["profileVersion"]

    signer.revoke_signing_profile(profileName="releases", profileVersion=created["profileVersion"], reason="key lost",
                                  effectiveTime=now - timedelta(hours=1))
    assert status(revocations, version, job_arn, job["certificateHashes"], now) == [version, job_arn, leaf_hash]

    with pytest.raises(ClientError) as missing:
        signer.revoke_signature(jobId="00000000-0000-4000-8000-000000000000", reason="no such job")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_get_signing_profile_with_profile_owner_reads_another_account(signer, other_account):
    owned = other_account("signer").put_signing_profile(profileName="shared", platformId=NOTATION)
    with pytest.raises(ClientError) as mine:
        signer.get_signing_profile(profileName="shared")
    assert mine.value.response["Error"]["Code"] == "ResourceNotFoundException"

    got = signer.get_signing_profile(profileName="shared", profileOwner=OTHER_ACCOUNT)
    assert got["arn"] == owned["arn"]
    assert got["arn"].split(":")[4] == OTHER_ACCOUNT
    assert got["status"] == "Active"


def test_revocations_are_cloudtrail_events_from_aws_signer_on_the_default_bus(ecr, signer, control, client):
    sqs, events = client("sqs"), client("events")
    url = sqs.create_queue(QueueName="signer-trail")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="signer-trail", EventPattern=json.dumps(
        {"source": ["aws.signer"], "detail-type": ["AWS API Call via CloudTrail"]}))
    events.put_targets(Rule="signer-trail", Targets=[{"Id": "queue", "Arn": arn}])

    created, job = signed_image(ecr, signer, control)
    signer.revoke_signature(jobId=job["jobId"], reason="pushed by mistake")
    signer.revoke_signing_profile(profileName="releases", profileVersion=created["profileVersion"], reason="key lost",
                                  effectiveTime=time.time())
    with pytest.raises(ClientError):
        signer.revoke_signing_profile(profileName="releases", profileVersion="0123456789", reason="typo", effectiveTime=time.time())

    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]
    details = [b["detail"] for b in bodies]
    assert [(d["eventSource"], d["eventName"], d.get("errorCode")) for d in details] == [
        ("signer.amazonaws.com", "RevokeSignature", None),
        ("signer.amazonaws.com", "RevokeSigningProfile", None),
        ("signer.amazonaws.com", "RevokeSigningProfile", "ValidationException"),
    ]
    assert details[0]["requestParameters"] == {"jobId": job["jobId"], "reason": "pushed by mistake"}
    assert details[1]["requestParameters"]["profileName"] == "releases"
    assert details[1]["requestParameters"]["profileVersion"] == created["profileVersion"]
    assert all(b["source"] == "aws.signer" and b["account"] == "123456789012" for b in bodies)
    # Reading calls and profile writes are not recorded.
    assert {d["eventName"] for d in details} == {"RevokeSignature", "RevokeSigningProfile"}
