from __future__ import annotations

import math

import pytest

from routing.health import (
    BreakerSettings,
    CircuitBreaker,
    CircuitState,
    Health,
    HealthBlock,
    HealthSettings,
    SubmitOutcome,
)


def test_breaker_state_machine() -> None:
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, cooldown_s=10, cooldown_growth=2))
    for _ in range(2):
        breaker.on_failure(0.0)
    assert breaker.state(0.0) is CircuitState.CLOSED
    breaker.on_success()  # failures must be consecutive
    for _ in range(3):
        breaker.on_failure(1.0)
    assert breaker.state(1.0) is CircuitState.OPEN
    assert not breaker.available(10.9)
    breaker.on_success()  # a late answer from before the opening changes nothing
    assert breaker.state(5.0) is CircuitState.OPEN
    # the cool-down is over: half-open, one probe
    assert breaker.state(11.0) is CircuitState.HALF_OPEN
    assert breaker.available(11.0)
    breaker.on_attempt(11.0)
    assert not breaker.available(11.5)  # only one probe
    breaker.on_failure(12.0)  # probe failed: open again, for twice as long
    assert breaker.state(12.0) is CircuitState.OPEN
    assert not breaker.available(31.9)
    assert breaker.available(32.0)
    breaker.on_attempt(32.0)
    breaker.on_success()  # probe succeeded: closed, cool-down back to 10 s
    assert breaker.state(32.0) is CircuitState.CLOSED
    for _ in range(3):
        breaker.on_failure(40.0)
    assert breaker.available(50.0)


def test_cooldown_growth_is_capped() -> None:
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=1, cooldown_s=10, max_cooldown_s=25))
    breaker.on_failure(0.0)
    now = 10.0
    for expected in (20.0, 25.0, 25.0):
        breaker.on_attempt(now)
        breaker.on_failure(now)
        assert not breaker.available(now + expected - 0.01)
        assert breaker.available(now + expected)
        now += expected


def test_health_eligibility_and_board() -> None:
    board: dict[str, float] = {}
    settings = HealthSettings(breaker=BreakerSettings(failure_threshold=2, cooldown_s=10))
    health = Health(settings, name="a", board=board)
    assert health.blocked(0.0) is HealthBlock.UNBOUND
    assert board == {"a": math.inf}
    health.set_sessions(1, 2)
    assert health.blocked(0.0) is None
    assert board == {}
    health.on_submit(0.0)
    health.on_submit(0.0)
    assert health.blocked(0.0) is HealthBlock.SATURATED
    assert health.eligible_from == math.inf
    health.on_response(SubmitOutcome.TIMEOUT, 1.0)
    health.on_response(SubmitOutcome.TEMPORARY, 1.0)
    assert health.in_flight == 0
    assert health.blocked(1.0) is HealthBlock.CIRCUIT_OPEN
    assert board == {"a": 11.0}
    assert health.blocked(11.0) is None  # half-open: the probe may go
    health.on_submit(11.0)
    assert health.blocked(11.0) is HealthBlock.CIRCUIT_OPEN  # probe out
    health.on_response(SubmitOutcome.REJECTED, 11.5)  # an answer: the upstream is alive
    assert health.blocked(11.5) is None
    assert board == {}
    health.set_sessions(0, 0)
    assert health.blocked(12.0) is HealthBlock.UNBOUND


def test_throttling_backs_off_and_counts() -> None:
    health = Health(HealthSettings(throttle_backoff_s=1.0, rate_half_life_s=60), name="a")
    health.set_sessions(1, 10)
    for outcome in (
        SubmitOutcome.OK,
        SubmitOutcome.THROTTLED,
        SubmitOutcome.OK,
        SubmitOutcome.TIMEOUT,
    ):
        health.on_submit(0.0)
        health.on_response(outcome, 0.0)
    assert health.throttled_rate() == pytest.approx(0.25)
    assert health.temporary_error_rate() == pytest.approx(0.25)
    assert health.blocked(0.5) is HealthBlock.THROTTLED
    assert health.blocked(1.0) is None
    assert health.breaker.state(1.0) is CircuitState.CLOSED  # throttling is no failure
    # old responses weigh less: one hour later, one OK brings the rates down
    health.on_submit(3600.0)
    health.on_response(SubmitOutcome.OK, 3600.0)
    assert health.throttled_rate() < 0.001
    snap = health.snapshot(3600.0)
    assert (snap.bound_sessions, snap.window, snap.in_flight) == (1, 10, 0)
    assert snap.circuit is CircuitState.CLOSED and snap.blocked is None
