"""Inbound messages (MO): an upstream's deliver_sm reaches the account's MQTT topic."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import aiomqtt

import smpp
from smpp.aio import BaseServerHandler, ServerSession, SmppServer

from .e2e import ACME, running, settings_for

WAIT = 10.0


class MoSender(BaseServerHandler):
    """An upstream SMSC that sends one MO to the gateway as soon as it binds."""

    def __init__(self, mo: smpp.DeliverSm) -> None:
        self.mo = mo
        self.answers: asyncio.Queue[int] = asyncio.Queue()

    async def authenticate(self, session: ServerSession, bind: Any) -> None:
        return None

    def session_bound(self, session: ServerSession) -> None:
        asyncio.get_running_loop().create_task(self._send(session))

    async def _send(self, session: ServerSession) -> None:
        resp = await session.send_deliver_sm(self.mo, timeout=WAIT)
        self.answers.put_nowait(resp.command_status)


def _mo(text: str = "STOP") -> smpp.DeliverSm:
    return smpp.DeliverSm(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="34600123456",
        dest_addr_ton=5,
        destination_addr="ACME",
        short_message=text.encode(),
    )


def _upstream(port: int) -> dict[str, Any]:
    return {
        "name": "up",
        "kind": "smpp",
        "host": "127.0.0.1",
        "port": port,
        "system_id": "gw",
        "password": "pw",
        "prices": {"default": 0.01},
    }


async def test_an_mo_is_published_to_its_account_and_then_acknowledged(tmp_path: Path) -> None:
    prefix = f"smsgw-mo-{uuid.uuid4().hex[:8]}"
    handler = MoSender(_mo("STOP please"))
    async with SmppServer(handler) as upstream, aiomqtt.Client("127.0.0.1", 1883) as subscriber:
        await subscriber.subscribe(f"{prefix}/mo/#", qos=1)
        settings = settings_for(
            tmp_path,
            upstreams=[_upstream(upstream.port)],
            accounts=[{**ACME, "mo_addresses": ["ACME"]}],
            mqtt={"url": "mqtt://127.0.0.1:1883", "topic_prefix": prefix},
        )
        async with running(settings):
            async with asyncio.timeout(WAIT):
                async for message in subscriber.messages:
                    assert str(message.topic) == f"{prefix}/mo/acme"
                    assert isinstance(message.payload, bytes | bytearray)
                    body = json.loads(message.payload)
                    break
            assert await asyncio.wait_for(handler.answers.get(), WAIT) == 0  # ROK after PUBACK
    assert body["from"] == "+34600123456"
    assert body["to"] == "ACME"
    assert body["text"] == "STOP please"
    assert body["route"] == "up"


async def test_an_mo_is_refused_for_now_while_the_broker_is_away(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once the socket closes
    handler = MoSender(_mo())
    async with SmppServer(handler) as upstream:
        settings = settings_for(
            tmp_path,
            upstreams=[_upstream(upstream.port)],
            accounts=[{**ACME, "mo_addresses": ["ACME"]}],
            mqtt={"url": f"mqtt://127.0.0.1:{dead}", "topic_prefix": "smsgw-mo-dead"},
        )
        async with running(settings):
            status = await asyncio.wait_for(handler.answers.get(), WAIT)
    # Temporary: the SMSC keeps the MO and delivers it again later.
    assert status == smpp.CommandStatus.RX_T_APPN
