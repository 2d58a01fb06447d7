"""Delivery receipt text <-> fields, and stat <-> message_state.

The receipt text is SMPP 3.4 Appendix B: "vendor specific", yet nearly every
SMSC sends some variant of

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
    stat:DDDDDDD err:E text:...

We format exactly that (the layout interface.md promises our own clients) and
parse leniently, because upstreams vary the field order and case, add seconds
to the dates, leave out `text:`, pad with extra spaces and append fields of
their own. When a deliver_sm carries the receipted_message_id and
message_state TLVs (section 5.3.2.12, 5.3.2.35), callers should prefer them
over what is parsed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .constants import FINAL_MESSAGE_STATES, MessageState
from .errors import RemoteProtocolError

__all__ = [
    "Receipt",
    "ReceiptError",
    "canonical_message_id",
    "format_receipt",
    "is_final",
    "message_id_forms",
    "parse_receipt",
    "stat_to_state",
    "state_to_stat",
]

TEXT_LENGTH = 20
"""Appendix B: `text` carries the first 20 characters of the short message."""


class ReceiptError(RemoteProtocolError):
    """Receipt text without a field a receipt cannot do without (`id`, `stat`).

    `field` names the missing field. No command_status of its own: whether
    the deliver_sm is still acknowledged is the application's decision.
    """


@dataclass(frozen=True, slots=True)
class Receipt:
    """The fields of an Appendix B receipt text.

    Dates are aware UTC datetimes when parsed; `format_receipt` treats naive
    ones as UTC. `stat` is the 7-letter state word (DELIVRD, UNDELIV, ...),
    `err` the network-specific error code as text. `id` and `stat` come first
    because a receipt is meaningless without them.
    """

    id: str
    stat: str
    sub: int = 1
    dlvrd: int = 0
    submit_date: datetime | None = None
    done_date: datetime | None = None
    err: str = "000"
    text: str = ""


# --- formatting -----------------------------------------------------------

# Appendix B leaves no room for "no date"; ten zeros keep the fixed layout that
# positional parsers rely on, and parse back to None (month 00 is no date).
_NO_DATE = "0000000000"


def _format_date(value: datetime | None) -> str:
    if value is None:
        return _NO_DATE
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    # strftime("%y%m%d%H%M"), a few times cheaper: every receipt formats two dates.
    return (
        f"{value.year % 100:02d}{value.month:02d}{value.day:02d}{value.hour:02d}{value.minute:02d}"
    )


def format_receipt(r: Receipt) -> str:
    """Receipt text in the layout of interface.md ("SMPP server").

    sub and dlvrd are zero-padded to 3 digits, err is left-padded with zeros
    to 3 characters, dates are YYMMDDhhmm in UTC (seconds are dropped), and
    text is cut to its first 20 characters (Appendix B).
    """
    return (
        f"id:{r.id} sub:{r.sub:03d} dlvrd:{r.dlvrd:03d}"
        f" submit date:{_format_date(r.submit_date)}"
        f" done date:{_format_date(r.done_date)}"
        f" stat:{r.stat} err:{r.err.rjust(3, '0')} text:{r.text[:TEXT_LENGTH]}"
    )


# --- parsing --------------------------------------------------------------

# A key is one of the Appendix B names at the start of the text or after
# whitespace (so "xid:" or "subject:" never match), in any case, with any
# spaces before the colon; "submit_date" and "submitdate" occur in the wild.
# Values are whatever lies between one key and the next; unknown "name:value"
# fields therefore end up after a known value's first token and are ignored.
_KEY = re.compile(
    r"(?<!\S)(id|sub|dlvrd|submit[ _]*date|done[ _]*date|stat|err|text)[ \t]*:",
    re.IGNORECASE,
)
_ASCII_DIGITS = re.compile(r"[0-9]+")
_REQUIRED = ("id", "stat")


def _key_name(raw: str) -> str:
    name = raw.lower()
    if name.startswith("submit"):
        return "submit_date"
    if name.startswith("done"):
        return "done_date"
    return name


def _first_token(segment: str) -> str:
    parts = segment.split(None, 1)
    return parts[0] if parts else ""


def _collect(text: str, start: int, fields: dict[str, str]) -> tuple[int | None, int | None]:
    """Read key/value pairs from `start` on into `fields` (the first one wins).

    Returns where the first key starts and where the value of `text:` starts
    (None when there is no such key). Keys after `text:` belong to the text.
    """
    matches = list(_KEY.finditer(text, start))
    first = matches[0].start() if matches else None
    for index, match in enumerate(matches):
        name = _key_name(match.group(1))
        if name == "text":
            return first, match.end()
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        fields.setdefault(name, _first_token(text[match.end() : end]))
    return first, None


def _parse_int(value: str | None, default: int) -> int:
    # str.isdigit() accepts "²" (in Latin-1), which int() then refuses.
    if value is not None and _ASCII_DIGITS.fullmatch(value):
        return int(value)
    return default


def _parse_date(value: str | None) -> datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss (Appendix B, with or without seconds).

    Some SMSCs send a four-digit year (YYYYMMDDhhmmss); that is accepted too.
    A date that is absent or not a calendar date is None, not an error: the
    dates are informational and the receipt is still worth matching.
    """
    if value is None or not _ASCII_DIGITS.fullmatch(value):
        return None
    try:
        if len(value) == 14:
            return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        if len(value) == 10 or len(value) == 12:
            return datetime(
                2000 + int(value[0:2]),
                int(value[2:4]),
                int(value[4:6]),
                int(value[6:8]),
                int(value[8:10]),
                int(value[10:12] or 0),
                tzinfo=UTC,
            )
    except ValueError:
        return None
    return None


def parse_receipt(data: str | bytes) -> Receipt:
    """Fields of a receipt text, read leniently (Appendix B).

    - Field order and the case of keys vary; unknown fields are ignored.
    - Everything after the first `text:` key is the text, even what looks
      like a field ("text:hi stat:FAKE"); only trailing NULs and line ends
      are removed. No `text:` gives "".
    - If `id` or `stat` is missing before `text:`, the fields after it are
      searched too, for SMSCs that put text in the middle; the text then
      ends where the first of those fields starts.
    - Dates carry 10 or 12 digits (or 14, with a four-digit year) and are
      returned as aware UTC datetimes; anything else is None.
    - stat is upper-cased; err is left-padded with zeros to 3 characters;
      non-numeric sub / dlvrd fall back to 1 / 0.
    - Bytes are decoded as Latin-1, which maps every octet.

    Raises ReceiptError naming `id` or `stat` when that field is missing.
    """
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    text = text.rstrip("\x00\r\n")
    fields: dict[str, str] = {}
    body = ""
    _, text_start = _collect(text, 0, fields)
    if text_start is not None:
        body = text[text_start:]
        if any(not fields.get(name) for name in _REQUIRED):
            tail_fields: dict[str, str] = {}
            first_key, _ = _collect(text, text_start, tail_fields)
            if first_key is not None:
                body = text[text_start:first_key].rstrip()
                for name, value in tail_fields.items():
                    if not fields.get(name):
                        fields[name] = value
    for name in _REQUIRED:
        if not fields.get(name):
            raise ReceiptError("missing from the receipt text", field=name)
    return Receipt(
        id=fields["id"],
        stat=fields["stat"].upper(),
        sub=_parse_int(fields.get("sub"), 1),
        dlvrd=_parse_int(fields.get("dlvrd"), 0),
        submit_date=_parse_date(fields.get("submit_date")),
        done_date=_parse_date(fields.get("done_date")),
        err=fields.get("err", "000").rjust(3, "0"),
        text=body,
    )


# --- stat <-> message_state -----------------------------------------------

# Appendix B's stat words against section 5.3.2.35's message_state values;
# SCHEDULED and SKIPPED are SMPP 5.0's. The first word for a state is the one
# we send.
_STAT_BY_STATE: dict[int, str] = {
    MessageState.SCHEDULED: "SCHEDULED",
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
    MessageState.SKIPPED: "SKIPPED",
}

_STATE_BY_STAT: dict[str, MessageState] = {
    stat: MessageState(state) for state, stat in _STAT_BY_STATE.items()
} | {
    # Seen from SMSCs that are not Appendix B-exact: still in the network.
    "BUFFRED": MessageState.ENROUTE,
    "BUFFERED": MessageState.ENROUTE,
    "ACKED": MessageState.ENROUTE,
    # Spelled-out forms some SMSCs send instead of the 7-letter words.
    "DELIVERED": MessageState.DELIVERED,
    "UNDELIVERABLE": MessageState.UNDELIVERABLE,
    "UNDELIVERED": MessageState.UNDELIVERABLE,
    "ACCEPTED": MessageState.ACCEPTED,
    "REJECTED": MessageState.REJECTED,
}


def stat_to_state(stat: str) -> MessageState:
    """message_state for a stat word, case-insensitive; UNKNOWN for words we do not know."""
    return _STATE_BY_STAT.get(stat.strip().upper(), MessageState.UNKNOWN)


def state_to_stat(state: int) -> str:
    """The stat word we send for a message_state; UNKNOWN for values outside 0-9."""
    return _STAT_BY_STATE.get(state, "UNKNOWN")


def is_final(state: int) -> bool:
    """Whether no later receipt can change the state (FINAL_MESSAGE_STATES)."""
    return state in FINAL_MESSAGE_STATES


# --- message id forms -----------------------------------------------------

_HEX = re.compile(r"[0-9A-Fa-f]+")
_DECIMAL = re.compile(r"[0-9]+")
_MAX_NUMERIC_ID = 64


def canonical_message_id(message_id: str) -> str:
    """The id as given, without surrounding whitespace and NULs: the exact key.

    Case and leading zeros are kept, because an id that is not a number may be
    case-sensitive (base62 and the like) and zeros may be significant to it.
    """
    return message_id.strip(" \t\r\n\x00")


def message_id_forms(message_id: str) -> tuple[str, ...]:
    """Every key under which the same message may be known, exact form first.

    Upstreams may give an id in hex in submit_sm_resp and in decimal in the
    receipt, or the other way round (Kannel's msg-id-type), and may change
    the case of hex digits or their zero padding. The forms are, in order and
    without repeats:

    1. `canonical_message_id(message_id)`, the exact id;
    2. if it consists of hex digits only: its value read as hex, written in
       decimal without leading zeros ("0000001a" -> "26", "1A2B" -> "6699");
    3. if it consists of decimal digits only: its value read as decimal,
       written in decimal without leading zeros ("0026" -> "26").

    Every numeric reading thus lands in one space, decimal, so two ids that
    name the same number share a form whichever side used hex:
    `set(message_id_forms(a)) & set(message_id_forms(b))` is non-empty for
    "1A2B" / "6699", "0000001a" / "26" or "1a2b" / "1A2B". An id with any
    other character (including an empty one) has only its exact form.

    A matcher stores a pending submission under every form of the id from
    submit_sm_resp and looks a receipt up by every form of its id, taking an
    exact hit first. Only ids made of digits are ambiguous ("10" read as hex
    is 16), so the fallback forms can collide between two decimal ids of one
    upstream; preferring the exact form keeps such a collision from winning
    over a true match.
    """
    exact = canonical_message_id(message_id)
    forms = [exact]
    # receipted_message_id is at most 65 octets with its NUL (section
    # 5.3.2.12); the cap also keeps int -> str under Python's digit limit.
    if len(exact) <= _MAX_NUMERIC_ID and _HEX.fullmatch(exact):
        as_hex = str(int(exact, 16))
        if as_hex not in forms:
            forms.append(as_hex)
        if _DECIMAL.fullmatch(exact):
            as_decimal = str(int(exact, 10))
            if as_decimal not in forms:
                forms.append(as_decimal)
    return tuple(forms)
