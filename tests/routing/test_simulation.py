"""The issue's scenario at the pure level: three routes, outcomes drawn at their true ratios."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from routing.health import SubmitOutcome
from routing.prices import PriceTable
from routing.selector import Selector, Upstream

SPAIN = "+34600123456"
PRICES = {"A": 0.030, "B": 0.045, "C": 0.040}


def run(
    s: Selector,
    policy: str,
    truth: dict[str, float],
    messages: int,
    rng: random.Random,
    start: float = 0.0,
) -> tuple[Counter[str], float]:
    """Send ``messages`` through the first candidate, feeding health and receipts back."""
    sent: Counter[str] = Counter()
    now = start
    for _ in range(messages):
        now += 0.01
        selection = s.select(SPAIN, policy=policy, sender="ACME", now=now, rng=rng)
        route = selection.routes[0]
        sent[route] += 1
        health = s.health(route)
        health.on_submit(now)
        health.on_response(SubmitOutcome.OK, now)
        s.record_receipt(
            route, SPAIN, delivered=rng.random() < truth[route], latency_s=5.0, now=now
        )
    return sent, now


def three(prices: dict[str, float] = PRICES) -> Selector:
    s = Selector([Upstream(n, PriceTable.from_mapping({"34": p})) for n, p in prices.items()])
    for name in prices:
        s.health(name).set_sessions(1, 50)
    return s


TRUTH = {"A": 0.70, "B": 0.98, "C": 0.90}


@pytest.mark.parametrize(
    ("policy", "truth", "winner", "share"),
    [
        ("cheapest", TRUTH, "A", 0.99),
        ("best_delivery", TRUTH, "B", 0.95),
        # cost per delivered: A 0.0429, C 0.0444, B 0.0459
        ("balanced", TRUTH, "A", 0.93),
        # A at 60% costs 0.0500 per delivered: C (0.0444) is now the best buy
        ("balanced", {**TRUTH, "A": 0.60}, "C", 0.85),
    ],
)
def test_policies_converge(policy: str, truth: dict[str, float], winner: str, share: float) -> None:
    sent, _ = run(three(), policy, truth, 3000, random.Random(42))
    assert sent[winner] / 3000 >= share, sent


def test_unbound_route_loses_its_traffic_and_gets_it_back() -> None:
    s = three()
    rng = random.Random(7)
    sent, now = run(s, "best_delivery", TRUTH, 2000, rng)
    assert sent["B"] / 2000 > 0.9
    s.health("B").set_sessions(0, 0)  # B stopped
    sent, now = run(s, "best_delivery", TRUTH, 500, rng, now)
    assert sent["B"] == 0 and sent["A"] + sent["C"] == 500  # the others take it at once
    s.health("B").set_sessions(1, 50)  # B is back
    sent, _ = run(s, "best_delivery", TRUTH, 500, rng, now)
    assert sent["B"] / 500 > 0.9
