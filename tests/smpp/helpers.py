"""Two sans-IO sessions wired together in memory, as h11's ConnectionPair."""

from __future__ import annotations

import struct

import smpp
from smpp.session import Event, PduReceived, Role, Session, SessionConfig


def frame(command_id: int, seq: int, body: bytes = b"", status: int = 0) -> bytes:
    """A PDU written out by hand: command_length, command_id, command_status, sequence_number."""
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


BindClass = type[smpp.BindTransmitter] | type[smpp.BindReceiver] | type[smpp.BindTransceiver]

BIND_CLASSES: dict[BindClass, smpp.session.State] = {
    smpp.BindTransmitter: smpp.session.State.BOUND_TX,
    smpp.BindReceiver: smpp.session.State.BOUND_RX,
    smpp.BindTransceiver: smpp.session.State.BOUND_TRX,
}


def submit_sm(text: bytes = b"hello") -> smpp.SubmitSm:
    return smpp.SubmitSm(
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="34600123456",
        short_message=text,
    )


def deliver_sm(text: bytes = b"hello") -> smpp.DeliverSm:
    return smpp.DeliverSm(
        source_addr_ton=1, source_addr="34600123456", destination_addr="ACME", short_message=text
    )


class SessionPair:
    """An ESME session and an SMSC session connected back to back.

    `pump()` moves bytes both ways until neither side has anything to send
    and collects what each side saw; the clock is `now`, advanced by hand.
    """

    def __init__(
        self,
        esme_config: SessionConfig | None = None,
        smsc_config: SessionConfig | None = None,
        *,
        now: float = 0.0,
    ) -> None:
        self.now = now
        self.esme = Session(Role.ESME, esme_config or SessionConfig(), now=now)
        self.smsc = Session(Role.SMSC, smsc_config or SessionConfig(), now=now)
        self.esme_events: list[Event] = []
        self.smsc_events: list[Event] = []

    def peer(self, session: Session) -> Session:
        return self.smsc if session is self.esme else self.esme

    def pump(self) -> tuple[list[Event], list[Event]]:
        """Deliver queued bytes both ways until quiet; (ESME events, SMSC events) of this pump."""
        esme_events: list[Event] = []
        smsc_events: list[Event] = []
        while True:
            to_smsc = self.esme.data_to_send()
            to_esme = self.smsc.data_to_send()
            if not to_smsc and not to_esme:
                break
            if to_smsc:
                smsc_events += self.smsc.receive_data(to_smsc, self.now)
            if to_esme:
                esme_events += self.esme.receive_data(to_esme, self.now)
        self.esme_events += esme_events
        self.smsc_events += smsc_events
        return esme_events, smsc_events

    def send(self, sender: Session, pdu: smpp.Pdu) -> tuple[smpp.Pdu, list[Event]]:
        """Send from one side and pump; the PDU as sent and what the other side saw."""
        sent = sender.send(pdu, self.now)
        esme_events, smsc_events = self.pump()
        return sent, smsc_events if sender is self.esme else esme_events

    def answer(
        self, responder: Session, event: Event, command_status: int = 0, **fields: object
    ) -> list[Event]:
        """Answer a PduReceived with its response; what the requester saw."""
        assert isinstance(event, PduReceived), event
        _, seen = self.send(responder, smpp.make_response(event.pdu, command_status, **fields))
        return seen

    def bind(self, bind_class: BindClass = smpp.BindTransceiver) -> None:
        """Bind the ESME to the SMSC with the given bind type."""
        _, seen = self.send(self.esme, bind_class(system_id="esme", password="secret"))
        [received] = seen
        self.answer(self.smsc, received, system_id="smsc")
        expected = BIND_CLASSES[bind_class]
        assert self.esme.state is expected and self.smsc.state is expected
