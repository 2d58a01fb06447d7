"""smpplib (an implementation we did not write) binds to our SmppServer over a real socket.

The smpplib client runs in a thread with blocking sockets: it binds as a
transceiver, submits with registered_delivery=1, reads submit_sm_resp and then
the receipt the server pushes with send_deliver_sm, answers it, and unbinds.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

smpplib_client = pytest.importorskip("smpplib.client")
smpplib_consts = pytest.importorskip("smpplib.consts")

from smpp import DeliverSm, EsmClass, MessageState, SubmitSm  # noqa: E402
from smpp.aio import BaseServerHandler, ServerSession, SmppServer  # noqa: E402
from smpp.errors import InvalidPassword  # noqa: E402
from smpp.receipt import Receipt, format_receipt  # noqa: E402

PASSWORD = "secret"
WAIT = 5.0


class ReceiptingHandler(BaseServerHandler):
    def __init__(self) -> None:
        self.submitted: asyncio.Queue[tuple[ServerSession, SubmitSm, str]] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def authenticate(self, session: ServerSession, bind: Any) -> None:
        if bind.password != PASSWORD:
            raise InvalidPassword("wrong password")

    async def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> str:
        message_id = "a1b2c3d4"
        self.submitted.put_nowait((session, pdu, message_id))
        return message_id

    def session_closed(self, session: ServerSession) -> None:
        self.closed.set()


def run_smpplib(port: int, result: dict[str, Any], stop: threading.Event) -> None:
    """The ESME side, in a thread: everything it saw goes into `result`."""
    client = smpplib_client.Client("127.0.0.1", port, timeout=0.5, allow_unknown_opt_params=True)

    def on_submit_sm_resp(pdu: Any, **kwargs: Any) -> None:
        result["submit_sm_resp"] = pdu

    def on_deliver_sm(pdu: Any, **kwargs: Any) -> int:
        result["deliver_sm"] = pdu
        return 0  # smpplib answers deliver_sm_resp with this status

    client.set_message_sent_handler(on_submit_sm_resp)
    client.set_message_received_handler(on_deliver_sm)
    try:
        client.connect()
        result["bind"] = client.bind_transceiver(system_id="esme-smpplib", password=PASSWORD)
        client.send_message(
            source_addr_ton=smpplib_consts.SMPP_TON_ALNUM,
            source_addr="Sender",
            dest_addr_ton=smpplib_consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib_consts.SMPP_NPI_ISDN,
            destination_addr="34600123456",
            short_message=b"hello from smpplib",
            registered_delivery=1,
        )
        while "deliver_sm" not in result and not stop.is_set():
            client.read_once(auto_send_enquire_link=True)
        result["unbind"] = client.unbind()
    except Exception as exc:  # reported to the test, which fails on it
        result["error"] = exc
    finally:
        client.disconnect()


async def test_smpplib_binds_submits_and_receives_a_receipt() -> None:
    handler = ReceiptingHandler()
    server = SmppServer(handler)
    await server.start()
    result: dict[str, Any] = {}
    stop = threading.Event()
    thread = threading.Thread(target=run_smpplib, args=(server.port, result, stop), daemon=True)
    thread.start()
    try:
        async with asyncio.timeout(WAIT):
            session, submitted, message_id = await handler.submitted.get()
        assert session.system_id == "esme-smpplib"
        assert session.bind_type == "transceiver"
        assert submitted.destination_addr == "34600123456"
        assert submitted.registered_delivery == 1
        assert submitted.short_message == b"hello from smpplib"

        receipt = DeliverSm(
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=submitted.destination_addr,
            dest_addr_ton=5,
            destination_addr=submitted.source_addr,
            esm_class=EsmClass.DELIVERY_RECEIPT,
            short_message=format_receipt(Receipt(id=message_id, stat="DELIVRD", dlvrd=1)).encode(),
            receipted_message_id=message_id,
            message_state=MessageState.DELIVERED,
        )
        response = await session.send_deliver_sm(receipt, timeout=WAIT)
        assert response.command_status == 0
        async with asyncio.timeout(WAIT):
            await handler.closed.wait()  # smpplib unbound and disconnected
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, WAIT)
        await server.close(timeout=1.0)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")

    assert result["bind"].status == 0
    submit_resp = result["submit_sm_resp"]
    assert submit_resp.status == 0
    assert submit_resp.message_id == b"a1b2c3d4"
    deliver = result["deliver_sm"]
    assert deliver.esm_class == EsmClass.DELIVERY_RECEIPT
    assert deliver.source_addr == b"34600123456"
    assert deliver.destination_addr == b"Sender"
    assert deliver.receipted_message_id == b"a1b2c3d4"
    assert deliver.message_state == MessageState.DELIVERED
    assert b"id:a1b2c3d4" in deliver.short_message
    assert b"stat:DELIVRD" in deliver.short_message
    assert result["unbind"].command == "unbind_resp"
