"""Per-upstream limits that prices alone do not express.

An aggregator may take only some networks (``allowed``), refuse some
(``excluded``, which wins over ``allowed``: it is the narrower statement), or
refuse alphanumeric senders, which many carriers replace or block.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RuleBreach(enum.StrEnum):
    NOT_ALLOWED = "not_allowed"
    EXCLUDED_PREFIX = "excluded_prefix"
    ALPHANUMERIC_SENDER = "alphanumeric_sender"


def is_alphanumeric(sender: str) -> bool:
    """A sender that is not a number (``ACME``), as SMPP 3.4 TON 5 would mark it."""
    bare = sender[1:] if sender.startswith("+") else sender
    return bool(bare) and not bare.isdigit()


@dataclass(frozen=True, slots=True)
class Rules:
    allowed: frozenset[str] = frozenset()  # empty: every destination
    excluded: frozenset[str] = frozenset()
    alphanumeric: bool = True  # carries alphanumeric senders
    _lengths: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allowed = frozenset(p.removeprefix("+") for p in self.allowed)
        excluded = frozenset(p.removeprefix("+") for p in self.excluded)
        for prefix in allowed | excluded:
            if not (prefix.isdigit() and prefix.isascii()):
                raise ValueError(f"rule prefix must be digits, got {prefix!r}")
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "excluded", excluded)
        object.__setattr__(self, "_lengths", tuple(sorted({len(p) for p in allowed | excluded})))

    @property
    def restricts_destinations(self) -> bool:
        return bool(self.allowed or self.excluded)

    def prefixes(self) -> frozenset[str]:
        return self.allowed | self.excluded

    def check_destination(self, number: str) -> RuleBreach | None:
        """Why ``number`` (digits) may not go this way, or None."""
        allowed = not self.allowed
        for length in self._lengths:
            prefix = number[:length]
            if len(prefix) < length:
                break
            if prefix in self.excluded:
                return RuleBreach.EXCLUDED_PREFIX
            if prefix in self.allowed:
                allowed = True
        return None if allowed else RuleBreach.NOT_ALLOWED

    def check_sender(self, sender: str) -> RuleBreach | None:
        if not self.alphanumeric and is_alphanumeric(sender):
            return RuleBreach.ALPHANUMERIC_SENDER
        return None
