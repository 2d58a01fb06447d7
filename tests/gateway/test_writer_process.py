"""The group committer's writer process: results and errors cross over, it ends with
its store or its gateway (even one killed by SIGKILL), and one that dies is replaced."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.lifecycle import IllegalTransition, Status
from gateway.store import Store, WriterLost
from gateway.store.tables import messages
from gateway.store.writer_process import WriterProcess
from tests.gateway.conftest import BOTH, Database
from tests.gateway.test_store import (
    _account,
    _message,
)
from tests.gateway.test_store import (
    test_multipart_message as test_thread_writer_multipart_message,
)
from tests.gateway.test_store import (
    test_receipt_before_submit_sm_resp_is_held as test_thread_writer_early_receipt,
)
from tests.gateway.test_store import (
    test_submit_receipts_and_timeline as test_thread_writer_timeline,
)

__all__ = [
    "test_thread_writer_early_receipt",
    "test_thread_writer_multipart_message",
    "test_thread_writer_timeline",
]


@pytest.fixture
async def store(db: Database) -> AsyncIterator[Store]:
    """The imported store tests run here on the writer thread (their own module runs
    them on the writer process, the default)."""
    s = await Store.open_url(db.url, engine_options=db.engine_options, writer="thread")
    try:
        assert s.committer._process is None
        yield s
    finally:
        await s.close()


async def _process_store(db: Database) -> Store:
    s = await Store.open_url(db.url, engine_options=db.engine_options)
    assert s.committer._process is not None
    return s


def _writer_pid(store: Store) -> int:
    process = store.committer._process
    assert process is not None
    return process.pid


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _running(pid):
        assert time.monotonic() < deadline, f"writer process {pid} still runs"
        await asyncio.sleep(0.05)


@BOTH
async def test_results_and_errors_cross_over_with_their_types(db: Database) -> None:
    store = await _process_store(db)
    try:
        account_id = await _account(store)
        m = _message(account_id)
        result = await store.accept(m)
        assert result.message_id == m.id and result.status is Status.ACCEPTED
        with pytest.raises(IllegalTransition) as raised:
            await store.transition(m.id, Status.DELIVERED)
        assert (raised.value.current, raised.value.new) == (Status.ACCEPTED, Status.DELIVERED)
        record = await store.get_message(m.id)
        assert record is not None and record.status is Status.ACCEPTED
    finally:
        await store.close()


@BOTH
async def test_the_writer_ends_with_its_store(db: Database) -> None:
    store = await _process_store(db)
    pid = _writer_pid(store)
    assert _running(pid)
    account_id = await _account(store)
    queued = [store.accept(_message(account_id)) for _ in range(50)]
    tasks = [asyncio.ensure_future(q) for q in queued]
    await asyncio.sleep(0)
    await store.close()  # commits what is queued, then lets the writer exit
    assert all(t.done() and t.exception() is None for t in tasks)
    await _wait_gone(pid)


async def test_a_writer_that_dies_is_replaced(db: Database) -> None:
    store = await _process_store(db)
    try:
        account_id = await _account(store)
        before = _message(account_id)
        await store.accept(before)
        pid = _writer_pid(store)
        os.kill(pid, signal.SIGSTOP)
        in_hand = asyncio.ensure_future(store.accept(_message(account_id)))
        await asyncio.sleep(0.2)  # sent, not answered
        assert not in_hand.done()
        os.kill(pid, signal.SIGKILL)
        # Nothing says whether the transaction in hand committed: it fails.
        with pytest.raises(WriterLost):
            await in_hand
        await _wait_gone(pid)
        after = _message(account_id)
        assert (await store.accept(after)).status is Status.ACCEPTED
        assert _writer_pid(store) != pid
        for m in (before, after):
            record = await store.get_message(m.id)
            assert record is not None and record.status is Status.ACCEPTED
    finally:
        await store.close()


async def test_the_writer_ends_when_its_gateway_is_killed(db: Database, tmp_path: Path) -> None:
    """SIGKILL leaves no writer behind, and what was acknowledged stays committed."""
    script = tmp_path / "holder.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            from gateway.store import Store
            from gateway.store.records import NewMessage, utcnow

            async def main():
                store = await Store.open_url({db.url!r})
                created = await store.create_account("acme", "secret-pw")
                await store.accept(NewMessage(
                    id="m-acked", account_id=created.account.id, interface="http",
                    source="ACME", destination="+34600123456", text="hello",
                    encoding="gsm7", data_coding=0, segments=1, created_at=utcnow(),
                ))
                print(store.committer._process.pid, flush=True)
                await asyncio.sleep(3600)

            if __name__ == "__main__":  # the writer's process imports this file too
                asyncio.run(main())
            """
        )
    )
    holder = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 60)
        pid = int(line)
        assert _running(pid)
        holder.kill()
        await asyncio.to_thread(holder.wait)
        await _wait_gone(pid)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    engine = sa.create_engine(db.url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            status = conn.execute(
                sa.select(messages.c.status).where(messages.c.id == "m-acked")
            ).scalar_one()
        assert status == "accepted"
    finally:
        engine.dispose()


async def test_a_database_that_cannot_be_opened_fails_the_start(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'smsgw.db'}"
    with pytest.raises(sa.exc.OperationalError):
        await WriterProcess.start(url)


def test_the_writer_logs_like_its_gateway(tmp_path: Path) -> None:
    """What the writer process logs reaches the gateway's stderr, in its format
    and at its level, with numbers masked."""
    script = tmp_path / "logs.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, logging
            from gateway.logs import configure_logging
            from gateway.migrate import upgrade_async
            from gateway.store.committer import WriteOp
            from gateway.store.writer_process import WriterProcess

            class Shout(WriteOp[int]):
                @classmethod
                async def run_batch(cls, conn, ops):
                    log = logging.getLogger("gateway.store.test")
                    log.info("in the writer for +34600123456")
                    log.debug("not at INFO")
                    return [1 for _ in ops]

            async def main():
                url = "sqlite+aiosqlite:///{tmp_path / "logs.db"}"
                await upgrade_async(url)
                configure_logging("INFO", json=True)
                writer = await WriterProcess.start(url)
                print(await writer.send([Shout()]), flush=True)
                await writer.close()

            if __name__ == "__main__":  # the writer's process imports this file too
                asyncio.run(main())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1]"
    lines = [json.loads(line) for line in done.stderr.splitlines() if "gateway.store.test" in line]
    assert [(r["level"], r["logger"]) for r in lines] == [("INFO", "gateway.store.test")]
    assert lines[0]["msg"] == "in the writer for +34600***456"
