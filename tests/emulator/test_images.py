"""Digests, tags, DescribeImages and referrers behave as in ECR (issue items 1 and 2)."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from support import digest_of, oci_manifest

SIGNATURE = "application/vnd.cncf.notary.signature"
SBOM = "application/spdx+json"


def referrer(subject_manifest: str, artifact_type: str, seed: str) -> str:
    subject = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest_of(subject_manifest),
        "size": len(subject_manifest.encode()),
    }
    return oci_manifest(seed, artifactType=artifact_type, subject=subject)


def test_digest_is_sha256_of_the_exact_manifest_bytes(ecr):
    ecr.create_repository(repositoryName="digests")
    manifest = oci_manifest("one")
    reformatted = manifest.replace(", ", ",")

    first = ecr.put_image(repositoryName="digests", imageManifest=manifest, imageTag="a")["image"]
    other = ecr.put_image(repositoryName="digests", imageManifest=reformatted, imageTag="b")["image"]

    assert first["imageId"]["imageDigest"] == digest_of(manifest)
    assert other["imageId"]["imageDigest"] == digest_of(reformatted) != digest_of(manifest)
    fetched = ecr.batch_get_image(repositoryName="digests", imageIds=[{"imageTag": "a"}])["images"][0]
    assert fetched["imageManifest"] == manifest


def test_same_manifest_twice_is_one_image_with_two_tags(ecr):
    ecr.create_repository(repositoryName="retag")
    manifest = oci_manifest("same")
    ecr.put_image(repositoryName="retag", imageManifest=manifest, imageTag="v1")
    ecr.put_image(repositoryName="retag", imageManifest=manifest, imageTag="latest")

    details = ecr.describe_images(repositoryName="retag")["imageDetails"]
    assert len(details) == 1
    assert sorted(details[0]["imageTags"]) == ["latest", "v1"]
    with pytest.raises(ClientError) as again:
        ecr.put_image(repositoryName="retag", imageManifest=manifest, imageTag="v1")
    assert again.value.response["Error"]["Code"] == "ImageAlreadyExistsException"


def test_a_wrong_explicit_digest_is_refused(ecr):
    ecr.create_repository(repositoryName="mismatch")
    with pytest.raises(ClientError) as refused:
        ecr.put_image(repositoryName="mismatch", imageManifest=oci_manifest("x"), imageDigest="sha256:" + "0" * 64)
    assert refused.value.response["Error"]["Code"] == "ImageDigestDoesNotMatchException"


def test_a_moved_tag_leaves_the_old_image_untagged(ecr):
    ecr.create_repository(repositoryName="moving")
    old, new = oci_manifest("old"), oci_manifest("new")
    ecr.put_image(repositoryName="moving", imageManifest=old, imageTag="latest")
    ecr.put_image(repositoryName="moving", imageManifest=new, imageTag="latest")

    untagged = ecr.describe_images(repositoryName="moving", filter={"tagStatus": "UNTAGGED"})["imageDetails"]
    tagged = ecr.describe_images(repositoryName="moving", filter={"tagStatus": "TAGGED"})["imageDetails"]
    assert [d["imageDigest"] for d in untagged] == [digest_of(old)]
    assert [(d["imageDigest"], d["imageTags"]) for d in tagged] == [(digest_of(new), ["latest"])]


def test_immutable_tags_honour_wildcard_exclusions(ecr):
    ecr.create_repository(
        repositoryName="frozen",
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filter": "dev-*", "filterType": "WILDCARD"}],
    )
    ecr.put_image(repositoryName="frozen", imageManifest=oci_manifest("1"), imageTag="v1")
    ecr.put_image(repositoryName="frozen", imageManifest=oci_manifest("2"), imageTag="dev-x")

    ecr.put_image(repositoryName="frozen", imageManifest=oci_manifest("3"), imageTag="dev-x")
    with pytest.raises(ClientError) as refused:
        ecr.put_image(repositoryName="frozen", imageManifest=oci_manifest("4"), imageTag="v1")
    assert refused.value.response["Error"]["Code"] == "ImageTagAlreadyExistsException"


def can_move(ecr, repository: str, tag: str, seed: str) -> bool:
    """Pushes `tag` twice with different images: True if the second push moved the tag."""
    ecr.put_image(repositoryName=repository, imageManifest=oci_manifest(f"{seed}-first"), imageTag=tag)
    try:
        ecr.put_image(repositoryName=repository, imageManifest=oci_manifest(f"{seed}-second"), imageTag=tag)
    except ClientError as refused:
        assert refused.response["Error"]["Code"] == "ImageTagAlreadyExistsException"
        return False
    return True


# Tags a regular expression would exclude (moto: `re.match(filter, tag)`) but an anchored
# AWS wildcard does not, and the other way round.
@pytest.mark.parametrize(
    "filters, tag, excluded",
    [
        (["dev-*"], "dev-42", True),
        (["dev-*"], "devx", False),        # regex: "dev" then zero or more "-"
        (["latest"], "latest", True),
        (["latest"], "latest-rc", False),  # regex: prefix match
        (["1.0"], "1x0", False),           # regex: "." is any character
        (["*-rc"], "2.1-rc", True),        # regex: "*" cannot start a pattern
        (["*-rc"], "2.1-rc1", False),
        (["v*.*"], "v2.3", True),
        (["v*.*"], "v2", False),
    ],
)
def test_exclusion_filters_are_anchored_wildcards(ecr, filters, tag, excluded):
    exclusion = [{"filter": f, "filterType": "WILDCARD"} for f in filters]
    ecr.create_repository(repositoryName="immutable-but", imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                          imageTagMutabilityExclusionFilters=exclusion)
    ecr.create_repository(repositoryName="mutable-but", imageTagMutability="MUTABLE_WITH_EXCLUSION",
                          imageTagMutabilityExclusionFilters=exclusion)

    assert can_move(ecr, "immutable-but", tag, "i") is excluded
    assert can_move(ecr, "mutable-but", tag, "m") is not excluded


def test_put_image_tag_mutability_validates_and_echoes_filters(ecr):
    ecr.create_repository(repositoryName="settings")
    exclusion = [{"filter": "dev-*", "filterType": "WILDCARD"}]

    answer = ecr.put_image_tag_mutability(repositoryName="settings", imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                                          imageTagMutabilityExclusionFilters=exclusion)

    assert answer["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert answer["imageTagMutabilityExclusionFilters"] == exclusion
    [repository] = ecr.describe_repositories(repositoryNames=["settings"])["repositories"]
    assert repository["imageTagMutabilityExclusionFilters"] == exclusion
    for mutability, filters in (("MUTABLE", exclusion), ("IMMUTABLE_WITH_EXCLUSION", None),
                                ("IMMUTABLE_WITH_EXCLUSION", [{"filter": "bad/tag", "filterType": "WILDCARD"}])):
        request = {"repositoryName": "settings", "imageTagMutability": mutability}
        if filters:
            request["imageTagMutabilityExclusionFilters"] = filters
        with pytest.raises(ClientError) as refused:
            ecr.put_image_tag_mutability(**request)
        assert refused.value.response["Error"]["Code"] == "InvalidParameterException", (mutability, filters)
    [unchanged] = ecr.describe_repositories(repositoryNames=["settings"])["repositories"]
    assert (unchanged["imageTagMutability"], unchanged["imageTagMutabilityExclusionFilters"]) == ("IMMUTABLE_WITH_EXCLUSION", exclusion)


def test_describe_images_shows_artifact_type_and_subject(ecr):
    ecr.create_repository(repositoryName="artifacts")
    image = oci_manifest("image")
    signature = referrer(image, SIGNATURE, "sig")
    ecr.put_image(repositoryName="artifacts", imageManifest=image, imageTag="v1")
    ecr.put_image(repositoryName="artifacts", imageManifest=signature)

    details = {d["imageDigest"]: d for d in ecr.describe_images(repositoryName="artifacts")["imageDetails"]}
    assert details[digest_of(signature)]["artifactMediaType"] == SIGNATURE
    assert details[digest_of(signature)]["subjectManifestDigest"] == digest_of(image)
    assert "subjectManifestDigest" not in details[digest_of(image)]
    assert details[digest_of(image)]["artifactMediaType"] == "application/vnd.oci.image.config.v1+json"


def test_describe_and_list_images_page(ecr):
    ecr.create_repository(repositoryName="paged")
    for n in range(5):
        ecr.put_image(repositoryName="paged", imageManifest=oci_manifest(f"p{n}"), imageTag=f"t{n}")

    pages = list(ecr.get_paginator("describe_images").paginate(repositoryName="paged", PaginationConfig={"PageSize": 2}))
    assert [len(p["imageDetails"]) for p in pages] == [2, 2, 1]
    ids = [i for p in ecr.get_paginator("list_images").paginate(repositoryName="paged", PaginationConfig={"PageSize": 3}) for i in p["imageIds"]]
    assert sorted(i["imageTag"] for i in ids) == [f"t{n}" for n in range(5)]


def test_list_image_referrers_filters_by_artifact_type_and_pages(ecr):
    ecr.create_repository(repositoryName="referred")
    image = oci_manifest("subject")
    ecr.put_image(repositoryName="referred", imageManifest=image, imageTag="v1")
    signatures = [referrer(image, SIGNATURE, f"s{n}") for n in range(3)]
    for manifest in [*signatures, referrer(image, SBOM, "sbom"), referrer(oci_manifest("other"), SIGNATURE, "elsewhere")]:
        ecr.put_image(repositoryName="referred", imageManifest=manifest)

    subject = {"imageDigest": digest_of(image)}
    everything = ecr.list_image_referrers(repositoryName="referred", subjectId=subject)["referrers"]
    assert sorted(r["artifactType"] for r in everything) == [SBOM, SIGNATURE, SIGNATURE, SIGNATURE]

    first = ecr.list_image_referrers(
        repositoryName="referred", subjectId=subject, filter={"artifactTypes": [SIGNATURE]}, maxResults=2
    )
    second = ecr.list_image_referrers(
        repositoryName="referred", subjectId=subject, filter={"artifactTypes": [SIGNATURE]}, maxResults=2,
        nextToken=first["nextToken"],
    )
    assert "nextToken" not in second
    listed = first["referrers"] + second["referrers"]
    assert {r["digest"]: r["size"] for r in listed} == {digest_of(s): len(s.encode()) for s in signatures}
    assert {r["artifactStatus"] for r in listed} == {"ACTIVE"}


def test_batch_delete_by_tag_keeps_other_tags_and_by_digest_removes_the_image(ecr):
    ecr.create_repository(repositoryName="deleting")
    manifest = oci_manifest("del")
    for tag in ("a", "b"):
        ecr.put_image(repositoryName="deleting", imageManifest=manifest, imageTag=tag)

    by_tag = ecr.batch_delete_image(repositoryName="deleting", imageIds=[{"imageTag": "a"}])
    assert by_tag["imageIds"] == [{"imageDigest": digest_of(manifest), "imageTag": "a"}]
    by_digest = ecr.batch_delete_image(repositoryName="deleting", imageIds=[{"imageDigest": digest_of(manifest)}, {"imageTag": "zz"}])
    assert by_digest["imageIds"] == [{"imageDigest": digest_of(manifest), "imageTag": "b"}]
    assert by_digest["failures"][0]["failureCode"] == "ImageNotFound"
    assert ecr.describe_images(repositoryName="deleting")["imageDetails"] == []


def test_kms_without_a_key_uses_the_aws_managed_ecr_key(ecr, client):
    kms = client("kms")
    customer = kms.create_key(Description="mine")["KeyMetadata"]["Arn"]
    managed = ecr.create_repository(repositoryName="kms-default", encryptionConfiguration={"encryptionType": "KMS"})
    own = ecr.create_repository(repositoryName="kms-own",
                                encryptionConfiguration={"encryptionType": "KMS", "kmsKey": customer})
    again = ecr.create_repository(repositoryName="kms-default-2", encryptionConfiguration={"encryptionType": "KMS_DSSE"})
    managed_key = managed["repository"]["encryptionConfiguration"]["kmsKey"]
    assert again["repository"]["encryptionConfiguration"]["kmsKey"] == managed_key, "one aws/ecr key per account and region"
    assert kms.describe_key(KeyId=managed_key)["KeyMetadata"]["KeyManager"] == "AWS"
    assert kms.describe_key(KeyId="alias/aws/ecr")["KeyMetadata"]["Arn"] == managed_key
    assert own["repository"]["encryptionConfiguration"]["kmsKey"] == customer
    assert kms.describe_key(KeyId=customer)["KeyMetadata"]["KeyManager"] == "CUSTOMER"
