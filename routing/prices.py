"""What an upstream charges per segment, by E.164 prefix: the longest prefix wins.

A table is immutable; a reload builds a new one and the selector swaps it in
(`Selector.reload`), so a lookup never sees half a file. Reading the file is
the caller's job: `from_csv` parses text or lines, so this stays free of I/O.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT = "default"


class PriceError(ValueError):
    """A price list is wrong; the message names the source and line to fix."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prefix (digits, no ``+``) -> price per segment, and an optional default."""

    prefixes: Mapping[str, float]
    default: float | None = None
    currency: str | None = None
    # Distinct prefix lengths, longest first: a lookup is one dict probe per
    # length, not a scan of the prefixes, whatever their number.
    _lengths: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        frozen = MappingProxyType(dict(self.prefixes))
        for prefix, price in frozen.items():
            if not (prefix.isdigit() and prefix.isascii()):
                raise PriceError("prices", None, f"prefix must be digits, got {prefix!r}")
            _check_price(price, "prices", None, prefix)
        if self.default is not None:
            _check_price(self.default, "prices", None, DEFAULT)
        object.__setattr__(self, "prefixes", frozen)
        object.__setattr__(self, "_lengths", tuple(sorted({len(p) for p in frozen}, reverse=True)))

    @classmethod
    def from_mapping(
        cls, prices: Mapping[str, float], *, currency: str | None = None
    ) -> PriceTable:
        """The inline config form: ``{"default": 0.08, "34": 0.045, "+346": 0.040}``."""
        table: dict[str, float] = {}
        default: float | None = None
        for key, price in prices.items():
            if key == DEFAULT:
                default = price
                continue
            prefix = key.removeprefix("+")
            if prefix in table:
                raise PriceError("prices", None, f"prefix {prefix!r} is given twice")
            table[prefix] = price
        return cls(table, default, currency)

    @classmethod
    def from_csv(
        cls, text: str | Iterable[str], *, source: str = "prices", default: float | None = None
    ) -> PriceTable:
        """Parse ``prefix,price[,currency]`` rows; the caller reads the file.

        An optional header (first field ``prefix``) is skipped, as are blank
        lines and lines starting with ``#``. A ``default`` row sets the default
        (overriding the argument). All rows must share one currency: prices in
        two currencies cannot be compared, and comparing them is all we do.
        """
        lines = text.splitlines() if isinstance(text, str) else text
        table: dict[str, float] = {}
        seen_at: dict[str, int] = {}
        currency: str | None = None
        currency_at = 0
        first = True
        for number, raw in enumerate(lines, start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            row = [cell.strip() for cell in next(csv.reader([stripped]))]
            if first and row and row[0].lower() == "prefix":
                first = False
                continue
            first = False
            if len(row) not in (2, 3):
                raise PriceError(
                    source, number, f"expected prefix,price[,currency], got {len(row)} fields"
                )
            key, price_text = row[0], row[1]
            try:
                price = float(price_text)
            except ValueError:
                raise PriceError(source, number, f"price {price_text!r} is not a number") from None
            _check_price(price, source, number, key)
            if len(row) == 3 and row[2]:
                row_currency = row[2].upper()
                if currency is None:
                    currency, currency_at = row_currency, number
                elif row_currency != currency:
                    raise PriceError(
                        source,
                        number,
                        f"currency {row_currency} differs from {currency} on line {currency_at}",
                    )
            if key.lower() == DEFAULT:
                default = price
                continue
            prefix = key.removeprefix("+")
            if not (prefix.isdigit() and prefix.isascii()):
                raise PriceError(source, number, f"prefix {key!r} must be digits or 'default'")
            if prefix in seen_at:
                raise PriceError(
                    source, number, f"prefix {prefix} is already priced on line {seen_at[prefix]}"
                )
            seen_at[prefix] = number
            table[prefix] = price
        return cls(table, default, currency)

    def match(self, number: str) -> tuple[str, float] | None:
        """The longest priced prefix of ``number`` (digits) and its price; ``default`` last."""
        size = len(number)
        prefixes = self.prefixes
        for length in self._lengths:
            if length <= size:
                prefix = number[:length]
                price = prefixes.get(prefix)
                if price is not None:
                    return prefix, price
        if self.default is not None:
            return DEFAULT, self.default
        return None

    def price_for(self, number: str) -> float | None:
        """Price per segment to ``number`` (digits), or None: this route does not serve it."""
        found = self.match(number)
        return None if found is None else found[1]

    def __len__(self) -> int:
        return len(self.prefixes)


def _check_price(price: float, source: str, line: int | None, prefix: str) -> None:
    if isinstance(price, bool) or not isinstance(price, int | float):
        raise PriceError(source, line, f"price for {prefix} must be a number, got {price!r}")
    if not math.isfinite(price) or price < 0:
        raise PriceError(source, line, f"price for {prefix} must be finite and >= 0, got {price}")
