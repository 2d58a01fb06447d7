"""How fast reports and listings are on a big store: seed a SQLite file, time the queries.

    python -m gateway.reports_bench [--messages 1000000] [--days 10] [--accounts 5]
                                    [--db FILE] [--keep]

Seeds N messages spread evenly over the last ``--days`` days (in created_at order, as
the gateway writes them), most of them to the first account, with the status mix of a
healthy gateway; then times, through the same functions the HTTP handlers call:
the summary for each group_by (the admin over the last day and over everything, one
account over the last day), a first and a deep listing page, a status-filtered page,
and a full-day CSV export. The schema comes from the migrations, indexes included.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.migrate import upgrade
from gateway.reports import (
    GROUP_BY,
    MessageFilter,
    SummaryQuery,
    csv_rows,
    list_messages,
    summary,
)
from gateway.store import create_engine
from gateway.store.tables import messages

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUSES = (
    ("delivered", 800),
    ("undelivered", 80),
    ("expired", 20),
    ("rejected", 10),
    ("failed", 20),
    ("submitted", 30),
    ("enroute", 20),
    ("accepted", 10),
    ("canceled", 5),
    ("scheduled", 5),
)
_LEFT = frozenset({"delivered", "undelivered", "expired", "rejected", "submitted", "enroute"})
_ROUTES = (("agg-a", 0.04), ("agg-b", 0.05), ("agg-c", 0.07))
_PREFIXES = ("3460", "3461", "4477", "1202", "4915", "35191", "7916", "3362")
_BATCH = 50_000


def _us(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def _rows(n: int, start_us: int, span_us: int, account_ids: list[int]) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(1)
    statuses = [s for s, weight in _STATUSES for _ in range(weight)]
    # Most traffic from one big account, the rest shared.
    weights = [0.6] + [0.4 / max(1, len(account_ids) - 1)] * (len(account_ids) - 1)
    owners = rnd.choices(account_ids, weights=weights, k=1000)
    step = span_us / n
    for i in range(n):
        created = start_us + int(i * step)
        status = statuses[i % len(statuses)] if i % 7 else rnd.choice(statuses)
        segments = 1 + (i % 10 == 0) + (i % 50 == 0)
        left = status in _LEFT
        route, price = _ROUTES[i % 3] if left or status == "failed" else (None, None)
        left_at = created + rnd.randrange(50_000, 2_000_000) if left else None
        delivered_at = (
            left_at + rnd.randrange(1_000_000, 120_000_000)
            if status == "delivered" and left_at is not None
            else None
        )
        yield (
            f"b{i:011d}",
            owners[i % 1000],
            "http",
            "ACME",
            f"+{_PREFIXES[i % len(_PREFIXES)]}{rnd.randrange(10**7):07d}",
            "bench message",
            "gsm7",
            0,
            segments,
            1,
            f"ref-{i}" if i % 4 == 0 else None,
            status,
            route,
            price * segments if price is not None and left else None,
            created,
            created,
            created + 1,
            left_at,
            left_at if status in ("delivered", "undelivered", "enroute") else None,
            delivered_at,
        )


_COLUMNS = (
    "id",
    "account_id",
    "interface",
    "source",
    "destination",
    "text",
    "encoding",
    "data_coding",
    "segments",
    "registered_delivery",
    "client_ref",
    "status",
    "route",
    "price",
    "due_at",
    "created_at",
    "updated_at",
    "left_infrastructure_at",
    "handed_to_carrier_at",
    "delivered_at",
)


def seed(path: Path, n: int, days: int, accounts: int, now: datetime) -> list[int]:
    """Create the schema and ``n`` messages; returns the account ids."""
    upgrade(f"sqlite+aiosqlite:///{path}")
    assert set(_COLUMNS) <= set(messages.c.keys())
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        at = _us(now)
        ids = []
        for k in range(accounts):
            cur = conn.execute(
                "INSERT INTO accounts (system_id, password_hash, api_key_hash, api_key_lookup,"
                " tps, routing, webhook_secret, created_at, updated_at)"
                " VALUES (?, 'x', 'x', ?, 100, 'balanced', 'x', ?, ?)",
                (f"bench{k}", f"lookup{k}", at, at),
            )
            ids.append(int(cur.lastrowid or 0))
        span = days * 86_400_000_000
        insert = (
            f"INSERT INTO messages ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
        )
        batch: list[tuple[Any, ...]] = []
        for row in _rows(n, at - span, span, ids):
            batch.append(row)
            if len(batch) >= _BATCH:
                conn.executemany(insert, batch)
                batch.clear()
        if batch:
            conn.executemany(insert, batch)
        conn.commit()
    finally:
        conn.close()
    return ids


async def _timed(
    label: str, run: Callable[[], Awaitable[Any]], describe: Callable[[Any], str]
) -> Any:
    started = time.perf_counter()
    result = await run()
    elapsed = time.perf_counter() - started
    print(f"  {label:<44} {elapsed * 1000:9.1f} ms   {describe(result)}")
    return result


async def measure(path: Path, account_ids: list[int], now: datetime) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    day = (now - timedelta(days=1), now)
    big = account_ids[0]
    try:

        def groups(body: dict[str, Any]) -> str:
            t = body["totals"]
            return (
                f"{t['total']} messages, {len(body['groups'])} groups, "
                f"ratio {t['delivery_ratio']}, median {t['delivery_time_s']['median']} s"
            )

        for scope, account, start in (
            ("admin, last 24 h", None, day[0]),
            ("admin, everything", None, datetime(2000, 1, 1, tzinfo=UTC)),
            ("largest account, last 24 h", big, day[0]),
        ):
            print(f"summary ({scope}):")
            for group_by in GROUP_BY:
                q = SummaryQuery(start, now, group_by, account)
                await _timed(f"group_by={group_by}", functools.partial(summary, engine, q), groups)

        print("listing (largest account):")
        f = MessageFilter(big)

        def page(result: tuple[list[dict[str, Any]], Any]) -> str:
            return f"{len(result[0])} messages"

        first, cursor = await _timed(
            "first page, limit 100", functools.partial(list_messages, engine, f, 100), page
        )
        for _ in range(50):  # walk down to a page 5000 messages deep
            _, cursor = await list_messages(engine, f, 100, cursor)
        await _timed(
            "page 51 (after 5000), limit 100",
            functools.partial(list_messages, engine, f, 100, cursor),
            page,
        )
        await _timed("limit 1000", functools.partial(list_messages, engine, f, 1000), page)
        undelivered = MessageFilter(big, ("undelivered",))
        await _timed(
            "status=undelivered, limit 100",
            functools.partial(list_messages, engine, undelivered, 100),
            page,
        )
        ref = next(m["client_ref"] for m in first if m["client_ref"] is not None)
        await _timed(
            f"client_ref={ref}",
            functools.partial(list_messages, engine, MessageFilter(big, client_ref=ref), 100),
            page,
        )

        async def export(flt: MessageFilter) -> tuple[int, int]:
            rows = size = 0
            async for chunk in csv_rows(engine, flt):
                size += len(chunk)
                rows += chunk.count(b"\r\n")
            return rows - 1, size

        def exported(result: tuple[int, int]) -> str:
            return f"{result[0]} rows, {result[1] / 1e6:.1f} MB"

        print("CSV export, last 24 h:")
        await _timed("largest account", lambda: export(MessageFilter(big, (), *day)), exported)
        await _timed(
            "admin (every account)", lambda: export(MessageFilter(None, (), *day)), exported
        )
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.reports_bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--accounts", type=int, default=5)
    parser.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary file")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.days < 1 or args.accounts < 1:
        parser.error("--messages, --days and --accounts must be positive")
    with tempfile.TemporaryDirectory(prefix="smsgw-reports-") as tmp:
        path: Path = args.db or Path(tmp) / "reports.db"
        if path.exists():
            parser.error(f"{path} exists; give a new file")
        now = datetime.now(UTC)
        started = time.perf_counter()
        ids = seed(path, args.messages, args.days, args.accounts, now)
        elapsed = time.perf_counter() - started
        print(
            f"seeded {args.messages} messages over {args.days} days, {args.accounts} accounts "
            f"in {elapsed:.1f} s ({path.stat().st_size / 1e6:.0f} MB)"
        )
        asyncio.run(measure(path, ids, now))
        if args.keep and args.db is None:
            kept = Path.cwd() / "reports-bench.db"
            path.rename(kept)
            print(f"kept {kept}")


if __name__ == "__main__":
    main()
