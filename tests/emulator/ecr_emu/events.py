"""Puts events on the default event bus the way AWS services do.

The events go through moto's own EventBridge backend (in-process, no HTTP), so
every rule and target that a test or the demo created fires exactly as for a
`PutEvents` call. `install()` corrects what moto's delivery gets wrong:

- the input of a target without a transformer is AWS's envelope (version, id,
  detail-type, source, account, time, region, resources, detail); moto left
  out `account`;
- a rule whose target is an event bus (of this or another account, as a spoke
  account forwards to a central one) delivers the event itself, keeping its
  `id`, `account`, `region`, `time` and `resources`; moto put a new event whose
  account was the receiving bus's;
- an SQS target in another account or region is that queue; moto looked the
  queue name up in the rule's own account and region;
- an SNS topic target publishes the target's input to the topic (its
  subscriptions receive it, as from `Publish`); moto had no SNS targets and
  failed the whole `PutEvents`;
- a pattern can match inside arrays of objects (`detail.resources.type` matches
  an event whose `detail.resources` holds an object with that `type`), as
  EventBridge does; moto's matcher never looked into such arrays.

`/_emulator/config` `emit_events: false` silences `emit` (nothing reaches any
bus) so that tests can change state behind the auditor's back.
"""
from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any

from moto.core.utils import iso_8601_datetime_without_milliseconds, utcfromtimestamp
from moto.events.models import EventPattern, EventsBackend, Rule, events_backends
from moto.events.utils import EventTemplateParser
from moto.sns.models import sns_backends
from moto.sqs.models import sqs_backends
from moto.utilities.arns import parse_arn

from .state import STORE

LOG = logging.getLogger(__name__)
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
    """Delivers one event to the default bus of `account` in `region`; returns its envelope.

    With event emission switched off the envelope is built but goes nowhere.
    """
    now = int(time.time())
    backend = events_backends[account][region]
    entry = {
        "Source": source,
        "DetailType": detail_type,
        "Detail": json.dumps(detail),
        "Resources": list(resources or []),
        "Time": now,
    }
    if STORE.settings.emit_events:
        event_id = backend.put_events([entry])[0]["EventId"]
    else:
        event_id = str(uuid.uuid4())
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
    if STORE.settings.emit_events:
        RECENT.append(envelope)
    return envelope


def _aws_shaped_target_input(input_template, input_paths_map, event):  # type: ignore[no-untyped-def]
    """Without an input transformer a target receives the whole event, `account` included."""
    if input_template or input_paths_map:
        return _MOTO_PARSE(input_template, input_paths_map, event)
    return json.loads(json.dumps({key: event[key] for key in ENVELOPE_FIELDS if key in event}))


_MOTO_PARSE = EventTemplateParser.parse
_MOTO_SEND_TO_TARGETS = Rule.send_to_targets


def _to_bus(arn: Any, event: dict[str, Any]) -> None:
    """Hands the event itself to every rule of the target bus, as EventBridge forwards across accounts.

    Neither the target bus's resource policy nor the rule's RoleArn is checked (moto has no IAM).
    """
    backend: EventsBackend = events_backends[arn.account][arn.region]
    bus = backend.describe_event_bus(arn.resource_id)
    for rule in list(bus.rules.values()):
        rule.send_to_targets(copy.deepcopy(event))


def _to_queue(arn: Any, target: dict[str, Any], event: dict[str, Any], transform: bool) -> None:
    """Sends the target's input to the queue the target ARN names, in whichever account and region."""
    if transform:
        transformer = target.get("InputTransformer", {})
        body: Any = EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=event,
        )
    else:
        body = copy.deepcopy(event)
    if isinstance(body, dict) and "time" in body and not isinstance(body["time"], str):
        body["time"] = iso_8601_datetime_without_milliseconds(utcfromtimestamp(float(body["time"])))
    queue = sqs_backends[arn.account][arn.region]
    group_id = target.get("SqsParameters", {}).get("MessageGroupId")
    if group_id and queue.get_queue_attributes(queue_name=arn.resource_id, attribute_names=["ContentBasedDeduplication"])["ContentBasedDeduplication"] == "false":
        return  # AWS refuses too: a FIFO target needs content-based deduplication
    queue.send_message(queue_name=arn.resource_id, message_body=body if isinstance(body, str) else json.dumps(body), group_id=group_id)


def _target_input(target: dict[str, Any], event: dict[str, Any], transform: bool) -> Any:
    """What a target receives: the transformer's output, or the event itself."""
    if not transform:
        return copy.deepcopy(event)
    transformer = target.get("InputTransformer", {})
    return EventTemplateParser.parse(
        input_template=transformer.get("InputTemplate"),
        input_paths_map=transformer.get("InputPathsMap", {}),
        event=event,
    )


def _to_topic(arn: Any, target: dict[str, Any], event: dict[str, Any], transform: bool) -> None:
    """Publishes the target's input to the topic the target ARN names (the topic policy is not checked)."""
    body = _target_input(target, event, transform)
    topic = sns_backends[arn.account][arn.region].get_topic(target["Arn"])
    topic.publish(message=body if isinstance(body, str) else json.dumps(body))


def _send_to_targets(self: Rule, original_event: dict[str, Any], transform_input: bool = True) -> None:
    """Rule.send_to_targets with AWS's cross-account bus and queue delivery; other targets stay moto's."""
    if not self.event_pattern.matches_event(original_event):
        return
    others = []
    for target in self.targets:
        arn = parse_arn(target["Arn"])
        try:
            if arn.service == "events" and arn.resource_type == "event-bus":
                _to_bus(arn, original_event)
            elif arn.service == "sqs":
                _to_queue(arn, target, original_event, transform_input)
            elif arn.service == "sns":
                _to_topic(arn, target, original_event, transform_input)
            else:
                others.append(target)
        except Exception as problem:  # a missing bus or queue: AWS drops the event, the caller never knows
            LOG.warning("event %s not delivered to %s: %s", original_event.get("id"), target["Arn"], problem)
    if others:
        # moto's loop handles the rest (log groups, archives, API destinations).
        everything, self.targets = self.targets, others
        try:
            _MOTO_SEND_TO_TARGETS(self, original_event, transform_input)
        finally:
            self.targets = everything


def _collect(flat: dict[str, Any], key: str, value: Any) -> None:
    """Adds a leaf value under `key`; several values under one key (from an array of objects) become a list."""
    if key not in flat:
        flat[key] = value
        return
    existing = flat[key] if isinstance(flat[key], list) else [flat[key]]
    flat[key] = existing + (value if isinstance(value, list) else [value])


def _flatten_event(node: Any, prefix: str = "", result: dict[str, Any] | None = None) -> dict[str, Any]:
    """moto's flattening (dotted paths to leaf values), extended into arrays of objects:
    every element's leaves are collected under the array's path, so `resources.type` lists
    the `type` of each element of `resources`."""
    if result is None:
        result = {}
    if not isinstance(node, dict):
        return result
    for name, value in node.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict) and value:
            _flatten_event(value, key, result)
        elif isinstance(value, list) and any(isinstance(element, dict) for element in value):
            for element in value:
                if isinstance(element, dict):
                    for leaf, leaf_value in _flatten_event(element, key, {}).items():
                        _collect(result, leaf, leaf_value)
                else:
                    _collect(result, key, element)
        else:
            _collect(result, key, value)
    return result


def install() -> None:
    EventTemplateParser.parse = staticmethod(_aws_shaped_target_input)  # type: ignore[assignment]
    Rule.send_to_targets = _send_to_targets  # type: ignore[method-assign]
    EventPattern._flatten_dict = staticmethod(_flatten_event)  # type: ignore[method-assign]
