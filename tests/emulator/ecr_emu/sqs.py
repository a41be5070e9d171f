"""Cheaper queue bookkeeping in moto's SQS, so that event delivery stays fast as queues fill.

moto asks each message whether it is visible or delayed through properties that read the
clock (a datetime computation) per message, and `SendMessage` computes every queue
attribute, three full scans of the queue, just to read `ContentBasedDeduplication`. With
a few hundred messages waiting (the demo pushes 200 images, each emitting several events
into one queue) every delivery cost tens of milliseconds. Here the same counts and the same
visible-message list come from one clock reading per call; what they return is unchanged.
"""
from __future__ import annotations

from moto.core.utils import unix_time_millis
from moto.sqs.models import Message, Queue


def _ready(message: Message, now: float) -> bool:
    # Message.visible: now > visible_at; Message.delayed: now < delayed_until.
    return now > message.visible_at and not now < message.delayed_until


def _messages(self: Queue) -> list[Message]:
    now = unix_time_millis()
    return [message for message in self._messages if _ready(message, now)]


def _approximate_number_of_messages(self: Queue) -> int:
    now = unix_time_millis()
    return sum(1 for message in self._messages if _ready(message, now))


def _approximate_number_of_messages_not_visible(self: Queue) -> int:
    now = unix_time_millis()
    return sum(1 for message in self._messages if not now > message.visible_at)


def _approximate_number_of_messages_delayed(self: Queue) -> int:
    now = unix_time_millis()
    return sum(1 for message in self._messages if now < message.delayed_until)


def install() -> None:
    Queue.messages = property(_messages)  # type: ignore[method-assign,assignment]
    Queue.approximate_number_of_messages = property(_approximate_number_of_messages)  # type: ignore[method-assign,assignment]
    Queue.approximate_number_of_messages_not_visible = property(_approximate_number_of_messages_not_visible)  # type: ignore[method-assign,assignment]
    Queue.approximate_number_of_messages_delayed = property(_approximate_number_of_messages_delayed)  # type: ignore[method-assign,assignment]
