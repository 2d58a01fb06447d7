"""Pure encode / decode of one complete PDU: bytes <-> `smpp.pdu` objects.

The layouts are the field specs declared in `smpp.pdu`. From them this module
generates, once at import, one straight-line encoder and decoder per PDU
class (the way dataclasses generates `__init__`): a generic loop that
dispatches on the field kind costs several times more per field, and the
gateway decodes every submit_sm it accepts.

The generated fast paths do not check each field on its own: any failure
falls back to `_explain_decode` / `_explain_encode`, which walk the same specs
field by field and raise an error that names the field and the reason.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from .constants import HEADER_LENGTH
from .errors import (
    InvalidCommandId,
    InvalidCommandLength,
    LocalProtocolError,
    MalformedPdu,
    ProtocolError,
)
from .pdu import (
    PDU_CLASSES,
    TLV_SPECS,
    BodySpec,
    DistributionList,
    Pdu,
    SmeAddress,
    TlvSpec,
    UnsuccessSme,
    body_specs,
)

__all__ = ["decode", "decode_header", "encode"]

_HEADER = struct.Struct(">IIII")
_TL = struct.Struct(">HH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

_new = object.__new__
_set = object.__setattr__

# tag -> (name, spec); the same for every PDU class except where a class
# declares a mandatory field of the same name (query_sm_resp.message_state).
_TLV_BY_TAG: dict[int, tuple[str, TlvSpec]] = {
    spec.tag: (name, spec) for name, spec in TLV_SPECS.items()
}


class _Invalid(Exception):
    """Internal: a fast path met something it does not handle; explain it slowly."""


# --- decoding ---------------------------------------------------------------


def decode_header(data: bytes) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number)."""
    if len(data) < HEADER_LENGTH:
        raise InvalidCommandLength(
            f"{len(data)} octets is shorter than the 16-octet header", field="command_length"
        )
    return _HEADER.unpack_from(data)


def decode(data: bytes) -> Pdu:
    """Decode exactly one PDU. Raises a `ProtocolError` subclass naming the field."""
    try:
        command_length, command_id, command_status, sequence_number = _HEADER.unpack_from(data)
    except struct.error:
        decode_header(data)  # raises the error that says why
        raise
    if command_length != len(data):
        err = InvalidCommandLength(
            f"command_length {command_length} but {len(data)} octets were given",
            field="command_length",
        )
        err.command_id, err.sequence_number = command_id, sequence_number
        raise err
    decoder = _DECODERS.get(command_id)
    if decoder is None:
        err2 = InvalidCommandId(command_id)
        err2.sequence_number = sequence_number
        raise err2
    if type(data) is not bytes:
        data = bytes(data)  # slices of the result must be bytes, not bytearray or memoryview
    try:
        return decoder(data, command_status, sequence_number)
    except ProtocolError as exc:
        exc.command_id, exc.sequence_number = command_id, sequence_number
        raise


# tag -> (name, spec, fast kind, length limit) for the inline cases of _decode_tlvs.
_Known = tuple[str, TlvSpec, int, int]
_FAST_U8, _FAST_OCTETS, _FAST_CSTR = 1, 2, 3


def _decode_tlvs(
    data: bytes, pos: int, end: int, d: dict[str, Any], by_tag: dict[int, _Known]
) -> None:
    """Optional parameters from `pos` to `end` into `d` (SMPP 3.4 section 3.2.4)."""
    unknown: list[tuple[int, bytes]] | None = None
    unpack = _TL.unpack_from
    while pos < end:
        try:
            tag, length = unpack(data, pos)
        except struct.error:
            raise MalformedPdu(
                f"{end - pos} octets left at offset {pos}, too few for a TLV header",
                field="optional parameters",
            ) from None
        pos += 4
        stop = pos + length
        if stop > end:
            raise MalformedPdu(
                f"TLV 0x{tag:04X} claims {length} octets but only {end - pos} remain",
                field="optional parameters",
            )
        known = by_tag.get(tag)
        if known is None or known[0] in d:
            # Unknown, or a repeat of one already taken: keep it byte-exact.
            if unknown is None:
                unknown = []
            unknown.append((tag, data[pos:stop]))
        else:
            name, spec, fast, limit = known
            # The common cases inline; _tlv_value checks the rest and explains.
            # 1, 2, 3: _FAST_U8, _FAST_OCTETS, _FAST_CSTR (literals: no lookups).
            if fast == 1 and length == 1:
                d[name] = data[pos]
            elif fast == 2 and length <= limit:
                d[name] = data[pos:stop]
            elif fast == 3 and 0 < length <= limit and data[stop - 1] == 0:
                value = data[pos : stop - 1]
                if 0 in value:
                    raise MalformedPdu("NUL inside the string", field=name)
                d[name] = value.decode("latin-1")
            else:
                d[name] = _tlv_value(name, spec, data, pos, length)
        pos = stop
    if unknown:
        d["unknown_tlvs"] = tuple(unknown)


def _tlv_value(name: str, spec: TlvSpec, data: bytes, pos: int, length: int) -> Any:
    kind = spec.kind
    if kind == "u8":
        raise MalformedPdu(f"length {length}, must be 1", field=name)
    if kind == "u16":
        if length != 2:
            raise MalformedPdu(f"length {length}, must be 2", field=name)
        return _U16.unpack_from(data, pos)[0]
    if kind == "u32":
        if length != 4:
            raise MalformedPdu(f"length {length}, must be 4", field=name)
        return _U32.unpack_from(data, pos)[0]
    if spec.max_length and length > spec.max_length:
        raise MalformedPdu(f"length {length}, at most {spec.max_length}", field=name)
    value = data[pos : pos + length]
    if kind == "octets":
        return value
    # C-octet string. Peers often leave out the NUL inside a TLV, whose length
    # already frames it; accept both.
    if value[-1:] == b"\x00":
        value = value[:-1]
    if 0 in value:
        raise MalformedPdu("NUL inside the string", field=name)
    return value.decode("latin-1")


def _read_cstr(data: bytes, pos: int, end: int, name: str, max_length: int) -> tuple[str, int]:
    nul = data.find(0, pos, end)
    if nul < 0:
        raise MalformedPdu(
            f"no terminating NUL before the end of the PDU (offset {pos})", field=name
        )
    if nul - pos + 1 > max_length:
        raise MalformedPdu(f"{nul - pos + 1} octets with its NUL, at most {max_length}", field=name)
    return data[pos:nul].decode("latin-1"), nul + 1


def _read_dests(
    data: bytes, pos: int, end: int
) -> tuple[tuple[SmeAddress | DistributionList, ...], int]:
    """number_of_dests and dest_address list of submit_multi (section 4.5.1.1)."""
    if pos >= end:
        raise MalformedPdu("missing", field="number_of_dests")
    count = data[pos]
    pos += 1
    out: list[SmeAddress | DistributionList] = []
    for i in range(count):
        if pos >= end:
            raise MalformedPdu(f"{count} announced, {i} present", field="dest_address")
        flag = data[pos]
        pos += 1
        if flag == 1:
            if end - pos < 2:
                raise MalformedPdu("truncated SME address", field=f"dest_address[{i}]")
            ton, npi = data[pos], data[pos + 1]
            addr, pos = _read_cstr(data, pos + 2, end, f"dest_address[{i}].destination_addr", 21)
            out.append(SmeAddress(dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr))
        elif flag == 2:
            name, pos = _read_cstr(data, pos, end, f"dest_address[{i}].dl_name", 21)
            out.append(DistributionList(dl_name=name))
        else:
            raise MalformedPdu(f"dest_flag {flag}, must be 1 or 2", field=f"dest_address[{i}]")
    return tuple(out), pos


def _read_unsuccess(data: bytes, pos: int, end: int) -> tuple[tuple[UnsuccessSme, ...], int]:
    """no_unsuccess and unsuccess_sme list of submit_multi_resp (section 4.5.2)."""
    if pos >= end:
        raise MalformedPdu("missing", field="no_unsuccess")
    count = data[pos]
    pos += 1
    out: list[UnsuccessSme] = []
    for i in range(count):
        if end - pos < 2:
            raise MalformedPdu(f"{count} announced, {i} present", field="unsuccess_sme")
        ton, npi = data[pos], data[pos + 1]
        addr, pos = _read_cstr(data, pos + 2, end, f"unsuccess_sme[{i}].destination_addr", 21)
        if end - pos < 4:
            raise MalformedPdu("truncated", field=f"unsuccess_sme[{i}].error_status_code")
        (code,) = _U32.unpack_from(data, pos)
        pos += 4
        out.append(
            UnsuccessSme(
                dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr, error_status_code=code
            )
        )
    return tuple(out), pos


def _explain_decode(cls: type[Pdu], data: bytes) -> None:
    """Walk the body field by field and raise the precise error the fast path could not."""
    end = len(data)
    pos = HEADER_LENGTH
    for name, spec, _default in body_specs(cls):
        kind = spec.kind
        if kind in ("u8", "u32"):
            size = 1 if kind == "u8" else 4
            if end - pos < size:
                raise MalformedPdu(f"truncated at offset {pos}", field=name)
            pos += size
        elif kind == "cstr":
            _, pos = _read_cstr(data, pos, end, name, spec.max_length)
        elif kind == "short_message":
            if pos >= end:
                raise MalformedPdu(f"truncated at offset {pos}", field="sm_length")
            length = data[pos]
            if length > spec.max_length:
                raise MalformedPdu(
                    f"sm_length {length}, at most {spec.max_length}", field="sm_length"
                )
            if end - pos - 1 < length:
                raise MalformedPdu(
                    f"sm_length {length} but {end - pos - 1} octets remain", field="short_message"
                )
            pos += 1 + length
        elif kind == "dests":
            _, pos = _read_dests(data, pos, end)
        elif kind == "unsuccess":
            _, pos = _read_unsuccess(data, pos, end)
    _decode_tlvs(data, pos, end, {}, _tlvs_for(cls))
    raise MalformedPdu("does not parse", field=None)  # pragma: no cover - fast path disagreed


def _tlvs_for(cls: type[Pdu]) -> dict[int, _Known]:
    body_names = {name for name, _, _ in body_specs(cls)}
    fast = {"u8": _FAST_U8, "octets": _FAST_OCTETS, "cstr": _FAST_CSTR}
    return {
        tag: (name, spec, fast.get(spec.kind, 0), spec.max_length or 0xFFFF)
        for tag, (name, spec) in _TLV_BY_TAG.items()
        if name not in body_names
    }


def _gen_decoder(cls: type[Pdu]) -> Callable[[bytes, int, int], Pdu]:
    specs = body_specs(cls)
    lines = [
        "def decode_body(data, command_status, sequence_number):",
        "    end = len(data)",
    ]
    if cls.command_id & 0x80000000:
        # A response with an error status may come without a body (SMPP 3.4
        # section 4.4.2: "not returned if the command_status is non-zero").
        defaults = "".join(f"{name!r}: {default!r}, " for name, _, default in specs)
        lines.append(f"    if end == {HEADER_LENGTH}:")
        lines.append(
            "        d = {'sequence_number': sequence_number, 'command_status': command_status, "
            f"{defaults}}}"
        )
        lines.append("        obj = _new(cls); _set(obj, '__dict__', d); return obj")
    lines.append("    try:")
    lines.append(f"        pos = {HEADER_LENGTH}")
    lines.append("        find = data.find")
    # Fields go to locals and into one dict display at the end: cheaper than
    # a dict store per field.
    body: list[str] = []
    i = 0
    while i < len(specs):
        name, spec, _default = specs[i]
        kind = spec.kind
        if kind == "u8":
            # Consecutive octets are read in one go.
            run = [name]
            while i + 1 < len(specs) and specs[i + 1][1].kind == "u8":
                i += 1
                run.append(specs[i][0])
            for k, n in enumerate(run):
                body.append(f"f_{n} = data[pos + {k}]")
            body.append(f"pos += {len(run)}")
        elif kind == "u32":
            body.append(f"f_{name} = _U32.unpack_from(data, pos)[0]; pos += 4")
        elif kind == "cstr":
            body.append("z = find(0, pos)")
            body.append(f"if z < 0 or z - pos >= {spec.max_length}: raise _Invalid")
            body.append(f"f_{name} = data[pos:z].decode('latin-1'); pos = z + 1")
        elif kind == "short_message":
            body.append("n = data[pos]; pos += 1")
            body.append(f"if n > {spec.max_length} or pos + n > end: raise _Invalid")
            body.append(f"f_{name} = data[pos:pos + n]; pos += n")
        elif kind == "dests":
            body.append(f"f_{name}, pos = _read_dests(data, pos, end)")
        elif kind == "unsuccess":
            body.append(f"f_{name}, pos = _read_unsuccess(data, pos, end)")
        i += 1
    lines.extend("        " + b for b in body)
    lines.append("        if pos > end: raise _Invalid")
    lines.append("    except (_Invalid, IndexError, ValueError, struct.error):")
    lines.append("        _explain_decode(cls, data)")
    fields_display = "".join(f"{name!r}: f_{name}, " for name, _, _ in specs)
    lines.append(
        "    d = {'sequence_number': sequence_number, 'command_status': command_status, "
        f"{fields_display}}}"
    )
    lines.append("    if pos < end: _decode_tlvs(data, pos, end, d, by_tag)")
    lines.append("    obj = _new(cls)")
    lines.append("    _set(obj, '__dict__', d)")
    lines.append("    return obj")
    namespace: dict[str, Any] = {
        "cls": cls,
        "by_tag": _tlvs_for(cls),
        "_new": _new,
        "_set": _set,
        "_U32": _U32,
        "struct": struct,
        "_Invalid": _Invalid,
        "_explain_decode": _explain_decode,
        "_decode_tlvs": _decode_tlvs,
        "_read_dests": _read_dests,
        "_read_unsuccess": _read_unsuccess,
    }
    exec("\n".join(lines), namespace)
    fn: Callable[[bytes, int, int], Pdu] = namespace["decode_body"]
    return fn


# --- encoding ---------------------------------------------------------------


def encode(pdu: Pdu) -> bytes:
    """Encode one PDU. Raises `LocalProtocolError` naming a field that cannot go on the wire."""
    try:
        encoder = _ENCODERS[type(pdu)]
    except KeyError:
        raise LocalProtocolError(f"{type(pdu).__name__} is not an SMPP PDU", field=None) from None
    return encoder(pdu)


def _tlv_writer(name: str, spec: TlvSpec) -> Callable[[Any], bytes]:
    """A function that encodes one value of this optional parameter, header included."""
    tag, kind, max_length = spec.tag, spec.kind, spec.max_length
    if kind == "u8":
        # Every possible encoding, looked up in C: no Python frame per TLV.
        # A value outside 0..255 is a KeyError, explained by _explain_encode.
        return {v: _TL.pack(tag, 1) + bytes((v,)) for v in range(256)}.__getitem__
    if kind in ("u16", "u32"):
        size = 2 if kind == "u16" else 4
        header = _TL.pack(tag, size)

        def write_int(value: int) -> bytes:
            return header + value.to_bytes(size, "big")  # OverflowError when out of range

        return write_int

    limit = max_length or 0xFFFF
    pack = _TL.pack

    def too_long(length: int) -> LocalProtocolError:
        return LocalProtocolError(f"{length} octets, at most {max_length}", field=name)

    if kind == "cstr":

        def write_cstr(value: str) -> bytes:
            raw = value.encode("latin-1")
            length = len(raw) + 1
            if length > limit:
                raise too_long(length)
            return b"%s%s\x00" % (pack(tag, length), raw)

        return write_cstr

    def write_octets(value: bytes) -> bytes:
        length = len(value)
        if length > limit:
            raise too_long(length)
        return pack(tag, length) + value  # TypeError for what is not bytes

    return write_octets


def _write_unknown_tlvs(value: tuple[tuple[int, bytes], ...]) -> bytes:
    return b"".join([_TL.pack(tag, len(raw)) + raw for tag, raw in value])


_TLV_WRITERS: dict[str, Callable[[Any], bytes]] = {
    name: _tlv_writer(name, spec) for name, spec in TLV_SPECS.items()
}
_TLV_WRITERS["unknown_tlvs"] = _write_unknown_tlvs


def _encode_tlvs(items: Iterable[tuple[str, Any]]) -> bytes:
    writers = _TLV_WRITERS
    return b"".join([writers[name](value) for name, value in items])


def _write_dests(dests: tuple[SmeAddress | DistributionList, ...]) -> bytes:
    out = bytearray((len(dests),))
    for dest in dests:
        if isinstance(dest, SmeAddress):
            out += bytes((1, dest.dest_addr_ton, dest.dest_addr_npi))
            out += dest.destination_addr.encode("latin-1") + b"\x00"
        else:
            out.append(2)
            out += dest.dl_name.encode("latin-1") + b"\x00"
    return bytes(out)


def _write_unsuccess(items: tuple[UnsuccessSme, ...]) -> bytes:
    out = bytearray((len(items),))
    for item in items:
        out += bytes((item.dest_addr_ton, item.dest_addr_npi))
        out += item.destination_addr.encode("latin-1") + b"\x00"
        out += _U32.pack(item.error_status_code)
    return bytes(out)


def _check_value(name: str, spec: BodySpec, value: Any) -> None:
    """Raise the error for one mandatory field that cannot be encoded."""
    kind = spec.kind
    if kind in ("u8", "u32"):
        limit = 0xFF if kind == "u8" else 0xFFFFFFFF
        if not isinstance(value, int) or not 0 <= value <= limit:
            raise LocalProtocolError(f"{value!r} is not an integer in 0..{limit}", field=name)
    elif kind == "cstr":
        if not isinstance(value, str):
            raise LocalProtocolError(f"{value!r} is not a str", field=name)
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raise LocalProtocolError("not representable in a C-octet string", field=name) from None
        if b"\x00" in raw:
            raise LocalProtocolError("contains NUL", field=name)
        if len(raw) + 1 > spec.max_length:
            raise LocalProtocolError(
                f"{len(raw) + 1} octets with its NUL, at most {spec.max_length}", field=name
            )
    elif kind == "short_message":
        if not isinstance(value, bytes | bytearray):
            raise LocalProtocolError(f"{type(value).__name__}, must be bytes", field=name)
        if len(value) > spec.max_length:
            raise LocalProtocolError(
                f"{len(value)} octets, at most {spec.max_length} (use message_payload)", field=name
            )
    elif kind in ("dests", "unsuccess"):
        if len(value) > 254:
            raise LocalProtocolError(f"{len(value)} entries, at most 254", field=name)
        if kind == "dests":
            _write_dests(value)
        else:
            _write_unsuccess(value)


def _explain_encode(pdu: Pdu, exc: Exception) -> LocalProtocolError:
    for name, spec, _default in body_specs(type(pdu)):
        try:
            _check_value(name, spec, getattr(pdu, name))
        except LocalProtocolError as err:
            return err
        except (ValueError, TypeError, AttributeError, UnicodeEncodeError, struct.error) as err:
            return LocalProtocolError(str(err), field=name)
    for name in ("sequence_number", "command_status"):
        value = getattr(pdu, name)
        if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            return LocalProtocolError(f"{value!r} is not an integer in 0..0xFFFFFFFF", field=name)
    for name, value in pdu.__dict__.items():
        writer = _TLV_WRITERS.get(name)
        if writer is None or value is None:
            continue
        try:
            writer(value)
        except LocalProtocolError as err:
            return err
        except Exception as err:
            return LocalProtocolError(f"{value!r} cannot be encoded ({err!r})", field=name)
    return LocalProtocolError(f"cannot be encoded: {exc}", field="optional parameters")


def _gen_encoder(cls: type[Pdu]) -> Callable[[Pdu], bytes]:
    specs = body_specs(cls)
    fixed = frozenset(["sequence_number", "command_status", *(name for name, _, _ in specs)])
    lines = ["def encode_pdu(pdu):", "    try:"]
    # The body is one bytes %-format: a single C call instead of a join of
    # pieces (%c takes an octet and refuses anything outside 0..255).
    fmt: list[str] = []
    args: list[str] = []
    body: list[str] = []
    for i, (name, spec, _default) in enumerate(specs):
        kind = spec.kind
        if kind == "u8":
            fmt.append("%c")
            args.append(f"pdu.{name}")
        elif kind == "u32":
            fmt.append("%s")
            args.append(f"_U32.pack(pdu.{name})")
        elif kind == "cstr":
            var = f"v{i}"
            body.append(f"{var} = pdu.{name}.encode('latin-1')")
            body.append(f"if len({var}) >= {spec.max_length} or 0 in {var}: raise _Invalid")
            fmt.append("%s\\x00")
            args.append(var)
        elif kind == "short_message":
            var = f"v{i}"
            body.append(f"{var} = pdu.{name}")
            body.append(
                f"if len({var}) > {spec.max_length} or not isinstance({var}, bytes): raise _Invalid"
            )
            fmt.append("%c%s")
            args.append(f"len({var})")
            args.append(var)
        elif kind == "dests":
            fmt.append("%s")
            args.append(f"_write_dests(pdu.{name})")
        elif kind == "unsuccess":
            fmt.append("%s")
            args.append(f"_write_unsuccess(pdu.{name})")
    lines.extend("        " + b for b in body)
    # Header and body fields come first in the instance dict; TLVs follow (see smpp.pdu._pdu).
    n_fixed = len(fixed)
    lines.append("        d = pdu.__dict__")
    lines.append(
        f"        tlvs = b''.join([W[k](v) for k, v in islice(d.items(), {n_fixed}, None)]) "
        f"if len(d) > {n_fixed} else b''"
    )
    fmt.append("%s")
    args.append("tlvs")
    lines.append(f"        body = b'{''.join(fmt)}' % (" + "".join(a + ", " for a in args) + ")")
    lines.append(
        f"        return _HEADER.pack({HEADER_LENGTH} + len(body), {cls.command_id}, "
        "pdu.command_status, pdu.sequence_number) + body"
    )
    lines.append("    except LocalProtocolError:")
    lines.append("        raise")
    lines.append("    except Exception as exc:")
    lines.append("        raise _explain_encode(pdu, exc) from None")
    namespace: dict[str, Any] = {
        "islice": islice,
        "W": _TLV_WRITERS,
        "_HEADER": _HEADER,
        "_U32": _U32,
        "_Invalid": _Invalid,
        "_encode_tlvs": _encode_tlvs,
        "_write_dests": _write_dests,
        "_write_unsuccess": _write_unsuccess,
        "_explain_encode": _explain_encode,
        "LocalProtocolError": LocalProtocolError,
    }
    exec("\n".join(lines), namespace)
    fn: Callable[[Pdu], bytes] = namespace["encode_pdu"]
    return fn


_DECODERS: dict[int, Callable[[bytes, int, int], Pdu]] = {
    cls.command_id: _gen_decoder(cls) for cls in PDU_CLASSES
}
_ENCODERS: dict[type[Pdu], Callable[[Pdu], bytes]] = {cls: _gen_encoder(cls) for cls in PDU_CLASSES}
