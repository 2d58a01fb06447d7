from __future__ import annotations

import random

import pytest

from routing.quality import QualityBook, QualitySettings


def feed(book: QualityBook, upstream: str, delivered: int, undelivered: int, now: float) -> None:
    for _ in range(delivered):
        book.record(upstream, "34", delivered=True, latency_s=5.0, now=now)
    for _ in range(undelivered):
        book.record(upstream, "34", delivered=False, latency_s=None, now=now)


def test_posterior_mean_lower_bound_and_latency() -> None:
    book = QualityBook(QualitySettings(prior_delivered=1, prior_undelivered=1, prior_latency_s=30))
    assert book.estimate("a", "34", 0.0).delivery_ratio == 0.5
    feed(book, "a", 7, 3, 0.0)
    estimate = book.estimate("a", "34", 0.0)
    assert estimate.delivery_ratio == pytest.approx(8 / 12)
    assert 0 < estimate.lower_bound < estimate.delivery_ratio
    # 7 delivered at 5 s, prior 30 s with weight 1
    assert estimate.latency_s == pytest.approx((30 + 7 * 5) / 8)
    assert estimate.delivered == pytest.approx(7)
    assert estimate.undelivered == pytest.approx(3)
    feed(book, "a", 700, 300, 0.0)
    assert book.estimate("a", "34", 0.0).lower_bound > estimate.lower_bound  # more data, narrower


def test_old_outcomes_weigh_less() -> None:
    book = QualityBook(QualitySettings(half_life_s=100.0, prior_delivered=1, prior_undelivered=1))
    feed(book, "a", 0, 100, 0.0)  # a bad spell long ago
    feed(book, "a", 100, 0, 500.0)  # good now
    estimate = book.estimate("a", "34", 500.0)
    assert estimate.undelivered == pytest.approx(100 / 32)  # five half-lives
    assert estimate.delivery_ratio > 0.95
    # with nothing new, evidence fades toward the prior
    assert book.estimate("a", "34", 5000.0).delivery_ratio == pytest.approx(0.5, abs=1e-6)


def test_rebase_keeps_estimates() -> None:
    book = QualityBook(QualitySettings(half_life_s=1.0))
    feed(book, "a", 3, 1, 0.0)
    feed(book, "a", 3, 1, 100.0)  # past 64 half-lives: stored weights are rebased
    estimate = book.estimate("a", "34", 100.0)
    assert estimate.delivered == pytest.approx(3.0)
    assert estimate.undelivered == pytest.approx(1.0)


def test_country_table_means_follow_records() -> None:
    book = QualityBook(QualitySettings(prior_delivered=1, prior_undelivered=1))
    slot = book.slot("a")
    table = book.country("34", book.tick(0.0))
    assert table.ratio[slot] == 0.5
    feed(book, "a", 9, 1, 0.0)
    assert book.country("34", book.tick(0.0)).ratio[slot] == pytest.approx(10 / 12)
    book.slot("b")  # a new upstream shows up with the prior
    assert book.country("34", book.tick(0.0)).ratio == [pytest.approx(10 / 12), 0.5]


def test_thompson_samples_center_on_the_mean() -> None:
    book = QualityBook(QualitySettings(prior_delivered=1, prior_undelivered=1))
    feed(book, "a", 90, 10, 0.0)
    table = book.country("34", book.tick(0.0))
    rng = random.Random(7)
    draws = [book.sample(table, book.slot("a"), rng) for _ in range(2000)]
    assert sum(draws) / len(draws) == pytest.approx(91 / 102, abs=0.01)
