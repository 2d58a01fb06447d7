"""What each route has delivered lately, per destination country, learned from final receipts.

Delivery is a Beta posterior: a prior (``prior_delivered``, ``prior_undelivered``)
plus decayed counts of delivered and undelivered receipts. Keeping the counts,
not just a ratio, keeps the uncertainty of little data: a route with 3 receipts
is sampled widely by Thompson exploration, one with 3,000 is not. Time to
receipt is a decayed mean of delivered receipts' latency, pulled toward a prior.

Decay is "forward decay": an observation at time t is stored with weight
2^((t - epoch) / half_life), and all weights are scaled by
2^(-(now - epoch) / half_life) when read. Old evidence so fades even for routes
nobody uses, which lets their uncertainty grow back.

Layout: one `CountryQuality` per destination country holds every upstream's
evidence in lists indexed by the upstream's slot, with the means ready as of
the current tick (1/1024 of a half-life: at most 0.07% off in evidence weight).
A selection reads the means of 50 routes as two list lookups; a receipt
recomputes one slot; a new tick recomputes a country once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

TICKS_PER_HALF_LIFE = 1024
# Rebase stored weights before they grow past this many half-lives: 2^64 keeps
# sums exact enough and far from overflow (2^1024).
_REBASE_HALF_LIVES = 64.0
_STALE = -(2**62)


@dataclass(frozen=True, slots=True)
class QualitySettings:
    half_life_s: float = 3600.0
    # Beta(1.8, 0.2): a route nobody has tried is taken for a typical one (90%)
    # on the weight of two receipts. Optimism gets it tried by best_delivery
    # and balanced; the small weight lets its first receipts correct it.
    prior_delivered: float = 1.8
    prior_undelivered: float = 0.2
    prior_latency_s: float = 30.0
    prior_latency_weight: float = 1.0  # in receipts: the first one moves the mean halfway

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ValueError("half_life_s must be > 0")
        if not (self.prior_delivered > 0 and self.prior_undelivered > 0):
            raise ValueError("the Beta prior needs prior_delivered > 0 and prior_undelivered > 0")
        if self.prior_latency_s < 0 or self.prior_latency_weight <= 0:
            raise ValueError("prior_latency_s must be >= 0 and prior_latency_weight > 0")


@dataclass(frozen=True, slots=True)
class Estimate:
    delivery_ratio: float  # posterior mean
    lower_bound: float  # about 95% one-sided, normal approximation of the Beta
    latency_s: float  # expected submit -> final receipt, delivered messages only
    delivered: float  # decayed receipt counts behind the estimate
    undelivered: float


class CountryQuality:
    """Evidence of every upstream slot for one country (stored units), and its means."""

    __slots__ = (
        "delivered",
        "latency",
        "latency_sum",
        "latency_weight",
        "ratio",
        "tick",
        "undelivered",
    )

    def __init__(self) -> None:
        self.delivered: list[float] = []
        self.undelivered: list[float] = []
        self.latency_sum: list[float] = []
        self.latency_weight: list[float] = []
        # Means by slot as of `tick`: read by the selector, written by the book.
        self.ratio: list[float] = []
        self.latency: list[float] = []
        self.tick = _STALE


class QualityBook:
    """All learned quality, by country and upstream."""

    __slots__ = ("_countries", "_epoch", "_inv_half_life", "_slots", "_tick_s", "settings")

    def __init__(self, settings: QualitySettings | None = None) -> None:
        self.settings = settings or QualitySettings()
        self._inv_half_life = 1.0 / self.settings.half_life_s
        self._tick_s = self.settings.half_life_s / TICKS_PER_HALF_LIFE
        self._epoch: float | None = None
        self._slots: dict[str, int] = {}
        self._countries: dict[str, CountryQuality] = {}

    # ---- identity ----

    def slot(self, upstream: str) -> int:
        """The upstream's position in every country's lists; assigned once, never reused."""
        found = self._slots.get(upstream)
        if found is None:
            found = self._slots[upstream] = len(self._slots)
        return found

    def tick(self, now: float) -> int:
        return math.floor(now / self._tick_s)

    def country(self, country: str, tick: int) -> CountryQuality:
        """The country's table with means as of ``tick`` (recomputed if it moved on)."""
        table = self._countries.get(country)
        if table is None:
            table = self._countries[country] = CountryQuality()
        if table.tick != tick or len(table.ratio) < len(self._slots):
            self._grow(table)
            table.tick = tick
            g = self._scale_at_tick(tick)
            for slot in range(len(table.ratio)):
                self._mean(table, slot, g)
        return table

    # ---- learning ----

    def record(
        self, upstream: str, country: str, *, delivered: bool, latency_s: float | None, now: float
    ) -> None:
        """One final receipt (or a receipt deadline passed: ``delivered=False``).

        Latency counts only for delivered messages: an expiry's "latency" is the
        validity period, which says nothing about how fast the route is.
        """
        if self._epoch is None:
            self._epoch = now
        elif (now - self._epoch) * self._inv_half_life > _REBASE_HALF_LIVES:
            self._rebase(now)
        slot = self.slot(upstream)
        table = self._countries.get(country)
        if table is None:
            table = self._countries[country] = CountryQuality()
        self._grow(table)
        weight = math.exp2((now - self._epoch) * self._inv_half_life)
        if delivered:
            table.delivered[slot] += weight
            if latency_s is not None and latency_s >= 0:
                table.latency_sum[slot] += weight * latency_s
                table.latency_weight[slot] += weight
        else:
            table.undelivered[slot] += weight
        if table.tick != _STALE:
            self._mean(table, slot, self._scale_at_tick(table.tick))

    # ---- reading ----

    def estimate(self, upstream: str, country: str, now: float) -> Estimate:
        """Exact as of ``now``, for display and tests; a pair never seen is the prior."""
        s = self.settings
        g = self._scale(now)
        slot = self._slots.get(upstream)
        table = self._countries.get(country)
        d = u = lsum = lw = 0.0
        if table is not None and slot is not None and slot < len(table.delivered):
            d, u = table.delivered[slot] * g, table.undelivered[slot] * g
            lsum, lw = table.latency_sum[slot] * g, table.latency_weight[slot] * g
        a, b = s.prior_delivered + d, s.prior_undelivered + u
        mean = a / (a + b)
        spread = math.sqrt(mean * (1.0 - mean) / (a + b + 1.0))
        latency = (s.prior_latency_s * s.prior_latency_weight + lsum) / (
            s.prior_latency_weight + lw
        )
        return Estimate(mean, max(0.0, mean - 1.645 * spread), latency, d, u)

    def sample(self, table: CountryQuality, slot: int, rng: random.Random) -> float:
        """A Thompson draw of the delivery ratio from the posterior, as of the table's tick."""
        s = self.settings
        g = self._scale_at_tick(table.tick)
        return rng.betavariate(
            s.prior_delivered + table.delivered[slot] * g,
            s.prior_undelivered + table.undelivered[slot] * g,
        )

    def countries(self) -> Iterator[str]:
        """Countries with any evidence or lookup (what an admin view lists)."""
        return iter(list(self._countries))

    # ---- internals ----

    def _scale(self, now: float) -> float:
        if self._epoch is None:
            return 0.0
        return math.exp2((self._epoch - now) * self._inv_half_life)

    def _scale_at_tick(self, tick: int) -> float:
        return self._scale(tick * self._tick_s)

    def _grow(self, table: CountryQuality) -> None:
        missing = len(self._slots) - len(table.delivered)
        if missing > 0:
            zeros = [0.0] * missing
            table.delivered += zeros
            table.undelivered += zeros
            table.latency_sum += zeros
            table.latency_weight += zeros
            table.ratio += zeros
            table.latency += zeros
            if table.tick == _STALE:
                return  # `country` recomputes every slot before anyone reads them
            g = self._scale_at_tick(table.tick)
            for slot in range(len(table.ratio) - missing, len(table.ratio)):
                self._mean(table, slot, g)

    def _mean(self, table: CountryQuality, slot: int, g: float) -> None:
        s = self.settings
        delivered = table.delivered[slot] * g
        table.ratio[slot] = (s.prior_delivered + delivered) / (
            s.prior_delivered + s.prior_undelivered + delivered + table.undelivered[slot] * g
        )
        table.latency[slot] = (
            s.prior_latency_s * s.prior_latency_weight + table.latency_sum[slot] * g
        ) / (s.prior_latency_weight + table.latency_weight[slot] * g)

    def _rebase(self, now: float) -> None:
        assert self._epoch is not None
        factor = math.exp2((self._epoch - now) * self._inv_half_life)
        for table in self._countries.values():
            for column in (
                table.delivered,
                table.undelivered,
                table.latency_sum,
                table.latency_weight,
            ):
                column[:] = [value * factor for value in column]
            table.tick = _STALE  # means were computed with the old epoch's scale
        self._epoch = now
