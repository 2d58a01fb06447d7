"""A database that goes away for a while: what was acknowledged still ends final.

`Store.write_until_committed` tries a write again while it fails for the database's
availability (`is_transient`), and raises what the write itself got wrong. End to end
on PostgreSQL, a database that refuses connections for a second and a half in the
middle of a load (its sessions killed) costs the clients 503s (HTTP) and RSYSERR
(SMPP) and nothing else: every message that was answered 202 or ROK is delivered
without a restart, and no receipt is left unmatched (a submit_sm_resp that could
not be recorded is recorded once it is back). On SQLite, the same for a writer
process killed twice in the middle of a load.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import aiohttp
import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

import smpp
from gateway.app import Gateway
from gateway.store import CommitterClosed, Store, WriteOp, WriterLost, is_transient
from gateway.store.tables import messages, unmatched_receipts
from smpp import CommandStatus
from smpp.aio import SmppClient

from .conftest import PG_DATABASE, PG_HOST, PG_PORT
from .e2e import (
    acme_esme,
    base_url,
    bearer,
    postgres_database,
    reminder,
    running,
    settings_for,
    wait_counts,
)

_GONE = sa.exc.OperationalError("INSERT ...", None, ConnectionResetError("connection reset"))


def test_what_is_transient() -> None:
    assert is_transient(_GONE)
    assert is_transient(sa.exc.DBAPIError("SELECT 1", None, OSError("refused")))
    assert is_transient(WriterLost("the writer process ended"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(sa.exc.IntegrityError("INSERT ...", None, ValueError("dup")))
    assert not is_transient(sa.exc.DataError("INSERT ...", None, ValueError("too long")))
    assert not is_transient(CommitterClosed("stopped"))
    assert not is_transient(LookupError("no such message"))
    assert not is_transient(None)


# How often each key's write fails before it works (writer thread: same process).
_FAILURES: dict[str, list[BaseException]] = {}
_ATTEMPTS: Counter[str] = Counter()


@dataclass(frozen=True)
class _Flaky(WriteOp[str]):
    key: str

    order: ClassVar[int] = 99

    @classmethod
    async def run_batch(cls, conn: AsyncConnection, ops: Any) -> list[str]:
        batch: list[Self] = list(ops)
        for op in batch:
            _ATTEMPTS[op.key] += 1
            failures = _FAILURES.get(op.key)
            if failures:
                raise failures.pop(0)
        return [op.key for op in batch]


@pytest.fixture
async def thread_store(tmp_path: Path) -> Any:
    from gateway.migrate import upgrade_async

    url = f"sqlite+aiosqlite:///{tmp_path / 'outage.db'}"
    await upgrade_async(url)
    store = await Store.open_url(url, writer="thread", commit_window_ms=0.5)
    try:
        yield store
    finally:
        await store.close()


async def test_a_write_is_tried_again_while_the_database_is_away(thread_store: Store) -> None:
    _FAILURES["away"] = [_GONE, _GONE, _GONE]
    result = await thread_store.write_until_committed(
        _Flaky("away"), backoff_s=0.01, max_backoff_s=0.02
    )
    assert result == "away"
    assert _ATTEMPTS["away"] == 4


async def test_an_attempt_already_made_counts(thread_store: Store) -> None:
    _FAILURES["later"] = []
    result = await thread_store.write_until_committed(_Flaky("later"), _GONE, backoff_s=0.01)
    assert result == "later" and _ATTEMPTS["later"] == 1


async def test_what_the_write_got_wrong_is_not_tried_again(thread_store: Store) -> None:
    wrong = sa.exc.IntegrityError("INSERT ...", None, ValueError("duplicate key"))
    _FAILURES["wrong"] = [_GONE, wrong]
    with pytest.raises(sa.exc.IntegrityError):
        await thread_store.write_until_committed(_Flaky("wrong"), backoff_s=0.01)
    assert _ATTEMPTS["wrong"] == 2
    with pytest.raises(LookupError):
        await thread_store.write_until_committed(_Flaky("x"), LookupError("no such message"))
    assert _ATTEMPTS["x"] == 0


async def _statuses_and_unmatched(gateway: Gateway) -> tuple[dict[str, int], int]:
    """Messages per status, and receipts still waiting for their part."""
    async with gateway.store.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(messages.c.status, sa.func.count()).group_by(messages.c.status)
        )
        statuses = {status: count for status, count in rows}
        waiting = (
            await conn.execute(sa.select(sa.func.count()).select_from(unmatched_receipts))
        ).scalar_one()
    return statuses, waiting


@pytest.mark.postgres
async def test_a_database_outage_loses_no_acknowledged_message(tmp_path: Path) -> None:
    async with postgres_database() as url:
        database = url.rsplit("/", 1)[1]
        user = url.split("//", 1)[1].split("@", 1)[0]
        settings = settings_for(tmp_path, url=url)
        async with running(settings) as gateway, aiohttp.ClientSession() as http:
            accepted: list[str] = []
            answers: Counter[tuple[int, str]] = Counter()
            reads: Counter[int | str] = Counter()
            readiness: list[int] = []

            async def post(i: int) -> None:
                async with http.post(
                    f"{base_url(gateway)}/v1/messages",
                    json={"to": "+34600123456", "from": "ACME", "text": f"reminder {i}"},
                    headers=bearer(),
                ) as r:
                    body = await r.json()
                    if r.status == 202:
                        accepted.append(body["id"])
                        answers[(202, "")] += 1
                    else:
                        answers[(r.status, body["error"]["code"])] += 1
                if accepted and i % 5 == 0:  # reads too: 200, or 503 while it is away
                    async with http.get(
                        f"{base_url(gateway)}/v1/messages/{accepted[0]}", headers=bearer()
                    ) as r:
                        body = await r.json()
                        reads[r.status if r.status == 200 else body["error"]["code"]] += 1

            async def outage() -> None:
                admin = await asyncpg.connect(
                    host=PG_HOST, port=PG_PORT, user=user, database=PG_DATABASE
                )
                try:
                    await asyncio.sleep(0.5)
                    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                        database,
                    )
                    await asyncio.sleep(0.3)
                    async with http.get(f"{base_url(gateway)}/readyz") as r:
                        readiness.append(r.status)
                    await asyncio.sleep(1.2)
                finally:
                    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                    await admin.close()

            smpp_answers: Counter[int] = Counter()
            over_smpp: set[str] = set()
            receipted: Counter[str] = Counter()

            async def on_deliver_sm(pdu: smpp.DeliverSm) -> int:
                assert pdu.receipted_message_id is not None
                receipted[pdu.receipted_message_id] += 1
                return 0

            async def submit(esme: SmppClient, i: int) -> None:
                resp = await esme.submit_sm(reminder(f"reminder {i}", registered_delivery=1))
                smpp_answers[resp.command_status] += 1
                if resp.command_status == CommandStatus.ROK:
                    accepted.append(resp.message_id)
                    over_smpp.add(resp.message_id)

            async with acme_esme(
                gateway, bind="transceiver", window=20, on_deliver_sm=on_deliver_sm
            ) as esme:
                down = asyncio.create_task(outage())
                start, after, back = 0, 0, 0
                # Before, during, and for 15 rounds after it (about half a second).
                while after < 15:
                    await asyncio.gather(
                        *(post(i) for i in range(start, start + 10)),
                        *(submit(esme, i) for i in range(start + 10, start + 20)),
                    )
                    start += 20
                    if down.done():
                        after += 1
                        if after == 1:
                            back = len(accepted)
                    await asyncio.sleep(0.01)
                await down
                assert len(accepted) > back, "nothing accepted once the database was back"
                # Every message accepted over SMPP gets its receipt, through the outage.
                async with asyncio.timeout(30):
                    while not over_smpp <= set(receipted):
                        await asyncio.sleep(0.05)
            # RSYSERR is the temporary refusal (the ESME sends it again).
            assert set(smpp_answers) <= {CommandStatus.ROK, CommandStatus.RSYSERR}, smpp_answers
            assert smpp_answers[CommandStatus.RSYSERR] > 0

            assert set(answers) <= {(202, ""), (503, "store_unavailable")}, answers
            assert set(reads) <= {200, "store_unavailable"} and reads[200] > 0, reads
            async with http.get(f"{base_url(gateway)}/readyz") as r:
                readiness.append(r.status)
            assert readiness == [503, 200]  # not ready while the database is away
            assert answers[(503, "store_unavailable")] > 0, "the outage was not felt"
            assert len(accepted) > 100, answers
            await wait_counts(gateway, lambda c: c.get("delivered", 0) == len(accepted), timeout=30)
            statuses, waiting = await _statuses_and_unmatched(gateway)
            assert statuses == {"delivered": len(accepted)}
            assert waiting == 0
            failed = gateway.metrics.registry.get_sample_value(
                "smsgw_store_write_failures_total", {"reason": "unavailable"}
            )
            assert failed is not None and failed > 0


async def test_a_killed_writer_process_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """SQLite's outage: the writer process dies (SIGKILL) mid-load. What it had in
    hand fails with WriterLost, a new writer takes over, and every message that was
    answered 202 is delivered without a restart."""
    async with running(settings_for(tmp_path)) as gateway, aiohttp.ClientSession() as http:
        accepted: list[str] = []
        answers: Counter[int] = Counter()

        async def post(i: int) -> None:
            async with http.post(
                f"{base_url(gateway)}/v1/messages",
                json={"to": "+34600123456", "from": "ACME", "text": f"reminder {i}"},
                headers=bearer(),
            ) as r:
                answers[r.status] += 1
                if r.status == 202:
                    accepted.append((await r.json())["id"])

        killed: list[int] = []

        async def kill_the_writer() -> None:
            await asyncio.sleep(0.005)  # while the batch's accepts are in its hands
            process = gateway.store.committer._process
            assert process is not None
            killed.append(process.pid)
            os.kill(process.pid, signal.SIGKILL)

        for start in range(0, 1200, 40):
            # Twice: the second kills the writer that took over from the first.
            kill = [kill_the_writer()] if start in (200, 600) else []
            await asyncio.gather(*(post(i) for i in range(start, start + 40)), *kill)
        assert len(set(killed)) == 2
        # An accept the writer had in hand when it died: 503, never a 500.
        assert set(answers) <= {202, 503}, answers
        assert answers[202] > 1000
        await wait_counts(gateway, lambda c: c.get("delivered", 0) == len(accepted), timeout=30)
        statuses, waiting = await _statuses_and_unmatched(gateway)
        assert statuses == {"delivered": len(accepted)}
        assert waiting == 0
