"""SQLite connection settings: every engine the store opens on a SQLite file (the async
readers, and the synchronous one the writer thread and writer process commit through)
uses WAL and syncs each commit, so an acknowledged message survives a power loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.store.engine import create_engine, create_sync_sqlite_engine

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
