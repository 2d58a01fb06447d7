"""A family of fake SMSCs for the gateway tests, in the manner of Jasmin's
`tests/protocols/smpp/smsc_simulator.py`: one small preset per behaviour.

Each is an async context manager that yields a started `Simulator` on
127.0.0.1, port 0 (read it back from `.port`), and closes it on exit::

    async with black_hole() as smsc:
        upstream = SmppClient("127.0.0.1", smsc.port, ...)

Keyword arguments are further `SimulatorOptions` fields. Faults can also be
switched while it runs: `smsc.set_options(never_answer=True)`, and the SMSC
taken down and brought back on the same port with `stop_listening()` /
`start()` (or `restart()`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from gateway.simulator import Simulator, SimulatorOptions

__all__ = [
    "black_hole",
    "dropping",
    "early_receipts",
    "happy",
    "mixed_ids",
    "running",
    "slow",
    "throttling",
    "undelivering",
]

# Quick receipts, so that tests waiting for them stay fast.
FAST_DLR_MS = 10


@asynccontextmanager
async def running(
    options: SimulatorOptions | None = None, **changes: Any
) -> AsyncIterator[Simulator]:
    """A started simulator with `options` (defaults: fast receipts) and `changes` applied."""
    base = options if options is not None else SimulatorOptions(dlr_delay_ms=FAST_DLR_MS)
    simulator = Simulator(dataclasses.replace(base, **changes))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


def happy(**changes: Any) -> AbstractAsyncContextManager[Simulator]:
    """Answers everything, every message DELIVRD after a few milliseconds."""
    return running(**changes)


def undelivering(**changes: Any) -> AbstractAsyncContextManager[Simulator]:
    """Accepts everything; every final receipt is UNDELIV."""
    return running(**{"delivery_ratio": 0.0, **changes})


def black_hole(**changes: Any) -> AbstractAsyncContextManager[Simulator]:
    """Binds, then never answers a submit_sm (the ESME's requests time out)."""
    return running(**{"never_answer": True, **changes})


def throttling(max_tps: int = 1, **changes: Any) -> AbstractAsyncContextManager[Simulator]:
    """Answers ESME_RTHROTTLED above `max_tps` submit_sm per second."""
    return running(**{"max_tps": max_tps, **changes})


def dropping(every: int = 3, **changes: Any) -> AbstractAsyncContextManager[Simulator]:
    """Aborts the connection on every `every`-th submit_sm, without answering it."""
    return running(**{"drop_every": every, **changes})


def slow(ms: int = 200, **changes: Any) -> AbstractAsyncContextManager[Simulator]:
    """Answers each submit_sm after `ms` milliseconds."""
    return running(**{"answer_delay_ms": ms, **changes})


def early_receipts(**changes: Any) -> AbstractAsyncContextManager[Simulator]:
    """Sends each receipt before the submit_sm_resp of its message (Jasmin issue 472)."""
    return running(**{"receipt_before_response": True, **changes})


def mixed_ids(**changes: Any) -> AbstractAsyncContextManager[Simulator]:
    """message_id in hex in submit_sm_resp, in decimal in the receipt (Kannel's msg-id-type)."""
    return running(**{"id_format": "hex", "receipt_id_format": "decimal", **changes})
