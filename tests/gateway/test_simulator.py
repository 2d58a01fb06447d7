"""The SMSC simulator over real sockets on 127.0.0.1: what the gateway's tests rely on."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gateway.config import SimulatorSettings
from gateway.simulator import Simulator, SimulatorOptions
from smpp import CommandStatus, DataSm, DeliverSm, EsmClass, MessageState, SubmitSm
from smpp.aio import BindRefusedError, ConnectionLostError, ResponseTimeoutError, SmppClient
from smpp.receipt import message_id_forms, parse_receipt
from tests.fakes import smsc

WAIT = 5.0
TEXT = "hello from the simulator test"


def submit(registered_delivery: int = 1, text: str = TEXT, **fields: Any) -> SubmitSm:
    return SubmitSm(
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="34600123456",
        registered_delivery=registered_delivery,
        short_message=text.encode(),
        **fields,
    )


class Esme:
    """An SmppClient that records the deliver_sm it gets and the order things arrive in."""

    def __init__(
        self, port: int, answer: Callable[[DeliverSm], Awaitable[int]] | None = None, **kw: Any
    ):
        self.receipts: asyncio.Queue[DeliverSm] = asyncio.Queue()
        self.order: list[tuple[str, str]] = []
        self._answer = answer
        options: dict[str, Any] = {
            "system_id": "esme",
            "password": "pw",
            "backoff_initial": 0.02,
            "backoff_max": 0.1,
            "response_timeout": 2.0,
        }
        options.update(kw)
        self.client = SmppClient("127.0.0.1", port, on_deliver_sm=self._on_deliver_sm, **options)

    async def _on_deliver_sm(self, pdu: DeliverSm) -> int:
        self.order.append(("deliver_sm", pdu.receipted_message_id or ""))
        self.receipts.put_nowait(pdu)
        return await self._answer(pdu) if self._answer is not None else 0

    async def submit(self, pdu: SubmitSm | None = None) -> str:
        response = await self.client.submit_sm(pdu if pdu is not None else submit())
        assert response.command_status == CommandStatus.ROK, hex(response.command_status)
        self.order.append(("submit_sm_resp", response.message_id))
        return response.message_id

    async def receipt(self) -> DeliverSm:
        async with asyncio.timeout(WAIT):
            return await self.receipts.get()


@asynccontextmanager
async def esme(port: int, **kw: Any) -> AsyncIterator[Esme]:
    e = Esme(port, **kw)
    await e.client.start()
    try:
        await e.client.wait_bound(WAIT)
        yield e
    finally:
        await e.client.close(timeout=1.0)


# --- submissions ------------------------------------------------------------


async def test_every_submit_gets_a_unique_id() -> None:
    async with smsc.happy() as sim, esme(sim.port, window=50) as e:
        responses = await asyncio.gather(
            *(e.client.submit_sm(submit(registered_delivery=0)) for _ in range(200))
        )
    assert all(r.command_status == CommandStatus.ROK for r in responses)
    assert len({r.message_id for r in responses}) == 200
    assert sim.submits == sim.accepted == 200
    assert sim.receipts_pending == 0  # none was asked for


async def test_bind_checks_system_id_and_password() -> None:
    async with smsc.happy(system_id="esme", password="pw") as sim:
        async with esme(sim.port) as e:
            assert e.client.bound
        for kw, status in (
            ({"password": "nope"}, CommandStatus.RINVPASWD),
            ({"system_id": "other"}, CommandStatus.RINVSYSID),
        ):
            client = SmppClient(
                "127.0.0.1",
                sim.port,
                reconnect=False,
                **({"system_id": "esme", "password": "pw"} | kw),
            )
            await client.start()
            try:
                with pytest.raises(BindRefusedError) as refused:
                    await client.wait_bound(WAIT)
                assert refused.value.command_status == status
            finally:
                await client.close(timeout=1.0)
        assert sim.binds == 1


# --- receipts -----------------------------------------------------------------


async def test_receipt_delivered() -> None:
    async with smsc.happy() as sim, esme(sim.port) as e:
        message_id = await e.submit()
        pdu = await e.receipt()
        await sim.wait_until(lambda: sim.receipts_acked == 1)
    assert pdu.esm_class == EsmClass.DELIVERY_RECEIPT
    assert pdu.receipted_message_id == message_id
    assert pdu.message_state == MessageState.DELIVERED
    # The receipt goes back the way the message came.
    assert (pdu.source_addr, pdu.source_addr_ton) == ("34600123456", 1)
    assert (pdu.destination_addr, pdu.dest_addr_ton) == ("ACME", 5)
    text = pdu.short_message.decode()
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 submit date:")
    receipt = parse_receipt(text)
    assert (receipt.id, receipt.stat, receipt.err, receipt.dlvrd) == (
        message_id,
        "DELIVRD",
        "000",
        1,
    )
    assert receipt.text == TEXT[:20]
    assert receipt.submit_date is not None and receipt.done_date is not None
    assert sim.receipts_pending == 0


async def test_delivery_ratio_zero_is_undelivered() -> None:
    async with smsc.undelivering() as sim, esme(sim.port) as e:
        message_id = await e.submit()
        pdu = await e.receipt()
    assert pdu.receipted_message_id == message_id
    assert pdu.message_state == MessageState.UNDELIVERABLE
    receipt = parse_receipt(pdu.short_message)
    assert receipt.stat == "UNDELIV"
    assert receipt.err != "000" and receipt.dlvrd == 0
    assert pdu.network_error_code is not None


async def test_delivery_ratio_is_drawn_per_message_with_a_seed() -> None:
    async with (
        smsc.happy(delivery_ratio=0.5, seed=7, dlr_delay_ms=0) as sim,
        esme(sim.port, window=50) as e,
    ):
        await asyncio.gather(*(e.submit() for _ in range(100)))
        states = [(await e.receipt()).message_state for _ in range(100)]
    delivered = states.count(MessageState.DELIVERED)
    assert states.count(MessageState.UNDELIVERABLE) == 100 - delivered
    assert 25 < delivered < 75


async def test_intermediate_then_final() -> None:
    async with smsc.happy(intermediate=True) as sim, esme(sim.port) as e:
        message_id = await e.submit()
        first, final = await e.receipt(), await e.receipt()
    assert first.esm_class == EsmClass.INTERMEDIATE_NOTIFICATION
    assert first.message_state == MessageState.ENROUTE
    assert parse_receipt(first.short_message).stat == "ENROUTE"
    assert final.esm_class == EsmClass.DELIVERY_RECEIPT
    assert final.message_state == MessageState.DELIVERED
    assert first.receipted_message_id == final.receipted_message_id == message_id


async def test_registered_delivery_decides_which_receipts() -> None:
    async with smsc.happy(dlr_delay_ms=0) as sim, esme(sim.port) as e:
        await e.submit(submit(registered_delivery=0))
        await e.submit(submit(registered_delivery=2))  # on failure only, and it is delivered
        assert sim.receipts_pending == 0
        message_id = await e.submit(submit(registered_delivery=0x11))  # intermediate asked for
        first, final = await e.receipt(), await e.receipt()
    assert (first.message_state, final.message_state) == (
        MessageState.ENROUTE,
        MessageState.DELIVERED,
    )
    assert final.receipted_message_id == message_id
    assert e.receipts.empty()


async def test_failure_only_receipt_on_failure() -> None:
    async with smsc.undelivering() as sim, esme(sim.port) as e:
        message_id = await e.submit(submit(registered_delivery=2))
        pdu = await e.receipt()
    assert (pdu.receipted_message_id, pdu.message_state) == (message_id, MessageState.UNDELIVERABLE)


async def test_hex_id_in_response_decimal_in_receipt() -> None:
    async with smsc.mixed_ids(first_id=0xABC000) as sim, esme(sim.port) as e:
        message_id = await e.submit()
        pdu = await e.receipt()
    assert message_id == "abc000"
    assert pdu.receipted_message_id == str(0xABC000)
    assert parse_receipt(pdu.short_message).id == str(0xABC000)
    assert set(message_id_forms(message_id)) & set(message_id_forms(pdu.receipted_message_id))


async def test_decimal_id_in_response_hex_in_receipt() -> None:
    async with (
        smsc.happy(receipt_id_format="hex", first_id=1_000_000_123) as sim,
        esme(sim.port) as e,
    ):
        message_id = await e.submit()
        pdu = await e.receipt()
    assert message_id == "1000000123"
    assert pdu.receipted_message_id == f"{1_000_000_123:x}"


async def test_receipt_before_response() -> None:
    async with smsc.early_receipts(dlr_delay_ms=1000) as sim, esme(sim.port) as e:
        message_id = await e.submit()
        await e.receipt()
    assert e.order == [("deliver_sm", message_id), ("submit_sm_resp", message_id)]


# --- receipts kept until acknowledged ---------------------------------------


async def test_receipts_kept_until_a_receiver_binds() -> None:
    async with smsc.happy(dlr_delay_ms=0) as sim:
        async with esme(sim.port, bind="transmitter") as tx:
            ids = [await tx.submit() for _ in range(3)]
            await sim.wait_until(lambda: sim.receipts_waiting == 3)
            assert sim.receipts_sent == 0
        async with esme(sim.port, bind="receiver") as rx:
            got = [(await rx.receipt()).receipted_message_id for _ in range(3)]
            await sim.wait_until(lambda: sim.receipts_pending == 0)
    assert sorted(got) == sorted(ids)
    assert sim.receipts_acked == 3


async def test_receipt_answered_with_an_error_is_resent() -> None:
    answers = iter([CommandStatus.RX_T_APPN, CommandStatus.RSYSERR])

    async def answer(pdu: DeliverSm) -> int:
        return next(answers, CommandStatus.ROK)

    async with smsc.happy(receipt_retry_ms=20) as sim, esme(sim.port, answer=answer) as e:
        message_id = await e.submit()
        got = [(await e.receipt()).receipted_message_id for _ in range(3)]
        await sim.wait_until(lambda: sim.receipts_acked == 1)
    assert got == [message_id] * 3
    assert sim.receipts_sent == 3 and sim.receipts_pending == 0


async def test_receipt_lost_with_the_connection_is_resent_after_restart() -> None:
    """The SMSC goes down with a receipt unacknowledged; back on the same port, it resends it."""
    hold = asyncio.Event()
    first_seen = asyncio.Event()

    async with smsc.happy() as sim:
        port = sim.port

        async def answer(pdu: DeliverSm) -> int:
            if not first_seen.is_set():
                first_seen.set()
                await hold.wait()  # never answered: the connection goes first
            return 0

        async with esme(port, answer=answer) as e:
            message_id = await e.submit()
            async with asyncio.timeout(WAIT):
                await first_seen.wait()
            await sim.stop_listening()
            assert not sim.listening and sim.receipts_pending == 1
            await sim.start()
            assert sim.port == port
            await e.client.wait_bound(WAIT)  # the client reconnected by itself
            first, again = await e.receipt(), await e.receipt()
            await sim.wait_until(lambda: sim.receipts_acked == 1)
            hold.set()
    assert first.receipted_message_id == again.receipted_message_id == message_id
    assert sim.receipts_pending == 0


# --- faults ---------------------------------------------------------------------


async def test_max_tps_throttles() -> None:
    async with smsc.throttling(max_tps=5) as sim, esme(sim.port, window=50) as e:
        responses = await asyncio.gather(
            *(e.client.submit_sm(submit(registered_delivery=0)) for _ in range(20))
        )
    statuses = [r.command_status for r in responses]
    ok = statuses.count(CommandStatus.ROK)
    assert 5 <= ok <= 7  # one second of burst, maybe a token refilled meanwhile
    assert statuses.count(CommandStatus.RTHROTTLED) == 20 - ok == sim.throttled


async def test_drop_every_drops_and_the_client_reconnects() -> None:
    async with smsc.dropping(every=3) as sim, esme(sim.port) as e:
        await e.submit(submit(registered_delivery=0))
        await e.submit(submit(registered_delivery=0))
        with pytest.raises(ConnectionLostError):
            await e.client.submit_sm(submit(registered_delivery=0))
        await sim.wait_until(lambda: sim.binds == 2)
        await e.client.wait_bound(WAIT)
        await e.submit(submit(registered_delivery=0))
    assert sim.dropped == 1 and sim.submits == 4 and sim.accepted == 3


async def test_never_answer_times_out() -> None:
    async with smsc.black_hole() as sim, esme(sim.port, response_timeout=0.2) as e:
        with pytest.raises(ResponseTimeoutError):
            await e.client.submit_sm(submit())
        assert sim.submits == 1 and sim.accepted == 0
        # Faults can be switched off at run time.
        sim.set_options(never_answer=False)
        await e.submit()


async def test_slow_answers() -> None:
    async with smsc.slow(ms=150) as sim, esme(sim.port) as e:
        started = time.monotonic()
        await e.submit(submit(registered_delivery=0))
        assert time.monotonic() - started >= 0.14
        assert sim.accepted == 1


def test_from_settings() -> None:
    settings = SimulatorSettings(delivery_ratio=0.25, dlr_delay_ms=5, intermediate=True, max_tps=9)
    sim = Simulator.from_settings(settings, system_id="gw", password="pw", never_answer=True)
    assert sim.options == SimulatorOptions(
        delivery_ratio=0.25,
        dlr_delay_ms=5,
        intermediate=True,
        max_tps=9,
        system_id="gw",
        password="pw",
        never_answer=True,
    )
    with pytest.raises(ValueError, match="delivery_ratio"):
        SimulatorOptions(delivery_ratio=1.5)


# --- another implementation as the ESME ------------------------------------------


def run_smpplib(port: int, result: dict[str, Any], stop: threading.Event) -> None:
    client_module = pytest.importorskip("smpplib.client")
    client = client_module.Client("127.0.0.1", port, timeout=0.5, allow_unknown_opt_params=True)

    def on_submit_sm_resp(pdu: Any, **kwargs: Any) -> None:
        result["submit_sm_resp"] = pdu

    def on_deliver_sm(pdu: Any, **kwargs: Any) -> int:
        result["deliver_sm"] = pdu
        return 0

    client.set_message_sent_handler(on_submit_sm_resp)
    client.set_message_received_handler(on_deliver_sm)
    try:
        client.connect()
        result["bind"] = client.bind_transceiver(system_id="esme", password="pw")
        client.send_message(
            source_addr_ton=5,
            source_addr="ACME",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="34600123456",
            short_message=b"hello from smpplib",
            registered_delivery=1,
        )
        while "deliver_sm" not in result and not stop.is_set():
            client.read_once(auto_send_enquire_link=True)
        result["unbind"] = client.unbind()
    except Exception as exc:  # reported to the test
        result["error"] = exc
    finally:
        client.disconnect()


async def test_smpplib_client_gets_its_receipt() -> None:
    pytest.importorskip("smpplib.client")
    async with smsc.happy(system_id="esme", password="pw") as sim:
        result: dict[str, Any] = {}
        stop = threading.Event()
        thread = threading.Thread(target=run_smpplib, args=(sim.port, result, stop), daemon=True)
        thread.start()
        try:
            await asyncio.to_thread(thread.join, WAIT)  # it unbinds once it has the receipt
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, WAIT)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    message_id = result["submit_sm_resp"].message_id
    deliver = result["deliver_sm"]
    assert result["submit_sm_resp"].status == 0
    assert deliver.esm_class == EsmClass.DELIVERY_RECEIPT
    assert deliver.receipted_message_id == message_id
    assert deliver.message_state == MessageState.DELIVERED
    assert b"stat:DELIVRD" in deliver.short_message
    assert sim.receipts_acked == 1


# --- the command --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_smsgw_simulator_command() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "simulator",
        "--listen",
        f"127.0.0.1:{port}",
        "--dlr-delay-ms",
        "10",
        "--intermediate",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(10):
            line = await proc.stdout.readline()
        assert line.decode().strip() == f"simulator listening on 127.0.0.1:{port}"
        async with esme(port) as e:
            message_id = await e.submit()
            first, final = await e.receipt(), await e.receipt()
        assert first.message_state == MessageState.ENROUTE
        assert (final.receipted_message_id, final.message_state) == (
            message_id,
            MessageState.DELIVERED,
        )
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            _stdout, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_data_sm_is_accepted_like_submit_sm() -> None:
    async with smsc.happy() as sim, esme(sim.port) as e:
        response = await e.client.data_sm(
            DataSm(
                source_addr="ACME",
                destination_addr="34600123456",
                registered_delivery=1,
                message_payload=TEXT.encode(),
            )
        )
        assert response.command_status == CommandStatus.ROK
        pdu = await e.receipt()
    assert pdu.receipted_message_id == response.message_id
    assert parse_receipt(pdu.short_message).text == TEXT[:20]
