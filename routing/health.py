"""Whether an upstream can take a new message now: sessions, window, errors, circuit breaker.

The gateway reports what happens (binds, submits, responses); the selector
asks one question per route per selection, so the answer is kept ready in
`eligible_from` (a time) instead of being worked out from the parts each time.

The breaker follows the usual three states. Closed: traffic flows, consecutive
failures are counted. Open (after ``failure_threshold`` of them): nothing is
sent for ``cooldown_s``. Half-open (the cool-down is over): exactly one submit,
the probe, is let through; its success closes the circuit, its failure opens
it again for a longer cool-down (``cooldown_growth``, capped), so an upstream
that stays broken is probed less and less often.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

INFINITY = math.inf


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class SubmitOutcome(enum.StrEnum):
    """What became of one submit_sm, as the breaker and the rates count it."""

    OK = "ok"  # submit_sm_resp ESME_ROK
    REJECTED = "rejected"  # a permanent status: the upstream works, the message was refused
    THROTTLED = "throttled"  # ESME_RTHROTTLED: the upstream works, we are too fast
    TEMPORARY = "temporary"  # RMSGQFUL, RSYSERR, RSUBMITFAIL, ...: the upstream is in trouble
    TIMEOUT = "timeout"  # no submit_sm_resp in time
    CONNECTION_LOST = "connection_lost"  # the session went away with the submit outstanding


# An answer, even a refusal, proves the upstream is alive; only silence and
# system errors count against it.
_FAILURES = frozenset(
    {SubmitOutcome.TEMPORARY, SubmitOutcome.TIMEOUT, SubmitOutcome.CONNECTION_LOST}
)


class HealthBlock(enum.StrEnum):
    UNBOUND = "unbound"
    SATURATED = "saturated"
    CIRCUIT_OPEN = "circuit_open"
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 5
    cooldown_s: float = 10.0
    cooldown_growth: float = 2.0
    max_cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if not (0 < self.cooldown_s <= self.max_cooldown_s) or self.cooldown_growth < 1:
            raise ValueError("need 0 < cooldown_s <= max_cooldown_s and cooldown_growth >= 1")


@dataclass(frozen=True, slots=True)
class HealthSettings:
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    rate_half_life_s: float = 60.0  # what "recent" means for the throttled and error rates
    # After an RTHROTTLED, new messages avoid the upstream this long: the
    # message that was throttled and its followers go to the next candidate
    # instead of queueing behind a rate limit. 0 turns this off.
    throttle_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate_half_life_s > 0 or self.throttle_backoff_s < 0:
            raise ValueError("need rate_half_life_s > 0 and throttle_backoff_s >= 0")


class CircuitBreaker:
    __slots__ = ("_cooldown", "_failures", "_open_until", "_state", "settings")

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self.settings = settings or BreakerSettings()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._cooldown = self.settings.cooldown_s
        self._open_until = 0.0

    def state(self, now: float) -> CircuitState:
        if self._state is CircuitState.OPEN and now >= self._open_until:
            return CircuitState.HALF_OPEN
        return self._state

    def available(self, now: float) -> bool:
        """May a new submit go out? Closed: yes. Half-open: only if no probe is out."""
        if self._state is CircuitState.CLOSED:
            return True
        return self._state is CircuitState.OPEN and now >= self._open_until

    @property
    def closed_from(self) -> float:
        """Earliest time a submit may go out: 0 closed, the cool-down's end, inf while probing."""
        if self._state is CircuitState.CLOSED:
            return 0.0
        return self._open_until if self._state is CircuitState.OPEN else INFINITY

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def on_attempt(self, now: float) -> None:
        """A submit went out; past the cool-down it is the probe."""
        if self._state is CircuitState.OPEN and now >= self._open_until:
            self._state = CircuitState.HALF_OPEN

    def on_success(self) -> None:
        # While open (cool-down running) outcomes of earlier submits are stale:
        # only what the probe meets may close the circuit.
        if self._state is CircuitState.OPEN:
            return
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._cooldown = self.settings.cooldown_s

    def on_failure(self, now: float) -> None:
        s = self.settings
        if self._state is CircuitState.CLOSED:
            self._failures += 1
            if self._failures >= s.failure_threshold:
                self._open(now)
        elif self._state is CircuitState.HALF_OPEN:
            self._cooldown = min(self._cooldown * s.cooldown_growth, s.max_cooldown_s)
            self._open(now)

    def _open(self, now: float) -> None:
        self._state = CircuitState.OPEN
        self._open_until = now + self._cooldown


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    bound_sessions: int
    window: int
    in_flight: int
    circuit: CircuitState
    consecutive_failures: int
    throttled_rate: float
    temporary_error_rate: float
    blocked: HealthBlock | None


class Health:
    """Live health of one upstream. Mutable; the gateway feeds it, the selector reads it."""

    __slots__ = (
        "_bound",
        "_rate_at",
        "_responses",
        "_temporary",
        "_throttled",
        "_throttled_until",
        "_window",
        "board",
        "breaker",
        "eligible_from",
        "in_flight",
        "name",
        "settings",
    )

    def __init__(
        self,
        settings: HealthSettings | None = None,
        *,
        name: str = "",
        board: dict[str, float] | None = None,
    ) -> None:
        self.settings = settings or HealthSettings()
        self.name = name
        # Shared with the selector: every upstream that may be ineligible, with
        # its `eligible_from`. A selection checks these few instead of all routes.
        self.board: dict[str, float] = {} if board is None else board
        self.breaker = CircuitBreaker(self.settings.breaker)
        self._bound = 0
        self._window = 0
        self.in_flight = 0
        self._throttled_until = 0.0
        self._responses = 0.0
        self._throttled = 0.0
        self._temporary = 0.0
        self._rate_at = 0.0
        # Read-only for others: no new message before this time (inf: not until
        # something is reported). Kept up to date by every method below.
        self.eligible_from = INFINITY
        self.board[name] = INFINITY

    @property
    def bound_sessions(self) -> int:
        return self._bound

    @property
    def window(self) -> int:
        return self._window

    def set_sessions(self, bound: int, window: int) -> None:
        """Bound transmit-capable sessions now and their summed window (submits outstanding)."""
        self._bound = max(0, bound)
        self._window = max(0, window)
        self._refresh()

    def set_in_flight(self, in_flight: int) -> None:
        """Resynchronise with the connector's own count (e.g. after a session dropped)."""
        self.in_flight = max(0, in_flight)
        self._refresh()

    def on_submit(self, now: float) -> None:
        """A submit_sm was written to this upstream."""
        self.in_flight += 1
        self.breaker.on_attempt(now)
        self._expire_throttle(now)
        self._refresh()

    def on_response(self, outcome: SubmitOutcome, now: float) -> None:
        """The submit_sm ended: a submit_sm_resp, a timeout or a lost session."""
        self.in_flight = max(0, self.in_flight - 1)
        self._count(outcome, now)
        if outcome in _FAILURES:
            self.breaker.on_failure(now)
        else:
            self.breaker.on_success()
        if outcome is SubmitOutcome.THROTTLED and self.settings.throttle_backoff_s > 0:
            self._throttled_until = now + self.settings.throttle_backoff_s
        self._expire_throttle(now)
        self._refresh()

    def blocked(self, now: float) -> HealthBlock | None:
        """Why no new message may go here now, or None."""
        if self._bound == 0:
            return HealthBlock.UNBOUND
        if self.in_flight >= self._window:
            return HealthBlock.SATURATED
        if not self.breaker.available(now):
            return HealthBlock.CIRCUIT_OPEN
        if now < self._throttled_until:
            return HealthBlock.THROTTLED
        return None

    def throttled_rate(self) -> float:
        """Share of recent responses that were RTHROTTLED (decayed; 0 with no responses)."""
        return self._throttled / self._responses if self._responses else 0.0

    def temporary_error_rate(self) -> float:
        """Share of recent submits that met a temporary error, a timeout or a lost session."""
        return self._temporary / self._responses if self._responses else 0.0

    def snapshot(self, now: float) -> HealthSnapshot:
        return HealthSnapshot(
            bound_sessions=self._bound,
            window=self._window,
            in_flight=self.in_flight,
            circuit=self.breaker.state(now),
            consecutive_failures=self.breaker.consecutive_failures,
            throttled_rate=self.throttled_rate(),
            temporary_error_rate=self.temporary_error_rate(),
            blocked=self.blocked(now),
        )

    def _count(self, outcome: SubmitOutcome, now: float) -> None:
        # Decay on write only: the rates are ratios of counts decayed alike, so
        # reading them needs no clock.
        if self._responses:
            factor = math.exp2((self._rate_at - now) / self.settings.rate_half_life_s)
            self._responses *= factor
            self._throttled *= factor
            self._temporary *= factor
        self._rate_at = now
        self._responses += 1.0
        if outcome is SubmitOutcome.THROTTLED:
            self._throttled += 1.0
        elif outcome in _FAILURES:
            self._temporary += 1.0

    def _expire_throttle(self, now: float) -> None:
        # A back-off in the past is forgotten, so the upstream leaves the board.
        if self._throttled_until <= now:
            self._throttled_until = 0.0

    def _refresh(self) -> None:
        if self._bound == 0 or self.in_flight >= self._window:
            self.eligible_from = INFINITY
        else:
            self.eligible_from = max(self.breaker.closed_from, self._throttled_until)
        if self.eligible_from > 0.0:
            self.board[self.name] = self.eligible_from
        else:
            self.board.pop(self.name, None)
