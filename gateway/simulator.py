"""An SMSC simulator: the upstream that the demo, the tests and the benchmark talk to.

It is an `SmppServer` whose handler accepts binds, answers every submit_sm
(and data_sm) with a unique message_id and, when registered_delivery asks
for it (SMPP 3.4 section 5.2.17), sends the receipt as a deliver_sm after
`dlr_delay_ms`: an ENROUTE intermediate notification first when asked for,
then DELIVRD with probability `delivery_ratio`, else UNDELIV. The faults the
gateway's tests need (dropped connections, silence, slow answers, throttling,
a receipt that overtakes its submit_sm_resp, ids in hex in one PDU and in
decimal in the other) are options, changeable while it runs.

Receipts are kept until the ESME acknowledges them with deliver_sm_resp ROK:
one that cannot be delivered (no receiver bound, connection lost, an error or
no answer) waits and goes out again, at the latest when a receiver of the same
system_id binds. That is what a real SMSC's store-and-forward does, and what
lets a gateway that crashes mid-load still end with every message final.

Timers: one heap of due receipts behind a single `call_at` handle; delivery:
a fixed set of worker coroutines per bound receiver session (as many as the
session's window), all fed from one queue per system_id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from gateway.ratelimit import TpsLimiter
from smpp.aio import ConnectionLostError, ResponseTimeoutError, ServerSession, SmppServer
from smpp.aio.server import Bind
from smpp.constants import (
    RECEIPT_MASK,
    CommandStatus,
    DataCoding,
    EsmClass,
    MessageState,
    RegisteredDelivery,
)
from smpp.errors import (
    CommandFailed,
    InvalidPassword,
    InvalidSystemId,
    ProtocolError,
)
from smpp.pdu import (
    CancelSm,
    DataSm,
    DeliverSm,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    SubmitSm,
)
from smpp.receipt import Receipt, format_receipt, state_to_stat
from smpp.session import SessionConfig
from smpp.text import decode as decode_text

if TYPE_CHECKING:
    from gateway.config import SimulatorSettings

__all__ = ["IdFormat", "Simulator", "SimulatorOptions"]

log = logging.getLogger("smsgw.simulator")

IdFormat = Literal["hex", "decimal"]

_UDHI = 0x40
_ADDR_MAX = 20  # deliver_sm addresses are C-octet 21 (section 4.6.1); data_sm's are 65
# Appendix B `err` and network_error_code (section 5.3.2.31: network type 3 =
# GSM, then a 2-octet code; 1 = unknown subscriber) of a failed delivery.
_UNDELIV_ERR = "001"
_UNDELIV_NETWORK_ERROR = b"\x03\x00\x01"


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """What the simulator does. Everything after `password` is a fault for tests."""

    delivery_ratio: float = 1.0
    """Probability that a final receipt says DELIVRD (else UNDELIV)."""
    dlr_delay_ms: int = 100
    """From submit_sm_resp to the final receipt; the intermediate one goes at half of it."""
    intermediate: bool = False
    """Send an ENROUTE intermediate notification before every final receipt
    (an ESME also gets one by setting registered_delivery bit 4, 0x10)."""
    max_tps: int = 0
    """submit_sm per second at most, one second of burst; above it ESME_RTHROTTLED. 0 = no limit."""
    system_id: str | None = None
    """Required system_id (RINVSYSID otherwise); None accepts any."""
    password: str | None = None
    """Required password (RINVPASWD otherwise); None accepts any."""
    window: int = 100
    """deliver_sm outstanding at once per receiver session."""
    receipt_retry_ms: int = 1000
    """Wait before resending a receipt that got an error or no answer from a bound session."""
    receipt_timeout_ms: int = 10_000
    """How long a deliver_sm waits for its deliver_sm_resp."""

    drop_every: int | None = None
    """Abort the connection on every N-th submit_sm (counted over all connections), unanswered."""
    never_answer: bool = False
    """Accept submit_sm and never respond."""
    answer_delay_ms: int = 0
    """Wait this long before answering each submit_sm."""
    receipt_before_response: bool = False
    """Send the receipts at once, before the submit_sm_resp (Jasmin issue 472)."""
    id_format: IdFormat = "decimal"
    """How the message_id of submit_sm_resp is written."""
    receipt_id_format: Literal["same", "hex", "decimal"] = "same"
    """How the id inside receipts is written ("same": as in submit_sm_resp)."""
    seed: int | None = None
    """Seed of the DELIVRD / UNDELIV draws (None: unpredictable)."""
    first_id: int | None = None
    """Number of the first message_id; None takes it from the clock (microseconds)
    so that a restarted simulator does not hand out ids it gave before."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.delivery_ratio <= 1.0:
            raise ValueError(f"delivery_ratio must be from 0 to 1, got {self.delivery_ratio}")
        for name in ("dlr_delay_ms", "max_tps", "answer_delay_ms", "receipt_retry_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        if self.receipt_timeout_ms <= 0:
            raise ValueError(f"receipt_timeout_ms must be positive, got {self.receipt_timeout_ms}")
        if self.drop_every is not None and self.drop_every < 1:
            raise ValueError(f"drop_every must be at least 1, got {self.drop_every}")
        if self.id_format not in ("hex", "decimal"):
            raise ValueError(f"id_format must be 'hex' or 'decimal', got {self.id_format!r}")
        if self.receipt_id_format not in ("same", "hex", "decimal"):
            raise ValueError(
                f"receipt_id_format must be 'same', 'hex' or 'decimal', "
                f"got {self.receipt_id_format!r}"
            )
        if self.first_id is not None and self.first_id < 0:
            raise ValueError(f"first_id must not be negative, got {self.first_id}")


class _PendingReceipt:
    """One deliver_sm the simulator owes an ESME, until it is acknowledged with ROK."""

    __slots__ = ("attempts", "message_id", "pdu", "system_id")

    def __init__(self, system_id: str, message_id: str, pdu: DeliverSm) -> None:
        self.system_id = system_id
        self.message_id = message_id
        self.pdu = pdu
        self.attempts = 0


def _format_id(number: int, form: str) -> str:
    return f"{number:x}" if form == "hex" else str(number)


def _message_text(pdu: SubmitSm | DataSm) -> str:
    """The user's text, for the receipt's `text:` (Appendix B: its first 20 characters)."""
    raw = pdu.short_message if isinstance(pdu, SubmitSm) else b""
    if not raw:
        raw = pdu.message_payload or b""
    if pdu.esm_class & _UDHI and raw:
        raw = raw[1 + raw[0] :]
    try:
        return decode_text(raw, pdu.data_coding)
    except ProtocolError:  # a data_coding the text module does not decode
        return raw.decode("latin-1")


class Simulator:
    """The SMSC simulator. `await start()`, then point an ESME at `port`."""

    def __init__(
        self,
        options: SimulatorOptions | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.options = options if options is not None else SimulatorOptions()
        self.host = host
        self._port = port
        self._server: SmppServer | None = None
        self._closed = False
        self._rng = random.Random(self.options.seed)
        self._next_id = (
            self.options.first_id if self.options.first_id is not None else time.time_ns() // 1000
        )
        # GCRA token bucket for max_tps: the theoretical arrival time.
        self._limiter = TpsLimiter()
        # Receipts not yet due: (due, sequence, receipt), with one timer for the head.
        self._heap: list[tuple[float, int, _PendingReceipt]] = []
        self._heap_seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Due receipts per system_id, waiting for a worker of a receiver session.
        self._outboxes: dict[str, asyncio.Queue[_PendingReceipt]] = {}
        self._workers: dict[ServerSession, list[asyncio.Task[None]]] = {}
        # Every task the simulator runs (workers and early receipts), to cancel on close.
        self._tasks: set[asyncio.Task[None]] = set()
        self._change_waiters: list[asyncio.Future[None]] = []
        self._unacked = 0

        self.submits = 0
        """submit_sm and data_sm received (answered or not)."""
        self.accepted = 0
        """Answered with ROK and a message_id."""
        self.throttled = 0
        """Answered with ESME_RTHROTTLED."""
        self.dropped = 0
        """Connections aborted by `drop_every`."""
        self.binds = 0
        """Binds accepted."""
        self.receipts_sent = 0
        """deliver_sm receipts written, resends included."""
        self.receipts_acked = 0
        """Receipts answered with deliver_sm_resp ROK (and so retired)."""

    @classmethod
    def from_settings(
        cls,
        settings: SimulatorSettings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        system_id: str | None = None,
        password: str | None = None,
        **faults: object,
    ) -> Simulator:
        """A simulator for an upstream of ``kind = "simulator"`` (faults: SimulatorOptions fields)."""
        options = SimulatorOptions(
            delivery_ratio=settings.delivery_ratio,
            dlr_delay_ms=settings.dlr_delay_ms,
            intermediate=settings.intermediate,
            max_tps=settings.max_tps,
            system_id=system_id,
            password=password,
        )
        if faults:
            options = dataclasses.replace(options, **faults)  # type: ignore[arg-type]
        return cls(options, host=host, port=port)

    # --- lifecycle ------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port bound (after the first start the real one, also while stopped)."""
        return self._server.port if self._server is not None else self._port

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def sessions(self) -> list[ServerSession]:
        """The open connections."""
        return self._server.sessions if self._server is not None else []

    async def start(self) -> None:
        """Listen on host:port; after a stop, on the same port as before."""
        if self._server is not None:
            raise RuntimeError("the simulator is already listening")
        self._closed = False
        server = SmppServer(
            _Handler(self),
            host=self.host,
            port=self._port,
            config=SessionConfig(
                window=self.options.window,
                response_timeout=self.options.receipt_timeout_ms / 1000,
            ),
            system_id="smsgw-sim",
            max_in_flight=10_000,
        )
        await server.start()
        self._server = server
        self._port = server.port
        log.info("simulator listening host=%s port=%d", self.host, self._port)

    async def stop_listening(self, *, graceful: bool = False) -> None:
        """Take the SMSC down: stop listening and drop every connection.

        Without `graceful` connections are aborted as in a crash; with it they
        are unbound first. Receipts owed are kept and go out after `start()`
        (which listens on the same port again).
        """
        server = self._server
        if server is None:
            return
        self._server = None
        if not graceful:
            for session in server.sessions:
                session.abort()
        await server.close(timeout=2.0 if graceful else 0.5)
        self._notify()

    async def restart(self, *, graceful: bool = False) -> None:
        """`stop_listening()` then `start()` on the same port."""
        await self.stop_listening(graceful=graceful)
        await self.start()

    async def close(self) -> None:
        """Unbind every session, stop listening and stop the timers. Receipts owed are dropped."""
        self._closed = True
        await self.stop_listening(graceful=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._heap.clear()
        self._outboxes.clear()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def set_options(self, options: SimulatorOptions | None = None, **changes: object) -> None:
        """Change the behaviour from now on (e.g. `set_options(never_answer=True)`).

        `window` and `receipt_timeout_ms` apply to sessions of the next `start()`.
        """
        new = options if options is not None else self.options
        if changes:
            new = dataclasses.replace(new, **changes)  # type: ignore[arg-type]
        if new.seed != self.options.seed:
            self._rng = random.Random(new.seed)
        if new.max_tps != self.options.max_tps:
            self._limiter = TpsLimiter()
        self.options = new

    # --- observing --------------------------------------------------------------

    @property
    def receipts_pending(self) -> int:
        """Receipts created and not yet acknowledged (scheduled, waiting or in flight)."""
        return self._unacked

    @property
    def receipts_waiting(self) -> int:
        """Receipts due and waiting for a receiver session to take them."""
        return sum(queue.qsize() for queue in self._outboxes.values())

    def receivers(self, system_id: str) -> list[ServerSession]:
        """Bound receiver and transceiver sessions of `system_id`."""
        return [s for s in self._workers if s.system_id == system_id and s.bound]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Until `predicate()` holds, re-checked whenever a counter changes; TimeoutError after `timeout`."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not predicate():
                waiter: asyncio.Future[None] = loop.create_future()
                self._change_waiters.append(waiter)
                await waiter

    def _notify(self) -> None:
        if self._change_waiters:
            waiters, self._change_waiters = self._change_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # --- binds ------------------------------------------------------------------

    def _authenticate(self, bind: Bind) -> None:
        options = self.options
        if options.system_id is not None and bind.system_id != options.system_id:
            raise InvalidSystemId(f"unknown system_id {bind.system_id!r}", field="system_id")
        if options.password is not None and bind.password != options.password:
            raise InvalidPassword("wrong password", field="password")

    def _session_bound(self, session: ServerSession) -> None:
        self.binds += 1
        if session.bind_type in ("receiver", "transceiver") and session.system_id is not None:
            outbox = self._outbox(session.system_id)
            self._workers[session] = [
                self._spawn(self._deliver_from(session, outbox)) for _ in range(self.options.window)
            ]
        self._notify()

    def _session_closed(self, session: ServerSession) -> None:
        for task in self._workers.pop(session, ()):
            task.cancel()
        self._notify()

    # --- submissions ------------------------------------------------------------

    def _throttle(self) -> bool:
        """True if this submit_sm is over max_tps (one second of burst, as the gateway's limits)."""
        return not self._limiter.allow(0, self.options.max_tps)

    async def _submit(self, session: ServerSession, pdu: SubmitSm | DataSm) -> str:
        options = self.options
        self.submits += 1
        self._notify()
        if options.drop_every is not None and self.submits % options.drop_every == 0:
            self.dropped += 1
            log.info("dropping the connection peer=%s submit=%d", session.peer, self.submits)
            session.abort()
            await session.wait_closed()
            raise CommandFailed("connection dropped", status=CommandStatus.RSYSERR)
        if self._throttle():
            self.throttled += 1
            raise CommandFailed("over max_tps", status=CommandStatus.RTHROTTLED)
        if options.never_answer:
            await session.wait_closed()
            raise CommandFailed("never answered", status=CommandStatus.RSYSERR)
        if options.answer_delay_ms:
            await asyncio.sleep(options.answer_delay_ms / 1000)
            options = self.options

        number = self._next_id
        self._next_id += 1
        message_id = _format_id(number, options.id_format)
        self.accepted += 1
        receipts = self._receipts_for(session, pdu, number, message_id, options)
        if receipts:
            if options.receipt_before_response:
                await self._send_now(session, receipts)
            else:
                self._schedule(receipts, options.dlr_delay_ms / 1000)
        return message_id

    def _receipts_for(
        self,
        session: ServerSession,
        pdu: SubmitSm | DataSm,
        number: int,
        message_id: str,
        options: SimulatorOptions,
    ) -> list[tuple[float, _PendingReceipt]]:
        """(fraction of dlr_delay, receipt) for what registered_delivery asks (section 5.2.17)."""
        requested = pdu.registered_delivery & RECEIPT_MASK
        wants_intermediate = bool(pdu.registered_delivery & RegisteredDelivery.INTERMEDIATE) or (
            options.intermediate and requested != RegisteredDelivery.NONE
        )
        if (
            requested == RegisteredDelivery.NONE and not wants_intermediate
        ) or session.system_id is None:
            return []
        delivered = options.delivery_ratio >= 1.0 or self._rng.random() < options.delivery_ratio
        receipt_id = (
            message_id
            if options.receipt_id_format == "same"
            else _format_id(number, options.receipt_id_format)
        )
        text = _message_text(pdu)
        submitted = datetime.now(UTC)
        done = submitted + timedelta(milliseconds=options.dlr_delay_ms)
        out: list[tuple[float, _PendingReceipt]] = []
        if wants_intermediate:
            out.append((0.5, self._receipt(session, pdu, receipt_id, text, submitted, submitted)))
        final_wanted = requested == RegisteredDelivery.RECEIPT_ALWAYS or (
            requested == RegisteredDelivery.RECEIPT_ON_FAILURE and not delivered
        )
        if final_wanted:
            state = MessageState.DELIVERED if delivered else MessageState.UNDELIVERABLE
            out.append((1.0, self._receipt(session, pdu, receipt_id, text, submitted, done, state)))
        self._unacked += len(out)
        return out

    @staticmethod
    def _receipt(
        session: ServerSession,
        pdu: SubmitSm | DataSm,
        receipt_id: str,
        text: str,
        submitted: datetime,
        done: datetime,
        state: MessageState = MessageState.ENROUTE,
    ) -> _PendingReceipt:
        assert session.system_id is not None
        delivered = state == MessageState.DELIVERED
        body = format_receipt(
            Receipt(
                id=receipt_id,
                stat=state_to_stat(state),
                sub=1,
                dlvrd=1 if delivered else 0,
                submit_date=submitted,
                done_date=done,
                err=_UNDELIV_ERR if state == MessageState.UNDELIVERABLE else "000",
                text=text,
            )
        )
        deliver = DeliverSm(
            source_addr_ton=pdu.dest_addr_ton,
            source_addr_npi=pdu.dest_addr_npi,
            source_addr=pdu.destination_addr[:_ADDR_MAX],
            dest_addr_ton=pdu.source_addr_ton,
            dest_addr_npi=pdu.source_addr_npi,
            destination_addr=pdu.source_addr[:_ADDR_MAX],
            esm_class=(
                EsmClass.INTERMEDIATE_NOTIFICATION
                if state == MessageState.ENROUTE
                else EsmClass.DELIVERY_RECEIPT
            ),
            data_coding=DataCoding.DEFAULT,
            short_message=body.encode("ascii", "replace"),
            receipted_message_id=receipt_id,
            message_state=int(state),
            network_error_code=(
                _UNDELIV_NETWORK_ERROR if state == MessageState.UNDELIVERABLE else None
            ),
        )
        return _PendingReceipt(session.system_id, receipt_id, deliver)

    # --- receipt timers ---------------------------------------------------------

    def _schedule(self, receipts: Iterable[tuple[float, _PendingReceipt]], delay: float) -> None:
        now = asyncio.get_running_loop().time()
        for fraction, receipt in receipts:
            self._heap_seq += 1
            heapq.heappush(self._heap, (now + delay * fraction, self._heap_seq, receipt))
        self._arm()

    def _retry_later(self, receipt: _PendingReceipt) -> None:
        self._schedule([(1.0, receipt)], self.options.receipt_retry_ms / 1000)

    def _arm(self) -> None:
        if not self._heap or self._closed:
            return
        due = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer_at = due
        self._timer = asyncio.get_running_loop().call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, receipt = heapq.heappop(heap)
            self._outbox(receipt.system_id).put_nowait(receipt)
        self._arm()
        self._notify()

    def _outbox(self, system_id: str) -> asyncio.Queue[_PendingReceipt]:
        outbox = self._outboxes.get(system_id)
        if outbox is None:
            outbox = self._outboxes[system_id] = asyncio.Queue()
        return outbox

    # --- receipt delivery -------------------------------------------------------

    async def _send_now(
        self, session: ServerSession, receipts: list[tuple[float, _PendingReceipt]]
    ) -> None:
        """Write the receipts before the submit_sm_resp: on `session` if it can receive
        them, else on another receiver of its system_id, else keep them."""
        target: ServerSession | None = session if session in self._workers else None
        if target is None and session.system_id is not None:
            candidates = self.receivers(session.system_id)
            target = candidates[0] if candidates else None
        for _, receipt in receipts:
            if target is None:
                self._outbox(receipt.system_id).put_nowait(receipt)
            else:
                self._spawn(self._send_early(target, receipt))
        # The tasks run first and queue their deliver_sm in the session (the
        # window has room unless the ESME is behind); the submit_sm_resp
        # queued after this returns follows them in the same write.
        await asyncio.sleep(0)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator task failed", exc_info=task.exception())

    async def _send_early(self, session: ServerSession, receipt: _PendingReceipt) -> None:
        await self._send_one(session, receipt)

    async def _deliver_from(
        self, session: ServerSession, outbox: asyncio.Queue[_PendingReceipt]
    ) -> None:
        """One worker of a receiver session: send what comes due until the session ends."""
        while True:
            receipt = await outbox.get()
            if not await self._send_one(session, receipt):
                return

    async def _send_one(self, session: ServerSession, receipt: _PendingReceipt) -> bool:
        """Send one receipt and settle it; False if `session` can no longer send."""
        receipt.attempts += 1
        timeout = self.options.receipt_timeout_ms / 1000
        try:
            self.receipts_sent += 1
            response = await session.send_deliver_sm(receipt.pdu, timeout=timeout)
        except asyncio.CancelledError:
            self._requeue(receipt)
            raise
        except ConnectionLostError:
            self._requeue(receipt)
            return False
        except ResponseTimeoutError:
            log.info("receipt unanswered id=%s peer=%s", receipt.message_id, session.peer)
            self._retry_later(receipt)
            return True
        except ProtocolError as exc:
            # InvalidState: the session is unbinding or not a receiver after all.
            if session.bound:
                log.error("receipt cannot be sent id=%s: %s", receipt.message_id, exc)
                self._unacked -= 1
                self._notify()
                return True
            self._requeue(receipt)
            return False
        if response.command_status == CommandStatus.ROK:
            self.receipts_acked += 1
            self._unacked -= 1
        else:
            log.info(
                "receipt refused id=%s status=0x%08X peer=%s",
                receipt.message_id,
                response.command_status,
                session.peer,
            )
            self._retry_later(receipt)
        self._notify()
        return True

    def _requeue(self, receipt: _PendingReceipt) -> None:
        if not self._closed:
            self._outbox(receipt.system_id).put_nowait(receipt)
            self._notify()


class _Handler:
    """The `ServerHandler` of the simulator's SmppServer."""

    def __init__(self, simulator: Simulator) -> None:
        self._sim = simulator

    async def authenticate(self, session: ServerSession, bind: Bind) -> None:
        self._sim._authenticate(bind)

    async def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> str:
        return await self._sim._submit(session, pdu)

    async def data_sm(self, session: ServerSession, pdu: DataSm) -> str:
        return await self._sim._submit(session, pdu)

    async def query_sm(self, session: ServerSession, pdu: QuerySm) -> QuerySmResp:
        raise CommandFailed("query_sm is not simulated", status=CommandStatus.RINVCMDID)

    async def cancel_sm(self, session: ServerSession, pdu: CancelSm) -> None:
        raise CommandFailed("cancel_sm is not simulated", status=CommandStatus.RCANCELFAIL)

    async def replace_sm(self, session: ServerSession, pdu: ReplaceSm) -> None:
        raise CommandFailed("replace_sm is not simulated", status=CommandStatus.RREPLACEFAIL)

    def session_bound(self, session: ServerSession) -> None:
        self._sim._session_bound(session)

    def session_closed(self, session: ServerSession) -> None:
        self._sim._session_closed(session)
