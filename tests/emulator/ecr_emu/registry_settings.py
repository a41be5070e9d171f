"""Pull-through cache rules and repository creation templates, which moto lacks.

Both are registry settings an auditor reads (a pull-through cache creates
repositories on first pull, with the settings of the repository creation
template whose prefix covers them; without one, with ECR's defaults). The
emulator stores and serves them with the shapes and errors of the API
reference; their state-changing calls get CloudTrail events like every other
ECR write (the middleware records them). Nothing is ever pulled: there is no
registry HTTP API, so no upstream is contacted and no repository is created
through a rule.
"""
from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import Any

from moto.core.responses import ActionResult
from moto.ecr.responses import ECRResponse

from . import paging
from .errors import AwsError
from .state import STORE, RegistryState

#: ecrRepositoryPrefix and prefix (API reference); ROOT is the template for every repository.
PREFIX = re.compile(r"^([a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*/?|ROOT)$")
APPLIED_FOR = {"REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH"}
MUTABILITY = {"MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"}
#: Upstream registries and the URL each implies, for rules created without `upstreamRegistry`.
UPSTREAMS = {
    "public.ecr.aws": "ecr-public",
    "registry.k8s.io": "k8s",
    "quay.io": "quay",
    "registry-1.docker.io": "docker-hub",
    "ghcr.io": "github-container-registry",
    "registry.gitlab.com": "gitlab-container-registry",
    "cgr.dev": "chainguard",
}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _invalid(member: str, message: str) -> AwsError:
    return AwsError("InvalidParameterException", f"Invalid parameter at '{member}' failed to satisfy constraint: '{message}'")


def _registry(response: ECRResponse) -> RegistryState:
    return STORE.registry(response.current_account, response.region)


def _check_prefix(member: str, prefix: Any, minimum: int, maximum: int) -> str:
    if not isinstance(prefix, str) or not PREFIX.match(prefix) or not minimum <= len(prefix) <= maximum:
        raise _invalid(member, f"'{prefix}' is not a valid repository prefix")
    return prefix


def _upstream(url: str, named: str | None) -> str:
    if named:
        return named
    host = url.split("://", 1)[-1].split("/", 1)[0]
    if re.fullmatch(r"[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com", host):
        return "ecr"
    if host.endswith(".azurecr.io"):
        return "azure-container-registry"
    if host not in UPSTREAMS:
        raise AwsError("UnsupportedUpstreamRegistryException", f"The upstream registry '{url}' is not supported.")
    return UPSTREAMS[host]


# ---------------------------------------------------------------- pull-through cache rules
RULE_RESPONSE_KEYS = ("ecrRepositoryPrefix", "upstreamRegistryUrl", "createdAt", "registryId", "upstreamRegistry",
                      "credentialArn", "customRoleArn", "upstreamRepositoryPrefix", "updatedAt")


def _rule_view(rule: dict[str, Any], keys: tuple[str, ...] = RULE_RESPONSE_KEYS) -> dict[str, Any]:
    return {key: rule[key] for key in keys if rule.get(key) is not None}


def _rule(response: ECRResponse, prefix: str) -> dict[str, Any]:
    rule = _registry(response).pull_through_cache_rules.get(prefix)
    if rule is None:
        raise AwsError(
            "PullThroughCacheRuleNotFoundException",
            f"The pull through cache rule with prefix '{prefix}' does not exist in the registry with id '{response.current_account}'",
        )
    return rule


def create_pull_through_cache_rule(self: ECRResponse) -> ActionResult:
    registry = _registry(self)
    prefix = _check_prefix("ecrRepositoryPrefix", self._get_param("ecrRepositoryPrefix"), 2, 30)
    url = str(self._get_param("upstreamRegistryUrl") or "")
    upstream = _upstream(url, self._get_param("upstreamRegistry"))
    if prefix in registry.pull_through_cache_rules:
        raise AwsError(
            "PullThroughCacheRuleAlreadyExistsException",
            f"A pull through cache rule with the prefix '{prefix}' already exists in the registry with id '{self.current_account}'",
        )
    upstream_prefix = self._get_param("upstreamRepositoryPrefix")
    if upstream_prefix is not None:
        _check_prefix("upstreamRepositoryPrefix", upstream_prefix, 2, 30)
    rule = {
        "ecrRepositoryPrefix": prefix,
        "upstreamRegistryUrl": url,
        "createdAt": _now(),
        "registryId": self.current_account,
        "upstreamRegistry": upstream,
        "credentialArn": self._get_param("credentialArn"),
        "customRoleArn": self._get_param("customRoleArn"),
        "upstreamRepositoryPrefix": upstream_prefix,
    }
    registry.pull_through_cache_rules[prefix] = rule
    return ActionResult(_rule_view(rule, RULE_RESPONSE_KEYS[:-1]))


def describe_pull_through_cache_rules(self: ECRResponse) -> ActionResult:
    registry = _registry(self)
    wanted = self._get_param("ecrRepositoryPrefixes")
    if wanted:
        rules = [_rule(self, prefix) for prefix in wanted]
    else:
        rules = [registry.pull_through_cache_rules[p] for p in sorted(registry.pull_through_cache_rules)]
    found, token = paging.page(rules, self._get_param("maxResults"), self._get_param("nextToken"), 100,
                               paging.service_error("InvalidParameterException"))
    return ActionResult({"pullThroughCacheRules": [_rule_view(r) for r in found], "nextToken": token})


def delete_pull_through_cache_rule(self: ECRResponse) -> ActionResult:
    prefix = self._get_param("ecrRepositoryPrefix")
    rule = _rule(self, prefix)
    del _registry(self).pull_through_cache_rules[prefix]
    return ActionResult(_rule_view(rule, ("ecrRepositoryPrefix", "upstreamRegistryUrl", "createdAt", "registryId",
                                          "credentialArn", "customRoleArn", "upstreamRepositoryPrefix")))


def update_pull_through_cache_rule(self: ECRResponse) -> ActionResult:
    rule = _rule(self, self._get_param("ecrRepositoryPrefix"))
    for member in ("credentialArn", "customRoleArn"):
        if self._get_param(member) is not None:
            rule[member] = self._get_param(member)
    rule["updatedAt"] = _now()
    return ActionResult(_rule_view(rule, ("ecrRepositoryPrefix", "registryId", "updatedAt", "credentialArn",
                                          "customRoleArn", "upstreamRepositoryPrefix")))


def validate_pull_through_cache_rule(self: ECRResponse) -> ActionResult:
    """Always valid: the emulator reaches no upstream and checks no credential (*assumed*)."""
    rule = _rule(self, self._get_param("ecrRepositoryPrefix"))
    view = _rule_view(rule, ("ecrRepositoryPrefix", "registryId", "upstreamRegistryUrl", "credentialArn",
                             "customRoleArn", "upstreamRepositoryPrefix"))
    return ActionResult({**view, "isValid": True})


# ---------------------------------------------------------------- repository creation templates
def _template(response: ECRResponse, prefix: str) -> dict[str, Any]:
    template = _registry(response).creation_templates.get(prefix)
    if template is None:
        raise AwsError("TemplateNotFoundException", f"The specified repository creation template with prefix '{prefix}' does not exist.")
    return template


def _template_settings(response: ECRResponse, template: dict[str, Any]) -> None:
    """Copies the optional members of a Create/Update request into `template`, validated."""
    for member in ("description", "encryptionConfiguration", "resourceTags", "imageTagMutability",
                   "imageTagMutabilityExclusionFilters", "repositoryPolicy", "lifecyclePolicy", "appliedFor", "customRoleArn"):
        value = response._get_param(member)
        if value is not None:
            template[member] = copy.deepcopy(value)
    if not set(template.get("appliedFor") or []) <= APPLIED_FOR or not template.get("appliedFor"):
        raise _invalid("appliedFor", f"Member must satisfy enum value set: {sorted(APPLIED_FOR)}")
    mutability = template.get("imageTagMutability", "MUTABLE")
    if mutability not in MUTABILITY:
        raise _invalid("imageTagMutability", f"Member must satisfy enum value set: {sorted(MUTABILITY)}")
    if mutability.endswith("_WITH_EXCLUSION") != bool(template.get("imageTagMutabilityExclusionFilters")):
        raise _invalid("imageTagMutabilityExclusionFilters",
                       f"ImageTagMutabilityExclusionFilters must be given exactly when imageTagMutability is *_WITH_EXCLUSION, not {mutability}")
    encryption = template.get("encryptionConfiguration") or {}
    if encryption and encryption.get("encryptionType") not in ("AES256", "KMS", "KMS_DSSE"):
        raise _invalid("encryptionConfiguration.encryptionType", "Member must satisfy enum value set: [AES256, KMS, KMS_DSSE]")


def _template_view(template: dict[str, Any]) -> dict[str, Any]:
    return {key: copy.deepcopy(value) for key, value in template.items() if value is not None}


def create_repository_creation_template(self: ECRResponse) -> ActionResult:
    registry = _registry(self)
    prefix = self._get_param("prefix")
    _check_prefix("prefix", prefix, 1, 256)
    if prefix in registry.creation_templates:
        raise AwsError("TemplateAlreadyExistsException", f"The repository creation template with prefix '{prefix}' already exists.")
    now = _now()
    template: dict[str, Any] = {"prefix": prefix, "createdAt": now, "updatedAt": now}
    _template_settings(self, template)
    registry.creation_templates[prefix] = template
    return ActionResult({"registryId": self.current_account, "repositoryCreationTemplate": _template_view(template)})


def describe_repository_creation_templates(self: ECRResponse) -> ActionResult:
    registry = _registry(self)
    wanted = self._get_param("prefixes")
    templates = [registry.creation_templates[p] for p in sorted(registry.creation_templates) if not wanted or p in wanted]
    found, token = paging.page(templates, self._get_param("maxResults"), self._get_param("nextToken"), 100,
                               paging.service_error("InvalidParameterException"))
    return ActionResult({"registryId": self.current_account, "repositoryCreationTemplates": [_template_view(t) for t in found],
                         "nextToken": token})


def update_repository_creation_template(self: ECRResponse) -> ActionResult:
    template = _template(self, self._get_param("prefix"))
    updated = copy.deepcopy(template)
    _template_settings(self, updated)
    updated["updatedAt"] = _now()
    template.clear()
    template.update(updated)
    return ActionResult({"registryId": self.current_account, "repositoryCreationTemplate": _template_view(template)})


def delete_repository_creation_template(self: ECRResponse) -> ActionResult:
    prefix = self._get_param("prefix")
    template = _template(self, prefix)
    del _registry(self).creation_templates[prefix]
    return ActionResult({"registryId": self.current_account, "repositoryCreationTemplate": _template_view(template)})


RESPONSE_METHODS = {
    "create_pull_through_cache_rule": create_pull_through_cache_rule,
    "describe_pull_through_cache_rules": describe_pull_through_cache_rules,
    "delete_pull_through_cache_rule": delete_pull_through_cache_rule,
    "update_pull_through_cache_rule": update_pull_through_cache_rule,
    "validate_pull_through_cache_rule": validate_pull_through_cache_rule,
    "create_repository_creation_template": create_repository_creation_template,
    "describe_repository_creation_templates": describe_repository_creation_templates,
    "update_repository_creation_template": update_repository_creation_template,
    "delete_repository_creation_template": delete_repository_creation_template,
}
