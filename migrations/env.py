"""Alembic environment: async engines, target metadata from gateway.store.tables.

Run through ``gateway.migrate`` (``smsgw db upgrade``), which passes the URL and engine
options in ``config.attributes``; the plain ``alembic`` command works too when
``sqlalchemy.url`` is set (``alembic -x url=sqlite+aiosqlite:///smsgw.db upgrade head``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from gateway.store.engine import create_engine
from gateway.store.tables import UtcTimestamp, metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: use `smsgw db upgrade` or `alembic -x url=...`")
    return str(url)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations must not import application code: UtcTimestamp is a BIGINT on disk.
    if type_ == "type" and isinstance(obj, UtcTimestamp):
        return "sa.BigInteger()"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        render_item=render_item,
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs by table copy
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    options: dict[str, Any] = dict(config.attributes.get("engine_options") or {})
    engine = create_engine(_url(), **options)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)  # a caller (tests, autogenerate check) lends its connection
    else:
        asyncio.run(_run_async())
