"""The dispatcher: keeps every upstream's window full from the queue of due messages.

Messages come in three ways: `enqueue_new` right after the accept commit, the
scheduler finding scheduled ones whose time has come, and recovery at start
(everything accepted or scheduled in the store). They wait in one in-memory
queue. Each upstream runs `window` sender loops while it is bound, each
taking the next message and submitting it: a fixed set of loops, not a task
per message, and an upstream with room takes work as soon as it has room.
The routing issue replaces "whichever bound upstream asks first" with a
selector.

What happens to a submit_sm (SMPP 3.4 section 5.1.3, smpp-facts):
- ROK: the part is `submitted` with the upstream's message id (committed
  before the loop moves on, so the receipt can be matched);
- a temporary status (RTHROTTLED, RMSGQFUL, RSYSERR, RSUBMITFAIL), a timeout,
  a lost connection: the message goes back to the front of the queue, for
  any bound upstream; after `max_attempts` it fails. RTHROTTLED also makes
  that upstream's loop pause, so a throttling route is slowed, not abandoned;
- any other status: permanent, the message ends `rejected` with the code.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from gateway.config import DispatchSettings
from gateway.events import StatusBus
from gateway.lifecycle import Status
from gateway.messages import mask_number
from gateway.metrics import Metrics
from gateway.store import MessageRecord, NewMessage, PartUpdate, Store, TransitionMessage, utcnow
from gateway.upstreams import Upstream
from smpp import CommandStatus, Npi, SubmitSm, Ton
from smpp import text as smstext
from smpp.aio import ConnectionLostError, NotBoundError, ResponseTimeoutError
from smpp.constants import TEMPORARY_STATUSES

log = logging.getLogger(__name__)

# registered_delivery we always ask of upstreams: receipts are how we learn what
# happened, whatever the submitter asked for (SMPP 3.4 section 5.2.17: 0x01 a
# final receipt, 0x10 intermediate notifications too).
FINAL_RECEIPT, INTERMEDIATE_RECEIPTS = 0x01, 0x10


@dataclass(slots=True)
class Outgoing:
    """A message on its way out: what a sender loop needs, and how far it got."""

    message_id: str
    source: str
    destination: str
    text: str
    data_coding: int
    created_at: datetime
    valid_until: datetime | None
    done_parts: frozenset[int] = frozenset()
    attempts: int = 0
    reference: int = field(default_factory=lambda: random.randrange(256))

    @classmethod
    def from_new(cls, m: NewMessage) -> Outgoing:
        return cls(
            m.id, m.source, m.destination, m.text, m.data_coding, m.created_at, m.valid_until
        )

    @classmethod
    def from_record(cls, m: MessageRecord) -> Outgoing:
        done = frozenset(p.seqnum for p in m.parts if p.upstream_message_id is not None)
        return cls(
            m.id,
            m.source,
            m.destination,
            m.text,
            m.data_coding,
            m.created_at,
            m.valid_until,
            done_parts=done,
            attempts=m.attempts,
        )


def source_address(source: str) -> tuple[int, int, str]:
    """(ton, npi, addr) for a sender: alphanumeric, international or short code."""
    digits = source.lstrip("+")
    if not digits.isdigit():
        return Ton.ALPHANUMERIC, Npi.UNKNOWN, source[:11]
    if source.startswith("+") or len(digits) > 8:
        return Ton.INTERNATIONAL, Npi.ISDN, digits
    return Ton.UNKNOWN, Npi.UNKNOWN, digits


class Dispatcher:
    def __init__(
        self, store: Store, bus: StatusBus, metrics: Metrics, settings: DispatchSettings
    ) -> None:
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.settings = settings
        self.upstreams: list[Upstream] = []
        self._queue: deque[Outgoing] = deque()
        self._known: set[str] = set()  # ids queued or being sent
        self._takers: deque[asyncio.Future[Outgoing]] = deque()
        self._discarded: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[Any]] = set()  # senders in the middle of a submit
        self._stopping = False

    # --- the queue ----------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._known)

    @property
    def full(self) -> bool:
        return len(self._known) >= self.settings.max_queue

    def enqueue_new(self, message: NewMessage) -> None:
        self._put(Outgoing.from_new(message))

    def enqueue_record(self, record: MessageRecord) -> None:
        self._put(Outgoing.from_record(record))

    def discard(self, message_id: str) -> bool:
        """Take a message out before it is sent (cancel). False when it is not waiting here."""
        for item in self._queue:
            if item.message_id == message_id:
                self._queue.remove(item)
                self._known.discard(message_id)
                self._gauge()
                return True
        return False

    def _put(self, item: Outgoing, *, front: bool = False) -> None:
        if item.message_id in self._known and not front:
            return
        self._known.add(item.message_id)
        while self._takers:
            taker = self._takers.popleft()
            if not taker.done():
                taker.set_result(item)
                self._gauge()
                return
        if front:
            self._queue.appendleft(item)
        else:
            self._queue.append(item)
        self._gauge()

    async def _take(self) -> Outgoing:
        if self._queue:
            return self._queue.popleft()
        taker: asyncio.Future[Outgoing] = asyncio.get_running_loop().create_future()
        self._takers.append(taker)
        try:
            return await taker
        except asyncio.CancelledError:
            if taker.done() and not taker.cancelled():
                self._queue.appendleft(taker.result())  # got one while being cancelled
            raise

    def _done(self, item: Outgoing) -> None:
        self._known.discard(item.message_id)
        self._gauge()

    def _gauge(self) -> None:
        self.metrics.queue_depth.set(len(self._known))

    # --- life -----------------------------------------------------------------------

    async def start(self, upstreams: list[Upstream]) -> None:
        self.upstreams = upstreams
        await self._recover()
        loop = asyncio.get_running_loop()
        for upstream in upstreams:
            for _ in range(upstream.window):
                self._tasks.append(loop.create_task(self._sender(upstream)))
        self._tasks.append(loop.create_task(self._scheduler()))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking work; let the submits in flight get their answers (up to `timeout`)."""
        self._stopping = True
        busy = set(self._busy)
        for task in self._tasks:
            if task not in busy:
                task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        self._tasks.clear()

    async def _recover(self) -> None:
        """Everything accepted or scheduled and due is queued again (after a crash too)."""
        now = utcnow()
        after: str | None = None
        recovered = 0
        while True:
            batch = await self.store.unsent_messages(limit=1000, after_id=after)
            if not batch:
                break
            for record in batch:
                if record.due_at <= now:
                    self.enqueue_record(record)
                    recovered += 1
            after = batch[-1].id
        if recovered:
            log.info("recovered %d unsent messages", recovered)

    async def _scheduler(self) -> None:
        """Queues scheduled messages (and deferred retries) whose time has come."""
        interval = self.settings.poll_interval_ms / 1000
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                # Only scheduled ones: accepted messages come in through
                # enqueue_new, and after a restart through _recover.
                due = await self.store.due_messages(
                    utcnow(), limit=500, statuses=(Status.SCHEDULED,)
                )
            except Exception:
                log.exception("looking for due messages failed")
                continue
            for record in due:
                if record.id not in self._known:
                    self.enqueue_record(record)

    # --- sending ----------------------------------------------------------------------

    async def _sender(self, upstream: Upstream) -> None:
        throttled = 0
        while not self._stopping:
            if not upstream.bound:
                await upstream.wait_bound()
            item = await self._take()
            me = asyncio.current_task()
            assert me is not None
            self._busy.add(me)
            try:
                outcome = await self._send(upstream, item)
            except asyncio.CancelledError:
                self._put(item, front=True)
                raise
            except Exception:
                log.exception("sending %s failed", item.message_id)
                outcome = "error"
                self._retry(item, "internal error")
            finally:
                self._busy.discard(me)
            if outcome == "throttled":
                # Slow this route down, exponentially while it keeps throttling.
                throttled = min(throttled + 1, 6)
                await asyncio.sleep(0.05 * (2**throttled))
            else:
                throttled = 0

    async def _send(self, upstream: Upstream, item: Outgoing) -> str:
        now = utcnow()
        if item.valid_until is not None and now >= item.valid_until:
            await self._finish(item, Status.EXPIRED, "validity passed before sending")
            return "expired"
        parts = smstext.split(item.text, data_coding=item.data_coding, reference=item.reference)
        ton, npi, addr = source_address(item.source)
        price = upstream.prices.price(item.destination)
        if price is None:
            await self._finish(
                item, Status.FAILED, f"no price for this destination on {upstream.name}"
            )
            return "failed"
        inflight = self.metrics.child(self.metrics.upstream_inflight, upstream.name)
        registered_delivery = FINAL_RECEIPT | (
            INTERMEDIATE_RECEIPTS if upstream.settings.intermediate_receipts else 0
        )
        for seqnum, part in enumerate(parts, 1):
            if seqnum in item.done_parts:
                continue
            pdu = SubmitSm(
                source_addr_ton=ton,
                source_addr_npi=npi,
                source_addr=addr,
                dest_addr_ton=Ton.INTERNATIONAL,
                dest_addr_npi=Npi.ISDN,
                destination_addr=item.destination.lstrip("+"),
                esm_class=part.esm_class_flags,
                registered_delivery=registered_delivery,
                data_coding=part.data_coding,
                short_message=part.short_message,
                sar_msg_ref_num=part.sar_msg_ref_num,
                sar_total_segments=part.sar_total_segments,
                sar_segment_seqnum=part.sar_segment_seqnum,
                message_payload=part.message_payload,
            )
            inflight.inc()
            try:
                resp = await upstream.client.submit_sm(pdu)
            except (NotBoundError, ConnectionLostError, ResponseTimeoutError) as exc:
                reason = type(exc).__name__
                self.metrics.child(self.metrics.submit_errors, upstream.name, reason).inc()
                self._retry(item, f"{upstream.name}: {reason}")
                return "retry"
            finally:
                inflight.dec()
            status = resp.command_status
            at = utcnow()
            if status == CommandStatus.ROK:
                changes = await self.store.part_update(
                    PartUpdate(
                        item.message_id,
                        seqnum,
                        Status.SUBMITTED,
                        at,
                        upstream=upstream.name,
                        upstream_message_id=resp.message_id,
                        price=price,
                    )
                )
                if not item.done_parts:  # accepted -> submitted is the first part's ROK
                    self.metrics.child(self.metrics.submit_latency, upstream.name).observe(
                        max(0.0, (at - item.created_at).total_seconds())
                    )
                item.done_parts = item.done_parts | {seqnum}
                self.metrics.child(self.metrics.route_cost, upstream.name).inc(price)
                self.bus.publish(changes)
                continue
            name = _status_name(status)
            self.metrics.child(self.metrics.submit_errors, upstream.name, name).inc()
            if status in TEMPORARY_STATUSES:
                self._retry(item, f"{upstream.name}: {name}")
                return "throttled" if status == CommandStatus.RTHROTTLED else "retry"
            log.info(
                "upstream %s refused a part of %s for %s: %s",
                upstream.name,
                item.message_id,
                mask_number(item.destination),
                name,
            )
            changes = await self.store.part_update(
                PartUpdate(
                    item.message_id,
                    seqnum,
                    Status.REJECTED,
                    at,
                    upstream=upstream.name,
                    error=f"{name} (0x{status:08X})",
                )
            )
            self.bus.publish(changes)
            self._done(item)
            return "rejected"
        self._done(item)
        return "submitted"

    def _retry(self, item: Outgoing, reason: str) -> None:
        attempts = item.attempts + 1
        if attempts >= self.settings.max_attempts:
            task = asyncio.get_running_loop().create_task(
                self._finish(item, Status.FAILED, f"{attempts} attempts failed, last: {reason}")
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        again = replace(item, attempts=attempts)
        delay = self.settings.retry_backoff_ms / 1000 * (2 ** min(attempts - 1, 6))
        if any(u.bound for u in self.upstreams):
            # Another bound upstream may take it at once; a short pause keeps a
            # refusing route from spinning on the same message.
            delay = min(delay, 0.01 * attempts)
        if delay <= 0:
            self._put(again, front=True)
        else:
            asyncio.get_running_loop().call_later(delay, lambda: self._put(again, front=True))

    async def _finish(self, item: Outgoing, status: Status, error: str) -> None:
        try:
            change = await self.store.write(
                TransitionMessage(item.message_id, status, utcnow(), {"reason": error}, error)
            )
        finally:
            self._done(item)
        if change is not None:
            self.bus.publish([change])


def _status_name(status: int) -> str:
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"0x{status:08X}"
