"""The write operations of the store, each batched by the GroupCommitter.

Each operation is a frozen dataclass; ``Store.write(op)`` (or a Store shortcut) submits
it and returns its result once the batch has committed. Status changes go through
``gateway.lifecycle`` only; every applied change writes an event, and, in the same
transaction, a webhook delivery (when the message has a callback URL) and an SMPP
receipt (when the ESME asked for one): outboxes that survive a restart. While MQTT
is enabled on the store (``EnableMqttOutbox``), every event also gets an mqtt_outbox row.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway import lifecycle
from gateway.frozen import record
from gateway.ids import upstream_id_forms
from gateway.lifecycle import PartState, Status
from gateway.store.committer import WriteOp, _SyncConnection
from gateway.store.records import (
    AcceptResult,
    CancelOutcome,
    NewMessage,
    ReceiptResult,
    StatusChange,
    format_time,
)
from gateway.store.tables import (
    accounts,
    events,
    idempotency_keys,
    messages,
    mqtt_outbox,
    parts,
    smpp_receipts,
    unmatched_receipts,
    webhook_deliveries,
)

__all__ = [
    "AcceptMessage",
    "ApplyReceipt",
    "CancelMessage",
    "DeferMessage",
    "EnableMqttOutbox",
    "MarkMqttPublished",
    "MarkSmppReceiptsSent",
    "PartUpdate",
    "TransitionMessage",
    "WebhookAttempt",
]

T = TypeVar("T")

_CHUNK = 400  # keeps IN lists well below SQLite's bound-parameter limit


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------- rows in the connection's forms
#
# On SQLite the group committer's connection is a plain sqlite3 one (see
# committer._SyncConnection). There the hot statements skip SQLAlchemy, whose
# per-row parameter processing cost more than SQLite's own work: the operations
# build each row as a tuple already in database form, the forms the column types
# write (UtcTimestamp -> integer microseconds, JSON -> its json.dumps text), and
# hand the rows to the driver's executemany. PostgreSQL's columns are the same
# (BIGINT microseconds, JSON text), so there the same tuples go to asyncpg through
# exec_driver_sql, inside SQLAlchemy's transaction: inserts as one statement over
# arrays (unnest), lookups with = ANY(array). Only SQLite through aiosqlite (the
# reference that tests/gateway/test_store_forms.py holds the forms to) gets Python
# values, which become the Core statements' parameters.


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _db_time(at: datetime) -> int:
    """A UtcTimestamp as SQLite stores it (tables.UtcTimestamp.process_bind_param)."""
    return (at - _EPOCH) // _MICROSECOND


def _db_time_or_none(at: datetime | None) -> int | None:
    return None if at is None else (at - _EPOCH) // _MICROSECOND


def _python_time(value: int | None) -> datetime | None:
    """A UtcTimestamp read straight from SQLite (tables.UtcTimestamp.process_result_value)."""
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _as_is(value: T) -> T:
    return value


# json.dumps(value) with its defaults, which is what sa.JSON writes, without the
# encoder json.dumps builds on every call: per event that was a third of the cost.
# The C encoder json.dumps itself uses, minus the check for circular references
# (details are small dicts of plain values).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _encode_json = _c_make_encoder(
        None,
        json.JSONEncoder().default,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )

    def _json_text(value: Any) -> str:
        return "".join(_encode_json(value, 0))

else:  # pragma: no cover - CPython has the C encoder

    def _json_text(value: Any) -> str:
        return json.dumps(value)


# json.dumps(value, separators=(",", ":"), sort_keys=True): webhook bodies and
# MQTT payloads. One encoder for every call (it keeps no state between calls).
_compact_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


@record
class _Forms:
    """How values go into the statements of one connection (see above)."""

    # The writer's sqlite3 connection, or any PostgreSQL one: tuples straight to the
    # driver (sqlite3, or asyncpg through exec_driver_sql), no SQLAlchemy types.
    raw: bool
    time: Callable[[datetime], Any]
    time_or_none: Callable[[datetime | None], Any]
    read_time: Callable[[Any], datetime | None]  # a selected UtcTimestamp, as a datetime
    json: Callable[[Any], Any]
    read_json: Callable[[Any], Any]  # a selected JSON column, as Python values

    @staticmethod
    def of(conn: AsyncConnection) -> _Forms:
        if isinstance(conn, _SyncConnection):
            return _RAW
        return _PG_RAW if _on_postgres(conn) else _CORE


_RAW = _Forms(True, _db_time, _db_time_or_none, _python_time, _json_text, json.loads)
# SQLAlchemy gives asyncpg a json codec that takes the text and reads back the value.
_PG_RAW = _Forms(True, _db_time, _db_time_or_none, _python_time, _json_text, _as_is)
_CORE = _Forms(False, _as_is, _as_is, _as_is, _as_is, _as_is)


def _on_postgres(conn: AsyncConnection) -> bool:
    return not isinstance(conn, _SyncConnection) and conn.dialect.name == "postgresql"


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=256)
def _pg_type(table: sa.Table, column: str) -> str:
    """The type to cast a parameter array of `column` to. Without a length: an
    explicit cast to VARCHAR(n) cuts a longer value short without a word, where
    storing it into the column refuses it (and a lookup must not find the row
    of a shortened id)."""
    type_ = table.c[column].type
    if isinstance(type_, sa.String) and type_.length is not None:
        type_ = sa.String()
    return str(type_.compile(dialect=_PG))


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


@functools.lru_cache(maxsize=64)
def _pg_insert_sql(table: sa.Table, columns: tuple[str, ...]) -> str:
    # One array a column: the whole batch is one statement, where an executemany is
    # a Bind and an Execute a row for the server to parse and run.
    arrays = ", ".join(f"${n}::{_pg_type(table, c)}[]" for n, c in enumerate(columns, 1))
    return f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"


async def _insert(
    conn: AsyncConnection, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """INSERT rows: tuples of `columns`, in the connection's forms."""
    if not rows:
        return  # (unnest's arrays need at least a row to know their columns)
    if isinstance(conn, _SyncConnection):
        conn.executemany_raw(_insert_sql(table.name, columns), rows)
    elif _on_postgres(conn):
        await conn.exec_driver_sql(
            _pg_insert_sql(table, columns),
            tuple(list(column) for column in zip(*rows, strict=True)),
        )
    else:
        await conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


@functools.lru_cache(maxsize=64)
def _update_sql(
    table: str, values: tuple[str, ...], keys: tuple[str, ...], dollar: bool = False
) -> str:
    """The UPDATE with sqlite3's ``?`` placeholders, or asyncpg's ``$1``, ``$2`` ..."""
    marks = (f"${n}" if dollar else "?" for n in itertools.count(1))
    sets = ", ".join(f"{c} = {next(marks)}" for c in values)
    where = " AND ".join(f"{k} = {next(marks)}" for k in keys)
    return f"UPDATE {table} SET {sets} WHERE {where}"


# Built once: a statement built per batch costs its construction and cache key.
_UPDATES: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}


def _update_statement(table: sa.Table, values: tuple[str, ...], keys: tuple[str, ...]) -> Any:
    found = _UPDATES.get((table.name, values, keys))
    if found is None:
        found = _UPDATES[(table.name, values, keys)] = (
            table.update()
            .where(*(table.c[k] == sa.bindparam(f"b_{k}") for k in keys))
            .values({c: sa.bindparam(c) for c in values})
        )
    return found


async def _update(
    conn: AsyncConnection,
    table: sa.Table,
    values: tuple[str, ...],
    keys: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """UPDATE table SET values WHERE keys, per row: tuples of the values, then the
    keys, in the connection's forms."""
    if isinstance(conn, _SyncConnection):
        conn.executemany_raw(_update_sql(table.name, values, keys), rows)
    elif _on_postgres(conn):
        await conn.exec_driver_sql(_update_sql(table.name, values, keys, dollar=True), rows)
    else:
        names = (*values, *(f"b_{k}" for k in keys))
        await conn.execute(
            _update_statement(table, values, keys),
            [dict(zip(names, row, strict=True)) for row in rows],
        )


@functools.lru_cache(maxsize=64)
def _pg_select_sql(table: sa.Table, columns: tuple[str, ...], key: str, extra: str | None) -> str:
    # One array parameter: the same statement for any number of ids, so asyncpg
    # prepares it once per connection. An IN list is a statement for every batch
    # size, parsed and planned again each time.
    where = f"{key} = ANY($1::{_pg_type(table, key)}[])"
    if extra is not None:
        where += f" AND {extra} = $2"
    return f"SELECT {', '.join(columns)} FROM {table.name} WHERE {where}"


_SELECTS: dict[tuple[str, tuple[str, ...], str], Any] = {}


async def _select(
    conn: AsyncConnection,
    table: sa.Table,
    columns: tuple[str, ...],
    key: str,
    ids: Sequence[Any],
    extra: tuple[str, Any] | None = None,
) -> Sequence[Sequence[Any]]:
    """`columns` of the rows of `table` whose `key` is one of `ids` (and, with
    `extra` = (column, value), whose column has that value), in the connection's forms."""
    if isinstance(conn, _SyncConnection):
        where = f"{key} IN ({', '.join('?' * len(ids))})"
        parameters = tuple(ids)
        if extra is not None:
            where = f"{extra[0]} = ? AND {where}"
            parameters = (extra[1], *parameters)
        return conn.fetchall_raw(
            f"SELECT {', '.join(columns)} FROM {table.name} WHERE {where}", parameters
        )
    if _on_postgres(conn):
        sql = _pg_select_sql(table, columns, key, None if extra is None else extra[0])
        arguments = (list(ids),) if extra is None else (list(ids), extra[1])
        return list(await conn.exec_driver_sql(sql, arguments))
    cache_key = (table.name, columns, key if extra is None else f"{extra[0]}, {key}")
    statement = _SELECTS.get(cache_key)
    if statement is None:
        statement = sa.select(*(table.c[c] for c in columns)).where(
            table.c[key].in_(sa.bindparam("ids", expanding=True))
        )
        if extra is not None:
            statement = statement.where(table.c[extra[0]] == sa.bindparam("extra"))
        _SELECTS[cache_key] = statement
    parameters_: dict[str, Any] = {"ids": list(ids)}
    if extra is not None:
        parameters_["extra"] = extra[1]
    return list(await conn.execute(statement, parameters_))


# --------------------------------------------------------------------------- accept


@record
class AcceptMessage(WriteOp[AcceptResult]):
    """Insert an accepted (or, with a future ``send_at``, scheduled) message and its
    first event. With ``idempotency_key``, ``response`` (the API's answer, verbatim) is
    stored with it, and a second use of the key inserts nothing and returns the first
    response in ``AcceptResult.replayed_response``."""

    message: NewMessage
    idempotency_key: str | None = None
    response: str | None = None

    order: ClassVar[int] = 10
    urgent: ClassVar[bool] = True  # answered with submit_sm_resp / HTTP 202 after commit

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[AcceptResult]:
        forms = _Forms.of(conn)
        keyed = [op for op in ops if op.idempotency_key is not None]
        known: dict[tuple[int, str], tuple[str, str]] = {}
        for chunk in _chunks(keyed):
            pairs = [(op.message.account_id, op.idempotency_key) for op in chunk]
            rows = await conn.execute(
                sa.select(
                    idempotency_keys.c.account_id,
                    idempotency_keys.c.key,
                    idempotency_keys.c.message_id,
                    idempotency_keys.c.response,
                ).where(sa.tuple_(idempotency_keys.c.account_id, idempotency_keys.c.key).in_(pairs))
            )
            for row in rows:
                known[(row.account_id, row.key)] = (row.message_id, row.response)
        account_ids = list({op.message.account_id for op in ops})
        default_callback: dict[int, str | None] = {
            row[0]: row[1]
            for row in await _select(conn, accounts, ("id", "callback_url"), "id", account_ids)
        }

        results: list[AcceptResult] = []
        message_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        key_rows: list[tuple[Any, ...]] = []
        mqtt_rows: list[tuple[Any, ...]] | None = [] if _mqtt_outbox_enabled() else None
        time, time_or_none = forms.time, forms.time_or_none
        for op in ops:
            m = op.message
            if m.account_id not in default_callback:
                raise LookupError(f"no account with id {m.account_id}")
            key = (m.account_id, op.idempotency_key) if op.idempotency_key is not None else None
            if key is not None and key in known:
                first_id, first_response = known[key]
                results.append(AcceptResult(first_id, Status.ACCEPTED, first_response))
                continue
            scheduled = m.send_at is not None and m.send_at > m.created_at
            status = Status.SCHEDULED if scheduled else Status.ACCEPTED
            status_value = status._value_  # .value without the enum's descriptor
            created_at = time(m.created_at)
            send_at = time_or_none(m.send_at)
            message_rows.append(
                (
                    m.id,
                    m.account_id,
                    m.interface,
                    m.source,
                    m.destination,
                    m.text,
                    m.encoding,
                    m.data_coding,
                    m.segments,
                    m.registered_delivery,
                    m.client_ref,
                    m.callback_url or default_callback[m.account_id],
                    status_value,
                    send_at,
                    time_or_none(m.valid_until),
                    send_at if scheduled else created_at,  # due_at
                    0,  # attempts
                    created_at,
                    created_at,  # updated_at
                )
            )
            event_rows.append((m.id, status_value, created_at, _accept_detail(forms, m.interface)))
            if mqtt_rows is not None:
                mqtt_rows.append(_mqtt_row(m.id, m.account_id, status, m.created_at, created_at))
            if key is not None:
                response = op.response if op.response is not None else ""
                known[key] = (m.id, response)
                key_rows.append((m.account_id, op.idempotency_key, m.id, response, created_at))
            results.append(AcceptResult(m.id, status))
        if message_rows:
            await _insert(conn, messages, _MESSAGE_INSERTED, message_rows)
            await _insert(conn, events, _EVENT_COLUMNS, event_rows)
            if mqtt_rows:
                await _insert(conn, mqtt_outbox, _MQTT_COLUMNS, mqtt_rows)
        if key_rows:
            await _insert(conn, idempotency_keys, _IDEMPOTENCY_COLUMNS, key_rows)
        return results


_MESSAGE_INSERTED = (
    "id",
    "account_id",
    "interface",
    "source",
    "destination",
    "text",
    "encoding",
    "data_coding",
    "segments",
    "registered_delivery",
    "client_ref",
    "callback_url",
    "status",
    "send_at",
    "valid_until",
    "due_at",
    "attempts",
    "created_at",
    "updated_at",
)
_EVENT_COLUMNS = ("message_id", "status", "at", "detail")
_IDEMPOTENCY_COLUMNS = ("account_id", "key", "message_id", "response", "created_at")

# The accepted event's detail as JSON text, per interface: the same for every message.
_ACCEPT_DETAIL_TEXT: dict[str, str] = {}


def _accept_detail(forms: _Forms, interface: str) -> Any:
    if not forms.raw:
        return {"interface": interface}
    text = _ACCEPT_DETAIL_TEXT.get(interface)
    if text is None:
        text = _ACCEPT_DETAIL_TEXT[interface] = _json_text({"interface": interface})
    return text


# ------------------------------------------------------------ the status workspace

_STATUS: Mapping[str, Status] = {s.value: s for s in Status}  # faster than Status(value)
_UNSENT = frozenset({Status.ACCEPTED, Status.SCHEDULED})


@dataclass(slots=True)
class _Part:
    state: PartState
    upstream: str | None
    upstream_message_id: str | None
    price: float | None
    stored: bool  # a row exists already (UPDATE rather than INSERT)
    dirty: bool = False


@functools.lru_cache(maxsize=256)
def _unsent_part(seqnum: int) -> PartState:
    """A part not submitted yet. PartState is frozen, so one per seqnum serves all."""
    return PartState(seqnum)


# The columns of a message that status changes read: _Message's fields, in order.
_MESSAGE_LOADED = (
    "id",
    "account_id",
    "interface",
    "segments",
    "registered_delivery",
    "client_ref",
    "callback_url",
    "status",
    "route",
    "price",
    "error",
    "left_infrastructure_at",
    "handed_to_carrier_at",
    "delivered_at",
)
# What they write. due_at and attempts, which they never change, are left alone.
_MESSAGE_WRITTEN = (
    "status",
    "route",
    "price",
    "error",
    "updated_at",
    "left_infrastructure_at",
    "handed_to_carrier_at",
    "delivered_at",
)


@dataclass(slots=True)
class _Message:
    """The columns of _MESSAGE_LOADED; the times are in the connection's forms (they
    are only tested for None and written back), updated_at is set by every change."""

    id: str
    account_id: int
    interface: str
    segments: int
    registered_delivery: int
    client_ref: str | None
    callback_url: str | None
    status: Status
    route: str | None
    price: float | None
    error: str | None
    left_infrastructure_at: Any
    handed_to_carrier_at: Any
    delivered_at: Any
    parts: dict[int, _Part] = field(default_factory=dict)
    updated_at: Any = None
    dirty: bool = False


_PART_LOADED = (
    "message_id",
    "seqnum",
    "upstream",
    "upstream_message_id",
    "status",
    "price",
    "error",
    "submitted_at",
    "handed_to_carrier_at",
    "done_at",
)
_PART_MUTABLE = (
    "upstream",
    "upstream_message_id",
    "status",
    "price",
    "error",
    "submitted_at",
    "handed_to_carrier_at",
    "done_at",
    "updated_at",
)
_PART_INSERTED = ("message_id", "seqnum", *_PART_MUTABLE)
_WEBHOOK_COLUMNS = (
    "message_id",
    "account_id",
    "url",
    "body",
    "status",
    "attempts",
    "last_error",
    "next_attempt_at",
    "created_at",
    "updated_at",
)
_SMPP_RECEIPT_COLUMNS = ("account_id", "message_id", "status", "error", "at", "sent_at")
_MQTT_COLUMNS = ("message_id", "account_id", "payload", "created_at", "published_at")


class _Workspace:
    """Messages and parts of one batch, loaded with a few queries, changed in memory
    through the lifecycle, written back with executemany."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.forms = _Forms.of(conn)
        self.messages: dict[str, _Message] = {}
        # Rows to insert at flush, in the connection's forms.
        self._events: list[tuple[Any, ...]] = []
        self._webhooks: list[tuple[Any, ...]] = []
        self._receipts: list[tuple[Any, ...]] = []
        self._mqtt: list[tuple[Any, ...]] | None = [] if _mqtt_outbox_enabled() else None

    async def load(self, message_ids: Iterable[str]) -> None:
        wanted = sorted({m for m in message_ids if m not in self.messages})
        read_time = self.forms.read_time
        found = self.messages
        for chunk in _chunks(wanted):
            for row in await _select(self.conn, messages, _MESSAGE_LOADED, "id", chunk):
                msg = _Message(*row)
                msg.status = _STATUS[row[7]]
                found[msg.id] = msg
            for (
                message_id,
                seqnum,
                upstream,
                upstream_message_id,
                status,
                price,
                error,
                submitted_at,
                handed_to_carrier_at,
                done_at,
            ) in await _select(self.conn, parts, _PART_LOADED, "message_id", chunk):
                state = PartState(
                    seqnum,
                    _STATUS[status],
                    read_time(submitted_at),
                    read_time(handed_to_carrier_at),
                    read_time(done_at),
                    error,
                )
                found[message_id].parts[seqnum] = _Part(
                    state, upstream, upstream_message_id, price, stored=True
                )

    def set_status(
        self,
        msg: _Message,
        new: Status,
        at: datetime,
        detail: Mapping[str, Any],
        error: str | None = None,
    ) -> StatusChange | None:
        """A message-level transition (raises IllegalTransition, None when ignored)."""
        previous = msg.status
        if not lifecycle.transition(previous, new):
            return None
        at_db = self.forms.time(at)
        msg.status = new
        msg.updated_at = at_db
        if error is not None:
            msg.error = error
        if new is Status.DELIVERED and msg.delivered_at is None:
            msg.delivered_at = at_db
        msg.dirty = True
        return self._record(msg, previous, new, at, at_db, dict(detail))

    def update_part(
        self,
        msg: _Message,
        seqnum: int,
        new: Status,
        at: datetime,
        detail: Mapping[str, Any],
        *,
        upstream: str | None = None,
        upstream_message_id: str | None = None,
        price: float | None = None,
        error: str | None = None,
        from_receipt: bool = False,
    ) -> StatusChange | None:
        """Change one part, then the message as aggregated from its parts."""
        if not 1 <= seqnum <= msg.segments:
            raise ValueError(f"message {msg.id} has no part {seqnum}")
        part = msg.parts.get(seqnum)
        if part is None:
            part = msg.parts[seqnum] = _Part(_unsent_part(seqnum), None, None, None, stored=False)
        changed = lifecycle.update_part(part.state, new, at, from_receipt=from_receipt, error=error)
        if changed is None:
            return None
        part.state = changed
        part.dirty = True
        if upstream is not None:
            part.upstream = upstream
        if upstream_message_id is not None:
            part.upstream_message_id = upstream_message_id
        if price is not None:
            part.price = price
        if part.upstream is not None:
            msg.route = part.upstream
        prices = [p.price for p in msg.parts.values() if p.price is not None]
        msg.price = sum(prices) if prices else None

        previous = msg.status
        progress = lifecycle.aggregate(
            msg.segments,
            [p.state for p in msg.parts.values()],
            previous if previous in _UNSENT else Status.ACCEPTED,
        )
        time = self.forms.time
        if msg.left_infrastructure_at is None and progress.left_infrastructure_at is not None:
            msg.left_infrastructure_at = time(progress.left_infrastructure_at)
        if msg.handed_to_carrier_at is None and progress.handed_to_carrier_at is not None:
            msg.handed_to_carrier_at = time(progress.handed_to_carrier_at)
        at_db = time(at)
        msg.updated_at = at_db
        msg.dirty = True
        if lifecycle.decide(previous, progress.status) is not lifecycle.Decision.APPLY:
            return None
        msg.status = progress.status
        if progress.error is not None:
            msg.error = progress.error
        if progress.delivered_at is not None:
            msg.delivered_at = time(progress.delivered_at)
        full_detail: dict[str, Any] = {"route": part.upstream}
        if part.upstream_message_id is not None:
            full_detail["upstream_message_id"] = part.upstream_message_id
        if msg.segments > 1:
            full_detail["seqnum"] = seqnum
        if progress.error is not None:
            full_detail["error"] = progress.error
        full_detail.update(detail)
        return self._record(msg, previous, progress.status, at, at_db, full_detail)

    def _record(
        self,
        msg: _Message,
        previous: Status,
        new: Status,
        at: datetime,
        at_db: Any,
        detail: dict[str, Any],
    ) -> StatusChange:
        """The event and outbox rows of a change; `detail` is the caller's own copy."""
        status = new._value_  # what .value returns, without the enum's descriptor
        self._events.append((msg.id, status, at_db, self.forms.json(detail)))
        change = StatusChange(
            msg.id,
            msg.account_id,
            previous,
            new,
            at,
            msg.route,
            msg.error,
            detail,
            bool(msg.callback_url),
        )
        if msg.callback_url:
            body = {
                "id": msg.id,
                "status": status,
                "at": format_time(at),
                "route": msg.route,
                "error": msg.error,
                "client_ref": msg.client_ref,
                "detail": detail,
            }
            self._webhooks.append(
                (
                    msg.id,
                    msg.account_id,
                    msg.callback_url,
                    _compact_json(body),
                    "pending",
                    0,  # attempts
                    None,  # last_error
                    at_db,  # next_attempt_at
                    at_db,
                    at_db,
                )
            )
        if msg.interface == "smpp" and lifecycle.wants_smpp_receipt(msg.registered_delivery, new):
            self._receipts.append((msg.account_id, msg.id, status, msg.error, at_db, None))
        if self._mqtt is not None:
            self._mqtt.append(
                _mqtt_row(msg.id, msg.account_id, new, at, at_db, msg.route, msg.error)
            )
        return change

    async def flush(self) -> None:
        conn = self.conn
        time = self.forms.time_or_none
        new_parts: list[tuple[Any, ...]] = []
        old_parts: list[tuple[Any, ...]] = []
        changed_messages: list[tuple[Any, ...]] = []
        for msg in self.messages.values():
            if not msg.dirty:
                continue  # nor are its parts: every part change marks the message
            for part in msg.parts.values():
                if not part.dirty:
                    continue
                state = part.state
                values = (
                    part.upstream,
                    part.upstream_message_id,
                    state.status._value_,
                    part.price,
                    state.error,
                    time(state.submitted_at),
                    time(state.handed_to_carrier_at),
                    time(state.done_at),
                    msg.updated_at,
                )
                if part.stored:
                    old_parts.append((*values, msg.id, state.seqnum))
                else:
                    new_parts.append((msg.id, state.seqnum, *values))
                part.stored, part.dirty = True, False
            changed_messages.append(
                (
                    msg.status._value_,
                    msg.route,
                    msg.price,
                    msg.error,
                    msg.updated_at,
                    msg.left_infrastructure_at,
                    msg.handed_to_carrier_at,
                    msg.delivered_at,
                    msg.id,
                )
            )
            msg.dirty = False
        if changed_messages:
            await _update(conn, messages, _MESSAGE_WRITTEN, ("id",), changed_messages)
        if new_parts:
            await _insert(conn, parts, _PART_INSERTED, new_parts)
        if old_parts:
            await _update(conn, parts, _PART_MUTABLE, ("message_id", "seqnum"), old_parts)
        for table, columns, rows in (
            (events, _EVENT_COLUMNS, self._events),
            (webhook_deliveries, _WEBHOOK_COLUMNS, self._webhooks),
            (smpp_receipts, _SMPP_RECEIPT_COLUMNS, self._receipts),
            (mqtt_outbox, _MQTT_COLUMNS, self._mqtt),
        ):
            if rows:
                await _insert(conn, table, columns, rows)
                rows.clear()


# ------------------------------------------------------------ message-level changes


@record
class RecordAttempt(WriteOp[None]):
    """An attempt that did not change the status (a temporary error, a timeout, a
    route that went away): an event with the message's current status, so the
    timeline shows every route tried and why it was left."""

    message_id: str
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)

    order: ClassVar[int] = 35

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[None]:
        current: dict[str, str] = {}
        for chunk in _chunks(sorted({op.message_id for op in ops})):
            rows = await conn.execute(
                sa.select(messages.c.id, messages.c.status).where(messages.c.id.in_(chunk))
            )
            current.update({row.id: row.status for row in rows})
        rows_ = [
            {
                "message_id": op.message_id,
                "status": current[op.message_id],
                "at": op.at,
                "detail": dict(op.detail),
            }
            for op in ops
            if op.message_id in current
        ]
        if rows_:
            await conn.execute(events.insert(), rows_)
        return [None] * len(ops)


@record
class TransitionMessage(WriteOp[StatusChange | None]):
    """A message-level status change: scheduled/accepted, failed (no route, attempts
    exhausted), expired (validity passed before sending), rejected, canceled.

    Returns the change, or None when the lifecycle ignores it (late or repeated);
    raises ``IllegalTransition`` / ``LookupError``. With ``account_id`` the message
    must belong to that account (else LookupError)."""

    message_id: str
    status: Status
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    account_id: int | None = None

    order: ClassVar[int] = 20

    @classmethod
    async def run_batch(
        cls, conn: AsyncConnection, ops: Sequence[Self]
    ) -> list[StatusChange | None]:
        ws = _Workspace(conn)
        await ws.load(op.message_id for op in ops)
        results: list[StatusChange | None] = []
        for op in ops:
            msg = ws.messages.get(op.message_id)
            if msg is None or (op.account_id is not None and msg.account_id != op.account_id):
                raise LookupError(f"no message {op.message_id}")
            detail = dict(op.detail)
            if op.error is not None:
                detail.setdefault("error", op.error)
            results.append(ws.set_status(msg, op.status, op.at, detail, op.error))
        await ws.flush()
        return results


@record
class CancelMessage(WriteOp[CancelOutcome]):
    """Cancel a message of ``account_id`` that has not been submitted (DELETE, cancel_sm).

    The dispatcher must not have a submit_sm for it in flight: route cancels through
    the dispatcher, which drops the message from its queue first."""

    account_id: int
    message_id: str
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)

    order: ClassVar[int] = 20

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[CancelOutcome]:
        ws = _Workspace(conn)
        await ws.load(op.message_id for op in ops)
        results: list[CancelOutcome] = []
        for op in ops:
            msg = ws.messages.get(op.message_id)
            if msg is None or msg.account_id != op.account_id:
                results.append(CancelOutcome.NOT_FOUND)
            elif msg.status is Status.CANCELED:
                results.append(CancelOutcome.CANCELED)  # DELETE is idempotent
            elif not lifecycle.can_cancel(msg.status) or msg.parts:
                results.append(CancelOutcome.TOO_LATE)
            else:
                ws.set_status(msg, Status.CANCELED, op.at, op.detail)
                results.append(CancelOutcome.CANCELED)
        await ws.flush()
        return results


@record
class DeferMessage(WriteOp[bool]):
    """A temporary failure before submission: count the attempt and look at the
    message again at ``due_at``. False when it is no longer waiting to be sent."""

    message_id: str
    due_at: datetime
    at: datetime
    error: str | None = None

    order: ClassVar[int] = 25

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[bool]:
        results: list[bool] = []
        for op in ops:
            result = await conn.execute(
                messages.update()
                .where(
                    messages.c.id == op.message_id,
                    messages.c.status.in_([Status.ACCEPTED.value, Status.SCHEDULED.value]),
                )
                .values(
                    due_at=op.due_at,
                    attempts=messages.c.attempts + 1,
                    error=op.error,
                    updated_at=op.at,
                )
            )
            results.append(result.rowcount == 1)
        return results


# ---------------------------------------------------------------------- parts


@record
class PartUpdate(WriteOp[tuple[StatusChange, ...]]):
    """One segment's outcome at submission: ``submitted`` with ``upstream`` and
    ``upstream_message_id`` (submit_sm_resp ROK, with the price paid for it), or a
    final status with ``error`` (a permanent submit_sm_resp error, attempts exhausted).

    A receipt that came before this submit_sm_resp and waits in unmatched_receipts is
    applied in the same transaction. Returns the message's status changes."""

    message_id: str
    seqnum: int
    status: Status
    at: datetime
    upstream: str | None = None
    upstream_message_id: str | None = None
    price: float | None = None
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    order: ClassVar[int] = 30

    @classmethod
    async def run_batch(
        cls, conn: AsyncConnection, ops: Sequence[Self]
    ) -> list[tuple[StatusChange, ...]]:
        ws = _Workspace(conn)
        await ws.load(op.message_id for op in ops)
        results: list[list[StatusChange]] = []
        submitted: list[tuple[int, str, str]] = []  # (result index, upstream, upstream id)
        for op in ops:
            msg = ws.messages.get(op.message_id)
            if msg is None:
                raise LookupError(f"no message {op.message_id}")
            change = ws.update_part(
                msg,
                op.seqnum,
                op.status,
                op.at,
                op.detail,
                upstream=op.upstream,
                upstream_message_id=op.upstream_message_id,
                price=op.price,
                error=op.error,
            )
            results.append([change] if change is not None else [])
            if op.status is Status.SUBMITTED and op.upstream and op.upstream_message_id:
                submitted.append((len(results) - 1, op.upstream, op.upstream_message_id))
        if submitted:
            await _apply_waiting_receipts(ws, ops, submitted, results)
        await ws.flush()
        return [tuple(r) for r in results]


async def _apply_waiting_receipts(
    ws: _Workspace,
    ops: Sequence[PartUpdate],
    submitted: list[tuple[int, str, str]],
    results: list[list[StatusChange]],
) -> None:
    if ws.conn.info.get(_NO_UNMATCHED):
        return  # nothing waits: skip the lookup (the common case)
    wanted: dict[tuple[str, str], int] = {}
    for index, upstream, upstream_id in submitted:
        for form in upstream_id_forms(upstream_id):
            wanted.setdefault((upstream, form), index)
    found = sorted(
        await _by_upstream_id(ws.conn, unmatched_receipts, _WAITING_LOADED, wanted),
        key=lambda row: row[0],
    )
    forms = ws.forms
    for _, upstream, upstream_id, status, error, at, payload in found:
        index = wanted[(upstream, upstream_id)]
        op = ops[index]
        msg = ws.messages[op.message_id]
        received = forms.read_time(at)
        assert received is not None  # NOT NULL
        change = ws.update_part(
            msg,
            op.seqnum,
            _STATUS[status],
            received,
            {**forms.read_json(payload), "matched_late": True},
            error=error,
            from_receipt=True,
        )
        if change is not None:
            results[index].append(change)
    if found:
        await ws.conn.execute(
            unmatched_receipts.delete().where(unmatched_receipts.c.id.in_([r[0] for r in found]))
        )
    await _note_whether_receipts_wait(ws.conn)


_WAITING_LOADED = ("id", "upstream", "upstream_message_id", "status", "error", "at", "payload")


# conn.info key: True while unmatched_receipts is known to be empty. The group
# committer is the only writer and keeps one connection, so the flag it keeps
# there stays true until ApplyReceipt holds a receipt back; a new connection
# starts without it and looks once.
_NO_UNMATCHED = "smsgw_no_unmatched_receipts"


async def _note_whether_receipts_wait(conn: AsyncConnection) -> None:
    row = (await conn.execute(sa.select(unmatched_receipts.c.id).limit(1))).first()
    conn.info[_NO_UNMATCHED] = row is None


async def _by_upstream_id(
    conn: AsyncConnection,
    table: sa.Table,
    columns: tuple[str, ...],
    keys: Iterable[tuple[str, str]],
) -> list[Sequence[Any]]:
    """`columns` of the rows of `table` whose (upstream, upstream_message_id) is one
    of `keys`, in the connection's forms.

    One query per upstream with a plain IN on the id, which the (upstream,
    upstream_message_id) index serves and which SQLAlchemy renders far faster
    than a tuple IN.
    """
    by_upstream: dict[str, list[str]] = {}
    for upstream, upstream_id in keys:
        by_upstream.setdefault(upstream, []).append(upstream_id)
    found: list[Sequence[Any]] = []
    for upstream, ids in by_upstream.items():
        for chunk in _chunks(ids):
            found.extend(
                await _select(
                    conn, table, columns, "upstream_message_id", chunk, ("upstream", upstream)
                )
            )
    return found


def _exact_form(upstream_message_id: str) -> str:
    """The first of ``upstream_id_forms(upstream_message_id)``: the id as given
    (tests/gateway/test_store_forms.py holds them to it)."""
    return upstream_message_id.strip()


async def _locate_parts(
    conn: AsyncConnection, ops: Sequence[ApplyReceipt]
) -> list[tuple[str, int] | None]:
    """(message_id, seqnum) of the part each receipt is for, None when there is none.

    The first spelling found in ``upstream_id_forms`` order wins. Nearly every
    receipt carries the id exactly as the submit_sm_resp did, so that one is
    looked up first, for all of them; only for receipts it does not find are the
    other spellings worked out and looked up.
    """
    exact = [(op.upstream, _exact_form(op.upstream_message_id)) for op in ops]
    located = {
        (upstream, upstream_id): (message_id, seqnum)
        for upstream, upstream_id, message_id, seqnum in await _by_upstream_id(
            conn, parts, _PART_LOCATED, set(exact)
        )
    }
    targets = [located.get(key) for key in exact]
    missing = {
        index: upstream_id_forms(ops[index].upstream_message_id)[1:]
        for index, target in enumerate(targets)
        if target is None
    }
    if missing:
        others = {(ops[index].upstream, form) for index, forms in missing.items() for form in forms}
        located = {
            (upstream, upstream_id): (message_id, seqnum)
            for upstream, upstream_id, message_id, seqnum in await _by_upstream_id(
                conn, parts, _PART_LOCATED, others
            )
        }
        for index, forms in missing.items():
            upstream = ops[index].upstream
            for form in forms:
                target = located.get((upstream, form))
                if target is not None:
                    targets[index] = target
                    break
    return targets


_PART_LOCATED = ("upstream", "upstream_message_id", "message_id", "seqnum")


@record
class ApplyReceipt(WriteOp[ReceiptResult]):
    """A delivery receipt from ``upstream`` (deliver_sm or data_sm with a receipted id).

    Matched to a part by (upstream, upstream_message_id), trying the exact id first and
    then its other spellings (``gateway.ids.upstream_id_forms``: hex/decimal, case,
    leading zeros). Without a match the receipt is kept in unmatched_receipts and
    applied when its submit_sm_resp is recorded; ``detail`` goes into the event."""

    upstream: str
    upstream_message_id: str
    status: Status
    at: datetime
    error: str | None = None
    received_at: datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    order: ClassVar[int] = 40

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[ReceiptResult]:
        targets = await _locate_parts(conn, ops)
        ws = _Workspace(conn)
        await ws.load(t[0] for t in targets if t is not None)
        results: list[ReceiptResult] = []
        waiting: list[dict[str, Any]] = []
        for op, target in zip(ops, targets, strict=True):
            if target is None:
                waiting.append(
                    {
                        "upstream": op.upstream,
                        "upstream_message_id": op.upstream_message_id,
                        "status": op.status.value,
                        "error": op.error,
                        "at": op.at,
                        "payload": dict(op.detail),
                        "received_at": op.received_at or op.at,
                    }
                )
                results.append(ReceiptResult(matched=False, message_id=None))
                continue
            message_id, seqnum = target
            change = ws.update_part(
                ws.messages[message_id],
                seqnum,
                op.status,
                op.at,
                op.detail,
                error=op.error,
                from_receipt=True,
            )
            changes = (change,) if change is not None else ()
            results.append(ReceiptResult(matched=True, message_id=message_id, changes=changes))
        await ws.flush()
        if waiting:
            await conn.execute(unmatched_receipts.insert(), waiting)
            conn.info[_NO_UNMATCHED] = False
        return results


# ------------------------------------------------------------------- outboxes


@record
class WebhookAttempt(WriteOp[None]):
    """The outcome of one POST of a webhook delivery: ``delivered``, or retry at
    ``next_attempt_at``, or (``next_attempt_at`` None) give up as failed."""

    delivery_id: int
    at: datetime
    delivered: bool
    error: str | None = None
    next_attempt_at: datetime | None = None

    order: ClassVar[int] = 60

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[None]:
        rows = []
        for op in ops:
            if op.delivered:
                status = "delivered"
            else:
                status = "pending" if op.next_attempt_at is not None else "failed"
            rows.append(
                {
                    "b_id": op.delivery_id,
                    "status": status,
                    "last_error": op.error,
                    "next_attempt_at": op.next_attempt_at or op.at,
                    "updated_at": op.at,
                }
            )
        await conn.execute(
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == sa.bindparam("b_id"))
            .values(
                status=sa.bindparam("status"),
                attempts=webhook_deliveries.c.attempts + 1,
                last_error=sa.bindparam("last_error"),
                next_attempt_at=sa.bindparam("next_attempt_at"),
                updated_at=sa.bindparam("updated_at"),
            ),
            rows,
        )
        return [None] * len(ops)


@record
class MarkSmppReceiptsSent(WriteOp[None]):
    """deliver_sm receipts answered by the ESME (deliver_sm_resp), or expired."""

    receipt_ids: tuple[int, ...]
    at: datetime

    order: ClassVar[int] = 70

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[None]:
        time = _Forms.of(conn).time
        rows: list[tuple[Any, ...]] = []
        for op in ops:
            sent_at = time(op.at)
            rows.extend([(sent_at, receipt_id) for receipt_id in op.receipt_ids])
        if rows:
            await _update(conn, smpp_receipts, ("sent_at",), ("id",), rows)
        return [None] * len(ops)


# ------------------------------------------------------------------- MQTT outbox

# Whether status changes write mqtt_outbox rows: set on the committer's writer
# thread by EnableMqttOutbox. Every store's committer runs its transactions on a
# thread of its own, so the switch is per store, outlives a rolled-back batch
# (which clears conn.info) and a replaced connection, and ends with the store.
_writer = threading.local()


def _mqtt_outbox_enabled() -> bool:
    return bool(getattr(_writer, "mqtt_outbox", False))


def _mqtt_row(
    message_id: str,
    account_id: int,
    status: Status,
    at: datetime,
    at_db: Any,
    route: str | None = None,
    error: str | None = None,
) -> tuple[Any, ...]:
    """An mqtt_outbox row (_MQTT_COLUMNS); `at_db` is `at` in the connection's form."""
    # ../shared/interface.md, MQTT: {"id", "status", "at", "route", "error"}
    payload = {
        "id": message_id,
        "status": status.value,
        "at": format_time(at),
        "route": route,
        "error": error,
    }
    return (message_id, account_id, _compact_json(payload), at_db, None)


@record
class EnableMqttOutbox(WriteOp[None]):
    """From the commit of this write on, every status change of this store (the
    first event of an accepted message included) also writes an mqtt_outbox row
    in its transaction. Submitted by MqttPublisher.start(); there is no switch
    off: rows written after the publisher stopped wait for the next one."""

    order: ClassVar[int] = 0  # before the status changes of its own batch

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[None]:
        _writer.mqtt_outbox = True
        return [None] * len(ops)


@record
class MarkMqttPublished(WriteOp[int]):
    """Outbox rows up to ``up_to_id`` were acknowledged by the broker (PUBACK).

    The publisher publishes in id order and is the only one, so every unpublished
    row at or below the id is one it published. Returns the rows stamped."""

    up_to_id: int
    at: datetime

    order: ClassVar[int] = 80

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[int]:
        results = []
        for op in ops:
            result = await conn.execute(
                mqtt_outbox.update()
                .where(mqtt_outbox.c.id <= op.up_to_id, mqtt_outbox.c.published_at.is_(None))
                .values(published_at=op.at)
            )
            results.append(result.rowcount)
        return results
