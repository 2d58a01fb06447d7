"""Databases for the gateway tests: a SQLite file per test, and a PostgreSQL schema per test.

PostgreSQL runs at 127.0.0.1:5432, database ``test``, user ``postgres`` or ``root``. It
is required when CI=true; otherwise its tests are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.migrate import upgrade_async
from gateway.store import Store

PG_HOST, PG_PORT, PG_DATABASE = "127.0.0.1", 5432, "test"
PG_USERS = ("postgres", "root")

_pg_user: str | None = None
_pg_problem: str | None = None


@dataclass(frozen=True)
class Database:
    """A database a test may use: ``url`` plus the engine options that isolate it."""

    kind: str
    url: str
    engine_options: dict[str, Any] = field(default_factory=dict)


async def _find_pg_user() -> str:
    global _pg_user, _pg_problem
    if _pg_user is not None:
        return _pg_user
    if _pg_problem is None:
        problems = []
        for user in PG_USERS:
            try:
                conn = await asyncpg.connect(
                    host=PG_HOST, port=PG_PORT, user=user, database=PG_DATABASE, timeout=3
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                problems.append(f"{user}: {exc}")
                continue
            await conn.close()
            _pg_user = user
            return user
        _pg_problem = (
            f"PostgreSQL at {PG_HOST}:{PG_PORT}/{PG_DATABASE} unreachable ({'; '.join(problems)})"
        )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{_pg_problem} and CI=true requires it")
    print(f"skipping: {_pg_problem}")
    pytest.skip(_pg_problem)


async def _pg_schema() -> tuple[str, str]:
    """Create a schema of its own for one test; returns (user, schema)."""
    user = await _find_pg_user()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=PG_DATABASE)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return user, schema


async def _drop_pg_schema(user: str, schema: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=PG_DATABASE)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database, SQLite or PostgreSQL per the ``param``."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'smsgw.db'}")
        return
    user, schema = await _pg_schema()
    try:
        yield Database(
            "postgres",
            f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}",
            {"connect_args": {"server_settings": {"search_path": schema}}},
        )
    finally:
        await _drop_pg_schema(user, schema)


BOTH = pytest.mark.parametrize(
    "empty_db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
async def db(empty_db: Database) -> Database:
    """A migrated database."""
    await upgrade_async(empty_db.url, engine_options=empty_db.engine_options)
    return empty_db


@pytest.fixture
async def store(db: Database) -> AsyncIterator[Store]:
    s = await Store.open_url(db.url, commit_window_ms=2.0, engine_options=db.engine_options)
    try:
        yield s
    finally:
        await s.close()
