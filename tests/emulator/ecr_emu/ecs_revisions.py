"""ECS `DescribeServiceRevisions`, which moto lacks, derived from moto's own services.

AWS records a service revision at each deployment: the task definition, and each container's
image with the digest ECS resolved it to when the deployment started ("Container image
resolution" in the ECS developer guide), so every task of the revision runs the same bytes even
if a tag moves. Here a revision ARN
`arn:aws:ecs:REGION:ACCOUNT:service-revision/CLUSTER/SERVICE/ID` names a moto service; the answer
is that service's current task definition, each image reference resolved against the emulator's
ECR at the time of the call (a reference by digest is kept; a tag is looked up in the named
repository; anything not in this account's ECR gets no digest). Assumption: the revision id is
not checked, since moto keeps no revision history, so an earlier revision of a service reads as its
latest. A service that does not exist is a `MISSING` failure, as AWS reports unknown ARNs.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from moto.core.responses import ActionResult
from moto.ecr.models import ecr_backends
from moto.ecs.models import ecs_backends
from moto.ecs.responses import EC2ContainerServiceResponse

REVISION_ARN = re.compile(
    r"^arn:aws[a-z-]*:ecs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):service-revision/"
    r"(?P<cluster>[^/]+)/(?P<service>[^/]+)/(?P<id>[^/]+)$"
)
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/"
    r"(?P<repository>[a-z0-9._/-]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def resolve(reference: str) -> str | None:
    """The digest an ECR image reference names now, or None outside the emulator's ECR."""
    match = ECR_IMAGE.match(reference)
    if not match:
        return None
    if match["digest"]:
        return match["digest"]
    repository = ecr_backends[match["account"]][match["region"]].repositories.get(match["repository"])
    tag = match["tag"] or "latest"
    for image in repository.images if repository else []:
        if tag in (image.image_tags or []):
            return image.image_digest
    return None


def revision(arn: str) -> dict[str, Any] | None:
    match = REVISION_ARN.match(arn)
    if not match:
        return None
    backend = ecs_backends[match["account"]][match["region"]]
    try:
        services, _ = backend.describe_services(match["cluster"], [match["service"]])
    except Exception:  # an unknown cluster: moto raises, AWS reports the ARN missing
        return None
    if not services or not services[0].task_definition:
        return None
    service = services[0]
    definition = backend.describe_task_definition(service.task_definition)
    images = []
    for container in definition.container_definitions:
        entry = {"containerName": container["name"], "image": container["image"]}
        digest = resolve(container["image"])
        if digest:
            entry["imageDigest"] = digest
        images.append(entry)
    return {
        "serviceRevisionArn": arn,
        "serviceArn": service.arn,
        "clusterArn": service.cluster_arn,
        "taskDefinition": definition.arn,
        "containerImages": images,
        "createdAt": datetime.now(timezone.utc),
    }


def describe_service_revisions(self: EC2ContainerServiceResponse) -> ActionResult:
    found, failures = [], []
    for arn in self._get_param("serviceRevisionArns", []):
        answer = revision(arn)
        if answer is None:
            failures.append({"arn": arn, "reason": "MISSING"})
        else:
            found.append(answer)
    return ActionResult({"serviceRevisions": found, "failures": failures})


def install() -> None:
    EC2ContainerServiceResponse.describe_service_revisions = describe_service_revisions  # type: ignore[attr-defined]
