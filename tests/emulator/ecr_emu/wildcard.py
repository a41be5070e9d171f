"""AWS wildcard filters for repository names and tags.

ECR's repository filters (scanning rules, signing rules) and tag-mutability
exclusion filters use one syntax: `*` stands for any run of characters, and the
whole name must match. moto instead treats these filters as regular
expressions or substrings, so the extension matches them itself.
"""
from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def matches(pattern: str, name: str) -> bool:
    """True when `name` matches the anchored wildcard `pattern`."""
    return _compile(pattern).fullmatch(name) is not None


def any_filter_matches(filters: list[dict[str, str]], name: str) -> dict[str, str] | None:
    """The first filter (a `{"filter": ...}` dict) that matches `name`, if any."""
    return next((f for f in filters if matches(f["filter"], name)), None)
