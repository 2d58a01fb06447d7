"""Handing one Future's outcome on to another, for the hot paths that answer from
done callbacks instead of tasks (submit_sm, receipts)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["pass_failure"]


def pass_failure(done: asyncio.Future[Any], out: asyncio.Future[Any]) -> bool:
    """Hand `done`'s cancellation or exception on to `out` (unless `out` is done
    already); True when there was one, False when `done` has a result."""
    if done.cancelled():
        out.cancel()
        return True
    exc = done.exception()
    if exc is None:
        return False
    if not out.done():
        out.set_exception(exc)
    return True
