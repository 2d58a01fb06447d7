"""Inbound (mobile-originated) messages: from an upstream's deliver_sm to the account's MQTT topic.

An MO belongs to the account whose `mo_addresses` (or `default_source`) is the
address it was sent to: the reply to a reminder sent from "ACME" comes back to
"ACME". It is published to `<prefix>/mo/<account>` as JSON. The deliver_sm is
answered ROK only once the broker has acknowledged it; while the broker is
away the answer is ESME_RX_T_APPN (temporary), so the SMSC keeps the message
and delivers it again later: an MO is never dropped on our side.

An MO for no known account, or with MQTT not configured, is answered ROK and
counted (there is nobody to hand it to; resending would not change that).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from gateway.config import AccountSettings
from gateway.logs import mask_number
from gateway.mqtt import MqttPublisher
from gateway.store import format_time, utcnow
from smpp import CommandStatus, DeliverSm, Ton
from smpp import text as smstext
from smpp.constants import EsmClass

log = logging.getLogger(__name__)


def _key(address: str) -> str:
    return address.strip().lstrip("+").casefold()


class MoRouter:
    def __init__(self, accounts: Sequence[AccountSettings], mqtt: MqttPublisher | None) -> None:
        self.mqtt = mqtt
        self._owner: dict[str, str] = {}
        for account in accounts:
            for address in (*account.mo_addresses, account.default_source):
                if address:
                    self._owner.setdefault(_key(address), account.system_id)
        self.published = 0
        self.unowned = 0
        self.deferred = 0

    async def handle(self, upstream: str, pdu: DeliverSm) -> int:
        system_id = self._owner.get(_key(pdu.destination_addr))
        sender = pdu.source_addr
        if pdu.source_addr_ton == Ton.INTERNATIONAL and sender.isdigit():
            sender = "+" + sender
        if system_id is None:
            self.unowned += 1
            log.info(
                "MO from %s via %s for an address no account owns", mask_number(sender), upstream
            )
            return CommandStatus.ROK
        if self.mqtt is None:
            self.unowned += 1
            log.info("MO for account %s, but MQTT is not configured", system_id)
            return CommandStatus.ROK
        payload = {
            "from": sender,
            "to": pdu.destination_addr,
            "text": _text(pdu),
            "at": format_time(utcnow()),
            "route": upstream,
        }
        if await self.mqtt.publish_mo(system_id, payload):
            self.published += 1
            return CommandStatus.ROK
        self.deferred += 1
        # Temporary: the SMSC keeps it and tries again (SMPP 3.4 section 5.1.3).
        return CommandStatus.RX_T_APPN


def _text(pdu: DeliverSm) -> str:
    data = pdu.short_message or pdu.message_payload or b""
    if pdu.esm_class & EsmClass.UDHI:
        with contextlib.suppress(smstext.TextError):
            _, data = smstext.parse_udh(data)
    try:
        return smstext.decode(data, pdu.data_coding)
    except smstext.TextError:
        return data.decode("latin-1")
