"""The dispatcher: routes each due message and keeps every upstream's window full.

Messages come in three ways: `enqueue_new` right after the accept commit, the
scheduler finding scheduled ones whose time has come, and recovery at start
(everything accepted or scheduled in the store).

Each message is routed by the selector (`gateway.routes`, over `routing/`):
the account's policy (cheapest, best_delivery, balanced) and max_price give an
ordered list of candidates, and the message waits in the queue of the first.
Every upstream runs `window` sender loops while it is bound, each taking the
next message of its own queue: a fixed set of loops, not a task per message.

What happens to a submit_sm (SMPP 3.4 section 5.1.3, smpp-facts):
- ROK: the part is `submitted` with the upstream's message id, committed before
  the loop moves on, so the receipt can be matched;
- a temporary status (RTHROTTLED, RMSGQFUL, RSYSERR, RSUBMITFAIL), a timeout,
  a lost connection: an attempt event is written and the message moves on to
  the next candidate at once; after `routing.max_attempts` candidates it backs
  off and is routed anew; after `dispatch.max_attempts` attempts in all it
  fails. RTHROTTLED also keeps new messages off that route for a moment and
  makes its loop pause, so a throttling route is slowed, not abandoned;
- any other status: permanent, the message ends `rejected` with the code.

An upstream that is unbound or whose circuit is open gets no new messages,
and what waits in its queue moves to other candidates at once. A message
with no eligible route now (all unbound, saturated or throttled) waits and is
routed again as soon as something changes; one with no route at all (no
price, rules) fails with the reasons.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.config import DispatchSettings, RoutingSettings
from gateway.events import StatusBus
from gateway.lifecycle import Status
from gateway.logs import mask_number
from gateway.metrics import Metrics, status_label
from gateway.routes import RouteTable, SubmitOutcome
from gateway.store import (
    Account,
    MessageRecord,
    NewMessage,
    PartUpdate,
    RecordAttempt,
    StatusChange,
    Store,
    TransitionMessage,
    log_failure,
    utcnow,
)
from gateway.upstreams import Upstream
from smpp import CommandStatus, Npi, SubmitSm, Ton
from smpp import text as smstext
from smpp.aio import ConnectionLostError, NotBoundError, ResponseTimeoutError, submit_sm_resp
from smpp.constants import TEMPORARY_STATUSES

log = logging.getLogger(__name__)

# registered_delivery we always ask of upstreams: receipts are how we learn what
# happened, whatever the submitter asked for (SMPP 3.4 section 5.2.17: 0x01 a
# final receipt, 0x10 intermediate notifications too).
FINAL_RECEIPT, INTERMEDIATE_RECEIPTS = 0x01, 0x10

# How often messages waiting for a route, and queues of upstreams that went
# away, are looked at again (besides every bind change).
REROUTE_INTERVAL = 0.05


@dataclass(slots=True)
class Outgoing:
    """A message on its way out: what a sender loop needs, and how far it got."""

    message_id: str
    account_id: int
    source: str
    destination: str
    text: str
    data_coding: int
    created_at: datetime
    valid_until: datetime | None
    done_parts: frozenset[int] = frozenset()
    attempts: int = 0
    reference: int = field(default_factory=lambda: random.randrange(256))
    # The routes still to try, best first, and why the first was chosen.
    candidates: list[str] = field(default_factory=list)
    tried: int = 0  # candidates tried since the last selection
    choice: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_new(cls, m: NewMessage) -> Outgoing:
        return cls(
            m.id,
            m.account_id,
            m.source,
            m.destination,
            m.text,
            m.data_coding,
            m.created_at,
            m.valid_until,
        )

    @classmethod
    def from_record(cls, m: MessageRecord) -> Outgoing:
        done = frozenset(p.seqnum for p in m.parts if p.upstream_message_id is not None)
        return cls(
            m.id,
            m.account_id,
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


class _Lane:
    """One upstream's queue and the sender loops waiting on it."""

    __slots__ = ("queue", "takers", "upstream")

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.queue: deque[Outgoing] = deque()
        self.takers: deque[asyncio.Future[Outgoing]] = deque()


class Dispatcher:
    def __init__(
        self,
        store: Store,
        bus: StatusBus,
        metrics: Metrics,
        settings: DispatchSettings,
        routes: RouteTable,
        routing: RoutingSettings | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.settings = settings
        self.routes = routes
        self.routing = routing or RoutingSettings()
        self.upstreams: list[Upstream] = []
        self._lanes: dict[str, _Lane] = {}
        self._waiting: deque[Outgoing] = deque()  # no eligible route right now
        self._known: set[str] = set()  # ids queued, waiting or being sent
        self._accounts: dict[int, tuple[str, float | None]] = {}  # id -> (policy, max_price)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._busy: set[asyncio.Task[Any]] = set()  # senders in the middle of a submit
        self._stopping = False
        self._loop: Any = None  # asyncio.AbstractEventLoop, set by start()

    # --- the queue ----------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._known)

    @property
    def full(self) -> bool:
        return len(self._known) >= self.settings.max_queue

    def note_account(self, account: Account) -> None:
        self._accounts[account.id] = (account.routing, account.max_price)

    def enqueue_new(self, message: NewMessage, account: Account | None = None) -> None:
        if account is not None:
            self.note_account(account)
        self._put(Outgoing.from_new(message))

    def enqueue_record(self, record: MessageRecord) -> None:
        self._put(Outgoing.from_record(record))

    def discard(self, message_id: str) -> bool:
        """Take a message out before it is sent (cancel). False when it is not waiting here."""
        for queue in [*(lane.queue for lane in self._lanes.values()), self._waiting]:
            for item in queue:
                if item.message_id == message_id:
                    queue.remove(item)
                    self._known.discard(message_id)
                    self._gauge()
                    return True
        return False

    def _put(self, item: Outgoing, *, front: bool = False) -> None:
        if item.message_id in self._known and not front:
            return
        self._known.add(item.message_id)
        self._gauge()
        self._route(item, front=front)

    def _route(self, item: Outgoing, *, front: bool = False, from_waiting: bool = False) -> bool:
        """Hand the message to its first candidate that may take it, choosing anew if needed.

        False when no route may take it now: it waits (at the end of the
        waiting line, or stays at its head when it came from there).
        """
        while item.candidates and item.candidates[0] not in self._lanes:
            item.candidates.pop(0)
        if not item.candidates:
            if item.tried >= self.routing.max_attempts and item.choice:
                self._back_off(item)
                return True
            if self._waiting and self._nothing_may_go():
                # A selection would only say wait (the burst that filled every
                # window): a third of the selections under load were these.
                if not from_waiting:
                    self._waiting.append(item)
                return False
            outcome = self._select(item)
            if outcome == "wait":
                if not from_waiting:
                    self._waiting.append(item)
                return False
            if outcome == "failed":
                return True
        lane = self._lanes[item.candidates[0]]
        while lane.takers:
            taker = lane.takers.popleft()
            if not taker.done():
                taker.set_result(item)
                return True
        if front:
            lane.queue.appendleft(item)
        else:
            lane.queue.append(item)
        return True

    def _nothing_may_go(self) -> bool:
        """Every upstream is blocked now: full window, unbound, throttled or circuit open."""
        blocked = self.routes.blocked
        return bool(self._lanes) and all(blocked(name) for name in self._lanes)

    def _drain_waiting(self, limit: int | None = None) -> None:
        """Route waiting messages, oldest first, until one still cannot go (or `limit`).

        Called when something may have changed (a submit answered, a bind, a
        timer): one selection per event, not one per waiting message per tick.
        """
        routed = 0
        while self._waiting and (limit is None or routed < limit):
            if not self._route(self._waiting[0], from_waiting=True):
                return
            self._waiting.popleft()
            routed += 1

    def _select(self, item: Outgoing) -> str:
        policy, max_price = self._accounts.get(item.account_id, ("balanced", None))
        try:
            selection = self.routes.select(
                item.destination, policy=policy, sender=item.source, max_price=max_price
            )
        except ValueError as exc:  # not a number the selector can place
            self._finish_soon(item, Status.FAILED, f"no route: {exc}")
            return "failed"
        routes = list(selection.routes)
        if not routes:
            if selection.retry_later:
                return "wait"
            reasons = ", ".join(f"{e.route}: {e.reason}" for e in selection.excluded)
            self._finish_soon(item, Status.FAILED, f"no route ({reasons or 'no upstream'})")
            return "failed"
        first = selection.first
        assert first is not None
        item.candidates = routes[: self.routing.max_attempts]
        item.tried = 0
        item.choice = {
            "policy": str(selection.policy),
            "score": round(first.score, 6),
            "reason": first.reason,
            "explored": first.explored,
        }
        self.metrics.child(
            self.metrics.route_selections,
            first.route,
            str(selection.policy),
            "yes" if first.explored else "no",
        ).inc()
        return "ok"

    def _back_off(self, item: Outgoing) -> None:
        """Every candidate of this round failed: wait, then route it anew."""
        item.candidates = []
        item.tried = 0
        item.choice = {}
        delay = self.settings.retry_backoff_ms / 1000 * (2 ** min(item.attempts - 1, 6))
        loop = asyncio.get_running_loop()
        loop.call_later(max(delay, 0.001), lambda: self._route(item, front=True))

    def _reroute_blocked(self) -> None:
        """Move what waits for an upstream that went away; retry the waiting ones."""
        for name, lane in self._lanes.items():
            # Saturation is not going away: a full window drains by itself, and
            # the queue in front of it is where its messages should wait.
            if lane.queue and self.routes.gone(name):
                moving = list(lane.queue)
                lane.queue.clear()
                for item in moving:
                    if item.candidates[:1] == [name]:
                        item.candidates.pop(0)
                    self._route(item, front=True)
        self._drain_waiting()

    async def _take(self, lane: _Lane) -> Outgoing:
        if lane.queue:
            return lane.queue.popleft()
        taker: asyncio.Future[Outgoing] = self._loop.create_future()
        lane.takers.append(taker)
        try:
            return await taker
        except asyncio.CancelledError:
            if taker.done() and not taker.cancelled():
                lane.queue.appendleft(taker.result())  # got one while being cancelled
            raise

    def _done(self, item: Outgoing) -> None:
        self._known.discard(item.message_id)
        self._gauge()

    def _gauge(self) -> None:
        self.metrics.queue_depth.set(len(self._known))

    # --- life -----------------------------------------------------------------------

    async def start(self, upstreams: list[Upstream]) -> None:
        self._loop = asyncio.get_running_loop()  # kept: looked up per message otherwise
        self.upstreams = upstreams
        self._lanes = {u.name: _Lane(u) for u in upstreams}
        for account in await self.store.list_accounts():
            self.note_account(account)
        for upstream in upstreams:
            upstream.on_bound_change = self._bound_change
            upstream.on_receipt = self.routes.receipt
            self.routes.bound(upstream.name, upstream.bound_sessions, upstream.settings.window)
        await self._recover()
        loop = asyncio.get_running_loop()
        for upstream in upstreams:
            for _ in range(upstream.window):
                self._tasks.append(loop.create_task(self._sender(self._lanes[upstream.name])))
        self._tasks.append(loop.create_task(self._scheduler()))
        self._tasks.append(loop.create_task(self._rerouter()))

    def _bound_change(self, upstream: Upstream, bound: bool) -> None:
        self.routes.bound(upstream.name, upstream.bound_sessions, upstream.settings.window)
        self._reroute_blocked()

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
        """Queues scheduled messages whose time has come."""
        interval = self.settings.poll_interval_ms / 1000
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                # Only scheduled ones: accepted messages come in through
                # enqueue_new, and after a restart through _recover.
                due = await self.store.due_messages(
                    utcnow(), limit=500, statuses=(Status.SCHEDULED,)
                )
            except Exception as exc:
                log_failure(log, exc, "looking for due messages failed")
                continue
            for record in due:
                if record.id not in self._known:
                    self.enqueue_record(record)

    async def _rerouter(self) -> None:
        while not self._stopping:
            await asyncio.sleep(REROUTE_INTERVAL)
            self._reroute_blocked()

    # --- sending ----------------------------------------------------------------------

    async def _sender(self, lane: _Lane) -> None:
        upstream = lane.upstream
        throttled = 0
        me = asyncio.current_task()
        assert me is not None
        while not self._stopping:
            if not upstream.bound:
                await upstream.wait_bound()
            item = await self._take(lane)
            self._busy.add(me)
            try:
                outcome = await self._send(upstream, item)
            except asyncio.CancelledError:
                self._route(item, front=True)
                raise
            except Exception:
                log.exception("sending %s failed", item.message_id)
                outcome = "error"
                self._retry(upstream, item, "internal error")
            finally:
                self._busy.discard(me)
            if self._waiting:
                self._drain_waiting(limit=1)  # a window slot was freed
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
        price = self.routes.price(upstream.name, item.destination)
        if price is None:  # the selector should not have chosen it; prices reloaded since?
            self._retry(upstream, item, "no price on this route")
            return "retry"
        parts = smstext.split(item.text, data_coding=item.data_coding, reference=item.reference)
        ton, npi, addr = source_address(item.source)
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
            self.routes.submitting(upstream.name)
            try:
                session, client = upstream.pick()
                # Sent at once when the window has a slot (the common case): one
                # Future to wait on instead of a chain of coroutines.
                pending = client.submit_sm_nowait(pdu)
                if pending is None:
                    resp = await client.submit_sm(pdu)
                else:
                    resp = submit_sm_resp(await pending)
            except (NotBoundError, ConnectionLostError, ResponseTimeoutError) as exc:
                reason = type(exc).__name__
                if isinstance(exc, ResponseTimeoutError):
                    self.routes.answered(upstream.name, SubmitOutcome.TIMEOUT)
                elif isinstance(exc, ConnectionLostError):
                    self.routes.lost(upstream.name, (session, client.binds))
                else:
                    self.routes.not_sent(upstream.name)
                self.metrics.child(self.metrics.submit_errors, upstream.name, reason).inc()
                self._retry(upstream, item, reason)
                return "retry"
            finally:
                inflight.dec()
            status = resp.command_status
            at = utcnow()
            if status == CommandStatus.ROK:
                self.routes.answered(upstream.name, SubmitOutcome.OK)
                self.routes.submitted(upstream.name, resp.message_id, item.destination)
                detail: dict[str, Any] = {"price": price}
                if not item.done_parts:  # accepted -> submitted is the first part's ROK
                    detail.update(item.choice)
                    self.metrics.child(self.metrics.submit_latency, upstream.name).observe(
                        max(0.0, (at - item.created_at).total_seconds())
                    )
                # Not awaited: the window slot is free again, and the next message
                # need not wait for this commit (a receipt that comes first is held
                # until it is there). Its changes are reported once committed.
                submitted = PartUpdate(
                    item.message_id,
                    seqnum,
                    Status.SUBMITTED,
                    at,
                    upstream=upstream.name,
                    upstream_message_id=resp.message_id,
                    price=price,
                    detail=detail,
                )
                self.store.write_nowait(submitted).add_done_callback(
                    functools.partial(self._submitted_committed, submitted)
                )
                item.done_parts = item.done_parts | {seqnum}
                self.metrics.child(self.metrics.route_cost, upstream.name).inc(price)
                continue
            name = _status_name(status)
            # Spelled as in smsgw_smpp_pdus_total (ESME_RTHROTTLED), and bounded:
            # an upstream's garbage status must not grow the label set.
            self.metrics.child(
                self.metrics.submit_errors, upstream.name, status_label(status)
            ).inc()
            if status in TEMPORARY_STATUSES:
                self.routes.answered(
                    upstream.name,
                    SubmitOutcome.THROTTLED
                    if status == CommandStatus.RTHROTTLED
                    else SubmitOutcome.TEMPORARY,
                )
                self._retry(upstream, item, name)
                return "throttled" if status == CommandStatus.RTHROTTLED else "retry"
            self.routes.answered(upstream.name, SubmitOutcome.REJECTED)
            log.info(
                "upstream %s refused a part of %s for %s: %s",
                upstream.name,
                item.message_id,
                mask_number(item.destination),
                name,
            )
            changes = await self.store.write_until_committed(
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

    def _submitted_committed(
        self, update: PartUpdate, written: asyncio.Future[tuple[StatusChange, ...]]
    ) -> None:
        if written.cancelled():
            return
        exc = written.exception()
        if exc is not None:
            # The part has left: until this is recorded the store holds the message
            # as unsent (its receipts wait unmatched), and a restart would send it
            # again. So it is tried again while the database is unavailable.
            self._spawn(self._record_submitted(update, exc))
            return
        self.bus.publish(written.result())

    async def _record_submitted(self, update: PartUpdate, failure: BaseException) -> None:
        try:
            changes = await self.store.write_until_committed(update, failure)
        except Exception as exc:
            # Not for want of a database (or the store is closing): the next start
            # sends the message again.
            log.error("recording a submit_sm_resp failed: %s: %s", type(exc).__name__, exc)
            return
        self.bus.publish(changes)

    def _retry(self, upstream: Upstream, item: Outgoing, reason: str) -> None:
        """A temporary failure on `upstream`: note the attempt, try the next candidate."""
        item.attempts += 1
        item.tried += 1
        self._record_attempt(item, upstream.name, reason)
        if item.attempts >= self.settings.max_attempts:
            self._finish_soon(
                item,
                Status.FAILED,
                f"{item.attempts} attempts failed, last: {upstream.name}: {reason}",
            )
            return
        if item.candidates[:1] == [upstream.name]:
            item.candidates.pop(0)
        self._route(item, front=True)

    def _record_attempt(self, item: Outgoing, route: str, reason: str) -> None:
        detail = {"attempt": item.attempts, "route": route, "outcome": reason}
        self._spawn(
            self.store.write_until_committed(RecordAttempt(item.message_id, utcnow(), detail))
        )

    def _finish_soon(self, item: Outgoing, status: Status, error: str) -> None:
        self._spawn(self._finish(item, status, error))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(self, item: Outgoing, status: Status, error: str) -> None:
        try:
            change = await self.store.write_until_committed(
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
