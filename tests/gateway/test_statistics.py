"""The writer analyzes a young PostgreSQL database's hot tables itself, so the
planner has statistics before autovacuum first comes round (gateway/store/statistics.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import Store
from gateway.store.engine import create_engine
from gateway.store.statistics import FIRST_AFTER, HOT_TABLES, YoungTables
from tests.gateway.conftest import Database
from tests.gateway.test_store import _account, _message

pytestmark = pytest.mark.parametrize(
    "empty_db", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
async def engine(db: Database) -> AsyncIterator[AsyncEngine]:
    e = create_engine(db.url, **db.engine_options)
    try:
        yield e
    finally:
        await e.dispose()


async def _analyzed(engine: AsyncEngine) -> dict[str, bool]:
    """Which of this test's tables (its own schema) have been analyzed by hand."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
                "WHERE schemaname = current_schema()"
            )
        )
        return {name: analyzed for name, analyzed in rows}


async def test_young_tables_schedule(engine: AsyncEngine) -> None:
    young = YoungTables(first_after=5, last_below=40)
    assert not young.note(4)
    assert young.note(1)
    await young.analyze(engine)
    analyzed = await _analyzed(engine)
    assert all(analyzed[t] for t in HOT_TABLES), analyzed
    assert not analyzed["events"]
    # Next after the writes since have doubled: 10 in all.
    assert not young.note(4)
    assert young.note(1)
    await young.analyze(engine)
    assert not young.note(9) and young.note(1)  # 20
    await young.analyze(engine)
    assert young.done  # 40 is where autovacuum takes over
    assert not young.note(1_000)


async def test_a_table_already_big_is_left_to_autovacuum(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        # What pg_class says after autovacuum analyzed a table of two million rows.
        await conn.execute(
            sa.text("UPDATE pg_class SET reltuples = 2000000 WHERE oid = 'messages'::regclass")
        )
    young = YoungTables(first_after=1)
    assert young.note(1)
    await young.analyze(engine)
    assert young.done
    assert not any((await _analyzed(engine)).values())


async def test_the_writer_analyzes_after_the_first_writes(
    db: Database, engine: AsyncEngine
) -> None:
    store = await Store.open_url(db.url, engine_options=db.engine_options)
    try:
        account_id = await _account(store)
        messages = [_message(account_id) for _ in range(FIRST_AFTER + 50)]
        await asyncio.gather(*(store.accept(m) for m in messages[: FIRST_AFTER - 10]))
        assert not any((await _analyzed(engine)).values())
        await asyncio.gather(*(store.accept(m) for m in messages[FIRST_AFTER - 10 :]))
        # The analyze runs beside the commits that follow (the writer process's
        # loop runs while it commits): it ends while writes go on.
        async with asyncio.timeout(10):
            while not (analyzed := await _analyzed(engine))["parts"]:
                await store.accept(_message(account_id))
                await asyncio.sleep(0.02)
        assert analyzed["messages"], analyzed
    finally:
        await store.close()
