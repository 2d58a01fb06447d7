"""The write operations of the store, each batched by the GroupCommitter.

Each operation is a frozen dataclass; ``Store.write(op)`` (or a Store shortcut) submits
it and returns its result once the batch has committed. Status changes go through
``gateway.lifecycle`` only; every applied change writes an event, and, in the same
transaction, a webhook delivery (when the message has a callback URL) and an SMPP
receipt (when the ESME asked for one): outboxes that survive a restart. While MQTT
is enabled on the store (``EnableMqttOutbox``), every event also gets an mqtt_outbox row.
"""

from __future__ import annotations

import collections
import functools
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway import lifecycle
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
    UtcTimestamp,
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


# --------------------------------------------------------------------------- accept


@dataclass(frozen=True, slots=True)
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
        account_ids = {op.message.account_id for op in ops}
        rows = await conn.execute(
            sa.select(accounts.c.id, accounts.c.callback_url).where(accounts.c.id.in_(account_ids))
        )
        default_callback = {row.id: row.callback_url for row in rows}

        results: list[AcceptResult] = []
        message_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        key_rows: list[dict[str, Any]] = []
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
            message_rows.append(
                {
                    "id": m.id,
                    "account_id": m.account_id,
                    "interface": m.interface,
                    "source": m.source,
                    "destination": m.destination,
                    "text": m.text,
                    "encoding": m.encoding,
                    "data_coding": m.data_coding,
                    "segments": m.segments,
                    "registered_delivery": m.registered_delivery,
                    "client_ref": m.client_ref,
                    "callback_url": m.callback_url or default_callback[m.account_id],
                    "status": status.value,
                    "send_at": m.send_at,
                    "valid_until": m.valid_until,
                    "due_at": m.send_at if scheduled else m.created_at,
                    "attempts": 0,
                    "created_at": m.created_at,
                    "updated_at": m.created_at,
                }
            )
            event_rows.append(
                {
                    "message_id": m.id,
                    "status": status.value,
                    "at": m.created_at,
                    "detail": {"interface": m.interface},
                }
            )
            if key is not None:
                response = op.response if op.response is not None else ""
                known[key] = (m.id, response)
                key_rows.append(
                    {
                        "account_id": m.account_id,
                        "key": op.idempotency_key,
                        "message_id": m.id,
                        "response": response,
                        "created_at": m.created_at,
                    }
                )
            results.append(AcceptResult(m.id, status))
        if message_rows:
            await _insert_rows(conn, messages, message_rows)
            await _insert_rows(conn, events, event_rows)
            if _mqtt_outbox_enabled():
                await conn.execute(
                    mqtt_outbox.insert(),
                    [
                        _mqtt_row(m["id"], m["account_id"], Status(m["status"]), m["created_at"])
                        for m in message_rows
                    ],
                )
        if key_rows:
            await conn.execute(idempotency_keys.insert(), key_rows)
        return results


# ------------------------------------------------------------ the status workspace


@dataclass(slots=True)
class _Part:
    state: PartState
    upstream: str | None
    upstream_message_id: str | None
    price: float | None
    stored: bool  # a row exists already (UPDATE rather than INSERT)
    dirty: bool = False


@dataclass(slots=True)
class _Message:
    row: dict[str, Any]
    parts: dict[int, _Part]
    dirty: bool = False

    @property
    def status(self) -> Status:
        return Status(self.row["status"])


_MESSAGE_MUTABLE = (
    "status",
    "route",
    "price",
    "error",
    "due_at",
    "attempts",
    "updated_at",
    "left_infrastructure_at",
    "handed_to_carrier_at",
    "delivered_at",
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

_UPDATE_MESSAGE = (
    messages.update()
    .where(messages.c.id == sa.bindparam("b_id"))
    .values({c: sa.bindparam(c) for c in _MESSAGE_MUTABLE})
)
_UPDATE_PART = (
    parts.update()
    .where(
        parts.c.message_id == sa.bindparam("b_message_id"),
        parts.c.seqnum == sa.bindparam("b_seqnum"),
    )
    .values({c: sa.bindparam(c) for c in _PART_MUTABLE})
)


# --- writing rows on the writer's own SQLite connection -------------------------
#
# On SQLite the group committer's connection is a plain sqlite3 one (see
# committer._SyncConnection). There the hot inserts and updates skip
# SQLAlchemy's per-row parameter processing, which cost more than SQLite's own
# work: values are put in database form here (UtcTimestamp -> integer
# microseconds, JSON -> text, the same forms the column types write) and go to
# the driver's executemany. Everywhere else (PostgreSQL) the Core statements run.


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _converter(column: sa.Column[Any]) -> Any:
    if isinstance(column.type, UtcTimestamp):
        return lambda v: None if v is None else (v - _EPOCH) // _MICROSECOND
    if isinstance(column.type, sa.JSON):
        return lambda v: None if v is None else json.dumps(v)
    return None


_CONVERTERS: dict[str, dict[str, Any]] = {}


def _converters(table: sa.Table) -> dict[str, Any]:
    found = _CONVERTERS.get(table.name)
    if found is None:
        found = _CONVERTERS[table.name] = {
            c.name: conv for c in table.c if (conv := _converter(c)) is not None
        }
    return found


def _db_row(
    columns: Sequence[str], row: Mapping[str, Any], conv: dict[str, Any]
) -> tuple[Any, ...]:
    return tuple(conv[c](row[c]) if c in conv else row[c] for c in columns)


async def _insert_rows(conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if not isinstance(conn, _SyncConnection):
        await conn.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    conv = _converters(table)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )
    conn.executemany_raw(sql, [_db_row(columns, r, conv) for r in rows])


async def _update_rows(
    conn: AsyncConnection,
    table: sa.Table,
    values: Sequence[str],
    keys: Sequence[str],
    rows: list[dict[str, Any]],
    statement: Any,
) -> None:
    """UPDATE table SET values WHERE keys, per row; rows carry the keys as b_<key>."""
    if not isinstance(conn, _SyncConnection):
        await conn.execute(statement, rows)
        return
    conv = _converters(table)
    columns = [*values, *(f"b_{k}" for k in keys)]
    key_conv = {f"b_{k}": conv[k] for k in keys if k in conv}
    sets = ", ".join(f"{c} = ?" for c in values)
    where = " AND ".join(f"{k} = ?" for k in keys)
    conn.executemany_raw(
        f"UPDATE {table.name} SET {sets} WHERE {where}",
        [_db_row(columns, r, {**conv, **key_conv}) for r in rows],
    )


def _reader(column: sa.Column[Any]) -> Any:
    if isinstance(column.type, UtcTimestamp):
        return lambda v: None if v is None else _EPOCH + timedelta(microseconds=v)
    if isinstance(column.type, sa.JSON):
        return lambda v: None if v is None else json.loads(v)
    return None


async def _select_rows(
    conn: AsyncConnection, table: sa.Table, key: str, ids: Sequence[str], statement: Any
) -> list[dict[str, Any]]:
    """Rows of `table` whose `key` is in `ids`, as dicts of Python values."""
    if not isinstance(conn, _SyncConnection):
        return [dict(row._mapping) for row in await conn.execute(statement, {"ids": list(ids)})]
    names = [c.name for c in table.c]
    readers = [_reader(c) for c in table.c]
    rows = conn.fetchall_raw(
        f"SELECT {', '.join(names)} FROM {table.name} WHERE {key} IN ({', '.join('?' * len(ids))})",
        tuple(ids),
    )
    return [
        {n: (r(v) if r is not None else v) for n, r, v in zip(names, readers, row, strict=True)}
        for row in rows
    ]


# Built once: a statement built per batch costs its construction and cache key.
_LOAD_MESSAGES = sa.select(messages).where(messages.c.id.in_(sa.bindparam("ids", expanding=True)))
_LOAD_PARTS = sa.select(parts).where(parts.c.message_id.in_(sa.bindparam("ids", expanding=True)))


class _Workspace:
    """Messages and parts of one batch, loaded with a few queries, changed in memory
    through the lifecycle, written back with executemany."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.messages: dict[str, _Message] = {}
        self._events: list[dict[str, Any]] = []
        self._webhooks: list[dict[str, Any]] = []
        self._receipts: list[dict[str, Any]] = []
        self._mqtt: list[dict[str, Any]] = []
        self._mqtt_enabled = _mqtt_outbox_enabled()

    async def load(self, message_ids: Iterable[str]) -> None:
        wanted = sorted({m for m in message_ids if m not in self.messages})
        for chunk in _chunks(wanted):
            for row_dict in await _select_rows(self.conn, messages, "id", chunk, _LOAD_MESSAGES):
                self.messages[row_dict["id"]] = _Message(row_dict, {})
            for row in await _select_rows(self.conn, parts, "message_id", chunk, _LOAD_PARTS):
                self.messages[row["message_id"]].parts[row["seqnum"]] = _Part(
                    PartState(
                        seqnum=row["seqnum"],
                        status=Status(row["status"]),
                        submitted_at=row["submitted_at"],
                        handed_to_carrier_at=row["handed_to_carrier_at"],
                        done_at=row["done_at"],
                        error=row["error"],
                    ),
                    row["upstream"],
                    row["upstream_message_id"],
                    row["price"],
                    stored=True,
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
        msg.row["status"] = new.value
        msg.row["updated_at"] = at
        if error is not None:
            msg.row["error"] = error
        if new is Status.DELIVERED and msg.row["delivered_at"] is None:
            msg.row["delivered_at"] = at
        msg.dirty = True
        return self._record(msg, previous, new, at, detail)

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
        if not 1 <= seqnum <= msg.row["segments"]:
            raise ValueError(f"message {msg.row['id']} has no part {seqnum}")
        part = msg.parts.get(seqnum)
        if part is None:
            part = _Part(PartState(seqnum=seqnum), None, None, None, stored=False)
            msg.parts[seqnum] = part
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
            msg.row["route"] = part.upstream
        prices = [p.price for p in msg.parts.values() if p.price is not None]
        msg.row["price"] = sum(prices) if prices else None

        previous = msg.status
        unsent = previous if previous in (Status.ACCEPTED, Status.SCHEDULED) else Status.ACCEPTED
        progress = lifecycle.aggregate(
            msg.row["segments"], [p.state for p in msg.parts.values()], unsent
        )
        for column in ("left_infrastructure_at", "handed_to_carrier_at"):
            if msg.row[column] is None and getattr(progress, column) is not None:
                msg.row[column] = getattr(progress, column)
        msg.row["updated_at"] = at
        msg.dirty = True
        if lifecycle.decide(previous, progress.status) is not lifecycle.Decision.APPLY:
            return None
        msg.row["status"] = progress.status.value
        if progress.error is not None:
            msg.row["error"] = progress.error
        if progress.delivered_at is not None:
            msg.row["delivered_at"] = progress.delivered_at
        full_detail: dict[str, Any] = {"route": part.upstream}
        if part.upstream_message_id is not None:
            full_detail["upstream_message_id"] = part.upstream_message_id
        if msg.row["segments"] > 1:
            full_detail["seqnum"] = seqnum
        if progress.error is not None:
            full_detail["error"] = progress.error
        full_detail.update(detail)
        return self._record(msg, previous, progress.status, at, full_detail)

    def _record(
        self,
        msg: _Message,
        previous: Status,
        new: Status,
        at: datetime,
        detail: Mapping[str, Any],
    ) -> StatusChange:
        row = msg.row
        detail = dict(detail)
        self._events.append(
            {"message_id": row["id"], "status": new.value, "at": at, "detail": detail}
        )
        change = StatusChange(
            message_id=row["id"],
            account_id=row["account_id"],
            previous=previous,
            status=new,
            at=at,
            route=row["route"],
            error=row["error"],
            detail=detail,
            has_callback=bool(row["callback_url"]),
        )
        if row["callback_url"]:
            body = {
                "id": row["id"],
                "status": new.value,
                "at": format_time(at),
                "route": row["route"],
                "error": row["error"],
                "client_ref": row["client_ref"],
                "detail": detail,
            }
            self._webhooks.append(
                {
                    "message_id": row["id"],
                    "account_id": row["account_id"],
                    "url": row["callback_url"],
                    "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
                    "status": "pending",
                    "attempts": 0,
                    "last_error": None,
                    "next_attempt_at": at,
                    "created_at": at,
                    "updated_at": at,
                }
            )
        if row["interface"] == "smpp" and lifecycle.wants_smpp_receipt(
            row["registered_delivery"], new
        ):
            self._receipts.append(
                {
                    "account_id": row["account_id"],
                    "message_id": row["id"],
                    "status": new.value,
                    "error": row["error"],
                    "at": at,
                    "sent_at": None,
                }
            )
        if self._mqtt_enabled:
            self._mqtt.append(
                _mqtt_row(row["id"], row["account_id"], new, at, row["route"], row["error"])
            )
        return change

    async def flush(self) -> None:
        conn = self.conn
        new_parts: list[dict[str, Any]] = []
        old_parts: list[dict[str, Any]] = []
        changed_messages: list[dict[str, Any]] = []
        for msg in self.messages.values():
            for part in msg.parts.values():
                if not part.dirty:
                    continue
                values = {
                    "upstream": part.upstream,
                    "upstream_message_id": part.upstream_message_id,
                    "status": part.state.status.value,
                    "price": part.price,
                    "error": part.state.error,
                    "submitted_at": part.state.submitted_at,
                    "handed_to_carrier_at": part.state.handed_to_carrier_at,
                    "done_at": part.state.done_at,
                    "updated_at": msg.row["updated_at"],
                }
                if part.stored:
                    old_parts.append(
                        {"b_message_id": msg.row["id"], "b_seqnum": part.state.seqnum, **values}
                    )
                else:
                    new_parts.append(
                        {"message_id": msg.row["id"], "seqnum": part.state.seqnum, **values}
                    )
                part.stored, part.dirty = True, False
            if msg.dirty:
                changed_messages.append(
                    {"b_id": msg.row["id"], **{c: msg.row[c] for c in _MESSAGE_MUTABLE}}
                )
                msg.dirty = False
        if changed_messages:
            await _update_rows(
                conn, messages, _MESSAGE_MUTABLE, ("id",), changed_messages, _UPDATE_MESSAGE
            )
        if new_parts:
            await _insert_rows(conn, parts, new_parts)
        if old_parts:
            await _update_rows(
                conn, parts, _PART_MUTABLE, ("message_id", "seqnum"), old_parts, _UPDATE_PART
            )
        for table, rows in (
            (events, self._events),
            (webhook_deliveries, self._webhooks),
            (smpp_receipts, self._receipts),
            (mqtt_outbox, self._mqtt),
        ):
            if rows:
                await _insert_rows(conn, table, rows)
                rows.clear()


# ------------------------------------------------------------ message-level changes


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
            if msg is None or (
                op.account_id is not None and msg.row["account_id"] != op.account_id
            ):
                raise LookupError(f"no message {op.message_id}")
            detail = dict(op.detail)
            if op.error is not None:
                detail.setdefault("error", op.error)
            results.append(ws.set_status(msg, op.status, op.at, detail, op.error))
        await ws.flush()
        return results


@dataclass(frozen=True, slots=True)
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
            if msg is None or msg.row["account_id"] != op.account_id:
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
    found = await _by_upstream_id(ws.conn, unmatched_receipts, [unmatched_receipts], list(wanted))
    found.sort(key=lambda r: r.id)
    for row in found:
        index = wanted[(row.upstream, row.upstream_message_id)]
        op = ops[index]
        msg = ws.messages[op.message_id]
        change = ws.update_part(
            msg,
            op.seqnum,
            Status(row.status),
            row.at,
            {**row.payload, "matched_late": True},
            error=row.error,
            from_receipt=True,
        )
        if change is not None:
            results[index].append(change)
    if found:
        await ws.conn.execute(
            unmatched_receipts.delete().where(unmatched_receipts.c.id.in_([r.id for r in found]))
        )
    await _note_whether_receipts_wait(ws.conn)


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
    columns: Sequence[Any],
    keys: Sequence[tuple[str, str]],
) -> list[Any]:
    """Rows of `table` whose (upstream, upstream_message_id) is one of `keys`.

    One query per upstream with a plain IN on the id, which the (upstream,
    upstream_message_id) index serves and which SQLAlchemy renders far faster
    than a tuple IN.
    """
    by_upstream: dict[str, list[str]] = {}
    for upstream, upstream_id in keys:
        by_upstream.setdefault(upstream, []).append(upstream_id)
    found: list[Any] = []
    raw = isinstance(conn, _SyncConnection) and all(
        isinstance(c, sa.Column) and _reader(c) is None for c in columns
    )
    for upstream, ids in by_upstream.items():
        for chunk in _chunks(ids):
            if raw:
                assert isinstance(conn, _SyncConnection)
                row_type = _row_type(tuple(c.name for c in columns))
                rows = conn.fetchall_raw(
                    f"SELECT {', '.join(c.name for c in columns)} FROM {table.name} "
                    f"WHERE upstream = ? AND upstream_message_id IN ({', '.join('?' * len(chunk))})",
                    (upstream, *chunk),
                )
                found.extend(row_type._make(r) for r in rows)
                continue
            result = await conn.execute(
                sa.select(*columns).where(
                    table.c.upstream == upstream, table.c.upstream_message_id.in_(chunk)
                )
            )
            found.extend(result)
    return found


@functools.lru_cache(maxsize=32)
def _row_type(names: tuple[str, ...]) -> Any:
    """A named tuple for raw rows, so callers read them like SQLAlchemy rows (row.name)."""
    return collections.namedtuple("Row", names)


@dataclass(frozen=True, slots=True)
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
        wanted = sorted(
            {
                (op.upstream, form)
                for op in ops
                for form in upstream_id_forms(op.upstream_message_id)
            }
        )
        located: dict[tuple[str, str], tuple[str, int]] = {}
        columns = [
            parts.c.upstream,
            parts.c.upstream_message_id,
            parts.c.message_id,
            parts.c.seqnum,
        ]
        for row in await _by_upstream_id(conn, parts, columns, wanted):
            located[(row.upstream, row.upstream_message_id)] = (row.message_id, row.seqnum)
        targets: list[tuple[str, int] | None] = []
        for op in ops:
            target = None
            for form in upstream_id_forms(op.upstream_message_id):
                target = located.get((op.upstream, form))
                if target is not None:
                    break
            targets.append(target)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class MarkSmppReceiptsSent(WriteOp[None]):
    """deliver_sm receipts answered by the ESME (deliver_sm_resp), or expired."""

    receipt_ids: tuple[int, ...]
    at: datetime

    order: ClassVar[int] = 70

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[None]:
        rows = [{"b_id": rid, "sent_at": op.at} for op in ops for rid in op.receipt_ids]
        if rows:
            await conn.execute(
                smpp_receipts.update()
                .where(smpp_receipts.c.id == sa.bindparam("b_id"))
                .values(sent_at=sa.bindparam("sent_at")),
                rows,
            )
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
    route: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    # ../shared/interface.md, MQTT: {"id", "status", "at", "route", "error"}
    payload = {
        "id": message_id,
        "status": status.value,
        "at": format_time(at),
        "route": route,
        "error": error,
    }
    return {
        "message_id": message_id,
        "account_id": account_id,
        "payload": json.dumps(payload, separators=(",", ":"), sort_keys=True),
        "created_at": at,
        "published_at": None,
    }


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
