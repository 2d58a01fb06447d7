from gateway.ratelimit import TpsLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_allows_one_second_of_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = TpsLimiter(clock)
    assert sum(limiter.allow(1, 10) for _ in range(25)) == 10
    clock.now += 0.5
    assert sum(limiter.allow(1, 10) for _ in range(25)) == 5
    clock.now += 10
    assert sum(limiter.allow(1, 10) for _ in range(25)) == 10


def test_accounts_are_limited_separately() -> None:
    limiter = TpsLimiter(Clock())
    assert sum(limiter.allow(1, 2) for _ in range(5)) == 2
    assert sum(limiter.allow(2, 2) for _ in range(5)) == 2
