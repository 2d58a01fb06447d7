"""Planner statistics for a young PostgreSQL database.

PostgreSQL plans the writer's lookups (messages and parts by id, parts by upstream
message id) from the tables' statistics. A new database has none until autovacuum
first analyzes it, up to a minute later and after 10% of a table has changed; until
then the planner takes the tables for a few pages and scans them whole, and the
prepared statements the writer uses every batch keep that plan. Under a first
campaign that made every batch read the whole parts table: 1.6 ms of server CPU per
message at 20,000 messages, growing with the table (``gateway.bench --postgres``).

So the writer analyzes the hot tables itself while they are young: after the first
1,000 writes, then each time the writes since have doubled, and no more once they
pass 1,000,000 (autovacuum's scale factor keeps big tables fresh). ANALYZE samples
at most 30,000 rows a table, so each one is bounded; there are about ten in all,
each on a connection of its own beside the writer's. An ANALYZE also invalidates
the plans prepared before it.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# The tables the hot paths read by key; events are only appended.
HOT_TABLES = (
    "messages",
    "parts",
    "smpp_receipts",
    "unmatched_receipts",
    "webhook_deliveries",
    "mqtt_outbox",
)
FIRST_AFTER = 1_000
LAST_BELOW = 1_000_000


class YoungTables:
    """When the writer should analyze the hot tables (PostgreSQL only)."""

    def __init__(self, first_after: int = FIRST_AFTER, last_below: int = LAST_BELOW) -> None:
        self._last_below = last_below
        self._next = first_after
        self._written = 0
        self._known = False  # the messages table's size is read on the first analyze

    @property
    def done(self) -> bool:
        return self._next >= self._last_below

    def note(self, writes: int) -> bool:
        """Count committed writes; true when an analyze is due."""
        if self.done:
            return False
        self._written += writes
        return self._written >= self._next

    async def analyze(self, engine: AsyncEngine) -> None:
        """ANALYZE the hot tables, on a connection of its own: ANALYZE takes a lock
        that writes do not wait for, so the writer goes on committing meanwhile (on
        the writer's connection it held every commit up for 140 ms at 70,000 writes)."""
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if not self._known:
                # A restarted gateway on a table that is already big leaves it to
                # autovacuum.
                self._known = True
                rows = (
                    await conn.exec_driver_sql(
                        "SELECT reltuples FROM pg_class WHERE oid = 'messages'::regclass"
                    )
                ).scalar_one()
                if rows >= self._last_below:
                    self._next = self._last_below
                    return
            started = time.perf_counter()
            await conn.exec_driver_sql(f"ANALYZE {', '.join(HOT_TABLES)}")
        log.info(
            "analyzed the hot tables after %d writes in %.0f ms",
            self._written,
            (time.perf_counter() - started) * 1000,
        )
        self._next = 2 * max(self._written, self._next)
