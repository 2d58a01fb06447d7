"""Golden byte vectors for every PDU, round trips, and strict decoding."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smpp
from smpp import pdu as P
from smpp.errors import InvalidCommandId, InvalidCommandLength, LocalProtocolError, MalformedPdu


def frame(command_id: int, seq: int, body: bytes = b"", status: int = 0) -> bytes:
    """Header written out by hand: command_length, command_id, command_status, sequence_number."""
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


BIND_BODY = b"smppclient1\x00password\x00CMT\x00\x34\x01\x01\x00"
SUBMIT_BODY = (
    b"\x00"  # service_type
    b"\x05\x00ACME\x00"  # source ton/npi/addr
    b"\x01\x01"
    b"34600123456\x00"  # dest ton/npi/addr
    b"\x00\x00\x00"  # esm_class, protocol_id, priority_flag
    b"\x00"  # schedule_delivery_time
    b"000001000000000R\x00"  # validity_period
    b"\x01\x00\x00\x00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    b"\x05hello"
)
SUBMIT_FIELDS = dict(
    source_addr_ton=5,
    source_addr="ACME",
    dest_addr_ton=1,
    dest_addr_npi=1,
    destination_addr="34600123456",
    validity_period="000001000000000R",
    registered_delivery=1,
    short_message=b"hello",
)
RECEIPT_TEXT = b"id:abc123 sub:001 dlvrd:001 submit date:2612040101 done date:2612040102 stat:DELIVRD err:000 text:hello"

GOLDEN: list[tuple[smpp.Pdu, bytes]] = [
    (
        smpp.BindTransmitter(
            sequence_number=1,
            system_id="smppclient1",
            password="password",
            system_type="CMT",
            addr_ton=1,
            addr_npi=1,
        ),
        frame(0x02, 1, BIND_BODY),
    ),
    (
        smpp.BindReceiver(
            sequence_number=2,
            system_id="smppclient1",
            password="password",
            system_type="CMT",
            addr_ton=1,
            addr_npi=1,
        ),
        frame(0x01, 2, BIND_BODY),
    ),
    (
        smpp.BindTransceiver(
            sequence_number=3,
            system_id="smppclient1",
            password="password",
            system_type="CMT",
            addr_ton=1,
            addr_npi=1,
        ),
        frame(0x09, 3, BIND_BODY),
    ),
    (
        smpp.BindTransmitterResp(sequence_number=1, system_id="SMSC"),
        frame(0x80000002, 1, b"SMSC\x00"),
    ),
    (smpp.BindReceiverResp(sequence_number=2, system_id="SMSC"), frame(0x80000001, 2, b"SMSC\x00")),
    (
        smpp.BindTransceiverResp(sequence_number=3, system_id="SMSC", sc_interface_version=0x34),
        frame(0x80000009, 3, b"SMSC\x00\x02\x10\x00\x01\x34"),
    ),
    (
        smpp.Outbind(sequence_number=4, system_id="SMSC", password="pw"),
        frame(0x0B, 4, b"SMSC\x00pw\x00"),
    ),
    (smpp.Unbind(sequence_number=5), frame(0x06, 5)),
    (smpp.UnbindResp(sequence_number=5), frame(0x80000006, 5)),
    (smpp.GenericNack(sequence_number=6, command_status=0x03), frame(0x80000000, 6, status=0x03)),
    (smpp.EnquireLink(sequence_number=7), frame(0x15, 7)),
    (smpp.EnquireLinkResp(sequence_number=7), frame(0x80000015, 7)),
    (smpp.SubmitSm(sequence_number=8, **SUBMIT_FIELDS), frame(0x04, 8, SUBMIT_BODY)),  # type: ignore[arg-type]
    (
        smpp.SubmitSmResp(sequence_number=8, message_id="abc123"),
        frame(0x80000004, 8, b"abc123\x00"),
    ),
    (
        smpp.SubmitSm(
            sequence_number=9,
            **SUBMIT_FIELDS,
            sar_msg_ref_num=0x1234,
            sar_total_segments=2,
            sar_segment_seqnum=1,
        ),  # type: ignore[arg-type]
        frame(
            0x04,
            9,
            SUBMIT_BODY + b"\x02\x0c\x00\x02\x12\x34\x02\x0e\x00\x01\x02\x02\x0f\x00\x01\x01",
        ),
    ),
    (
        smpp.DeliverSm(
            sequence_number=10,
            source_addr="34600123456",
            destination_addr="ACME",
            esm_class=0x04,
            short_message=RECEIPT_TEXT,
            receipted_message_id="abc123",
            message_state=2,
            network_error_code=b"\x03\x00\x00",
        ),
        frame(
            0x05,
            10,
            b"\x00"
            b"\x00\x0034600123456\x00"
            b"\x00\x00ACME\x00"
            b"\x04\x00\x00"
            b"\x00\x00"
            b"\x00\x00\x00\x00"
            + bytes([len(RECEIPT_TEXT)])
            + RECEIPT_TEXT
            + b"\x00\x1e\x00\x07abc123\x00"
            b"\x04\x23\x00\x03\x03\x00\x00"
            b"\x04\x27\x00\x01\x02",
        ),
    ),
    (smpp.DeliverSmResp(sequence_number=10), frame(0x80000005, 10, b"\x00")),
    (
        smpp.SubmitMulti(
            sequence_number=11,
            source_addr="ACME",
            source_addr_ton=5,
            dest_address=(
                smpp.SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr="34600000001"),
                smpp.DistributionList(dl_name="staff"),
            ),
            short_message=b"hi",
        ),
        frame(
            0x21,
            11,
            b"\x00"
            b"\x05\x00ACME\x00"
            b"\x02"
            b"\x01\x01\x0134600000001\x00"
            b"\x02staff\x00"
            b"\x00\x00\x00"
            b"\x00"
            b"\x00"
            b"\x00\x00\x00\x00"
            b"\x02hi",
        ),
    ),
    (
        smpp.SubmitMultiResp(
            sequence_number=11,
            message_id="m1",
            unsuccess_sme=(
                smpp.UnsuccessSme(
                    dest_addr_ton=1,
                    dest_addr_npi=1,
                    destination_addr="34600000002",
                    error_status_code=0x0B,
                ),
            ),
        ),
        frame(0x80000021, 11, b"m1\x00\x01\x01\x0134600000002\x00\x00\x00\x00\x0b"),
    ),
    (
        smpp.DataSm(
            sequence_number=12,
            source_addr="ACME",
            destination_addr="34600123456",
            registered_delivery=1,
            message_payload=b"payload",
        ),
        frame(
            0x103,
            12,
            b"\x00\x00\x00ACME\x00\x00\x0034600123456\x00\x00\x01\x00\x04\x24\x00\x07payload",
        ),
    ),
    (smpp.DataSmResp(sequence_number=12, message_id="d1"), frame(0x80000103, 12, b"d1\x00")),
    (
        smpp.QuerySm(sequence_number=13, message_id="abc123", source_addr="ACME"),
        frame(0x03, 13, b"abc123\x00\x00\x00ACME\x00"),
    ),
    (
        smpp.QuerySmResp(
            sequence_number=13, message_id="abc123", final_date="", message_state=2, error_code=0
        ),
        frame(0x80000003, 13, b"abc123\x00\x00\x02\x00"),
    ),
    (
        smpp.CancelSm(
            sequence_number=14,
            message_id="abc123",
            source_addr="ACME",
            destination_addr="34600123456",
        ),
        frame(0x08, 14, b"\x00abc123\x00\x00\x00ACME\x00\x00\x0034600123456\x00"),
    ),
    (smpp.CancelSmResp(sequence_number=14), frame(0x80000008, 14)),
    (
        smpp.ReplaceSm(
            sequence_number=15, message_id="abc123", source_addr="ACME", short_message=b"new"
        ),
        frame(0x07, 15, b"abc123\x00\x00\x00ACME\x00\x00\x00\x00\x00\x03new"),
    ),
    (smpp.ReplaceSmResp(sequence_number=15), frame(0x80000007, 15)),
    (
        smpp.AlertNotification(
            sequence_number=16,
            source_addr="34600123456",
            esme_addr="ACME",
            ms_availability_status=0,
        ),
        frame(0x102, 16, b"\x00\x0034600123456\x00\x00\x00ACME\x00\x04\x22\x00\x01\x00"),
    ),
]


def test_every_pdu_class_has_a_golden_vector() -> None:
    assert {type(p) for p, _ in GOLDEN} == set(P.PDU_CLASSES)


@pytest.mark.parametrize(("pdu", "wire"), GOLDEN, ids=[type(p).__name__ for p, _ in GOLDEN])
def test_golden_encode(pdu: smpp.Pdu, wire: bytes) -> None:
    assert smpp.encode(pdu) == wire


@pytest.mark.parametrize(("pdu", "wire"), GOLDEN, ids=[type(p).__name__ for p, _ in GOLDEN])
def test_golden_decode(pdu: smpp.Pdu, wire: bytes) -> None:
    decoded = smpp.decode(wire)
    assert decoded == pdu
    assert type(decoded) is type(pdu)


def test_tlvs_are_attributes_and_absent_ones_are_none() -> None:
    dlr = next(p for p, _ in GOLDEN if isinstance(p, smpp.DeliverSm))
    decoded = smpp.decode(smpp.encode(dlr))
    assert decoded.receipted_message_id == "abc123"
    assert decoded.message_state == smpp.MessageState.DELIVERED
    assert decoded.network_error_code == b"\x03\x00\x00"
    assert decoded.sar_msg_ref_num is None
    assert decoded.message_payload is None


def test_unknown_tlv_kept_byte_exact_and_reencoded() -> None:
    wire = frame(
        0x04,
        8,
        SUBMIT_BODY + b"\x14\x00\x00\x03abc" + b"\x02\x04\x00\x02\x00\x07" + b"\x14\x01\x00\x00",
    )
    decoded = smpp.decode(wire)
    assert decoded.unknown_tlvs == ((0x1400, b"abc"), (0x1401, b""))
    assert decoded.user_message_reference == 7
    again = smpp.decode(smpp.encode(decoded))
    assert again == decoded


def test_receipted_message_id_without_nul_is_accepted() -> None:
    wire = frame(0x05, 1, SUBMIT_BODY + b"\x00\x1e\x00\x03abc")
    assert smpp.decode(wire).receipted_message_id == "abc"


def test_error_response_without_body_decodes_to_defaults() -> None:
    resp = smpp.decode(frame(0x80000004, 3, status=0x58))
    assert isinstance(resp, smpp.SubmitSmResp)
    assert resp.command_status == smpp.CommandStatus.RTHROTTLED
    assert resp.message_id == ""


def test_make_response_echoes_sequence_number() -> None:
    resp = smpp.make_response(smpp.SubmitSm(sequence_number=42), message_id="x")
    assert resp == smpp.SubmitSmResp(sequence_number=42, message_id="x")
    with pytest.raises(TypeError):
        smpp.make_response(smpp.GenericNack(sequence_number=1))


def test_replace_and_repr_show_only_what_is_set() -> None:
    p = smpp.SubmitSm(sequence_number=1, destination_addr="1")
    q = dataclasses.replace(p, message_payload=b"x")
    assert q.message_payload == b"x" and p.message_payload is None
    assert "message_payload" not in repr(p)
    assert "message_payload=b'x'" in repr(q)


# --- strict decoding --------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "error", "field"),
    [
        (b"\x00\x00\x00\x10\x00\x00", InvalidCommandLength, "command_length"),
        (frame(0x15, 1)[:-1] + b"", InvalidCommandLength, "command_length"),
        (frame(0x15, 1) + b"\x00", InvalidCommandLength, "command_length"),
        (frame(0x7777, 1), InvalidCommandId, "command_id"),
        (frame(0x80000004, 1, b"abc"), MalformedPdu, "message_id"),  # missing NUL
        (
            frame(0x02, 1, b"a" * 16 + b"\x00password\x00\x00\x34\x00\x00\x00"),
            MalformedPdu,
            "system_id",
        ),
        (frame(0x02, 1, b"sys\x00password9\x00\x00\x34\x00\x00\x00"), MalformedPdu, "password"),
        (frame(0x04, 1, SUBMIT_BODY[:-3]), MalformedPdu, "short_message"),
        (frame(0x04, 1, SUBMIT_BODY[:6]), MalformedPdu, "source_addr"),
        (frame(0x04, 1, SUBMIT_BODY[:10]), MalformedPdu, "destination_addr"),
        (frame(0x04, 1, SUBMIT_BODY + b"\x02\x04\x00"), MalformedPdu, "optional parameters"),
        (
            frame(0x04, 1, SUBMIT_BODY + b"\x02\x04\x00\x05\x00"),
            MalformedPdu,
            "optional parameters",
        ),
        (
            frame(0x04, 1, SUBMIT_BODY + b"\x02\x04\x00\x01\x00"),
            MalformedPdu,
            "user_message_reference",
        ),
        (frame(0x04, 1, SUBMIT_BODY + b"\x04\x27\x00\x02\x00\x00"), MalformedPdu, "message_state"),
        (frame(0x21, 1, b"\x00\x00\x00A\x00\x01\x03"), MalformedPdu, "dest_address[0]"),
    ],
)
def test_strict_decoding_names_the_field(wire: bytes, error: type[Exception], field: str) -> None:
    with pytest.raises(error) as info:
        smpp.decode(wire)
    assert isinstance(info.value, smpp.ProtocolError)
    assert info.value.field == field


def test_decode_error_carries_the_header_for_the_answer() -> None:
    with pytest.raises(MalformedPdu) as info:
        smpp.decode(frame(0x04, 77, SUBMIT_BODY[:-3]))
    assert info.value.sequence_number == 77
    assert info.value.command_id == smpp.CommandId.SUBMIT_SM
    assert info.value.command_status == smpp.CommandStatus.RINVCMDLEN


@pytest.mark.parametrize(
    ("pdu", "field"),
    [
        (smpp.SubmitSm(destination_addr="1" * 21), "destination_addr"),
        (smpp.SubmitSm(short_message=b"x" * 255), "short_message"),
        (smpp.SubmitSm(esm_class=256), "esm_class"),
        (smpp.SubmitSm(source_addr="€"), "source_addr"),
        (smpp.SubmitSm(source_addr="a\x00b"), "source_addr"),
        (smpp.SubmitSm(sequence_number=-1), "sequence_number"),
        (smpp.BindTransmitter(password="1234567890"), "password"),
        (smpp.SubmitSm(network_error_code=b"1234"), "network_error_code"),
        (smpp.DeliverSm(message_state=300), "message_state"),
        (smpp.DeliverSm(sar_msg_ref_num=-1), "sar_msg_ref_num"),
        (smpp.DeliverSm(receipted_message_id="x" * 65), "receipted_message_id"),
    ],
)
def test_encode_refuses_what_cannot_go_on_the_wire(pdu: smpp.Pdu, field: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        smpp.encode(pdu)
    assert info.value.field == field


# --- round trips --------------------------------------------------------------

cstr = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=20)
octet = st.integers(0, 255)


def _tlv_strategy(spec: P.TlvSpec) -> st.SearchStrategy[object]:
    if spec.kind == "u8":
        return octet
    if spec.kind == "u16":
        return st.integers(0, 0xFFFF)
    if spec.kind == "u32":
        return st.integers(0, 0xFFFFFFFF)
    limit = spec.max_length or 300
    if spec.kind == "cstr":
        return st.text(
            alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=limit - 1
        )
    return st.binary(max_size=limit)


tlv_values = st.fixed_dictionaries(
    {}, optional={name: _tlv_strategy(spec) for name, spec in P.TLV_SPECS.items()}
)
unknown_tlvs = st.lists(
    st.tuples(st.integers(0x1400, 0x3FFF), st.binary(max_size=20)), max_size=3
).map(tuple)


def _field_strategy(spec: P.BodySpec) -> st.SearchStrategy[object]:
    if spec.kind == "u8":
        return octet
    if spec.kind == "u32":
        return st.integers(0, 0xFFFFFFFF)
    if spec.kind == "cstr":
        return st.text(
            alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=spec.max_length - 1
        )
    if spec.kind == "short_message":
        return st.binary(max_size=254)
    if spec.kind == "dests":
        addr = st.builds(
            smpp.SmeAddress, dest_addr_ton=octet, dest_addr_npi=octet, destination_addr=cstr
        )
        dl = st.builds(smpp.DistributionList, dl_name=cstr)
        return st.lists(st.one_of(addr, dl), max_size=5).map(tuple)
    return st.lists(
        st.builds(
            smpp.UnsuccessSme,
            dest_addr_ton=octet,
            dest_addr_npi=octet,
            destination_addr=cstr,
            error_status_code=st.integers(0, 0xFFFFFFFF),
        ),
        max_size=5,
    ).map(tuple)


@st.composite
def pdus(draw: st.DrawFn) -> smpp.Pdu:
    cls = draw(st.sampled_from(P.PDU_CLASSES))
    kwargs: dict[str, object] = {
        "sequence_number": draw(st.integers(0, 0xFFFFFFFF)),
        "command_status": draw(st.integers(0, 0xFFFFFFFF)),
    }
    body = P.body_specs(cls)
    for name, spec, _ in body:
        kwargs[name] = draw(_field_strategy(spec))
    body_names = {name for name, _, _ in body}
    tlvs = draw(tlv_values)
    kwargs.update({k: v for k, v in tlvs.items() if k not in body_names})
    kwargs["unknown_tlvs"] = draw(unknown_tlvs)
    return cls(**kwargs)


@settings(max_examples=400, deadline=None)
@given(pdus())
def test_round_trip(pdu: smpp.Pdu) -> None:
    wire = smpp.encode(pdu)
    assert smpp.decode(wire) == pdu
    assert smpp.encode(smpp.decode(wire)) == wire
