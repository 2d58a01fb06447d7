"""Delivery reports and message listings over the store, for accounts and the admin.

    GET /v1/reports/summary?from=&to=&group_by=day|hour|route|country|account|status
    GET /v1/messages?status=&from=&to=&client_ref=&limit=&cursor=
    GET /v1/messages.csv?status=&from=&to=&client_ref=      (also /v1/messages?format=csv)

An account authenticates as for /v1/messages (Bearer API key or Basic) and sees only its
own messages. ``Authorization: Bearer <admin api key>`` sees every account's, and may
narrow to one with ``account=<system_id>``. Times are RFC 3339 with an offset; a range
is ``from`` (included) to ``to`` (excluded) on the message's ``created_at``.

Summary, per group and in total:
- ``counts``: messages per status (every status listed, zeros included), ``total``;
- ``delivery_ratio``: delivered / (delivered + undelivered + expired + rejected), counting
  only messages that left our infrastructure (``left_infrastructure_at`` set): the final
  outcomes the carriers decided. A message that expired or failed before it was ever
  submitted says nothing about delivery, and one still in flight has no outcome yet.
  ``null`` when there is none;
- ``delivery_time_s``: ``median`` and ``p95`` of delivered_at - left_infrastructure_at over
  the delivered messages, in seconds, linearly interpolated between closest ranks (as
  PostgreSQL's percentile_cont and Python's statistics.quantiles(method="inclusive"));
- ``segments`` and ``cost`` (the sum of the messages' prices).

Groups: ``day`` and ``hour`` are UTC buckets keyed by their start; buckets without
messages are left out. ``country`` is the E.164 calling code of the destination
(routing.e164; "" for an unassigned one); ``account`` the system_id; ``route`` the
upstream (null before routing).

Counting and grouping happen in SQL (one GROUP BY over the range); the percentiles use
window functions (row_number / count over the group, the same on SQLite and PostgreSQL)
so that only the two or four rows around each percentile rank come back, never every
message.

The listing is newest first with an opaque keyset cursor over (created_at, id): a page
is an index range scan however deep it is, and messages arriving meanwhile neither
shift nor repeat rows. The CSV export streams the same filter, all pages; a cell that
a spreadsheet would take for a formula (=, +, -, @, tab or CR first, and not a plain
number such as an E.164 destination) is written with a leading apostrophe.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hmac
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp import hdrs, web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.http_api import DEPS, ApiError, authenticate
from gateway.lifecycle import Status
from gateway.store import format_time
from gateway.store.tables import accounts, messages
from routing.e164 import CALLING_CODES

__all__ = [
    "GROUP_BY",
    "MAX_LIMIT",
    "MessageFilter",
    "SummaryQuery",
    "csv_rows",
    "list_messages",
    "register",
    "summary",
]

log = logging.getLogger(__name__)

GROUP_BY = ("day", "hour", "route", "country", "account", "status")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CSV_PAGE = 2000
DEFAULT_RANGE = timedelta(hours=24)

_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 24 * _US_PER_HOUR
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Final outcomes decided downstream; FAILED and CANCELED never left us.
_OUTCOMES = (Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED)

_ADMIN_KEY: web.AppKey[str] = web.AppKey("smsgw_reports_admin_key", str)


def _us(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _raw(column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    """A UtcTimestamp column as its stored integer microseconds."""
    return sa.type_coerce(column, sa.BigInteger)


# ---------------------------------------------------------------------------- summary


@dataclass(frozen=True, slots=True)
class SummaryQuery:
    start: datetime
    end: datetime
    group_by: str
    account_id: int | None  # None: every account (admin)


def _country_expr() -> sa.ColumnElement[str]:
    """routing.e164.calling_code of the destination ("+34600...") in SQL.

    Calling codes are a prefix code, so trying 1, 2 then 3 digits finds the only match,
    exactly as calling_code does."""
    by_length: dict[int, list[str]] = {1: [], 2: [], 3: []}
    for code in sorted(CALLING_CODES):
        by_length[len(code)].append(code)
    whens = [
        (
            sa.func.substr(messages.c.destination, 2, n).in_(codes),
            sa.func.substr(messages.c.destination, 2, n),
        )
        for n, codes in by_length.items()
        if codes
    ]
    return sa.case(*whens, else_=sa.literal(""))


def _key_expr(group_by: str) -> sa.ColumnElement[Any]:
    created = _raw(messages.c.created_at)
    if group_by == "day":
        return created // _US_PER_DAY
    if group_by == "hour":
        return created // _US_PER_HOUR
    if group_by == "route":
        return messages.c.route
    if group_by == "country":
        return _country_expr()
    if group_by == "account":
        return messages.c.account_id
    if group_by == "status":
        return messages.c.status
    raise ValueError(f"unknown group_by {group_by!r}")


def _scope(
    account_id: int | None, start: datetime | None, end: datetime | None
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if account_id is not None:
        where.append(messages.c.account_id == account_id)
    if start is not None:
        where.append(messages.c.created_at >= start)
    if end is not None:
        where.append(messages.c.created_at < end)
    return where


def _interpolate(ranks: Mapping[int, int], n: int, num: int, den: int) -> float:
    """The num/den quantile of n sorted values of which ``ranks`` (0-based) are known."""
    position = num * (n - 1)
    lo, rest = divmod(position, den)
    hi = lo + (1 if rest else 0)
    value = ranks[lo] + (ranks[hi] - ranks[lo]) * rest / den
    return round(value / 1e6, 6)


async def _latencies(
    conn: AsyncConnection,
    where: Sequence[sa.ColumnElement[bool]],
    key: sa.ColumnElement[Any] | None,
) -> dict[Any, dict[str, float]]:
    """Median and p95 delivery time per key (key None: one group, keyed None)."""
    latency = _raw(messages.c.delivered_at) - _raw(messages.c.left_infrastructure_at)
    delivered = sa.select(
        (key if key is not None else sa.literal(None)).label("k"), latency.label("lat")
    ).where(
        *where,
        messages.c.status == Status.DELIVERED.value,
        messages.c.delivered_at.is_not(None),
        messages.c.left_infrastructure_at.is_not(None),
    )
    inner = delivered.subquery("d")
    partition = inner.c.k if key is not None else None
    ranked = sa.select(
        inner.c.k,
        inner.c.lat,
        (sa.func.row_number().over(partition_by=partition, order_by=inner.c.lat) - 1).label("r"),
        sa.func.count().over(partition_by=partition).label("n"),
    ).subquery("ranked")
    n = ranked.c.n
    wanted = sa.or_(
        ranked.c.r == (n - 1) // 2,
        ranked.c.r == n // 2,
        ranked.c.r == (95 * (n - 1)) // 100,
        ranked.c.r == (95 * (n - 1) + 99) // 100,
    )
    rows = await conn.execute(
        sa.select(ranked.c.k, ranked.c.r, ranked.c.n, ranked.c.lat).where(wanted)
    )
    ranks: dict[Any, dict[int, int]] = {}
    sizes: dict[Any, int] = {}
    for k, r, size, lat in rows:
        ranks.setdefault(k, {})[int(r)] = int(lat)
        sizes[k] = int(size)
    return {
        k: {
            "median": _interpolate(ranks[k], size, 1, 2),
            "p95": _interpolate(ranks[k], size, 95, 100),
        }
        for k, size in sizes.items()
    }


def _empty_group() -> dict[str, Any]:
    return {
        "counts": {s.value: 0 for s in Status},
        "total": 0,
        "_left": {},
        "segments": 0,
        "cost": 0.0,
    }


def _finish(group: dict[str, Any], latency: Mapping[str, float] | None) -> dict[str, Any]:
    left: dict[str, int] = group.pop("_left")
    outcomes = sum(left.get(s.value, 0) for s in _OUTCOMES)
    group["delivery_ratio"] = (
        round(left.get(Status.DELIVERED.value, 0) / outcomes, 6) if outcomes else None
    )
    group["delivery_time_s"] = (
        dict(latency) if latency is not None else {"median": None, "p95": None}
    )
    group["cost"] = round(group["cost"], 6)
    return group


def _render_key(group_by: str, key: Any, systems: Mapping[int, str]) -> Any:
    if group_by == "day":
        return format_time(_from_us(int(key) * _US_PER_DAY))
    if group_by == "hour":
        return format_time(_from_us(int(key) * _US_PER_HOUR))
    if group_by == "account":
        return systems.get(int(key), str(key))
    return key


async def summary(engine: AsyncEngine, query: SummaryQuery) -> dict[str, Any]:
    """The report body for ``query`` (see the module docstring)."""
    where = _scope(query.account_id, query.start, query.end)
    keyed = sa.select(
        _key_expr(query.group_by).label("k"),
        messages.c.status,
        messages.c.segments,
        messages.c.price,
        messages.c.left_infrastructure_at,
    ).where(*where)
    inner = keyed.subquery("m")
    left = sa.case((inner.c.left_infrastructure_at.is_not(None), 1), else_=0)
    counts = sa.select(
        inner.c.k,
        inner.c.status,
        sa.func.count(),
        sa.func.sum(left),
        sa.func.sum(inner.c.segments),
        sa.func.sum(inner.c.price),
    ).group_by(inner.c.k, inner.c.status)
    async with engine.connect() as conn:
        rows = (await conn.execute(counts)).all()
        by_key = await _latencies(conn, where, _key_expr(query.group_by))
        overall = await _latencies(conn, where, None)
        systems: dict[int, str] = {}
        if query.group_by == "account":
            ids = {int(r[0]) for r in rows}
            if ids:
                found = await conn.execute(
                    sa.select(accounts.c.id, accounts.c.system_id).where(accounts.c.id.in_(ids))
                )
                systems = {int(i): str(s) for i, s in found}
    groups: dict[Any, dict[str, Any]] = {}
    total = _empty_group()
    for key, status, count, left_count, segments, cost in rows:
        for group in (groups.setdefault(key, _empty_group()), total):
            group["counts"][status] = group["counts"].get(status, 0) + int(count)
            group["total"] += int(count)
            group["_left"][status] = group["_left"].get(status, 0) + int(left_count or 0)
            group["segments"] += int(segments or 0)
            group["cost"] += float(cost or 0.0)

    def order(key: Any) -> tuple[bool, Any]:
        return (key is None, key)  # a null route last

    return {
        "from": format_time(query.start),
        "to": format_time(query.end),
        "group_by": query.group_by,
        "groups": [
            {
                query.group_by: _render_key(query.group_by, key, systems),
                **_finish(groups[key], by_key.get(key)),
            }
            for key in sorted(groups, key=order)
        ],
        "totals": _finish(total, overall.get(None)),
    }


# ---------------------------------------------------------------------------- listing


@dataclass(frozen=True, slots=True)
class MessageFilter:
    account_id: int | None  # None: every account (admin)
    statuses: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    client_ref: str | None = None


_LIST_COLUMNS = (
    messages.c.id,
    messages.c.account_id,
    messages.c.destination,
    messages.c.source,
    messages.c.status,
    messages.c.segments,
    messages.c.encoding,
    messages.c.route,
    messages.c.price,
    messages.c.client_ref,
    messages.c.created_at,
    messages.c.send_at,
    messages.c.valid_until,
    messages.c.left_infrastructure_at,
    messages.c.handed_to_carrier_at,
    messages.c.delivered_at,
    messages.c.error,
    _raw(messages.c.created_at).label("created_us"),
)

# message_view of gateway.http_api without the events (a listing reads no event rows).
CSV_FIELDS = (
    "id",
    "to",
    "from",
    "status",
    "segments",
    "encoding",
    "route",
    "price",
    "client_ref",
    "created_at",
    "send_at",
    "valid_until",
    "left_infrastructure_at",
    "handed_to_carrier_at",
    "delivered_at",
    "error",
)


def _time(at: datetime | None) -> str | None:
    return format_time(at) if at is not None else None


def _view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "to": row.destination,
        "from": row.source,
        "status": row.status,
        "segments": row.segments,
        "encoding": row.encoding,
        "route": row.route,
        "price": row.price,
        "client_ref": row.client_ref,
        "created_at": format_time(row.created_at),
        "send_at": _time(row.send_at),
        "valid_until": _time(row.valid_until),
        "left_infrastructure_at": _time(row.left_infrastructure_at),
        "handed_to_carrier_at": _time(row.handed_to_carrier_at),
        "delivered_at": _time(row.delivered_at),
        "error": row.error,
    }


Cursor = tuple[int, str]  # (created_at in microseconds, id) of the last row returned


def encode_cursor(cursor: Cursor) -> str:
    raw = f"{cursor[0]}:{cursor[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """Raises ValueError for anything encode_cursor did not make."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor") from None
    us, colon, message_id = raw.partition(":")
    if not colon or not us.isdigit() or not message_id or len(message_id) > 32:
        raise ValueError("not a cursor")
    return int(us), message_id


def _page_query(f: MessageFilter, limit: int, after: Cursor | None) -> sa.Select[Any]:
    where = _scope(f.account_id, f.start, f.end)
    if f.statuses:
        where.append(messages.c.status.in_(f.statuses))
    created: sa.ColumnElement[int] = _raw(messages.c.created_at)
    if f.client_ref is not None:
        where.append(messages.c.client_ref == f.client_ref)
        # Few messages share a client_ref: find them by (account_id, client_ref) and sort
        # them. Ordering and paging on an expression keeps SQLite (no statistics without
        # ANALYZE) from walking the (account_id, created_at, id) index instead.
        created = created + 0
    if after is not None:
        at, message_id = after
        # The "<=" alone bounds the index range scan; the OR breaks ties on id.
        where.append(created <= at)
        where.append(sa.or_(created < at, messages.c.id < message_id))
    return (
        sa.select(*_LIST_COLUMNS)
        .where(*where)
        .order_by(created.desc(), messages.c.id.desc())
        .limit(limit)
    )


async def list_messages(
    engine: AsyncEngine, f: MessageFilter, limit: int, after: Cursor | None = None
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page newest first, and the cursor of the next page (None after the last)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_page_query(f, limit + 1, after))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    following = (int(rows[-1].created_us), str(rows[-1].id)) if more else None
    return [_view(r) for r in rows], following


# A cell a spreadsheet would read as a formula (OWASP "CSV injection"): client_ref,
# an error text or a sender the ESME chose could be =HYPERLINK(...). Such a cell is
# written with a leading apostrophe, which spreadsheets show as text. A plain number
# (an E.164 destination, a negative price) is no formula and is left as it is.
_FORMULA_STARTS = frozenset("=+-@\t\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def csv_cell(value: Any) -> Any:
    """``value`` as the CSV export writes it: None empty, a would-be formula defused."""
    if value is None:
        return ""
    if (
        isinstance(value, str)
        and value[:1] in _FORMULA_STARTS
        and _PLAIN_NUMBER.fullmatch(value) is None
    ):
        return "'" + value
    return value


async def csv_rows(engine: AsyncEngine, f: MessageFilter) -> AsyncIterator[bytes]:
    """The CSV export of ``f``: a header, then a chunk of rows per page of the listing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line ends
    writer.writerow(CSV_FIELDS)
    yield buffer.getvalue().encode()
    after: Cursor | None = None
    while True:
        page, after = await list_messages(engine, f, CSV_PAGE, after)
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([csv_cell(item[name]) for name in CSV_FIELDS] for item in page)
        if page:
            yield buffer.getvalue().encode()
        if after is None:
            return


# ------------------------------------------------------------------------------- HTTP


def _bad(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(400, code, message, field=field)


_SPACED_OFFSET = re.compile(r" (\d\d:\d\d)$")


def _parse_time(query: Mapping[str, str], name: str) -> datetime | None:
    text = query.get(name)
    if text is None:
        return None
    # An unescaped "+" in a query string arrives as a space: "...T12:00:00 02:00".
    text = _SPACED_OFFSET.sub(r"+\1", text.strip())
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None or "T" not in text.upper():
        raise _bad(
            name,
            f"{name} must be an RFC 3339 time with an offset, e.g. 2030-05-01T12:00:00Z",
        )
    return at.astimezone(UTC)


def _check_params(query: Mapping[str, str], allowed: Sequence[str]) -> None:
    for name in query:
        if name not in allowed:
            raise _bad(name, f"{name} is not a known parameter", "unknown_field")


def _range(query: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    start = _parse_time(query, "from")
    end = _parse_time(query, "to")
    if start is not None and end is not None and start >= end:
        raise _bad("from", "from must be before to")
    return start, end


async def _viewer(request: web.Request, query: Mapping[str, str]) -> int | None:
    """The account whose messages the caller may see; None for the admin (all)."""
    admin_key = request.app.get(_ADMIN_KEY)
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
    if (
        admin_key
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), admin_key.encode())
    ):
        system_id = query.get("account")
        if system_id is None:
            return None
        async with request.app[DEPS].store.engine.connect() as conn:
            account_id = await conn.scalar(
                sa.select(accounts.c.id).where(accounts.c.system_id == system_id)
            )
        if account_id is None:
            raise _bad("account", f"no account {system_id!r}")
        return int(account_id)
    account = await authenticate(request)
    if "account" in query:
        raise ApiError(
            403, "forbidden", "only the admin key may choose the account", field="account"
        )
    return account.id


def _engine(request: web.Request) -> AsyncEngine:
    return request.app[DEPS].store.engine


def _json(body: Mapping[str, Any]) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")), content_type="application/json"
    )


async def get_summary(request: web.Request) -> web.Response:
    query = request.query
    _check_params(query, ("from", "to", "group_by", "account"))
    account_id = await _viewer(request, query)
    group_by = query.get("group_by", "day")
    if group_by not in GROUP_BY:
        raise _bad("group_by", f"group_by must be one of {', '.join(GROUP_BY)}")
    start, end = _range(query)
    if end is None:
        end = datetime.now(UTC) if start is None else start + DEFAULT_RANGE
    if start is None:
        start = end - DEFAULT_RANGE
    if start >= end:
        raise _bad("from", "from must be before to")
    body = await summary(_engine(request), SummaryQuery(start, end, group_by, account_id))
    return _json(body)


def _message_filter(query: Mapping[str, str], account_id: int | None) -> MessageFilter:
    statuses: tuple[str, ...] = ()
    if "status" in query:
        statuses = tuple(s.strip() for s in query["status"].split(","))
        known = {s.value for s in Status}
        for s in statuses:
            if s not in known:
                raise _bad(
                    "status", f"unknown status {s!r}: one or more of {', '.join(sorted(known))}"
                )
    start, end = _range(query)
    return MessageFilter(account_id, statuses, start, end, query.get("client_ref"))


_FILTER_PARAMS = ("status", "from", "to", "client_ref", "account")


async def get_messages(request: web.Request) -> web.StreamResponse:
    query = request.query
    if query.get("format") == "csv":
        return await export_csv(request)
    _check_params(query, (*_FILTER_PARAMS, "limit", "cursor", "format"))
    if query.get("format", "json") != "json":
        raise _bad("format", "format must be json or csv")
    account_id = await _viewer(request, query)
    f = _message_filter(query, account_id)
    limit_text = query.get("limit", str(DEFAULT_LIMIT))
    if not (limit_text.isdigit() and 1 <= int(limit_text) <= MAX_LIMIT):
        raise _bad("limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    after = None
    if "cursor" in query:
        try:
            after = decode_cursor(query["cursor"])
        except ValueError:
            raise _bad(
                "cursor", "not a cursor this API returned (next_cursor)", "invalid_cursor"
            ) from None
    page, following = await list_messages(_engine(request), f, int(limit_text), after)
    return _json(
        {
            "messages": page,
            "next_cursor": encode_cursor(following) if following is not None else None,
        }
    )


async def export_csv(request: web.Request) -> web.StreamResponse:
    query = request.query
    _check_params(query, (*_FILTER_PARAMS, "format"))
    account_id = await _viewer(request, query)
    f = _message_filter(query, account_id)
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: "text/csv; charset=utf-8",
            hdrs.CONTENT_DISPOSITION: 'attachment; filename="messages.csv"',
        }
    )
    await response.prepare(request)
    try:
        async for chunk in csv_rows(_engine(request), f):
            await response.write(chunk)
    except (ConnectionResetError, OSError):
        log.info("CSV export aborted: the client went away")
        return response
    await response.write_eof()
    return response


def register(app: web.Application, admin_api_key: str | None = None) -> None:
    """Add the report and listing routes to an app made by gateway.http_api.create_app."""
    if admin_api_key:
        app[_ADMIN_KEY] = admin_api_key
    app.router.add_get("/v1/reports/summary", get_summary, allow_head=False)
    app.router.add_get("/v1/messages", get_messages, allow_head=False)
    app.router.add_get("/v1/messages.csv", export_csv, allow_head=False)
