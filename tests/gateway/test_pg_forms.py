"""The PostgreSQL fast path of the writer (gateway/store/ops.py: arrays through
asyncpg) refuses what the columns refuse, as SQLAlchemy Core's statements do, and
looks up exactly the ids it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import Store, ops
from gateway.store.tables import messages, parts
from tests.gateway.conftest import Database

pytestmark = pytest.mark.parametrize(
    "empty_db", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

T = 1_700_000_000_000_000  # a UtcTimestamp in database form


@pytest.fixture
async def engine(db: Database) -> AsyncIterator[AsyncEngine]:
    store = await Store.open_url(db.url, engine_options=db.engine_options, writer="thread")
    try:
        created = await store.create_account("acme", "secret-pw")
        assert created.account.id == 1
        yield store.engine
    finally:
        await store.close()


def _message_row(message_id: str, destination: str) -> tuple[object, ...]:
    return (
        *(message_id, 1, "http", "ACME", destination, "hello", "gsm7", 0, 1, 0, None, None),
        *("accepted", None, None, T, 0, T, T),
    )


async def test_a_value_too_long_for_its_column_is_refused_not_cut(engine: AsyncEngine) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="too long"):
        async with engine.begin() as conn:
            await ops._insert(
                conn, messages, ops._MESSAGE_INSERTED, [_message_row("m1", "+3" + "4" * 30)]
            )
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(messages))).scalar() == 0


async def test_a_lookup_finds_only_the_exact_id(engine: AsyncEngine) -> None:
    stored = "9" * 65  # upstream_message_id is VARCHAR(65), SMPP's C-Octet 65
    async with engine.begin() as conn:
        await ops._insert(conn, messages, ops._MESSAGE_INSERTED, [_message_row("m1", "+34600")])
        await conn.execute(
            parts.insert(),
            {
                "message_id": "m1",
                "seqnum": 1,
                "upstream": "sim",
                "upstream_message_id": stored,
                "status": "submitted",
                "updated_at": ops._python_time(T),
            },
        )
    async with engine.connect() as conn:
        columns = ("message_id", "seqnum")
        found = await ops._select(conn, parts, columns, "upstream_message_id", [stored + "1"])
        assert list(found) == []
        found = await ops._select(conn, parts, columns, "upstream_message_id", [stored])
        assert [tuple(r) for r in found] == [("m1", 1)]
