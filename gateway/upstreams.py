"""The upstream SMSCs: one SmppClient each, and the receipts they send back.

An `Upstream` binds as an ESME to an aggregator (or to the in-process
simulator), keeps its window and tps, and turns incoming deliver_sm receipts
into `ApplyReceipt` writes. The deliver_sm_resp goes back only after the
receipt is committed: an upstream that gets no answer resends, so a receipt
is never lost between its arrival and the commit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from gateway.config import UpstreamSettings
from gateway.events import StatusBus
from gateway.futures import pass_failure
from gateway.lifecycle import FINAL, Status
from gateway.metrics import Metrics
from gateway.store import ApplyReceipt, ReceiptResult, Store, is_transient, utcnow
from smpp import CommandStatus, DeliverSm, MessageState
from smpp.aio import NotBoundError, SmppClient
from smpp.constants import ESM_CLASS_TYPE_MASK, EsmClass
from smpp.receipt import ReceiptError, parse_receipt, stat_to_state

log = logging.getLogger(__name__)

# message_state of a receipt -> the part's status (interface.md, "Message statuses").
RECEIPT_STATUS: dict[int, Status] = {
    MessageState.ENROUTE: Status.ENROUTE,
    MessageState.ACCEPTED: Status.ENROUTE,
    MessageState.SCHEDULED: Status.ENROUTE,
    MessageState.DELIVERED: Status.DELIVERED,
    MessageState.EXPIRED: Status.EXPIRED,
    MessageState.DELETED: Status.UNDELIVERED,
    MessageState.UNDELIVERABLE: Status.UNDELIVERED,
    MessageState.UNKNOWN: Status.UNDELIVERED,
    MessageState.REJECTED: Status.REJECTED,
    MessageState.SKIPPED: Status.UNDELIVERED,
}

_RECEIPT_TYPES = (EsmClass.DELIVERY_RECEIPT, EsmClass.INTERMEDIATE_NOTIFICATION)


class Upstream:
    def __init__(
        self,
        settings: UpstreamSettings,
        store: Store,
        bus: StatusBus,
        metrics: Metrics,
        *,
        host: str | None = None,
        port: int | None = None,
        response_timeout: float = 10.0,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.sessions = settings.sessions
        self.window = settings.window * settings.sessions  # submit_sm in flight, all sessions
        # Set by the dispatcher: told of bind changes and of final receipts
        # (upstream, upstream message id, delivered), which the route selector learns from.
        self.on_bound_change: Callable[[Upstream, bool], None] | None = None
        self.on_receipt: Callable[..., None] | None = None
        # Set by the app: takes a mobile-originated deliver_sm, returns the status to answer.
        self.on_mo: Callable[[str, DeliverSm], Awaitable[int]] | None = None
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.clients = [
            SmppClient(
                host if host is not None else settings.host,
                port if port is not None else settings.port,
                system_id=settings.system_id,
                password=settings.password,
                system_type=settings.system_type,
                bind=settings.bind,
                window=settings.window,
                tps=settings.tps / settings.sessions,
                tps_burst=max(1, settings.window),
                response_timeout=response_timeout,
                on_deliver_sm=self._on_deliver_sm,
                on_pdu=metrics.pdu_observer("upstream"),
                on_state_change=self._on_state_change,
            )
            for _ in range(settings.sessions)
        ]
        self._next = 0
        self.metrics.child(self.metrics.upstream_bound, self.name).set(0)
        self.metrics.child(self.metrics.upstream_inflight, self.name).set(0)
        self._bound_event = asyncio.Event()

    @property
    def bound(self) -> bool:
        return any(c.bound for c in self.clients)

    @property
    def bound_sessions(self) -> int:
        return sum(1 for c in self.clients if c.bound)

    def pick(self) -> tuple[int, SmppClient]:
        """The next bound session, round robin: (its index, its client)."""
        for _ in range(len(self.clients)):
            index = self._next
            self._next = (index + 1) % len(self.clients)
            client = self.clients[index]
            if client.bound:
                return index, client
        raise NotBoundError(f"no session to {self.name} is bound")

    async def start(self) -> None:
        for client in self.clients:
            await client.start()

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.clients))

    async def wait_bound(self) -> None:
        while not self.bound:
            self._bound_event.clear()
            await self._bound_event.wait()

    def _on_state_change(self, bound: bool) -> None:
        sessions = self.bound_sessions
        self.metrics.child(self.metrics.upstream_bound, self.name).set(sessions)
        if self.on_bound_change is not None:
            self.on_bound_change(self, sessions > 0)
        if bound:
            log.info("upstream %s bound (%d of %d sessions)", self.name, sessions, self.sessions)
            self._bound_event.set()
        else:
            log.info(
                "upstream %s lost a session (%d of %d bound)", self.name, sessions, self.sessions
            )

    def _on_deliver_sm(self, pdu: DeliverSm) -> Awaitable[int | None]:
        """A receipt is answered from a Future, without a task (the client's fast
        path): ROK once it is committed, so the SMSC never drops one we lost."""
        if pdu.esm_class & ESM_CLASS_TYPE_MASK not in _RECEIPT_TYPES:
            return self._on_mo_deliver_sm(pdu)
        receipt = self._read_receipt(pdu)
        if receipt is None:
            self.metrics.child(self.metrics.receipts, self.name, "unreadable").inc()
            # Answering an error would make the SMSC resend something we can
            # never read; take it and count it.
            taken: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
            taken.set_result(CommandStatus.ROK)
            return taken
        upstream_id, status, error, detail, at = receipt
        applied = self.store.write_nowait(
            ApplyReceipt(
                self.name, upstream_id, status, at, error=error, received_at=utcnow(), detail=detail
            )
        )
        answer: asyncio.Future[int | None] = applied.get_loop().create_future()
        applied.add_done_callback(
            functools.partial(self._receipt_applied, answer, upstream_id, status)
        )
        return answer

    def _receipt_applied(
        self,
        answer: asyncio.Future[int | None],
        upstream_id: str,
        status: Status,
        applied: asyncio.Future[ReceiptResult],
    ) -> None:
        if not applied.cancelled() and is_transient(exc := applied.exception()):
            # The database is away: a temporary error, and the SMSC sends it again.
            log.warning("upstream %s: receipt not stored (%s)", self.name, type(exc).__name__)
            if not answer.done():
                answer.set_result(CommandStatus.RX_T_APPN)
            return
        if pass_failure(applied, answer):  # a failed commit: RX_T_APPN, the SMSC resends
            return
        result = applied.result()
        self.metrics.child(
            self.metrics.receipts, self.name, "matched" if result.matched else "held"
        ).inc()
        self.bus.publish(result.changes)
        if self.on_receipt is not None and status in FINAL:
            self.on_receipt(self.name, upstream_id, delivered=status is Status.DELIVERED)
        if not answer.done():
            answer.set_result(CommandStatus.ROK)

    async def _on_mo_deliver_sm(self, pdu: DeliverSm) -> int | None:
        if self.on_mo is not None:
            return await self.on_mo(self.name, pdu)
        log.info("upstream %s sent a mobile-originated message; nothing takes MO", self.name)
        return CommandStatus.ROK

    def _read_receipt(
        self, pdu: DeliverSm
    ) -> tuple[str, Status, str | None, dict[str, object], datetime] | None:
        """(upstream id, status, error, event detail, time) from the TLVs, else the text.

        smpp-facts: prefer the TLVs over the text when both are present.
        """
        parsed = None
        if pdu.receipted_message_id and pdu.message_state == MessageState.DELIVERED:
            pass  # the TLVs say all there is to say; the text would add nothing
        else:
            try:
                parsed = parse_receipt(pdu.short_message or pdu.message_payload or b"")
            except ReceiptError:
                if pdu.receipted_message_id is None or pdu.message_state is None:
                    log.warning("upstream %s sent a receipt that cannot be read", self.name)
                    return None
        upstream_id = pdu.receipted_message_id or (parsed.id if parsed else "")
        state = pdu.message_state
        if state is None and parsed is not None:
            state = stat_to_state(parsed.stat)
        if not upstream_id or state is None:
            return None
        status = RECEIPT_STATUS.get(state, Status.UNDELIVERED)
        error = None
        detail: dict[str, object] = {"upstream_message_id": upstream_id}
        if parsed is not None:
            detail["stat"] = parsed.stat
            if parsed.err and parsed.err.strip("0"):
                error = f"err:{parsed.err}"
        if pdu.network_error_code:
            detail["network_error_code"] = pdu.network_error_code.hex()
            if status not in (Status.DELIVERED, Status.ENROUTE):
                error = f"network_error:{pdu.network_error_code.hex()}"
        if parsed is not None and parsed.done_date is not None:
            detail["done_date"] = parsed.done_date.isoformat()
        # Our clock, not the receipt's "done date": that one has minute precision
        # and the SMSC's clock, and would put delivered_at before left_infrastructure_at.
        return upstream_id, status, error, detail, utcnow()
