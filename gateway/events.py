"""In-process fan-out of committed status changes.

The store returns the `StatusChange`s a batch committed; whoever wrote them
publishes them here, and the parts that report (metrics, SMPP receipts to
ESMEs, webhooks, MQTT) subscribe. Subscribers are plain callables run
synchronously: they must only note the work and wake their own task, never
block or await.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from gateway.store import StatusChange

log = logging.getLogger(__name__)

Subscriber = Callable[[list[StatusChange]], None]


class StatusBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, changes: Iterable[StatusChange]) -> None:
        batch = list(changes)
        if not batch:
            return
        for subscriber in self._subscribers:
            try:
                subscriber(batch)
            except Exception:  # one broken reporter must not stop the others
                log.exception("status subscriber %r failed", subscriber)
