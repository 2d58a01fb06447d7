"""CPU per message of the store's hot writes, through the real GroupCommitter on SQLite.

    python -m gateway.store_bench [--messages 20000] [--segments 1] [--callback]
                                  [--accept-batch 200] [--submit-batch 200]
                                  [--receipt-batch 100] [--db FILE] [--keep]

On a migrated temporary SQLite file (WAL, the gateway's settings), runs one phase per
kind of write, each as the gateway sends them: ``--messages`` SMPP messages accepted
(registered_delivery=1), one PartUpdate ``submitted`` per part, one ApplyReceipt
``delivered`` per part (which writes the smpp_receipts outbox row), then
MarkSmppReceiptsSent for every receipt (one op per 100 receipts, two ops per
transaction, as the receipt sender writes them). A phase waits for each batch to
commit before sending the next, so every transaction holds exactly one batch.

Printed per phase, in microseconds per message: the writer thread's CPU time
(``time.thread_time`` around each transaction, on the writer thread), the part of it
spent in the sqlite3 driver's raw calls, BEGIN and COMMIT (mostly SQLite's C code,
which runs without the GIL), the rest (the operations' Python and SQLAlchemy: what
the writer takes from the event loop's share of the GIL), the whole process's CPU,
and the wall time. The writer's figures are what to compare between runs: on a busy
machine the wall time and the process CPU (the event loop's side) move around.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.ids import new_message_id
from gateway.lifecycle import Status
from gateway.migrate import upgrade_async
from gateway.store import (
    AcceptMessage,
    ApplyReceipt,
    MarkSmppReceiptsSent,
    NewMessage,
    PartUpdate,
    Store,
    WriteOp,
    utcnow,
)
from gateway.store import committer as committer_module

_UPSTREAM = "sim-a"
_PRICE = 0.0042
# What the dispatcher puts in the first part's detail (dispatch.py, item.choice).
_CHOICE = {"policy": "balanced", "score": 0.912345, "reason": "best score", "explored": False}
_RECEIPTS_PER_MARK = 100
_MARKS_PER_TRANSACTION = 2


@dataclass
class _Meter:
    """CPU seconds on the writer thread; only the writer thread adds to it."""

    writer: float = 0.0
    driver: float = 0.0


_meter = _Meter()


@contextlib.contextmanager
def _metered() -> Iterator[None]:
    """Time, on the writer thread, each transaction and the driver calls within it."""
    transactions_cls = committer_module.Transactions
    sync_cls = committer_module._SyncConnection
    transaction_cls = committer_module._SyncTransaction
    run_transaction = transactions_cls.run
    fetchall_raw = sync_cls.fetchall_raw
    executemany_raw = sync_cls.executemany_raw
    enter, leave = transaction_cls.__aenter__, transaction_cls.__aexit__

    async def timed_transaction(self: Any, ops: list[WriteOp[Any]]) -> list[Any]:
        started = time.thread_time()
        try:
            return await run_transaction(self, ops)
        finally:
            _meter.writer += time.thread_time() - started

    def in_driver(call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            started = time.thread_time()
            try:
                return call(*args)
            finally:
                _meter.driver += time.thread_time() - started

        return timed

    def in_driver_async(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any) -> Any:
            started = time.thread_time()
            try:
                return await call(*args)
            finally:
                _meter.driver += time.thread_time() - started

        return timed

    patches: list[tuple[Any, str, Any]] = [
        (transactions_cls, "run", timed_transaction),
        (sync_cls, "fetchall_raw", in_driver(fetchall_raw)),
        (sync_cls, "executemany_raw", in_driver(executemany_raw)),
        (transaction_cls, "__aenter__", in_driver_async(enter)),
        (transaction_cls, "__aexit__", in_driver_async(leave)),
    ]
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


@dataclass(frozen=True)
class PhaseResult:
    name: str
    count: int  # messages (or receipts) the figures are per
    transactions: int
    writer_us: float
    driver_us: float
    process_us: float
    wall_ms: float

    @property
    def python_us(self) -> float:
        return self.writer_us - self.driver_us

    def line(self) -> str:
        per_batch = self.count / self.transactions if self.transactions else 0.0
        return (
            f"{self.name:<22} {self.count:>7} {per_batch:>7.0f} {self.writer_us:>8.1f}"
            f" {self.driver_us:>8.1f} {self.python_us:>8.1f} {self.process_us:>8.1f}"
            f" {self.wall_ms:>9.0f}"
        )


HEADER = (
    f"{'phase':<22} {'count':>7} {'batch':>7} {'writer':>8} {'driver':>8} {'python':>8}"
    f" {'process':>8} {'wall ms':>9}"
)


async def _phase(
    store: Store, name: str, count: int, batches: Sequence[Sequence[WriteOp[Any]]]
) -> PhaseResult:
    committed = store.committer.stats.batches
    writer, driver = _meter.writer, _meter.driver
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        await asyncio.gather(*(store.write(op) for op in batch))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return PhaseResult(
        name,
        count,
        store.committer.stats.batches - committed,
        (_meter.writer - writer) / count * 1e6,
        (_meter.driver - driver) / count * 1e6,
        cpu / count * 1e6,
        wall * 1000,
    )


def _in_batches(ops: Sequence[WriteOp[Any]], size: int) -> list[Sequence[WriteOp[Any]]]:
    return [ops[start : start + size] for start in range(0, len(ops), size)]


def _pending_receipt_ids(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT id FROM smpp_receipts WHERE sent_at IS NULL ORDER BY id")
        return [row[0] for row in rows]
    finally:
        conn.close()


def _check(path: Path, messages: int, segments: int) -> None:
    """The writes did what they should: every message delivered, every receipt sent."""
    conn = sqlite3.connect(path)
    try:
        (delivered,) = conn.execute(
            "SELECT count(*) FROM messages WHERE status = 'delivered'"
        ).fetchone()
        (unsent,) = conn.execute(
            "SELECT count(*) FROM smpp_receipts WHERE sent_at IS NULL"
        ).fetchone()
        (receipts,) = conn.execute("SELECT count(*) FROM smpp_receipts").fetchone()
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
        (done_parts,) = conn.execute(
            "SELECT count(*) FROM parts WHERE status = 'delivered'"
        ).fetchone()
    finally:
        conn.close()
    problems = []
    if delivered != messages:
        problems.append(f"{delivered} of {messages} messages delivered")
    if done_parts != messages * segments:
        problems.append(f"{done_parts} of {messages * segments} parts delivered")
    if receipts != messages or unsent:
        problems.append(f"{receipts} smpp_receipts, {unsent} unsent")
    if events != 3 * messages:
        problems.append(f"{events} events, expected {3 * messages}")
    if problems:
        raise SystemExit("store_bench: wrong result: " + "; ".join(problems))


async def run(
    path: Path,
    *,
    messages: int,
    segments: int,
    callback: bool,
    accept_batch: int,
    submit_batch: int,
    receipt_batch: int,
) -> list[PhaseResult]:
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(url)
    # On the writer thread, where the meter can see it.
    store = await Store.open_url(url, commit_window_ms=2.0, commit_max_batch=1000, writer="thread")
    results: list[PhaseResult] = []
    try:
        created = await store.create_account(
            "bench",
            "bench-password",
            callback_url="http://127.0.0.1:9/hook" if callback else None,
        )
        account_id = created.account.id
        now = utcnow()
        new = [
            NewMessage(
                id=new_message_id(),
                account_id=account_id,
                interface="smpp",
                source="ACME",
                destination=f"+3460{i:07d}",
                text="bench message " * segments,
                encoding="gsm7",
                data_coding=0,
                segments=segments,
                created_at=now,
                registered_delivery=1,
            )
            for i in range(messages)
        ]
        with _metered():
            results.append(
                await _phase(
                    store,
                    "AcceptMessage",
                    messages,
                    _in_batches([AcceptMessage(m) for m in new], accept_batch),
                )
            )
            submitted_at = now + timedelta(milliseconds=50)
            upstream_ids = [f"{i:016x}" for i in range(messages * segments)]
            updates = [
                PartUpdate(
                    m.id,
                    seqnum,
                    Status.SUBMITTED,
                    submitted_at,
                    upstream=_UPSTREAM,
                    upstream_message_id=upstream_ids[i * segments + seqnum - 1],
                    price=_PRICE,
                    detail={"price": _PRICE, **_CHOICE} if seqnum == 1 else {"price": _PRICE},
                )
                for i, m in enumerate(new)
                for seqnum in range(1, segments + 1)
            ]
            results.append(
                await _phase(
                    store, "PartUpdate submitted", messages, _in_batches(updates, submit_batch)
                )
            )
            delivered_at = now + timedelta(seconds=3)
            receipts = [
                ApplyReceipt(
                    _UPSTREAM,
                    uid,
                    Status.DELIVERED,
                    delivered_at,
                    received_at=delivered_at,
                    detail={
                        "upstream_message_id": uid,
                        "stat": "DELIVRD",
                        "done_date": "2024-05-01T12:00:00",
                    },
                )
                for uid in upstream_ids
            ]
            results.append(
                await _phase(
                    store, "ApplyReceipt delivered", messages, _in_batches(receipts, receipt_batch)
                )
            )
            ids = _pending_receipt_ids(path)
            sent_at = delivered_at + timedelta(milliseconds=20)
            marks = [
                MarkSmppReceiptsSent(tuple(ids[start : start + _RECEIPTS_PER_MARK]), sent_at)
                for start in range(0, len(ids), _RECEIPTS_PER_MARK)
            ]
            results.append(
                await _phase(
                    store,
                    "MarkSmppReceiptsSent",
                    max(1, len(ids)),
                    _in_batches(marks, _MARKS_PER_TRANSACTION),
                )
            )
    finally:
        await store.close()
    _check(path, messages, segments)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.store_bench", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--segments", type=int, default=1, help="parts per message")
    parser.add_argument(
        "--callback", action="store_true", help="the account has a callback URL (webhook rows)"
    )
    parser.add_argument("--accept-batch", type=int, default=200)
    parser.add_argument("--submit-batch", type=int, default=200)
    parser.add_argument("--receipt-batch", type=int, default=100)
    parser.add_argument("--db", type=Path, help="SQLite file to use (must not exist)")
    parser.add_argument("--keep", action="store_true", help="keep the database file")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.segments < 1:
        parser.error("--messages and --segments must be at least 1")

    with contextlib.ExitStack() as stack:
        if args.db is not None:
            if args.db.exists():
                parser.error(f"{args.db} exists already")
            path = args.db
        else:
            directory = tempfile.mkdtemp(prefix="smsgw-store-bench-")
            path = Path(directory) / "bench.db"
            if not args.keep:
                stack.callback(_remove_database, path)
        results = asyncio.run(
            run(
                path,
                messages=args.messages,
                segments=args.segments,
                callback=args.callback,
                accept_batch=args.accept_batch,
                submit_batch=args.submit_batch,
                receipt_batch=args.receipt_batch,
            )
        )
    print(
        f"{args.messages} messages, {args.segments} part(s) each"
        f"{', with webhooks' if args.callback else ''}; µs of CPU per message"
        " (MarkSmppReceiptsSent: per receipt)"
    )
    print(HEADER)
    for result in results:
        print(result.line())
    writer = sum(r.writer_us for r in results)
    python = sum(r.python_us for r in results)
    print(f"{'all four':<22} {'':>7} {'':>7} {writer:>8.1f} {writer - python:>8.1f} {python:>8.1f}")
    if args.keep or args.db is not None:
        print(f"database: {path}")


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


if __name__ == "__main__":
    main()
