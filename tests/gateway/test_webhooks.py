"""The webhook sender against a real aiohttp receiver on 127.0.0.1 and a SQLite store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from aiohttp import web

from gateway.config import WebhookSettings
from gateway.events import StatusBus
from gateway.ids import new_message_id
from gateway.lifecycle import Status
from gateway.metrics import Metrics
from gateway.store import (
    ApplyReceipt,
    NewMessage,
    PartUpdate,
    Store,
    WebhookAttempt,
    utcnow,
)
from gateway.store.tables import webhook_deliveries
from gateway.webhooks import WebhookSender
from tests.gateway.conftest import Database

DEADLINE_S = 5.0
FAST = WebhookSettings(
    timeout_s=2.0, max_age_s=60, initial_backoff_s=0.05, max_backoff_s=0.4, concurrency=4
)


@dataclass
class Hit:
    """One request that reached the receiver."""

    body: bytes
    signature: str | None
    content_type: str
    path_qs: str
    at: float  # loop time

    @property
    def status(self) -> str:
        return str(json.loads(self.body)["status"])


@dataclass
class Receiver:
    """Answers each request with the next scripted action ("ok" when none is left):
    "ok" 200, "500", "drop" (closes the connection without an answer), "hang" (holds the
    request until the test ends). ``received`` has the requests answered 2xx, ``hits``
    all of them."""

    url: str = ""
    script: list[str] = field(default_factory=list)
    received: list[Hit] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    answer_delay: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        hit = Hit(
            body,
            request.headers.get("X-Smsgw-Signature"),
            request.content_type,
            request.path_qs,
            asyncio.get_running_loop().time(),
        )
        action = self.script.pop(0) if self.script else "ok"
        self.hits.append(hit)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.changed.set()
        try:
            if action == "hang":
                await self.release.wait()
                return web.Response(status=503)
            if action == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            if action == "500":
                return web.Response(status=500, text="boom")
            if self.answer_delay:
                await asyncio.sleep(self.answer_delay)  # a slow receiver, to overlap POSTs
            self.received.append(hit)
            self.changed.set()
            return web.Response(text="ok")
        finally:
            self.in_flight -= 1

    async def wait_for(self, condition: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
        async def watch() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(watch(), timeout)

    def statuses(self) -> list[str]:
        return [h.status for h in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rx.url = f"http://127.0.0.1:{port}/hook?token=s3cret"
    try:
        yield rx
    finally:
        rx.release.set()
        await runner.cleanup()


@pytest.fixture
async def store(db: Database) -> AsyncIterator[Store]:
    s = await Store.open_url(db.url, commit_window_ms=2.0)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def make_sender(
    store: Store, metrics: Metrics
) -> AsyncIterator[Callable[..., Awaitable[WebhookSender]]]:
    started: list[WebhookSender] = []

    async def make(
        settings: WebhookSettings = FAST,
        *,
        on: Store | None = None,
        poll_interval: float = 0.05,
        clock: Callable[[], datetime] = utcnow,
    ) -> WebhookSender:
        sender = WebhookSender(
            on or store, metrics, settings, poll_interval=poll_interval, clock=clock
        )
        await sender.start()
        started.append(sender)
        return sender

    try:
        yield make
    finally:
        for sender in started:
            await sender.close()


async def _account(store: Store, system_id: str = "acme") -> tuple[int, str]:
    created = await store.create_account(system_id, "secret-pw")
    return created.account.id, created.account.webhook_secret


async def _message(store: Store, account_id: int, callback_url: str) -> str:
    message_id = new_message_id()
    await store.accept(
        NewMessage(
            id=message_id,
            account_id=account_id,
            interface="http",
            source="ACME",
            destination="+34600123456",
            text="hello",
            encoding="gsm7",
            data_coding=0,
            segments=1,
            created_at=utcnow(),
            callback_url=callback_url,
        )
    )
    return message_id


async def _deliver_message(store: Store, message_id: str, upstream_id: str, bus: StatusBus) -> None:
    """submitted, enroute, delivered: three transitions, three webhook deliveries."""
    bus.publish(
        await store.part_update(
            PartUpdate(
                message_id,
                1,
                Status.SUBMITTED,
                utcnow(),
                upstream="u",
                upstream_message_id=upstream_id,
            )
        )
    )
    for status in (Status.ENROUTE, Status.DELIVERED):
        result = await store.apply_receipt(ApplyReceipt("u", upstream_id, status, utcnow()))
        assert result.matched
        bus.publish(result.changes)


def _count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "smsgw_webhook_deliveries_total", {"outcome": outcome}
    )
    return value or 0.0


async def _rows(store: Store) -> list[tuple[int, str, int, str | None]]:
    async with store.engine.connect() as conn:
        result = await conn.execute(
            sa.select(
                webhook_deliveries.c.id,
                webhook_deliveries.c.status,
                webhook_deliveries.c.attempts,
                webhook_deliveries.c.last_error,
            ).order_by(webhook_deliveries.c.id)
        )
        return [(r.id, r.status, r.attempts, r.last_error) for r in result]


async def _eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), DEADLINE_S)


def _verify(hit: Hit, secret: str) -> None:
    expected = "sha256=" + hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hit.signature is not None
    assert hmac.compare_digest(hit.signature, expected)


# --------------------------------------------------------------------------- tests


async def test_every_transition_in_order_signed(
    store: Store,
    receiver: Receiver,
    metrics: Metrics,
    make_sender: Callable[..., Awaitable[WebhookSender]],
) -> None:
    account_id, secret = await _account(store)
    # A long poll: only the bus wake-up can make this fast.
    sender = await make_sender(poll_interval=30.0)
    bus = StatusBus()
    bus.subscribe(lambda changes: sender.wake())
    message_id = await _message(store, account_id, receiver.url)
    await _deliver_message(store, message_id, "1", bus)

    await receiver.wait_for(lambda: len(receiver.received) == 3)
    assert receiver.statuses() == ["submitted", "enroute", "delivered"]
    for hit in receiver.received:
        _verify(hit, secret)
        assert hit.content_type == "application/json"
        assert hit.path_qs == "/hook?token=s3cret"
        body = json.loads(hit.body)
        assert body["id"] == message_id and body["route"] == "u"
    assert len(receiver.hits) == 3
    await _eventually(
        lambda: _rows_are(store, ["delivered"] * 3),
    )
    assert _count(metrics, "delivered") == 3
    assert _count(metrics, "failed") == 0


async def _rows_are(store: Store, statuses: list[str]) -> bool:
    return [r[1] for r in await _rows(store)] == statuses


async def test_failures_are_retried_with_backoff_and_order_kept(
    caplog: pytest.LogCaptureFixture,
    store: Store,
    receiver: Receiver,
    metrics: Metrics,
    make_sender: Callable[..., Awaitable[WebhookSender]],
) -> None:
    account_id, secret = await _account(store)
    message_id = await _message(store, account_id, receiver.url)
    # All three transitions are due before the sender starts: the later two must wait.
    await _deliver_message(store, message_id, "1", StatusBus())
    receiver.script = ["500", "drop"]
    caplog.set_level(logging.DEBUG, logger="gateway.webhooks")
    await make_sender()

    await receiver.wait_for(lambda: len(receiver.received) == 3)
    assert receiver.statuses() == ["submitted", "enroute", "delivered"]
    assert [h.status for h in receiver.hits] == ["submitted"] * 3 + ["enroute", "delivered"]
    for hit in receiver.hits:
        _verify(hit, secret)
    first, second, third = (h.at for h in receiver.hits[:3])
    assert second - first >= FAST.initial_backoff_s
    assert third - second >= 2 * FAST.initial_backoff_s  # doubled
    assert _count(metrics, "failed") == 2
    assert _count(metrics, "delivered") == 3
    await _eventually(lambda: _rows_are(store, ["delivered"] * 3))
    reasons = [r.getMessage() for r in caplog.records if "retry at" in r.getMessage()]
    assert ["(HTTP 500)" in reasons[0], "(ServerDisconnectedError)" in reasons[1]] == [True, True]
    assert "s3cret" not in caplog.text and "127.0.0.1" not in caplog.text  # no URL logged


async def test_later_transition_waits_for_an_earlier_retry(
    store: Store, receiver: Receiver, make_sender: Callable[..., Awaitable[WebhookSender]]
) -> None:
    """The order holds from the database, not only in memory: the earlier delivery is
    waiting for a retry time set before this sender existed."""
    account_id, _ = await _account(store)
    message_id = await _message(store, account_id, receiver.url)
    await _deliver_message(store, message_id, "1", StatusBus())
    first = (await _rows(store))[0][0]
    retry_at = utcnow() + timedelta(seconds=0.6)
    await store.write(
        WebhookAttempt(first, utcnow(), delivered=False, error="HTTP 500", next_attempt_at=retry_at)
    )
    await make_sender()

    async def held() -> bool:
        return all("held behind" in (row[3] or "") for row in (await _rows(store))[1:])

    await _eventually(held)
    assert utcnow() < retry_at and receiver.hits == []  # due, but not POSTed before the first
    await receiver.wait_for(lambda: len(receiver.received) == 3)
    assert receiver.statuses() == ["submitted", "enroute", "delivered"]
    assert len(receiver.hits) == 3


async def test_pending_delivery_survives_a_restart(
    db: Database, receiver: Receiver, metrics: Metrics
) -> None:
    first_store = await Store.open_url(db.url)
    account_id, secret = await _account(first_store)
    message_id = await _message(first_store, account_id, receiver.url)
    await _deliver_message(first_store, message_id, "1", StatusBus())
    receiver.script = ["hang"]
    sender = WebhookSender(first_store, metrics, FAST, poll_interval=0.05)
    await sender.start()
    try:
        await receiver.wait_for(lambda: len(receiver.hits) == 1)
    finally:
        await sender.close()  # cancels the POST in flight
        await first_store.close()
    assert receiver.received == []

    second_store = await Store.open_url(db.url)
    restarted = WebhookSender(second_store, metrics, FAST, poll_interval=0.05)
    await restarted.start()
    try:
        await receiver.wait_for(lambda: len(receiver.received) == 3)
        await _eventually(lambda: _rows_are(second_store, ["delivered"] * 3))
    finally:
        await restarted.close()
        await second_store.close()
    assert receiver.statuses() == ["submitted", "enroute", "delivered"]
    for hit in receiver.received:
        _verify(hit, secret)


async def test_delivery_older_than_max_age_is_given_up(
    store: Store,
    receiver: Receiver,
    metrics: Metrics,
    make_sender: Callable[..., Awaitable[WebhookSender]],
) -> None:
    account_id, _ = await _account(store)
    message_id = await _message(store, account_id, receiver.url)
    await _deliver_message(store, message_id, "1", StatusBus())
    settings = FAST.model_copy(update={"max_age_s": 60})
    await make_sender(settings, clock=lambda: utcnow() + timedelta(seconds=61))
    await _eventually(lambda: _rows_are(store, ["failed"] * 3))
    assert receiver.hits == []
    assert _count(metrics, "expired") == 3
    assert _count(metrics, "delivered") == 0


async def test_receiver_that_never_answers_2xx_is_given_up_at_max_age(
    store: Store,
    receiver: Receiver,
    metrics: Metrics,
    make_sender: Callable[..., Awaitable[WebhookSender]],
) -> None:
    account_id, _ = await _account(store)
    message_id = await _message(store, account_id, receiver.url)
    await store.part_update(
        PartUpdate(message_id, 1, Status.SUBMITTED, utcnow(), upstream="u", upstream_message_id="1")
    )
    receiver.script = ["500"] * 1000
    settings = FAST.model_copy(update={"max_age_s": 1, "max_backoff_s": 0.2})
    await make_sender(settings)
    await _eventually(lambda: _rows_are(store, ["failed"]))
    rows = await _rows(store)
    assert rows[0][3] == "HTTP 500"
    posts = len(receiver.hits)
    assert 3 <= posts <= 12  # backed off: 0.05, 0.1, 0.2, 0.2, ... until 1 s, not a busy loop
    assert _count(metrics, "failed") == posts
    assert _count(metrics, "expired") == 1
    assert receiver.received == []


async def test_connection_refused_is_retried(
    store: Store, metrics: Metrics, make_sender: Callable[..., Awaitable[WebhookSender]]
) -> None:
    # A port that was just free: nothing listens there.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    account_id, _ = await _account(store)
    message_id = await _message(store, account_id, f"http://127.0.0.1:{port}/hook")
    await store.part_update(
        PartUpdate(message_id, 1, Status.SUBMITTED, utcnow(), upstream="u", upstream_message_id="1")
    )
    await make_sender()

    async def retried() -> bool:
        rows = await _rows(store)
        return rows[0][1] == "pending" and rows[0][2] >= 2

    await _eventually(retried)
    rows = await _rows(store)
    assert (rows[0][3] or "").startswith("connect failed")
    assert _count(metrics, "failed") >= 2


async def test_at_most_concurrency_posts_at_once(
    store: Store,
    receiver: Receiver,
    metrics: Metrics,
    make_sender: Callable[..., Awaitable[WebhookSender]],
) -> None:
    account_id, _ = await _account(store)
    for n in range(8):
        message_id = await _message(store, account_id, receiver.url)
        await store.part_update(
            PartUpdate(
                message_id, 1, Status.SUBMITTED, utcnow(), upstream="u", upstream_message_id=str(n)
            )
        )
    receiver.answer_delay = 0.05
    await make_sender(FAST.model_copy(update={"concurrency": 2}))
    await receiver.wait_for(lambda: len(receiver.received) == 8)
    assert receiver.most_in_flight == 2
    assert _count(metrics, "delivered") == 8
