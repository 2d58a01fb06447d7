"""An asyncio SMPP server (the SMSC side): one sans-IO `Session` per connection.

The application implements `ServerHandler`. Each request the session hands
over runs the handler in its own task, so a slow handler never stops the
connection from reading; responses go out in whatever order the handlers
finish, which SMPP allows (section 2.6: sequence numbers match them up).
enquire_link, unbind, generic_nack and RINVBNDSTS are answered by the
session itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from ..constants import CommandStatus
from ..errors import BindFailed, CommandFailed, ProtocolError
from ..pdu import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    make_response,
)
from ..session import Role, SessionConfig, State
from ._connection import PduObserver, SmppConnection, as_response

__all__ = [
    "BaseServerHandler",
    "BindType",
    "ServerHandler",
    "ServerSession",
    "SmppServer",
    "deliver_sm_resp",
]

log = logging.getLogger("smpp.aio.server")

BindType = Literal["transmitter", "receiver", "transceiver"]
Bind = BindTransmitter | BindReceiver | BindTransceiver

_BIND_TYPE: dict[type[Pdu], BindType] = {
    BindTransmitter: "transmitter",
    BindReceiver: "receiver",
    BindTransceiver: "transceiver",
}
_BIND_RESP: dict[type[Pdu], type[BindTransmitterResp | BindReceiverResp | BindTransceiverResp]] = {
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
    BindTransceiver: BindTransceiverResp,
}


class ServerHandler(Protocol):
    """What the application implements. Raise a `ProtocolError` subclass to answer with its status.

    Optional hooks, looked up at run time: `session_bound(session)`,
    `session_closed(session)` (plain or async functions) and
    `submit_multi(session, pdu) -> SubmitMultiResp`.
    """

    async def authenticate(self, session: ServerSession, bind: Bind) -> None:
        """Return to accept the bind; raise InvalidPassword / InvalidSystemId / BindFailed to refuse."""

    def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> Awaitable[str]:
        """Return the message_id.

        A coroutine function, or a plain one returning an asyncio.Future: the
        server then answers from the Future's done callback, without a task per
        submit_sm (a plain function may also raise at once to refuse).
        """

    def data_sm(self, session: ServerSession, pdu: DataSm) -> Awaitable[str]:
        """Return the message_id (a coroutine function, or a Future as for submit_sm)."""

    async def query_sm(self, session: ServerSession, pdu: QuerySm) -> QuerySmResp:
        """Return the answer; its sequence_number is set by the server."""

    async def cancel_sm(self, session: ServerSession, pdu: CancelSm) -> None: ...

    async def replace_sm(self, session: ServerSession, pdu: ReplaceSm) -> None: ...


def _unsupported(pdu: Pdu) -> CommandFailed:
    return CommandFailed(f"{type(pdu).__name__} is not supported", status=CommandStatus.RINVCMDID)


class BaseServerHandler:
    """A `ServerHandler` to subclass: refuses every bind and answers the rest with RINVCMDID."""

    async def authenticate(self, session: ServerSession, bind: Bind) -> None:
        raise BindFailed("no authentication configured")

    async def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> str:
        raise _unsupported(pdu)

    async def data_sm(self, session: ServerSession, pdu: DataSm) -> str:
        raise _unsupported(pdu)

    async def query_sm(self, session: ServerSession, pdu: QuerySm) -> QuerySmResp:
        raise _unsupported(pdu)

    async def cancel_sm(self, session: ServerSession, pdu: CancelSm) -> None:
        raise _unsupported(pdu)

    async def replace_sm(self, session: ServerSession, pdu: ReplaceSm) -> None:
        raise _unsupported(pdu)

    def session_bound(self, session: ServerSession) -> None:
        pass

    def session_closed(self, session: ServerSession) -> None:
        pass


class ServerSession:
    """One connection as the handler sees it."""

    __slots__ = ("_conn", "bind_type", "extra", "system_id")

    def __init__(self, conn: _ServerConnection) -> None:
        self._conn = conn
        self.system_id: str | None = None
        """The ESME's system_id, set once its bind is accepted."""
        self.bind_type: BindType | None = None
        self.extra: dict[str, Any] = {}
        """Free for the application (the account behind the bind, counters ...)."""

    def __repr__(self) -> str:
        return (
            f"ServerSession(system_id={self.system_id!r}, bind_type={self.bind_type!r}, "
            f"state={self.state.name}, peer={self.peer!r})"
        )

    @property
    def state(self) -> State:
        return self._conn.state

    @property
    def bound(self) -> bool:
        return self._conn.is_bound

    @property
    def peer(self) -> tuple[str, int] | None:
        """The ESME's (host, port)."""
        return self._conn.peer

    @property
    def outstanding(self) -> int:
        """Our requests (deliver_sm ...) awaiting the ESME's response."""
        return self._conn.outstanding

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info ("socket", "peercert", "ssl_object" ...)."""
        return self._conn.get_extra_info(name, default)

    async def send_deliver_sm(self, pdu: DeliverSm, timeout: float | None = None) -> DeliverSmResp:
        """Number `pdu`, send it when the window has room, and return the ESME's response.

        `timeout` counts from the call (the wait for a window slot included);
        the session's response_timeout applies in any case.

        A non-zero command_status is returned, not raised (a generic_nack
        becomes a DeliverSmResp with its status). Raises
        `ResponseTimeoutError`, `ConnectionLostError`, or the session's
        `InvalidState` if the ESME is not bound as receiver or transceiver.
        """
        return deliver_sm_resp(await self._conn.request(pdu, timeout=timeout))

    def send_deliver_sm_nowait(self, pdu: DeliverSm) -> asyncio.Future[Pdu] | None:
        """`send_deliver_sm` when a window slot is free: sent now, and the Future of the
        response (a DeliverSmResp or a generic_nack: see `deliver_sm_resp`); else None,
        and then `send_deliver_sm` waits for the slot. Only the session's
        response_timeout applies."""
        return self._conn.request_nowait(pdu)

    async def request(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        """Any request the SMSC may send (data_sm, alert_notification is not answered)."""
        return await self._conn.request(pdu, timeout=timeout)

    async def unbind(self, timeout: float = 5.0) -> None:
        """Send unbind, wait up to `timeout` for unbind_resp, then close the connection."""
        await self._conn.unbind(timeout)

    def close(self) -> None:
        """Close the connection after writing what is queued."""
        self._conn.close()

    def abort(self) -> None:
        """Drop the connection at once."""
        self._conn.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._conn.closed)


class _ServerConnection(SmppConnection):
    def __init__(self, server: SmppServer) -> None:
        super().__init__(
            Role.SMSC,
            server.config,
            log,
            max_in_flight=server.max_in_flight,
            task_registry=server._handler_tasks,
            on_pdu=server.on_pdu,
        )
        self._server = server
        self._handler = server.handler
        self.public = ServerSession(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)
        log.info("connection peer=%s", self.peer)

    def _on_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        log.info("connection closed peer=%s system_id=%s", self.peer, self.public.system_id)
        self._call_hook("session_closed")

    def _call_hook(self, name: str) -> None:
        hook = getattr(self._handler, name, None)
        if hook is None:
            return
        try:
            result = hook(self.public)
        except Exception:
            log.exception("%s hook failed peer=%s", name, self.peer)
            return
        if inspect.isawaitable(result):
            self._spawn(_await(result))

    def _on_request(self, pdu: Pdu) -> None:
        handler = self._handler
        session = self.public
        if isinstance(pdu, SubmitSm):
            self._handle(pdu, handler.submit_sm, session)
        elif isinstance(pdu, (BindTransmitter, BindReceiver, BindTransceiver)):
            self._spawn(self._bind(pdu))
        elif isinstance(pdu, DataSm):
            self._handle(pdu, handler.data_sm, session)
        elif isinstance(pdu, QuerySm):
            self._spawn(self._answer(pdu, handler.query_sm(session, pdu)))
        elif isinstance(pdu, CancelSm):
            self._spawn(self._answer(pdu, handler.cancel_sm(session, pdu)))
        elif isinstance(pdu, ReplaceSm):
            self._spawn(self._answer(pdu, handler.replace_sm(session, pdu)))
        elif isinstance(pdu, SubmitMulti):
            submit_multi = getattr(handler, "submit_multi", None)
            if submit_multi is None:
                self._respond(make_response(pdu, CommandStatus.RINVCMDID))
            else:
                self._spawn(self._answer(pdu, submit_multi(session, pdu)))
        elif isinstance(pdu, (Outbind, AlertNotification)):
            pass  # not for an SMSC, and never answered (sections 4.1.7, 4.12)
        else:
            self._respond(make_response(pdu, CommandStatus.RINVCMDID))

    async def _answer(self, pdu: Pdu, call: Awaitable[Any]) -> None:
        """Run one handler call and answer `pdu` with its result or its error's status."""
        try:
            response = _response_for(pdu, await call)
        except Exception as exc:
            response = self._refusal(pdu, exc)
        self._respond(response)

    def _handle(
        self,
        pdu: Pdu,
        method: Callable[[ServerSession, Any], Awaitable[Any]],
        session: ServerSession,
    ) -> None:
        """Call a handler that may be a coroutine function or return a Future (submit_sm)."""
        try:
            call = method(session, pdu)
        except Exception as exc:  # a plain handler refusing at once
            self._respond(self._refusal(pdu, exc))
            return
        if isinstance(call, asyncio.Future):
            self._answer_later(call, functools.partial(self._answer_future, pdu))
        else:
            self._spawn(self._answer(pdu, call))

    def _answer_future(self, pdu: Pdu, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return  # as a cancelled handler task: the connection is going, no answer
        exc = future.exception()
        if exc is None:
            try:
                response = _response_for(pdu, future.result())
            except Exception as error:  # a result of the wrong type
                response = self._refusal(pdu, error)
        elif isinstance(exc, Exception):
            response = self._refusal(pdu, exc)
        else:
            raise exc
        self._respond(response)

    def _refusal(self, pdu: Pdu, exc: Exception) -> Pdu:
        """The answer to `pdu` when its handler raised: a ProtocolError's status, else RSYSERR."""
        if isinstance(exc, ProtocolError):
            return make_response(pdu, exc.command_status)
        log.error("%s handler failed peer=%s", type(pdu).__name__, self.peer, exc_info=exc)
        return make_response(pdu, CommandStatus.RSYSERR)

    async def _bind(self, pdu: Bind) -> None:
        session = self.public
        response_class: type[BindTransmitterResp | BindReceiverResp | BindTransceiverResp]
        response_class = _BIND_RESP[type(pdu)]
        status: int = CommandStatus.ROK
        try:
            await self._handler.authenticate(session, pdu)
        except ProtocolError as exc:
            status = exc.command_status
        except Exception:
            log.exception("authenticate failed peer=%s", self.peer)
            status = CommandStatus.RSYSERR
        if self.is_lost:
            return
        if status == CommandStatus.ROK:
            session.system_id = pdu.system_id
            session.bind_type = _BIND_TYPE[type(pdu)]
        response = response_class(
            sequence_number=pdu.sequence_number,
            command_status=status,
            system_id=self._server.system_id,
        )
        self._respond(response)
        if status == CommandStatus.ROK and self.is_bound:
            log.info(
                "bound peer=%s system_id=%s bind_type=%s",
                self.peer,
                session.system_id,
                session.bind_type,
            )
            self._call_hook("session_bound")
        else:
            log.info(
                "bind refused peer=%s system_id=%s status=0x%08X",
                self.peer,
                pdu.system_id,
                status,
            )


def deliver_sm_resp(response: Pdu) -> DeliverSmResp:
    """A deliver_sm's response as a DeliverSmResp: a generic_nack becomes one with its status."""
    return as_response(response, DeliverSmResp)


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _response_for(pdu: Pdu, result: Any) -> Pdu:
    seq = pdu.sequence_number
    if isinstance(pdu, SubmitSm):
        return SubmitSmResp(sequence_number=seq, message_id=str(result))
    if isinstance(pdu, DataSm):
        return DataSmResp(sequence_number=seq, message_id=str(result))
    if isinstance(pdu, QuerySm):
        if not isinstance(result, QuerySmResp):
            raise TypeError("query_sm must return a QuerySmResp")
        return dataclasses.replace(result, sequence_number=seq)
    if isinstance(pdu, CancelSm):
        return CancelSmResp(sequence_number=seq)
    if isinstance(pdu, ReplaceSm):
        return ReplaceSmResp(sequence_number=seq)
    if isinstance(pdu, SubmitMulti):
        if isinstance(result, SubmitMultiResp):
            return dataclasses.replace(result, sequence_number=seq)
        return SubmitMultiResp(sequence_number=seq, message_id=str(result))
    return make_response(pdu)


_DEFAULT_CONFIG = SessionConfig()


class SmppServer:
    """Listens on TCP (TLS if `ssl` is given) and runs one session per connection."""

    def __init__(
        self,
        handler: ServerHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: ssl_module.SSLContext | None = None,
        config: SessionConfig = _DEFAULT_CONFIG,
        system_id: str = "smsgw",
        max_in_flight: int = 1000,
        on_pdu: PduObserver | None = None,
    ) -> None:
        """`system_id` goes into every bind_*_resp; `max_in_flight` handler calls
        per connection pause its reading until some finish. `on_pdu(direction,
        command_id, command_status)` is called for every PDU of every connection,
        direction "in" (from the ESME) or "out"; it must be quick."""
        self.handler = handler
        self.host = host
        self._port = port
        self.ssl = ssl
        self.config = config
        self.system_id = system_id
        self.max_in_flight = max_in_flight
        self.on_pdu = on_pdu
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        self._handler_tasks: set[asyncio.Future[Any]] = set()

    @property
    def port(self) -> int:
        """The port actually bound (the one asked for, or the one the OS chose for 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def sessions(self) -> list[ServerSession]:
        """The open connections."""
        return [conn.public for conn in self._connections]

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the server is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self), self.host, self._port, ssl=self.ssl
        )
        log.info("listening host=%s port=%d tls=%s", self.host, self.port, self.ssl is not None)

    async def __aenter__(self) -> SmppServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, unbind every bound session, and close every connection.

        Each bound session gets an unbind (new requests are then refused with
        RINVBNDSTS by the session); within `timeout` the server waits for the
        unbind_resps, for the answers of handlers still running and for queued
        data to be written, then aborts what is left and cancels the handlers.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        unbinds = [loop.create_task(conn.unbind(timeout)) for conn in connections if conn.is_bound]
        for conn in connections:
            if not conn.is_bound and not conn.is_lost and conn.state is not State.UNBOUND:
                conn.close()
        if unbinds:
            await asyncio.wait(unbinds, timeout=max(0.0, deadline - loop.time()))
            for task in unbinds:
                task.cancel()
            await asyncio.gather(*unbinds, return_exceptions=True)
        for conn in connections:
            conn.close()
        closing = [conn.closed for conn in connections if not conn.closed.done()]
        if closing:
            await asyncio.wait(closing, timeout=max(0.0, deadline - loop.time()))
        for conn in connections:
            if not conn.closed.done():
                conn.abort()
        closing = [conn.closed for conn in connections if not conn.closed.done()]
        if closing:
            await asyncio.wait(closing)
        # Handlers still running, of these connections and of earlier ones.
        handlers = list(self._handler_tasks)
        for handler in handlers:
            handler.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        log.info("closed")
