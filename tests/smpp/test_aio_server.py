"""SmppServer over real sockets on 127.0.0.1, driven by SmppClient and by raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from asyncio.trsock import TransportSocket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from smpp import (
    BindTransceiver,
    BindTransceiverResp,
    CancelSm,
    CancelSmResp,
    CommandId,
    CommandStatus,
    DeliverSm,
    EnquireLink,
    GenericNack,
    MessageState,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    decode,
    encode,
)
from smpp.aio import (
    BaseServerHandler,
    BindRefusedError,
    ServerSession,
    SmppClient,
    SmppServer,
    deliver_sm_resp,
)
from smpp.errors import InvalidPassword, InvalidSystemId, ProtocolError, Throttled
from smpp.session import SessionConfig, State

PASSWORD = "secret"
WAIT = 3.0  # upper bound on any wait for an event; tests normally take milliseconds


# --- helpers shared with test_aio_client.py ---------------------------------------------


class Handler(BaseServerHandler):
    """Accepts system_id "esme*" with PASSWORD; records what happens; submits can be held."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.sessions: list[ServerSession] = []
        self.closed: list[ServerSession] = []
        self.submits: list[SubmitSm] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None  # when set, submit_sm waits for it
        self.submit_error: ProtocolError | None = None
        self.binds = 0

    def _changed(self) -> None:
        self.changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def authenticate(self, session: ServerSession, bind: Any) -> None:
        if not bind.system_id.startswith("esme"):
            raise InvalidSystemId("unknown system_id")
        if bind.password != PASSWORD:
            raise InvalidPassword("wrong password")

    def session_bound(self, session: ServerSession) -> None:
        self.binds += 1
        self.sessions.append(session)
        self._changed()

    def session_closed(self, session: ServerSession) -> None:
        self.closed.append(session)
        self._changed()

    async def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> str:
        self.submits.append(pdu)
        message_id = f"msg-{len(self.submits)}"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._changed()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.submit_error is not None:
                raise self.submit_error
            return message_id
        finally:
            self.in_flight -= 1
            self._changed()

    async def query_sm(self, session: ServerSession, pdu: QuerySm) -> QuerySmResp:
        return QuerySmResp(message_id=pdu.message_id, message_state=MessageState.DELIVERED)

    async def cancel_sm(self, session: ServerSession, pdu: CancelSm) -> None:
        return None


class Harness:
    """Starts servers and clients and closes them all (clients first) at the end."""

    def __init__(self) -> None:
        self.servers: list[SmppServer] = []
        self.clients: list[SmppClient] = []
        self.raw: list[asyncio.StreamWriter] = []

    async def server(self, handler: Handler | None = None, **kwargs: Any) -> SmppServer:
        server = SmppServer(handler or Handler(), **kwargs)
        await server.start()
        self.servers.append(server)
        return server

    async def client(
        self, port: int, *, start: bool = True, bound: bool = True, **kwargs: Any
    ) -> SmppClient:
        kwargs.setdefault("system_id", "esme1")
        kwargs.setdefault("password", PASSWORD)
        kwargs.setdefault("backoff_initial", 0.02)
        kwargs.setdefault("backoff_max", 0.1)
        client = SmppClient("127.0.0.1", port, **kwargs)
        self.clients.append(client)
        if start:
            await client.start()
            if bound:
                await client.wait_bound(WAIT)
        return client

    async def connect_raw(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.raw.append(writer)
        return reader, writer

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close(timeout=1.0)
        for writer in self.raw:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        for server in self.servers:
            await server.close(timeout=1.0)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        await h.aclose()


async def read_pdu(reader: asyncio.StreamReader) -> Pdu:
    async with asyncio.timeout(WAIT):
        header = await reader.readexactly(16)
        length = int.from_bytes(header[:4], "big")
        body = await reader.readexactly(length - 16)
    return decode(header + body)


async def raw_bind(
    port: int, harness: Harness, system_id: str = "esme-raw"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await harness.connect_raw(port)
    writer.write(encode(BindTransceiver(sequence_number=1, system_id=system_id, password=PASSWORD)))
    response = await read_pdu(reader)
    assert isinstance(response, BindTransceiverResp)
    assert response.command_status == CommandStatus.ROK
    return reader, writer


def submit(n: int = 0, **kwargs: Any) -> SubmitSm:
    return SubmitSm(
        source_addr="Sender",
        destination_addr=f"3460000{n:04d}",
        short_message=b"hello",
        **kwargs,
    )


# --- bind -------------------------------------------------------------------------------


@pytest.mark.parametrize("bind", ["transmitter", "receiver", "transceiver"])
async def test_bind_each_type(harness: Harness, bind: str) -> None:
    handler = Handler()
    server = await harness.server(handler, system_id="smsc-test")
    client = await harness.client(server.port, bind=bind)
    assert client.bound
    assert client.last_bind_status == CommandStatus.ROK
    await handler.wait_until(lambda: bool(handler.sessions))
    session = handler.sessions[0]
    assert session.system_id == "esme1"
    assert session.bind_type == bind
    assert (
        session.state
        is {
            "transmitter": State.BOUND_TX,
            "receiver": State.BOUND_RX,
            "transceiver": State.BOUND_TRX,
        }[bind]
    )
    assert session.peer is not None and session.peer[0] == "127.0.0.1"
    assert server.sessions == [session]


async def test_wrong_password_is_refused_with_rinvpaswd(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    client = await harness.client(
        server.port, password="wrong", reconnect=False, start=True, bound=False
    )
    with pytest.raises(BindRefusedError) as info:
        await client.wait_bound(WAIT)
    assert info.value.command_status == CommandStatus.RINVPASWD
    assert client.last_bind_status == CommandStatus.RINVPASWD
    assert not client.bound
    assert handler.sessions == []


async def test_unknown_system_id_is_refused_with_rinvsysid(harness: Harness) -> None:
    server = await harness.server()
    reader, _writer = await harness.connect_raw(server.port)
    _writer.write(encode(BindTransceiver(sequence_number=7, system_id="nobody", password="x")))
    response = await read_pdu(reader)
    assert isinstance(response, BindTransceiverResp)
    assert response.sequence_number == 7
    assert response.command_status == CommandStatus.RINVSYSID


# --- requests -----------------------------------------------------------------------------


async def test_submit_returns_the_message_id(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    client = await harness.client(server.port, bind="transmitter")
    response = await client.submit_sm(submit(1, registered_delivery=1))
    assert response.command_status == CommandStatus.ROK
    assert response.message_id == "msg-1"
    assert handler.submits[0].destination_addr == "34600000001"
    assert handler.submits[0].registered_delivery == 1


async def test_handler_error_is_answered_with_its_status_and_returned(harness: Harness) -> None:
    handler = Handler()
    handler.submit_error = Throttled("slow down")
    server = await harness.server(handler)
    client = await harness.client(server.port)
    response = await client.submit_sm(submit())
    # Returned, not raised: RTHROTTLED is temporary and the caller decides.
    assert response.command_status == CommandStatus.RTHROTTLED


async def test_handler_crash_is_answered_with_rsyserr(harness: Harness) -> None:
    class Crashing(Handler):
        async def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> str:
            raise RuntimeError("bug")

    server = await harness.server(Crashing())
    client = await harness.client(server.port)
    response = await client.submit_sm(submit())
    assert response.command_status == CommandStatus.RSYSERR


class FutureHandler(Handler):
    """submit_sm as a plain function returning a Future (the server's task-free path):
    short_message says what to do."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[asyncio.Future[str]] = []

    def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> asyncio.Future[str]:  # type: ignore[override]
        if pdu.short_message == b"refuse now":
            raise Throttled("refused before any future")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if pdu.short_message == b"fail later":
            future.set_exception(InvalidPassword("a ProtocolError, later"))
        elif pdu.short_message == b"crash later":
            future.set_exception(RuntimeError("bug"))
        elif pdu.short_message == b"hold":
            self.held.append(future)
            self._changed()
        else:
            future.set_result(f"fut-{pdu.destination_addr}")
        return future


def _saying(text: bytes, n: int = 0) -> SubmitSm:
    return SubmitSm(source_addr="Sender", destination_addr=f"3460000{n:04d}", short_message=text)


async def test_a_handler_may_answer_through_a_future(harness: Harness) -> None:
    handler = FutureHandler()
    server = await harness.server(handler)
    client = await harness.client(server.port)
    ok = await client.submit_sm(submit(7))
    assert (ok.command_status, ok.message_id) == (CommandStatus.ROK, "fut-34600000007")
    refused = await client.submit_sm(_saying(b"refuse now"))
    assert refused.command_status == CommandStatus.RTHROTTLED
    failed = await client.submit_sm(_saying(b"fail later"))
    assert failed.command_status == CommandStatus.RINVPASWD
    crashed = await client.submit_sm(_saying(b"crash later"))
    assert crashed.command_status == CommandStatus.RSYSERR
    # A held Future is answered when it is done, and others pass it meanwhile.
    held = asyncio.ensure_future(client.submit_sm(_saying(b"hold", 1)))
    await handler.wait_until(lambda: bool(handler.held))
    assert (await client.submit_sm(submit(2))).message_id == "fut-34600000002"
    assert not held.done()
    handler.held[0].set_result("late")
    assert (await held).message_id == "late"


async def test_close_cancels_a_future_still_pending(harness: Harness) -> None:
    handler = FutureHandler()
    server = await harness.server(handler)
    client = await harness.client(server.port)
    pending = asyncio.ensure_future(client.submit_sm(_saying(b"hold")))
    await handler.wait_until(lambda: bool(handler.held))
    await server.close(timeout=0.5)
    assert handler.held[0].cancelled()
    pending.cancel()
    with contextlib.suppress(BaseException):
        await pending


async def test_query_cancel_and_unsupported_replace(harness: Harness) -> None:
    server = await harness.server()
    client = await harness.client(server.port)
    query = await client.request(QuerySm(message_id="abc", source_addr="Sender"))
    assert isinstance(query, QuerySmResp)
    assert (query.message_id, query.message_state) == ("abc", MessageState.DELIVERED)
    cancel = await client.request(CancelSm(message_id="abc"))
    assert isinstance(cancel, CancelSmResp) and cancel.command_status == CommandStatus.ROK
    replace = await client.request(ReplaceSm(message_id="abc"))
    assert replace.command_status == CommandStatus.RINVCMDID


async def test_slow_handler_does_not_block_the_session(harness: Harness) -> None:
    class HoldFirst(Handler):
        async def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> str:
            if pdu.destination_addr.endswith("0001"):
                assert self.gate is not None
                await self.gate.wait()
            return pdu.destination_addr

    handler = HoldFirst()
    handler.gate = asyncio.Event()
    server = await harness.server(handler)
    reader, writer = await raw_bind(server.port, harness)
    writer.write(
        encode(submit(1, sequence_number=10))
        + encode(submit(2, sequence_number=11))
        + encode(EnquireLink(sequence_number=12))
    )
    # Answers may come in any order (section 2.6): the held one comes last.
    got = [await read_pdu(reader), await read_pdu(reader)]
    assert {(p.command_id, p.sequence_number) for p in got} == {
        (CommandId.SUBMIT_SM_RESP, 11),
        (CommandId.ENQUIRE_LINK_RESP, 12),
    }
    handler.gate.set()
    last = await read_pdu(reader)
    assert (last.command_id, last.sequence_number) == (CommandId.SUBMIT_SM_RESP, 10)
    assert isinstance(last, SubmitSmResp)
    assert last.message_id == "34600000001"


# --- deliver_sm -----------------------------------------------------------------------------


@pytest.mark.parametrize("bind", ["receiver", "transceiver"])
async def test_deliver_sm_reaches_on_deliver_sm_and_resp_comes_back(
    harness: Harness, bind: str
) -> None:
    handler = Handler()
    server = await harness.server(handler)
    delivered: list[DeliverSm] = []

    async def on_deliver_sm(pdu: DeliverSm) -> int | None:
        delivered.append(pdu)
        return None if pdu.destination_addr == "ok" else CommandStatus.RX_T_APPN

    await harness.client(server.port, bind=bind, on_deliver_sm=on_deliver_sm)
    await handler.wait_until(lambda: bool(handler.sessions))
    session = handler.sessions[0]
    receipt = DeliverSm(
        source_addr="34600000001",
        destination_addr="ok",
        esm_class=0x04,
        short_message=b"id:msg-1 stat:DELIVRD",
        receipted_message_id="msg-1",
        message_state=MessageState.DELIVERED,
    )
    response = await session.send_deliver_sm(receipt, timeout=WAIT)
    assert response.command_status == CommandStatus.ROK
    assert delivered[0].receipted_message_id == "msg-1"
    assert delivered[0].message_state == MessageState.DELIVERED
    assert delivered[0].short_message == b"id:msg-1 stat:DELIVRD"
    refused = await session.send_deliver_sm(DeliverSm(destination_addr="no"), timeout=WAIT)
    assert refused.command_status == CommandStatus.RX_T_APPN


async def test_on_deliver_sm_may_answer_through_a_future(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    held: list[asyncio.Future[int | None]] = []

    def on_deliver_sm(pdu: DeliverSm) -> asyncio.Future[int | None]:
        if pdu.destination_addr == "raise":
            raise RuntimeError("bug before any future")
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        if pdu.destination_addr == "fail":
            future.set_exception(RuntimeError("bug later"))
        elif pdu.destination_addr == "hold":
            held.append(future)
        else:
            future.set_result(None)
        return future

    await harness.client(server.port, bind="transceiver", on_deliver_sm=on_deliver_sm)
    await handler.wait_until(lambda: bool(handler.sessions))
    session = handler.sessions[0]

    async def send(to: str) -> int:
        pdu = DeliverSm(destination_addr=to, esm_class=0x04)
        return (await session.send_deliver_sm(pdu, timeout=WAIT)).command_status

    assert await send("ok") == CommandStatus.ROK
    # A handler that breaks, now or later, answers "temporary": the SMSC resends.
    assert await send("raise") == CommandStatus.RX_T_APPN
    assert await send("fail") == CommandStatus.RX_T_APPN
    later = asyncio.ensure_future(send("hold"))
    async with asyncio.timeout(WAIT):
        while not held:
            await asyncio.sleep(0.01)
    assert await send("ok") == CommandStatus.ROK
    assert not later.done()
    held[0].set_result(CommandStatus.RX_P_APPN)
    assert await later == CommandStatus.RX_P_APPN


async def test_deliver_sm_to_a_transmitter_is_refused_locally(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    await harness.client(server.port, bind="transmitter")
    await handler.wait_until(lambda: bool(handler.sessions))
    with pytest.raises(ProtocolError):
        await handler.sessions[0].send_deliver_sm(DeliverSm())


async def test_send_deliver_sm_waits_for_a_window_slot(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler, config=SessionConfig(window=2))
    gate = asyncio.Event()
    in_callback = 0
    most = 0

    async def on_deliver_sm(pdu: DeliverSm) -> int | None:
        nonlocal in_callback, most
        in_callback += 1
        most = max(most, in_callback)
        handler.changed.set()
        await gate.wait()
        in_callback -= 1
        return None

    await harness.client(server.port, on_deliver_sm=on_deliver_sm)
    await handler.wait_until(lambda: bool(handler.sessions))
    session = handler.sessions[0]
    sends = [asyncio.ensure_future(session.send_deliver_sm(DeliverSm())) for _ in range(6)]
    await handler.wait_until(lambda: in_callback == 2)
    assert session.outstanding == 2
    gate.set()
    responses = await asyncio.wait_for(asyncio.gather(*sends), WAIT)
    assert [r.command_status for r in responses] == [0] * 6
    assert most == 2


async def test_send_deliver_sm_nowait_sends_only_into_a_free_slot(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler, config=SessionConfig(window=2))
    gate = asyncio.Event()

    async def on_deliver_sm(pdu: DeliverSm) -> int | None:
        await gate.wait()
        return CommandStatus.RX_P_APPN if pdu.destination_addr == "refuse" else None

    await harness.client(server.port, on_deliver_sm=on_deliver_sm)
    await handler.wait_until(lambda: bool(handler.sessions))
    session = handler.sessions[0]
    first = session.send_deliver_sm_nowait(DeliverSm(destination_addr="ok"))
    second = session.send_deliver_sm_nowait(DeliverSm(destination_addr="refuse"))
    assert first is not None and second is not None
    assert session.send_deliver_sm_nowait(DeliverSm()) is None  # the window is full
    assert session.outstanding == 2
    gate.set()
    statuses = [deliver_sm_resp(await f).command_status for f in (first, second)]
    assert statuses == [CommandStatus.ROK, CommandStatus.RX_P_APPN]


# --- misbehaving peers --------------------------------------------------------------------


async def test_garbage_gets_generic_nack_and_the_neighbour_is_unaffected(
    harness: Harness,
) -> None:
    handler = Handler()
    server = await harness.server(handler)
    client = await harness.client(server.port)
    reader, writer = await raw_bind(server.port, harness, "esme-bad")

    # An unknown command_id: generic_nack RINVCMDID echoing the sequence number (section 4.3).
    writer.write(
        (16).to_bytes(4, "big")
        + (0x0000_7777).to_bytes(4, "big")
        + bytes(4)
        + (42).to_bytes(4, "big")
    )
    nack = await read_pdu(reader)
    assert isinstance(nack, GenericNack)
    assert (nack.command_status, nack.sequence_number) == (CommandStatus.RINVCMDID, 42)
    assert (await client.submit_sm(submit())).message_id == "msg-1"

    # The session survives that; a command_length under 16 it cannot.
    writer.write(encode(EnquireLink(sequence_number=43)))
    assert (await read_pdu(reader)).command_id == CommandId.ENQUIRE_LINK_RESP
    writer.write((8).to_bytes(4, "big") + (CommandId.SUBMIT_SM).to_bytes(4, "big") + bytes(8))
    nack = await read_pdu(reader)
    assert isinstance(nack, GenericNack)
    assert nack.command_status == CommandStatus.RINVCMDLEN
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""  # closed by the server

    assert client.bound
    assert (await client.submit_sm(submit())).message_id == "msg-2"
    await handler.wait_until(lambda: len(handler.closed) == 1)
    assert handler.closed[0].system_id == "esme-bad"


async def test_submit_before_bind_gets_rinvbndsts(harness: Harness) -> None:
    server = await harness.server()
    reader, writer = await harness.connect_raw(server.port)
    writer.write(encode(submit(sequence_number=5)))
    response = await read_pdu(reader)
    assert (response.command_id, response.sequence_number, response.command_status) == (
        CommandId.SUBMIT_SM_RESP,
        5,
        CommandStatus.RINVBNDSTS,
    )


# --- shutdown -------------------------------------------------------------------------------


async def test_close_unbinds_every_client_within_its_timeout(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    states: list[bool] = []
    clients = [
        await harness.client(server.port, system_id=f"esme{i}", on_state_change=states.append)
        for i in range(3)
    ]
    assert all(c.bound for c in clients)
    started = time.monotonic()
    await server.close(timeout=2.0)
    # Every client answered unbind_resp, so close did not wait for its timeout.
    assert time.monotonic() - started < 1.0
    assert not any(c.bound for c in clients)
    assert states.count(False) == 3
    assert len(handler.closed) == 3
    assert server.sessions == []


async def test_close_gives_up_on_a_peer_that_ignores_unbind(harness: Harness) -> None:
    server = await harness.server()
    reader, _writer = await raw_bind(server.port, harness)
    started = time.monotonic()
    await server.close(timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 1.5
    assert isinstance(await read_pdu(reader), Unbind)
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""


async def test_raw_peer_unbind_is_answered_and_closed(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    reader, writer = await raw_bind(server.port, harness)
    writer.write(encode(Unbind(sequence_number=2)))
    response = await read_pdu(reader)
    assert isinstance(response, UnbindResp) and response.sequence_number == 2
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""
    await handler.wait_until(lambda: len(handler.closed) == 1)


# --- sockets --------------------------------------------------------------------------------


async def test_tcp_nodelay_on_both_ends(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    client = await harness.client(server.port)
    await handler.wait_until(lambda: bool(handler.sessions))
    for sock in (handler.sessions[0].get_extra_info("socket"), client.get_extra_info("socket")):
        assert isinstance(sock, (socket.socket, TransportSocket))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
async def test_tls(harness: Harness, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    handler = Handler()
    server = await harness.server(handler, ssl=server_ctx)
    client = await harness.client(server.port, ssl=client_ctx)
    assert (await client.submit_sm(submit())).message_id == "msg-1"
    await handler.wait_until(lambda: bool(handler.sessions))
    assert handler.sessions[0].get_extra_info("ssl_object") is not None
    await client.close()
    await handler.wait_until(lambda: len(handler.closed) == 1)


async def test_unbind_lets_answers_in_flight_reach_the_client(harness: Harness) -> None:
    handler = Handler()
    handler.gate = asyncio.Event()
    server = await harness.server(handler)
    states: list[bool] = []

    def on_state_change(bound: bool) -> None:
        states.append(bound)
        handler.changed.set()

    client = await harness.client(server.port, on_state_change=on_state_change, reconnect=False)
    pending = asyncio.ensure_future(client.submit_sm(submit()))
    await handler.wait_until(lambda: handler.in_flight == 1)
    unbinding = asyncio.ensure_future(handler.sessions[0].unbind(timeout=WAIT))
    await handler.wait_until(lambda: not client.bound)
    # Unbound: nothing new goes out, but the answer owed still arrives (section 4.2).
    assert states == [True, False]
    handler.gate.set()
    assert (await pending).message_id == "msg-1"
    await asyncio.wait_for(unbinding, WAIT)
    await handler.wait_until(lambda: len(handler.closed) == 1)


async def test_a_connection_that_never_binds_is_closed(harness: Harness) -> None:
    server = await harness.server(config=SessionConfig(session_init_timeout=0.1))
    reader, _writer = await harness.connect_raw(server.port)
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""


async def test_a_receiver_may_not_submit(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    client = await harness.client(server.port, bind="receiver")
    with pytest.raises(ProtocolError):
        await client.submit_sm(submit())
    assert handler.submits == []
    assert client.bound
