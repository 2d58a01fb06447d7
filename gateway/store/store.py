"""The Store: group-committed writes, reads, and account administration."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import AccountSettings, DatabaseSettings
from gateway.ids import upstream_id_forms
from gateway.lifecycle import Status
from gateway.store import ops
from gateway.store.committer import GroupCommitter, WriteOp, is_transient
from gateway.store.engine import create_engine, create_sync_sqlite_engine, is_sqlite
from gateway.store.records import (
    RECEIPT_TEXT_CHARS,
    AcceptResult,
    Account,
    CancelOutcome,
    CreatedAccount,
    EventRecord,
    MessageRecord,
    MqttEvent,
    NewMessage,
    PartRecord,
    ReceiptMessage,
    ReceiptResult,
    SmppReceipt,
    StatusChange,
    WebhookDelivery,
    utcnow,
)
from gateway.store.secrets import (
    api_key_lookup,
    hash_secret,
    new_api_key,
    new_webhook_secret,
    verify_secret,
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
from gateway.store.writer_process import WriterProcess

__all__ = ["AccountExists", "Store"]

T = TypeVar("T")

log = logging.getLogger(__name__)

# Store.write_until_committed: the first wait, doubled up to the last.
RETRY_BACKOFF_S = 0.1
MAX_RETRY_BACKOFF_S = 5.0

_API_KEY_CACHE_TTL_S = 60.0
_UNSENT = (Status.ACCEPTED.value, Status.SCHEDULED.value)


class AccountExists(ValueError):
    """An account with this system_id exists already."""


def _account(row: Any) -> Account:
    return Account(
        id=row.id,
        system_id=row.system_id,
        tps=row.tps,
        routing=row.routing,
        default_source=row.default_source,
        callback_url=row.callback_url,
        webhook_secret=row.webhook_secret,
        max_price=row.max_price,
        created_at=row.created_at,
    )


def _part(row: Any) -> PartRecord:
    return PartRecord(
        message_id=row.message_id,
        seqnum=row.seqnum,
        upstream=row.upstream,
        upstream_message_id=row.upstream_message_id,
        status=Status(row.status),
        price=row.price,
        error=row.error,
        submitted_at=row.submitted_at,
        handed_to_carrier_at=row.handed_to_carrier_at,
        done_at=row.done_at,
    )


def _message(
    row: Any, parts_: Sequence[PartRecord] = (), events_: Sequence[EventRecord] = ()
) -> MessageRecord:
    m = row._mapping
    return MessageRecord(
        **{
            k: m[k]
            for k in MessageRecord.__dataclass_fields__
            if k not in ("status", "parts", "events")
        },
        status=Status(m["status"]),
        parts=tuple(parts_),
        events=tuple(events_),
    )


_ACCOUNT_COLUMNS = (
    accounts.c.id,
    accounts.c.system_id,
    accounts.c.tps,
    accounts.c.routing,
    accounts.c.default_source,
    accounts.c.callback_url,
    accounts.c.webhook_secret,
    accounts.c.max_price,
    accounts.c.created_at,
)


# Built once (see Store.pending_smpp_receipts_with_messages).
_PENDING_RECEIPTS = (
    sa.select(
        smpp_receipts.c.id,
        smpp_receipts.c.status,
        smpp_receipts.c.error,
        smpp_receipts.c.at,
        messages.c.id,
        messages.c.source,
        messages.c.destination,
        sa.func.substr(messages.c.text, 1, RECEIPT_TEXT_CHARS),
        messages.c.created_at,
    )
    .join(messages, messages.c.id == smpp_receipts.c.message_id)
    .where(
        smpp_receipts.c.account_id == sa.bindparam("account_id"),
        smpp_receipts.c.sent_at.is_(None),
        smpp_receipts.c.at >= sa.bindparam("not_before", type_=smpp_receipts.c.at.type),
        smpp_receipts.c.id > sa.bindparam("after_id"),
    )
    .order_by(smpp_receipts.c.id)
    .limit(sa.bindparam("limit"))
)
_STATUSES = {s.value: s for s in Status}


class Store:
    """All database access of the gateway.

    Writes on hot paths go through the group committer (``write`` and the shortcuts
    ``accept``, ``transition``, ``cancel``, ``part_update``, ``apply_receipt``): each
    returns after the transaction holding it has committed. Account administration
    (rare, and also used by the CLI without a running gateway) uses its own short
    transactions. Reads use the pool; on SQLite, WAL lets them run beside the writer.
    """

    def __init__(self, engine: AsyncEngine, committer: GroupCommitter) -> None:
        self.engine = engine
        self.committer = committer
        self._api_key_cache: dict[str, tuple[float, Account]] = {}

    @classmethod
    async def open(cls, database: DatabaseSettings) -> Store:
        """Connect and start the group committer (the schema must exist: see gateway.migrate)."""
        return await cls.open_url(
            database.url,
            commit_window_ms=database.commit_window_ms,
            commit_max_batch=database.commit_max_batch,
            writer=database.writer,
        )

    @classmethod
    async def open_url(
        cls,
        url: str,
        *,
        commit_window_ms: float = 2.0,
        commit_max_batch: int = 1000,
        engine_options: Mapping[str, Any] | None = None,
        writer: Literal["process", "thread"] = "process",
    ) -> Store:
        """``engine_options`` go to ``create_engine`` (e.g. connect_args).

        ``writer`` is where the group committer's transactions run: ``"process"``
        (a process of their own, see `gateway.store.writer_process`) or
        ``"thread"`` (a thread of this process)."""
        options = dict(engine_options or {})
        engine = create_engine(url, **options)
        sqlite = is_sqlite(url)
        committer = GroupCommitter(
            engine,
            window_ms=commit_window_ms,
            max_batch=commit_max_batch,
            writer_engine=None if sqlite else (lambda: create_engine(url, **options)),
            writer_sync_engine=(lambda: create_sync_sqlite_engine(url)) if sqlite else None,
            writer_process=(
                (lambda: WriterProcess.start(url, options)) if writer == "process" else None
            ),
        )
        await committer.start()
        return cls(engine, committer)

    async def close(self) -> None:
        """Commit what is queued, stop the committer, close the connections."""
        await self.committer.close()
        await self.engine.dispose()

    async def ping(self) -> None:
        """Raises when the database does not answer (for /readyz)."""
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # ------------------------------------------------------------- group-committed writes

    # The hot writes are plain functions handing back the committer's coroutine:
    # one coroutine frame fewer to create and to resume per write (three writes
    # per message). Awaited, they behave as `async def` would.

    def write(self, op: WriteOp[T]) -> Coroutine[Any, Any, T]:
        return self.committer.submit(op)

    def write_nowait(self, op: WriteOp[T]) -> asyncio.Future[T]:
        """`write` as a Future, done once committed (see GroupCommitter.submit_nowait):
        for the hot paths that answer from done callbacks instead of coroutines."""
        return self.committer.submit_nowait(op)

    async def write_until_committed(
        self,
        op: WriteOp[T],
        first_failure: BaseException | None = None,
        *,
        backoff_s: float = RETRY_BACKOFF_S,
        max_backoff_s: float = MAX_RETRY_BACKOFF_S,
    ) -> T:
        """`write`, tried again while it fails because the database is unavailable
        (`is_transient`), backing off up to ``max_backoff_s``; what the write itself
        gets wrong, and a store that is closing, are raised. For the writes that
        record what already happened upstream (a submit_sm_resp, a final status):
        failing them would leave the message to be sent again at the next start.
        ``first_failure`` is the failure of an attempt already made, if any.

        An operation retried after a lost writer process may have committed the
        first time: the operations it is used with are idempotent (the lifecycle
        ignores a repeated change)."""
        delay = backoff_s
        failure = first_failure
        while True:
            if failure is not None:
                if not is_transient(failure):
                    raise failure
                log.warning(
                    "%s not committed (%s); trying again in %.1f s",
                    type(op).__name__,
                    type(failure).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_backoff_s)
            try:
                return await self.committer.submit(op)
            except Exception as exc:
                failure = exc

    def accept(
        self,
        message: NewMessage,
        *,
        idempotency_key: str | None = None,
        response: str | None = None,
    ) -> Coroutine[Any, Any, AcceptResult]:
        return self.committer.submit(ops.AcceptMessage(message, idempotency_key, response))

    def accept_nowait(
        self,
        message: NewMessage,
        *,
        idempotency_key: str | None = None,
        response: str | None = None,
    ) -> asyncio.Future[AcceptResult]:
        """`accept` as a Future, done once committed (see `write_nowait`)."""
        return self.write_nowait(ops.AcceptMessage(message, idempotency_key, response))

    async def transition(
        self,
        message_id: str,
        status: Status,
        *,
        at: datetime | None = None,
        detail: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> StatusChange | None:
        return await self.write(
            ops.TransitionMessage(message_id, status, at or utcnow(), detail or {}, error)
        )

    async def cancel(
        self, account_id: int, message_id: str, *, at: datetime | None = None
    ) -> CancelOutcome:
        return await self.write(ops.CancelMessage(account_id, message_id, at or utcnow()))

    def part_update(self, update: ops.PartUpdate) -> Coroutine[Any, Any, tuple[StatusChange, ...]]:
        return self.committer.submit(update)

    def apply_receipt(self, receipt: ops.ApplyReceipt) -> Coroutine[Any, Any, ReceiptResult]:
        return self.committer.submit(receipt)

    # ------------------------------------------------------------------------ reads

    async def get_message(
        self, message_id: str, account_id: int | None = None
    ) -> MessageRecord | None:
        """The message with its parts and events (oldest first); None when it does not
        exist or, with ``account_id``, belongs to another account."""
        query = sa.select(messages).where(messages.c.id == message_id)
        if account_id is not None:
            query = query.where(messages.c.account_id == account_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            part_rows = await conn.execute(
                sa.select(parts).where(parts.c.message_id == message_id).order_by(parts.c.seqnum)
            )
            event_rows = await conn.execute(
                sa.select(events.c.status, events.c.at, events.c.detail)
                .where(events.c.message_id == message_id)
                .order_by(events.c.id)
            )
            return _message(
                row,
                [_part(p) for p in part_rows],
                [EventRecord(Status(e.status), e.at, e.detail) for e in event_rows],
            )

    async def _messages_with_parts(self, query: sa.Select[Any]) -> list[MessageRecord]:
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(query))
            if not rows:
                return []
            by_message: dict[str, list[PartRecord]] = {}
            ids = [r.id for r in rows]
            for start in range(0, len(ids), 400):
                for p in await conn.execute(
                    sa.select(parts)
                    .where(parts.c.message_id.in_(ids[start : start + 400]))
                    .order_by(parts.c.message_id, parts.c.seqnum)
                ):
                    by_message.setdefault(p.message_id, []).append(_part(p))
        return [_message(r, by_message.get(r.id, ())) for r in rows]

    async def due_messages(
        self,
        now: datetime,
        limit: int = 500,
        after: tuple[datetime, str] | None = None,
        statuses: Iterable[Status | str] = _UNSENT,
    ) -> list[MessageRecord]:
        """Messages waiting to be sent (accepted or scheduled, or only ``statuses``)
        whose ``due_at`` has come, oldest first, with the parts already submitted. Page
        with ``after`` = (due_at, id) of the last one."""
        wanted = [Status(s).value for s in statuses]
        query = sa.select(messages).where(messages.c.status.in_(wanted), messages.c.due_at <= now)
        if after is not None:
            query = query.where(sa.tuple_(messages.c.due_at, messages.c.id) > sa.tuple_(*after))
        query = query.order_by(messages.c.due_at, messages.c.id).limit(limit)
        return await self._messages_with_parts(query)

    async def unsent_messages(
        self, limit: int = 1000, after_id: str | None = None
    ) -> list[MessageRecord]:
        """Recovery at start: every accepted or scheduled message, due or not, in id
        (= creation) order, with the parts already submitted (a multi-part message may be
        half sent). Submitted/enroute messages need no recovery: their receipts are
        matched from the database."""
        query = sa.select(messages).where(messages.c.status.in_(_UNSENT))
        if after_id is not None:
            query = query.where(messages.c.id > after_id)
        query = query.order_by(messages.c.id).limit(limit)
        return await self._messages_with_parts(query)

    async def count_by_status(self) -> dict[Status, int]:
        """For metrics (smsgw_queue_depth is accepted)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(messages.c.status, sa.func.count()).group_by(messages.c.status)
            )
            return {Status(status): count for status, count in rows}

    async def find_part(self, upstream: str, upstream_message_id: str) -> PartRecord | None:
        """The part an upstream knows by this id (exact spelling first, then the others)."""
        forms = upstream_id_forms(upstream_message_id)
        async with self.engine.connect() as conn:
            rows = list(
                await conn.execute(
                    sa.select(parts).where(
                        parts.c.upstream == upstream, parts.c.upstream_message_id.in_(forms)
                    )
                )
            )
        ranked = sorted(rows, key=lambda r: forms.index(r.upstream_message_id))
        return _part(ranked[0]) if ranked else None

    async def get_idempotent_response(self, account_id: int, key: str) -> str | None:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(idempotency_keys.c.response).where(
                        idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key
                    )
                )
            ).scalar_one_or_none()

    async def due_webhooks(self, now: datetime, limit: int = 100) -> list[WebhookDelivery]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(webhook_deliveries)
                .where(
                    webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.next_attempt_at <= now,
                )
                .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
                .limit(limit)
            )
            return [
                WebhookDelivery(
                    id=r.id,
                    message_id=r.message_id,
                    account_id=r.account_id,
                    url=r.url,
                    body=r.body,
                    attempts=r.attempts,
                    next_attempt_at=r.next_attempt_at,
                    created_at=r.created_at,
                )
                for r in rows
            ]

    async def pending_webhooks_by_message(
        self, message_ids: Iterable[str]
    ) -> dict[str, list[tuple[int, datetime]]]:
        """Per message, its pending webhook deliveries as (id, next_attempt_at), oldest
        (= earliest transition) first: the webhook sender POSTs a message's transitions
        in this order only, so it must see the earlier ones that are not due yet."""
        wanted = sorted(set(message_ids))
        found: dict[str, list[tuple[int, datetime]]] = {}
        async with self.engine.connect() as conn:
            for start in range(0, len(wanted), 400):
                rows = await conn.execute(
                    sa.select(
                        webhook_deliveries.c.id,
                        webhook_deliveries.c.message_id,
                        webhook_deliveries.c.next_attempt_at,
                    )
                    .where(
                        webhook_deliveries.c.status == "pending",
                        webhook_deliveries.c.message_id.in_(wanted[start : start + 400]),
                    )
                    .order_by(webhook_deliveries.c.id)
                )
                for r in rows:
                    found.setdefault(r.message_id, []).append((r.id, r.next_attempt_at))
        return found

    async def pending_smpp_receipts(
        self, account_id: int, *, not_before: datetime, limit: int = 500
    ) -> list[SmppReceipt]:
        """Receipts owed to the account's receiver sessions, oldest first; those older
        than ``not_before`` (now - smpp.receipt_ttl_s) have expired and are left out."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(smpp_receipts)
                .where(
                    smpp_receipts.c.account_id == account_id,
                    smpp_receipts.c.sent_at.is_(None),
                    smpp_receipts.c.at >= not_before,
                )
                .order_by(smpp_receipts.c.id)
                .limit(limit)
            )
            return [
                SmppReceipt(r.id, r.account_id, r.message_id, Status(r.status), r.error, r.at)
                for r in rows
            ]

    async def pending_smpp_receipts_with_messages(
        self, account_id: int, *, not_before: datetime, after_id: int = 0, limit: int = 500
    ) -> list[tuple[SmppReceipt, ReceiptMessage]]:
        """``pending_smpp_receipts`` with what each receipt tells of its message
        (addresses, submit date, the start of the text), in one query. Page with
        ``after_id`` = the id of the last receipt of the previous page.

        Every receipt an ESME gets is read here once, so it reads only those
        columns: whole message rows cost more to convert than the query itself.
        """
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                _PENDING_RECEIPTS,
                {
                    "account_id": account_id,
                    "not_before": not_before,
                    "after_id": after_id,
                    "limit": limit,
                },
            )
            return [
                (
                    SmppReceipt(r[0], account_id, r[4], _STATUSES[r[1]], r[2], r[3]),
                    ReceiptMessage(r[4], r[5], r[6], r[7], r[8]),
                )
                for r in rows
            ]

    async def unpublished_mqtt_events(
        self, *, after_id: int = 0, limit: int = 500
    ) -> list[MqttEvent]:
        """MQTT outbox rows not published yet, in id (= commit) order, with the
        account's system_id for the topic. Page with ``after_id``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    mqtt_outbox.c.id,
                    accounts.c.system_id,
                    mqtt_outbox.c.message_id,
                    mqtt_outbox.c.payload,
                    mqtt_outbox.c.created_at,
                )
                .join(accounts, accounts.c.id == mqtt_outbox.c.account_id)
                .where(mqtt_outbox.c.published_at.is_(None), mqtt_outbox.c.id > after_id)
                .order_by(mqtt_outbox.c.id)
                .limit(limit)
            )
            return [
                MqttEvent(r.id, r.system_id, r.message_id, r.payload, r.created_at) for r in rows
            ]

    async def count_unpublished_mqtt_events(self) -> int:
        """For the pending gauge (and tests)."""
        async with self.engine.connect() as conn:
            count = await conn.execute(
                sa.select(sa.func.count())
                .select_from(mqtt_outbox)
                .where(mqtt_outbox.c.published_at.is_(None))
            )
            return int(count.scalar_one())

    # -------------------------------------------------------------------- accounts

    async def create_account(
        self,
        system_id: str,
        password: str,
        *,
        api_key: str | None = None,
        tps: int = 100,
        routing: str = "balanced",
        default_source: str | None = None,
        callback_url: str | None = None,
        max_price: float | None = None,
    ) -> CreatedAccount:
        """Create an account; the API key (given or generated) is returned in clear once."""
        api_key = api_key or new_api_key()
        password_hash, api_key_hash = await asyncio.gather(
            asyncio.to_thread(hash_secret, password), asyncio.to_thread(hash_secret, api_key)
        )
        now = utcnow()
        values = {
            "system_id": system_id,
            "password_hash": password_hash,
            "api_key_hash": api_key_hash,
            "api_key_lookup": api_key_lookup(api_key),
            "tps": tps,
            "routing": routing,
            "default_source": default_source,
            "callback_url": callback_url,
            "webhook_secret": new_webhook_secret(),
            "max_price": max_price,
            "created_at": now,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            exists = await conn.execute(
                sa.select(accounts.c.id).where(accounts.c.system_id == system_id)
            )
            if exists.first() is not None:
                raise AccountExists(f"account {system_id!r} exists already")
            await conn.execute(accounts.insert().values(values))
            row = (
                await conn.execute(
                    sa.select(*_ACCOUNT_COLUMNS).where(accounts.c.system_id == system_id)
                )
            ).one()
        return CreatedAccount(_account(row), api_key)

    async def ensure_accounts(self, configured: Sequence[AccountSettings]) -> list[CreatedAccount]:
        """Bootstrap accounts of the configuration: create the missing ones, bring the
        existing ones in line (password, API key when configured, tps, routing, ...).
        Returns the accounts created, with their API keys."""
        created: list[CreatedAccount] = []
        for cfg in configured:
            existing = await self._account_secrets(cfg.system_id)
            if existing is None:
                created.append(
                    await self.create_account(
                        cfg.system_id,
                        cfg.password,
                        api_key=cfg.api_key,
                        tps=cfg.tps,
                        routing=cfg.routing,
                        default_source=cfg.default_source,
                        callback_url=cfg.callback_url,
                        max_price=cfg.max_price,
                    )
                )
                continue
            values: dict[str, Any] = {
                "tps": cfg.tps,
                "routing": cfg.routing,
                "default_source": cfg.default_source,
                "callback_url": cfg.callback_url,
                "max_price": cfg.max_price,
                "updated_at": utcnow(),
            }
            if not await asyncio.to_thread(verify_secret, cfg.password, existing.password_hash):
                values["password_hash"] = await asyncio.to_thread(hash_secret, cfg.password)
            if cfg.api_key is not None and api_key_lookup(cfg.api_key) != existing.api_key_lookup:
                values["api_key_hash"] = await asyncio.to_thread(hash_secret, cfg.api_key)
                values["api_key_lookup"] = api_key_lookup(cfg.api_key)
            async with self.engine.begin() as conn:
                await conn.execute(
                    accounts.update().where(accounts.c.id == existing.id).values(values)
                )
        self._api_key_cache.clear()
        return created

    async def _account_secrets(self, system_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(
                        accounts.c.id,
                        accounts.c.password_hash,
                        accounts.c.api_key_hash,
                        accounts.c.api_key_lookup,
                    ).where(accounts.c.system_id == system_id)
                )
            ).first()

    async def list_accounts(self) -> list[Account]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(*_ACCOUNT_COLUMNS).order_by(accounts.c.system_id))
            return [_account(r) for r in rows]

    async def get_account(self, account_id: int) -> Account | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(*_ACCOUNT_COLUMNS).where(accounts.c.id == account_id))
            ).first()
        return _account(row) if row is not None else None

    async def get_account_by_system_id(self, system_id: str) -> Account | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(*_ACCOUNT_COLUMNS).where(accounts.c.system_id == system_id)
                )
            ).first()
        return _account(row) if row is not None else None

    async def authenticate_password(self, system_id: str, password: str) -> Account | None:
        """bind_* and HTTP Basic: the account when the password is right, else None.
        (scrypt runs in a thread, so a bind does not stall the event loop.)"""
        secrets_row = await self._account_secrets(system_id)
        if secrets_row is None:
            return None
        if not await asyncio.to_thread(verify_secret, password, secrets_row.password_hash):
            return None
        return await self.get_account(secrets_row.id)

    async def authenticate_api_key(self, api_key: str) -> Account | None:
        """Bearer auth: sha256 lookup, scrypt verification, then cached for a minute."""
        lookup = api_key_lookup(api_key)
        cached = self._api_key_cache.get(lookup)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(*_ACCOUNT_COLUMNS, accounts.c.api_key_hash).where(
                        accounts.c.api_key_lookup == lookup
                    )
                )
            ).first()
        if row is None or not await asyncio.to_thread(verify_secret, api_key, row.api_key_hash):
            return None
        account = _account(row)
        self._api_key_cache[lookup] = (time.monotonic() + _API_KEY_CACHE_TTL_S, account)
        return account

    # ------------------------------------------------------------------ housekeeping

    async def purge(
        self,
        now: datetime,
        *,
        idempotency_ttl: timedelta = timedelta(days=1),
        unmatched_ttl: timedelta = timedelta(days=3),
        outbox_ttl: timedelta = timedelta(days=3),
    ) -> None:
        """Forget idempotency keys, receipts that never found their message, and
        finished outbox rows, once older than their time to live."""
        async with self.engine.begin() as conn:
            await conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.created_at < now - idempotency_ttl
                )
            )
            await conn.execute(
                unmatched_receipts.delete().where(
                    unmatched_receipts.c.received_at < now - unmatched_ttl
                )
            )
            await conn.execute(
                webhook_deliveries.delete().where(
                    webhook_deliveries.c.status != "pending",
                    webhook_deliveries.c.updated_at < now - outbox_ttl,
                )
            )
            await conn.execute(smpp_receipts.delete().where(smpp_receipts.c.at < now - outbox_ttl))
            await conn.execute(
                mqtt_outbox.delete().where(mqtt_outbox.c.published_at < now - outbox_ttl)
            )
