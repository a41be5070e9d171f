"""AWS wildcard filters for repository names and tags.

ECR has two readings of a wildcard filter, and moto follows neither (it uses
regular expressions, prefix matches or substrings):

- anchored (`matches`): `*` stands for any run of characters and the whole
  name must match; a filter without `*` is the exact name. Tag-mutability
  exclusion filters ("enter tag names or use wildcards") and managed-signing
  filters read this way.
- scanning (`scan_filter_matches`): the ECR user guide's "Filters to choose
  which repositories are scanned" says a filter *with* `*` matches as above,
  but a filter *without* one "will match all repository names that contain
  the filter" (its table: `prod` matches `repo-prod-repo`; `*prod` does not
  match `prod-repo`).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable

Filter = dict[str, str]


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def matches(pattern: str, name: str) -> bool:
    """True when `name` matches the anchored wildcard `pattern`."""
    return _compile(pattern).fullmatch(name) is not None


def scan_filter_matches(pattern: str, name: str) -> bool:
    """True when a registry scanning filter selects the repository `name`."""
    if "*" not in pattern:
        return pattern in name
    return matches(pattern, name)


def any_filter_matches(
    filters: list[Filter], name: str, match: Callable[[str, str], bool] = matches
) -> Filter | None:
    """The first filter (a `{"filter": ...}` dict) that matches `name`, if any."""
    return next((f for f in filters if match(f["filter"], name)), None)
