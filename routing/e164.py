"""E.164 numbers as the router sees them: digits only, and their country calling code.

Prices, rules and quality are all keyed by digit prefixes of the international
number (ITU-T E.164 section 6: at most 15 digits, starting with a 1-3 digit
country calling code), so every entry point normalises to bare digits once.
"""

from __future__ import annotations

import phonenumbers

# ITU-T E.164 section 6.2.1: the number is at most 15 digits, the country code included.
MAX_DIGITS = 15

# Assigned calling codes, geographic and non-geographic (800, 870, 883, ...), as
# phonenumbers ships them: a table kept up to date by others beats one typed here.
CALLING_CODES: frozenset[str] = frozenset(
    str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
)


class InvalidNumber(ValueError):
    """The destination is not an international number; the caller's input is at fault."""


def digits(number: str) -> str:
    """``+34600123456`` or ``34600123456`` -> ``34600123456``; anything else is refused."""
    bare = number[1:] if number.startswith("+") else number
    if not (bare.isdigit() and bare.isascii() and 0 < len(bare) <= MAX_DIGITS):
        raise InvalidNumber(f"not an E.164 number: {number!r}")
    return bare


def calling_code(number: str) -> str:
    """The country calling code of a number in digits (``"34"``), or ``""`` if unassigned.

    Calling codes are a prefix code (no assigned code is a prefix of another),
    so the first match from the shortest up is the only one.
    """
    for length in (1, 2, 3):
        code = number[:length]
        if code in CALLING_CODES:
            return code
    return ""
