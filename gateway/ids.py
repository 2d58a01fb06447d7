"""Identifiers: gateway message ids and the forms an upstream message id takes in receipts.

A gateway message id is 32 lowercase hex characters: a 48-bit Unix time in milliseconds
followed by 80 random bits. Ids created later sort later, so the primary-key index of
``messages`` grows at its right edge (good locality on insert), and 32 characters fit the
65-octet message_id of submit_sm_resp (SMPP 3.4 section 4.4.2) with room to spare.
"""

from __future__ import annotations

import functools
import random
import re
import time
from datetime import UTC, datetime

MESSAGE_ID_LENGTH = 32
_random = random.Random()  # seeded from os.urandom
_MESSAGE_ID_RE = re.compile(r"[0-9a-f]{32}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


def new_message_id(now_ms: int | None = None) -> str:
    """Return a fresh message id; ``now_ms`` (Unix milliseconds) is for tests."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"timestamp out of range for a message id: {ms}")
    # Not a secret (every read is authenticated and scoped to its account), only
    # unique: a Mersenne Twister seeded from the OS is enough, and avoids a
    # system call per message.
    return f"{ms:012x}{_random.getrandbits(80):020x}"


def is_message_id(value: str) -> bool:
    """True when ``value`` has the shape of a gateway message id."""
    return _MESSAGE_ID_RE.fullmatch(value) is not None


def message_id_time(message_id: str) -> datetime:
    """The creation time (UTC, millisecond precision) encoded in a message id."""
    if not is_message_id(message_id):
        raise ValueError(f"not a message id: {message_id!r}")
    return datetime.fromtimestamp(int(message_id[:12], 16) / 1000, tz=UTC)


@functools.lru_cache(maxsize=65_536)
def upstream_id_forms(upstream_message_id: str) -> tuple[str, ...]:
    """Every spelling under which an upstream may refer to the same message id.

    SMSCs disagree on receipts: some answer submit_sm_resp with a decimal id and put
    the hex form in the receipt's ``id:`` field (or the other way round), with or
    without leading zeros and in either case (SMPP 3.4 Appendix B leaves the format
    to the SMSC). The first form is the id exactly as given; callers that have
    several candidate matches prefer the earliest form.
    """
    given = upstream_message_id.strip()
    forms: list[str] = [given]

    def add(form: str) -> None:
        if form and form not in forms:
            forms.append(form)

    add(given.lower())
    add(given.upper())
    stripped = given.lstrip("0") or "0"
    add(stripped)
    add(stripped.lower())
    add(stripped.upper())
    if given.isdigit() and len(given) <= 40:
        as_hex = f"{int(given):x}"
        add(as_hex)
        add(as_hex.upper())
    if _HEX_RE.fullmatch(given) and len(given) <= 32:
        add(str(int(given, 16)))
    return tuple(forms)
