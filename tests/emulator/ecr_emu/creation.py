"""Repositories that ECR creates by itself, with the repository creation template that applies.

A pull through the cache and a replication create the repository they need.
The user guide ("Templates to control repositories created during a pull
through cache, create on push, or replication action") applies the template
whose `prefix` is the repository's namespace (`prod` applies to `prod/…`; the
longest prefix wins; `ROOT` applies to every repository) and whose
`appliedFor` names the action: its tag mutability and exclusion filters,
encryption, tags, lifecycle policy and repository policy become the new
repository's. Without a matching template the repository gets the defaults.
"""
from __future__ import annotations

from typing import Any

from moto.ecr.models import ECRBackend, Repository

from .state import STORE


def template_for(backend: ECRBackend, name: str, applied_for: str) -> dict[str, Any] | None:
    templates = STORE.registry(backend.account_id, backend.region_name).creation_templates.values()
    candidates = [t for t in templates if applied_for in (t.get("appliedFor") or [])]

    def namespace_length(template: dict[str, Any]) -> int:
        prefix = str(template["prefix"])
        if prefix == "ROOT":
            return 0
        return len(prefix) if name.startswith(prefix.rstrip("/") + "/") else -1

    ranked = sorted(((namespace_length(t), t) for t in candidates), key=lambda pair: pair[0], reverse=True)
    return next((template for length, template in ranked if length >= 0), None)


def create_repository(backend: ECRBackend, name: str, applied_for: str) -> Repository:
    """Creates `name` in `backend` as ECR would for `applied_for` (PULL_THROUGH_CACHE or REPLICATION)."""
    template = template_for(backend, name, applied_for) or {}
    repo = backend.create_repository(
        name,
        None,
        dict(template.get("encryptionConfiguration") or {}),
        None,
        template.get("imageTagMutability", "MUTABLE"),
        list(template.get("resourceTags") or []),
        template.get("imageTagMutabilityExclusionFilters") or None,
    )
    if template.get("lifecyclePolicy"):
        repo.lifecycle_policy = template["lifecyclePolicy"]
    if template.get("repositoryPolicy"):
        repo.policy = template["repositoryPolicy"]
    return repo
