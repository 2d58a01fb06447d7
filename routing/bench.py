"""`python -m routing.bench`: microseconds per selection, per policy.

50 upstreams with 10,000 price prefixes *each* (the harder case: about half
a million distinct prefixes in all, since they are drawn independently), all
bound and healthy, with learned quality in every country. Destinations are
drawn under those prefixes. "warm" repeats 2,000 destinations (the static
part of each decision is cached per prefix, as under real traffic); "cold"
lets every selection miss that cache. Best of several runs. A measurement,
not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from routing.e164 import CALLING_CODES
from routing.prices import PriceTable
from routing.selector import Policy, Selector, SelectorSettings, Upstream


def build(upstreams: int, prefixes: int, seed: int, settings: SelectorSettings) -> Selector:
    rng = random.Random(seed)
    codes = sorted(CALLING_CODES)
    routes = []
    for n in range(upstreams):
        table: dict[str, float] = {}
        while len(table) < prefixes:
            prefix = rng.choice(codes) + str(rng.randrange(10 ** rng.randint(1, 4)))
            table[prefix] = round(rng.uniform(0.005, 0.09), 4)
        routes.append(Upstream(f"up{n:02d}", PriceTable(table, default=0.1)))
    selector = Selector(routes, settings=settings)
    for route in routes:
        selector.health(route.name).set_sessions(2, 100)
        for code in codes:
            for _ in range(3):
                selector.quality.record(
                    route.name,
                    code,
                    delivered=rng.random() < 0.9,
                    latency_s=rng.uniform(1, 20),
                    now=0.0,
                )
    return selector


def destinations(selector: Selector, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    prefixes = [p for u in selector.upstreams for p in u.prices.prefixes]
    out = []
    for _ in range(count):
        prefix = rng.choice(prefixes)
        out.append(
            "+" + prefix + "".join(rng.choice("0123456789") for _ in range(11 - len(prefix)))
        )
    return out


def per_call_us(fn: Callable[[str], object], numbers: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for number in numbers:
            fn(number)
        best = min(best, (time.perf_counter() - start) / len(numbers))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstreams", type=int, default=50)
    parser.add_argument("--prefixes", type=int, default=10_000, help="per upstream")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    selector = build(args.upstreams, args.prefixes, 1, SelectorSettings())
    cold_selector = build(args.upstreams, args.prefixes, 1, SelectorSettings(cache_size=1))
    built = time.perf_counter() - start
    warm = destinations(selector, 2_000, 2) * 5
    cold = destinations(selector, 10_000, 3)
    rng = random.Random(4)
    print(
        f"{args.upstreams} upstreams x {args.prefixes} prefixes each "
        f"(built two selectors in {built:.1f}s); microseconds per call, best of {args.repeat}"
    )
    print(
        "warm: the destination's prefix is cached; cold: every selection misses that cache"
        " (the first selection for a prefix); target: at most 20 us per selection"
    )
    print(
        f"{'policy':<14}{'warm select':>12}{'+ .first':>10}{'cold select':>13}{'ranking+all':>13}"
    )
    for policy in Policy:

        def select(number: str, s: Selector = selector, p: Policy = policy) -> object:
            return s.select(number, policy=p, sender="ACME", now=10.0, rng=rng)

        def with_first(number: str, p: Policy = policy) -> object:
            return selector.select(number, policy=p, sender="ACME", now=10.0, rng=rng).first

        def select_cold(number: str, p: Policy = policy) -> object:
            return cold_selector.select(number, policy=p, sender="ACME", now=10.0, rng=rng)

        def ranking(number: str, p: Policy = policy) -> object:
            return selector.ranking(number, policy=p, now=10.0).candidates

        print(
            f"{policy.value:<14}"
            f"{per_call_us(select, warm, args.repeat):>12.1f}"
            f"{per_call_us(with_first, warm, args.repeat):>10.1f}"
            f"{per_call_us(select_cold, cold, 1):>13.1f}"
            f"{per_call_us(ranking, warm[:2000], 1):>13.1f}"
        )


if __name__ == "__main__":
    main()
