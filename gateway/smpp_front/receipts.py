"""Receipts to ESMEs: the smpp_receipts outbox, sent as deliver_sm.

The store writes a row into smpp_receipts in the same transaction as each
status change an ESME asked to hear about (registered_delivery), so receipts
survive a restart and wait while the account has no receiver bound.
`ReceiptSender` drains that outbox over the account's receiver and
transceiver sessions whenever the status bus reports a change for an account
with such a session, or such a session binds.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from gateway.config import SmppSettings
from gateway.dispatch import source_address
from gateway.lifecycle import FINAL, Status
from gateway.store import (
    RECEIPT_TEXT_CHARS,
    MarkSmppReceiptsSent,
    MessageRecord,
    ReceiptMessage,
    SmppReceipt,
    StatusChange,
    Store,
    log_failure,
    utcnow,
)
from smpp import text as smstext
from smpp.aio import (
    ConnectionLostError,
    NotBoundError,
    ResponseTimeoutError,
    ServerSession,
    deliver_sm_resp,
)
from smpp.constants import CommandStatus, DataCoding, EsmClass, MessageState, Npi, Ton
from smpp.pdu import DeliverSm
from smpp.receipt import Receipt, format_receipt, state_to_stat
from smpp.session import InvalidState

__all__ = ["ReceiptSender", "message_state", "receipt_pdu"]

log = logging.getLogger("gateway.smpp_front")

DRAIN_GATHER_S = 0.01


# ----------------------------------------------------------------- status mapping

# query_sm message_state (SMPP 3.4 section 5.2.28) for each status of the contract.
# Everything still on its way is ENROUTE ("in enroute state", the state 3.4 gives a
# message the SMSC holds); ACCEPTED (6) means "read on behalf of the subscriber by
# customer service" in 3.4, not what ours means. failed has no 3.4 state of its own:
# it will never arrive, so UNDELIVERABLE.
_MESSAGE_STATE: dict[Status, MessageState] = {
    Status.ACCEPTED: MessageState.ENROUTE,
    Status.SCHEDULED: MessageState.ENROUTE,
    Status.SUBMITTED: MessageState.ENROUTE,
    Status.ENROUTE: MessageState.ENROUTE,
    Status.DELIVERED: MessageState.DELIVERED,
    Status.UNDELIVERED: MessageState.UNDELIVERABLE,
    Status.EXPIRED: MessageState.EXPIRED,
    Status.REJECTED: MessageState.REJECTED,
    Status.FAILED: MessageState.UNDELIVERABLE,
    Status.CANCELED: MessageState.DELETED,
}


def message_state(status: Status) -> MessageState:
    """The SMPP message_state that query_sm and receipts report for a status."""
    return _MESSAGE_STATE[status]


class _Outcome(enum.Enum):
    SENT = enum.auto()  # deliver_sm_resp ROK: done
    REFUSED = enum.auto()  # answered with an error or not at all: retry later
    NO_SESSION = enum.auto()  # nobody to send it to: wait for a bind


# RX_P_APPN (section 5.1.3): the ESME says it will never take this one. Resending it
# would only repeat the answer, so it counts as done.
_DONE_STATUSES = frozenset({CommandStatus.ROK, CommandStatus.RX_P_APPN})

# Characters that are the same octet in GSM 03.38 and ASCII, so that the receipt
# text reads the same whichever of the two the ESME assumes for data_coding 0.
_RECEIPT_SAFE = frozenset(
    c for c in map(chr, range(0x20, 0x7F)) if smstext.encode_gsm7(c, "replace") == c.encode()
)

# The ASCII outside _RECEIPT_SAFE, for str.translate; the rest of Unicode becomes
# "?" when the snippet is encoded as ASCII with errors="replace".
_ASCII_UNSAFE = {c: "?" for c in range(0x80) if chr(c) not in _RECEIPT_SAFE}
_ERR_FIELD = re.compile(r"err:([0-9A-Za-z]{1,3})")
_STATUS_IN_ERROR = re.compile(r"\(0x([0-9A-Fa-f]{8})\)")


def _receipt_err(error: str | None) -> str:
    """The receipt's 3-character err: the upstream's own err, a submit_sm_resp status in
    decimal, else 000."""
    if not error:
        return "000"
    match = _ERR_FIELD.fullmatch(error)
    if match:
        return match.group(1)
    match = _STATUS_IN_ERROR.search(error)
    if match and int(match.group(1), 16) < 1000:
        return f"{int(match.group(1), 16):03d}"
    return "000"


def receipt_pdu(receipt: SmppReceipt, message: MessageRecord | ReceiptMessage) -> DeliverSm:
    """The deliver_sm for one outbox row (SMPP 3.4 section 4.6.1, Appendix B).

    It comes from the handset's side: source_addr is the message's destination and
    destination_addr its sender."""
    state = message_state(receipt.status)
    intermediate = receipt.status not in FINAL
    snippet = (
        message.text[:RECEIPT_TEXT_CHARS]
        .translate(_ASCII_UNSAFE)
        .encode("ascii", "replace")
        .decode("ascii")
    )
    text = format_receipt(
        Receipt(
            id=message.id,
            stat=state_to_stat(state),
            sub=1,
            dlvrd=1 if receipt.status is Status.DELIVERED else 0,
            submit_date=message.created_at,
            done_date=receipt.at,
            err=_receipt_err(receipt.error),
            text=snippet,
        )
    )
    dest_ton, dest_npi, dest_addr = source_address(message.source)
    return DeliverSm(
        source_addr_ton=_TON_INTERNATIONAL,
        source_addr_npi=_NPI_ISDN,
        source_addr=message.destination.lstrip("+"),
        dest_addr_ton=dest_ton,
        dest_addr_npi=dest_npi,
        destination_addr=dest_addr,
        esm_class=_INTERMEDIATE if intermediate else _RECEIPT,
        data_coding=_DEFAULT_CODING,
        short_message=smstext.encode_gsm7(text, "replace"),
        receipted_message_id=message.id,
        message_state=state,
    )


# Plain ints for the fields of every receipt (an enum member lookup is a call).
_TON_INTERNATIONAL = int(Ton.INTERNATIONAL)
_NPI_ISDN = int(Npi.ISDN)
_INTERMEDIATE = int(EsmClass.INTERMEDIATE_NOTIFICATION)
_RECEIPT = int(EsmClass.DELIVERY_RECEIPT)
_DEFAULT_CODING = int(DataCoding.DEFAULT)


@dataclass(slots=True)
class _Account:
    """The receiving sessions of one account, in bind order, and the next to use."""

    sessions: list[ServerSession]
    next_index: int = 0

    def pick(self) -> ServerSession | None:
        bound = [s for s in self.sessions if s.bound]
        if not bound:
            return None
        session = bound[self.next_index % len(bound)]
        self.next_index += 1
        return session


class ReceiptSender:
    """Sends the smpp_receipts outbox to the ESMEs' receiver and transceiver sessions.

    `on_changes` (a StatusBus subscriber) and `add_session` only note the account as
    dirty and wake one supervising task; it drains each dirty account in a task of
    its own (at most one per account, so one slow ESME does not hold up another's
    receipts, and no receipt is in flight twice). A drain pages through the
    account's pending receipts oldest first (those older than receipt_ttl_s have
    expired and are left out), sends each batch as deliver_sm, as many at once as
    the sessions' windows allow, round-robin across the account's sessions, and
    marks what the ESME acknowledged in one store write per batch. A receipt the
    ESME refused or did not answer is retried after `retry_s`; one that found no
    session waits for the next bind.
    """

    def __init__(
        self,
        store: Store,
        settings: SmppSettings,
        *,
        window: int = 10,
        batch_size: int = 500,
        retry_s: float = 30.0,
        # None: the session's own response_timeout bounds each deliver_sm, and a
        # second timer per receipt (a heap entry made and cancelled) buys nothing.
        send_timeout: float | None = None,
    ) -> None:
        self.store = store
        self.ttl = timedelta(seconds=settings.receipt_ttl_s)
        self.window = max(1, window)
        self.batch_size = batch_size
        self.retry_s = retry_s
        self.send_timeout = send_timeout
        self._accounts: dict[int, _Account] = {}
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._drains: dict[int, asyncio.Task[None]] = {}
        self._in_flight: set[int] = set()
        self._not_before: dict[int, float] = {}  # receipt id -> loop time of its next try
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False
        self.sent = 0
        """deliver_sm receipts acknowledged since start."""

    # --- lifecycle

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="smpp-receipt-sender"
            )

    async def close(self, timeout: float = 5.0) -> None:
        """Let running drains finish within `timeout` (the sessions are gone by now, so
        that is their last store write), then stop."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        drains = list(self._drains.values())
        if drains:
            await asyncio.wait(drains, timeout=timeout)
            for task in drains:
                task.cancel()
            await asyncio.gather(*drains, return_exceptions=True)

    # --- what wakes it

    def on_changes(self, changes: Sequence[StatusChange]) -> None:
        """StatusBus subscriber: runs synchronously in the publisher, so only notes."""
        if self._closed:
            return
        woken = False
        for change in changes:
            # Only enroute and final statuses ever put a receipt in the outbox.
            if change.account_id in self._accounts and (
                change.status is Status.ENROUTE or change.status in FINAL
            ):
                self._dirty.add(change.account_id)
                woken = True
        if woken:
            self._wake.set()

    def add_session(self, account_id: int, session: ServerSession) -> None:
        entry = self._accounts.get(account_id)
        if entry is None:
            self._accounts[account_id] = _Account([session])
        elif session not in entry.sessions:
            entry.sessions.append(session)
        # Receipts kept while nobody was bound go out now.
        self.mark_dirty(account_id)

    def remove_session(self, account_id: int, session: ServerSession) -> None:
        entry = self._accounts.get(account_id)
        if entry is None:
            return
        if session in entry.sessions:
            entry.sessions.remove(session)
        if not entry.sessions:
            del self._accounts[account_id]

    def mark_dirty(self, account_id: int) -> None:
        if self._closed or account_id not in self._accounts:
            return
        self._dirty.add(account_id)
        self._wake.set()

    def _retry_later(self, account_id: int) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self.mark_dirty(account_id)

        timer = loop.call_later(self.retry_s, fire)
        self._timers.add(timer)

    # --- the work

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for account_id in list(self._dirty):
                if account_id in self._drains:
                    continue  # started again when the running drain ends
                self._dirty.discard(account_id)
                task = asyncio.get_running_loop().create_task(
                    self._drain(account_id), name=f"smpp-receipts-{account_id}"
                )
                self._drains[account_id] = task
                task.add_done_callback(functools.partial(self._drained, account_id))

    def _drained(self, account_id: int, task: asyncio.Task[None]) -> None:
        self._drains.pop(account_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log_failure(log, exc, "receipts for account %d failed; retrying later", account_id)
            self._retry_later(account_id)
        if account_id in self._dirty and not self._closed:
            self._wake.set()

    async def _drain(self, account_id: int) -> None:
        loop = asyncio.get_running_loop()
        # Let the receipts of a few more commits gather: one read and one
        # mark-sent per batch, not per commit (receipts are seconds late anyway).
        await asyncio.sleep(DRAIN_GATHER_S)
        after_id = 0
        while account_id in self._accounts:
            rows = await self.store.pending_smpp_receipts_with_messages(
                account_id,
                not_before=utcnow() - self.ttl,
                after_id=after_id,
                limit=self.batch_size,
            )
            if not rows:
                return
            after_id = rows[-1][0].id
            now = loop.time()
            todo = [
                (receipt, message)
                for receipt, message in rows
                if receipt.id not in self._in_flight
                and self._not_before.get(receipt.id, 0.0) <= now
            ]
            if todo:
                await self._send_batch(account_id, todo)
            if len(rows) < self.batch_size:
                return

    async def _send_batch(
        self, account_id: int, batch: list[tuple[SmppReceipt, ReceiptMessage]]
    ) -> None:
        entry = self._accounts.get(account_id)
        if entry is None:
            return
        ids = [receipt.id for receipt, _ in batch]
        done: list[int] = []
        refused: list[int] = []
        pending: Iterator[tuple[SmppReceipt, ReceiptMessage]] = iter(batch)

        async def worker() -> None:
            for receipt, message in pending:
                outcome = await self._send(account_id, receipt_pdu(receipt, message))
                if outcome is _Outcome.SENT:
                    done.append(receipt.id)
                elif outcome is _Outcome.REFUSED:
                    refused.append(receipt.id)
                else:
                    return  # no session left: the rest wait for the next bind

        # As many deliver_sm in flight as the sessions' windows hold (send_deliver_sm
        # waits for a slot; more workers than that would only queue there).
        workers = min(len(batch), self.window * max(1, len(entry.sessions)))
        self._in_flight.update(ids)
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            self._in_flight.difference_update(ids)
            if done:
                # One write per batch, whatever happened to the rest of it; tried
                # again while the database is away, else they would be sent twice.
                await self.store.write_until_committed(MarkSmppReceiptsSent(tuple(done), utcnow()))
                self.sent += len(done)
                for receipt_id in done:
                    self._not_before.pop(receipt_id, None)
        if refused:
            now = asyncio.get_running_loop().time()
            if len(self._not_before) > 10_000:  # forget receipts that expired meanwhile
                self._not_before = {k: t for k, t in self._not_before.items() if t > now}
            retry_at = now + self.retry_s
            for receipt_id in refused:
                self._not_before[receipt_id] = retry_at
            self._retry_later(account_id)
        log.debug(
            "receipts account=%d sent=%d refused=%d left=%d",
            account_id,
            len(done),
            len(refused),
            len(batch) - len(done) - len(refused),
        )

    async def _send(self, account_id: int, pdu: DeliverSm) -> _Outcome:
        entry = self._accounts.get(account_id)
        attempts = len(entry.sessions) if entry is not None else 0
        for _ in range(attempts):
            entry = self._accounts.get(account_id)
            session = entry.pick() if entry is not None else None
            if session is None:
                break
            try:
                # Sent at once when the window has a slot: one Future to wait on.
                pending = session.send_deliver_sm_nowait(pdu) if self.send_timeout is None else None
                if pending is None:
                    response = await session.send_deliver_sm(pdu, timeout=self.send_timeout)
                else:
                    response = deliver_sm_resp(await pending)
            except (ConnectionLostError, NotBoundError, InvalidState):
                continue  # that session went away: try another of the account's
            except ResponseTimeoutError:
                return _Outcome.REFUSED
            if response.command_status in _DONE_STATUSES:
                return _Outcome.SENT
            log.info(
                "receipt refused by ESME account=%d status=0x%08X",
                account_id,
                response.command_status,
            )
            return _Outcome.REFUSED
        return _Outcome.NO_SESSION
