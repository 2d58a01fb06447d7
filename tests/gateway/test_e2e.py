"""One message end to end, through a whole gateway on real sockets (issue 3, tests 1-3, 5, 6)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import smpp
from gateway.config import Settings
from gateway.simulator import Simulator, SimulatorOptions
from smpp.aio import BindRefusedError, SmppClient

from .e2e import (
    ACME,
    OTHER,
    acme_esme,
    base_url,
    basic,
    bearer,
    postgres_database,
    reminder,
    running,
    settings_for,
    wait_counts,
    wait_final,
)

smpplib_client = pytest.importorskip("smpplib.client")
smpplib_consts = pytest.importorskip("smpplib.consts")

WAIT = 10.0


# --- 1. smpplib, an ESME we did not write ------------------------------------------------


def _smpplib_session(port: int, result: dict[str, Any], stop: threading.Event) -> None:
    client = smpplib_client.Client("127.0.0.1", port, timeout=0.5, allow_unknown_opt_params=True)
    client.set_message_sent_handler(lambda pdu, **kw: result.__setitem__("submit_sm_resp", pdu))

    def on_deliver_sm(pdu: Any, **kw: Any) -> int:
        result.setdefault("deliver_sm", []).append(pdu)
        return 0

    client.set_message_received_handler(on_deliver_sm)
    try:
        client.connect()
        client.bind_transceiver(system_id=ACME["system_id"], password=ACME["password"])
        client.send_message(
            source_addr_ton=smpplib_consts.SMPP_TON_ALNUM,
            source_addr="ACME",
            dest_addr_ton=smpplib_consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib_consts.SMPP_NPI_ISDN,
            destination_addr="34600123456",
            short_message=b"Your invoice 1234 is due",
            registered_delivery=1,
        )
        while not stop.is_set() and not any(
            b"stat:DELIVRD" in d.short_message for d in result.get("deliver_sm", [])
        ):
            client.read_once(auto_send_enquire_link=True)
        client.unbind()
    except Exception as exc:
        result["error"] = exc
    finally:
        client.disconnect()


async def test_smpplib_submit_gets_a_delivered_receipt_with_the_same_id(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path)) as gateway:
        assert gateway.endpoints is not None
        result: dict[str, Any] = {}
        stop = threading.Event()
        thread = threading.Thread(
            target=_smpplib_session, args=(gateway.endpoints.smpp_port, result, stop), daemon=True
        )
        thread.start()
        try:
            await asyncio.wait_for(asyncio.to_thread(thread.join), WAIT)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, WAIT)
    assert "error" not in result, result.get("error")
    resp = result["submit_sm_resp"]
    assert resp.status == 0
    message_id = resp.message_id.decode()
    final = [d for d in result["deliver_sm"] if b"stat:DELIVRD" in d.short_message]
    assert len(final) == 1
    receipt = final[0]
    assert receipt.esm_class == smpp.EsmClass.DELIVERY_RECEIPT
    assert receipt.receipted_message_id.decode() == message_id
    assert f"id:{message_id}".encode() in receipt.short_message
    assert receipt.message_state == smpp.MessageState.DELIVERED


# --- 2. the same through HTTP -------------------------------------------------------------


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_http_message_goes_submitted_enroute_delivered_with_milestones(
    tmp_path: Path, database: str
) -> None:
    if database == "postgres":
        async with postgres_database() as url:
            await _http_message_end_to_end(settings_for(tmp_path, url=url))
    else:
        await _http_message_end_to_end(settings_for(tmp_path))


async def _http_message_end_to_end(settings: Settings) -> None:
    async with running(settings) as gateway, aiohttp.ClientSession() as http:
        async with http.post(
            f"{base_url(gateway)}/v1/messages",
            headers=bearer(),
            json={
                "to": "+34600123456",
                "from": "ACME",
                "text": "Your parcel is ready",
                "client_ref": "inv-1",
            },
        ) as r:
            assert r.status == 202
            accepted = await r.json()
        assert accepted["status"] == "accepted"
        assert accepted["segments"] == 1
        assert accepted["encoding"] == "gsm7"

        body = await wait_final(http, gateway, accepted["id"])
    assert body["status"] == "delivered"
    assert body["route"] == "sim"
    assert body["price"] == pytest.approx(0.015)
    assert body["client_ref"] == "inv-1"
    for milestone in ("left_infrastructure_at", "handed_to_carrier_at", "delivered_at"):
        assert body[milestone] is not None, milestone
    assert body["left_infrastructure_at"] <= body["handed_to_carrier_at"] <= body["delivered_at"]
    statuses = [e["status"] for e in body["events"]]
    assert statuses == ["accepted", "submitted", "enroute", "delivered"]
    submitted = body["events"][1]
    assert submitted["detail"]["route"] == "sim"
    assert submitted["detail"]["upstream_message_id"]


async def test_long_text_is_one_message_of_several_parts(tmp_path: Path) -> None:
    text = "Reminder: invoice 4711 of 120.00 EUR is overdue. " * 5  # ~250 GSM chars: 2 parts
    async with running(settings_for(tmp_path)) as gateway, aiohttp.ClientSession() as http:
        async with http.post(
            f"{base_url(gateway)}/v1/messages",
            headers=bearer(),
            json={"to": "+34600123456", "from": "ACME", "text": text},
        ) as r:
            accepted = await r.json()
        assert accepted["segments"] == 2
        body = await wait_final(http, gateway, accepted["id"])
        assert gateway.simulators["sim"].submits == 2
    assert body["status"] == "delivered"
    assert body["price"] == pytest.approx(0.03)  # two segments


# --- 3. webhooks ----------------------------------------------------------------------------


async def test_webhook_gets_every_transition_signed_even_after_failing_twice(
    tmp_path: Path,
) -> None:
    received: list[tuple[bytes, str]] = []
    failures = 0
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal failures
        body = await request.read()
        if failures < 2:
            failures += 1
            return web.Response(status=500)
        received.append((body, request.headers.get("X-Smsgw-Signature", "")))
        if json.loads(body)["status"] == "delivered":
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with running(settings_for(tmp_path)) as gateway, aiohttp.ClientSession() as http:
            async with http.post(
                f"{base_url(gateway)}/v1/messages",
                headers=bearer(),
                json={
                    "to": "+34600123456",
                    "from": "ACME",
                    "text": "hi",
                    "callback_url": f"http://127.0.0.1:{port}/hook",
                },
            ) as r:
                message_id = (await r.json())["id"]
            await asyncio.wait_for(done.wait(), WAIT)
            account = await gateway.store.get_account_by_system_id(ACME["system_id"])
            assert account is not None
            secret = account.webhook_secret
    finally:
        await runner.cleanup()
    assert failures == 2
    statuses = [json.loads(body)["status"] for body, _ in received]
    assert statuses == ["submitted", "enroute", "delivered"]
    for body, signature in received:
        assert json.loads(body)["id"] == message_id
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert signature == f"sha256={expected}"


# --- 5. the upstream drops its connection in the middle of a load --------------------------


async def test_every_message_delivered_although_the_upstream_keeps_dropping(tmp_path: Path) -> None:
    simulator = Simulator(SimulatorOptions(dlr_delay_ms=5, drop_every=97))
    await simulator.start()
    upstream = {
        "name": "flaky",
        "kind": "smpp",
        "host": "127.0.0.1",
        "port": simulator.port,
        "system_id": "gw",
        "password": "pw",
        "window": 10,
        "tps": 100000,
    }
    total = 600
    try:
        async with running(settings_for(tmp_path, upstreams=[upstream])) as gateway:
            async with acme_esme(gateway, window=50) as esme:

                async def submit(i: int) -> str:
                    resp = await esme.submit_sm(reminder(f"reminder {i}"))
                    assert resp.command_status == 0
                    return resp.message_id

                ids = await asyncio.gather(*(submit(i) for i in range(total)))
            assert len(set(ids)) == total
            counts = await wait_counts(
                gateway, lambda c: c.get("delivered", 0) == total, timeout=60
            )
            assert counts == {"delivered": total}
        assert simulator.submits > total  # some were sent again after a drop
    finally:
        await simulator.close()


# --- 6. bad input gets a clear error and changes nothing -----------------------------------


def _raw_pdu(command_id: int, seq: int, body: bytes) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, 0, seq) + body


async def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path)) as gateway, aiohttp.ClientSession() as http:
        assert gateway.endpoints is not None
        url = base_url(gateway)
        # A message of the other account, to look at from acme's side.
        async with http.post(
            f"{url}/v1/messages",
            headers=bearer(OTHER["api_key"]),
            json={"to": "+34600123456", "from": "OTHER", "text": "theirs"},
        ) as r:
            assert r.status == 202
            theirs = (await r.json())["id"]
        before = await gateway.store.count_by_status()

        # Malformed PDU: a submit_sm whose body is cut short, after a good bind.
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.endpoints.smpp_port)
        try:
            bind = smpp.encode(
                smpp.BindTransmitter(sequence_number=1, system_id="acme", password="acme-pw")
            )
            writer.write(bind)
            resp = smpp.decode(await _read_pdu(reader))
            assert resp.command_status == 0
            writer.write(_raw_pdu(0x04, 2, b"\x00\x05\x00ACM"))
            nack = smpp.decode(await _read_pdu(reader))
            assert isinstance(nack, smpp.GenericNack)
            assert nack.command_status == smpp.CommandStatus.RINVCMDLEN
            assert nack.sequence_number == 2
            writer.write(smpp.encode(smpp.EnquireLink(sequence_number=3)))
            assert isinstance(smpp.decode(await _read_pdu(reader)), smpp.EnquireLinkResp)
        finally:
            writer.close()
            await writer.wait_closed()

        # Wrong password.
        client = SmppClient(
            "127.0.0.1",
            gateway.endpoints.smpp_port,
            system_id="acme",
            password="wrong",
            reconnect=False,
        )
        await client.start()
        with pytest.raises(BindRefusedError) as refused:
            await client.wait_bound(WAIT)
        assert refused.value.command_status == smpp.CommandStatus.RINVPASWD
        await client.close()

        # An invalid number, over HTTP and over SMPP.
        async with http.post(
            f"{url}/v1/messages",
            headers=bearer(),
            json={"to": "+1234", "from": "ACME", "text": "x"},
        ) as r:
            assert r.status == 400
            error = (await r.json())["error"]
            assert error["code"] == "invalid_destination" and error["field"] == "to"
        esme = SmppClient(
            "127.0.0.1",
            gateway.endpoints.smpp_port,
            system_id="acme",
            password="acme-pw",
            bind="transmitter",
        )
        await esme.start()
        try:
            await esme.wait_bound(WAIT)
            resp2 = await esme.submit_sm(
                smpp.SubmitSm(
                    dest_addr_ton=1, destination_addr="1234", source_addr="ACME", short_message=b"x"
                )
            )
            assert resp2.command_status == smpp.CommandStatus.RINVDSTADR
        finally:
            await esme.close()

        # Bad JSON.
        async with http.post(
            f"{url}/v1/messages",
            headers={**bearer(), "Content-Type": "application/json"},
            data=b"{not json",
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "invalid_json"

        # An unknown id, and another account's id: both 404, never visible.
        for message_id in ("0" * 32, theirs):
            async with http.get(f"{url}/v1/messages/{message_id}", headers=bearer()) as r:
                assert r.status == 404
                assert (await r.json())["error"]["code"] == "not_found"
            async with http.delete(
                f"{url}/v1/messages/{message_id}", headers=basic("acme", "acme-pw")
            ) as r:
                assert r.status == 404

        after = await gateway.store.count_by_status()
        assert sum(after.values()) == sum(before.values())  # nothing was added
        record = await gateway.store.get_message(theirs)
        assert record is not None and record.status.value != "canceled"


async def _read_pdu(reader: asyncio.StreamReader) -> bytes:
    header = await asyncio.wait_for(reader.readexactly(16), WAIT)
    (length,) = struct.unpack(">I", header[:4])
    return header + await reader.readexactly(length - 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_mqtt_subscriber_sees_every_transition_of_a_message(tmp_path: Path) -> None:
    import uuid

    import aiomqtt

    prefix = f"smsgw-e2e-{uuid.uuid4().hex[:8]}"
    settings = settings_for(tmp_path, mqtt={"url": "mqtt://127.0.0.1:1883", "topic_prefix": prefix})
    async with aiomqtt.Client("127.0.0.1", 1883) as subscriber:
        await subscriber.subscribe(f"{prefix}/events/#", qos=1)
        async with running(settings) as gateway, aiohttp.ClientSession() as http:
            async with http.post(
                f"{base_url(gateway)}/v1/messages",
                headers=bearer(),
                json={"to": "+34600123456", "from": "ACME", "text": "Your parcel is ready"},
            ) as r:
                message_id = (await r.json())["id"]
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(WAIT):
                async for message in subscriber.messages:
                    assert str(message.topic) == f"{prefix}/events/acme/{message_id}"
                    assert isinstance(message.payload, bytes | bytearray)
                    seen.append(json.loads(message.payload))
                    if seen[-1]["status"] == "delivered":
                        break
    assert [e["status"] for e in seen] == ["accepted", "submitted", "enroute", "delivered"]
    assert set(seen[-1]) == {"id", "status", "at", "route", "error"}
    assert seen[-1]["route"] == "sim"
