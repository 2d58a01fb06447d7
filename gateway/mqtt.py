"""MQTT publisher: drains the store's mqtt_outbox to the broker, and sends MO messages.

Topics (../shared/interface.md, "MQTT"):
- ``<prefix>/events/<system_id>/<message_id>``, QoS 1, on every status transition
  (the first event, accepted or scheduled, included): ``{"id", "status", "at",
  "route", "error"}``, exactly the bytes stored in the outbox.
- ``<prefix>/mo/<system_id>``, QoS 1: inbound (MO) messages, best effort.

publisher = MqttPublisher(store, settings.mqtt, metrics)
await publisher.start()              # before the fronts accept: enables the outbox
bus.subscribe(publisher.wake)        # publish at once instead of at the next poll
...
await publisher.close()              # after the fronts and upstreams, before store.close()

Events are not lost while the broker is away: the store writes an outbox row in the
same transaction as each status change (``ops.EnableMqttOutbox``, which ``start()``
submits), whether or not the broker is reachable, so nothing on the SMS path waits for
MQTT. One task connects, reads unpublished rows in id order (the commit order: the
group committer is the only writer), publishes a batch of them at once (paho keeps
the order on the wire, and a broker keeps the order of one client's messages on a
topic), and stamps the acknowledged prefix of the batch with one ``MarkMqttPublished``
write. When the broker goes away it reconnects with exponential backoff, and the rows
produced meanwhile go out in order once it is back.

Delivery of events is at least once: a PUBACK lost with the connection, or a crash
between the PUBACKs and their commit, publishes those events again; the repeats come
in order after the first copies (per message, the first copy of each event still
arrives in transition order). MO messages are at most once: published only while
connected, dropped (and counted) otherwise, since the upstream has already been
answered and there is no MO outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from gateway.config import MqttSettings
from gateway.metrics import Metrics
from gateway.store import Store, log_failure, utcnow
from gateway.store.ops import EnableMqttOutbox, MarkMqttPublished
from gateway.store.records import MqttEvent

__all__ = ["MqttPublisher", "broker_options"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    hostname: str
    port: int
    username: str | None
    password: str | None
    tls: bool


def broker_options(url: str) -> BrokerOptions:
    """``mqtt://[user[:password]@]host[:port]`` (1883) or ``mqtts://...`` (TLS, 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"expected mqtt:// or mqtts://, got {parts.scheme!r}")
    tls = parts.scheme == "mqtts"
    return BrokerOptions(
        hostname=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


class MqttPublisher:
    def __init__(
        self,
        store: Store,
        settings: MqttSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = utcnow,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        reconnect_initial_s: float = 0.1,
        reconnect_max_s: float = 10.0,
        publish_timeout_s: float = 10.0,
        identifier: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._broker = broker_options(settings.url)
        self._prefix = settings.topic_prefix.rstrip("/")
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._reconnect_initial = reconnect_initial_s
        self._reconnect_max = reconnect_max_s
        self._publish_timeout = publish_timeout_s
        self._identifier = identifier or f"smsgw-{uuid.uuid4().hex[:12]}"
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._ssl: ssl.SSLContext | None = None
        # Set while connected; tests and /readyz-like checks may wait on it.
        self.connected = asyncio.Event()
        self.connects = 0  # successful connections so far
        self.published = 0  # events acknowledged by the broker (PUBACK) and stamped
        # Unpublished outbox rows: counted at each (re)connection attempt, then
        # lowered as pages are published; 0 once the outbox is drained.
        self.pending = 0
        self.mo_published = 0
        self.mo_dropped = 0  # MO messages not published (broker away or no PUBACK)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Enable the outbox (committed when this returns), then connect in the
        background: the broker need not be up."""
        if self._task is not None:
            raise RuntimeError("MqttPublisher started twice")
        await self._store.write(EnableMqttOutbox())
        if self._broker.tls:
            # Loading the CA bundle blocks; do it once, off the loop.
            self._ssl = await asyncio.to_thread(ssl.create_default_context)
        self._task = asyncio.create_task(self._run(), name="smsgw-mqtt")

    async def close(self) -> None:
        """Stop publishing; rows left unpublished wait in the outbox for the next start."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def wake(self, changes: Sequence[object] = ()) -> None:
        """New outbox rows were committed (a StatusBus subscriber: only sets a flag)."""
        self._wakeup.set()

    # ---------------------------------------------------------------------- MO

    async def publish_mo(self, system_id: str, payload: dict[str, Any]) -> bool:
        """Publish an inbound message to ``<prefix>/mo/<system_id>`` (QoS 1). True once
        the broker acknowledged it; False (and counted in ``mo_dropped``) when not
        connected or not acknowledged within the publish timeout. Never raises for
        broker trouble: the caller has answered its upstream already."""
        client = self._client
        if client is None:
            self.mo_dropped += 1
            return False
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        try:
            await client.publish(
                f"{self._prefix}/mo/{system_id}", body, qos=1, timeout=self._publish_timeout
            )
        except aiomqtt.MqttError as exc:
            self.mo_dropped += 1
            log.warning("mqtt MO for account %s not published: %s", system_id, exc)
            return False
        self.mo_published += 1
        return True

    # ------------------------------------------------------------------ the loop

    def _new_client(self) -> aiomqtt.Client:
        b = self._broker
        client = aiomqtt.Client(
            b.hostname,
            b.port,
            username=b.username,
            password=b.password,
            identifier=self._identifier,
            clean_session=True,  # the outbox, not the session, keeps what is owed
            tls_context=self._ssl,
            timeout=self._publish_timeout,
            keepalive=30,
            max_inflight_messages=100,
        )
        # aiomqtt warns past this many outstanding calls; a batch is that many by design.
        client.pending_calls_threshold = self._batch_size + 10
        return client

    async def _run(self) -> None:
        delay = self._reconnect_initial
        while True:
            try:
                async with self._new_client() as client:
                    self._client = client
                    self.connects += 1
                    self.connected.set()
                    delay = self._reconnect_initial
                    log.info("mqtt connected to %s:%d", self._broker.hostname, self._broker.port)
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                log.warning("mqtt broker unavailable (%s); retrying in %.1fs", exc, delay)
            except Exception as exc:  # the store, say: keep going, the outbox keeps the events
                log_failure(log, exc, "mqtt publisher failed; retrying in %.1fs", delay)
            finally:
                self._client = None
                self.connected.clear()
            with contextlib.suppress(Exception):
                self.pending = await self._store.count_unpublished_mqtt_events()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Publish until the connection breaks (raises MqttError)."""
        # aiomqtt reports a lost connection to whoever iterates the messages.
        watcher = asyncio.create_task(self._watch(client), name="smsgw-mqtt-watch")
        try:
            after_id = 0
            self.pending = await self._until(self._store.count_unpublished_mqtt_events(), watcher)
            while True:
                self._wakeup.clear()
                events = await self._until(
                    self._store.unpublished_mqtt_events(after_id=after_id, limit=self._batch_size),
                    watcher,
                )
                if not events:
                    self.pending = 0
                    with contextlib.suppress(TimeoutError):
                        await self._until(
                            asyncio.wait_for(self._wakeup.wait(), self._poll_interval), watcher
                        )
                    continue
                acknowledged = await self._publish(client, events, watcher)
                if acknowledged:
                    last = events[acknowledged - 1].id
                    await self._store.write(MarkMqttPublished(last, self._clock()))
                    self.published += acknowledged
                    after_id = last
                if acknowledged < len(events):
                    raise aiomqtt.MqttError("publish of an outbox batch did not complete")
                # A short page was the whole backlog; a full one leaves an estimate
                # (counting the backlog after every page would cost more than the page).
                short = len(events) < self._batch_size
                self.pending = 0 if short else max(self.pending - acknowledged, 1)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        async for _ in client.messages:
            pass  # nothing is subscribed; the iteration ends with MqttError on disconnect

    @staticmethod
    async def _until(aw: Any, watcher: asyncio.Task[None]) -> Any:
        """Await `aw`, unless the connection breaks first (then raise its MqttError)."""
        task = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        watcher.result()  # raises the disconnect
        raise aiomqtt.MqttError("disconnected")

    async def _publish(
        self, client: aiomqtt.Client, events: Sequence[MqttEvent], watcher: asyncio.Task[None]
    ) -> int:
        """Publish `events` at once, in order; return how many of the first ones the
        broker acknowledged (PUBACKs come back in order over one connection)."""
        tasks = [
            asyncio.create_task(
                client.publish(
                    f"{self._prefix}/events/{e.system_id}/{e.message_id}", e.payload, qos=1
                )
            )
            for e in events
        ]
        all_done: asyncio.Future[list[Any]] = asyncio.gather(*tasks, return_exceptions=True)
        either: set[asyncio.Future[Any]] = {all_done, watcher}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        if not all_done.done():
            for task in tasks:
                task.cancel()
        await all_done
        acknowledged = 0
        for task in tasks:
            if task.cancelled() or task.exception() is not None:
                break
            acknowledged += 1
        return acknowledged
