"""Apply the Alembic migrations in ``migrations/`` to a database, programmatically."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

__all__ = ["alembic_config", "current_revision", "migrations_dir", "upgrade", "upgrade_async"]


def migrations_dir() -> Path:
    """The directory of the installed ``migrations`` package (next to ``gateway``)."""
    import migrations

    # __path__, not __file__: an editable install may present it as a namespace package.
    for entry in migrations.__path__:
        if (Path(entry) / "env.py").is_file():
            return Path(entry)
    raise RuntimeError("the migrations package has no env.py: broken installation")


def alembic_config(url: str, engine_options: Mapping[str, Any] | None = None) -> Config:
    """An Alembic Config for ``url`` whose scripts are the installed ``migrations`` package.

    ``engine_options`` go to ``gateway.store.create_engine`` (tests use them to put the
    tables in a PostgreSQL schema of their own)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url
    cfg.attributes["engine_options"] = dict(engine_options or {})
    return cfg


def upgrade(
    url: str, revision: str = "head", engine_options: Mapping[str, Any] | None = None
) -> None:
    """Bring the database at ``url`` to ``revision``. Blocking: it runs its own event
    loop, so call it from a thread (``upgrade_async``) when a loop is running."""
    command.upgrade(alembic_config(url, engine_options), revision)


async def upgrade_async(
    url: str, revision: str = "head", engine_options: Mapping[str, Any] | None = None
) -> None:
    await asyncio.to_thread(upgrade, url, revision, engine_options)


def current_revision(url: str, engine_options: Mapping[str, Any] | None = None) -> str | None:
    """The revision the database is at, None before the first migration."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.engine import Connection

    from gateway.store.engine import create_engine

    async def run() -> str | None:
        engine = create_engine(url, **dict(engine_options or {}))
        try:
            async with engine.connect() as conn:

                def read(sync_conn: Connection) -> str | None:
                    return MigrationContext.configure(sync_conn).get_current_revision()

                return await conn.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())
