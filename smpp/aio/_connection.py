"""The asyncio Protocol shared by the server and the client.

A thin adapter in the manner of uvicorn's h11 protocol: `data_received` feeds
the sans-IO `Session` and dispatches the events it returns; whatever the
session queued is written once per batch. Our outstanding requests are
Futures, as in asyncpg: the session's deadlines fail them with
`ResponseTimeoutError` and `connection_lost` fails them with
`ConnectionLostError`. One timer handle per connection follows the session's
`next_deadline()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..constants import CommandStatus
from ..errors import ProtocolError
from ..pdu import EnquireLink, Pdu, Unbind, make_response
from ..session import (
    BOUND_STATES,
    EnquireLinkDue,
    Event,
    InactivityTimeout,
    InvalidState,
    PduReceived,
    ProtocolViolation,
    RequestFailed,
    ResponseReceived,
    ResponseTimeout,
    Role,
    Session,
    SessionConfig,
    State,
    StateChanged,
)
from ._errors import ConnectionLostError, ResponseTimeoutError

__all__ = ["PduObserver", "SmppConnection"]

PduObserver = Callable[[str, int, int], None]
"""Called with ("in" | "out", command_id, command_status) for every PDU read or written."""

# Requests that the session does not count against the window (it keeps the
# link checkable and closable when the window is full).
_UNCOUNTED = (EnquireLink, Unbind)


# command_length, command_id, command_status (section 3.2).
_HEADER = struct.Struct(">III")
_HEADER_LENGTH = 16


class _HeaderTap:
    """Reports command_id and command_status of each PDU in a byte stream to a `PduObserver`.

    It follows command_length only, next to the session's own framing, so
    that it also sees what the session answers by itself (enquire_link,
    unbind, generic_nack) and frames that do not decode. Reads may split a
    header; written data is whole PDUs. A command_length under 16 cannot be
    followed (the session closes, section 4.3): that PDU is the last reported.
    """

    __slots__ = ("_direction", "_head", "_observer", "_skip")

    def __init__(self, direction: str, observer: PduObserver) -> None:
        self._direction = direction
        self._observer: PduObserver | None = observer
        self._skip = 0  # bytes of the current PDU still to come
        self._head = b""  # the start of a header split across reads

    def feed(self, data: bytes) -> None:
        observer = self._observer
        if observer is None:
            return
        n = len(data)
        pos = self._skip
        if pos >= n:
            self._skip = pos - n
            return
        if self._head:
            started = len(self._head)
            head = self._head + data[: _HEADER_LENGTH - started]
            if len(head) < _HEADER_LENGTH:
                self._head = head
                return
            self._head = b""
            length, command_id, command_status = _HEADER.unpack_from(head)
            observer(self._direction, command_id, command_status)
            if length < _HEADER_LENGTH:
                self._observer = None
                return
            pos = length - started
        direction = self._direction
        unpack_from = _HEADER.unpack_from
        while pos + _HEADER_LENGTH <= n:
            length, command_id, command_status = unpack_from(data, pos)
            observer(direction, command_id, command_status)
            if length < _HEADER_LENGTH:
                self._observer = None
                return
            pos += length
        if pos < n:
            self._head = data[pos:]
            self._skip = 0
        else:
            self._skip = pos - n


_R = TypeVar("_R", bound=Pdu)


def as_response(response: Pdu, kind: type[_R]) -> _R:
    """A request's response as the `kind` it should be: a generic_nack becomes one
    with the nack's status (RSYSERR if it had none)."""
    if isinstance(response, kind):
        return response
    return kind(
        sequence_number=response.sequence_number,
        command_status=response.command_status or CommandStatus.RSYSERR,
    )


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY: with Nagle on, a window-1 peer with receipts falls to tens of messages/s."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the socket closed under us
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SmppConnection(asyncio.Protocol):
    """One SMPP session over one transport. Subclasses answer the peer's requests."""

    def __init__(
        self,
        role: Role,
        config: SessionConfig,
        logger: logging.Logger,
        *,
        max_in_flight: int = 1000,
        task_registry: set[asyncio.Future[Any]] | None = None,
        on_pdu: PduObserver | None = None,
    ) -> None:
        """`task_registry` also holds this connection's handler tasks, so that
        the owner can cancel them after the connection is gone. `on_pdu` sees
        every PDU read and written (for metrics); it must be quick."""
        self._loop = asyncio.get_running_loop()
        self._session = Session(role, config, now=self._loop.time())
        self._log = logger
        self._transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        # sequence_number -> the Future of our request.
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        # Callers waiting for a window slot, FIFO. A woken waiter has a slot
        # reserved for it (`_reserved`) until it sends, so a newcomer cannot
        # take it in between.
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._reserved = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._flush_scheduled = False
        self._lost = False
        self.closed: asyncio.Future[None] = self._loop.create_future()
        # The application's handlers still to answer the peer's requests: tasks,
        # or the Futures handlers returned (see _answer_later).
        self._tasks: set[asyncio.Future[Any]] = set()
        self._task_registry = task_registry
        self._max_in_flight = max_in_flight
        self._writing_paused = False
        self._reading_paused = False
        self._unbinding = False
        # The peer unbound us: close once our requests are answered and our
        # handlers have answered theirs (responses may follow an unbind).
        self._close_when_quiet = False
        # A handler task that called unbind() does not wait for itself.
        self._quiet_exempt: asyncio.Task[Any] | None = None
        self._tap_in: _HeaderTap | None = None
        self._tap_out: _HeaderTap | None = None
        if on_pdu is not None:
            self._tap_in = _HeaderTap("in", on_pdu)
            self._tap_out = _HeaderTap("out", on_pdu)

    # --- public view ----------------------------------------------------------

    @property
    def state(self) -> State:
        return self._session.state

    @property
    def is_bound(self) -> bool:
        return self._session.state in BOUND_STATES

    @property
    def outstanding(self) -> int:
        return self._session.outstanding

    @property
    def window_free(self) -> int:
        return self._session.window_free

    @property
    def is_lost(self) -> bool:
        return self._lost

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        self._reschedule()

    def data_received(self, data: bytes) -> None:
        if self._tap_in is not None:
            self._observe(self._tap_in, data)
        events = self._session.receive_data(data, self._loop.time())
        if events:
            self._dispatch(events)
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        events = self._session.connection_lost()
        reason = f"connection lost: {exc}" if exc else "connection closed"
        for event in events:
            if isinstance(event, RequestFailed):
                self._fail(event.request.sequence_number, ConnectionLostError(reason))
        for seq in list(self._pending):
            self._fail(seq, ConnectionLostError(reason))
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionLostError(reason))
        self._wake_idle()
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost(exc)

    def pause_writing(self) -> None:
        # The peer does not read: stop reading its requests until it does.
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    # --- hooks for subclasses -------------------------------------------------

    def _on_request(self, pdu: Pdu) -> None:
        """A request of the peer that the session hands to the application."""
        self._respond(make_response(pdu, CommandStatus.RINVCMDID))

    def _on_state_changed(self, old: State, new: State) -> None:
        if new is State.UNBOUND and not self._unbinding:
            # The peer unbound; the session has queued unbind_resp (section 4.2).
            self._close_when_quiet = True
            self._wake_idle()

    def _on_lost(self, exc: Exception | None) -> None:
        pass

    # --- events -----------------------------------------------------------------

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ResponseReceived):
                fut = self._pending.pop(event.request.sequence_number, None)
                if fut is not None and not fut.done():
                    fut.set_result(event.pdu)
                self._slot_freed()
            elif isinstance(event, PduReceived):
                self._on_request(event.pdu)
            elif isinstance(event, StateChanged):
                self._on_state_changed(event.old, event.new)
            elif isinstance(event, ResponseTimeout):
                request = event.request
                if isinstance(request, EnquireLink):
                    # The peer does not answer keepalives: the link is dead.
                    self._log.warning("enquire_link unanswered, closing peer=%s", self.peer)
                    self._abort()
                self._fail(
                    request.sequence_number,
                    ResponseTimeoutError(f"no response to {type(request).__name__}"),
                )
                self._slot_freed()
            elif isinstance(event, EnquireLinkDue):
                with contextlib.suppress(ProtocolError):
                    self._session.send(EnquireLink(), self._loop.time())
            elif isinstance(event, ProtocolViolation):
                error = event.error
                self._log.warning(
                    "protocol violation peer=%s error=%s field=%s status=0x%08X",
                    self.peer,
                    type(error).__name__,
                    error.field,
                    error.command_status,
                )
                self._log.debug("protocol violation detail: %s", error)
            elif isinstance(event, RequestFailed):
                self._fail(event.request.sequence_number, ConnectionLostError(event.reason))
                self._slot_freed()
            elif isinstance(event, InactivityTimeout):
                self._log.info("inactivity timeout, closing peer=%s", self.peer)
                self._close_after_flush()

    def _observe(self, tap: _HeaderTap, data: bytes) -> None:
        try:
            tap.feed(data)
        except Exception:
            # An observer's bug must not cost the connection: stop observing it.
            self._log.exception("on_pdu failed; PDUs of peer=%s are no longer observed", self.peer)
            self._tap_in = self._tap_out = None

    def _fail(self, seq: int, error: Exception) -> None:
        fut = self._pending.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_exception(error)

    # --- writing and timers -------------------------------------------------------

    def _flush(self) -> None:
        """Write what the session queued, follow its deadline, close if it closed."""
        self._flush_scheduled = False
        if self._lost:
            return
        data = self._session.data_to_send()
        transport = self._transport
        if transport is None:
            return
        if data and not transport.is_closing():
            transport.write(data)
            if self._tap_out is not None:
                self._observe(self._tap_out, data)
        if self._session.state is State.CLOSED:
            if not transport.is_closing():
                transport.close()
            return
        self._reschedule()

    def _schedule_flush(self) -> None:
        # Responses and requests produced in one loop iteration go out in one write.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _reschedule(self) -> None:
        deadline = self._session.next_deadline()
        if deadline is None:
            return  # a timer already armed fires once and finds nothing to do
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        # call_at may fire within the clock resolution before the deadline.
        now = max(self._loop.time(), self._timer_at)
        self._timer = None
        self._timer_at = math.inf
        if self._lost:
            return
        events = self._session.poll(now)
        if events:
            self._dispatch(events)
        self._flush()

    def _close_after_flush(self) -> None:
        self._session.close()
        self._schedule_flush()

    def close(self) -> None:
        """Close after writing what is queued."""
        if self._transport is None or self._lost:
            return
        data = self._session.data_to_send()
        self._session.close()
        if not self._transport.is_closing():
            if data:
                self._transport.write(data)
                if self._tap_out is not None:
                    self._observe(self._tap_out, data)
            self._transport.close()

    def _abort(self) -> None:
        self._session.close()
        if self._transport is not None and not self._lost:
            self._transport.abort()

    def abort(self) -> None:
        """Drop the connection at once, unwritten data included."""
        self._abort()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        want_paused = self._writing_paused or len(self._tasks) >= self._max_in_flight
        if want_paused and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not want_paused and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    # --- our requests -----------------------------------------------------------

    async def request(
        self,
        pdu: Pdu,
        *,
        timeout: float | None = None,
        throttle: Callable[[], float] | None = None,
    ) -> Pdu:
        """Send a request and wait for its response (any command_status).

        Waits for a window slot first (enquire_link and unbind need none),
        then for `throttle` if given. Raises `ResponseTimeoutError` after the
        session's response_timeout, or when `timeout` (which counts from the
        call, the wait for a slot included) runs out first, and
        `ConnectionLostError` if the connection goes first.
        """
        if self._lost:
            raise ConnectionLostError("connection closed")
        deadline = None if timeout is None else self._loop.time() + timeout
        counted = not isinstance(pdu, _UNCOUNTED)
        if counted:
            if not self._slot_free():
                if deadline is None:
                    await self._wait_for_slot()
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            await self._wait_for_slot()
                    except TimeoutError:
                        raise ResponseTimeoutError("no window slot within the timeout") from None
            else:
                self._reserved += 1
            try:
                if throttle is not None:
                    delay = throttle()  # seconds to wait for this send's turn
                    if delay > 0:
                        await asyncio.sleep(delay)
                if self._lost:
                    raise ConnectionLostError("connection closed")
                sent = self._send_request(pdu)
            finally:
                self._reserved -= 1
                if self._slot_waiters:
                    self._slot_freed()
        else:
            sent = self._send_request(pdu)
        fut: asyncio.Future[Pdu] = self._loop.create_future()
        self._pending[sent.sequence_number] = fut
        self._schedule_flush()
        if deadline is None:
            return await fut
        handle = self._loop.call_at(deadline, self._expire, sent.sequence_number, fut)
        try:
            return await fut
        finally:
            handle.cancel()

    def request_nowait(
        self, pdu: Pdu, *, may_send: Callable[[], bool] | None = None
    ) -> asyncio.Future[Pdu] | None:
        """`request` for when nothing need wait: send `pdu` now and return the Future of
        its response (failing as `request` raises), or None when a window slot is not
        free, or `may_send` (asked once a slot is) says no: then `request` waits.

        No coroutine per request on the hottest path (the dispatcher's submit_sm);
        only the session's response_timeout applies.
        """
        if self._lost:
            raise ConnectionLostError("connection closed")
        if not self._slot_free():
            return None
        if may_send is not None and not may_send():
            return None
        sent = self._send_request(pdu)
        fut: asyncio.Future[Pdu] = self._loop.create_future()
        self._pending[sent.sequence_number] = fut
        self._schedule_flush()
        return fut

    def _slot_free(self) -> bool:
        """A window slot is free now, and nobody queues for one before us."""
        return not self._slot_waiters and self._session.window_free - self._reserved > 0

    def _send_request(self, pdu: Pdu) -> Pdu:
        try:
            return self._session.send(pdu, self._loop.time())
        except InvalidState as exc:
            if self._session.state in (State.UNBOUND, State.CLOSED):
                # The bind went away while the request waited: retry elsewhere.
                raise ConnectionLostError(f"session {self._session.state.name}") from exc
            raise

    def _expire(self, seq: int, fut: asyncio.Future[Pdu]) -> None:
        # A per-call timeout shorter than the session's: the request stays in
        # the window until its response or the session's own deadline.
        if self._pending.get(seq) is fut:
            del self._pending[seq]
        if not fut.done():
            fut.set_exception(ResponseTimeoutError("no response within the call's timeout"))
        self._wake_idle()

    async def _wait_for_slot(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Woken (a slot was reserved for us) and cancelled before running.
                self._reserved -= 1
                self._slot_freed()
            else:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            raise

    def _slot_freed(self) -> None:
        waiters = self._slot_waiters
        while waiters and self._session.window_free - self._reserved > 0:
            waiter = waiters.popleft()
            if not waiter.done():
                self._reserved += 1
                waiter.set_result(None)
        if not self._pending:
            self._wake_idle()

    def _quiet(self) -> bool:
        """None of our requests outstanding and no handler still to answer the peer."""
        if self._pending:
            return False
        tasks = self._tasks
        return not tasks or (len(tasks) == 1 and self._quiet_exempt in tasks)

    def _wake_idle(self) -> None:
        if not (self._lost or self._quiet()):
            return
        if self._idle_waiters:
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()
        if self._close_when_quiet and not self._lost:
            self._close_when_quiet = False
            self._session.close()
            self._schedule_flush()

    async def wait_idle(self) -> None:
        """Until our requests are answered and our handlers have answered (or the connection is gone)."""
        if self._lost or self._quiet():
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._idle_waiters.append(waiter)
        await waiter

    async def unbind(self, timeout: float) -> None:
        """Unbind (section 4.2) and close, within `timeout`.

        Sends unbind, which stops new requests in both directions (the
        session answers them RINVBNDSTS), waits for unbind_resp, then for the
        answers still owed either way, and closes.
        """
        if self._lost:
            return
        deadline = self._loop.time() + timeout
        current = asyncio.current_task()
        if current in self._tasks:
            self._quiet_exempt = current
        if self.is_bound:
            self._unbinding = True
            try:
                await self.request(Unbind(), timeout=timeout)
            except (ProtocolError, ConnectionLostError, ResponseTimeoutError) as exc:
                self._log.debug("unbind peer=%s: %s", self.peer, exc)
        if not self._lost and not self._quiet():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - self._loop.time())):
                    await self.wait_idle()
        self.close()

    # --- the application's handlers ---------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coro)
        self._track(task)
        # One done callback for the connection's set and the registry: a task per
        # request is on the hot path, and each callback is a call_soon.
        task.add_done_callback(self._task_done)
        return task

    def _answer_later(
        self, future: asyncio.Future[Any], answer: Callable[[asyncio.Future[Any]], None]
    ) -> None:
        """A handler that returned a Future: `answer` runs when it is done, no task.

        A task per request, and the chain of coroutines it resumes, cost several
        times what the handler's own work does on the hottest path (submit_sm).
        """
        self._track(future)

        def done(future: asyncio.Future[Any]) -> None:
            try:
                answer(future)
            finally:
                self._untrack(future)

        future.add_done_callback(done)

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._tasks.add(future)
        registry = self._task_registry
        if registry is not None:
            registry.add(future)
        if len(self._tasks) >= self._max_in_flight:
            self._update_reading()

    def _untrack(self, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        registry = self._task_registry
        if registry is not None:
            registry.discard(future)
        if self._reading_paused:
            self._update_reading()
        if not self._tasks and (self._idle_waiters or self._close_when_quiet):
            self._wake_idle()

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._untrack(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._log.error("handler task failed peer=%s", self.peer, exc_info=exc)

    def _respond(self, response: Pdu) -> None:
        """Queue the answer to one of the peer's requests; the write is batched."""
        if self._lost:
            return
        try:
            self._session.send(response, self._loop.time())
        except ProtocolError as exc:
            if self._session.state is State.CLOSED:
                return
            self._log.error("cannot send %s peer=%s: %s", type(response).__name__, self.peer, exc)
            if response.command_status == CommandStatus.ROK:
                # Most likely a field the codec refuses (a message_id too long):
                # the request still gets an answer.
                try:
                    self._session.send(
                        type(response)(
                            sequence_number=response.sequence_number,
                            command_status=CommandStatus.RSYSERR,
                        ),
                        self._loop.time(),
                    )
                except ProtocolError:
                    return
            else:
                return
        self._schedule_flush()
