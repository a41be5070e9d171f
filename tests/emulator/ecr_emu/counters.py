"""How many calls of each operation the server received, for tests and benchmarks.

Keys are `service.Operation` (service as in the SigV4 scope: `ecr`, `sqs`,
`events`, `inspector2`, `signer`, ...). Every signed AWS call counts, including
calls answered with an injected fault; control and moto-api requests do not.
"""
from __future__ import annotations

import threading
from collections import Counter


class RequestCounter:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


COUNTER = RequestCounter()
