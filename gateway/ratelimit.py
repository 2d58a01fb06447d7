"""Per-account tps limits, shared by the HTTP API and the SMPP front.

A GCRA token bucket per account: `allow()` answers at once (the caller
answers 429 / ESME_RTHROTTLED), nothing sleeps. The burst is one second's
worth, so a client that sends its tps in a lump at the top of each second is
not refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TpsLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[int, float] = {}  # account id -> theoretical arrival time

    def allow(self, account_id: int, tps: int) -> bool:
        if tps <= 0:
            return True
        now = self._clock()
        interval = 1.0 / tps
        burst = tps * interval  # one second of traffic
        tat = max(self._tat.get(account_id, now), now)
        if tat - now > burst - interval:
            return False
        self._tat[account_id] = tat + interval
        return True
