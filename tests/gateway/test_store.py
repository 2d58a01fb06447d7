from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from gateway.ids import new_message_id
from gateway.lifecycle import IllegalTransition, Status
from gateway.store import (
    AcceptMessage,
    ApplyReceipt,
    CancelOutcome,
    CommitterClosed,
    DeferMessage,
    NewMessage,
    PartUpdate,
    Store,
    WebhookAttempt,
    utcnow,
)
from gateway.store.tables import accounts, smpp_receipts, unmatched_receipts
from tests.gateway.conftest import BOTH

pytestmark = BOTH


def _message(account_id: int, **kw: object) -> NewMessage:
    values: dict[str, object] = {
        "id": new_message_id(),
        "account_id": account_id,
        "interface": "http",
        "source": "ACME",
        "destination": "+34600123456",
        "text": "hello",
        "encoding": "gsm7",
        "data_coding": 0,
        "segments": 1,
        "created_at": utcnow(),
    }
    values.update(kw)
    return NewMessage(**values)  # type: ignore[arg-type]


async def _account(store: Store, system_id: str = "acme", **kw: object) -> int:
    created = await store.create_account(system_id, "secret-pw", **kw)  # type: ignore[arg-type]
    return created.account.id


async def test_group_commit_batches_concurrent_accepts(store: Store) -> None:
    account_id = await _account(store)
    committed_before = store.committer.stats.batches
    msgs = [_message(account_id) for _ in range(200)]
    seen_committed: list[bool] = []

    async def submit(m: NewMessage) -> None:
        result = await store.accept(m)
        assert result.message_id == m.id and result.status is Status.ACCEPTED
        # answered only after commit: a separate connection sees the row already
        seen_committed.append(await store.get_message(m.id) is not None)

    await asyncio.gather(*(submit(m) for m in msgs))
    transactions = store.committer.stats.batches - committed_before
    assert transactions <= 20, transactions  # far fewer than 200
    assert store.committer.stats.largest_batch >= 10
    assert all(seen_committed) and len(seen_committed) == 200
    counts = await store.count_by_status()
    assert counts[Status.ACCEPTED] == 200


async def test_message_round_trip_and_account_scope(store: Store) -> None:
    acme = await _account(store, "acme")
    other = await _account(store, "other")
    send_at = utcnow() + timedelta(hours=1)
    m = _message(acme, send_at=send_at, client_ref="ref-1", segments=2)
    result = await store.accept(m)
    assert result.status is Status.SCHEDULED
    got = await store.get_message(m.id, acme)
    assert got is not None
    assert got.status is Status.SCHEDULED and got.client_ref == "ref-1"
    assert got.send_at == send_at and got.send_at.tzinfo is not None  # exact, aware UTC
    assert got.created_at == m.created_at
    assert [e.status for e in got.events] == [Status.SCHEDULED]
    assert await store.get_message(m.id, other) is None  # another account's: invisible
    assert await store.due_messages(utcnow()) == []
    due = await store.due_messages(send_at)
    assert [d.id for d in due] == [m.id]
    assert [u.id for u in await store.unsent_messages()] == [m.id]


async def test_submit_receipts_and_timeline(store: Store) -> None:
    acme = await _account(store, callback_url="https://acme.example/hook")
    m = _message(acme, interface="smpp", registered_delivery=0x11)
    await store.accept(m)
    t = utcnow()
    changes = await store.part_update(
        PartUpdate(
            m.id, 1, Status.SUBMITTED, t, upstream="sim", upstream_message_id="6699", price=0.01
        )
    )
    assert [c.status for c in changes] == [Status.SUBMITTED]
    assert changes[0].route == "sim"
    part = await store.find_part("sim", "0001A2B")  # hex spelling of the same id
    assert part is not None and part.message_id == m.id
    r1 = await store.apply_receipt(
        ApplyReceipt("sim", "6699", Status.ENROUTE, t + timedelta(seconds=1))
    )
    assert r1.matched and [c.status for c in r1.changes] == [Status.ENROUTE]
    r2 = await store.apply_receipt(
        ApplyReceipt(
            "sim", "6699", Status.DELIVERED, t + timedelta(seconds=2), detail={"stat": "DELIVRD"}
        )
    )
    assert [c.status for c in r2.changes] == [Status.DELIVERED]
    late = await store.apply_receipt(
        ApplyReceipt("sim", "6699", Status.ENROUTE, t + timedelta(seconds=3))
    )
    assert late.matched and late.changes == ()  # a late ENROUTE after DELIVRD changes nothing
    got = await store.get_message(m.id, acme)
    assert got is not None
    assert got.status is Status.DELIVERED
    assert got.left_infrastructure_at == t
    assert got.handed_to_carrier_at == t + timedelta(seconds=1)
    assert got.delivered_at == t + timedelta(seconds=2)
    assert got.route == "sim" and got.price == 0.01
    assert [e.status for e in got.events] == [
        Status.ACCEPTED,
        Status.SUBMITTED,
        Status.ENROUTE,
        Status.DELIVERED,
    ]
    assert got.events[1].detail["route"] == "sim"
    assert got.events[1].detail["upstream_message_id"] == "6699"
    assert got.events[3].detail["stat"] == "DELIVRD"
    # outboxes written in the same transactions
    later = utcnow() + timedelta(seconds=10)
    hooks = await store.due_webhooks(later)
    assert [json.loads(h.body)["status"] for h in hooks] == ["submitted", "enroute", "delivered"]
    await store.write(WebhookAttempt(hooks[0].id, utcnow(), delivered=True))
    await store.write(
        WebhookAttempt(
            hooks[1].id,
            utcnow(),
            delivered=False,
            error="500",
            next_attempt_at=utcnow() + timedelta(minutes=1),
        )
    )
    assert [h.id for h in await store.due_webhooks(later)] == [hooks[2].id]
    receipts = await store.pending_smpp_receipts(acme, not_before=t - timedelta(days=1))
    assert [r.status for r in receipts] == [Status.ENROUTE, Status.DELIVERED]


async def test_receipt_before_submit_sm_resp_is_held(store: Store) -> None:
    acme = await _account(store)
    m = _message(acme)
    await store.accept(m)
    t = utcnow()
    early = await store.apply_receipt(ApplyReceipt("sim", "ABC", Status.DELIVERED, t))
    assert not early.matched
    async with store.engine.connect() as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(unmatched_receipts))
        ).scalar() == 1
    changes = await store.part_update(
        PartUpdate(
            m.id,
            1,
            Status.SUBMITTED,
            t - timedelta(milliseconds=5),
            upstream="sim",
            upstream_message_id="abc",
        )
    )
    assert [c.status for c in changes] == [Status.SUBMITTED, Status.DELIVERED]
    got = await store.get_message(m.id)
    assert got is not None and got.status is Status.DELIVERED
    async with store.engine.connect() as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(unmatched_receipts))
        ).scalar() == 0


async def test_multipart_message(store: Store) -> None:
    acme = await _account(store)
    m = _message(acme, segments=2)
    await store.accept(m)
    t = utcnow()
    first, second = await asyncio.gather(
        store.part_update(
            PartUpdate(m.id, 1, Status.SUBMITTED, t, upstream="a", upstream_message_id="1")
        ),
        store.part_update(
            PartUpdate(
                m.id,
                2,
                Status.SUBMITTED,
                t + timedelta(seconds=1),
                upstream="a",
                upstream_message_id="2",
            )
        ),
    )
    assert [c.status for c in (*first, *second)] == [Status.SUBMITTED]
    r = await store.apply_receipt(
        ApplyReceipt("a", "1", Status.DELIVERED, t + timedelta(seconds=2))
    )
    assert r.changes == ()  # part 2 is not delivered yet
    r = await store.apply_receipt(
        ApplyReceipt("a", "2", Status.DELIVERED, t + timedelta(seconds=3))
    )
    assert [c.status for c in r.changes] == [Status.DELIVERED]
    got = await store.get_message(m.id)
    assert got is not None
    assert got.left_infrastructure_at == t + timedelta(seconds=1)
    assert got.delivered_at == t + timedelta(seconds=3)
    assert [p.status for p in got.parts] == [Status.DELIVERED, Status.DELIVERED]


async def test_cancel_and_illegal_transitions(store: Store) -> None:
    acme = await _account(store, "acme")
    other = await _account(store, "other")
    m = _message(acme)
    await store.accept(m)
    assert await store.cancel(other, m.id) is CancelOutcome.NOT_FOUND
    assert await store.cancel(acme, m.id) is CancelOutcome.CANCELED
    assert await store.cancel(acme, m.id) is CancelOutcome.CANCELED
    n = _message(acme)
    await store.accept(n)
    await store.part_update(
        PartUpdate(n.id, 1, Status.SUBMITTED, utcnow(), upstream="a", upstream_message_id="x")
    )
    assert await store.cancel(acme, n.id) is CancelOutcome.TOO_LATE
    # an illegal change fails alone; a concurrent good write in the same batch commits
    bad = store.transition(n.id, Status.CANCELED)
    good = store.accept(_message(acme))
    results = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(results[0], IllegalTransition)
    assert not isinstance(results[1], BaseException)
    assert await store.transition(m.id, Status.FAILED) is None  # final: ignored


async def test_idempotency_keys(store: Store) -> None:
    acme = await _account(store, "acme")
    other = await _account(store, "other")
    first = _message(acme)
    response = json.dumps({"id": first.id, "status": "accepted"})
    # two concurrent uses of one key land in one batch: one message only
    a, b = await asyncio.gather(
        store.write(AcceptMessage(first, "key-1", response)),
        store.write(AcceptMessage(_message(acme), "key-1", "ignored")),
    )
    assert a.replayed_response is None and b.replayed_response == response
    c = await store.write(AcceptMessage(_message(acme), "key-1", "ignored"))
    assert c.replayed_response == response and c.message_id == first.id
    d = await store.write(AcceptMessage(_message(other), "key-1", "theirs"))
    assert d.replayed_response is None  # keys are per account
    assert await store.get_idempotent_response(acme, "key-1") == response
    assert (await store.count_by_status())[Status.ACCEPTED] == 2


async def test_accounts_never_store_secrets(store: Store) -> None:
    created = await store.create_account("acme", "pw-1234", tps=5)
    assert created.account.tps == 5 and len(created.api_key) >= 32
    async with store.engine.connect() as conn:
        row = (await conn.execute(sa.select(accounts))).one()
    dump = repr(tuple(row))
    assert "pw-1234" not in dump and created.api_key not in dump
    assert row.password_hash.startswith("scrypt$")
    assert await store.authenticate_password("acme", "pw-1234") == created.account
    assert await store.authenticate_password("acme", "wrong") is None
    assert await store.authenticate_password("nobody", "pw-1234") is None
    assert await store.authenticate_api_key(created.api_key) == created.account
    assert await store.authenticate_api_key(created.api_key) == created.account  # cached
    assert await store.authenticate_api_key("not-a-key") is None
    from gateway.store import AccountExists

    with pytest.raises(AccountExists):
        await store.create_account("acme", "x")


async def test_smpp_receipts_only_when_asked(store: Store) -> None:
    acme = await _account(store)
    m = _message(acme, interface="smpp", registered_delivery=0)
    await store.accept(m)
    await store.part_update(
        PartUpdate(m.id, 1, Status.SUBMITTED, utcnow(), upstream="a", upstream_message_id="1")
    )
    await store.apply_receipt(ApplyReceipt("a", "1", Status.DELIVERED, utcnow()))
    async with store.engine.connect() as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(smpp_receipts))
        ).scalar() == 0


async def test_close_flushes_queued_writes(store: Store) -> None:
    acme = await _account(store)
    msgs = [_message(acme) for _ in range(50)]
    tasks = [asyncio.create_task(store.accept(m)) for m in msgs]
    await asyncio.sleep(0)
    await store.committer.close()
    results = await asyncio.gather(*tasks)
    assert [r.message_id for r in results] == [m.id for m in msgs]
    with pytest.raises(CommitterClosed):
        await store.accept(_message(acme))
    await store.committer.start()
    assert (await store.accept(_message(acme))).status is Status.ACCEPTED


async def test_defer_and_purge(store: Store) -> None:
    acme = await _account(store)
    m = _message(acme)
    await store.accept(m)
    later = utcnow() + timedelta(seconds=30)
    assert await store.write(DeferMessage(m.id, later, utcnow(), error="0x00000058")) is True
    assert await store.due_messages(utcnow()) == []
    (due,) = await store.due_messages(later)
    assert due.attempts == 1 and due.error == "0x00000058"
    await store.apply_receipt(ApplyReceipt("sim", "never", Status.DELIVERED, utcnow()))
    await store.purge(utcnow() + timedelta(days=4))
    async with store.engine.connect() as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(unmatched_receipts))
        ).scalar() == 0
