from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.health import HealthSettings, SubmitOutcome
from routing.prices import PriceTable
from routing.quality import QualityBook, QualitySettings
from routing.rules import Rules
from routing.selector import (
    Candidate,
    ExclusionReason,
    Policy,
    Selection,
    Selector,
    SelectorSettings,
    Upstream,
)

SPAIN = "+34600123456"
PRIOR = QualitySettings(prior_delivered=1, prior_undelivered=1, prior_latency_s=30)


def selector(
    prices: dict[str, float],
    *,
    rules: dict[str, Rules] | None = None,
    settings: SelectorSettings | None = None,
    quality: QualitySettings = PRIOR,
    health: HealthSettings | None = None,
) -> Selector:
    rules = rules or {}
    chosen = Selector(
        [
            Upstream(name, PriceTable.from_mapping({"34": price}), rules.get(name, Rules()))
            for name, price in prices.items()
        ],
        settings=settings,
        quality=QualityBook(quality),
        health_settings=health,
    )
    for name in prices:
        chosen.health(name).set_sessions(1, 100)
    return chosen


def feed(s: Selector, route: str, delivered: int, undelivered: int, latency: float) -> None:
    for _ in range(delivered):
        s.record_receipt(route, SPAIN, delivered=True, latency_s=latency, now=0.0)
    for _ in range(undelivered):
        s.record_receipt(route, SPAIN, delivered=False, latency_s=None, now=0.0)


@pytest.fixture
def abc() -> Selector:
    s = selector({"A": 0.030, "B": 0.045, "C": 0.040})
    feed(s, "A", 70, 30, 5.0)
    feed(s, "B", 98, 2, 20.0)
    feed(s, "C", 90, 10, 10.0)
    return s


def rank(s: Selector, policy: str, **kw: object) -> Selection:
    return s.ranking(SPAIN, policy=policy, now=0.0, **kw)  # type: ignore[arg-type]


def expected(delivered: int, undelivered: int, latency: float) -> tuple[float, float]:
    """Posterior mean with the Beta(1, 1) prior, latency with the 30 s prior of weight 1."""
    return (1 + delivered) / (2 + delivered + undelivered), (30 + delivered * latency) / (
        1 + delivered
    )


def test_cheapest(abc: Selector) -> None:
    ranking = rank(abc, "cheapest")
    assert ranking.routes == ("A", "C", "B")
    first = ranking.first
    assert first is not None
    assert (first.route, first.price, first.score) == ("A", 0.030, 0.030)
    assert first.reason.startswith("cheapest: price 0.03")


def test_best_delivery(abc: Selector) -> None:
    ranking = rank(abc, "best_delivery")
    assert ranking.routes == ("B", "C", "A")
    ratio, latency = expected(98, 2, 20.0)
    first = ranking.first
    assert first is not None
    assert first.delivery_ratio == pytest.approx(ratio)
    assert first.latency_s == pytest.approx(latency)


def test_balanced_is_the_formula(abc: Selector) -> None:
    penalty = SelectorSettings().latency_penalty_per_s
    data = {"A": (0.030, 70, 30, 5.0), "B": (0.045, 98, 2, 20.0), "C": (0.040, 90, 10, 10.0)}
    cost = {}
    for name, (price, ok, ko, latency) in data.items():
        ratio, mean_latency = expected(ok, ko, latency)
        cost[name] = price / ratio + penalty * mean_latency
    # A 0.030/0.696 + 0.00054 = 0.0436, C 0.040/0.892 + 0.0010 = 0.0459, B 0.045/0.971 + 0.0020 = 0.0484
    assert cost["A"] == pytest.approx(0.04364, abs=1e-5)
    ranking = rank(abc, "balanced")
    assert ranking.routes == tuple(sorted(cost, key=cost.__getitem__)) == ("A", "C", "B")
    assert [c.score for c in ranking.candidates] == [pytest.approx(cost[n]) for n in ranking.routes]
    assert "cost per delivered" in ranking.candidates[0].reason


def test_latency_penalty_can_decide() -> None:
    s = selector({"A": 0.030, "C": 0.040})
    feed(s, "A", 70, 30, 60.0)  # cheap but slow
    feed(s, "C", 90, 10, 10.0)
    # A: 0.030/0.696 + 0.0001*59.6 = 0.0491 > C: 0.040/0.892 + 0.0001*10.2 = 0.0459
    assert rank(s, "balanced").routes == ("C", "A")
    no_penalty = selector(
        {"A": 0.030, "C": 0.040}, settings=SelectorSettings(latency_penalty_per_s=0)
    )
    feed(no_penalty, "A", 70, 30, 60.0)
    feed(no_penalty, "C", 90, 10, 10.0)
    assert rank(no_penalty, "balanced").routes == ("A", "C")


def test_ties() -> None:
    s = selector({"X": 0.04, "Y": 0.04, "Z": 0.03})
    feed(s, "X", 5, 5, 10.0)
    feed(s, "Y", 9, 1, 10.0)
    assert rank(s, "cheapest").routes == ("Z", "Y", "X")  # equal price: better delivery first
    feed(s, "Z", 9, 1, 30.0)
    # Y and Z deliver alike; Y is faster
    assert rank(s, "best_delivery").routes == ("Y", "Z", "X")
    t = selector({"P": 0.05, "Q": 0.04})  # nothing learned: equal ratio and latency -> price
    assert rank(t, "best_delivery").routes == ("Q", "P")


def test_max_price_is_never_exceeded(abc: Selector) -> None:
    ranking = rank(abc, "best_delivery", max_price=0.040)
    assert ranking.routes == ("C", "A")
    assert [(e.route, e.reason, e.price) for e in ranking.excluded] == [
        ("B", ExclusionReason.ABOVE_MAX_PRICE, 0.045)
    ]
    assert rank(abc, "balanced", max_price=0.01).routes == ()


def test_exclusions_are_reported_with_reasons() -> None:
    s = Selector(
        [
            Upstream("no-price", PriceTable.from_mapping({"44": 0.01})),
            Upstream(
                "excluded",
                PriceTable.from_mapping({"default": 0.01}),
                Rules(excluded=frozenset({"3460"})),
            ),
            Upstream(
                "elsewhere",
                PriceTable.from_mapping({"default": 0.01}),
                Rules(allowed=frozenset({"44"})),
            ),
            Upstream(
                "numeric-only",
                PriceTable.from_mapping({"default": 0.01}),
                Rules(alphanumeric=False),
            ),
            Upstream("unbound", PriceTable.from_mapping({"default": 0.01})),
            Upstream("saturated", PriceTable.from_mapping({"default": 0.01})),
            Upstream("broken", PriceTable.from_mapping({"default": 0.01})),
            Upstream("ok", PriceTable.from_mapping({"default": 0.02})),
        ],
        health_settings=HealthSettings(),
    )
    for name in ("numeric-only", "saturated", "broken", "ok", "excluded", "elsewhere", "no-price"):
        s.health(name).set_sessions(1, 1)
    s.health("saturated").on_submit(0.0)
    for _ in range(5):
        s.health("broken").on_submit(0.0)
        s.health("broken").on_response(SubmitOutcome.TIMEOUT, 0.0)
    selection = s.select(SPAIN, policy="cheapest", sender="ACME", now=1.0, rng=random.Random(1))
    assert selection.routes == ("ok",)
    assert selection.country == "34"
    reasons = {e.route: e.reason for e in selection.excluded}
    assert reasons == {
        "no-price": ExclusionReason.NO_PRICE,
        "excluded": ExclusionReason.EXCLUDED_PREFIX,
        "elsewhere": ExclusionReason.NOT_ALLOWED,
        "numeric-only": ExclusionReason.ALPHANUMERIC_SENDER,
        "unbound": ExclusionReason.UNBOUND,
        "saturated": ExclusionReason.SATURATED,
        "broken": ExclusionReason.CIRCUIT_OPEN,
    }
    # a numeric sender may use numeric-only
    numeric = s.select(
        SPAIN, policy="cheapest", sender="+4915112345678", now=1.0, rng=random.Random(1)
    )
    assert numeric.routes == ("numeric-only", "ok")
    # after the cool-down the broken route is half-open: eligible for its probe
    assert "broken" in s.ranking(SPAIN, policy="cheapest", now=10.0).routes


def test_retry_later_versus_no_route() -> None:
    s = selector({"A": 0.03})
    s.health("A").set_sessions(0, 0)
    waiting = s.select(SPAIN, policy="cheapest", now=0.0, rng=random.Random(1))
    assert waiting.routes == () and waiting.first is None and waiting.retry_later
    nowhere = s.select("+4915112345678", policy="cheapest", now=0.0, rng=random.Random(1))
    assert nowhere.routes == () and not nowhere.retry_later
    assert [e.reason for e in nowhere.excluded] == [ExclusionReason.NO_PRICE]


def test_bad_policy_and_destination() -> None:
    s = selector({"A": 0.03})
    with pytest.raises(ValueError, match="policy"):
        s.ranking(SPAIN, policy="fastest", now=0.0)
    with pytest.raises(ValueError, match=r"E\.164"):
        s.ranking("ACME", policy="cheapest", now=0.0)
    assert s.ranking(SPAIN, policy=Policy.CHEAPEST, now=0.0).routes == ("A",)


def test_reload_swaps_prices_and_keeps_health_and_quality(abc: Selector) -> None:
    health = abc.health("B")
    abc.reload(
        [
            Upstream("A", PriceTable.from_mapping({"34": 0.050})),
            Upstream("B", PriceTable.from_mapping({"34": 0.020})),
            Upstream("D", PriceTable.from_mapping({"34": 0.001})),
        ]
    )
    assert abc.health("B") is health
    ranking = rank(abc, "cheapest")
    assert ranking.routes == ("B", "A")  # D is new: not bound yet
    assert {e.route: e.reason for e in ranking.excluded} == {"D": ExclusionReason.UNBOUND}
    b = ranking.first
    assert isinstance(b, Candidate) and b.delivery_ratio == pytest.approx(99 / 102)
    with pytest.raises(KeyError):
        abc.health("C")


def test_mixed_currencies_are_refused() -> None:
    with pytest.raises(ValueError, match="currencies"):
        Selector(
            [
                Upstream("A", PriceTable.from_csv("34,0.1,EUR")),
                Upstream("B", PriceTable.from_csv("34,0.1,USD")),
            ]
        )


@pytest.mark.parametrize("share", [0.05, 0.01])
def test_exploration_is_bounded(share: float) -> None:
    s = selector(
        {"A": 0.030, "B": 0.045, "C": 0.040, "D": 0.031},
        settings=SelectorSettings(explore_share=share),
    )
    feed(s, "A", 70, 30, 5.0)
    feed(s, "B", 98, 2, 20.0)
    feed(s, "C", 9, 1, 10.0)  # little data: wide posteriors, tempting to explore
    rng = random.Random(1234)
    exploit = s.ranking(SPAIN, policy="balanced", now=0.0).routes[0]
    deviations = 0
    n = 10_000
    for _ in range(n):
        selection = s.select(SPAIN, policy="balanced", now=0.0, rng=rng)
        assert selection.explored == (selection.routes[0] != exploit)
        deviations += selection.explored
    assert 0 < deviations <= share * n


def test_exploration_spends_its_budget_on_an_unlucky_route() -> None:
    """A route whose first receipts ran unlucky (64 of 108 delivered) and whose
    posterior still overlaps the exploit's gets about the whole exploration budget,
    so it can win the traffic back; a route far behind gets next to none."""
    s = selector(
        {"A": 0.030, "C": 0.040, "E": 0.080}, settings=SelectorSettings(explore_share=0.05)
    )
    feed(s, "A", 64, 44, 5.0)  # 0.030 / 0.59 = 0.051 per delivered; truly 0.043
    feed(s, "C", 300, 33, 5.0)  # 0.040 / 0.90 = 0.044: the exploit choice
    feed(s, "E", 300, 33, 5.0)  # twice C's price: no draw makes it the cheapest
    rng = random.Random(99)
    n = 10_000
    firsts = Counter(
        s.select(SPAIN, policy="balanced", now=0.0, rng=rng).routes[0] for _ in range(n)
    )
    assert firsts["A"] >= 0.6 * 0.05 * n, firsts
    assert firsts["A"] + firsts["E"] <= 0.05 * n
    assert firsts["E"] == 0


def test_no_exploration_when_share_is_zero(abc: Selector) -> None:
    s = selector({"A": 0.030, "C": 0.031}, settings=SelectorSettings(explore_share=0.0))
    rng = random.Random(1)
    assert not any(s.select(SPAIN, now=0.0, rng=rng).explored for _ in range(2000))


digit_prefix = st.text("0123456789", min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.dictionaries(digit_prefix, st.floats(0, 1), max_size=8), min_size=1, max_size=4),
    st.lists(st.text("0123456789", min_size=1, max_size=12), min_size=1, max_size=20),
    st.integers(1, 3),
)
def test_cached_decisions_equal_direct_lookups(
    tables: list[dict[str, float]], numbers: list[str], cache_size: int
) -> None:
    routes = [
        Upstream(f"u{i}", PriceTable(t, default=None if i else 0.5)) for i, t in enumerate(tables)
    ]
    s = Selector(routes, settings=SelectorSettings(cache_size=cache_size))
    for route in routes:
        s.health(route.name).set_sessions(1, 1)
    for number in numbers:
        got = {c.route: c.price for c in s.ranking(number, policy="cheapest", now=0.0).candidates}
        want = {r.name: r.prices.price_for(number) for r in routes}
        assert got == {name: price for name, price in want.items() if price is not None}
