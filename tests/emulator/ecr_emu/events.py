"""Puts events on the default event bus the way AWS services do.

The events go through moto's own EventBridge backend (in-process, no HTTP), so
every rule and target that a test or the demo created fires exactly as for a
`PutEvents` call. moto's default target input leaves out `account` and adds
nothing in AWS's field order; `install()` replaces that one step so an SQS
target receives the envelope AWS would write: version, id, detail-type,
source, account, time, region, resources, detail.
"""
from __future__ import annotations

import json
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

from moto.events.models import events_backends
from moto.events.utils import EventTemplateParser

ENVELOPE_FIELDS = (
    "version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail",
)

#: The most recent envelopes, newest last, for `GET /_emulator/events`.
RECENT: deque[dict[str, Any]] = deque(maxlen=1000)


def iso_seconds(moment: datetime | float) -> str:
    """ISO-8601 in UTC with whole seconds and a `Z`, as EventBridge writes `time`."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, tz=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def emit(
    account: str,
    region: str,
    source: str,
    detail_type: str,
    detail: dict[str, Any],
    resources: list[str] | None = None,
) -> dict[str, Any]:
    """Delivers one event to the default bus of `account` in `region`; returns its envelope."""
    now = int(time.time())
    backend = events_backends[account][region]
    entry = {
        "Source": source,
        "DetailType": detail_type,
        "Detail": json.dumps(detail),
        "Resources": list(resources or []),
        "Time": now,
    }
    event_id = backend.put_events([entry])[0]["EventId"]
    envelope = {
        "version": "0",
        "id": event_id,
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": iso_seconds(now),
        "region": region,
        "resources": entry["Resources"],
        "detail": detail,
    }
    RECENT.append(envelope)
    return envelope


def _aws_shaped_target_input(input_template, input_paths_map, event):  # type: ignore[no-untyped-def]
    """Without an input transformer a target receives the whole event, `account` included."""
    if input_template or input_paths_map:
        return _MOTO_PARSE(input_template, input_paths_map, event)
    return json.loads(json.dumps({key: event[key] for key in ENVELOPE_FIELDS if key in event}))


_MOTO_PARSE = EventTemplateParser.parse


def install() -> None:
    EventTemplateParser.parse = staticmethod(_aws_shaped_target_input)  # type: ignore[assignment]
