"""python -m gateway.bench keeps working, on SQLite and on PostgreSQL (a small run,
not a measurement: nothing here looks at the figures)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from gateway import bench
from gateway.store.engine import create_engine
from tests.gateway.conftest import PG_DATABASE, PG_HOST, PG_PORT, _find_pg_user

# 401 over a window of 20: every message is sent, not 20 x 20.
SMALL = ["--messages", "401", "--window", "20", "--rate", "200", "--seconds", "0.5"]


def test_bench_on_sqlite(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(SMALL) == 0
    out = capsys.readouterr().out
    assert "upstreams: 1 (1 session(s) each); database: SQLite" in out
    assert "end to end: 401 messages with receipts" in out
    assert "0 refused" in out
    assert "PostgreSQL server" not in out
    assert "over 100 submits" in out


async def _bench_databases(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE 'smsgw_bench_%'")
            )
            return [name for (name,) in rows]
    finally:
        await engine.dispose()


@pytest.mark.postgres
def test_bench_on_postgres_leaves_no_database(capsys: pytest.CaptureFixture[str]) -> None:
    user = asyncio.run(_find_pg_user())
    url = f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"
    before = asyncio.run(_bench_databases(url))
    assert bench.main([*SMALL, "--postgres", url]) == 0
    out = capsys.readouterr().out
    assert "database: PostgreSQL" in out
    assert "end to end: 401 messages with receipts" in out
    assert "PostgreSQL server" in out
    assert asyncio.run(_bench_databases(url)) == before


def test_bench_refuses_a_url_that_is_not_postgres() -> None:
    with pytest.raises(SystemExit, match="postgresql"):
        bench.main([*SMALL, "--postgres", "sqlite+aiosqlite:///x.db"])


def test_bench_refuses_nothing_to_send(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--messages", "0"])
    assert "must be 1 or more" in capsys.readouterr().err


def test_bench_over_several_upstreams(capsys: pytest.CaptureFixture[str]) -> None:
    # Each upstream binds as a system_id of its own, so every receipt comes back.
    assert bench.main([*SMALL, "--upstreams", "3"]) == 0
    out = capsys.readouterr().out
    assert "upstreams: 3" in out
    assert "end to end: 401 messages with receipts" in out
