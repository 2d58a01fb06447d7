"""MQTT events against a real Mosquitto: the shared one at 127.0.0.1:1883, and one this
file starts itself (on a free port) to stop and start in the middle of a load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest
import sqlalchemy as sa

from gateway.config import MqttSettings
from gateway.ids import new_message_id
from gateway.lifecycle import Status
from gateway.metrics import Metrics
from gateway.mqtt import MqttPublisher, broker_options
from gateway.store import ApplyReceipt, NewMessage, PartUpdate, Store, utcnow
from gateway.store.ops import EnableMqttOutbox
from gateway.store.tables import mqtt_outbox
from tests.gateway.conftest import BOTH

SHARED_BROKER = ("127.0.0.1", 1883)
DEADLINE_S = 15.0


def _message(account_id: int) -> NewMessage:
    return NewMessage(
        id=new_message_id(),
        account_id=account_id,
        interface="http",
        source="ACME",
        destination="+34600123456",
        text="hello",
        encoding="gsm7",
        data_coding=0,
        segments=1,
        created_at=utcnow(),
    )


async def _eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition`, checked on every turn of the loop, for DEADLINE_S at most."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"no {what} within {DEADLINE_S}s") from None


async def _outbox_rows(store: Store) -> int:
    async with store.engine.connect() as conn:
        count = await conn.execute(sa.select(sa.func.count()).select_from(mqtt_outbox))
        return int(count.scalar_one())


@dataclass
class Subscriber:
    """Collects (topic, payload) from `<prefix>/events/#`; reconnects, with a persistent
    session (clean_session=False) when `persistent`, so the broker keeps what it owes
    across a drop."""

    host: str
    port: int
    prefix: str
    persistent: bool = False
    topic: str = "events/#"
    received: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    identifier: str = field(default_factory=lambda: f"smsgw-test-sub-{uuid.uuid4().hex[:8]}")

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=self.identifier,
                    clean_session=not self.persistent,
                ) as client:
                    await client.subscribe(f"{self.prefix}/{self.topic}", qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self.received.append((str(message.topic), json.loads(message.payload)))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)  # the broker is away: try again

    def statuses(self, message_id: str) -> list[object]:
        """The message's statuses in arrival order, each counted at its first arrival
        (QoS 1 is at least once: a repeat may follow a reconnection)."""
        seen: list[object] = []
        for _, payload in self.received:
            if payload["id"] == message_id and payload["status"] not in seen:
                seen.append(payload["status"])
        return seen


@contextlib.asynccontextmanager
async def _running(aw: Awaitable[None]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.ensure_future(aw)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _publisher(store: Store, host: str, port: int, prefix: str) -> MqttPublisher:
    return MqttPublisher(
        store,
        MqttSettings(url=f"mqtt://{host}:{port}", topic_prefix=prefix),
        Metrics(),
        reconnect_initial_s=0.05,
        reconnect_max_s=0.5,
    )


def test_broker_options() -> None:
    plain = broker_options("mqtt://broker.example")
    assert (plain.hostname, plain.port, plain.username, plain.tls) == (
        "broker.example",
        1883,
        None,
        False,
    )
    secure = broker_options("mqtts://gw%40acme:p%3Ass@10.0.0.5:9883")
    assert (secure.hostname, secure.port, secure.username, secure.password, secure.tls) == (
        "10.0.0.5",
        9883,
        "gw@acme",
        "p:ss",
        True,
    )
    assert broker_options("mqtts://h").port == 8883
    with pytest.raises(ValueError):
        broker_options("http://h:1883")


@BOTH
async def test_every_transition_in_order(store: Store) -> None:
    prefix = f"smsgw-test-{uuid.uuid4().hex[:8]}"
    account = (await store.create_account("acme", "secret-pw")).account
    before = _message(account.id)
    await store.accept(before)
    assert await _outbox_rows(store) == 0  # no publisher, no outbox rows

    subscriber = Subscriber(*SHARED_BROKER, prefix)
    publisher = _publisher(store, *SHARED_BROKER, prefix)
    async with _running(subscriber.run()):
        await subscriber.subscribed.wait()
        await publisher.start()
        try:
            m = _message(account.id)
            t = m.created_at
            await store.accept(m)
            await store.part_update(
                PartUpdate(
                    m.id,
                    1,
                    Status.SUBMITTED,
                    t + timedelta(milliseconds=5),
                    upstream="agg-a",
                    upstream_message_id="u-1",
                    price=0.04,
                )
            )
            publisher.wake()
            await store.apply_receipt(
                ApplyReceipt("agg-a", "u-1", Status.ENROUTE, t + timedelta(seconds=1))
            )
            await store.apply_receipt(
                ApplyReceipt("agg-a", "u-1", Status.DELIVERED, t + timedelta(seconds=2))
            )
            publisher.wake()
            await _eventually(lambda: len(subscriber.received) >= 4, "four events")
            # Received is not yet stamped: the PUBACKs are marked published in a
            # store write of their own, which close() would cut short.
            await _eventually(lambda: publisher.published == 4, "four events stamped")
        finally:
            await publisher.close()

    topics = {topic for topic, _ in subscriber.received}
    assert topics == {f"{prefix}/events/acme/{m.id}"}
    payloads = [payload for _, payload in subscriber.received]
    assert [p["status"] for p in payloads] == ["accepted", "submitted", "enroute", "delivered"]
    assert all(set(p) == {"id", "status", "at", "route", "error"} for p in payloads)
    assert payloads[0] == {
        "id": m.id,
        "status": "accepted",
        "at": payloads[0]["at"],
        "route": None,
        "error": None,
    }
    assert payloads[3]["route"] == "agg-a" and payloads[3]["error"] is None
    assert str(payloads[3]["at"]).endswith("Z")
    assert publisher.published == 4
    assert await store.count_unpublished_mqtt_events() == 0
    assert await publisher.publish_mo("acme", {"from": "+34600123456"}) is False  # closed


@BOTH
async def test_outbox_rows_outlive_a_failed_batch(store: Store) -> None:
    """The switch is not in conn.info, which a rolled-back batch clears."""
    account = (await store.create_account("acme", "secret-pw")).account
    await store.write(EnableMqttOutbox())
    m = _message(account.id)
    await store.accept(m)
    with pytest.raises(LookupError):
        await store.part_update(PartUpdate("no-such-message", 1, Status.SUBMITTED, utcnow()))
    await store.part_update(
        PartUpdate(m.id, 1, Status.SUBMITTED, utcnow(), upstream="a", upstream_message_id="1")
    )
    events = await store.unpublished_mqtt_events()
    assert [(e.system_id, e.message_id) for e in events] == [("acme", m.id)] * 2
    assert [json.loads(e.payload)["status"] for e in events] == ["accepted", "submitted"]
    assert json.loads(events[1].payload)["route"] == "a"


async def test_mo_published_while_connected(store: Store) -> None:
    prefix = f"smsgw-test-{uuid.uuid4().hex[:8]}"
    subscriber = Subscriber(*SHARED_BROKER, prefix, topic="mo/#")
    publisher = _publisher(store, *SHARED_BROKER, prefix)
    async with _running(subscriber.run()):
        await subscriber.subscribed.wait()
        await publisher.start()
        try:
            await publisher.connected.wait()
            mo = {"id": "mo-1", "from": "+34600123456", "to": "ACME", "text": "STOP"}
            assert await publisher.publish_mo("acme", mo)
            await _eventually(lambda: len(subscriber.received) == 1, "the MO message")
        finally:
            await publisher.close()
    assert subscriber.received == [(f"{prefix}/mo/acme", mo)]
    assert (publisher.mo_published, publisher.mo_dropped) == (1, 0)


# ------------------------------------------------------------ broker restart


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A broker of this test's own, with persistence, so that the subscriber's session
    and the messages queued for it survive a restart (as in production)."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            f"log_dest file {directory}/mosquitto.log\n"
        )
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            "mosquitto",
            "-c",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,  # "should not be run as root"; see the log file
        )
        async with asyncio.timeout(DEADLINE_S):  # ready when it accepts connections
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    assert self._process.returncode is None, "mosquitto exited"
                    await asyncio.sleep(0.01)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()  # SIGTERM: mosquitto saves its persistence file
            await process.wait()


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@BOTH
async def test_broker_restart_loses_no_event(store: Store, mosquitto: Mosquitto) -> None:
    prefix = f"smsgw-test-{uuid.uuid4().hex[:8]}"
    account = (await store.create_account("acme", "secret-pw")).account
    subscriber = Subscriber("127.0.0.1", mosquitto.port, prefix, persistent=True)
    publisher = _publisher(store, "127.0.0.1", mosquitto.port, prefix)
    count = 200
    async with _running(subscriber.run()):
        await subscriber.subscribed.wait()
        await publisher.start()
        try:
            await publisher.connected.wait()
            batch = [_message(account.id) for _ in range(count)]
            await asyncio.gather(*(store.accept(m) for m in batch))
            publisher.wake()
            submitted = asyncio.gather(
                *(
                    store.part_update(
                        PartUpdate(
                            m.id,
                            1,
                            Status.SUBMITTED,
                            utcnow(),
                            upstream="agg-a",
                            upstream_message_id=f"u-{i}",
                        )
                    )
                    for i, m in enumerate(batch)
                )
            )
            # The broker goes away in the middle of the load ...
            await _eventually(lambda: len(subscriber.received) >= count // 2, "some events")
            await mosquitto.stop()
            await submitted
            await _eventually(lambda: not publisher.connected.is_set(), "a disconnect")
            # ... transitions go on meanwhile, and the gateway does not wait for MQTT ...
            await asyncio.gather(
                *(
                    store.apply_receipt(ApplyReceipt("agg-a", f"u-{i}", Status.ENROUTE, utcnow()))
                    for i in range(count)
                )
            )
            publisher.wake()
            assert await store.count_unpublished_mqtt_events() > 0
            # ... and once it is back every event arrives, in order per message.
            await mosquitto.start()
            await asyncio.gather(
                *(
                    store.apply_receipt(ApplyReceipt("agg-a", f"u-{i}", Status.DELIVERED, utcnow()))
                    for i in range(count)
                )
            )
            publisher.wake()
            expected = ["accepted", "submitted", "enroute", "delivered"]
            await _eventually(
                lambda: all(len(subscriber.statuses(m.id)) == 4 for m in batch), "every event"
            )
            await _eventually(lambda: publisher.published == 4 * count, "every PUBACK stamped")
        finally:
            await publisher.close()

    for m in batch:
        assert subscriber.statuses(m.id) == expected
    print(f"{len(subscriber.received)} events received for {4 * count} sent")
    assert publisher.connects >= 2
    assert publisher.published == 4 * count
    assert await store.count_unpublished_mqtt_events() == 0


async def test_no_broker_at_all(store: Store) -> None:
    """Nothing waits for a broker that never comes: events stay in the outbox."""
    account = (await store.create_account("acme", "secret-pw")).account
    publisher = _publisher(store, "127.0.0.1", _free_port(), "smsgw-test")
    await publisher.start()
    try:
        await asyncio.gather(*(store.accept(_message(account.id)) for _ in range(10)))
        publisher.wake()
        assert await store.count_unpublished_mqtt_events() == 10
        assert await publisher.publish_mo("acme", {"text": "hi"}) is False
        await _eventually(lambda: publisher.pending == 10, "the backlog counted")
    finally:
        await publisher.close()
    assert (publisher.connects, publisher.published, publisher.mo_dropped) == (0, 0, 1)
