"""The gateway's side of routing: builds the selector from Settings and feeds it.

`routing/` decides and knows nothing of sockets, files or clocks; this module
reads the price files, passes `time.monotonic()` in, and turns what happens
on the wire (binds, submit_sm_resp, receipts) into the selector's inputs.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.config import RoutingSettings, UpstreamSettings
from gateway.ids import upstream_id_forms
from routing import e164
from routing.health import BreakerSettings, HealthSettings, SubmitOutcome
from routing.prices import PriceError, PriceTable
from routing.quality import QualityBook, QualitySettings
from routing.rules import Rules
from routing.selector import Selection, Selector, SelectorSettings
from routing.selector import Upstream as Route

__all__ = ["PriceError", "RouteTable", "SubmitOutcome", "load_routes"]

# Receipts remembered to learn from (upstream, upstream id) -> (destination, submitted at).
_SENT_LIMIT = 200_000


def load_routes(upstreams: Sequence[UpstreamSettings], base: Path | None = None) -> list[Route]:
    """The selector's view of the configured upstreams; prices inline and from files.

    A price file's rows override the inline prices of the same prefix. Raises
    PriceError naming the file and line for a bad one.
    """
    routes = []
    for u in upstreams:
        table = PriceTable.from_mapping(u.prices)
        if u.prices_file is not None:
            path = Path(u.prices_file)
            if base is not None and not path.is_absolute():
                path = base / path
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise PriceError(str(path), None, f"cannot be read: {exc.strerror}") from None
            from_file = PriceTable.from_csv(text, source=str(path), default=table.default)
            table = PriceTable(
                {**table.prefixes, **from_file.prefixes}, from_file.default, from_file.currency
            )
        rules = Rules(
            allowed=frozenset(u.allowed_prefixes),
            excluded=frozenset(u.excluded_prefixes),
            alphanumeric=u.alphanumeric_senders,
        )
        routes.append(Route(u.name, table, rules))
    return routes


class RouteTable:
    """The selector of one gateway, and the place its inputs come in."""

    def __init__(
        self,
        routes: Sequence[Route],
        settings: RoutingSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.selector = Selector(
            routes,
            settings=SelectorSettings(
                explore_share=settings.explore_share,
                latency_penalty_per_s=settings.latency_penalty_per_s,
            ),
            health_settings=HealthSettings(
                breaker=BreakerSettings(
                    failure_threshold=settings.breaker_failures,
                    cooldown_s=settings.breaker_cooldown_s,
                )
            ),
            # Optimistic prior (95% on the weight of two receipts): a route no
            # one has tried ranks above one known to deliver 90%, so
            # best_delivery tries it instead of settling on the first good
            # route it met; its first receipts correct the guess.
            quality=QualityBook(
                QualitySettings(
                    half_life_s=settings.quality_half_life_s,
                    prior_delivered=1.9,
                    prior_undelivered=0.1,
                )
            ),
        )
        self._sent: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._by_name = {route.name: route for route in routes}
        self._lost: dict[str, object] = {}

    # --- decisions ----------------------------------------------------------------

    def select(
        self, destination: str, *, policy: str, sender: str, max_price: float | None
    ) -> Selection:
        return self.selector.select(
            destination,
            policy=policy,
            sender=sender,
            max_price=max_price,
            now=self.clock(),
            rng=self.rng,
        )

    def ranking(
        self, destination: str, *, policy: str, sender: str = "", max_price: float | None = None
    ) -> Selection:
        return self.selector.ranking(
            destination, policy=policy, sender=sender, max_price=max_price, now=self.clock()
        )

    def blocked(self, upstream: str) -> bool:
        """True when the upstream may take no new message now (unbound, circuit open, ...)."""
        return self.selector.health(upstream).blocked(self.clock()) is not None

    def gone(self, upstream: str) -> bool:
        """True when the upstream cannot take messages for a while: unbound or circuit open
        (not merely a full window or a short throttle back-off)."""
        blocked = self.selector.health(upstream).blocked(self.clock())
        return blocked is not None and str(blocked) in ("unbound", "circuit_open")

    def reload(self, routes: Sequence[Route]) -> None:
        self.selector.reload(routes)
        self._by_name = {route.name: route for route in routes}

    def price(self, upstream: str, destination: str) -> float | None:
        """Price per segment on this route for the destination (None: it does not serve it)."""
        route = self._by_name.get(upstream)
        return route.prices.price_for(destination.lstrip("+")) if route is not None else None

    # --- what happens on the wire -------------------------------------------------

    def bound(self, upstream: str, sessions: int, window: int) -> None:
        """`sessions` bound now, each with `window` submit_sm in flight at most."""
        self.selector.health(upstream).set_sessions(sessions, window * sessions)

    def submitting(self, upstream: str) -> None:
        self.selector.health(upstream).on_submit(self.clock())

    def answered(self, upstream: str, outcome: SubmitOutcome) -> None:
        self.selector.health(upstream).on_response(outcome, self.clock())

    def lost(self, upstream: str, connection: object) -> None:
        """A submit_sm lost with its session (`connection` names the session and its bind).

        A session that drops with forty submits outstanding is one failure, not
        forty: only the first loss of each connection reaches the breaker, the
        others just leave the in-flight count.
        """
        health = self.selector.health(upstream)
        if self._lost.get(upstream) == connection:
            health.set_in_flight(health.in_flight - 1)
        else:
            self._lost[upstream] = connection
            health.on_response(SubmitOutcome.CONNECTION_LOST, self.clock())

    def not_sent(self, upstream: str) -> None:
        """A submit_sm that never went out (not bound any more): no outcome at all."""
        health = self.selector.health(upstream)
        health.set_in_flight(health.in_flight - 1)

    def submitted(self, upstream: str, upstream_id: str, destination: str) -> None:
        """Remember a submit_sm_resp ROK, to learn from its receipt."""
        key = (upstream, upstream_id)
        self._sent[key] = (destination, self.clock())
        if len(self._sent) > _SENT_LIMIT:
            self._sent.popitem(last=False)

    def receipt(self, upstream: str, upstream_id: str, *, delivered: bool) -> None:
        """A final receipt: the route's delivery ratio and time to receipt learn from it.

        Receipts of messages sent before a restart are not known here and teach
        nothing; the quality rebuilds from new traffic.
        """
        # The id as sent nearly always matches: spell it otherwise only on a miss.
        sent = self._sent.pop((upstream, upstream_id), None)
        if sent is None:
            for form in upstream_id_forms(upstream_id):
                sent = self._sent.pop((upstream, form), None)
                if sent is not None:
                    break
            else:
                return
        destination, at = sent
        now = self.clock()
        with contextlib.suppress(e164.InvalidNumber):
            self.selector.record_receipt(
                upstream,
                destination,
                delivered=delivered,
                latency_s=now - at if delivered else None,
                now=now,
            )

    def snapshot(self) -> list[dict[str, object]]:
        """Each upstream's health and learned quality, for GET /v1/routes and `smsgw route list`."""
        now = self.clock()
        out: list[dict[str, object]] = []
        quality = self.selector.quality
        for route in self.selector.upstreams:
            health = self.selector.health(route.name).snapshot(now)
            countries = {}
            for country in quality.countries():
                estimate = quality.estimate(route.name, country, now)
                countries[country] = {
                    "delivery_ratio": round(estimate.delivery_ratio, 4),
                    "lower_bound": round(estimate.lower_bound, 4),
                    "latency_s": round(estimate.latency_s, 3),
                    "delivered": round(estimate.delivered, 2),
                    "undelivered": round(estimate.undelivered, 2),
                }
            out.append(
                {
                    "route": route.name,
                    "bound_sessions": health.bound_sessions,
                    "window": health.window,
                    "in_flight": health.in_flight,
                    "circuit": str(health.circuit),
                    "consecutive_failures": health.consecutive_failures,
                    "throttled_rate": round(health.throttled_rate, 4),
                    "temporary_error_rate": round(health.temporary_error_rate, 4),
                    "blocked": str(health.blocked) if health.blocked else None,
                    "default_price": route.prices.default,
                    "prefixes_priced": len(route.prices.prefixes),
                    "quality": countries,
                }
            )
        return out
