"""SQLite connection settings: every engine the store opens on a SQLite file (the async
readers, and the synchronous one the writer thread and writer process commit through)
uses WAL and syncs each commit, so an acknowledged message survives a power loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.store.engine import PG_CONNECT_TIMEOUT_S, create_engine, create_sync_sqlite_engine

# PRAGMA synchronous reads back as a number: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
FULL = 2


def _pragmas(conn: sa.Connection) -> tuple[str, int, int]:
    return (
        conn.exec_driver_sql("PRAGMA journal_mode").scalar_one(),
        conn.exec_driver_sql("PRAGMA synchronous").scalar_one(),
        conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one(),
    )


async def test_async_engine_syncs_every_commit(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_pragmas) == ("wal", FULL, 1)
    finally:
        await engine.dispose()


def test_sync_engine_of_the_writer_syncs_every_commit(tmp_path: Path) -> None:
    engine = create_sync_sqlite_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        with engine.connect() as conn:
            assert _pragmas(conn) == ("wal", FULL, 1)
    finally:
        engine.dispose()


def test_sqlite_needs_the_aiosqlite_driver(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aiosqlite"):
        create_engine(f"sqlite:///{tmp_path / 'x.db'}")


class _Captured(Exception):
    pass


async def test_postgres_connections_give_up_after_a_bounded_wait() -> None:
    engine = create_engine(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        connect_args={"server_settings": {"search_path": "x"}},
    )
    seen: dict[str, Any] = {}

    @sa.event.listens_for(engine.sync_engine, "do_connect")
    def capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)  # what asyncpg.connect would be given
        raise _Captured

    try:
        with pytest.raises(_Captured):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    assert seen["timeout"] == PG_CONNECT_TIMEOUT_S
    assert seen["server_settings"] == {"search_path": "x"}  # the caller's are kept
