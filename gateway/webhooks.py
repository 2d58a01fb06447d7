"""Webhook sender: drains the store's webhook_deliveries outbox over HTTP.

Every status transition of a message with a callback URL leaves a pending row, written
in the same transaction as the transition (gateway/store/ops.py), so deliveries survive a
restart: the sender only reads due rows, POSTs them and records each outcome with a
``WebhookAttempt``. Its in-memory state is an optimisation; the database is the truth.

sender = WebhookSender(store, metrics, settings.webhooks)
await sender.start()
bus.subscribe(lambda changes: sender.wake())    # deliver at once instead of next poll
...
await sender.close()                            # before store.close()

Rules (interface.md, "Webhooks"):
- The body is POSTed as the exact bytes stored, ``Content-Type: application/json``, signed
  ``X-Smsgw-Signature: sha256=<hex HMAC-SHA256(body, account's webhook secret)>``.
- 2xx is delivered; anything else (3xx included: redirects are not followed, a POST must
  not silently become a GET elsewhere), a refused or dropped connection, or a timeout is
  retried after ``initial_backoff_s * 2**attempts`` (at most ``max_backoff_s``, plus up to
  10% jitter so that receivers coming back are not hit in lockstep), and given up when
  the next attempt would come after ``max_age_s`` (a delivery found older than that,
  after the gateway was down, is given up without a POST).
- Per message, transitions go out in order: a later one is never POSTed while an earlier
  one is pending. One task per message ("chain") POSTs its due transitions one after the
  other; at most ``concurrency`` chains, hence POSTs, run at once.
- A later transition held behind an earlier one that is waiting for its retry gets its
  ``next_attempt_at`` moved to the earlier one's. Otherwise due-but-held rows, being the
  oldest, would fill every page of ``Store.due_webhooks`` and starve the rest, including
  the very retry they wait for. (The store has no op that only moves the time, so this is
  a ``WebhookAttempt`` that also counts an attempt; the backoff of the held row then
  carries on about where its blocker's is, which is what the receiver's state suggests.)

Delivery is at least once: a crash between a 2xx and its commit POSTs again after the
restart. ``X-Smsgw-Delivery`` carries the outbox row id so that receivers can drop repeats.
Logs name deliveries and messages by id, never the URL (it may carry a token) nor the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp

from gateway.config import WebhookSettings
from gateway.metrics import Metrics
from gateway.store import Store, WebhookAttempt, WebhookDelivery, log_failure, utcnow

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "sign"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Smsgw-Signature"
DELIVERY_HEADER = "X-Smsgw-Delivery"

_JITTER = 0.1  # up to +10% of the backoff
_MAX_RESPONSE_READ = 64 * 1024  # read (and drop) this much of an answer to reuse the connection


def sign(body: bytes, secret: str) -> str:
    """The value of X-Smsgw-Signature for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class _Outcome:
    delivered: bool
    error: str | None = None


def _describe(exc: BaseException) -> str:
    """A short reason for last_error and logs; aiohttp's messages may contain the URL."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect failed: {exc.os_error.strerror or type(exc.os_error).__name__}"
    return type(exc).__name__


class WebhookSender:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        settings: WebhookSettings,
        *,
        poll_interval: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._poll_interval = poll_interval
        self._clock = clock
        self._page = max(100, 4 * settings.concurrency)
        self._max_age = timedelta(seconds=settings.max_age_s)
        self._secrets: dict[int, str | None] = {}
        self._wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._chains: dict[str, asyncio.Task[None]] = {}  # message id -> its running chain
        # Chains that ended while a page was being read: that page may predate their
        # commits, so their messages are left for the next pass.
        self._ended_during_read: set[str] = set()
        self._scheduled: list[datetime] = []  # heap of retry times this sender set
        self._closing = False

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._loop_task is not None:
            raise RuntimeError("WebhookSender started twice")
        self._closing = False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._settings.concurrency),
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            headers={"User-Agent": "smsgw-webhooks"},
        )
        self._loop_task = asyncio.create_task(self._run(), name="webhook-sender")

    async def close(self) -> None:
        """Stop; POSTs in flight are cancelled and stay pending in the store."""
        self._closing = True
        tasks = list(self._chains.values())
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        self._chains.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Look for due deliveries now (subscribed to the StatusBus); safe at any time."""
        self._wakeup.set()

    # --------------------------------------------------------------------- loop

    async def _run(self) -> None:
        while not self._closing:
            self._wakeup.clear()
            try:
                await self._pass()
            except Exception as exc:
                log_failure(
                    log, exc, "webhook pass failed; trying again in %.1f s", self._poll_interval
                )
            await self._sleep()

    async def _sleep(self) -> None:
        """Until woken, the soonest retry this sender scheduled, or the poll interval."""
        timeout = self._poll_interval
        if self._scheduled:
            soonest = (self._scheduled[0] - self._clock()).total_seconds()
            timeout = min(timeout, max(soonest, 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _pass(self) -> None:
        now = self._clock()
        while self._scheduled and self._scheduled[0] <= now:
            heapq.heappop(self._scheduled)
        if len(self._chains) >= self._settings.concurrency:
            return  # a chain ending wakes the loop
        self._ended_during_read.clear()
        due = await self._store.due_webhooks(now, self._page)
        busy = self._chains.keys() | self._ended_during_read
        by_message: dict[str, list[WebhookDelivery]] = {}
        for delivery in due:
            if delivery.message_id not in busy:
                by_message.setdefault(delivery.message_id, []).append(delivery)
        if not by_message:
            return
        queues = await self._store.pending_webhooks_by_message(by_message)
        holds: list[WebhookAttempt] = []
        for message_id, deliveries in by_message.items():
            queue = queues.get(message_id, [])
            by_id = {d.id: d for d in deliveries}
            # The due deliveries that are next in the message's order, without a gap.
            chain: list[WebhookDelivery] = []
            for delivery_id, _ in queue:
                if delivery_id not in by_id:
                    break
                chain.append(by_id[delivery_id])
            if chain:
                if len(self._chains) < self._settings.concurrency:
                    self._start_chain(message_id, chain)
                continue
            if not queue:
                continue  # finished since the page was read
            blocker_id, blocker_at = queue[0]
            for delivery in deliveries:
                if delivery.next_attempt_at < blocker_at:
                    holds.append(self._hold(delivery, blocker_id, blocker_at, now))
        if holds:
            await asyncio.gather(*(self._store.write(op) for op in holds))

    def _hold(
        self, delivery: WebhookDelivery, blocker_id: int, blocker_at: datetime, now: datetime
    ) -> WebhookAttempt:
        heapq.heappush(self._scheduled, blocker_at)
        return WebhookAttempt(
            delivery.id,
            now,
            delivered=False,
            error=f"held behind delivery {blocker_id} of the same message",
            next_attempt_at=blocker_at,
        )

    def _start_chain(self, message_id: str, chain: Sequence[WebhookDelivery]) -> None:
        task = asyncio.create_task(self._deliver_chain(chain), name=f"webhook-{message_id}")
        self._chains[message_id] = task

        def ended(_: asyncio.Task[None]) -> None:
            self._chains.pop(message_id, None)
            self._ended_during_read.add(message_id)
            self._wakeup.set()

        task.add_done_callback(ended)

    # ------------------------------------------------------------------ delivery

    async def _deliver_chain(self, chain: Sequence[WebhookDelivery]) -> None:
        """POST one message's due deliveries in order; stop at the first that must wait."""
        try:
            for index, delivery in enumerate(chain):
                retry_at = await self._deliver(delivery)
                if retry_at is not None:
                    held = chain[index + 1 :]
                    if held:
                        now = self._clock()
                        ops = [self._hold(d, delivery.id, retry_at, now) for d in held]
                        await asyncio.gather(*(self._store.write(op) for op in ops))
                    return
        except Exception:
            # Left pending in the store: the next pass picks it up again.
            log.exception("webhook delivery of message %s failed", chain[0].message_id)

    async def _deliver(self, delivery: WebhookDelivery) -> datetime | None:
        """One delivery, recorded; the time of its next attempt when it must be retried."""
        now = self._clock()
        deadline = delivery.created_at + self._max_age
        if now > deadline:
            await self._give_up(delivery, now, "expired before it could be sent")
            return None
        outcome = await self._post(delivery)
        now = self._clock()
        if outcome.delivered:
            self._metrics.webhook_deliveries.labels(outcome="delivered").inc()
            log.debug("webhook %d of message %s delivered", delivery.id, delivery.message_id)
            await self._store.write(WebhookAttempt(delivery.id, now, delivered=True))
            return None
        self._metrics.webhook_deliveries.labels(outcome="failed").inc()
        retry_at = now + self._backoff(delivery.attempts)
        if retry_at > deadline:
            await self._give_up(delivery, now, outcome.error)
            return None
        log.debug(
            "webhook %d of message %s failed (%s), retry at %s",
            delivery.id,
            delivery.message_id,
            outcome.error,
            retry_at,
        )
        heapq.heappush(self._scheduled, retry_at)
        await self._store.write(
            WebhookAttempt(
                delivery.id, now, delivered=False, error=outcome.error, next_attempt_at=retry_at
            )
        )
        return retry_at

    def _backoff(self, attempts: int) -> timedelta:
        s = self._settings
        delay = min(s.max_backoff_s, s.initial_backoff_s * 2.0 ** min(attempts, 64))
        return timedelta(seconds=delay * (1.0 + random.uniform(0.0, _JITTER)))

    async def _give_up(self, delivery: WebhookDelivery, now: datetime, error: str | None) -> None:
        self._metrics.webhook_deliveries.labels(outcome="expired").inc()
        log.warning(
            "webhook %d of message %s given up after %d attempts over %ds: %s",
            delivery.id,
            delivery.message_id,
            delivery.attempts + 1,
            self._settings.max_age_s,
            error,
        )
        await self._store.write(WebhookAttempt(delivery.id, now, delivered=False, error=error))

    async def _post(self, delivery: WebhookDelivery) -> _Outcome:
        session = self._session
        if session is None:
            raise RuntimeError("WebhookSender is not started")
        secret = await self._secret(delivery.account_id)
        if secret is None:
            return _Outcome(False, f"no account {delivery.account_id}")
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, secret),
            DELIVERY_HEADER: str(delivery.id),
        }
        try:
            async with session.post(
                delivery.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                read = 0
                async for chunk in response.content.iter_chunked(8192):
                    read += len(chunk)
                    if read >= _MAX_RESPONSE_READ:
                        break
                if 200 <= response.status < 300:
                    return _Outcome(True)
                return _Outcome(False, f"HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # ValueError: a URL aiohttp cannot use (InvalidURL is one)
            return _Outcome(False, _describe(exc))

    async def _secret(self, account_id: int) -> str | None:
        if account_id not in self._secrets:
            account = await self._store.get_account(account_id)
            self._secrets[account_id] = account.webhook_secret if account else None
        return self._secrets[account_id]
