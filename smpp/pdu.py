"""One frozen dataclass per SMPP 3.4 PDU, named and laid out as in the spec.

The wire layout lives here, next to the field it describes: each body field's
metadata says how it is encoded (`cstr(17)`, `u8()`, ...) and each optional
parameter's says its tag. `smpp.codec` reads these specs once and builds its
encoders and decoders from them, so a layout is written exactly once.

Why the classes have a `__dict__` and no `__slots__`: every PDU carries every
SMPP 3.4 optional parameter as an attribute (None when absent). With slots a
decoder would have to set some sixty attributes per PDU; with a `__dict__` the
decoder stores only what was on the wire and an absent attribute falls back
to its class-level default. Instances built in code get the same shape from
the generated `__init__` (see `_pdu`), so `codec.encode` finds present TLVs
by looking at what the instance holds rather than testing sixty names.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, TypeVar, dataclass_transform

from .constants import INTERFACE_VERSION, CommandId

# --- field specs ------------------------------------------------------------

FieldKind = Literal["u8", "u16", "u32", "cstr", "octets", "short_message", "dests", "unsuccess"]


@dataclass(frozen=True, slots=True)
class BodySpec:
    """How one mandatory body field is encoded (SMPP 3.4 section 3.1)."""

    kind: FieldKind
    max_length: int = 0  # C-octet strings: including the NUL


@dataclass(frozen=True, slots=True)
class TlvSpec:
    """One optional parameter (SMPP 3.4 section 5.3.2)."""

    tag: int
    kind: Literal["u8", "u16", "u32", "cstr", "octets"]
    max_length: int = 0  # octets / cstr on the wire, 0 = up to 65535


def _body(kind: FieldKind, default: Any, max_length: int = 0) -> Any:
    return field(default=default, metadata={"smpp": BodySpec(kind, max_length)})


def cstr(max_length: int) -> Any:
    """A C-octet string of at most `max_length` octets including its NUL."""
    return _body("cstr", "", max_length)


def u8(default: int = 0) -> Any:
    return _body("u8", default)


def u32(default: int = 0) -> Any:
    return _body("u32", default)


def _tlv(tag: int, kind: Literal["u8", "u16", "u32", "cstr", "octets"], max_length: int = 0) -> Any:
    return field(default=None, metadata={"tlv": TlvSpec(tag, kind, max_length)})


# --- submit_multi structures (SMPP 3.4 section 4.5.1.1 and 4.5.2) -----------


@dataclass(frozen=True, slots=True)
class SmeAddress:
    """A dest_address of dest_flag 1."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@dataclass(frozen=True, slots=True)
class DistributionList:
    """A dest_address of dest_flag 2."""

    dl_name: str = ""


@dataclass(frozen=True, slots=True)
class UnsuccessSme:
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    error_status_code: int = 0


# --- the class decorator -----------------------------------------------------

_T = TypeVar("_T")


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
def _pdu(cls: type[_T]) -> type[_T]:
    """A frozen, keyword-only dataclass whose __init__ stores only what is set.

    The generated dataclass __init__ would set all sixty-odd fields one
    object.__setattr__ at a time; this one builds the instance dict in one go,
    leaving out absent optional parameters (they fall back to the class
    default, None) and putting present ones after the body fields, where a
    decoded PDU has them too. `codec.encode` relies on that order: the TLVs
    are whatever follows the header and body fields.
    """
    klass: Any = dataclass(frozen=True, kw_only=True, repr=False, init=False)(cls)
    klass.__init__ = _make_init(klass)
    return cls


def _make_init(cls: type[Any]) -> Any:
    all_fields = fields(cls)
    fixed = [f for f in all_fields if "tlv" not in f.metadata and f.name != "unknown_tlvs"]
    tlvs = [f for f in all_fields if "tlv" in f.metadata]
    defaults = {f"_d_{f.name}": f.default for f in all_fields}
    params = ", ".join(f"{f.name}=_d_{f.name}" for f in all_fields)
    lines = [f"def __init__(self, *, {params}):"]
    lines.append("    d = {" + "".join(f"{f.name!r}: {f.name}, " for f in fixed) + "}")
    for f in tlvs:
        lines.append(f"    if {f.name} is not None: d[{f.name!r}] = {f.name}")
    lines.append("    if unknown_tlvs: d['unknown_tlvs'] = tuple(unknown_tlvs)")
    lines.append("    _set(self, '__dict__', d)")
    namespace: dict[str, Any] = {"_set": object.__setattr__, **defaults}
    exec("\n".join(lines), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


# --- the base: header fields and every SMPP 3.4 optional parameter ---------


@_pdu
class Pdu:
    """Common to every PDU: the header fields and the optional parameters.

    command_length is not a field: it is derived when encoding.
    """

    command_id: ClassVar[int]

    sequence_number: int = 0
    command_status: int = 0

    # SMPP 3.4 section 5.3.2, in tag order.
    dest_addr_subunit: int | None = _tlv(0x0005, "u8")
    dest_network_type: int | None = _tlv(0x0006, "u8")
    dest_bearer_type: int | None = _tlv(0x0007, "u8")
    dest_telematics_id: int | None = _tlv(0x0008, "u16")
    source_addr_subunit: int | None = _tlv(0x000D, "u8")
    source_network_type: int | None = _tlv(0x000E, "u8")
    source_bearer_type: int | None = _tlv(0x000F, "u8")
    source_telematics_id: int | None = _tlv(0x0010, "u16")
    qos_time_to_live: int | None = _tlv(0x0017, "u32")
    payload_type: int | None = _tlv(0x0019, "u8")
    additional_status_info_text: str | None = _tlv(0x001D, "cstr", 256)
    receipted_message_id: str | None = _tlv(0x001E, "cstr", 65)
    ms_msg_wait_facilities: int | None = _tlv(0x0030, "u8")
    privacy_indicator: int | None = _tlv(0x0201, "u8")
    source_subaddress: bytes | None = _tlv(0x0202, "octets", 23)
    dest_subaddress: bytes | None = _tlv(0x0203, "octets", 23)
    user_message_reference: int | None = _tlv(0x0204, "u16")
    user_response_code: int | None = _tlv(0x0205, "u8")
    source_port: int | None = _tlv(0x020A, "u16")
    destination_port: int | None = _tlv(0x020B, "u16")
    sar_msg_ref_num: int | None = _tlv(0x020C, "u16")
    language_indicator: int | None = _tlv(0x020D, "u8")
    sar_total_segments: int | None = _tlv(0x020E, "u8")
    sar_segment_seqnum: int | None = _tlv(0x020F, "u8")
    sc_interface_version: int | None = _tlv(0x0210, "u8")
    callback_num_pres_ind: int | None = _tlv(0x0302, "u8")
    callback_num_atag: bytes | None = _tlv(0x0303, "octets", 65)
    number_of_messages: int | None = _tlv(0x0304, "u8")
    callback_num: bytes | None = _tlv(0x0381, "octets", 19)
    dpf_result: int | None = _tlv(0x0420, "u8")
    set_dpf: int | None = _tlv(0x0421, "u8")
    ms_availability_status: int | None = _tlv(0x0422, "u8")
    network_error_code: bytes | None = _tlv(0x0423, "octets", 3)
    message_payload: bytes | None = _tlv(0x0424, "octets")
    delivery_failure_reason: int | None = _tlv(0x0425, "u8")
    more_messages_to_send: int | None = _tlv(0x0426, "u8")
    message_state: int | None = _tlv(0x0427, "u8")
    ussd_service_op: int | None = _tlv(0x0501, "u8")
    display_time: int | None = _tlv(0x1201, "u8")
    sms_signal: int | None = _tlv(0x1203, "u16")
    ms_validity: int | None = _tlv(0x1204, "u8")
    alert_on_message_delivery: bytes | None = _tlv(0x130C, "octets", 1)
    its_reply_type: int | None = _tlv(0x1380, "u8")
    its_session_info: int | None = _tlv(0x1383, "u16")

    # TLVs with tags this library does not know: (tag, value) in wire order,
    # kept byte-exact and re-encoded as they came.
    unknown_tlvs: tuple[tuple[int, bytes], ...] = ()

    def __repr__(self) -> str:
        # Only what is set, so logs and test failures stay readable.
        d = self.__dict__
        shown = [
            f"{name}={d[name]!r}" for name in d if name not in _TLV_NAMES or d[name] is not None
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & 0x80000000)


_TLV_NAMES: frozenset[str] = frozenset(f.name for f in fields(Pdu) if "tlv" in f.metadata)
TLV_SPECS: dict[str, TlvSpec] = {
    f.name: f.metadata["tlv"] for f in fields(Pdu) if "tlv" in f.metadata
}


def body_specs(cls: type[Pdu]) -> tuple[tuple[str, BodySpec, Any], ...]:
    """The mandatory body fields of a PDU class, in wire order: (name, spec, default)."""
    # Wire order is declaration order. fields() is not quite that: a field
    # that a subclass redeclares keeps its base-class position, and
    # query_sm_resp redeclares the message_state TLV as a mandatory field.
    by_name = {f.name: f for f in fields(cls)}
    out = []
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("__dataclass_fields__", {})
        for name in inspect.get_annotations(klass):
            f = by_name.get(name)
            if f is None or name in seen or "smpp" not in own[name].metadata:
                continue
            seen.add(name)
            out.append((name, f.metadata["smpp"], f.default))
    return tuple(out)


# --- session management (SMPP 3.4 section 4.1) ------------------------------


@_pdu
class _Bind(Pdu):
    system_id: str = cstr(16)
    password: str = cstr(9)
    system_type: str = cstr(13)
    interface_version: int = u8(INTERFACE_VERSION)
    addr_ton: int = u8()
    addr_npi: int = u8()
    address_range: str = cstr(41)


@_pdu
class _BindResp(Pdu):
    system_id: str = cstr(16)


@_pdu
class BindTransmitter(_Bind):
    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER


@_pdu
class BindTransmitterResp(_BindResp):
    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER_RESP


@_pdu
class BindReceiver(_Bind):
    command_id: ClassVar[int] = CommandId.BIND_RECEIVER


@_pdu
class BindReceiverResp(_BindResp):
    command_id: ClassVar[int] = CommandId.BIND_RECEIVER_RESP


@_pdu
class BindTransceiver(_Bind):
    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER


@_pdu
class BindTransceiverResp(_BindResp):
    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER_RESP


@_pdu
class Outbind(Pdu):
    command_id: ClassVar[int] = CommandId.OUTBIND
    system_id: str = cstr(16)
    password: str = cstr(9)


@_pdu
class Unbind(Pdu):
    command_id: ClassVar[int] = CommandId.UNBIND


@_pdu
class UnbindResp(Pdu):
    command_id: ClassVar[int] = CommandId.UNBIND_RESP


@_pdu
class GenericNack(Pdu):
    command_id: ClassVar[int] = CommandId.GENERIC_NACK


@_pdu
class EnquireLink(Pdu):
    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK


@_pdu
class EnquireLinkResp(Pdu):
    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK_RESP


# --- message submission and delivery (SMPP 3.4 sections 4.4 - 4.7) ----------


@_pdu
class _ShortMessage(Pdu):
    """submit_sm and deliver_sm share one layout (sections 4.4.1 and 4.6.1)."""

    service_type: str = cstr(6)
    source_addr_ton: int = u8()
    source_addr_npi: int = u8()
    source_addr: str = cstr(21)
    dest_addr_ton: int = u8()
    dest_addr_npi: int = u8()
    destination_addr: str = cstr(21)
    esm_class: int = u8()
    protocol_id: int = u8()
    priority_flag: int = u8()
    schedule_delivery_time: str = cstr(17)
    validity_period: str = cstr(17)
    registered_delivery: int = u8()
    replace_if_present_flag: int = u8()
    data_coding: int = u8()
    sm_default_msg_id: int = u8()
    # sm_length is not a field: it is len(short_message), at most 254.
    short_message: bytes = _body("short_message", b"", 254)


@_pdu
class _MessageIdResp(Pdu):
    message_id: str = cstr(65)


@_pdu
class SubmitSm(_ShortMessage):
    command_id: ClassVar[int] = CommandId.SUBMIT_SM


@_pdu
class SubmitSmResp(_MessageIdResp):
    command_id: ClassVar[int] = CommandId.SUBMIT_SM_RESP


@_pdu
class DeliverSm(_ShortMessage):
    command_id: ClassVar[int] = CommandId.DELIVER_SM


@_pdu
class DeliverSmResp(_MessageIdResp):
    command_id: ClassVar[int] = CommandId.DELIVER_SM_RESP


@_pdu
class SubmitMulti(Pdu):
    command_id: ClassVar[int] = CommandId.SUBMIT_MULTI
    service_type: str = cstr(6)
    source_addr_ton: int = u8()
    source_addr_npi: int = u8()
    source_addr: str = cstr(21)
    # number_of_dests is len(dest_address), at most 254 (section 4.5.1).
    dest_address: tuple[SmeAddress | DistributionList, ...] = _body("dests", ())
    esm_class: int = u8()
    protocol_id: int = u8()
    priority_flag: int = u8()
    schedule_delivery_time: str = cstr(17)
    validity_period: str = cstr(17)
    registered_delivery: int = u8()
    replace_if_present_flag: int = u8()
    data_coding: int = u8()
    sm_default_msg_id: int = u8()
    short_message: bytes = _body("short_message", b"", 254)


@_pdu
class SubmitMultiResp(Pdu):
    command_id: ClassVar[int] = CommandId.SUBMIT_MULTI_RESP
    message_id: str = cstr(65)
    # no_unsuccess is len(unsuccess_sme).
    unsuccess_sme: tuple[UnsuccessSme, ...] = _body("unsuccess", ())


@_pdu
class DataSm(Pdu):
    """Section 4.7.1: addresses may be up to 65 octets here."""

    command_id: ClassVar[int] = CommandId.DATA_SM
    service_type: str = cstr(6)
    source_addr_ton: int = u8()
    source_addr_npi: int = u8()
    source_addr: str = cstr(65)
    dest_addr_ton: int = u8()
    dest_addr_npi: int = u8()
    destination_addr: str = cstr(65)
    esm_class: int = u8()
    registered_delivery: int = u8()
    data_coding: int = u8()


@_pdu
class DataSmResp(_MessageIdResp):
    command_id: ClassVar[int] = CommandId.DATA_SM_RESP


# --- ancillary operations (SMPP 3.4 sections 4.8 - 4.12) --------------------


@_pdu
class QuerySm(Pdu):
    command_id: ClassVar[int] = CommandId.QUERY_SM
    message_id: str = cstr(65)
    source_addr_ton: int = u8()
    source_addr_npi: int = u8()
    source_addr: str = cstr(21)


@_pdu
class QuerySmResp(Pdu):
    command_id: ClassVar[int] = CommandId.QUERY_SM_RESP
    message_id: str = cstr(65)
    final_date: str = cstr(17)
    message_state: int = u8()  # mandatory here, not the TLV of the same name
    error_code: int = u8()


@_pdu
class CancelSm(Pdu):
    command_id: ClassVar[int] = CommandId.CANCEL_SM
    service_type: str = cstr(6)
    message_id: str = cstr(65)
    source_addr_ton: int = u8()
    source_addr_npi: int = u8()
    source_addr: str = cstr(21)
    dest_addr_ton: int = u8()
    dest_addr_npi: int = u8()
    destination_addr: str = cstr(21)


@_pdu
class CancelSmResp(Pdu):
    command_id: ClassVar[int] = CommandId.CANCEL_SM_RESP


@_pdu
class ReplaceSm(Pdu):
    command_id: ClassVar[int] = CommandId.REPLACE_SM
    message_id: str = cstr(65)
    source_addr_ton: int = u8()
    source_addr_npi: int = u8()
    source_addr: str = cstr(21)
    schedule_delivery_time: str = cstr(17)
    validity_period: str = cstr(17)
    registered_delivery: int = u8()
    sm_default_msg_id: int = u8()
    short_message: bytes = _body("short_message", b"", 254)


@_pdu
class ReplaceSmResp(Pdu):
    command_id: ClassVar[int] = CommandId.REPLACE_SM_RESP


@_pdu
class AlertNotification(Pdu):
    command_id: ClassVar[int] = CommandId.ALERT_NOTIFICATION
    source_addr_ton: int = u8()
    source_addr_npi: int = u8()
    source_addr: str = cstr(65)
    esme_addr_ton: int = u8()
    esme_addr_npi: int = u8()
    esme_addr: str = cstr(65)


PDU_CLASSES: tuple[type[Pdu], ...] = (
    BindTransmitter,
    BindTransmitterResp,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    Outbind,
    Unbind,
    UnbindResp,
    GenericNack,
    SubmitSm,
    SubmitSmResp,
    SubmitMulti,
    SubmitMultiResp,
    DeliverSm,
    DeliverSmResp,
    DataSm,
    DataSmResp,
    QuerySm,
    QuerySmResp,
    CancelSm,
    CancelSmResp,
    ReplaceSm,
    ReplaceSmResp,
    EnquireLink,
    EnquireLinkResp,
    AlertNotification,
)

PDU_BY_COMMAND_ID: dict[int, type[Pdu]] = {cls.command_id: cls for cls in PDU_CLASSES}

# Requests and their responses. generic_nack, outbind and alert_notification
# have none (sections 4.3, 4.1.7, 4.12).
RESPONSE_CLASS: dict[type[Pdu], type[Pdu]] = {
    cls: PDU_BY_COMMAND_ID[cls.command_id | 0x80000000]
    for cls in PDU_CLASSES
    if not cls.command_id & 0x80000000 and cls.command_id | 0x80000000 in PDU_BY_COMMAND_ID
}


def make_response(request: Pdu, command_status: int = 0, **fields_: Any) -> Pdu:
    """The response to `request`, echoing its sequence number (section 2.6)."""
    try:
        cls = RESPONSE_CLASS[type(request)]
    except KeyError:
        raise TypeError(f"{type(request).__name__} has no response") from None
    return cls(sequence_number=request.sequence_number, command_status=command_status, **fields_)
