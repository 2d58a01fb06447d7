"""An asyncio SMPP client (the ESME side) that stays bound.

`start()` connects and binds in the background and reconnects with
exponential backoff and full jitter whenever the connection ends. Requests
wait for a slot in the window, then for the tps limit (a token bucket: only
submit_sm, submit_multi and data_sm spend tokens), and resolve to the
response PDU. A non-zero command_status is returned, not raised, so that the
caller can tell temporary errors (RTHROTTLED, RMSGQFUL ...) from permanent
ones. enquire_link keeps the link alive and detects a dead one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..constants import CommandStatus
from ..pdu import (
    AlertNotification,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    Outbind,
    Pdu,
    SubmitMulti,
    SubmitSm,
    SubmitSmResp,
    make_response,
)
from ..session import BOUND_STATES, Role, SessionConfig, State
from ._connection import PduObserver, SmppConnection, as_response
from ._errors import BindRefusedError, NotBoundError, SmppAioError
from .server import BindType

__all__ = ["DeliverSmCallback", "SmppClient", "StateCallback", "submit_sm_resp"]

log = logging.getLogger("smpp.aio.client")

# A coroutine function, or a plain one returning an asyncio.Future (answered from
# its done callback, without a task per deliver_sm); the command_status to answer.
DeliverSmCallback = Callable[[DeliverSm], Awaitable[int | None]]


def submit_sm_resp(response: Pdu) -> SubmitSmResp:
    """A submit_sm's response as a SubmitSmResp: a generic_nack becomes one with its status."""
    return as_response(response, SubmitSmResp)


def _deliver_resp(pdu: DeliverSm, status: int | None) -> DeliverSmResp:
    return DeliverSmResp(sequence_number=pdu.sequence_number, command_status=status or 0)


StateCallback = Callable[[bool], None]

_BIND_CLASS: dict[str, type[BindTransmitter | BindReceiver | BindTransceiver]] = {
    "transmitter": BindTransmitter,
    "receiver": BindReceiver,
    "transceiver": BindTransceiver,
}
# What spends a tps token: messages, not link management.
_THROTTLED = (SubmitSm, SubmitMulti, DataSm)


class _ClientConnection(SmppConnection):
    def __init__(self, client: SmppClient) -> None:
        super().__init__(
            Role.ESME,
            client._config,
            log,
            max_in_flight=client._max_in_flight,
            task_registry=client._handler_tasks,
            on_pdu=client._on_pdu,
        )
        self._client = client

    def _on_request(self, pdu: Pdu) -> None:
        if isinstance(pdu, DeliverSm):
            callback = self._client._on_deliver_sm
            if callback is None:
                self._respond(DeliverSmResp(sequence_number=pdu.sequence_number))
                return
            try:
                call = callback(pdu)
            except Exception:
                log.exception("on_deliver_sm failed")
                self._respond(_deliver_resp(pdu, CommandStatus.RX_T_APPN))
                return
            if isinstance(call, asyncio.Future):
                # No task per deliver_sm (see SmppConnection._answer_later).
                self._answer_later(call, functools.partial(self._answer_deliver, pdu))
            else:
                self._spawn(self._deliver(pdu, call))
        elif isinstance(pdu, (Outbind, AlertNotification)):
            pass  # never answered (sections 4.1.7, 4.12)
        else:
            # data_sm from the SMSC is not supported by this client.
            self._respond(make_response(pdu, CommandStatus.RINVCMDID))

    async def _deliver(self, pdu: DeliverSm, call: Awaitable[int | None]) -> None:
        try:
            status = await call
        except Exception:
            log.exception("on_deliver_sm failed")
            # Temporary application error: the SMSC delivers it again later.
            status = CommandStatus.RX_T_APPN
        self._respond(_deliver_resp(pdu, status))

    def _answer_deliver(self, pdu: DeliverSm, future: asyncio.Future[int | None]) -> None:
        if future.cancelled():
            return  # as a cancelled handler task: the connection is going, no answer
        exc = future.exception()
        if exc is not None:
            log.error("on_deliver_sm failed", exc_info=exc)
            status: int | None = CommandStatus.RX_T_APPN
        else:
            status = future.result()
        self._respond(_deliver_resp(pdu, status))

    def _on_state_changed(self, old: State, new: State) -> None:
        super()._on_state_changed(old, new)
        if old in BOUND_STATES and new not in BOUND_STATES:
            self._client._connection_ended(self)

    def _on_lost(self, exc: Exception | None) -> None:
        self._client._connection_ended(self)


class SmppClient:
    """An ESME that binds to one SMSC and keeps the bind up. See the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        system_id: str,
        password: str,
        bind: BindType = "transceiver",
        system_type: str = "",
        ssl: ssl_module.SSLContext | None = None,
        window: int = 10,
        tps: float | None = None,
        response_timeout: float = 10.0,
        enquire_link_interval: float | None = 30.0,
        reconnect: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        on_deliver_sm: DeliverSmCallback | None = None,
        on_state_change: StateCallback | None = None,
        connect_timeout: float = 10.0,
        address_range: str = "",
        addr_ton: int = 0,
        addr_npi: int = 0,
        tps_burst: int = 1,
        max_in_flight: int = 1000,
        on_pdu: PduObserver | None = None,
    ) -> None:
        """`on_pdu(direction, command_id, command_status)` is called for every
        PDU, direction "in" (from the SMSC) or "out"; it must be quick."""
        if bind not in _BIND_CLASS:
            raise ValueError(f"bind must be one of {sorted(_BIND_CLASS)}")
        if window < 1:
            raise ValueError("window must be at least 1")
        if tps is not None and tps <= 0:
            raise ValueError("tps must be positive")
        self.host = host
        self.port = port
        self.system_id = system_id
        self.bind_type: BindType = bind
        self.ssl = ssl
        self._bind_pdu = _BIND_CLASS[bind](
            system_id=system_id,
            password=password,
            system_type=system_type,
            addr_ton=addr_ton,
            addr_npi=addr_npi,
            address_range=address_range,
        )
        # The client detects a dead link by its unanswered enquire_link
        # (response_timeout) and an unanswered bind the same way, so the
        # inactivity and session_init timers are not needed here.
        self._config = SessionConfig(
            window=window,
            response_timeout=response_timeout,
            enquire_link_interval=enquire_link_interval,
            inactivity_timeout=None,
            session_init_timeout=None,
        )
        self._tps_interval = 1.0 / tps if tps is not None else None
        self._tps_tolerance = (max(1, tps_burst) - 1) * (self._tps_interval or 0.0)
        self._tat = 0.0  # the token bucket's theoretical arrival time (GCRA)
        self._reconnect = reconnect
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._connect_timeout = connect_timeout
        self._on_deliver_sm = on_deliver_sm
        self._on_state_change = on_state_change
        self._max_in_flight = max_in_flight
        self._on_pdu = on_pdu
        self._conn: _ClientConnection | None = None
        self._bound = False
        self._closing = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._bound_waiters: list[asyncio.Future[None]] = []
        self._handler_tasks: set[asyncio.Future[Any]] = set()
        self.last_bind_status: int | None = None
        """command_status of the last bind_*_resp (None before the first)."""
        self.binds = 0
        """How many times the client has bound."""

    # --- state ------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        return self._bound

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered."""
        conn = self._conn
        return conn.outstanding if conn is not None and not conn.is_lost else 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        """The current transport's extra info ("socket", "peercert" ...)."""
        conn = self._conn
        return conn.get_extra_info(name, default) if conn is not None else default

    def _set_bound(self, bound: bool) -> None:
        if bound == self._bound:
            return
        self._bound = bound
        if bound:
            self.binds += 1
            for waiter in self._bound_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._bound_waiters.clear()
        if self._on_state_change is not None:
            try:
                self._on_state_change(bound)
            except Exception:
                log.exception("on_state_change failed")

    def _fail_waiters(self, error: SmppAioError) -> None:
        for waiter in self._bound_waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._bound_waiters.clear()

    def _connection_ended(self, conn: _ClientConnection) -> None:
        if conn is self._conn:
            if self._bound:
                log.info(
                    "unbound host=%s port=%d system_id=%s", self.host, self.port, self.system_id
                )
            self._set_bound(False)

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect and bind in the background; see `wait_bound`."""
        if self._task is not None:
            return
        if self._closing:
            raise NotBoundError("the client is closed")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def __aenter__(self) -> SmppClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_bound(self, timeout: float | None = None) -> None:
        """Until the client is bound.

        Raises `BindRefusedError` if a bind is refused meanwhile (the client
        keeps retrying in the background), `NotBoundError` if the client
        stops, and TimeoutError after `timeout`.
        """
        if self._bound:
            return
        if self._closing or self._stopped:
            raise NotBoundError("the client is closed")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._bound_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        finally:
            if waiter in self._bound_waiters:
                self._bound_waiters.remove(waiter)

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                try:
                    conn = await self._connect_and_bind()
                except BindRefusedError as exc:
                    log.warning(
                        "bind refused host=%s port=%d system_id=%s status=0x%08X",
                        self.host,
                        self.port,
                        self.system_id,
                        exc.command_status,
                    )
                except (OSError, TimeoutError, SmppAioError) as exc:
                    log.warning(
                        "connect failed host=%s port=%d: %s: %s",
                        self.host,
                        self.port,
                        type(exc).__name__,
                        exc,
                    )
                except Exception:
                    # Whatever went wrong, the client keeps trying.
                    log.exception("connect failed host=%s port=%d", self.host, self.port)
                else:
                    attempt = 0
                    await asyncio.shield(conn.closed)
                if self._closing or not self._reconnect:
                    break
                # Exponential backoff with full jitter.
                cap = min(self._backoff_max, self._backoff_initial * 2 ** min(attempt, 32))
                attempt += 1
                await asyncio.sleep(random.uniform(0, cap))
        finally:
            self._stopped = True
            self._fail_waiters(NotBoundError("the client has stopped"))

    async def _connect_and_bind(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _ClientConnection(self), self.host, self.port, ssl=self.ssl
            )
        self._conn = conn
        try:
            response = await conn.request(self._bind_pdu)
        except BaseException:
            conn.close()
            raise
        status = response.command_status
        if status != CommandStatus.ROK or not conn.is_bound:
            self.last_bind_status = status or CommandStatus.RBINDFAIL
            conn.close()
            await asyncio.shield(conn.closed)
            error = BindRefusedError(self.last_bind_status)
            self._fail_waiters(error)
            raise error
        self.last_bind_status = status
        log.info(
            "bound host=%s port=%d system_id=%s bind_type=%s",
            self.host,
            self.port,
            self.system_id,
            self.bind_type,
        )
        self._set_bound(True)
        return conn

    async def close(self, timeout: float = 5.0) -> None:
        """Stop reconnecting; let outstanding requests finish, unbind, close.

        All within `timeout`; what is left is then dropped (outstanding
        requests fail with `ConnectionLostError`).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        already_closing = self._closing
        self._closing = True
        conn = self._conn
        if not already_closing and conn is not None and conn.is_bound and not conn.is_lost:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await conn.wait_idle()
            except TimeoutError:
                pass
            await conn.unbind(max(0.0, deadline - loop.time()))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        conn = self._conn
        if conn is not None and not conn.closed.done():
            conn.close()
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await asyncio.shield(conn.closed)
            except TimeoutError:
                conn.abort()
                await asyncio.shield(conn.closed)
        tasks = list(self._handler_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._set_bound(False)
        self._stopped = True
        self._fail_waiters(NotBoundError("the client is closed"))

    # --- requests -----------------------------------------------------------------

    async def request(self, pdu: Pdu) -> Pdu:
        """Send any request and return its response PDU (a generic_nack included).

        Raises `NotBoundError` when not bound, `ResponseTimeoutError`,
        `ConnectionLostError`, or the session's `InvalidState` for a request
        the bind type does not allow (submit_sm on a receiver).
        """
        conn = self._bound_connection()
        if self._tps_interval is not None and isinstance(pdu, _THROTTLED):
            return await conn.request(pdu, throttle=self._throttle)
        return await conn.request(pdu)

    async def submit_sm(self, pdu: SubmitSm) -> SubmitSmResp:
        """Submit one message; the response's command_status says whether it was accepted.

        A generic_nack is returned as a SubmitSmResp with the nack's status.
        """
        # request() inlined: one coroutine frame fewer per message.
        conn = self._bound_connection()
        throttle = self._throttle if self._tps_interval is not None else None
        return submit_sm_resp(await conn.request(pdu, throttle=throttle))

    def submit_sm_nowait(self, pdu: SubmitSm) -> asyncio.Future[Pdu] | None:
        """`submit_sm` when it can go at once (a window slot free, the tps allowing):
        the Future of the response, a SubmitSmResp or a generic_nack (`submit_sm_resp`
        turns either into a SubmitSmResp); else None, and then `submit_sm` waits.

        Raises `NotBoundError` as `submit_sm` does.
        """
        conn = self._bound_connection()
        may_send = self._token_now if self._tps_interval is not None else None
        return conn.request_nowait(pdu, may_send=may_send)

    async def data_sm(self, pdu: DataSm) -> DataSmResp:
        return as_response(await self.request(pdu), DataSmResp)

    def _bound_connection(self) -> _ClientConnection:
        conn = self._conn
        if conn is None or not self._bound or self._closing:
            raise NotBoundError("not bound")
        return conn

    def _wait_for_turn(self, now: float) -> float:
        """Seconds from `now` until the next send's turn (0: now). GCRA form of a token
        bucket: one token per 1/tps, `tps_burst` at most."""
        send_at = max(self._tat, now) - self._tps_tolerance
        return send_at - now if send_at > now else 0.0

    def _take_turn(self, now: float) -> None:
        assert self._tps_interval is not None
        self._tat = max(self._tat, now) + self._tps_interval

    def _token_now(self) -> bool:
        """Take the next turn if it is now (submit_sm_nowait), else leave it."""
        now = time.monotonic()
        if self._wait_for_turn(now) > 0:
            return False
        self._take_turn(now)
        return True

    def _throttle(self) -> float:
        """Take the next turn; seconds until it comes (0: send now).

        Plain, not a coroutine: it runs once per submit_sm and almost never waits.
        """
        now = time.monotonic()  # the event loop's clock, without looking the loop up
        wait = self._wait_for_turn(now)
        self._take_turn(now)
        return wait
