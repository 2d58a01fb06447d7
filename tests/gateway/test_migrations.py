from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from gateway.migrate import alembic_config, upgrade_async
from gateway.store import create_engine, metadata
from tests.gateway.conftest import BOTH, Database

pytestmark = BOTH


async def _inspect(db: Database) -> tuple[list[Any], set[str], str | None]:
    engine = create_engine(db.url, **db.engine_options)
    try:
        async with engine.connect() as conn:

            def run(sync_conn: sa.Connection) -> tuple[list[Any], set[str], str | None]:
                ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                diff = compare_metadata(ctx, metadata)
                tables = set(sa.inspect(sync_conn).get_table_names())
                return diff, tables, ctx.get_current_revision()

            return await conn.run_sync(run)
    finally:
        await engine.dispose()


async def test_upgrade_fresh_database(empty_db: Database) -> None:
    await upgrade_async(empty_db.url, engine_options=empty_db.engine_options)
    _, tables, revision = await _inspect(empty_db)
    assert set(metadata.tables) <= tables
    head = ScriptDirectory.from_config(alembic_config(empty_db.url)).get_current_head()
    assert revision == head
    # a second upgrade is a no-op
    await upgrade_async(empty_db.url, engine_options=empty_db.engine_options)


async def test_autogenerate_finds_no_difference(db: Database) -> None:
    diff, _, _ = await _inspect(db)
    assert diff == []


async def test_downgrade_to_base(db: Database) -> None:
    import asyncio

    cfg = alembic_config(db.url, db.engine_options)
    await asyncio.to_thread(command.downgrade, cfg, "base")
    _, tables, revision = await _inspect(db)
    assert revision is None
    assert not set(metadata.tables) & tables
