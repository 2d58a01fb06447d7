"""Random and mutated input: framing and codec raise only ProtocolError; a session never raises.

The session's contract for peer garbage is stronger than the codec's: it
turns every bad frame into a ProtocolViolation event and an answer on the
wire, so `receive_data` must not raise at all, and what it queues must be
valid SMPP.
"""

from __future__ import annotations

import contextlib
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smpp
from smpp.constants import CommandId
from smpp.errors import ProtocolError
from smpp.session import ProtocolViolation, Role, Session, SessionConfig, State

from .helpers import SessionPair, deliver_sm, submit_sm

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SAMPLES: list[smpp.Pdu] = [
    smpp.BindTransceiver(sequence_number=1, system_id="esme", password="secret", system_type="X"),
    smpp.BindTransmitterResp(sequence_number=1, system_id="smsc", sc_interface_version=0x34),
    smpp.EnquireLink(sequence_number=2),
    smpp.Unbind(sequence_number=3),
    smpp.GenericNack(sequence_number=4, command_status=3),
    submit_sm(b"hello"),
    smpp.SubmitSm(
        sequence_number=5,
        destination_addr="346",
        message_payload=b"x" * 300,
        sar_msg_ref_num=7,
        sar_total_segments=2,
        sar_segment_seqnum=1,
    ),
    smpp.SubmitSmResp(sequence_number=6, message_id="abc"),
    deliver_sm(b"id:1 stat:DELIVRD"),
    smpp.DeliverSm(
        sequence_number=8,
        esm_class=4,
        receipted_message_id="abc",
        message_state=2,
        network_error_code=b"\x01\x00\x00",
        unknown_tlvs=((0x1400, b"vendor"),),
    ),
    smpp.DataSm(sequence_number=9, destination_addr="1", message_payload=b"p"),
    smpp.SubmitMulti(
        sequence_number=10,
        dest_address=(smpp.SmeAddress(destination_addr="1"), smpp.DistributionList(dl_name="dl")),
    ),
    smpp.SubmitMultiResp(
        sequence_number=10, message_id="m", unsuccess_sme=(smpp.UnsuccessSme(destination_addr="1"),)
    ),
    smpp.QuerySm(sequence_number=11, message_id="m"),
    smpp.ReplaceSm(sequence_number=12, message_id="m", short_message=b"new"),
    smpp.CancelSm(sequence_number=13, message_id="m"),
    smpp.AlertNotification(sequence_number=14, source_addr="1", esme_addr="2"),
    smpp.Outbind(sequence_number=15, system_id="smsc"),
]
ENCODED = [smpp.encode(p) for p in SAMPLES]
REQUESTS = [e for p, e in zip(SAMPLES, ENCODED, strict=True) if not p.is_response]
ENQUIRE_LINK = smpp.encode(smpp.EnquireLink(sequence_number=0x12345))


@st.composite
def mutated(draw: st.DrawFn, sources: list[bytes] = ENCODED) -> bytes:
    """A valid PDU with bytes flipped, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = draw(st.integers(0, len(data)))
        if op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif data and pos < len(data):
            if op == "flip":
                data[pos] ^= draw(st.integers(1, 255))
            else:
                del data[pos]
    return bytes(data)


def body_mutated(data: bytes) -> bytes:
    """Keep the header's command_id and sequence_number, fix command_length to fit."""
    data = data.ljust(16, b"\x00")
    return struct.pack(">I", len(data)) + data[4:]


@st.composite
def malformed_bodies(draw: st.DrawFn) -> bytes:
    """A valid request with its header intact and its body mutated; command_length fits."""
    original = draw(st.sampled_from(REQUESTS))
    body = draw(mutated([original[16:] or b"\x00"]))
    return body_mutated(original[:16] + body)


garbage = st.one_of(st.binary(max_size=200), mutated())
streams = st.lists(garbage, min_size=1, max_size=5).map(b"".join)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def decode_all(wire: bytes) -> list[smpp.Pdu]:
    """What a session queued must be valid SMPP: this raises if it is not."""
    framer = smpp.Framer()
    framer.receive_data(wire)
    out = []
    while (pdu := framer.next_pdu()) is not smpp.NEED_DATA:
        assert isinstance(pdu, smpp.Pdu)
        out.append(pdu)
    assert framer.buffered == 0
    return out


def bound_smsc() -> Session:
    config = SessionConfig(max_pdu_length=4096)
    pair = SessionPair(config, config)
    pair.bind()
    return pair.smsc


def bound_esme() -> Session:
    config = SessionConfig(max_pdu_length=4096)
    pair = SessionPair(config, config)
    pair.bind()
    pair.esme.send(submit_sm(), 0.0)  # something outstanding for mutated responses to hit
    pair.esme.data_to_send()
    return pair.esme


# --- codec and framing ------------------------------------------------------


@FUZZ
@given(garbage)
def test_decode_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        smpp.decode(data)


@FUZZ
@given(streams, st.lists(st.integers(0, 10_000), max_size=4))
def test_framer_raises_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    framer = smpp.Framer(max_length=4096)
    for chunk in split(data, cuts):
        framer.receive_data(chunk)
        while True:
            try:
                if framer.next_pdu() is smpp.NEED_DATA:
                    break
            except smpp.InvalidCommandLength:
                return  # the stream is broken for good
            except ProtocolError:
                continue


@FUZZ
@given(st.sampled_from(SAMPLES))
def test_samples_round_trip(pdu: smpp.Pdu) -> None:
    assert smpp.decode(smpp.encode(pdu)) == pdu


# --- session ------------------------------------------------------------------


@FUZZ
@given(streams, st.lists(st.integers(0, 10_000), max_size=4), st.sampled_from(["esme", "smsc"]))
def test_session_never_raises_for_peer_garbage(data: bytes, cuts: list[int], side: str) -> None:
    session = bound_esme() if side == "esme" else bound_smsc()
    for chunk in split(data, cuts):
        session.receive_data(chunk, 1.0)
    for pdu in decode_all(session.data_to_send()):
        # The only things a session says unprompted to garbage are answers.
        assert pdu.is_response
    session.poll(1000.0)
    session.connection_lost()


@FUZZ
@given(malformed_bodies())
def test_bound_session_survives_a_malformed_body(frame: bytes) -> None:
    session = bound_smsc()
    events = session.receive_data(frame + ENQUIRE_LINK, 1.0)
    assert session.state is not State.CLOSED
    answered = decode_all(session.data_to_send())
    assert answered[-1] == smpp.EnquireLinkResp(sequence_number=0x12345)
    for event in events:
        if isinstance(event, ProtocolViolation):
            assert not event.error.closes_session
    if len(answered) == 2:  # the mutated PDU was answered: by itself, with its sequence number
        assert answered[0].sequence_number == struct.unpack_from(">I", frame, 12)[0]


@FUZZ
@given(st.binary(min_size=16, max_size=64))
def test_session_answers_every_request_shaped_frame(body: bytes) -> None:
    """Any frame with a good length and a request command_id is answered or handed over."""
    session = Session(Role.SMSC, SessionConfig(max_pdu_length=4096))
    data = body_mutated(body)
    command_id = struct.unpack_from(">I", data, 4)[0]
    events = session.receive_data(data, 0.0)
    answered = decode_all(session.data_to_send())
    if command_id & 0x80000000:
        assert answered == []
        return
    if command_id in (CommandId.OUTBIND, CommandId.ALERT_NOTIFICATION) and not answered:
        return  # no response exists; reported as a violation
    if not answered:
        assert len(events) == 1 and type(events[0]).__name__ == "PduReceived"
    else:
        assert len(answered) == 1
