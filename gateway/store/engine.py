"""Engine factory: SQLite through aiosqlite (WAL), PostgreSQL through asyncpg."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["create_engine", "create_sync_sqlite_engine", "is_sqlite"]

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 10.0


def is_sqlite(url: str | sa.URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    SQLite connections get ``journal_mode=WAL`` (readers never block the writer),
    ``synchronous=FULL`` (the WAL is synced at every commit, so a commit survives a
    power loss too, not only a crash of the process; with the group commit that is
    one fsync per batch, not per message), ``busy_timeout`` and
    ``foreign_keys=ON``. Transactions are started with an explicit ``BEGIN`` instead of
    pysqlite's implicit one, so DDL is transactional (Alembic) and SAVEPOINT works;
    a connection with execution option ``sqlite_begin="IMMEDIATE"`` takes the write
    lock at BEGIN, which the group committer uses to never fail on a lock upgrade.
    """
    sa_url = make_url(url)
    # Errors must not carry the statement's parameters (message texts, numbers)
    # into logs.
    kwargs.setdefault("hide_parameters", True)
    if sa_url.get_backend_name() == "sqlite":
        if sa_url.get_driver_name() != "aiosqlite":
            raise ValueError(f"SQLite needs the aiosqlite driver: {sa_url.render_as_string()}")
        engine = create_async_engine(sa_url, **kwargs)
        _configure_sqlite(engine)
        return engine
    if sa_url.get_backend_name() == "postgresql":
        if sa_url.get_driver_name() != "asyncpg":
            raise ValueError(f"PostgreSQL needs the asyncpg driver: {sa_url.render_as_string()}")
        kwargs.setdefault("pool_pre_ping", True)
        # asyncpg waits 60 s for a connection by default; a database host that is
        # unreachable would hold the writer (and every accept behind it) that long.
        connect_args = dict(kwargs.get("connect_args") or {})
        connect_args.setdefault("timeout", PG_CONNECT_TIMEOUT_S)
        kwargs["connect_args"] = connect_args
        return create_async_engine(sa_url, **kwargs)
    raise ValueError(f"unsupported database: {sa_url.get_backend_name()}")


def create_sync_sqlite_engine(url: str, **kwargs: Any) -> sa.Engine:
    """A synchronous engine (the stdlib sqlite3 driver) on the same SQLite file.

    For the group committer's writer thread: there each statement is a plain call
    instead of a hand-over to aiosqlite's thread and back, which under load costs
    more than the statement. Configured like `create_engine`'s SQLite engines.
    """
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        raise ValueError(f"not a SQLite URL: {sa_url.render_as_string()}")
    kwargs.setdefault("hide_parameters", True)
    engine = sa.create_engine(sa_url.set(drivername="sqlite"), **kwargs)
    _configure_sqlite_sync(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    _configure_sqlite_sync(engine.sync_engine)


def _configure_sqlite_sync(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below (SQLAlchemy's documented
        # recipe for pysqlite/aiosqlite).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
