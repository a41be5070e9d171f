"""Small helpers shared by the emulator tests."""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def oci_manifest(seed: str, **extra: Any) -> str:
    """A small OCI image manifest whose bytes differ per `seed`."""
    body = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + seed.encode().hex().ljust(64, "0")[:64],
            "size": 7,
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "ab" * 32, "size": 100}],
        **extra,
    }
    return json.dumps(body)


def digest_of(manifest: str) -> str:
    return "sha256:" + hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0) -> T:
    """Calls `probe` until `done(result)` or the timeout; returns the last result."""
    deadline = time.monotonic() + timeout
    result = probe()
    while not done(result) and time.monotonic() < deadline:
        time.sleep(0.05)
        result = probe()
    return result
