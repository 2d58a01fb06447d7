"""Reports and listings over a seeded store, against a hand count of the same rows.

Messages are inserted directly into the messages table with chosen times, statuses,
routes and prices, so every expected number is computed here from the same list.
The HTTP API runs on a real socket with the reports routes registered.
"""

from __future__ import annotations

import base64
import csv
import io
import random
import statistics
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from gateway import reports
from gateway.http_api import HttpDeps, create_app, start_http
from gateway.lifecycle import Status
from gateway.messages import MessageService
from gateway.metrics import Metrics
from gateway.ratelimit import TpsLimiter
from gateway.store import Account, MessageRecord, NewMessage, Store, format_time
from gateway.store.tables import messages
from routing.e164 import calling_code
from tests.gateway.conftest import BOTH

ADMIN_KEY = "admin-secret-key"
BASE = datetime(2024, 5, 1, tzinfo=UTC)
ROUTES = {"agg-a": 0.04, "agg-b": 0.05, "agg-c": 0.07}
PREFIXES = ("34", "44", "1", "49", "351", "7", "999")
LEFT_US = {"submitted", "enroute", "delivered", "undelivered", "rejected"}


class NoDispatch:
    full = False

    def enqueue_new(self, message: NewMessage, account: Account | None = None) -> None:
        raise AssertionError("reports never send")

    def enqueue_record(self, record: MessageRecord) -> None:
        raise AssertionError("reports never send")

    def discard(self, message_id: str) -> bool:
        return False


@dataclass
class Seeded:
    session: aiohttp.ClientSession
    rows: list[dict[str, Any]]
    keys: dict[str, str]  # system_id -> API key
    ids: dict[str, int]  # system_id -> account id

    def auth(self, who: str) -> dict[str, str]:
        key = ADMIN_KEY if who == "admin" else self.keys[who]
        return {"Authorization": f"Bearer {key}"}

    async def get(self, path: str, who: str, **params: str) -> Any:
        async with self.session.get(path, params=params, headers=self.auth(who)) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


def _us(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _rows(ids: dict[str, int]) -> list[dict[str, Any]]:
    """About 400 messages over three days (plus a few just outside), two accounts."""
    rnd = random.Random(5)
    rows: list[dict[str, Any]] = []
    statuses = [s.value for s in Status]
    tie = BASE + timedelta(hours=30, microseconds=7)
    for n in range(400):
        account = "acme" if n % 3 else "beta"
        status = rnd.choice(statuses)
        if n < 12:
            created = tie  # equal created_at: the cursor must break ties on id
            account = "acme"
        elif n < 16:  # outside [from, to): before, and exactly at `to`
            created = BASE - timedelta(microseconds=1) if n < 14 else BASE + timedelta(days=3)
        else:
            created = BASE + timedelta(microseconds=rnd.randrange(3 * 86_400_000_000))
        left = status in LEFT_US or (status == "expired" and n % 2 == 0)
        route = rnd.choice(sorted(ROUTES)) if left or status == "failed" else None
        segments = rnd.randint(1, 3)
        left_at = created + timedelta(microseconds=rnd.randrange(1, 5_000_000)) if left else None
        delivered_at = (
            left_at + timedelta(microseconds=rnd.randrange(1, 600_000_000))
            if status == "delivered" and left_at is not None
            else None
        )
        prefix = rnd.choice(PREFIXES)
        destination = "+" + prefix + "".join(rnd.choice("0123456789") for _ in range(9))
        rows.append(
            {
                "id": f"m{n:04d}{rnd.randrange(10**6):06d}",
                "account_id": ids[account],
                "interface": "http",
                "source": "ACME",
                "destination": destination,
                "text": "hello",
                "encoding": "gsm7",
                "data_coding": 0,
                "segments": segments,
                "registered_delivery": 1,
                "client_ref": f"ref-{n % 5}",
                "status": status,
                "route": route,
                "price": ROUTES[route] * segments if route is not None and left else None,
                "due_at": created,
                "created_at": created,
                "updated_at": created,
                "left_infrastructure_at": left_at,
                "delivered_at": delivered_at,
            }
        )
    return rows


@pytest.fixture
async def seeded(store: Store) -> AsyncIterator[Seeded]:
    keys, ids = {}, {}
    for system_id in ("acme", "beta"):
        created = await store.create_account(system_id, f"{system_id}-pw", tps=1000)
        keys[system_id] = created.api_key
        ids[system_id] = created.account.id
    rows = _rows(ids)
    async with store.engine.begin() as conn:
        await conn.execute(messages.insert(), rows)
    metrics = Metrics()
    app = create_app(
        HttpDeps(
            store=store,
            messages=MessageService(store, NoDispatch(), metrics),
            metrics=metrics,
            limiter=TpsLimiter(),
            readiness=_ready,
        )
    )
    reports.register(app, admin_api_key=ADMIN_KEY)
    runner, port = await start_http(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            yield Seeded(session, rows, keys, ids)
    finally:
        await runner.cleanup()


async def _ready() -> list[str]:
    return []


# ------------------------------------------------------------------- the hand count


def _key(row: dict[str, Any], group_by: str, names: dict[int, str]) -> Any:
    created: datetime = row["created_at"]
    if group_by == "day":
        return format_time(created.replace(hour=0, minute=0, second=0, microsecond=0))
    if group_by == "hour":
        return format_time(created.replace(minute=0, second=0, microsecond=0))
    if group_by == "country":
        return calling_code(row["destination"][1:])
    if group_by == "account":
        return names[row["account_id"]]
    return row[group_by]  # route, status


def _count(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {s.value: 0 for s in Status}
    for r in rows:
        counts[r["status"]] += 1
    left = [r for r in rows if r["left_infrastructure_at"] is not None]
    outcomes = [
        r for r in left if r["status"] in ("delivered", "undelivered", "expired", "rejected")
    ]
    delivered = [r for r in left if r["status"] == "delivered"]
    latencies = sorted(
        (r["delivered_at"] - r["left_infrastructure_at"]).total_seconds() for r in delivered
    )
    if not latencies:
        median = p95 = None
    elif len(latencies) == 1:
        median = p95 = latencies[0]
    else:
        median = statistics.median(latencies)
        p95 = statistics.quantiles(latencies, n=100, method="inclusive")[94]
    return {
        "counts": counts,
        "total": len(rows),
        "delivery_ratio": len(delivered) / len(outcomes) if outcomes else None,
        "median": median,
        "p95": p95,
        "segments": sum(r["segments"] for r in rows),
        "cost": sum(r["price"] or 0.0 for r in rows),
    }


def _approx(x: float | None) -> Any:
    return None if x is None else pytest.approx(x, abs=2e-6)


def _check(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["counts"] == want["counts"]
    assert got["total"] == want["total"]
    assert got["segments"] == want["segments"]
    assert got["cost"] == _approx(want["cost"])
    assert got["delivery_ratio"] == _approx(want["delivery_ratio"])
    assert got["delivery_time_s"]["median"] == _approx(want["median"])
    assert got["delivery_time_s"]["p95"] == _approx(want["p95"])


def _in_range(seeded: Seeded, who: str) -> list[dict[str, Any]]:
    end = BASE + timedelta(days=3)
    return [
        r
        for r in seeded.rows
        if BASE <= r["created_at"] < end and (who == "admin" or r["account_id"] == seeded.ids[who])
    ]


# ---------------------------------------------------------------------------- summary


@BOTH
@pytest.mark.parametrize("group_by", reports.GROUP_BY)
async def test_summary_matches_hand_count(seeded: Seeded, group_by: str) -> None:
    names = {v: k for k, v in seeded.ids.items()}
    window = {"from": "2024-05-01T00:00:00Z", "to": "2024-05-04T00:00:00Z"}
    for who in ("acme", "beta", "admin"):
        body = await seeded.get("/v1/reports/summary", who, group_by=group_by, **window)
        rows = _in_range(seeded, who)
        assert body["group_by"] == group_by
        assert body["from"] == "2024-05-01T00:00:00.000Z"
        _check(body["totals"], _count(rows))
        expected: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            expected[_key(r, group_by, names)].append(r)
        got = {g[group_by]: g for g in body["groups"]}
        assert set(got) == set(expected), who
        for key, members in expected.items():
            _check(got[key], _count(members))
        if group_by == "account":
            assert set(got) == ({"acme", "beta"} if who == "admin" else {who})


@BOTH
async def test_summary_admin_narrows_to_an_account(seeded: Seeded) -> None:
    window = {"from": "2024-05-01T00:00:00Z", "to": "2024-05-04T00:00:00Z"}
    body = await seeded.get(
        "/v1/reports/summary", "admin", group_by="status", account="beta", **window
    )
    _check(body["totals"], _count(_in_range(seeded, "beta")))


async def test_summary_offsets_and_default_range(seeded: Seeded) -> None:
    # The same instant with an offset (and the "+" unescaped, arriving as a space).
    body = await seeded.get(
        "/v1/reports/summary",
        "acme",
        **{"from": "2024-05-01T02:00:00+02:00", "to": "2024-05-04T00:00:00Z"},
    )
    assert body["totals"]["total"] == len(_in_range(seeded, "acme"))
    async with seeded.session.get(
        "/v1/reports/summary?from=2024-05-01T02:00:00+02:00&to=2024-05-04T00:00:00Z",
        headers=seeded.auth("acme"),
    ) as resp:
        assert (await resp.json())["totals"]["total"] == len(_in_range(seeded, "acme"))
    # Default: the last 24 hours, which hold none of the seeded messages of 2024.
    body = await seeded.get("/v1/reports/summary", "acme")
    assert body["totals"]["total"] == 0
    assert body["groups"] == []
    assert body["totals"]["delivery_ratio"] is None
    start = datetime.fromisoformat(body["from"])
    assert datetime.fromisoformat(body["to"]) - start == timedelta(hours=24)


# ---------------------------------------------------------------------------- listing


def _newest_first(rows: list[dict[str, Any]]) -> list[str]:
    ordered = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return [r["id"] for r in ordered]


async def _all_pages(seeded: Seeded, who: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = await seeded.get("/v1/messages", who, **query)
        items += body["messages"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert pages < 1000


async def test_listing_pages_through_everything_once(seeded: Seeded) -> None:
    acme = [r for r in seeded.rows if r["account_id"] == seeded.ids["acme"]]
    items = await _all_pages(seeded, "acme", limit="7")
    assert [m["id"] for m in items] == _newest_first(acme)
    first = next(r for r in acme if r["status"] == "delivered")
    shown = next(m for m in items if m["id"] == first["id"])
    assert shown["to"] == first["destination"]
    assert shown["status"] == "delivered"
    assert shown["delivered_at"] == format_time(first["delivered_at"])
    assert "events" not in shown and "text" not in shown
    # the default page is 100
    body = await seeded.get("/v1/messages", "acme")
    assert [m["id"] for m in body["messages"]] == _newest_first(acme)[:100]
    # the admin sees everyone's; beta never sees acme's
    everything = await _all_pages(seeded, "admin", limit="1000")
    assert [m["id"] for m in everything] == _newest_first(seeded.rows)
    beta = await _all_pages(seeded, "beta", limit="50")
    assert {m["id"] for m in beta} == {
        r["id"] for r in seeded.rows if r["account_id"] == seeded.ids["beta"]
    }


async def test_listing_filters(seeded: Seeded) -> None:
    acme = [r for r in seeded.rows if r["account_id"] == seeded.ids["acme"]]
    got = await _all_pages(seeded, "acme", status="delivered", limit="9")
    assert [m["id"] for m in got] == _newest_first([r for r in acme if r["status"] == "delivered"])
    got = await _all_pages(seeded, "acme", status="undelivered,expired")
    want = [r for r in acme if r["status"] in ("undelivered", "expired")]
    assert [m["id"] for m in got] == _newest_first(want)
    got = await _all_pages(seeded, "acme", client_ref="ref-3", limit="5")
    assert [m["id"] for m in got] == _newest_first([r for r in acme if r["client_ref"] == "ref-3"])
    start, end = BASE + timedelta(days=1), BASE + timedelta(days=2)
    got = await _all_pages(
        seeded,
        "acme",
        status="delivered",
        limit="4",
        **{"from": format_time(start), "to": format_time(end)},
    )
    want = [r for r in acme if start <= r["created_at"] < end and r["status"] == "delivered"]
    assert [m["id"] for m in got] == _newest_first(want)
    assert want


async def test_csv_export(seeded: Seeded) -> None:
    acme = [r for r in seeded.rows if r["account_id"] == seeded.ids["acme"]]
    for path, params in (("/v1/messages.csv", {}), ("/v1/messages", {"format": "csv"})):
        async with seeded.session.get(path, params=params, headers=seeded.auth("acme")) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/csv"
            text = await resp.text()
        table = list(csv.reader(io.StringIO(text)))
        assert table[0] == list(reports.CSV_FIELDS)
        assert [row[0] for row in table[1:]] == _newest_first(acme)
        by_id = {r["id"]: r for r in acme}
        for row in table[1:]:
            item = dict(zip(table[0], row, strict=True))
            source = by_id[item["id"]]
            assert item["to"] == source["destination"]
            assert item["status"] == source["status"]
            assert item["route"] == (source["route"] or "")
            assert item["created_at"] == format_time(source["created_at"])
    # the same filters as the listing
    async with seeded.session.get(
        "/v1/messages.csv", params={"status": "delivered"}, headers=seeded.auth("beta")
    ) as resp:
        table = list(csv.reader(io.StringIO(await resp.text())))
    beta = [r for r in seeded.rows if r["account_id"] == seeded.ids["beta"]]
    assert [row[0] for row in table[1:]] == _newest_first(
        [r for r in beta if r["status"] == "delivered"]
    )


async def test_csv_export_spans_pages(store: Store) -> None:
    created = await store.create_account("bulk", "bulk-pw")
    rows = _rows({"acme": created.account.id, "beta": created.account.id})
    extra = []
    for n in range(reports.CSV_PAGE * 2 + 3 - len(rows)):
        row = dict(rows[n % len(rows)])
        row["id"] = f"x{n:08d}"
        extra.append(row)
    async with store.engine.begin() as conn:
        await conn.execute(messages.insert(), rows + extra)
    f = reports.MessageFilter(created.account.id)
    chunks = [c async for c in reports.csv_rows(store.engine, f)]
    assert len(chunks) == 4  # the header, then three pages
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == 1 + len(rows) + len(extra)
    assert len({line.split(",")[0] for line in lines[1:]}) == len(rows) + len(extra)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://evil.example","pay")', '\'=HYPERLINK("http://evil.example","pay")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("+34600123456", "+34600123456"),  # an E.164 number is no formula
        ("-0.25", "-0.25"),
        ("ref-1", "ref-1"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (3, 3),
        (0.045, 0.045),
    ],
)
def test_csv_cells_that_a_spreadsheet_would_run_are_defused(value: Any, written: Any) -> None:
    assert reports.csv_cell(value) == written


async def test_csv_export_defuses_formulas(store: Store) -> None:
    created = await store.create_account("bulk", "bulk-pw")
    row = dict(_rows({"acme": created.account.id, "beta": created.account.id})[20])
    row.update(client_ref="=1+1", source="@A1", error="-1+2")
    async with store.engine.begin() as conn:
        await conn.execute(messages.insert(), [row])
    f = reports.MessageFilter(created.account.id)
    text = b"".join([c async for c in reports.csv_rows(store.engine, f)]).decode()
    header, line = list(csv.reader(io.StringIO(text)))
    item = dict(zip(header, line, strict=True))
    assert (item["client_ref"], item["from"], item["error"]) == ("'=1+1", "'@A1", "'-1+2")
    assert item["to"] == row["destination"] and item["to"].startswith("+")


# ------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("path", "params", "field", "code"),
    [
        ("/v1/reports/summary", {"group_by": "week"}, "group_by", "invalid_field"),
        ("/v1/reports/summary", {"from": "yesterday"}, "from", "invalid_field"),
        ("/v1/reports/summary", {"to": "2024-05-01T00:00:00"}, "to", "invalid_field"),
        ("/v1/reports/summary", {"to": "2024-05-01"}, "to", "invalid_field"),
        (
            "/v1/reports/summary",
            {"from": "2024-05-02T00:00:00Z", "to": "2024-05-01T00:00:00Z"},
            "from",
            "invalid_field",
        ),
        ("/v1/reports/summary", {"groupby": "day"}, "groupby", "unknown_field"),
        ("/v1/messages", {"limit": "0"}, "limit", "invalid_field"),
        ("/v1/messages", {"limit": "1001"}, "limit", "invalid_field"),
        ("/v1/messages", {"limit": "ten"}, "limit", "invalid_field"),
        ("/v1/messages", {"cursor": "!!!"}, "cursor", "invalid_cursor"),
        ("/v1/messages", {"cursor": "bm90LWEtY3Vyc29y"}, "cursor", "invalid_cursor"),
        ("/v1/messages", {"status": "lost"}, "status", "invalid_field"),
        ("/v1/messages", {"format": "xml"}, "format", "invalid_field"),
        ("/v1/messages.csv", {"from": "2024-13-01T00:00:00Z"}, "from", "invalid_field"),
    ],
)
async def test_bad_parameters(
    seeded: Seeded, path: str, params: dict[str, str], field: str, code: str
) -> None:
    async with seeded.session.get(path, params=params, headers=seeded.auth("acme")) as resp:
        assert resp.status == 400, await resp.text()
        assert resp.content_type == "application/json"
        error = (await resp.json())["error"]
    assert error["field"] == field
    assert error["code"] == code
    assert error["message"]


async def test_authentication(seeded: Seeded) -> None:
    for path in ("/v1/reports/summary", "/v1/messages", "/v1/messages.csv"):
        async with seeded.session.get(path) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
        async with seeded.session.get(
            path, headers={"Authorization": "Bearer not-the-admin-key"}
        ) as resp:
            assert resp.status == 401
        async with seeded.session.get(
            path, params={"account": "beta"}, headers=seeded.auth("acme")
        ) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["field"] == "account"
    async with seeded.session.get(
        "/v1/messages", params={"account": "nobody"}, headers=seeded.auth("admin")
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "account"
    # Basic authentication works as for /v1/messages/{id}
    basic = {"Authorization": "Basic " + base64.b64encode(b"beta:beta-pw").decode()}
    async with seeded.session.get("/v1/messages", params={"limit": "1"}, headers=basic) as resp:
        assert resp.status == 200
    # the POST /v1/messages and GET /v1/messages/{id} routes are untouched
    async with seeded.session.get(
        f"/v1/messages/{seeded.rows[20]['id']}", headers=seeded.auth("admin")
    ) as resp:
        assert resp.status == 401


async def _plan(store: Store, f: reports.MessageFilter) -> str:
    page = reports._page_query(f, 100, (1, "x"))
    async with store.engine.connect() as conn:
        compiled = page.compile(conn.sync_engine, compile_kwargs={"literal_binds": True})
        plan = (await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
    return " ".join(str(row[-1]) for row in plan)


async def test_indexes_serve_the_listing(seeded: Seeded, store: Store) -> None:
    acme = seeded.ids["acme"]
    detail = await _plan(store, reports.MessageFilter(acme))
    assert "ix_messages_account_id_created_at_id" in detail, detail
    assert "TEMP B-TREE" not in detail, detail
    detail = await _plan(store, reports.MessageFilter(acme, ("delivered",)))
    assert "ix_messages_account_id_status_created_at_id" in detail, detail
    assert "TEMP B-TREE" not in detail, detail
    detail = await _plan(store, reports.MessageFilter(acme, client_ref="ref-1"))
    assert "ix_messages_account_id_client_ref" in detail, detail
    detail = await _plan(store, reports.MessageFilter(None))
    assert "ix_messages_created_at_id" in detail, detail
