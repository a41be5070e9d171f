"""Seeds a realistic ECR estate into the emulator for `scripts/demo`, through real API calls.

Subcommands:
  routing          deploy infra/cloudformation/central.yaml into the emulator (routing only:
                   the queue, its dead-letter queue and the EventBridge rules production
                   uses) with CreateStack; print `export ECR_AUDIT_QUEUE_URL=...` from the
                   stack's outputs
  seed             create repositories with mixed settings, push images as several people,
                   and regress a repository's policy half-way through
  trust DIR        write the trust configuration the worker verifies with into DIR: a
                   Notation trust store with the emulator's AWS Signer roots
                   (`/_emulator/signer/roots`), a strict trustpolicy.json, and the CI's Cosign
                   key pair (public key ci-cosign.pub for ECR_AUDIT_COSIGN_KEYS)
  late-signature DIR  CI signs the latest platform/api image with Cosign (`cosign sign --key`
                   style, tests/signing/cosign.py), long after its push
  forged-signature mallory pushes an image and a real managed signature of a payments/api image
                   copied onto it (manifest and envelope): a forgery the verifier must refuse
  anchor           the evidence trust anchor, as the stack makes it with DeployService=true: an
                   asymmetric KMS key (ECC_NIST_P256, SIGN_VERIFY) that signs the tree heads and
                   an S3 bucket with Object Lock they are written to; print the exports of
                   ECR_AUDIT_EVIDENCE_KEY and ECR_AUDIT_EVIDENCE_BUCKET
  wait-drained     wait until the queue holds no message, visible or in flight

Every ECR call goes to the emulator (AWS_ENDPOINT_URL), which emits the EventBridge events AWS
would; the rules route them to the queue the worker consumes.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "signing"))
import cosign  # noqa: E402  (tests/signing: the independent signer)
from cryptography.hazmat.primitives import serialization  # noqa: E402

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGION = os.environ.get("AWS_REGION", "us-east-1")
CENTRAL_TEMPLATE = Path(__file__).resolve().parents[1] / "infra" / "cloudformation" / "central.yaml"
STACK = "ecr-audit-demo"

PEOPLE = {
    "ci": "arn:aws:sts::123456789012:assumed-role/github-actions-deployer/run-4711",
    "alice": "arn:aws:iam::123456789012:user/alice",
    "bob": "arn:aws:iam::123456789012:user/bob",
    "mallory": "arn:aws:sts::123456789012:assumed-role/AdminSSO/mallory",
}

LIFECYCLE = json.dumps({"rules": [{"rulePriority": 1, "description": "expire untagged", "selection": {
    "tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
    "action": {"type": "expire"}}]})


def client(service: str, caller: str | None = None):
    made = boto3.client(service, endpoint_url=ENDPOINT, region_name=REGION)
    if caller:
        def add_caller(request, **_):
            request.headers["x-emulator-caller-arn"] = PEOPLE[caller]
        made.meta.events.register("before-send.*.*", add_caller)
    return made


def routing() -> None:
    """The demo's events travel exactly as in production: through the rules and queue of the
    central stack, deployed here with DeployService=false (the worker runs locally).

    The emulator ignores the stack's queue policies and DLQ alarm (docs/DEPLOY.md); the
    rules, the queue, the DLQ and the redrive policy are real. A stack left by an earlier
    `scripts/demo --keep` on the same emulator is reused."""
    cfn = client("cloudformation")
    try:
        stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
    except cfn.exceptions.ClientError:
        stack = None
    if stack is None or stack["StackStatus"] != "CREATE_COMPLETE":
        if stack is not None:
            cfn.delete_stack(StackName=STACK)
        cfn.create_stack(
            StackName=STACK,
            TemplateBody=CENTRAL_TEMPLATE.read_text(),
            Parameters=[{"ParameterKey": "DeployService", "ParameterValue": "false"}],
            Capabilities=["CAPABILITY_IAM"],
        )
        stack = wait_for_stack(cfn)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    print(f"stack {STACK}: rules {', '.join(outputs[k].rsplit('/', 1)[1] for k in ('EcrEventsRuleArn', 'InspectorEventsRuleArn', 'CloudTrailEventsRuleArn'))}",
          file=sys.stderr)
    print(f"export ECR_AUDIT_QUEUE_URL={outputs['QueueUrl']}")


def wait_for_stack(cfn, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            sys.exit(f"{STACK} still {stack['StackStatus']} after {timeout:.0f}s")
        time.sleep(0.2)
    if stack["StackStatus"] != "CREATE_COMPLETE":
        sys.exit(f"{STACK}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
    return stack


def manifest(repository: str, n: int) -> str:
    def digest(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1024,
                   "digest": digest(f"{repository}-config-{n}")},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 31_457_280,
                    "digest": digest(f"{repository}-layer-{n}")}],
    })


def control(path: str, body: dict) -> None:
    import urllib.request
    request = urllib.request.Request(f"{ENDPOINT}/_emulator/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def signing() -> None:
    """Managed signing for payments/* and checkout/* with an active profile; search/* with a
    revoked one (its signing fails). Scans complete a second after each push."""
    control("config", {"signing_delay_seconds": 1, "scan_delay_seconds": 1})
    signer, ecr = client("signer"), client("ecr", "alice")
    release = signer.put_signing_profile(profileName="release_signer", platformId="Notation-OCI-SHA384-ECDSA")
    legacy = signer.put_signing_profile(profileName="legacy_signer", platformId="Notation-OCI-SHA384-ECDSA")
    signer.revoke_signing_profile(profileName="legacy_signer", profileVersion=legacy["profileVersion"],
                                  reason="key rotated", effectiveTime=time.time() - 60)
    rule = lambda arn, pattern: {"signingProfileArn": arn, "repositoryFilters": [
        {"filter": pattern, "filterType": "WILDCARD_MATCH"}]}
    ecr.put_signing_configuration(signingConfiguration={"rules": [
        rule(release["arn"], "payments/*"), rule(release["arn"], "checkout/*"), rule(legacy["arn"], "search/*")]})
    control("scan-results", {"repositoryName": "identity/batch", "status": "COMPLETE",
                             "findingSeverityCounts": {"CRITICAL": 2, "HIGH": 5, "MEDIUM": 9}})
    control("scan-results", {"repositoryName": "platform/worker", "status": "UNSUPPORTED_IMAGE"})
    print("managed signing: payments/* and checkout/* (release_signer), search/* (legacy_signer, revoked)", flush=True)


def trust(directory: str) -> None:
    """The trust configuration: Signer roots as a signingAuthority store, a strict policy for
    every repository, and the CI's Cosign key."""
    import urllib.request
    root = Path(directory)
    store = root / "truststore" / "x509" / "signingAuthority" / "aws-signer-ts"
    store.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(f"{ENDPOINT}/_emulator/signer/roots", timeout=10) as response:
        (store / "aws-signer-roots.pem").write_bytes(response.read())
    (root / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": [{
        "name": "aws-signer", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": ["signingAuthority:aws-signer-ts"], "trustedIdentities": ["*"]}]}, indent=2))
    key = cosign.new_key()
    (root / "ci-cosign.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (root / "ci-cosign.pub").write_bytes(cosign.public_key_pem(key))
    print(f"export ECR_AUDIT_TRUST_POLICY={root / 'trustpolicy.json'} ECR_AUDIT_TRUST_STORE={root / 'truststore'} "
          f"ECR_AUDIT_COSIGN_KEYS={root / 'ci-cosign.pub'}")


def upload_blob(ecr, repository: str, data: bytes) -> str:
    """A blob pushed with the layer-upload calls, as a registry client would; its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    found = ecr.batch_check_layer_availability(repositoryName=repository, layerDigests=[digest])["layers"]
    if found and found[0].get("layerAvailability") == "AVAILABLE":
        return digest
    upload = ecr.initiate_layer_upload(repositoryName=repository)["uploadId"]
    ecr.upload_layer_part(repositoryName=repository, uploadId=upload, partFirstByte=0,
                          partLastByte=len(data) - 1, layerPartBlob=data)
    ecr.complete_layer_upload(repositoryName=repository, uploadId=upload, layerDigests=[digest])
    return digest


def late_signature(directory: str) -> None:
    """A CI job signs the latest platform/api image with Cosign long after its push."""
    ecr = client("ecr", "ci")
    latest = max(ecr.describe_images(repositoryName="platform/api")["imageDetails"], key=lambda d: d["imagePushedAt"])
    subject = latest["imageDigest"]
    key = serialization.load_pem_private_key((Path(directory) / "ci-cosign.key").read_bytes(), password=None)
    payload, signature = cosign.sign_simple_signing("platform/api", subject, key)
    layer = upload_blob(ecr, "platform/api", payload)
    config = upload_blob(ecr, "platform/api", b"{}")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": config},
        "layers": [{"mediaType": cosign.SIMPLE_SIGNING_MEDIA_TYPE, "size": len(payload), "digest": layer,
                    "annotations": {cosign.SIGNATURE_ANNOTATION: signature}}]})
    tag = subject.replace(":", "-", 1) + ".sig"
    ecr.put_image(repositoryName="platform/api", imageManifest=manifest, imageTag=tag,
                  imageManifestMediaType="application/vnd.oci.image.manifest.v1+json")
    print(f"late Cosign signature pushed for platform/api@{subject[:19]} ({tag[:26]}…)", flush=True)


def forged_signature() -> None:
    """mallory pushes an image where no signing rule applies, then copies a real managed
    signature of a payments/api image onto it, hoping to make it look signed."""
    import urllib.request
    ecr = client("ecr", "mallory")
    pushed = ecr.put_image(repositoryName="platform/web", imageTag="hotfix", imageManifest=manifest("platform/web", 99),
                           imageManifestMediaType="application/vnd.oci.image.manifest.v1+json")["image"]
    digest, size = pushed["imageId"]["imageDigest"], len(pushed["imageManifest"])
    source = None
    for image in ecr.describe_images(repositoryName="payments/api")["imageDetails"]:
        got = ecr.batch_get_image(repositoryName="payments/api", imageIds=[{"imageDigest": image["imageDigest"]}],
                                  acceptedMediaTypes=["application/vnd.oci.image.manifest.v1+json"])["images"]
        body = json.loads(got[0]["imageManifest"]) if got else {}
        if body.get("artifactType") == "application/vnd.cncf.notary.signature":
            source = body
            break
    if source is None:
        sys.exit("no managed signature found in payments/api to copy")
    for layer in source["layers"]:
        url = ecr.get_download_url_for_layer(repositoryName="payments/api", layerDigest=layer["digest"])["downloadUrl"]
        with urllib.request.urlopen(url, timeout=10) as response:
            upload_blob(ecr, "platform/web", response.read())
    source["subject"] = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size}
    ecr.put_image(repositoryName="platform/web", imageManifest=json.dumps(source),
                  imageManifestMediaType="application/vnd.oci.image.manifest.v1+json")
    print(f"mallory pushed platform/web@{digest[:19]} with a real payments/api signature copied onto it", flush=True)


def seed() -> None:
    rng = random.Random(7)
    signing()
    kms = client("kms")
    key = kms.create_key(Description="ecr images")["KeyMetadata"]["Arn"]
    teams = ["payments", "checkout", "search", "identity", "platform"]
    kinds = ["api", "worker", "web", "batch"]
    repositories = []
    for i in range(20):
        name = f"{teams[i % 5]}/{kinds[i % 4]}"
        if name in {r["name"] for r in repositories}:
            name = f"{name}-{i}"
        mutability = ["IMMUTABLE", "IMMUTABLE", "MUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"][i % 5]
        spec = {"name": name, "mutability": mutability, "encryption": ["KMS-customer", "AES256", "KMS-aws"][i % 3],
                "lifecycle": i % 4 != 1, "scan_on_push": i % 3 != 2}
        repositories.append(spec)
        creator = client("ecr", "alice" if i % 2 else "bob")
        request = {"repositoryName": name, "imageTagMutability": mutability,
                   "imageScanningConfiguration": {"scanOnPush": spec["scan_on_push"]}}
        if mutability.endswith("_WITH_EXCLUSION"):
            request["imageTagMutabilityExclusionFilters"] = [{"filterType": "WILDCARD", "filter": "latest"},
                                                            {"filterType": "WILDCARD", "filter": "dev-*"}]
        if spec["encryption"] == "KMS-customer":
            request["encryptionConfiguration"] = {"encryptionType": "KMS", "kmsKey": key}
        elif spec["encryption"] == "KMS-aws":
            request["encryptionConfiguration"] = {"encryptionType": "KMS"}
        creator.create_repository(**request)
        if spec["lifecycle"]:
            creator.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=LIFECYCLE)
    print(f"created {len(repositories)} repositories", flush=True)

    pushers = {who: client("ecr", who) for who in ("ci", "alice", "bob")}
    pushes = 0
    for round_number in range(10):
        for spec in repositories:
            who = "ci" if rng.random() < 0.8 else rng.choice(["alice", "bob"])
            tag = f"1.{round_number}.{rng.randrange(100)}" if round_number % 3 else f"dev-{round_number}"
            pushers[who].put_image(repositoryName=spec["name"], imageTag=tag,
                                   imageManifest=manifest(spec["name"], round_number),
                                   imageManifestMediaType="application/vnd.oci.image.manifest.v1+json")
            pushes += 1
        if round_number == 4:
            # The regression an auditor must see: a production repository made mutable and
            # its lifecycle policy removed, by a person, in the middle of the day.
            regressor = client("ecr", "mallory")
            regressor.put_image_tag_mutability(repositoryName=repositories[0]["name"], imageTagMutability="MUTABLE")
            regressor.delete_lifecycle_policy(repositoryName=repositories[0]["name"])
            print(f"regressed {repositories[0]['name']}: tags made MUTABLE, lifecycle policy deleted (by mallory)", flush=True)
    print(f"pushed {pushes} images", flush=True)


ANCHOR_ALIAS = "alias/ecr-audit-demo-evidence"
ANCHOR_BUCKET = "ecr-audit-demo-evidence-heads"


def anchor() -> None:
    """The key and bucket of docs/EVIDENCE.md ("Signed tree heads", "The anchor in S3").
    A key and bucket left by an earlier `scripts/demo --keep` are reused."""
    kms = client("kms")
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    key_id = aliases.get(ANCHOR_ALIAS)
    if key_id is None:
        key_id = kms.create_key(
            Description="ecr-audit demo: evidence tree heads (ECDSA P-256)",
            KeySpec="ECC_NIST_P256",
            KeyUsage="SIGN_VERIFY",
        )["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=ANCHOR_ALIAS, TargetKeyId=key_id)
    arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    s3 = client("s3")
    if ANCHOR_BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=ANCHOR_BUCKET, ObjectLockEnabledForBucket=True)
    print(f"key {arn}, bucket {ANCHOR_BUCKET} (Object Lock)", file=sys.stderr)
    print(f"export ECR_AUDIT_EVIDENCE_KEY={arn}")
    print(f"export ECR_AUDIT_EVIDENCE_BUCKET={ANCHOR_BUCKET}")


def wait_drained(queue_url: str, timeout: float = 300) -> None:
    sqs = client("sqs")
    started = time.monotonic()
    quiet_since = None
    while time.monotonic() - started < timeout:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        waiting = int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
        if waiting == 0:
            # Managed signing and scans complete after a delay and emit more events: wait for
            # the queue to stay empty for a few seconds.
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 3:
                print(f"queue drained after {time.monotonic() - started:.1f}s", flush=True)
                return
        else:
            quiet_since = None
        time.sleep(0.5)
    sys.exit(f"the queue did not drain within {timeout:.0f}s")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "routing":
        routing()
    elif command == "seed":
        seed()
    elif command == "trust":
        trust(sys.argv[2])
    elif command == "late-signature":
        late_signature(sys.argv[2])
    elif command == "forged-signature":
        forged_signature()
    elif command == "anchor":
        anchor()
    elif command == "wait-drained":
        wait_drained(os.environ["ECR_AUDIT_QUEUE_URL"])
    else:
        sys.exit(__doc__)
