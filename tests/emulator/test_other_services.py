"""Services beyond ECR that the next issues rely on, through the emulator server: ECR Public
(issue 16 item 6), Organizations account discovery (issue 20), KMS ECC signing and S3 Object
Lock for signed evidence heads (issue 17), ECS service revisions for the deployment hook (issue 19)."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import load_der_public_key
from support import oci_manifest


def error_code(problem: pytest.ExceptionInfo[ClientError]) -> str:
    return problem.value.response["Error"]["Code"]


# ------------------------------------------------------------------ ECR Public
def test_ecr_public_repositories_and_tags(client):
    public = client("ecr-public")
    created = public.create_repository(repositoryName="tools/cli", tags=[{"Key": "team", "Value": "platform"}])["repository"]
    public.create_repository(repositoryName="tools/web")
    arn = created["repositoryArn"]
    assert arn == "arn:aws:ecr-public::123456789012:repository/tools/cli"

    listed = public.describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in listed] == ["tools/cli", "tools/web"]
    [one] = public.describe_repositories(repositoryNames=["tools/web"])["repositories"]
    assert one["registryId"] == "123456789012" and isinstance(one["createdAt"], datetime)
    first = public.describe_repositories(maxResults=1)
    assert len(first["repositories"]) == 1 and "nextToken" in first

    public.tag_resource(resourceArn=arn, tags=[{"Key": "data", "Value": "public"}])
    public.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert public.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "data", "Value": "public"}]


def test_ecr_public_writes_get_cloudtrail_events(client, control):
    public = client("ecr-public")
    arn = public.create_repository(repositoryName="traced")["repository"]["repositoryArn"]
    public.tag_resource(resourceArn=arn, tags=[{"Key": "team", "Value": "platform"}])
    public.list_tags_for_resource(resourceArn=arn)
    with pytest.raises(ClientError):
        public.create_repository(repositoryName="traced")
    emitted = [e for e in control("GET", "/_emulator/events")["events"] if e["source"] == "aws.ecr-public"]
    assert [e["detail-type"] for e in emitted] == ["AWS API Call via CloudTrail"] * 3
    trail = [e["detail"] for e in emitted]
    assert [d["eventName"] for d in trail] == ["CreateRepository", "TagResource", "CreateRepository"]
    assert {d["eventSource"] for d in trail} == {"ecr-public.amazonaws.com"}
    assert {d["awsRegion"] for d in trail} == {"us-east-1"}
    assert trail[1]["requestParameters"]["resourceArn"] == arn
    assert "errorCode" not in trail[0] and trail[2]["errorCode"] == "RepositoryAlreadyExistsException"


def test_ecr_public_errors(client):
    public = client("ecr-public")
    public.create_repository(repositoryName="dup")
    with pytest.raises(ClientError) as duplicate:
        public.create_repository(repositoryName="dup")
    assert error_code(duplicate) == "RepositoryAlreadyExistsException"
    with pytest.raises(ClientError) as missing:
        public.describe_repositories(repositoryNames=["absent"])
    assert error_code(missing) == "RepositoryNotFoundException"


def test_ecr_public_only_in_us_east_1(endpoint):
    public = boto3.client("ecr-public", endpoint_url=endpoint, region_name="eu-west-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    with pytest.raises(ClientError) as elsewhere:
        public.describe_repositories()
    assert error_code(elsewhere) == "InvalidParameterException"


# ------------------------------------------------------------------ Organizations
def test_organizations_lists_accounts_and_accounts_of_a_parent(client):
    org = client("organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    unit = org.create_organizational_unit(ParentId=root, Name="workloads")["OrganizationalUnit"]["Id"]
    created = [org.create_account(Email=f"{n}@example.com", AccountName=n)["CreateAccountStatus"]["AccountId"] for n in ("a", "b")]
    org.move_account(AccountId=created[0], SourceParentId=root, DestinationParentId=unit)

    everyone = {a["Id"] for a in org.list_accounts()["Accounts"]}
    assert set(created) | {"123456789012"} == everyone
    in_unit = org.list_accounts_for_parent(ParentId=unit)["Accounts"]
    assert [a["Id"] for a in in_unit] == [created[0]] and in_unit[0]["Status"] == "ACTIVE"
    paged = org.list_accounts(MaxResults=1)
    assert len(paged["Accounts"]) == 1 and "NextToken" in paged


# ------------------------------------------------------------------ KMS ECC signing
@pytest.fixture
def ecc_key(client):
    kms = client("kms")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert key["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    public = load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    return kms, key["KeyId"], public


def test_kms_ecc_signature_of_a_message_verifies_with_the_public_key(ecc_key):
    kms, key_id, public = ecc_key
    message = b"evidence head 42"
    signature = kms.sign(KeyId=key_id, Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"evidence head 43", ec.ECDSA(hashes.SHA256()))


def test_kms_ecc_signature_of_a_digest_verifies_as_prehashed(ecc_key):
    kms, key_id, public = ecc_key
    digest = hashlib.sha256(b"evidence head 42").digest()
    signature = kms.sign(KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    # The same signature is that of the message whose hash the digest is.
    public.verify(signature, b"evidence head 42", ec.ECDSA(hashes.SHA256()))
    assert kms.verify(KeyId=key_id, Message=digest, MessageType="DIGEST", Signature=signature,
                      SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"] is True
    with pytest.raises(ClientError) as invalid:
        kms.verify(KeyId=key_id, Message=hashlib.sha256(b"other").digest(), MessageType="DIGEST",
                   Signature=signature, SigningAlgorithm="ECDSA_SHA_256")
    assert error_code(invalid) == "KMSInvalidSignatureException"


def test_kms_refuses_a_digest_of_the_wrong_length(ecc_key):
    kms, key_id, _ = ecc_key
    with pytest.raises(ClientError) as wrong:
        kms.sign(KeyId=key_id, Message=b"short", MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert error_code(wrong) == "ValidationException"


# ------------------------------------------------------------------ S3 Object Lock
@pytest.fixture
def locked_bucket(client):
    s3 = client("s3")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket="evidence", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    return s3


def test_locked_version_cannot_be_deleted_or_overwritten(locked_bucket):
    s3 = locked_bucket
    first = s3.put_object(Bucket="evidence", Key="heads/1", Body=b"head 1")["VersionId"]
    retention = s3.get_object_retention(Bucket="evidence", Key="heads/1", VersionId=first)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["RetainUntilDate"] > datetime.now(timezone.utc) + timedelta(hours=23)

    for attempt in (lambda: s3.delete_object(Bucket="evidence", Key="heads/1", VersionId=first),
                    lambda: s3.delete_object(Bucket="evidence", Key="heads/1", VersionId=first, BypassGovernanceRetention=True)):
        with pytest.raises(ClientError) as refused:
            attempt()
        assert error_code(refused) == "AccessDenied"
    batch = s3.delete_objects(Bucket="evidence", Delete={"Objects": [{"Key": "heads/1", "VersionId": first}]})
    assert batch.get("Deleted", []) == [] and batch["Errors"][0]["Key"] == "heads/1"

    # An "overwrite" adds a version; the locked one keeps its bytes.
    second = s3.put_object(Bucket="evidence", Key="heads/1", Body=b"forged")["VersionId"]
    assert second != first
    assert s3.get_object(Bucket="evidence", Key="heads/1", VersionId=first)["Body"].read() == b"head 1"


def test_compliance_retention_cannot_be_shortened_or_weakened(locked_bucket):
    s3 = locked_bucket
    version = s3.put_object(Bucket="evidence", Key="heads/2", Body=b"head 2")["VersionId"]
    for mode, until in (("COMPLIANCE", datetime(2020, 1, 1, tzinfo=timezone.utc)),
                        ("GOVERNANCE", datetime.now(timezone.utc) + timedelta(days=30))):
        with pytest.raises(ClientError) as refused:
            s3.put_object_retention(Bucket="evidence", Key="heads/2", VersionId=version,
                                    Retention={"Mode": mode, "RetainUntilDate": until})
        assert error_code(refused) == "AccessDenied"
    longer = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
    s3.put_object_retention(Bucket="evidence", Key="heads/2", VersionId=version,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": longer})
    assert s3.get_object_retention(Bucket="evidence", Key="heads/2", VersionId=version)["Retention"]["RetainUntilDate"] == longer


def test_expired_retention_allows_the_delete(client):
    s3 = client("s3")
    s3.create_bucket(Bucket="short-lived", ObjectLockEnabledForBucket=True)
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    version = s3.put_object(Bucket="short-lived", Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                            ObjectLockRetainUntilDate=past)["VersionId"]
    s3.delete_object(Bucket="short-lived", Key="k", VersionId=version)
    assert "Versions" not in s3.list_object_versions(Bucket="short-lived")


def test_object_without_retention_has_no_lock_configuration(client):
    s3 = client("s3")
    s3.create_bucket(Bucket="plain-lockable", ObjectLockEnabledForBucket=True)
    version = s3.put_object(Bucket="plain-lockable", Key="k", Body=b"x")["VersionId"]
    with pytest.raises(ClientError) as none:
        s3.get_object_retention(Bucket="plain-lockable", Key="k", VersionId=version)
    assert error_code(none) == "NoSuchObjectLockConfiguration"


def test_a_service_revision_names_its_images_resolved_to_digests(ecr, client):
    """DescribeServiceRevisions (moto has none): the service's task definition, each ECR image
    reference resolved to the digest its tag names at the time of the call."""
    ecs = client("ecs")
    ecr.create_repository(repositoryName="shop/web")
    pushed = ecr.put_image(repositoryName="shop/web", imageManifest=oci_manifest("web"), imageTag="v1")
    digest = pushed["image"]["imageId"]["imageDigest"]
    registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    ecs.create_cluster(clusterName="prod")
    family = ecs.register_task_definition(family="shop", containerDefinitions=[
        {"name": "web", "image": f"{registry}/shop/web:v1", "memory": 128},
        {"name": "sidecar", "image": f"{registry}/shop/web@{digest}", "memory": 64},
        {"name": "elsewhere", "image": "public.ecr.aws/nginx/nginx:1.27", "memory": 64},
    ])["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="prod", serviceName="web", taskDefinition=family, desiredCount=1)
    arn = "arn:aws:ecs:us-east-1:123456789012:service-revision/prod/web/4980306466373577095"

    answer = ecs.describe_service_revisions(serviceRevisionArns=[arn, arn.replace("/web/", "/gone/")])

    [revision] = answer["serviceRevisions"]
    assert revision["taskDefinition"] == family
    assert {i["containerName"]: i.get("imageDigest") for i in revision["containerImages"]} == {
        "web": digest, "sidecar": digest, "elsewhere": None}
    assert answer["failures"] == [{"arn": arn.replace("/web/", "/gone/"), "reason": "MISSING"}]
