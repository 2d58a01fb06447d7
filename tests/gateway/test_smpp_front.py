"""The SMPP front over real sockets on 127.0.0.1, with a real store and MessageService.

The dispatcher is a stand-in that records what it is given (the real one needs
upstreams and is tested on its own); the tests move messages along with the
store's own writes, as the dispatcher and the upstream receipts would, and
publish the changes on the bus.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import SmppSettings
from gateway.events import StatusBus
from gateway.lifecycle import Status
from gateway.messages import MessageService
from gateway.metrics import Metrics
from gateway.ratelimit import TpsLimiter
from gateway.smpp_front import SmppFront, message_state, receipt_pdu
from gateway.store import (
    Account,
    ApplyReceipt,
    MessageRecord,
    NewMessage,
    PartUpdate,
    SmppReceipt,
    Store,
    utcnow,
)
from smpp import CommandId, CommandStatus, EsmClass, MessageState, decode, encode
from smpp.aio import BindRefusedError, SmppClient
from smpp.pdu import (
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    DataSm,
    DeliverSm,
    EnquireLink,
    GenericNack,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    SubmitSm,
)
from smpp.receipt import parse_receipt

WAIT = 5.0
PASSWORD = "secret"  # at most 8 characters: password is a C-string of 9 (section 4.1.1)
DESTINATION = "34600123456"


@dataclass
class StandInDispatch:
    """What MessageService needs of the dispatcher, recording the calls."""

    full: bool = False
    new: list[NewMessage] = field(default_factory=list)
    records: list[MessageRecord] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)

    def enqueue_new(self, message: NewMessage, account: Account | None = None) -> None:
        self.new.append(message)

    def enqueue_record(self, record: MessageRecord) -> None:
        self.records.append(record)

    def discard(self, message_id: str) -> bool:
        self.discarded.append(message_id)
        queued = [m for m in self.new if m.id == message_id]
        for m in queued:
            self.new.remove(m)
        return bool(queued)


@dataclass
class Gateway:
    store: Store
    bus: StatusBus
    metrics: Metrics
    dispatch: StandInDispatch
    front: SmppFront
    clients: list[SmppClient] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    upstream_ids: int = 0

    async def esme(
        self,
        system_id: str = "acme",
        password: str = PASSWORD,
        bind: Any = "transceiver",
        receipts: asyncio.Queue[DeliverSm] | None = None,
        wait: bool = True,
        answers: list[int] | None = None,
    ) -> SmppClient:
        async def on_deliver_sm(pdu: DeliverSm) -> int:
            if receipts is not None:
                receipts.put_nowait(pdu)
            return answers.pop(0) if answers else CommandStatus.ROK

        client = SmppClient(
            "127.0.0.1",
            self.front.port,
            system_id=system_id,
            password=password,
            bind=bind,
            reconnect=False,
            enquire_link_interval=None,
            response_timeout=WAIT,
            on_deliver_sm=on_deliver_sm,
        )
        self.clients.append(client)
        await client.start()
        if wait:
            await client.wait_bound(WAIT)
        return client

    async def submit_to_delivered(self, message_id: str, *, enroute: bool = False) -> None:
        """What the dispatcher and the upstream's receipts would write, published."""
        self.upstream_ids += 1
        upstream_id = str(self.upstream_ids)
        self.bus.publish(
            await self.store.part_update(
                PartUpdate(
                    message_id,
                    1,
                    Status.SUBMITTED,
                    utcnow(),
                    upstream="u",
                    upstream_message_id=upstream_id,
                )
            )
        )
        if enroute:
            result = await self.store.apply_receipt(
                ApplyReceipt("u", upstream_id, Status.ENROUTE, utcnow())
            )
            self.bus.publish(result.changes)
        result = await self.store.apply_receipt(
            ApplyReceipt("u", upstream_id, Status.DELIVERED, utcnow())
        )
        assert result.matched
        self.bus.publish(result.changes)


def submit(**kw: Any) -> SubmitSm:
    values: dict[str, Any] = {
        "source_addr_ton": 5,
        "source_addr": "ACME",
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": DESTINATION,
        "short_message": b"hello from an ESME",
    }
    values.update(kw)
    return SubmitSm(**values)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    """Until `check()` holds (for effects with no event to wait for, like a commit)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


async def next_receipt(queue: asyncio.Queue[DeliverSm]) -> DeliverSm:
    async with asyncio.timeout(WAIT):
        return await queue.get()


@pytest.fixture
async def gw(store: Store) -> AsyncIterator[Gateway]:
    await store.create_account("acme", PASSWORD, tps=0)
    await store.create_account("other", PASSWORD, tps=0)
    bus, metrics, dispatch = StatusBus(), Metrics(), StandInDispatch()
    messages = MessageService(store, dispatch, metrics)
    frozen = 1000.0  # a clock that stands still: tps limits independent of the machine's speed
    limiter = TpsLimiter(clock=lambda: frozen)
    settings = SmppSettings(listen="127.0.0.1:0")
    front = SmppFront(store, messages, bus, metrics, limiter, settings)
    await front.start("127.0.0.1", 0)
    g = Gateway(store, bus, metrics, dispatch, front)
    try:
        yield g
    finally:
        for client in g.clients:
            await client.close(timeout=1.0)
        for writer in g.writers:
            writer.close()
            await writer.wait_closed()
        await front.close(timeout=1.0)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
async def test_tls_listener_when_configured(store: Store, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    await store.create_account("acme", PASSWORD, tps=0)
    metrics = Metrics()
    settings = SmppSettings(
        listen="127.0.0.1:0", tls_listen="127.0.0.1:0", tls_cert=str(cert), tls_key=str(key)
    )
    messages = MessageService(store, StandInDispatch(), metrics)
    front = SmppFront(store, messages, StatusBus(), metrics, TpsLimiter(), settings)
    await front.start()
    assert front.tls_port is not None and front.tls_port != front.port
    client = SmppClient(
        "127.0.0.1",
        front.tls_port,
        system_id="acme",
        password=PASSWORD,
        ssl=ssl.create_default_context(cafile=str(cert)),
        reconnect=False,
        enquire_link_interval=None,
    )
    try:
        await client.start()
        await client.wait_bound(WAIT)
        response = await client.submit_sm(submit())
        assert response.command_status == CommandStatus.ROK
        assert await store.get_message(response.message_id) is not None
    finally:
        await client.close(timeout=1.0)
        await front.close(timeout=1.0)


# --- smpplib, an ESME we did not write (issue 3, test 1) -------------------------------


def run_smpplib(
    port: int,
    result: dict[str, Any],
    stop: threading.Event,
    on_resp: Callable[[str], None],
) -> None:
    smpplib_client = pytest.importorskip("smpplib.client")
    smpplib_consts = pytest.importorskip("smpplib.consts")
    client = smpplib_client.Client("127.0.0.1", port, timeout=0.5, allow_unknown_opt_params=True)

    def on_submit_sm_resp(pdu: Any, **kwargs: Any) -> None:
        result["submit_sm_resp"] = pdu
        on_resp(pdu.message_id.decode())

    def on_deliver_sm(pdu: Any, **kwargs: Any) -> int:
        result["deliver_sm"] = pdu
        return 0

    client.set_message_sent_handler(on_submit_sm_resp)
    client.set_message_received_handler(on_deliver_sm)
    try:
        client.connect()
        result["bind"] = client.bind_transceiver(system_id="acme", password=PASSWORD)
        client.send_message(
            source_addr_ton=smpplib_consts.SMPP_TON_ALNUM,
            source_addr="ACME",
            dest_addr_ton=smpplib_consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib_consts.SMPP_NPI_ISDN,
            destination_addr=DESTINATION,
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


async def test_smpplib_submits_and_gets_the_receipt(gw: Gateway) -> None:
    pytest.importorskip("smpplib.client")
    loop = asyncio.get_running_loop()
    ids: asyncio.Queue[str] = asyncio.Queue()
    result: dict[str, Any] = {}
    stop = threading.Event()
    thread = threading.Thread(
        target=run_smpplib,
        args=(
            gw.front.port,
            result,
            stop,
            lambda mid: loop.call_soon_threadsafe(ids.put_nowait, mid),
        ),
        daemon=True,
    )
    thread.start()
    try:
        try:
            async with asyncio.timeout(WAIT):
                message_id = await ids.get()
        except TimeoutError:
            raise AssertionError(result) from None
        # Answered after the commit: the message is there, from another connection.
        record = await gw.store.get_message(message_id)
        assert record is not None
        assert (record.status, record.interface) == (Status.ACCEPTED, "smpp")
        assert (record.source, record.destination, record.text) == (
            "ACME",
            "+" + DESTINATION,
            "hello from smpplib",
        )
        assert record.registered_delivery == 1
        assert [m.id for m in gw.dispatch.new] == [message_id]
        await gw.submit_to_delivered(message_id)
        await asyncio.to_thread(thread.join, WAIT)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, WAIT)
    assert "error" not in result, result.get("error")
    assert result["bind"].status == 0
    assert result["submit_sm_resp"].status == 0
    deliver = result["deliver_sm"]
    assert deliver.esm_class == EsmClass.DELIVERY_RECEIPT
    assert deliver.receipted_message_id == message_id.encode()
    assert deliver.message_state == MessageState.DELIVERED
    assert deliver.source_addr == DESTINATION.encode()
    assert deliver.destination_addr == b"ACME"
    fields = parse_receipt(deliver.short_message)
    assert (fields.id, fields.stat, fields.dlvrd, fields.err) == (message_id, "DELIVRD", 1, "000")
    assert fields.text == "hello from smpplib"[:20]
    # The ESME's deliver_sm_resp marks it sent.
    await eventually(
        lambda: _pending(gw, message_id, expect_none=True),
    )


async def _pending(gw: Gateway, message_id: str, *, expect_none: bool) -> bool:
    account = await gw.store.get_account_by_system_id("acme")
    assert account is not None
    rows = await gw.store.pending_smpp_receipts(account.id, not_before=utcnow() - timedelta(days=1))
    pending = [r for r in rows if r.message_id == message_id]
    return not pending if expect_none else bool(pending)


# --- binds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [
        ("acme", "wrong", CommandStatus.RINVPASWD),
        ("nobody", PASSWORD, CommandStatus.RINVSYSID),
    ],
)
async def test_bad_credentials_are_refused(
    gw: Gateway, system_id: str, password: str, status: int
) -> None:
    client = await gw.esme(system_id, password, wait=False)
    with pytest.raises(BindRefusedError) as refused:
        await client.wait_bound(WAIT)
    assert refused.value.command_status == status
    assert gw.front.sessions == [] or all(not s.bound for s in gw.front.sessions)


async def test_sessions_metric_counts_binds(gw: Gateway) -> None:
    def value() -> float | None:
        return gw.metrics.registry.get_sample_value(
            "smsgw_smpp_sessions", {"account": "acme", "bind_type": "transmitter"}
        )

    client = await gw.esme(bind="transmitter")
    await eventually(lambda: _is(value, 1.0))
    await client.close(timeout=1.0)
    await eventually(lambda: _is(value, 0.0))


async def _is(get: Callable[[], object], expected: object) -> bool:
    return get() == expected


# --- submit_sm and data_sm ----------------------------------------------------------------


async def _count_messages(store: Store) -> int:
    return sum((await store.count_by_status()).values())


async def test_invalid_destination_is_refused_and_nothing_stored(gw: Gateway) -> None:
    client = await gw.esme()
    for pdu in (
        submit(destination_addr="123"),
        submit(destination_addr="not-a-number"),
        submit(dest_addr_ton=2, destination_addr="600123456"),  # national: which country?
    ):
        response = await client.submit_sm(pdu)
        assert response.command_status == CommandStatus.RINVDSTADR
    assert await _count_messages(gw.store) == 0
    assert gw.dispatch.new == []


async def test_throttled_over_the_accounts_tps(gw: Gateway, store: Store) -> None:
    await store.create_account("slow", PASSWORD, tps=2)
    client = await gw.esme("slow")
    statuses = [(await client.submit_sm(submit())).command_status for _ in range(3)]
    # The clock stands still: one second's worth (2) passes, the third is over.
    assert statuses == [CommandStatus.ROK, CommandStatus.ROK, CommandStatus.RTHROTTLED]
    assert await _count_messages(store) == 2


async def test_queue_full(gw: Gateway) -> None:
    client = await gw.esme()
    gw.dispatch.full = True
    response = await client.submit_sm(submit())
    assert response.command_status == CommandStatus.RMSGQFUL
    assert await _count_messages(gw.store) == 0


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"schedule_delivery_time": "not a time"}, CommandStatus.RINVSCHED),
        ({"validity_period": "991399000000000+"}, CommandStatus.RINVEXPIRY),
        ({"source_addr": "", "source_addr_ton": 0}, CommandStatus.RINVSRCADR),
        ({"source_addr": "MUCHTOOLONGNAME"}, CommandStatus.RINVSRCADR),
        ({"short_message": b""}, CommandStatus.RINVMSGLEN),
        ({"data_coding": 4, "short_message": b"\x01\x02"}, CommandStatus.RINVMSGLEN),
        ({"data_coding": 8, "short_message": b"\x00h\x00"}, CommandStatus.RINVMSGLEN),
        ({"esm_class": 0x40, "short_message": b"\x09\x00\x03"}, CommandStatus.RINVMSGLEN),
    ],
)
async def test_bad_fields_get_their_status(
    gw: Gateway, fields: dict[str, Any], status: int
) -> None:
    client = await gw.esme()
    response = await client.submit_sm(submit(**fields))
    assert response.command_status == status
    assert await _count_messages(gw.store) == 0


async def test_text_and_times_as_given(gw: Gateway) -> None:
    client = await gw.esme()
    udh = bytes([5, 0, 3, 7, 2, 1])  # concatenation IE: part 1 of 2
    scheduled = await client.submit_sm(
        submit(
            esm_class=0x40,
            data_coding=8,
            short_message=udh + "¡Hola, señor!".encode("utf-16-be"),
            schedule_delivery_time="000001000000000R",  # a day from now
            validity_period="000002000000000R",
            source_addr_ton=1,
            source_addr="34911222333",
            registered_delivery=0x11,
        )
    )
    assert scheduled.command_status == CommandStatus.ROK
    record = await gw.store.get_message(scheduled.message_id)
    assert record is not None
    assert (record.text, record.data_coding, record.status) == (
        "¡Hola, señor!",
        8,
        Status.SCHEDULED,
    )
    assert record.source == "+34911222333"
    assert record.registered_delivery == 0x11
    assert record.send_at is not None and record.valid_until is not None
    assert timedelta(hours=23) < record.send_at - utcnow() <= timedelta(days=1)
    assert record.valid_until - record.send_at == timedelta(days=1)
    # Cyrillic (data_coding 6) is re-sent in an alphabet every handset reads.
    cyrillic = await client.submit_sm(
        submit(data_coding=6, short_message="Привет".encode("iso8859-5"))
    )
    record = await gw.store.get_message(cyrillic.message_id)
    assert record is not None and (record.text, record.data_coding) == ("Привет", 8)
    # message_payload instead of short_message.
    payload = await client.submit_sm(submit(short_message=b"", message_payload=b"long " * 100))
    record = await gw.store.get_message(payload.message_id)
    assert record is not None and record.text == "long " * 100 and record.segments == 4


async def test_data_sm_is_accepted_like_submit_sm(gw: Gateway) -> None:
    client = await gw.esme()
    response = await client.data_sm(
        DataSm(
            source_addr_ton=5,
            source_addr="ACME",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=DESTINATION,
            message_payload=b"via data sm",
        )
    )
    assert response.command_status == CommandStatus.ROK
    record = await gw.store.get_message(response.message_id)
    assert record is not None
    assert (record.text, record.destination, record.interface) == (
        "via data sm",
        "+" + DESTINATION,
        "smpp",
    )


# --- query_sm, cancel_sm, replace_sm --------------------------------------------------------


async def _query(client: SmppClient, message_id: str) -> Pdu:
    return await client.request(QuerySm(message_id=message_id, source_addr="ACME"))


async def test_query_sm(gw: Gateway) -> None:
    client = await gw.esme()
    other = await gw.esme("other")
    message_id = (await client.submit_sm(submit())).message_id
    answer = await _query(client, message_id)
    assert isinstance(answer, QuerySmResp) and answer.command_status == CommandStatus.ROK
    assert (answer.message_id, answer.message_state, answer.final_date) == (
        message_id,
        MessageState.ENROUTE,
        "",
    )
    await gw.submit_to_delivered(message_id)
    answer = await _query(client, message_id)
    assert isinstance(answer, QuerySmResp)
    assert answer.message_state == MessageState.DELIVERED
    assert len(answer.final_date) == 16 and answer.final_date.endswith("00+")
    # Another account's message is as unknown as one that does not exist.
    for client_, id_ in ((other, message_id), (client, "0" * 32), (client, "")):
        answer = await _query(client_, id_)
        assert answer.command_status == CommandStatus.RINVMSGID


def test_message_states() -> None:
    assert message_state(Status.SCHEDULED) == MessageState.ENROUTE
    assert message_state(Status.UNDELIVERED) == MessageState.UNDELIVERABLE
    assert message_state(Status.FAILED) == MessageState.UNDELIVERABLE
    assert message_state(Status.CANCELED) == MessageState.DELETED
    assert message_state(Status.REJECTED) == MessageState.REJECTED
    assert message_state(Status.EXPIRED) == MessageState.EXPIRED


async def test_cancel_sm(gw: Gateway) -> None:
    client = await gw.esme()
    other = await gw.esme("other")
    waiting = (await client.submit_sm(submit())).message_id
    sent = (await client.submit_sm(submit())).message_id
    await gw.store.part_update(
        PartUpdate(sent, 1, Status.SUBMITTED, utcnow(), upstream="u", upstream_message_id="s")
    )

    async def cancel(c: SmppClient, message_id: str) -> int:
        return (await c.request(CancelSm(message_id=message_id))).command_status

    assert await cancel(other, waiting) == CommandStatus.RINVMSGID
    assert await cancel(client, waiting) == CommandStatus.ROK
    record = await gw.store.get_message(waiting)
    assert record is not None and record.status is Status.CANCELED
    assert waiting not in [m.id for m in gw.dispatch.new]
    assert await cancel(client, sent) == CommandStatus.RCANCELFAIL
    assert await cancel(client, "f" * 32) == CommandStatus.RINVMSGID
    replaced = await client.request(ReplaceSm(message_id=sent, short_message=b"x"))
    assert replaced.command_status == CommandStatus.RREPLACEFAIL


# --- a malformed PDU ---------------------------------------------------------------------


async def read_pdu(reader: asyncio.StreamReader) -> Pdu:
    async with asyncio.timeout(WAIT):
        header = await reader.readexactly(16)
        body = await reader.readexactly(int.from_bytes(header[:4], "big") - 16)
    return decode(header + body)


async def test_malformed_pdu_gets_generic_nack_and_the_session_lives(gw: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.front.port)
    gw.writers.append(writer)
    writer.write(encode(BindTransmitter(sequence_number=1, system_id="acme", password=PASSWORD)))
    bound = await read_pdu(reader)
    assert isinstance(bound, BindTransmitterResp) and bound.command_status == CommandStatus.ROK
    body = b"\x00\x05\x00"  # service_type "", source_addr_ton 5, source_addr_npi 0, and no more
    header = (16 + len(body)).to_bytes(4, "big") + CommandId.SUBMIT_SM.to_bytes(4, "big")
    writer.write(header + bytes(4) + (7).to_bytes(4, "big") + body)
    nack = await read_pdu(reader)
    assert isinstance(nack, GenericNack)
    assert (nack.command_status, nack.sequence_number) == (CommandStatus.RINVCMDLEN, 7)
    writer.write(encode(EnquireLink(sequence_number=8)))
    alive = await read_pdu(reader)
    assert (alive.command_id, alive.sequence_number) == (CommandId.ENQUIRE_LINK_RESP, 8)
    assert await _count_messages(gw.store) == 0


# --- receipts --------------------------------------------------------------------------


async def test_receipts_wait_for_a_receiver_and_are_sent_once(gw: Gateway) -> None:
    transmitter = await gw.esme(bind="transmitter")
    first = (await transmitter.submit_sm(submit(registered_delivery=1))).message_id
    await gw.submit_to_delivered(first)
    assert await _pending(gw, first, expect_none=False)  # kept: nobody to send it to

    receipts: asyncio.Queue[DeliverSm] = asyncio.Queue()
    receiver = await gw.esme(bind="receiver", receipts=receipts)
    got = await next_receipt(receipts)
    assert got.receipted_message_id == first
    assert got.esm_class == EsmClass.DELIVERY_RECEIPT
    await eventually(lambda: _pending(gw, first, expect_none=True))
    await receiver.close(timeout=1.0)

    # A second bind gets nothing more of the first: the next receipt it sees is new.
    again: asyncio.Queue[DeliverSm] = asyncio.Queue()
    await gw.esme(bind="receiver", receipts=again)
    second = (await transmitter.submit_sm(submit(registered_delivery=1))).message_id
    await gw.submit_to_delivered(second)
    got = await next_receipt(again)
    assert got.receipted_message_id == second
    assert again.empty()


async def test_intermediate_receipt_when_asked(gw: Gateway) -> None:
    receipts: asyncio.Queue[DeliverSm] = asyncio.Queue()
    client = await gw.esme(receipts=receipts)
    message_id = (await client.submit_sm(submit(registered_delivery=0x11))).message_id
    await gw.submit_to_delivered(message_id, enroute=True)
    enroute = await next_receipt(receipts)
    delivered = await next_receipt(receipts)
    assert enroute.esm_class == EsmClass.INTERMEDIATE_NOTIFICATION
    assert enroute.message_state == MessageState.ENROUTE
    assert parse_receipt(enroute.short_message).stat == "ENROUTE"
    assert delivered.esm_class == EsmClass.DELIVERY_RECEIPT
    assert parse_receipt(delivered.short_message).stat == "DELIVRD"
    # registered_delivery 1 alone: no intermediate one.
    plain = (await client.submit_sm(submit(registered_delivery=1))).message_id
    await gw.submit_to_delivered(plain, enroute=True)
    only = await next_receipt(receipts)
    assert (only.receipted_message_id, only.esm_class) == (plain, EsmClass.DELIVERY_RECEIPT)


async def test_a_refused_receipt_is_retried(gw: Gateway) -> None:
    gw.front.receipts.retry_s = 0.05
    receipts: asyncio.Queue[DeliverSm] = asyncio.Queue()
    client = await gw.esme(receipts=receipts, answers=[CommandStatus.RX_T_APPN])
    message_id = (await client.submit_sm(submit(registered_delivery=1))).message_id
    await gw.submit_to_delivered(message_id)
    refused = await next_receipt(receipts)
    retried = await next_receipt(receipts)  # after retry_s, with no new change to wake it
    assert refused.receipted_message_id == retried.receipted_message_id == message_id
    await eventually(lambda: _pending(gw, message_id, expect_none=True))


async def test_receipts_round_robin_across_receivers(gw: Gateway) -> None:
    a: asyncio.Queue[DeliverSm] = asyncio.Queue()
    b: asyncio.Queue[DeliverSm] = asyncio.Queue()
    transmitter = await gw.esme(bind="transmitter")
    await gw.esme(bind="receiver", receipts=a)
    await gw.esme(bind="transceiver", receipts=b)
    ids = [
        (await transmitter.submit_sm(submit(registered_delivery=1))).message_id for _ in range(4)
    ]
    for message_id in ids:
        await gw.submit_to_delivered(message_id)
    # Taken in turn: two each (a session that got none would time out here).
    got = [await next_receipt(queue) for queue in (a, b) for _ in range(2)]
    assert sorted(r.receipted_message_id or "" for r in got) == sorted(ids)


async def test_store_reads_receipts_with_their_messages(gw: Gateway) -> None:
    client = await gw.esme(bind="transmitter")
    ids = [(await client.submit_sm(submit(registered_delivery=1))).message_id for _ in range(3)]
    for message_id in ids:
        await gw.submit_to_delivered(message_id)
    account = await gw.store.get_account_by_system_id("acme")
    assert account is not None
    since = utcnow() - timedelta(hours=1)
    rows = await gw.store.pending_smpp_receipts_with_messages(account.id, not_before=since)
    assert [(r.message_id, m.id, r.status) for r, m in rows] == [
        (i, i, Status.DELIVERED) for i in ids
    ]
    page = await gw.store.pending_smpp_receipts_with_messages(
        account.id, not_before=since, after_id=rows[0][0].id, limit=1
    )
    assert [m.id for _, m in page] == [ids[1]]
    assert (
        await gw.store.pending_smpp_receipts_with_messages(
            account.id, not_before=utcnow() + timedelta(seconds=1)
        )
        == []
    )


def test_receipt_pdu_layout() -> None:
    now = utcnow()
    message = MessageRecord(
        id="0" * 32, account_id=1, interface="smpp", source="+34911222333",
        destination="+34600123456", text="Price: 5€ [ok] @home, more text here",
        encoding="ucs2", data_coding=8, segments=1, registered_delivery=1, client_ref=None,
        callback_url=None, status=Status.REJECTED, route="u", price=None,
        error="RINVDSTADR (0x0000000B)", send_at=None, valid_until=None, due_at=now,
        attempts=1, created_at=now, updated_at=now, left_infrastructure_at=None,
        handed_to_carrier_at=None, delivered_at=None,
    )  # fmt: skip
    receipt = SmppReceipt(1, 1, message.id, Status.REJECTED, message.error, now)
    pdu = receipt_pdu(receipt, message)
    assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr) == (1, 1, "34600123456")
    assert (pdu.dest_addr_ton, pdu.destination_addr) == (1, "34911222333")
    assert pdu.message_state == MessageState.REJECTED
    text = pdu.short_message.decode("ascii")
    assert text.startswith(f"id:{message.id} sub:001 dlvrd:000 submit date:")
    assert "stat:REJECTD err:011 text:Price: 5? ?ok? ?home" in text
