"""Message text: alphabets, segmentation and reassembly.

Alphabets are those of SMPP 3.4 section 5.2.19 (data_coding), with the GSM 7-bit
default alphabet of 3GPP TS 23.038 (ex GSM 03.38) section 6.2.1 for data_coding 0.
Segmentation follows 3GPP TS 23.040 section 9.2.3.24.1 (concatenation, 8-bit
reference) and 9.2.3.24.8 (16-bit reference), or the SAR TLVs of SMPP 3.4
sections 5.3.2.22-24, or one message_payload TLV (section 5.3.2.32).

GSM-7 text travels in SMPP as *unpacked* septets, one per octet: that is what
SMSCs, Kannel and smpplib put in short_message for data_coding 0. Packing into
the air interface's 7-bit stream is the SMSC's job; `pack_septets` and
`unpack_septets` exist for the rare peer that wants it.

Binary data_codings (2, 4, and the 8-bit message-class values) have no text;
`decode` maps each octet to the code point of the same value (Latin-1 is the
identity on 0..255) and `encode` does the reverse, so binary user data
survives `split` and `Reassembler` unchanged.
"""

from __future__ import annotations

import codecs
import enum
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal

from .constants import CommandStatus, DataCoding, EsmClass
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = [
    "Completed",
    "MalformedUdh",
    "MessageTooLong",
    "Part",
    "Reassembler",
    "TextError",
    "UnencodableText",
    "UnsupportedDataCoding",
    "choose_encoding",
    "count_segments",
    "decode",
    "decode_gsm7",
    "encode",
    "encode_gsm7",
    "pack_septets",
    "parse_udh",
    "split",
    "unpack_septets",
]


# --- errors ------------------------------------------------------------------


class TextError(ProtocolError):
    """Base of the errors of this module."""


class UnencodableText(TextError, LocalProtocolError):
    """The text has a character the requested data_coding cannot carry."""


class UnsupportedDataCoding(TextError, LocalProtocolError):
    """A data_coding this module has no codec for (JIS, pictograms, KS C 5601...)."""


class MessageTooLong(TextError, LocalProtocolError):
    """More than 255 segments (a one-octet count), or a message_payload over 64K."""

    command_status = CommandStatus.RINVMSGLEN


class MalformedUdh(TextError, RemoteProtocolError):
    """A user data header whose lengths do not add up (3GPP TS 23.040 section 9.2.3.24)."""

    command_status = CommandStatus.RINVMSGLEN


# --- GSM 03.38 default alphabet ----------------------------------------------

ESCAPE = 0x1B

# 3GPP TS 23.038 section 6.2.1, in septet order. 0x1B is the escape to the
# extension table, not a character; its slot holds a placeholder.
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# 3GPP TS 23.038 section 6.2.1.1: characters reached by 0x1B + septet.
_GSM_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

# Encoding is str.translate to a str of code points 0..127 (one per septet)
# followed by a Latin-1 encode: both loops run in C. translate leaves a
# character it has no entry for unchanged, so the text is checked first.
_GSM_TRANSLATE: dict[int, str] = {
    ord(char): chr(septet) for septet, char in enumerate(_GSM_BASIC) if septet != ESCAPE
}
_GSM_TRANSLATE.update({ord(char): f"\x1b{chr(code)}" for code, char in _GSM_EXTENSION.items()})
_GSM_CHARS = "".join(chr(code_point) for code_point in _GSM_TRANSLATE)
_NOT_GSM = re.compile(f"[^{re.escape(_GSM_CHARS)}]")
_GSM_EXTENSION_CHARS = tuple(_GSM_EXTENSION.values())

# Decoding table for codecs.charmap_decode. Octets 0x80-0xFF cannot be septets;
# they become '?' so that the decoded text stays GSM-encodable when forwarded.
_GSM_DECODE_TABLE = _GSM_BASIC.replace("\x1b", " ") + "?" * 128


def encode_gsm7(text: str, errors: Literal["strict", "replace"] = "strict") -> bytes:
    """Text to unpacked GSM 03.38 septets, an extension character as 0x1B + septet.

    With errors="replace" a character outside the alphabet becomes '?'.
    """
    bad = _NOT_GSM.search(text)
    if bad is not None:
        if errors == "strict":
            raise UnencodableText(
                f"{bad.group()!r} at position {bad.start()} is not in the GSM 7-bit alphabet",
                field="short_message",
            )
        text = _NOT_GSM.sub("?", text)
    return text.translate(_GSM_TRANSLATE).encode("latin-1")


def _decode_basic(septets: bytes) -> str:
    return codecs.charmap_decode(septets, "strict", _GSM_DECODE_TABLE)[0]


def decode_gsm7(data: bytes) -> str:
    """Unpacked GSM 03.38 septets to text. Never raises.

    An escape followed by a septet the extension table does not define shows the
    basic table's character for that septet (3GPP TS 23.038 section 6.2.1.1);
    0x1B 0x1B, reserved for a further extension table, shows a space (same
    section); a lone escape at the end is dropped.
    """
    if ESCAPE not in data:
        return _decode_basic(data)
    out: list[str] = []
    start = 0
    while (escape := data.find(ESCAPE, start)) >= 0:
        out.append(_decode_basic(data[start:escape]))
        if escape + 1 == len(data):
            return "".join(out)
        code = data[escape + 1]
        if code == ESCAPE:
            out.append(" ")
        else:
            out.append(_GSM_EXTENSION.get(code) or _GSM_DECODE_TABLE[code])
        start = escape + 2
    out.append(_decode_basic(data[start:]))
    return "".join(out)


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets (one per octet, high bit ignored) into the 7-bit stream.

    3GPP TS 23.038 section 6.1.2.1.1: the first septet takes the low bits of the
    first octet. fill_bits (0-6) leading zero bits align the septets after a UDH
    (3GPP TS 23.040 section 9.2.3.24).
    """
    out = bytearray()
    buffer = 0
    bits = fill_bits
    for septet in septets:
        buffer |= (septet & 0x7F) << bits
        bits += 7
        while bits >= 8:
            out.append(buffer & 0xFF)
            buffer >>= 8
            bits -= 8
    if bits:
        out.append(buffer)
    return bytes(out)


def unpack_septets(data: bytes, count: int | None = None, fill_bits: int = 0) -> bytes:
    """The reverse of `pack_septets`.

    Without count, every whole septet in data is returned: 7 septets packed into
    7 octets come back as 8, the last being 0 (the sender should have padded with
    CR, 3GPP TS 23.038 section 6.1.2.3.1). Pass the septet count (TP-UDL) to avoid it.
    """
    if count is None:
        count = (len(data) * 8 - fill_bits) // 7
    out = bytearray()
    value = int.from_bytes(data, "little") >> fill_bits
    for _ in range(count):
        out.append(value & 0x7F)
        value >>= 7
    return bytes(out)


# --- data_coding -------------------------------------------------------------


class _Kind(enum.Enum):
    """How a data_coding's text is measured and where it may be cut."""

    SEPTETS = enum.auto()  # unpacked GSM-7: never cut after an escape
    OCTETS = enum.auto()  # one octet per character (or binary)
    UTF16 = enum.auto()  # UCS-2 units: never cut inside a surrogate pair


_OCTET_CODECS: dict[int, str] = {
    DataCoding.IA5: "ascii",
    DataCoding.BINARY_8BIT_A: "latin-1",
    DataCoding.LATIN_1: "latin-1",
    DataCoding.BINARY: "latin-1",
    DataCoding.CYRILLIC: "iso8859-5",
    DataCoding.HEBREW: "iso8859-8",
}


def _kind(data_coding: int) -> tuple[_Kind, str]:
    """The alphabet behind a data_coding (SMPP 3.4 section 5.2.19)."""
    if data_coding == DataCoding.DEFAULT:
        return _Kind.SEPTETS, "gsm7"
    if data_coding == DataCoding.UCS2:
        return _Kind.UTF16, "utf-16-be"
    codec = _OCTET_CODECS.get(data_coding)
    if codec is not None:
        return _Kind.OCTETS, codec
    # 0xC0-0xFF are 3GPP TS 23.038 section 4 coding groups: 0xC0-0xDF message
    # waiting with the default alphabet, 0xE0-0xEF message waiting in UCS-2,
    # 0xF0-0xFF message class with bit 2 choosing default alphabet or 8-bit data.
    if 0xC0 <= data_coding <= 0xDF:
        return _Kind.SEPTETS, "gsm7"
    if 0xE0 <= data_coding <= 0xEF:
        return _Kind.UTF16, "utf-16-be"
    if 0xF0 <= data_coding <= 0xFF:
        if data_coding & 0x04:
            return _Kind.OCTETS, "latin-1"
        return _Kind.SEPTETS, "gsm7"
    raise UnsupportedDataCoding(
        f"no codec for data_coding 0x{data_coding:02X}", field="data_coding"
    )


def encode(text: str, data_coding: int) -> bytes:
    """Text in the alphabet of data_coding. Raises `UnencodableText` if it does not fit.

    UCS-2 is UTF-16BE: a character outside the BMP becomes a surrogate pair, as
    every handset and SMSC expects. Binary codings take U+0000-U+00FF as octets.
    """
    kind, codec = _kind(data_coding)
    if kind is _Kind.SEPTETS:
        return encode_gsm7(text)
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise UnencodableText(
            f"{text[exc.start]!r} at position {exc.start} cannot be sent with "
            f"data_coding 0x{data_coding:02X} ({codec})",
            field="short_message",
        ) from None


def decode(data: bytes, data_coding: int) -> str:
    """Decode user data (without UDH). Never raises for a supported data_coding.

    Octets the alphabet does not define become U+FFFD ('?' for GSM-7); an odd
    trailing octet or a lone surrogate in UCS-2 becomes U+FFFD.
    """
    kind, codec = _kind(data_coding)
    if kind is _Kind.SEPTETS:
        return decode_gsm7(data)
    return data.decode(codec, "replace")


def choose_encoding(text: str) -> DataCoding:
    """GSM-7 (data_coding 0) if every character is in the default alphabet or its
    extension table, else UCS-2: the two alphabets every handset reads."""
    if _NOT_GSM.search(text) is None:
        return DataCoding.DEFAULT
    return DataCoding.UCS2


def _encode_for(text: str, data_coding: int | None) -> tuple[int, bytes]:
    """encode() with data_coding None meaning `choose_encoding`, checking the text once."""
    if data_coding is not None:
        return data_coding, encode(text, data_coding)
    if _NOT_GSM.search(text) is None:
        return DataCoding.DEFAULT, text.translate(_GSM_TRANSLATE).encode("latin-1")
    return DataCoding.UCS2, text.encode("utf-16-be")


# --- segmentation ------------------------------------------------------------

# 3GPP TS 23.040 section 9.2.3.24: a UDH is UDHL + IEs; IE 0x00 (8-bit
# reference) makes 6 octets, IE 0x08 (16-bit reference) 7.
IEI_CONCAT_8BIT = 0x00
IEI_CONCAT_16BIT = 0x08
_UDH_LENGTH = {8: 6, 16: 7}

# 3GPP TS 23.040 section 9.2.3.16: TP-UD is at most 140 octets. With GSM-7 the
# UDH is followed by fill bits up to a septet boundary, so (140 - UDH) octets
# hold floor((140 - UDH) * 8 / 7) septets: 160, 153, 152.
_TP_UD_OCTETS = 140
MAX_SEGMENTS = 255  # segment count and number are one octet (UDH and SAR alike)
MAX_PAYLOAD = 0xFFFF  # message_payload length is two octets (SMPP 3.4 section 5.3.2.32)


def _capacity(kind: _Kind, udh_length: int) -> int:
    """Encoded octets of user data that fit in one segment after a UDH of udh_length."""
    octets = _TP_UD_OCTETS - udh_length
    if kind is _Kind.SEPTETS:
        return octets * 8 // 7
    if kind is _Kind.UTF16:
        return octets - octets % 2
    return octets


def _cuts(data: bytes, kind: _Kind, capacity: int) -> list[tuple[int, int]]:
    """Greedy segment boundaries that never split a character."""
    ranges = []
    start = 0
    size = len(data)
    while start < size:
        end = min(start + capacity, size)
        if end < size:
            if kind is _Kind.SEPTETS and data[end - 1] == ESCAPE:
                # Our encoder emits 0x1B only as the first half of an escape
                # pair, so a segment ending in one would orphan its character.
                end -= 1
            elif kind is _Kind.UTF16 and 0xD8 <= data[end - 2] <= 0xDB:
                # A high surrogate ends the segment: keep the pair together.
                end -= 2
        ranges.append((start, end))
        start = end
    return ranges


def _single_capacity(kind: _Kind) -> int:
    return _capacity(kind, 0)


def _segments(data: bytes, kind: _Kind, reference_bits: int) -> list[tuple[int, int]]:
    if len(data) <= _single_capacity(kind):
        return [(0, len(data))]
    return _cuts(data, kind, _capacity(kind, _UDH_LENGTH[reference_bits]))


def count_segments(
    text: str, data_coding: int | None = None, *, reference_bits: Literal[8, 16] = 8
) -> int:
    """How many SMS the text takes when concatenated with a UDH (or SAR).

    data_coding None means `choose_encoding`. Equals len(split(...)) for
    method "udh" and "sar" with the same reference_bits; unlike split it does not
    stop at 255 segments. The empty text is one segment.
    """
    data_coding, data = _encode_for(text, data_coding)
    return len(_segments(data, _kind(data_coding)[0], reference_bits))


@dataclass(frozen=True, slots=True)
class Part:
    """One submit_sm's worth of a message: the fields split() decides."""

    short_message: bytes
    data_coding: int
    esm_class_flags: int = 0
    sar_msg_ref_num: int | None = None
    sar_total_segments: int | None = None
    sar_segment_seqnum: int | None = None
    message_payload: bytes | None = None


def _concat_udh(reference: int, reference_bits: int, total: int, seqnum: int) -> bytes:
    if reference_bits == 16:
        return bytes((6, IEI_CONCAT_16BIT, 4, reference >> 8, reference & 0xFF, total, seqnum))
    return bytes((5, IEI_CONCAT_8BIT, 3, reference, total, seqnum))


def split(
    text: str,
    *,
    data_coding: int | None = None,
    method: Literal["udh", "sar", "payload"] = "udh",
    reference: int = 0,
    reference_bits: Literal[8, 16] = 8,
) -> list[Part]:
    """Split text into the parts to submit.

    - "udh": each part's short_message starts with a concatenation UDH (esm_class
      UDHI); 153 septets / 134 octets / 67 UCS-2 units per part, 152 / 133 / 66
      with a 16-bit reference.
    - "sar": no UDH; the sar_* TLVs tell the SMSC how to concatenate, and it adds
      the UDH on the air. Parts are sized for that UDH, so the limits are the same
      as "udh" with the same reference_bits; sar_msg_ref_num is two octets wide
      (SMPP 3.4 section 5.3.2.22) but an 8-bit reference lets the SMSC use IE 0x00.
    - "payload": always one Part with an empty short_message and the whole text in
      message_payload, which the SMSC splits (SMPP 3.4 section 5.3.2.32). data_sm
      has no short_message, so this is the method for it.

    For "udh" and "sar" a text that fits one SMS (160 septets / 140 octets / 70
    units) is one Part without UDH or TLVs. The reference is masked to 8 or 16
    bits; choosing it (a counter per destination) is the caller's job.
    """
    data_coding, data = _encode_for(text, data_coding)
    kind, _ = _kind(data_coding)
    if method == "payload":
        if len(data) > MAX_PAYLOAD:
            raise MessageTooLong(
                f"{len(data)} octets exceed message_payload's {MAX_PAYLOAD}",
                field="message_payload",
            )
        return [Part(short_message=b"", data_coding=data_coding, message_payload=data)]
    ranges = _segments(data, kind, reference_bits)
    total = len(ranges)
    if total == 1:
        return [Part(short_message=data, data_coding=data_coding)]
    if total > MAX_SEGMENTS:
        raise MessageTooLong(
            f"{total} segments exceed the {MAX_SEGMENTS} a one-octet count allows",
            field="short_message",
        )
    reference &= 0xFFFF if reference_bits == 16 else 0xFF
    if method == "sar":
        return [
            Part(
                short_message=data[start:end],
                data_coding=data_coding,
                sar_msg_ref_num=reference,
                sar_total_segments=total,
                sar_segment_seqnum=seqnum,
            )
            for seqnum, (start, end) in enumerate(ranges, start=1)
        ]
    return [
        Part(
            short_message=_concat_udh(reference, reference_bits, total, seqnum) + data[start:end],
            data_coding=data_coding,
            esm_class_flags=EsmClass.UDHI,
        )
        for seqnum, (start, end) in enumerate(ranges, start=1)
    ]


# --- reassembly --------------------------------------------------------------


def parse_udh(short_message: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split short_message into the UDH's information elements and the user data.

    3GPP TS 23.040 section 9.2.3.24: UDHL (octets that follow it), then IEI,
    IEDL, IED repeated. Raises `MalformedUdh` if a length runs past its end.
    """
    if not short_message:
        raise MalformedUdh("UDHI set but short_message is empty", field="short_message")
    header_end = 1 + short_message[0]
    if header_end > len(short_message):
        raise MalformedUdh(
            f"UDH length {short_message[0]} exceeds the {len(short_message) - 1} octets that follow",
            field="short_message",
        )
    elements: list[tuple[int, bytes]] = []
    position = 1
    while position < header_end:
        if position + 2 > header_end:
            raise MalformedUdh("truncated information element header", field="short_message")
        iei, length = short_message[position], short_message[position + 1]
        data_start = position + 2
        position = data_start + length
        if position > header_end:
            raise MalformedUdh(
                f"information element 0x{iei:02X} of {length} octets runs past the UDH",
                field="short_message",
            )
        elements.append((iei, short_message[data_start:position]))
    return elements, short_message[header_end:]


@dataclass(frozen=True, slots=True)
class Completed:
    """A whole incoming message.

    information_elements are the UDH elements other than concatenation (ports,
    for instance) of the first segment; data is the undecoded user data.
    """

    text: str
    data_coding: int
    data: bytes
    segments: int = 1
    information_elements: tuple[tuple[int, bytes], ...] = ()


@dataclass(slots=True)
class _Pending:
    started: float
    total: int
    parts: dict[int, bytes] = field(default_factory=dict)
    information_elements: tuple[tuple[int, bytes], ...] = ()


def _concat_info(elements: list[tuple[int, bytes]]) -> tuple[int, int, int, int] | None:
    """(reference_bits, reference, total, seqnum) of the concatenation IE, if valid.

    3GPP TS 23.040 section 9.2.3.24: of repeated non-repeatable IEs the last one
    counts; section 9.2.3.24.1: an IE with a zero count, a zero number or a
    number above the count is ignored, and so is one of the wrong length.
    """
    found: tuple[int, int, int, int] | None = None
    for iei, data in elements:
        if iei == IEI_CONCAT_8BIT and len(data) == 3:
            found = (8, data[0], data[1], data[2])
        elif iei == IEI_CONCAT_16BIT and len(data) == 4:
            found = (16, int.from_bytes(data[:2], "big"), data[2], data[3])
    if found is None or not 1 <= found[3] <= found[2]:
        return None
    return found


class Reassembler:
    """Collects the segments of incoming concatenated messages. No I/O, no clock.

    Sets are keyed by the caller's key (say, the peer and both addresses) plus
    the reference, the segment count and data_coding. Segments may come in any
    order; a repeated segment number keeps the first copy. Call `expire`
    regularly: a set whose segments never all arrive is only dropped there.
    A duplicate that arrives after its set completed starts a new set, which expires.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[Hashable, str, int, int, int], _Pending] = {}

    def __len__(self) -> int:
        """Incomplete sets held."""
        return len(self._pending)

    def add(
        self,
        key: Hashable,
        short_message: bytes,
        *,
        data_coding: int,
        udhi: bool,
        sar_msg_ref_num: int | None = None,
        sar_total_segments: int | None = None,
        sar_segment_seqnum: int | None = None,
        message_payload: bytes | None = None,
        now: float,
    ) -> Completed | None:
        """Feed one deliver_sm / data_sm / submit_sm; the message once complete.

        message_payload, when present, replaces short_message (SMPP 3.4 section
        5.3.2.32 forbids both). A UDH concatenation IE wins over SAR TLVs.
        Raises `MalformedUdh` when udhi is set and the UDH does not parse.
        """
        user_data = message_payload if message_payload is not None else short_message
        elements: list[tuple[int, bytes]] = []
        concat: tuple[str, int, int, int] | None = None
        if udhi:
            elements, user_data = parse_udh(user_data)
            info = _concat_info(elements)
            if info is not None:
                bits, reference, total, seqnum = info
                concat = (f"udh{bits}", reference, total, seqnum)
                elements = [
                    (iei, data)
                    for iei, data in elements
                    if iei not in (IEI_CONCAT_8BIT, IEI_CONCAT_16BIT)
                ]
        if (
            concat is None
            and sar_msg_ref_num is not None
            and sar_total_segments is not None
            and sar_segment_seqnum is not None
            and 1 <= sar_segment_seqnum <= sar_total_segments
        ):
            concat = ("sar", sar_msg_ref_num, sar_total_segments, sar_segment_seqnum)

        if concat is None or concat[2] == 1:
            return Completed(
                text=decode(user_data, data_coding),
                data_coding=data_coding,
                data=user_data,
                information_elements=tuple(elements),
            )

        scheme, reference, total, seqnum = concat
        set_key = (key, scheme, reference, total, data_coding)
        pending = self._pending.get(set_key)
        if pending is None:
            pending = self._pending[set_key] = _Pending(started=now, total=total)
        if seqnum in pending.parts:
            return None
        pending.parts[seqnum] = user_data
        if seqnum == 1:
            pending.information_elements = tuple(elements)
        if len(pending.parts) < total:
            return None

        del self._pending[set_key]
        # Decode the joined user data, not each segment: a peer that cut an
        # escape pair or a surrogate pair in two (smpplib does) still reads right.
        data = b"".join(pending.parts[number] for number in range(1, total + 1))
        return Completed(
            text=decode(data, data_coding),
            data_coding=data_coding,
            data=data,
            segments=total,
            information_elements=pending.information_elements,
        )

    def expire(self, now: float, max_age: float) -> int:
        """Drop incomplete sets whose first segment came more than max_age ago; how many."""
        stale = [key for key, pending in self._pending.items() if now - pending.started > max_age]
        for key in stale:
            del self._pending[key]
        return len(stale)
