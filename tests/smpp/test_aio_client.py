"""SmppClient over real sockets: window, tps, reconnect, timeouts, keepalive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from smpp import (
    NEED_DATA,
    BindTransceiver,
    BindTransceiverResp,
    CommandStatus,
    EnquireLink,
    EnquireLinkResp,
    Framer,
    Unbind,
    UnbindResp,
    encode,
)
from smpp.aio import ConnectionLostError, NotBoundError, ResponseTimeoutError, submit_sm_resp

from .test_aio_server import WAIT, Handler, Harness, submit


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        await h.aclose()


async def test_window_is_respected(harness: Harness) -> None:
    handler = Handler()
    handler.gate = asyncio.Event()
    server = await harness.server(handler)
    client = await harness.client(server.port, window=5)
    submits = [asyncio.ensure_future(client.submit_sm(submit(i))) for i in range(30)]
    await handler.wait_until(lambda: handler.in_flight == 5)
    assert client.outstanding == 5
    # Give a window violation the chance to show before releasing the handler.
    await asyncio.sleep(0.05)
    assert handler.in_flight == 5
    handler.gate.set()
    responses = await asyncio.wait_for(asyncio.gather(*submits), WAIT)
    assert sorted(r.message_id for r in responses) == sorted(f"msg-{i}" for i in range(1, 31))
    assert handler.max_in_flight == 5
    # FIFO: the window hands out slots in the order the callers asked.
    assert [p.destination_addr for p in handler.submits] == [
        submit(i).destination_addr for i in range(30)
    ]


async def test_tps_is_honoured(harness: Harness) -> None:
    server = await harness.server()
    client = await harness.client(server.port, tps=50, window=20)
    # enquire_link does not spend tokens.
    started = time.monotonic()
    for _ in range(5):
        assert isinstance(await client.request(EnquireLink()), EnquireLinkResp)
    assert time.monotonic() - started < 0.1
    started = time.monotonic()
    responses = await asyncio.gather(*(client.submit_sm(submit(i)) for i in range(20)))
    elapsed = time.monotonic() - started
    assert all(r.command_status == CommandStatus.ROK for r in responses)
    # 20 at 50/s with a burst of one: 19 intervals of 20 ms.
    assert elapsed >= 0.3, elapsed


async def test_submit_sm_nowait_sends_only_what_can_go_at_once(harness: Harness) -> None:
    handler = Handler()
    handler.gate = asyncio.Event()
    server = await harness.server(handler)
    client = await harness.client(server.port, window=2)
    first, second = client.submit_sm_nowait(submit(1)), client.submit_sm_nowait(submit(2))
    assert first is not None and second is not None
    # The window is full: nothing is sent, and the caller is told to wait instead.
    assert client.submit_sm_nowait(submit(3)) is None
    waiting = asyncio.ensure_future(client.submit_sm(submit(3)))
    await handler.wait_until(lambda: handler.in_flight == 2)
    handler.gate.set()
    responses = [submit_sm_resp(await first), submit_sm_resp(await second), await waiting]
    assert [r.message_id for r in responses] == ["msg-1", "msg-2", "msg-3"]
    assert [p.destination_addr for p in handler.submits] == [
        submit(i).destination_addr for i in (1, 2, 3)
    ]


async def test_submit_sm_nowait_leaves_the_tps_token_when_it_may_not_send(
    harness: Harness,
) -> None:
    server = await harness.server()
    client = await harness.client(server.port, tps=5, window=10)
    sent = client.submit_sm_nowait(submit(1))
    assert sent is not None
    # The next turn is 200 ms away: not now, and asking does not use it up (if the
    # two refusals took a turn each, the submit_sm below would wait 600 ms).
    assert client.submit_sm_nowait(submit(2)) is None
    assert client.submit_sm_nowait(submit(2)) is None
    started = time.monotonic()
    assert (await client.submit_sm(submit(2))).command_status == CommandStatus.ROK
    assert 0.15 <= time.monotonic() - started < 0.45
    assert submit_sm_resp(await sent).command_status == CommandStatus.ROK


async def test_submit_sm_nowait_before_bind_raises_not_bound(harness: Harness) -> None:
    server = await harness.server()
    client = await harness.client(server.port, start=False)
    with pytest.raises(NotBoundError):
        client.submit_sm_nowait(submit(1))


async def test_reconnects_and_binds_again_after_the_server_drops_it(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    states: list[bool] = []
    client = await harness.client(server.port, on_state_change=states.append)
    await handler.wait_until(lambda: handler.binds == 1)
    handler.sessions[0].abort()
    await handler.wait_until(lambda: handler.binds == 2)
    await client.wait_bound(WAIT)
    assert states == [True, False, True]
    assert client.binds == 2
    assert (await client.submit_sm(submit())).command_status == CommandStatus.ROK


async def test_reconnects_when_the_server_comes_back(harness: Harness) -> None:
    handler = Handler()
    server = await harness.server(handler)
    port = server.port
    await server.close(timeout=0.5)
    client = await harness.client(port, bound=False)
    # Connection refused for a while: the client keeps trying with backoff.
    with pytest.raises(TimeoutError):
        await client.wait_bound(0.2)
    await harness.server(handler, port=port)
    await client.wait_bound(WAIT)
    assert client.bound


async def test_missing_response_fails_its_future_after_the_timeout(harness: Harness) -> None:
    handler = Handler()
    handler.gate = asyncio.Event()  # never set: the handler never returns
    server = await harness.server(handler)
    client = await harness.client(server.port, response_timeout=0.3, window=2)
    started = time.monotonic()
    with pytest.raises(ResponseTimeoutError):
        await client.submit_sm(submit())
    assert 0.25 < time.monotonic() - started < 2.0
    # The timed-out request left the window: the next one is sent (and times out too).
    with pytest.raises(ResponseTimeoutError):
        await client.submit_sm(submit())
    assert len(handler.submits) == 2


async def test_connection_lost_fails_outstanding_futures(harness: Harness) -> None:
    handler = Handler()
    handler.gate = asyncio.Event()
    server = await harness.server(handler)
    client = await harness.client(server.port, window=3, reconnect=False)
    submits = [asyncio.ensure_future(client.submit_sm(submit(i))) for i in range(5)]
    await handler.wait_until(lambda: handler.in_flight == 3)
    handler.sessions[0].abort()
    results = await asyncio.wait_for(asyncio.gather(*submits, return_exceptions=True), WAIT)
    # Three were outstanding, two were waiting for a window slot: all fail the same way.
    assert all(isinstance(r, ConnectionLostError) for r in results), results
    assert not client.bound
    with pytest.raises(NotBoundError):
        await client.submit_sm(submit())


async def test_request_before_bind_raises_not_bound(harness: Harness) -> None:
    client = await harness.client(1, start=False)
    with pytest.raises(NotBoundError):
        await client.submit_sm(submit())


async def test_close_lets_outstanding_requests_finish_then_unbinds(harness: Harness) -> None:
    handler = Handler()
    handler.gate = asyncio.Event()
    server = await harness.server(handler)
    client = await harness.client(server.port)
    pending = asyncio.ensure_future(client.submit_sm(submit()))
    await handler.wait_until(lambda: handler.in_flight == 1)
    closing = asyncio.ensure_future(client.close(timeout=WAIT))
    await asyncio.sleep(0)
    with pytest.raises(NotBoundError):
        await client.submit_sm(submit())
    handler.gate.set()
    assert (await pending).message_id == "msg-1"
    await closing
    assert not client.bound
    await handler.wait_until(lambda: len(handler.closed) == 1)


# --- keepalive, against a scripted SMSC ---------------------------------------------------


class ScriptedSmsc:
    """Binds anyone, counts enquire_links, answers them only if `answer_enquire_link`."""

    def __init__(self, answer_enquire_link: bool = True) -> None:
        self.answer_enquire_link = answer_enquire_link
        self.enquire_links = 0
        self.connections = 0
        self.changed = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def wait_until(self, predicate: Any) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        self.changed.set()
        framer = Framer()
        try:
            while data := await reader.read(65536):
                framer.receive_data(data)
                while (pdu := framer.next_pdu()) is not NEED_DATA:
                    seq = pdu.sequence_number
                    if isinstance(pdu, BindTransceiver):
                        writer.write(encode(BindTransceiverResp(sequence_number=seq)))
                    elif isinstance(pdu, EnquireLink):
                        self.enquire_links += 1
                        self.changed.set()
                        if self.answer_enquire_link:
                            writer.write(encode(EnquireLinkResp(sequence_number=seq)))
                    elif isinstance(pdu, Unbind):
                        writer.write(encode(UnbindResp(sequence_number=seq)))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


async def test_enquire_link_keepalive(harness: Harness) -> None:
    smsc = ScriptedSmsc()
    port = await smsc.start()
    try:
        client = await harness.client(port, enquire_link_interval=0.05)
        await smsc.wait_until(lambda: smsc.enquire_links >= 3)
        assert client.bound
        assert smsc.connections == 1
        await client.close()
    finally:
        await smsc.close()


async def test_unanswered_enquire_link_drops_the_link_and_reconnects(harness: Harness) -> None:
    smsc = ScriptedSmsc(answer_enquire_link=False)
    port = await smsc.start()
    try:
        states: list[bool] = []
        client = await harness.client(
            port, enquire_link_interval=0.05, response_timeout=0.1, on_state_change=states.append
        )
        await smsc.wait_until(lambda: smsc.connections >= 2)
        await client.wait_bound(WAIT)
        assert states[:3] == [True, False, True]
        await client.close()
    finally:
        await smsc.close()
