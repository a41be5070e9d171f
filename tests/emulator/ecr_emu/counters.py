"""How many calls of each operation the server received, for tests and benchmarks.

Keys are `service.Operation` (service as in the SigV4 scope: `ecr`, `sqs`,
`events`, `inspector2`, `signer`, ...). Every signed AWS call counts, including
calls answered with an injected fault; control and moto-api requests do not.
Each call is also filed under its account and region, so a test working in an
account of its own counts only its own calls on a shared emulator.
"""
from __future__ import annotations

import threading
from collections import Counter


class RequestCounter:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def record(self, key: str, account: str = "", region: str = "") -> None:
        with self._lock:
            self._counts[(account, region, key)] += 1

    def snapshot(self, account: str | None = None, region: str | None = None) -> dict[str, int]:
        """Calls per operation, of one account and/or region when given."""
        totals: Counter[str] = Counter()
        with self._lock:
            for (call_account, call_region, key), count in self._counts.items():
                if account in (None, call_account) and region in (None, call_region):
                    totals[key] += count
        return dict(sorted(totals.items()))

    def by_account(self) -> dict[str, dict[str, int]]:
        """Calls per operation for each account."""
        with self._lock:
            accounts = sorted({account for account, _, _ in self._counts})
        return {account: self.snapshot(account=account) for account in accounts}

    def clear(self, account: str | None = None, region: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._counts if account in (None, k[0]) and region in (None, k[1])]:
                del self._counts[key]


COUNTER = RequestCounter()
