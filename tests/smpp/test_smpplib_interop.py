"""Codec interop with smpplib, an SMPP implementation we did not write.

PDUs that smpplib generates decode to the same fields here, and PDUs we
encode parse in smpplib with the same fields.
"""

from __future__ import annotations

from typing import Any

import pytest
import smpplib.smpp  # type: ignore[import-untyped]

import smpp


class _Sequencer:
    """smpplib takes sequence numbers from a client object."""

    def __init__(self) -> None:
        self.n = 0

    def next_sequence(self) -> int:
        self.n += 1
        return self.n


RECEIPT = b"id:42 sub:001 dlvrd:001 submit date:2612040101 done date:2612040102 stat:DELIVRD err:000 text:hi"

# (smpplib command name, fields in smpplib's terms, our class)
CASES: list[tuple[str, dict[str, Any], type[smpp.Pdu]]] = [
    (
        "bind_transceiver",
        dict(
            system_id="acme",
            password="secret",
            system_type="ERP",
            interface_version=0x34,
            addr_ton=1,
            addr_npi=1,
            address_range="346",
        ),
        smpp.BindTransceiver,
    ),
    ("bind_transmitter", dict(system_id="acme", password="secret"), smpp.BindTransmitter),
    ("bind_receiver", dict(system_id="acme", password="secret"), smpp.BindReceiver),
    ("bind_transceiver_resp", dict(sequence=5, system_id="smsgw"), smpp.BindTransceiverResp),
    ("bind_transmitter_resp", dict(sequence=5, system_id="smsgw"), smpp.BindTransmitterResp),
    ("bind_receiver_resp", dict(sequence=5, system_id="smsgw"), smpp.BindReceiverResp),
    (
        "submit_sm",
        dict(
            service_type="",
            source_addr_ton=5,
            source_addr_npi=0,
            source_addr="ACME",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="34600123456",
            esm_class=0x40,
            protocol_id=0,
            priority_flag=1,
            registered_delivery=0x11,
            data_coding=8,
            validity_period="000001000000000R",
            short_message=b"\x05\x00\x03\x01\x02\x01\x00h",
            sar_msg_ref_num=7,
            sar_total_segments=2,
            sar_segment_seqnum=1,
            user_message_reference=99,
        ),
        smpp.SubmitSm,
    ),
    ("submit_sm_resp", dict(sequence=9, message_id="0123abcd"), smpp.SubmitSmResp),
    (
        "deliver_sm",
        dict(
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="34600123456",
            destination_addr="ACME",
            esm_class=0x04,
            short_message=RECEIPT,
            receipted_message_id="42",
            message_state=2,
            network_error_code=b"\x03\x00\x00",
        ),
        smpp.DeliverSm,
    ),
    ("deliver_sm_resp", dict(sequence=3), smpp.DeliverSmResp),
    (
        "data_sm",
        dict(
            source_addr="ACME",
            destination_addr="34600123456",
            registered_delivery=1,
            message_payload=b"a long payload" * 10,
        ),
        smpp.DataSm,
    ),
    ("data_sm_resp", dict(sequence=4, message_id="d1"), smpp.DataSmResp),
    ("query_sm", dict(message_id="0123abcd", source_addr="ACME"), smpp.QuerySm),
    (
        "query_sm_resp",
        dict(sequence=6, message_id="0123abcd", message_state=2, error_code=0),
        smpp.QuerySmResp,
    ),
    (
        "alert_notification",
        dict(source_addr="34600123456", esme_addr="ACME", ms_availability_status=1),
        smpp.AlertNotification,
    ),
    ("enquire_link", {}, smpp.EnquireLink),
    ("enquire_link_resp", dict(sequence=8), smpp.EnquireLinkResp),
    ("unbind", {}, smpp.Unbind),
    ("unbind_resp", dict(sequence=8), smpp.UnbindResp),
    ("generic_nack", dict(sequence=8, status=3), smpp.GenericNack),
]


def _ours(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _fields(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if k not in ("sequence", "status")}


@pytest.mark.parametrize(("name", "kw", "cls"), CASES, ids=[c[0] for c in CASES])
def test_smpplib_pdus_decode_to_the_same_fields(
    name: str, kw: dict[str, Any], cls: type[smpp.Pdu]
) -> None:
    theirs = smpplib.smpp.make_pdu(name, client=_Sequencer(), **kw)
    ours = smpp.decode(theirs.generate())
    assert type(ours) is cls
    assert ours.sequence_number == theirs.sequence
    assert ours.command_status == kw.get("status", 0)
    for field, value in _fields(kw).items():
        assert getattr(ours, field) == value, field


@pytest.mark.parametrize(("name", "kw", "cls"), CASES, ids=[c[0] for c in CASES])
def test_our_pdus_parse_in_smpplib(name: str, kw: dict[str, Any], cls: type[smpp.Pdu]) -> None:
    fields = _fields(kw)
    ours = cls(sequence_number=kw.get("sequence", 77), command_status=kw.get("status", 0), **fields)
    theirs = smpplib.smpp.parse_pdu(smpp.encode(ours), client=_Sequencer())
    assert theirs.command == name
    assert theirs.sequence == ours.sequence_number
    assert theirs.status == ours.command_status
    for field, value in fields.items():
        got = getattr(theirs, field)
        if isinstance(value, str):
            assert _ours(got) == value, field
        else:
            assert got == value, field


def test_smpplib_generates_our_exact_bytes_for_a_submit_sm() -> None:
    kw = CASES[6][1]
    theirs = smpplib.smpp.make_pdu("submit_sm", client=_Sequencer(), **kw)
    ours = smpp.SubmitSm(sequence_number=theirs.sequence, **kw)
    wire = theirs.generate()
    # smpplib orders TLVs as it likes; the mandatory part must be identical.
    mandatory = len(
        smpp.encode(
            smpp.SubmitSm(
                sequence_number=1,
                **{
                    k: v
                    for k, v in kw.items()
                    if k in {n for n, _, _ in smpp.pdu.body_specs(smpp.SubmitSm)}
                },
            )
        )
    )
    assert wire[4:mandatory] == smpp.encode(ours)[4:mandatory]
