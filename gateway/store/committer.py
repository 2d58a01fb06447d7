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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["CommitterClosed", "CommitterStats", "GroupCommitter", "WriteOp"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class CommitterClosed(RuntimeError):
    """The committer is stopped; the write was not made."""


class WriteOp(ABC, Generic[T]):
    """A write that can be batched with others of its type.

    Subclasses are frozen dataclasses carrying the parameters; ``run_batch`` executes a
    list of them on one connection inside the batch's transaction and returns one
    result per operation, in order.
    """

    order: ClassVar[int] = 100

    @classmethod
    @abstractmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Sequence[Self]) -> list[T]: ...


@dataclass
class CommitterStats:
    batches: int = 0  # transactions committed
    operations: int = 0  # operations committed
    failed_batches: int = 0
    largest_batch: int = 0


class GroupCommitter:
    """The single writer of the store. ``start()`` before use, ``close()`` at the end."""

    def __init__(self, engine: AsyncEngine, *, window_ms: float = 2.0, max_batch: int = 1000):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._window = window_ms / 1000
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[WriteOp[Any], asyncio.Future[Any]] | None] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # The writer keeps one connection for its life: checking one out of the
        # pool, and the pool's reset on return, cost two round trips per batch.
        self._conn: AsyncConnection | None = None
        self.stats = CommitterStats()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="smsgw-group-commit")

    async def submit(self, op: WriteOp[T]) -> T:
        if self._closing or self._task is None:
            raise CommitterClosed("the store is not accepting writes")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        # A submitter cancelled while it waits cancels only its wait: the write is
        # queued and stays in its batch (_commit skips futures already done).
        return await future

    async def close(self) -> None:
        """Commit everything already submitted, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._drop_connection()

    async def _connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            if self._window > 0:
                await asyncio.sleep(self._window)
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(batch)
            if stopping:
                # a close() raced ahead of queued writes: drain what is left
                rest = []
                while not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is not None:
                        rest.append(item)
                if rest:
                    await self._commit(rest)

    async def _commit(self, batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._transaction([op for op, _ in batch])
        except Exception as exc:
            self.stats.failed_batches += 1
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            log.warning(
                "group commit of %d writes failed (%r); retrying one by one", len(batch), exc
            )
            for item in batch:
                await self._commit([item])
            return
        self.stats.batches += 1
        self.stats.operations += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _transaction(self, ops: list[WriteOp[Any]]) -> list[Any]:
        groups: dict[type[WriteOp[Any]], list[int]] = {}
        for index, op in enumerate(ops):
            groups.setdefault(type(op), []).append(index)
        results: list[Any] = [None] * len(ops)
        conn = await self._connection()
        try:
            async with conn.begin():
                for op_type in sorted(groups, key=lambda t: t.order):
                    indexes = groups[op_type]
                    out = await op_type.run_batch(conn, [ops[i] for i in indexes])
                    for i, result in zip(indexes, out, strict=True):
                        results[i] = result
        except BaseException:
            # The transaction is rolled back. Operations may remember facts about
            # the database in conn.info (ops._NO_UNMATCHED); after a rollback
            # those may be wrong, so they are forgotten. A connection that broke
            # is replaced on the next batch, one that did not is kept.
            if not conn.closed:
                conn.info.clear()
            if conn.invalidated or conn.closed:
                await self._drop_connection()
            raise
        return results


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
