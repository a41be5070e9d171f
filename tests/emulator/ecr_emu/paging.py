"""`maxResults`/`nextToken` paging for the list calls the extension answers.

Tokens are opaque to clients, as in AWS; a token that was not issued here is
rejected with the error the calling service uses for bad input.
"""
from __future__ import annotations

import base64
import json
from typing import Callable, Sequence, TypeVar

from .errors import AwsError

T = TypeVar("T")


def page(
    items: Sequence[T],
    max_results: int | None,
    next_token: str | None,
    default_size: int,
    bad_token: Callable[[str], Exception],
) -> tuple[list[T], str | None]:
    """One page of `items` and the token for the next page (None on the last page)."""
    start = _decode(next_token, bad_token) if next_token else 0
    size = int(max_results) if max_results else default_size
    end = start + size
    token = _encode(end) if end < len(items) else None
    return list(items[start:end]), token


def _encode(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode(token: str, bad_token: Callable[[str], Exception]) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise bad_token("Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid token'")
    if not isinstance(offset, int) or offset < 0:
        raise bad_token("Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid token'")
    return offset


def service_error(code: str) -> Callable[[str], Exception]:
    """An error factory for `page(bad_token=...)`."""

    def make(message: str) -> Exception:
        return AwsError(code, message)

    return make

