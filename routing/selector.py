"""Which upstreams may carry a message to a destination, best first, and why.

The selector joins the static facts (prices, rules) with the live ones
(health, quality) and orders what is left by the account's policy:

- ``cheapest``: lowest price; ties go to the better delivery ratio.
- ``best_delivery``: highest expected delivery ratio; ties go to lower latency,
  then lower price.
- ``balanced``: lowest expected cost per delivered message, price / ratio,
  plus ``latency_penalty_per_s`` per second of expected time to receipt. A
  bounded share of selections explores by Thompson sampling (see `_explore`),
  so a cheap route with little history gets the traffic it needs to prove itself.

The answer is an ordered list for failover: the dispatcher tries the first,
and on a temporary error or a timeout the next, up to its ``max_attempts``.

Speed: with 50 upstreams of 10,000 prefixes each the static part of a
decision (which prices and rules apply) depends only on the longest known
prefix of the destination, so it is worked out once per such prefix and
cached; a selection then is a handful of dict probes plus one pass over the
routes that serve the destination. Working it out (a cache miss) uses one
merged index of all upstreams' prefixes, built at start and on reload (see
`_Index`): the probe that finds the longest known prefix also yields every
upstream's price, so a miss costs a few microseconds, not 50 searches. Candidate and exclusion objects are built
only when asked for: the dispatcher needs names in order, the admin view
needs the detail.
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter, mul, neg, truediv
from typing import cast

from routing.e164 import CALLING_CODES, calling_code, digits
from routing.health import Health, HealthBlock, HealthSettings
from routing.prices import PriceTable
from routing.quality import CountryQuality, QualityBook
from routing.rules import RuleBreach, Rules, is_alphanumeric


class Policy(enum.StrEnum):
    CHEAPEST = "cheapest"
    BEST_DELIVERY = "best_delivery"
    BALANCED = "balanced"


class ExclusionReason(enum.StrEnum):
    NO_PRICE = "no_price"
    NOT_ALLOWED = "not_allowed"
    EXCLUDED_PREFIX = "excluded_prefix"
    ALPHANUMERIC_SENDER = "alphanumeric_sender"
    ABOVE_MAX_PRICE = "above_max_price"
    UNBOUND = "unbound"
    SATURATED = "saturated"
    CIRCUIT_OPEN = "circuit_open"
    THROTTLED = "throttled"

    @property
    def transient(self) -> bool:
        """True when the route may take this message later without any config change."""
        return self in _TRANSIENT


_TRANSIENT = frozenset(
    {
        ExclusionReason.UNBOUND,
        ExclusionReason.SATURATED,
        ExclusionReason.CIRCUIT_OPEN,
        ExclusionReason.THROTTLED,
    }
)
_FROM_BLOCK = {block: ExclusionReason(block.value) for block in HealthBlock}
_FROM_BREACH = {breach: ExclusionReason(breach.value) for breach in RuleBreach}
_POLICIES: dict[str, Policy] = {p.value: p for p in Policy}


@dataclass(frozen=True, slots=True)
class Upstream:
    """The static description of one route: what the config says."""

    name: str
    prices: PriceTable
    rules: Rules = field(default_factory=Rules)


@dataclass(frozen=True, slots=True)
class SelectorSettings:
    # Long-run share of balanced selections whose first choice may differ from
    # the exploit choice. A hard bound, enforced with a token bucket.
    explore_share: float = 0.05
    explore_burst: float = 10.0  # tokens: deviations allowed in a row after a quiet spell
    max_thompson_draws: int = 12  # routes sampled per exploration at most (1 us each)
    latency_penalty_per_s: float = 0.0001  # currency per second of expected time to receipt
    cache_size: int = 4096  # destination prefixes whose static decision is kept

    def __post_init__(self) -> None:
        if not 0.0 <= self.explore_share <= 0.5:
            raise ValueError("explore_share must be within [0, 0.5]")
        if self.explore_burst < 1.0 or self.max_thompson_draws < 2 or self.cache_size < 1:
            raise ValueError("need explore_burst >= 1, max_thompson_draws >= 2, cache_size >= 1")
        if not (self.latency_penalty_per_s >= 0 and math.isfinite(self.latency_penalty_per_s)):
            raise ValueError("latency_penalty_per_s must be finite and >= 0")


# Candidate and Selection are not frozen: one or two of each per message, and a
# frozen dataclass's __init__ costs several times a plain one's. Never mutated.
@dataclass(slots=True)
class Candidate:
    route: str
    price: float
    delivery_ratio: float  # expected (posterior mean)
    latency_s: float  # expected time to final receipt
    score: float  # the policy's own measure: price, ratio, or cost per delivered message
    reason: str  # "balanced: ..." for events and the admin view
    explored: bool = False  # chosen by exploration, not by the score


@dataclass(frozen=True, slots=True)
class Exclusion:
    route: str
    reason: ExclusionReason
    price: float | None


# An exclusion on the hot path is a plain tuple (index, reason, price or None):
# a frozen dataclass costs about a microsecond to build, a tuple a few dozen ns.
_Excluded = tuple[int, ExclusionReason, float | None]
_Take = Callable[[list[float]], tuple[float, ...]]


def _taker(slots: Sequence[int]) -> _Take:
    """``values -> tuple(values[s] for s in slots)`` at C speed (itemgetter), any length."""
    if len(slots) > 1:
        return itemgetter(*slots)
    if len(slots) == 1:
        only = slots[0]
        return lambda values: (values[only],)
    return lambda values: ()


@dataclass(
    slots=True
)  # not frozen: built on every cache miss, and frozen costs ~0.5 us; never mutated
class _Static:
    """What prices and rules say about every destination under one known prefix.

    The routes that serve it are "positions" 0..n-1; parallel tuples give each
    one's selector index, quality slot and price.
    """

    country: str
    indexes: tuple[int, ...]
    prices: tuple[float, ...]
    slots: tuple[int, ...]
    take: _Take  # country list by slot -> tuple by position
    position: Mapping[str, int]  # upstream name -> position
    alphanumeric_refusers: tuple[int, ...]  # positions
    excluded: tuple[_Excluded, ...]


@dataclass(slots=True)
class Selection:
    destination: str  # digits
    country: str  # calling code, "" if unassigned
    policy: Policy
    explored: bool  # the first candidate is an exploration, not the best score
    _names: tuple[str, ...] = field(repr=False)
    _static: _Static = field(repr=False)
    _order: Sequence[int] = field(repr=False)  # positions, best first
    _ratios: tuple[float, ...] = field(repr=False)
    _latencies: tuple[float, ...] = field(repr=False)
    _costs: Sequence[float] | None = field(repr=False)  # balanced only
    _dropped: Sequence[_Excluded] = field(repr=False)  # exclusions of this request

    @property
    def routes(self) -> tuple[str, ...]:
        """Candidates' names, best first: the failover order."""
        names, indexes = self._names, self._static.indexes
        return tuple([names[indexes[p]] for p in self._order])

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return tuple(self._candidate(rank, p) for rank, p in enumerate(self._order))

    @property
    def first(self) -> Candidate | None:
        return self._candidate(0, self._order[0]) if self._order else None

    @property
    def excluded(self) -> tuple[Exclusion, ...]:
        return tuple(
            Exclusion(self._names[i], reason, price)
            for i, reason, price in (*self._static.excluded, *self._dropped)
        )

    @property
    def retry_later(self) -> bool:
        """No candidate now, but one may come back (bind, window, breaker): wait, don't fail."""
        return not self._order and any(reason.transient for _, reason, _ in self._dropped)

    def _candidate(self, rank: int, position: int) -> Candidate:
        price = self._static.prices[position]
        ratio = self._ratios[position]
        latency = self._latencies[position]
        explored = self.explored and rank == 0
        if self.policy is Policy.CHEAPEST:
            score = price
            why = f"cheapest: price {price:.5g} (delivery {ratio:.3f})"
        elif self.policy is Policy.BEST_DELIVERY:
            score = ratio
            why = f"best_delivery: delivery {ratio:.3f}, latency {latency:.1f}s, price {price:.5g}"
        else:
            assert self._costs is not None
            score = self._costs[position]
            why = (
                f"balanced: cost per delivered {score:.5g} = price {price:.5g}"
                f" / delivery {ratio:.3f} + penalty for latency {latency:.1f}s"
            )
            if explored:
                why += " (exploration)"
        name = self._names[self._static.indexes[position]]
        return Candidate(name, price, ratio, latency, score, why, explored)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which routes serve a destination, as positions: shared by every prefix served by
    the same set of upstreams (usually all of them), so a cache miss does not rebuild it.
    """

    indexes: tuple[int, ...]
    slots: tuple[int, ...]
    take: _Take  # country list by slot -> tuple by position
    pick: _Pick  # price vector by upstream index -> tuple by position
    position: Mapping[str, int]
    alphanumeric_refusers: tuple[int, ...]


_Pick = Callable[[list[float | None]], tuple[float, ...]]
_Entries = tuple[tuple[int, float], ...]  # (upstream index, price) for one prefix
# A resolved prefix: a base price vector by upstream index (every upstream's
# price for one of its shorter prefixes, or its default) and the entries of
# the longer prefixes still to apply, shortest first.
_Path = tuple[tuple[float | None, ...], _Entries]


# Distinct sets of serving upstreams whose layout is kept; in practice a handful.
_MAX_LAYOUTS = 1024
# Price slots (upstreams x prefixes) kept as resolved base vectors: 8 bytes each.
_BASE_BUDGET = 2_000_000


class _Index:
    """Immutable view of the upstreams' prices and rules, with the per-prefix cache.

    Prices of all upstreams are merged into one index: every key (a prefix
    that changes any route's price, rules or country) maps to a `_Path`, so
    the one dict probe that finds a destination's longest key also yields
    every upstream's price for it: copy the base vector, apply the few entries
    of the path, and each upstream has the price of its longest matching
    prefix, or its default (what ``PriceTable.price_for`` gives, for all of
    them at once). Base vectors are kept for every priced prefix up to the
    depth that fits ``_BASE_BUDGET``: the short prefixes (a country, its first
    digits) are the ones many upstreams price, so the paths left are short.
    """

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        quality: QualityBook,
        *,
        base_budget: int = _BASE_BUDGET,
    ) -> None:
        self.names = tuple(u.name for u in upstreams)
        if len(set(self.names)) != len(self.names):
            raise ValueError("upstream names must be unique")
        currencies = {u.prices.currency for u in upstreams if u.prices.currency is not None}
        if len(currencies) > 1:
            raise ValueError(
                f"prices in several currencies cannot be compared: {sorted(currencies)}"
            )
        self.upstreams = tuple(upstreams)
        self.slots = tuple(quality.slot(name) for name in self.names)
        merged: dict[str, list[tuple[int, float]]] = {}
        keys: set[str] = set(CALLING_CODES)
        # One object per distinct (upstream, price) entry: price lists repeat
        # a few values, and a resolution then touches a few hot objects, not
        # one per prefix scattered over the heap.
        shared: dict[tuple[int, float], tuple[int, float]] = {}
        for index, upstream in enumerate(upstreams):
            for prefix, price in upstream.prices.prefixes.items():
                entry = (index, price)
                if price and type(price) is float:  # 0.0 == -0.0 == 0, 1.0 == 1: not alike
                    entry = shared.setdefault(entry, entry)
                entries = merged.get(prefix)
                if entries is None:
                    merged[prefix] = [entry]
                else:
                    entries.append(entry)
            keys.update(upstream.rules.prefixes())
        exact = {prefix: tuple(entries) for prefix, entries in merged.items()}
        del merged
        keys.update(exact)
        self.root: _Path = (tuple(u.prices.default for u in upstreams), ())
        self.paths = _paths(keys, exact, self.root, len(upstreams), base_budget)
        # The static decision for a destination is the one for its longest key.
        self.lengths = tuple(sorted({len(k) for k in keys}, reverse=True))
        # Only these upstreams can be ruled out by prices or rules: no default
        # (a destination without a priced prefix gets none) or destination rules.
        self.checked = tuple(
            index
            for index, u in enumerate(upstreams)
            if u.prices.default is None or u.rules.restricts_destinations
        )
        self.full = self._layout(tuple(range(len(upstreams))))
        self.layouts: dict[tuple[int, ...], _Layout] = {self.full.indexes: self.full}
        self.cache: dict[str, _Static] = {}

    def _layout(self, indexes: tuple[int, ...]) -> _Layout:
        slots = tuple(self.slots[i] for i in indexes)
        pick: _Pick
        if len(indexes) == len(self.upstreams):
            # Every upstream serves: no price is None, the vector is the tuple.
            pick = cast(_Pick, tuple)
        else:
            pick = cast(_Pick, _taker(indexes))
        return _Layout(
            indexes=indexes,
            slots=slots,
            take=_taker(slots),
            pick=pick,
            position={self.names[i]: p for p, i in enumerate(indexes)},
            alphanumeric_refusers=tuple(
                p for p, i in enumerate(indexes) if not self.upstreams[i].rules.alphanumeric
            ),
        )

    def static(self, number: str, cache_size: int) -> _Static:
        paths = self.paths
        size = len(number)
        key = ""
        path = self.root
        for length in self.lengths:
            if length <= size:
                prefix = number[:length]
                found = paths.get(prefix)
                if found is not None:
                    key, path = prefix, found
                    break
        static = self.cache.get(key)
        if static is None:
            static = self._resolve(key, path)
            if len(self.cache) >= cache_size:
                # Oldest first out: cheap, and the hot prefixes come straight back.
                del self.cache[next(iter(self.cache))]
            self.cache[key] = static
        return static

    def prices(self, number: str) -> list[float | None]:
        """Every upstream's price to ``number`` (digits), by upstream index; None: no price."""
        paths = self.paths
        for length in self.lengths:
            if length <= len(number):
                found = paths.get(number[:length])
                if found is not None:
                    return _apply(found)
        return _apply(self.root)

    def _resolve(self, key: str, path: _Path) -> _Static:
        prices = _apply(path)
        excluded: list[_Excluded] = []
        layout = self.full
        if self.checked:
            upstreams = self.upstreams
            for index in self.checked:
                price = prices[index]
                if price is None:
                    excluded.append((index, ExclusionReason.NO_PRICE, None))
                    continue
                breach = upstreams[index].rules.check_destination(key)
                if breach is not None:
                    excluded.append((index, _FROM_BREACH[breach], price))
            if excluded:
                out = {index for index, _, _ in excluded}
                served = tuple(i for i in range(len(prices)) if i not in out)
                found = self.layouts.get(served)
                if found is None:
                    if len(self.layouts) >= _MAX_LAYOUTS:
                        self.layouts = {self.full.indexes: self.full}
                    found = self.layouts[served] = self._layout(served)
                layout = found
        return _Static(
            country=calling_code(key),
            indexes=layout.indexes,
            prices=layout.pick(prices),
            slots=layout.slots,
            take=layout.take,
            position=layout.position,
            alphanumeric_refusers=layout.alphanumeric_refusers,
            excluded=tuple(excluded),
        )


def _apply(path: _Path) -> list[float | None]:
    base, entries = path
    prices = list(base)
    for index, price in entries:  # shortest prefix first: longer ones overwrite
        prices[index] = price
    return prices


def _paths(
    keys: set[str], exact: dict[str, _Entries], root: _Path, width: int, budget: int
) -> dict[str, _Path]:
    """Every key's `_Path`; keys are built shortest first, each from its longest parent key."""
    count = 0
    depth = 0
    for length, number in sorted(Counter(len(k) for k in exact).items()):
        count += number
        if count * max(width, 1) > budget:
            break
        depth = length
    paths: dict[str, _Path] = {}
    for key in sorted(keys, key=len):
        parent = root
        for length in range(len(key) - 1, 0, -1):
            found = paths.get(key[:length])
            if found is not None:
                parent = found
                break
        base, entries = parent
        own = exact.get(key, ())
        if own and len(key) <= depth:
            vector = list(base)
            for index, price in (*entries, *own):
                vector[index] = price
            paths[key] = (tuple(vector), ())
        elif not own:
            paths[key] = parent
        elif not entries:
            paths[key] = (base, own)
        else:
            paths[key] = (base, entries + own)
    return paths


class Selector:
    """Route selection over a set of upstreams. Not thread-safe; one event loop owns it."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        settings: SelectorSettings | None = None,
        health_settings: HealthSettings | None = None,
        quality: QualityBook | None = None,
    ) -> None:
        self.settings = settings or SelectorSettings()
        self.health_settings = health_settings or HealthSettings()
        self.quality = quality or QualityBook()
        self._board: dict[str, float] = {}
        self._health: dict[str, Health] = {}
        self._tokens = 0.0
        self._index = self._build(upstreams)

    # ---- configuration ----

    def reload(self, upstreams: Sequence[Upstream]) -> None:
        """New prices or rules (SIGHUP, admin endpoint). Health and quality carry over by name.

        The new index is complete before it replaces the old one, so a
        selection sees either the old tables or the new ones, never a mix.
        """
        self._index = self._build(upstreams)

    def _build(self, upstreams: Sequence[Upstream]) -> _Index:
        index = _Index(upstreams, self.quality)
        health = {
            u.name: self._health.get(u.name)
            or Health(self.health_settings, name=u.name, board=self._board)
            for u in upstreams
        }
        for gone in self._health.keys() - health.keys():
            self._board.pop(gone, None)
        self._health = health
        return index

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        return self._index.upstreams

    def health(self, upstream: str) -> Health:
        """The live health the gateway feeds for this upstream (KeyError if unknown)."""
        return self._health[upstream]

    def record_receipt(
        self,
        upstream: str,
        destination: str,
        *,
        delivered: bool,
        latency_s: float | None,
        now: float,
    ) -> None:
        """A final receipt (or its deadline) for a message sent through ``upstream``."""
        country = calling_code(digits(destination))
        self.quality.record(upstream, country, delivered=delivered, latency_s=latency_s, now=now)

    # ---- decisions ----

    def select(
        self,
        destination: str,
        *,
        policy: Policy | str = Policy.BALANCED,
        sender: str = "",
        max_price: float | None = None,
        now: float,
        rng: random.Random,
    ) -> Selection:
        """Candidates for one message, best first; ``balanced`` may explore (bounded)."""
        return self._decide(destination, policy, sender, max_price, now, rng)

    def ranking(
        self,
        destination: str,
        *,
        policy: Policy | str = Policy.BALANCED,
        sender: str = "",
        max_price: float | None = None,
        now: float,
    ) -> Selection:
        """The same order without exploration and without using its budget: for display."""
        return self._decide(destination, policy, sender, max_price, now, None)

    def _decide(
        self,
        destination: str,
        policy: Policy | str,
        sender: str,
        max_price: float | None,
        now: float,
        rng: random.Random | None,
    ) -> Selection:
        chosen = _POLICIES.get(policy)
        if chosen is None:
            raise ValueError(f"unknown routing policy {policy!r}")
        number = digits(destination)
        index = self._index
        static = index.static(number, self.settings.cache_size)
        prices = static.prices
        quality = self.quality
        table = quality.country(static.country, quality.tick(now))
        ratios = static.take(table.ratio)
        latencies = static.take(table.latency)

        # What this request rules out; usually nothing, so the common case
        # costs a few truth tests, not a pass over the routes.
        dropped: list[_Excluded] = []
        masked: set[int] = set()
        if self._board:
            position = static.position
            for name, eligible_from in self._board.items():
                p = position.get(name)
                if p is not None and eligible_from > now:
                    block = self._health[name].blocked(now) or HealthBlock.CIRCUIT_OPEN
                    dropped.append((static.indexes[p], _FROM_BLOCK[block], prices[p]))
                    masked.add(p)
        if static.alphanumeric_refusers and sender and is_alphanumeric(sender):
            for p in static.alphanumeric_refusers:
                if p not in masked:
                    dropped.append(
                        (static.indexes[p], ExclusionReason.ALPHANUMERIC_SENDER, prices[p])
                    )
                    masked.add(p)
        if max_price is not None:
            for p, price in enumerate(prices):
                if price > max_price and p not in masked:
                    dropped.append((static.indexes[p], ExclusionReason.ABOVE_MAX_PRICE, price))
                    masked.add(p)

        n = len(prices)
        costs: list[float] | None = None
        order: list[int]
        if chosen is Policy.BALANCED:
            penalty = self.settings.latency_penalty_per_s
            costs = list(
                map(add, map(truediv, prices, ratios), map(mul, latencies, repeat(penalty)))
            )
            order = sorted(range(n), key=costs.__getitem__)
        elif chosen is Policy.CHEAPEST:
            order = [
                row[3]
                for row in sorted(zip(prices, map(neg, ratios), latencies, range(n), strict=True))
            ]
        else:
            order = [
                row[3]
                for row in sorted(zip(map(neg, ratios), latencies, prices, range(n), strict=True))
            ]
        if masked:
            order = [p for p in order if p not in masked]

        explored = False
        if costs is not None and rng is not None and len(order) > 1:
            explored = self._explore(order, static, table, latencies, rng)
        return Selection(
            number,
            static.country,
            chosen,
            explored,
            index.names,
            static,
            order,
            ratios,
            latencies,
            costs,
            dropped,
        )

    def _explore(
        self,
        order: list[int],
        static: _Static,
        table: CountryQuality,
        latencies: tuple[float, ...],
        rng: random.Random,
    ) -> bool:
        """Maybe move a Thompson-sampled route to the front of ``order``; True if it did.

        Each balanced selection earns ``explore_share`` of a token (up to
        ``explore_burst``) and a deviation from the exploit choice spends one,
        so from the start at most share * n of n selections deviate, and in any
        run at most share * n + burst. While a token is in hand every selection
        draws, and deviates when a sampled route beats the exploit's sample: so
        routes whose posteriors overlap get the whole budget, and well-known
        ones cost next to nothing (they seldom win a draw). Drawing on only a
        share of the selections instead left a route that had an unlucky start
        (64 of its first 108 delivered, true ratio 70%, 3.5% cheaper per
        delivered message than the exploit) about 0.2% of the traffic: still
        locked out after 20,000 messages, where drawing every time gave it its
        5% and it won back the traffic in two of three seeded runs.

        The draw samples delivery ratios only (latency at its mean), in order of
        the lowest cost a route could have, price + latency penalty (a ratio of
        1): once that floor is above the best sampled cost no later route can
        win, so most draws stop early. It costs a few microseconds per selection
        (about 5 with three routes).
        """
        s = self.settings
        self._tokens = min(self._tokens + s.explore_share, s.explore_burst)
        if self._tokens < 1.0:
            return False  # the budget is spent (or the share is 0)
        penalty = s.latency_penalty_per_s
        prices = static.prices
        floors = {p: prices[p] + penalty * latencies[p] for p in order}
        best_cost = math.inf
        best = order[0]
        for p in sorted(order, key=floors.__getitem__)[: s.max_thompson_draws]:
            if floors[p] >= best_cost:
                break
            ratio = max(self.quality.sample(table, static.slots[p], rng), 1e-9)
            cost = prices[p] / ratio + penalty * latencies[p]
            if cost < best_cost:
                best_cost, best = cost, p
        if best == order[0]:
            return False
        self._tokens -= 1.0
        order.remove(best)
        order.insert(0, best)
        return True
