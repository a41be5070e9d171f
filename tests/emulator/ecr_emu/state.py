"""Everything the extension remembers, in one place, so one call can reset it.

moto keeps its own per-account, per-region backends; this module keeps what
moto has no notion of (signing configurations and statuses, scan records,
configured scan outcomes, the run-time knobs) and the one lock that makes the
background signing and scanning timers safe against concurrent requests.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

class FairLock:
    """A re-entrant lock that serves waiting threads in arrival order.

    threading.RLock lets a thread that releases and at once re-acquires win over
    threads already waiting; under a burst of calls from one client (a sweep of
    hundreds of repositories) another client's calls could wait for seconds. Here
    each waiter takes a ticket and the lock goes to the oldest ticket.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._next_ticket = 0
        self._serving = 0

    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._condition:
            if self._owner == me:
                self._depth += 1
                return True
            ticket = self._next_ticket
            self._next_ticket += 1
            self._condition.wait_for(lambda: self._owner is None and self._serving == ticket)
            self._serving += 1
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._condition:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock not held by this thread")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._condition.notify_all()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_: Any) -> None:
        self.release()


#: Serialises every request to the services this extension touches (ECR,
#: Signer, Inspector2, EventBridge) with the timers that complete signing and
#: scans, first come first served. SQS is left out on purpose: its long polls
#: would block everybody.
LOCK = FairLock()

DEFAULT_REGION = "us-east-1"


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


@dataclass
class Settings:
    """Knobs that change how fast asynchronous work completes, and whether AWS's events are put at all."""

    signing_delay: float = field(
        default_factory=lambda: _env_seconds("ECR_EMU_SIGNING_DELAY_SECONDS", 2.0)
    )
    scan_delay: float = field(
        default_factory=lambda: _env_seconds("ECR_EMU_SCAN_DELAY_SECONDS", 2.0)
    )
    #: False makes every change silent (no ECR, Inspector or CloudTrail event), as if
    #: AWS lost the events or nobody listened: the drift a reconcile must find.
    emit_events: bool = True
    #: True makes PutImage refuse a manifest whose config or layers were not uploaded, as AWS does;
    #: off by default because most tests push manifests that name made-up blobs.
    require_layers: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "signing_delay_seconds": self.signing_delay,
            "scan_delay_seconds": self.scan_delay,
            "emit_events": self.emit_events,
            "require_layers": self.require_layers,
        }

    def update(self, body: dict[str, Any]) -> None:
        """Applies a validated partial update; raises ValueError before changing anything."""
        for flag in ("emit_events", "require_layers"):
            if flag in body and not isinstance(body[flag], bool):
                raise ValueError(f"'{flag}' must be true or false")
        delays = {key: float(body[key]) for key in ("signing_delay_seconds", "scan_delay_seconds") if key in body}
        self.signing_delay = delays.get("signing_delay_seconds", self.signing_delay)
        self.scan_delay = delays.get("scan_delay_seconds", self.scan_delay)
        self.emit_events = body.get("emit_events", self.emit_events)
        self.require_layers = body.get("require_layers", self.require_layers)


@dataclass
class SigningRecord:
    """The outcome of one signing rule for one image digest."""

    profile_arn: str
    status: str = "IN_PROGRESS"
    failure_code: str | None = None
    failure_reason: str | None = None

    def to_api(self) -> dict[str, str]:
        out = {"signingProfileArn": self.profile_arn, "status": self.status}
        if self.failure_code:
            out["failureCode"] = self.failure_code
            out["failureReason"] = self.failure_reason or ""
        return out


@dataclass
class ScanRecord:
    """One scan of one image digest, basic (ECR) or enhanced (Inspector)."""

    repository: str
    digest: str
    enhanced: bool
    frequency: str
    started_at: datetime
    status: str = "IN_PROGRESS"
    description: str = "The scan is in progress."
    severity_counts: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    completed_at: datetime | None = None


@dataclass
class RegistryState:
    """What one account's registry in one region holds beyond moto's backend.

    Pull-through cache rules are keyed by `ecrRepositoryPrefix`, repository
    creation templates by `prefix`; both hold the API's member names.
    """

    signing_configuration: dict[str, Any] | None = None
    signing: dict[tuple[str, str], list[SigningRecord]] = field(default_factory=dict)
    scans: dict[tuple[str, str], ScanRecord] = field(default_factory=dict)
    manual_scan_days: dict[tuple[str, str], str] = field(default_factory=dict)
    pull_through_cache_rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    creation_templates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def forget_image(self, repository: str, digest: str) -> None:
        key = (repository, digest)
        self.signing.pop(key, None)
        self.scans.pop(key, None)
        self.manual_scan_days.pop(key, None)


class Store:
    """The extension's whole state; `reset()` returns it to a fresh start."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.registries: dict[tuple[str, str], RegistryState] = {}
        self.scan_outcomes: list[dict[str, Any]] = []
        self.identity: dict[str, str] | None = None
        self.generation = 0
        self._reset_hooks: list[Callable[[], None]] = []

    def registry(self, account: str, region: str) -> RegistryState:
        return self.registries.setdefault((account, region), RegistryState())

    def on_reset(self, hook: Callable[[], None]) -> None:
        self._reset_hooks.append(hook)

    def reset(self) -> None:
        with LOCK:
            self.generation += 1
            self.settings = Settings()
            self.registries.clear()
            self.scan_outcomes.clear()
            self.identity = None
            for hook in self._reset_hooks:
                hook()


STORE = Store()


def schedule(delay: float, action: Callable[[], None]) -> None:
    """Runs `action` under the lock after `delay` seconds, unless a reset came first.

    A delay of zero (or less) runs the action at once, inside the request that
    started it, so tests that set the delay to 0 see the final state with no race.
    """
    if delay <= 0:
        with LOCK:
            action()
        return
    generation = STORE.generation

    def fire() -> None:
        with LOCK:
            if STORE.generation == generation:
                action()

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()
