"""Group commit: many writers, one background task, one transaction per batch.

``submit(op)`` queues a write operation and returns when the transaction holding it has
committed (or raises what made it fail). The task takes the first queued operation,
waits ``window_ms`` for more to pile up (at most ``max_batch``), and runs them all in
one transaction: operations of the same type are handed over together, so each type
does its work with a few executemany statements whatever the batch size. Types run in
the order of their ``order`` attribute (accept before submit_sm_resp before receipt),
so an operation that depends on an earlier one of another type in the same batch sees
its writes.

A batch that fails is retried one operation per transaction, so a single bad
operation (a constraint it violates) fails alone instead of failing its neighbours.
A batch that fails for the database's availability (`is_transient`) is tried once
more on a new connection, then fails whole: the writes that must not be lost are
written again by their callers (`Store.write_until_committed`), the others are
refused to their clients (HTTP 503, ESME_RSYSERR, ESME_RX_T_APPN to an SMSC).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store.statistics import YoungTables

if TYPE_CHECKING:
    from gateway.store.writer_process import WriterProcess

__all__ = [
    "CommitterClosed",
    "CommitterStats",
    "GroupCommitter",
    "OneByOne",
    "Transactions",
    "WriteOp",
    "WriterLost",
    "is_transient",
    "log_failure",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Transactions handed to a writer process at once (see _send_transaction).
PIPELINE_DEPTH = 2


class CommitterClosed(RuntimeError):
    """The committer is stopped; the write was not made."""


class WriterLost(CommitterClosed):
    """The writer process ended: the transaction in hand may or may not have committed."""


# What the write itself got wrong, and a stopped committer: trying again cannot help.
_PERMANENT = (
    CommitterClosed,
    sa.exc.IntegrityError,
    sa.exc.DataError,
    sa.exc.ProgrammingError,
    sa.exc.NotSupportedError,
)


def is_transient(exc: BaseException | None) -> bool:
    """Whether a write failed for the database's availability (a connection lost or
    refused, a database that is locked or not accepting connections, the writer
    process lost) rather than for what it writes, so that the same write may work
    later. A stopped committer is not transient: its gateway is going away."""
    if isinstance(exc, WriterLost):
        return True
    if isinstance(exc, _PERMANENT):
        return False
    return isinstance(exc, (sa.exc.DBAPIError, sa.exc.TimeoutError, OSError, TimeoutError))


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """Log a failed pass of a background loop: while the database is away
    (`is_transient`) a warning naming the error, not a traceback on every pass;
    anything else at ERROR with its traceback."""
    if is_transient(exc):
        logger.warning(message + " (%s)", *args, type(exc).__name__)
    else:
        logger.error(message, *args, exc_info=exc)


class WriteOp(ABC, Generic[T]):
    """A write that can be batched with others of its type.

    Subclasses are frozen dataclasses carrying the parameters; ``run_batch`` executes a
    list of them on one connection inside the batch's transaction and returns one
    result per operation, in order.
    """

    order: ClassVar[int] = 100
    # Someone waits on it to answer a client (see GroupCommitter._commit).
    urgent: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[T]: ...


@dataclass(frozen=True, slots=True)
class OneByOne:
    """What became of a batch that failed (``error``, the type's name): each write ran
    in a transaction of its own, ``outcomes`` in the batch's order, ``(True, result)``
    or ``(False, exception)`` (see `Transactions.commit`)."""

    error: str
    outcomes: list[tuple[bool, Any]]


@dataclass
class CommitterStats:
    batches: int = 0  # transactions committed
    operations: int = 0  # operations committed
    failed_batches: int = 0
    largest_batch: int = 0


class GroupCommitter:
    """The single writer of the store. ``start()`` before use, ``close()`` at the end."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        window_ms: float = 2.0,
        max_batch: int = 1000,
        writer_engine: Callable[[], AsyncEngine] | None = None,
        writer_sync_engine: Callable[[], sa.Engine] | None = None,
        writer_process: Callable[[], Awaitable[WriterProcess]] | None = None,
    ):
        """With ``writer_engine`` (a factory), transactions run on a thread of their own.

        Each statement of a transaction is a round trip to the database driver;
        run on the application's event loop, every one of them waits for a turn
        of a loop that is busy with thousands of PDUs, and a batch of fifteen
        statements takes tens of milliseconds. The writer thread runs its own
        loop with its own engine (made by the factory, in that thread), so a
        batch costs one hand-over each way.

        With ``writer_process`` (a factory), they run in a process of their
        own instead (see `gateway.store.writer_process`): a thread shares the
        event loop's GIL, and under load waits for it for most of each batch.
        A writer process that ended is replaced for the next batch.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._writer_factory = writer_engine
        self._sync_factory = writer_sync_engine
        self._process_factory = writer_process
        self._process: WriterProcess | None = None
        self._slots = asyncio.Semaphore(PIPELINE_DEPTH)
        self._in_flight: set[asyncio.Future[list[Any] | OneByOne]] = set()
        self._transactions: Transactions | None = None
        # Told (operations, seconds) after each commit: the store's metrics.
        self.on_commit: Callable[[int, float], None] | None = None
        # Told (operations, unavailable) when writes fail: `is_transient`, or what
        # the write got wrong.
        self.on_failure: Callable[[int, bool], None] | None = None
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        self._writer_thread: threading.Thread | None = None
        self._window = window_ms / 1000
        self._max_batch = max_batch
        # Two lines: writes someone waits on to answer a client (accepts) go
        # before the bookkeeping (see _commit).
        self._urgent: deque[tuple[WriteOp[Any], asyncio.Future[Any]]] = deque()
        self._normal: deque[tuple[WriteOp[Any], asyncio.Future[Any]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: Any = None  # asyncio.AbstractEventLoop, set by start()
        self._closing = False
        self.stats = CommitterStats()

    @property
    def pending(self) -> int:
        return len(self._urgent) + len(self._normal)

    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            if self._process_factory is not None:
                self._slots = asyncio.Semaphore(PIPELINE_DEPTH)  # of this loop
                await self._writer_process()
            elif self._writer_thread is None:
                engine, sync_factory = self._engine, self._sync_factory
                factory = self._writer_factory
                if sync_factory is not None:
                    await self._start_writer_thread(lambda: Transactions(engine, sync_factory()))
                elif factory is not None:
                    await self._start_writer_thread(lambda: Transactions(factory()))
                elif self._transactions is None:
                    self._transactions = Transactions(engine)
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(), name="smsgw-group-commit")

    async def _start_writer_thread(self, factory: Callable[[], Transactions]) -> None:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            try:
                self._transactions = factory()
                self._writer_loop = loop
                ready.set_result(None)
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._writer_thread = threading.Thread(target=main, name="smsgw-writer", daemon=True)
        self._writer_thread.start()
        await asyncio.wrap_future(ready)

    async def _in_writer(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the writer thread's loop (or here, without one)."""
        loop = self._writer_loop
        if loop is None:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def submit(self, op: WriteOp[T]) -> T:
        # A submitter cancelled while it waits cancels only its wait: the write is
        # queued and stays in its batch (_commit skips futures already done).
        return await self.submit_nowait(op)

    def submit_nowait(self, op: WriteOp[T]) -> asyncio.Future[T]:
        """Queue `op`; the Future is done when its transaction has committed (or failed).

        Raises CommitterClosed at once when the committer is stopped.
        """
        if self._closing or self._task is None:
            raise CommitterClosed("the store is not accepting writes")
        # The loop the committer runs on, kept: asyncio.get_running_loop() costs
        # more than the rest of this function, three times per message.
        future: asyncio.Future[T] = self._loop.create_future()
        (self._urgent if type(op).urgent else self._normal).append((op, future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Commit everything already submitted, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._task = None
        if self._process is not None:
            process, self._process = self._process, None
            await process.close()
            return
        loop, thread = self._writer_loop, self._writer_thread
        transactions, self._transactions = self._transactions, None
        if loop is None or thread is None:
            if transactions is not None:
                await transactions.drop_connection()
            return
        if transactions is not None:
            await self._in_writer(transactions.close())
        self._writer_loop = self._writer_thread = None
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)

    async def _run(self) -> None:
        while True:
            if not self._urgent and not self._normal:
                if self._closing:
                    break  # everything submitted before close() is committed
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._window > 0 and not self._closing:
                await asyncio.sleep(self._window)
            await self._commit_batch()

    def _take(self, line: deque[tuple[WriteOp[Any], asyncio.Future[Any]]]) -> list[Any]:
        batch: list[Any] = []
        while line and len(batch) < self._max_batch:
            batch.append(line.popleft())
        return batch

    async def _commit_batch(self) -> None:
        """Commit what is queued: the writes someone waits on to answer a client first.

        An accept is answered (submit_sm_resp, HTTP 202) only after its commit;
        the bookkeeping of submit_sm_resp and receipts is not. So accepts get a
        transaction of their own, and the bookkeeping one transaction per kind
        of write, with the accepts that arrived meanwhile committed in between:
        an accept waits for one kind of bookkeeping at most, not all of it.
        Kinds run in their `order`, so a receipt sees the submit_sm_resp of
        the same batch.
        """
        urgent = self._take(self._urgent)
        if urgent:
            await self._commit_one_transaction(urgent)
        groups: dict[type[WriteOp[Any]], list[Any]] = {}
        for item in self._take(self._normal):
            groups.setdefault(type(item[0]), []).append(item)
        for op_type in sorted(groups, key=lambda t: t.order):
            urgent = self._take(self._urgent)
            if urgent:
                await self._commit_one_transaction(urgent)
            await self._commit_one_transaction(groups[op_type])

    async def _commit_one_transaction(
        self, batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]]
    ) -> None:
        if self._process_factory is not None:
            await self._send_transaction(batch)
            return
        assert self._transactions is not None
        started = time.perf_counter()
        try:
            results = await self._in_writer(self._transactions.commit([op for op, _ in batch]))
        except Exception as exc:
            self._fail_all(batch, exc)
            return
        self._settle(batch, results, started)

    async def _send_transaction(
        self, batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]]
    ) -> None:
        """Hand the batch to the writer process without waiting for its commit.

        Up to PIPELINE_DEPTH transactions are in hand at once: the next one waits
        in the socket while the writer runs the current one, so the writer need
        not wait for this loop to take an answer and send the next batch (under
        load a turn of the loop takes milliseconds). What comes meanwhile waits
        here and goes in the batch after.
        """
        await self._slots.acquire()
        try:
            process = await self._writer_process()
            answer = process.send([op for op, _ in batch])
        except BaseException as exc:
            self._slots.release()
            if not isinstance(exc, Exception):
                raise
            self._fail_all(batch, exc)
            return
        started = time.perf_counter()
        self._in_flight.add(answer)
        answer.add_done_callback(functools.partial(self._answered, batch, started))

    def _answered(
        self,
        batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]],
        started: float,
        answer: asyncio.Future[list[Any] | OneByOne],
    ) -> None:
        self._slots.release()
        self._in_flight.discard(answer)
        exc = WriterLost("cancelled") if answer.cancelled() else answer.exception()
        if exc is not None:
            # Also a lost writer's: it may have committed the batch before it
            # ended, so running the writes again could apply them twice.
            self._fail_all(batch, exc)
        else:
            self._settle(batch, answer.result(), started)

    async def _writer_process(self) -> WriterProcess:
        """The writer process, a new one when the last has ended."""
        assert self._process_factory is not None
        if self._process is None or self._process.lost:
            lost, self._process = self._process, None
            if lost is not None:
                await lost.close()
            self._process = await self._process_factory()
            if lost is not None:
                log.warning("a new writer process took over")
        return self._process

    def _fail_all(
        self, batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]], exc: BaseException
    ) -> None:
        self.stats.failed_batches += 1
        if self.on_failure is not None:
            self.on_failure(len(batch), is_transient(exc))
        for _, future in batch:
            _fail(future, exc)

    def _settle(
        self,
        batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]],
        results: list[Any] | OneByOne,
        started: float,
    ) -> None:
        if not isinstance(results, OneByOne):
            self._committed(batch, results, started)
            return
        self.stats.failed_batches += 1
        # The type only: a database error's text carries the parameters
        # (message texts, numbers).
        log.warning(
            "group commit of %d writes failed (%s); retried one by one", len(batch), results.error
        )
        for item, (ok, value) in zip(batch, results.outcomes, strict=True):
            if ok:
                self._committed([item], [value], started)
            else:
                self._fail_all([item], value)

    def _committed(
        self,
        batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]],
        results: list[Any],
        started: float,
    ) -> None:
        self.stats.batches += 1
        self.stats.operations += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        if self.on_commit is not None:
            self.on_commit(len(batch), time.perf_counter() - started)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class Transactions:
    """The writer's one connection and the transactions it runs on it.

    Lives where the transactions run: on the event loop, on the writer thread
    or in the writer process. With ``sync_engine`` (SQLite) the operations run
    over a synchronous connection, so a whole transaction runs straight
    through without suspending.
    """

    def __init__(self, engine: AsyncEngine | None, sync_engine: sa.Engine | None = None) -> None:
        self._engine = engine
        self._sync_engine = sync_engine
        # One connection for the writer's life: checking one out of the pool,
        # and the pool's reset on return, cost two round trips per batch.
        self._conn: AsyncConnection | None = None
        self._young = (
            YoungTables() if engine is not None and engine.dialect.name == "postgresql" else None
        )
        self._analyzing: asyncio.Future[None] | None = None

    async def connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            if self._sync_engine is not None:
                sync_conn = self._sync_engine.connect().execution_options(sqlite_begin="IMMEDIATE")
                # The operations are written against AsyncConnection; this
                # stand-in offers the part of it they use, without suspending.
                self._conn = cast(AsyncConnection, _SyncConnection(sync_conn))
            else:
                assert self._engine is not None
                conn = await self._engine.connect()
                self._conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
        return self._conn

    async def drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        """Drop the connection and dispose of the engine the writer made for itself."""
        if self._analyzing is not None:
            self._analyzing.cancel()
            with contextlib.suppress(BaseException):
                await self._analyzing
        await self.drop_connection()
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        elif self._engine is not None:
            await self._engine.dispose()

    async def commit(self, ops: list[WriteOp[Any]]) -> list[Any] | OneByOne:
        """`run` the batch; when it fails and holds several writes, run each again
        in a transaction of its own, right away, so that one bad write fails alone
        and what comes after the batch still comes after it. Raises only what a
        single write raised, or what the database's absence made the whole batch
        fail with (`is_transient`: after one more try, on a new connection)."""
        try:
            return self._after_commit(ops, await self._run_reconnecting(ops))
        except Exception as exc:
            if len(ops) == 1 or is_transient(exc):
                raise
            error = type(exc).__name__
        outcomes: list[tuple[bool, Any]] = []
        for op in ops:
            try:
                outcomes.append((True, (await self.run([op]))[0]))
            except Exception as exc:
                outcomes.append((False, exc))
        return OneByOne(error, outcomes)

    async def _run_reconnecting(self, ops: list[WriteOp[Any]]) -> list[Any]:
        """`run`, and once more on a new connection when the first try failed for the
        database's availability (a killed backend, a failover). A database that stays
        away fails the batch whole: one write at a time would only ask it as many
        times again."""
        try:
            return await self.run(ops)
        except Exception as exc:
            if not is_transient(exc):
                raise
        return await self.run(ops)

    def _after_commit(self, ops: list[WriteOp[Any]], results: list[Any]) -> list[Any]:
        young = self._young
        if young is not None and young.note(len(ops)) and self._analyzing is None:
            assert self._engine is not None
            # Beside the commits, not between them (see YoungTables.analyze); it
            # runs while the loop runs the next commits.
            self._analyzing = asyncio.ensure_future(young.analyze(self._engine))
            self._analyzing.add_done_callback(self._analyzed)
        return results

    def _analyzed(self, task: asyncio.Future[None]) -> None:
        self._analyzing = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Only the plans suffer; the writes go on.
            log.warning("could not analyze the hot tables: %s", type(exc).__name__)

    async def run(self, ops: list[WriteOp[Any]]) -> list[Any]:
        groups: dict[type[WriteOp[Any]], list[int]] = {}
        for index, op in enumerate(ops):
            groups.setdefault(type(op), []).append(index)
        results: list[Any] = [None] * len(ops)
        conn = await self.connection()
        try:
            async with conn.begin():
                for op_type in sorted(groups, key=lambda t: t.order):
                    indexes = groups[op_type]
                    out = await op_type.run_batch(conn, [ops[i] for i in indexes])
                    for i, result in zip(indexes, out, strict=True):
                        results[i] = result
        except BaseException as exc:
            # The transaction is rolled back. Operations may remember facts about
            # the database in conn.info (ops._NO_UNMATCHED); after a rollback
            # those may be wrong, so they are forgotten. A connection that broke,
            # or that failed for the database's availability, is replaced on the
            # next batch: asyncpg may be left mid-operation by a killed backend
            # without SQLAlchemy taking the connection for invalidated. One that
            # failed for what was written is kept.
            broken = conn.closed or conn.invalidated
            if not broken:
                # (An invalidated connection would reconnect for its info to be read.)
                conn.info.clear()  # it stays with the connection in the pool
            if broken or is_transient(exc):
                await self.drop_connection()
            raise
        return results


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class _SyncConnection:
    """What the operations use of an AsyncConnection, over a synchronous Connection.

    `execute` returns at once (a coroutine that never suspends), so a whole
    transaction runs straight through on the writer thread.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    @property
    def info(self) -> dict[Any, Any]:
        return self._conn.info

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def invalidated(self) -> bool:
        return self._conn.invalidated

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self._conn.execute(statement, parameters, **kwargs)

    def fetchall_raw(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The DBAPI's execute and fetchall: rows in database form (see ops._select)."""
        cursor = self._conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, parameters)
            return cast(list[tuple[Any, ...]], cursor.fetchall())
        finally:
            cursor.close()

    def executemany_raw(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """The DBAPI's executemany with rows already in database form (see ops._insert)."""
        cursor = self._conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    def begin(self) -> _SyncTransaction:
        return _SyncTransaction(self._conn)

    async def close(self) -> None:
        self._conn.close()


class _SyncTransaction:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._transaction: sa.RootTransaction | None = None

    async def __aenter__(self) -> _SyncTransaction:
        self._transaction = self._conn.begin()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._transaction is not None
        self._transaction.__exit__(exc_type, exc, tb)
