"""What the group committer stores is the same whichever way the writes run.

On SQLite the writer goes straight to the sqlite3 driver with values it puts in
database form itself (gateway/store/ops.py); the SQLAlchemy Core statements are the
reference for those forms, and they are what runs on PostgreSQL. One scenario that
goes through every hot write (multi-part messages, callbacks, receipts before their
submit_sm_resp, hex/decimal receipt ids, late and repeated updates, the MQTT outbox,
an illegal transition in a batch) runs both ways: the rows stored, byte for byte, and
the results handed back must be equal.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.ids import upstream_id_forms
from gateway.lifecycle import Status
from gateway.migrate import upgrade_async
from gateway.store import (
    AcceptMessage,
    ApplyReceipt,
    CancelMessage,
    DeferMessage,
    GroupCommitter,
    MarkSmppReceiptsSent,
    NewMessage,
    PartUpdate,
    RecordAttempt,
    Store,
    TransitionMessage,
    WebhookAttempt,
    WriteOp,
    create_engine,
    ops,
)
from gateway.store.ops import EnableMqttOutbox, MarkMqttPublished
from gateway.store.tables import metadata
from tests.gateway.conftest import Database

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _id(n: int) -> str:
    return f"{0x18F3A2B4C5D:012x}{n:020x}"


def _message(n: int, account_id: int, **kw: Any) -> NewMessage:
    values: dict[str, Any] = {
        "id": _id(n),
        "account_id": account_id,
        "interface": "http",
        "source": "ACME",
        "destination": f"+3460012{n:04d}",
        "text": f"hello {n} ünïcode",
        "encoding": "gsm7",
        "data_coding": 0,
        "segments": 1,
        "created_at": _at(0),
    }
    values.update(kw)
    return NewMessage(**values)


def _outcome(result: object) -> object:
    if isinstance(result, BaseException):
        return (type(result).__name__, str(result))
    return result


async def _batch(store: Store, ops: Sequence[WriteOp[Any]]) -> list[object]:
    """Submit together, so that they share batches as under load."""
    results = await asyncio.gather(*(store.write(op) for op in ops), return_exceptions=True)
    return [_outcome(r) for r in results]


async def scenario(store: Store) -> list[object]:
    """Every kind of hot write; returns what each write answered."""
    hooked = (await store.create_account("hooked", "pw", callback_url="https://h.example/")).account
    plain = (await store.create_account("plain", "pw")).account
    h, p = hooked.id, plain.id
    out: list[object] = []
    out += await _batch(
        store,
        [
            AcceptMessage(_message(1, p, interface="smpp", registered_delivery=1)),
            AcceptMessage(_message(2, h, segments=3, client_ref="ref-2")),
            AcceptMessage(_message(3, h, send_at=_at(3600), valid_until=_at(7200))),
            AcceptMessage(_message(4, p), "key-1", '{"id": "first"}'),
            AcceptMessage(_message(40, p), "key-1", "replayed"),
            AcceptMessage(_message(5, p, interface="smpp", registered_delivery=0x11)),
            AcceptMessage(_message(6, p, interface="smpp", registered_delivery=2, segments=2)),
            AcceptMessage(_message(7, p)),
            AcceptMessage(
                _message(
                    8,
                    h,
                    interface="smpp",
                    registered_delivery=1,
                    callback_url="https://own.example/cb",
                )
            ),
            AcceptMessage(_message(9, p, interface="smpp", registered_delivery=1)),
            AcceptMessage(_message(11, p, interface="smpp", registered_delivery=1, segments=2)),
        ],
    )
    out += await _batch(store, [EnableMqttOutbox()])
    out += await _batch(
        store,
        [
            AcceptMessage(_message(10, h, interface="smpp", registered_delivery=1)),
            AcceptMessage(_message(12, p), "key-2"),
        ],
    )
    # Receipts that come before their submit_sm_resp, and one that never matches.
    out += await _batch(
        store,
        [
            ApplyReceipt("up-b", "FF", Status.DELIVERED, _at(5), detail={"stat": "DELIVRD"}),
            ApplyReceipt("up-b", "nope", Status.DELIVERED, _at(5), received_at=_at(6)),
            ApplyReceipt("up-a", "1101", Status.ENROUTE, _at(1.5), error=None),
        ],
    )
    choice = {"price": 0.01, "policy": "balanced", "score": 0.5, "reason": "r", "explored": False}
    out += await _batch(
        store,
        [
            PartUpdate(_id(1), 1, Status.SUBMITTED, _at(1), "up-a", "1001", 0.01, detail=choice),
            PartUpdate(_id(2), 2, Status.SUBMITTED, _at(1), "up-a", "2002", 0.02),
            PartUpdate(_id(2), 1, Status.SUBMITTED, _at(1.25), "up-b", "2001", 0.03),
            PartUpdate(_id(5), 1, Status.SUBMITTED, _at(1), "up-a", "5001", 0.04),
            PartUpdate(_id(6), 1, Status.SUBMITTED, _at(1), "up-b", "255", 0.05),
            PartUpdate(_id(6), 2, Status.SUBMITTED, _at(1), "up-b", "256", 0.05),
            PartUpdate(_id(8), 1, Status.SUBMITTED, _at(1), "up-a", "8001", None),
            PartUpdate(
                _id(9), 1, Status.REJECTED, _at(1), "up-a", error="ESME_RINVDSTADR (0x0000000B)"
            ),
            PartUpdate(_id(10), 1, Status.SUBMITTED, _at(1), "up-a", "A0"),
            PartUpdate(_id(11), 1, Status.SUBMITTED, _at(1), "up-a", "1101", 1.5),
            PartUpdate(_id(11), 2, Status.SUBMITTED, _at(1.1), "up-a", "1102", 2),
            TransitionMessage(_id(3), Status.ACCEPTED, _at(1), {"why": "now"}),
            CancelMessage(p, _id(7), _at(1), {"by": "api"}),
            CancelMessage(h, _id(7), _at(1)),
        ],
    )
    out += await _batch(
        store,
        [
            ApplyReceipt(
                "up-a",
                "1001",
                Status.DELIVERED,
                _at(3),
                detail={"stat": "DELIVRD", "upstream_message_id": "1001"},
            ),
            ApplyReceipt("up-a", "5001", Status.ENROUTE, _at(2)),
            ApplyReceipt("up-a", "2002", Status.DELIVERED, _at(3)),
            ApplyReceipt(
                "up-b",
                "2001",
                Status.UNDELIVERED,
                _at(4),
                error="err:001",
                detail={"network_error_code": "030001"},
            ),
            ApplyReceipt("up-a", "1F41", Status.DELIVERED, _at(3)),  # hex of 8001
            ApplyReceipt("up-b", "256", Status.UNDELIVERED, _at(4), error="err:002"),
            ApplyReceipt("up-a", "  0a0 ", Status.ENROUTE, _at(3)),
            ApplyReceipt("up-a", "1102", Status.EXPIRED, _at(9), error="err:003"),
            ApplyReceipt("up-a", "unknown", Status.DELIVERED, _at(3)),
        ],
    )
    out += await _batch(
        store,
        [
            ApplyReceipt("up-a", "5001", Status.DELIVERED, _at(6), detail={"n": [1, 2]}),
            ApplyReceipt("up-a", "1001", Status.DELIVERED, _at(7)),  # repeated: ignored
            PartUpdate(_id(1), 1, Status.SUBMITTED, _at(8), "up-a", "1001"),  # late
            TransitionMessage(_id(4), Status.FAILED, _at(2), {"tried": 3}, error="no route (x)"),
            TransitionMessage(_id(10), Status.CANCELED, _at(2)),  # illegal: fails alone
            TransitionMessage(_id(12), Status.SCHEDULED, _at(2), account_id=p),
            RecordAttempt(_id(12), _at(2.5), {"route": "up-a", "reason": "throttled"}),
            DeferMessage(_id(3), _at(60), _at(2), error="0x00000058"),
        ],
    )
    receipts = await store.pending_smpp_receipts(p, not_before=_at(-60))
    receipts += await store.pending_smpp_receipts(h, not_before=_at(-60))
    ids = sorted(r.id for r in receipts)
    hooks = await store.due_webhooks(_at(3600))
    out.append((ids, [w.id for w in hooks]))
    out += await _batch(
        store,
        [
            MarkSmppReceiptsSent(tuple(ids[:3]), _at(10)),
            MarkSmppReceiptsSent(tuple(ids[3:]), _at(11)),
            WebhookAttempt(hooks[0].id, _at(10), delivered=True),
            WebhookAttempt(hooks[1].id, _at(10), False, "500", _at(70)),
            MarkMqttPublished(3, _at(12)),
        ],
    )
    return out


def _raw_dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row exactly as SQLite has it (values and their storage class)."""
    conn = sqlite3.connect(path)
    try:
        dump = {}
        for table in metadata.sorted_tables:
            if table.name == "accounts":
                sql = "SELECT id, system_id, callback_url FROM accounts ORDER BY id"
            else:
                keys = ", ".join(c.name for c in table.primary_key.columns)
                sql = f"SELECT *, {_typeofs(table)} FROM {table.name} ORDER BY {keys}"
            dump[table.name] = conn.execute(sql).fetchall()
        return dump
    finally:
        conn.close()


def _typeofs(table: sa.Table) -> str:
    return ", ".join(f"typeof({c.name})" for c in table.c)


async def _core_dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row as the column types read it back (any database)."""
    engine = create_engine(db.url, **db.engine_options)
    try:
        dump = {}
        async with engine.connect() as conn:
            for table in metadata.sorted_tables:
                columns = (
                    [table.c.id, table.c.system_id, table.c.callback_url]
                    if table.name == "accounts"
                    else list(table.c)
                )
                rows = await conn.execute(sa.select(*columns).order_by(*table.primary_key.columns))
                dump[table.name] = [tuple(r) for r in rows]
        return dump
    finally:
        await engine.dispose()


async def _run(db: Database, *, core: bool) -> list[object]:
    """The scenario on a migrated database, on the committer's SQLite fast path or
    (``core``) through SQLAlchemy Core on a writer thread, as on PostgreSQL."""
    await upgrade_async(db.url, engine_options=db.engine_options)
    if not core:
        store = await Store.open_url(db.url, engine_options=db.engine_options)
    else:
        engine = create_engine(db.url, **db.engine_options)
        committer = GroupCommitter(
            engine, writer_engine=lambda: create_engine(db.url, **db.engine_options)
        )
        await committer.start()
        store = Store(engine, committer)
    try:
        return await scenario(store)
    finally:
        await store.close()


def _sqlite(path: Path) -> Database:
    return Database("sqlite", f"sqlite+aiosqlite:///{path}")


async def test_fast_path_stores_what_core_stores(tmp_path: Path) -> None:
    fast, core = _sqlite(tmp_path / "fast.db"), _sqlite(tmp_path / "core.db")
    fast_results = await _run(fast, core=False)
    core_results = await _run(core, core=True)
    assert fast_results == core_results
    fast_rows, core_rows = _raw_dump(tmp_path / "fast.db"), _raw_dump(tmp_path / "core.db")
    for table in fast_rows:
        assert fast_rows[table] == core_rows[table], table
    # The scenario reaches what it is meant to.
    assert len(fast_rows["unmatched_receipts"]) == 2
    assert len(fast_rows["mqtt_outbox"]) > 5
    assert len(fast_rows["webhook_deliveries"]) > 5
    assert len(fast_rows["smpp_receipts"]) > 5
    assert any("IllegalTransition" in str(r) for r in fast_results)


@pytest.mark.postgres
@pytest.mark.parametrize("empty_db", ["postgres"], indirect=True)
async def test_postgres_stores_what_sqlite_stores(empty_db: Database, tmp_path: Path) -> None:
    lite = _sqlite(tmp_path / "lite.db")
    assert await _run(empty_db, core=True) == await _run(lite, core=False)
    pg_rows, lite_rows = await _core_dump(empty_db), await _core_dump(lite)
    # SQLite hands out the id of a deleted last row again (no AUTOINCREMENT), a
    # sequence does not: the receipts applied late leave different gaps.
    for rows in (pg_rows, lite_rows):
        rows["unmatched_receipts"] = [r[1:] for r in rows["unmatched_receipts"]]
    for table in lite_rows:
        assert pg_rows[table] == lite_rows[table], table


@pytest.mark.parametrize("upstream_id", ["6699", " 0a0 ", "00FF", "abc-DEF", "", "  ", "0"])
def test_exact_form_is_the_first_spelling(upstream_id: str) -> None:
    # ApplyReceipt looks the exact form up before working out the other spellings.
    assert ops._exact_form(upstream_id) == upstream_id_forms(upstream_id)[0]


@pytest.mark.parametrize(
    "value",
    [
        {"interface": "smpp"},
        {"route": "up-a", "upstream_message_id": "1F41", "seqnum": 2, "error": None},
        {"price": 0.0042, "score": 1e-7, "big": 10**20, "explored": False, "ok": True},
        {"text": 'ünïcode \u20ac \U0001f600 "quoted" \\ \n\t', "ctl": "\x00\x1f"},
        {"nested": {"list": [1, 2.5, None, "x"], "empty": {}}, "status": Status.DELIVERED},
        {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")},
        {7: "int key", 2.5: "float key", True: "bool key", None: "none key"},
        {},
    ],
)
def test_json_text_is_json_dumps(value: dict[Any, Any]) -> None:
    assert ops._json_text(value) == json.dumps(value)
