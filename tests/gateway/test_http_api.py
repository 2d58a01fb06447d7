"""HTTP API v1 over a real socket, with a real store (SQLite file) and MessageService.

The dispatcher is replaced by `RecordingDispatch`: the real one needs SMPP
upstreams and has its own tests; here it only matters what the API hands it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from gateway.http_api import HttpDeps, create_app, start_http
from gateway.lifecycle import Status
from gateway.messages import MessageService
from gateway.metrics import Metrics
from gateway.openapi import MessageAccepted, MessageView
from gateway.ratelimit import TpsLimiter
from gateway.store import (
    Account,
    CreatedAccount,
    MessageRecord,
    NewMessage,
    PartUpdate,
    Store,
    utcnow,
)
from gateway.store.tables import messages

TO = "+34600123456"


class RecordingDispatch:
    """Stands in for gateway.dispatch.Dispatcher and records what it is given."""

    def __init__(self) -> None:
        self.full = False
        self.new: list[NewMessage] = []
        self.records: list[MessageRecord] = []
        self.discarded: list[str] = []

    def enqueue_new(self, message: NewMessage, account: Account | None = None) -> None:
        self.new.append(message)

    def enqueue_record(self, record: MessageRecord) -> None:
        self.records.append(record)

    def discard(self, message_id: str) -> bool:
        self.discarded.append(message_id)
        return any(m.id == message_id for m in self.new)


@dataclass
class Api:
    session: aiohttp.ClientSession
    store: Store
    dispatch: RecordingDispatch
    acme: CreatedAccount
    not_ready: list[str] = field(default_factory=list)
    readiness_fails: bool = False
    now: float = 1000.0  # the rate limiter's clock, still unless a test moves it

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.acme.api_key}"}

    async def send(self, body: dict[str, Any], **headers: str) -> aiohttp.ClientResponse:
        return await self.session.post("/v1/messages", json=body, headers={**self.auth, **headers})

    async def account(self, system_id: str, **kw: Any) -> dict[str, str]:
        """Another account; returns its auth header."""
        created = await self.store.create_account(system_id, f"{system_id}-pw", **kw)
        return {"Authorization": f"Bearer {created.api_key}"}


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    dispatch = RecordingDispatch()
    metrics = Metrics()
    acme = await store.create_account("acme", "acme-pw", api_key="acme-key", tps=1000)
    state = Api(session=None, store=store, dispatch=dispatch, acme=acme)  # type: ignore[arg-type]

    async def readiness() -> list[str]:
        if state.readiness_fails:
            raise OSError("database unreachable")
        return list(state.not_ready)

    app = create_app(
        HttpDeps(
            store=store,
            messages=MessageService(store, dispatch, metrics),
            metrics=metrics,
            limiter=TpsLimiter(clock=lambda: state.now),
            readiness=readiness,
        )
    )
    runner, port = await start_http(app, "127.0.0.1", 0)
    assert port != 0
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            state.session = session
            yield state
    finally:
        await runner.cleanup()


async def _error(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"code", "message", "field"} <= set(error)
    assert error["message"]
    return error


async def _accept(api: Api, **body: Any) -> dict[str, Any]:
    resp = await api.send({"to": TO, "from": "ACME", "text": "hello", **body})
    assert resp.status == 202, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def _count_messages(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(messages))).scalar_one()
        )


# ------------------------------------------------------------------------- POST


async def test_accept_gsm_text(api: Api) -> None:
    resp = await api.send(
        {"to": "34 600 12 34 56", "from": "ACME", "text": "hello", "client_ref": "r1"}
    )
    assert resp.status == 202
    body = await resp.json()
    assert set(body) == {"id", "status", "segments", "encoding"}
    MessageAccepted.model_validate(body)
    assert body["status"] == "accepted" and body["segments"] == 1 and body["encoding"] == "gsm7"
    assert resp.headers["Location"] == f"/v1/messages/{body['id']}"
    [queued] = api.dispatch.new
    assert queued.id == body["id"] and queued.destination == TO and queued.source == "ACME"
    assert queued.interface == "http" and queued.client_ref == "r1"


async def test_accept_ucs2_text_and_segments(api: Api) -> None:
    body = await _accept(api, text="привет")
    assert (body["encoding"], body["segments"]) == ("ucs2", 1)
    body = await _accept(api, text="ж" * 71)  # over 70 UCS-2 characters: 67 a segment
    assert (body["encoding"], body["segments"]) == ("ucs2", 2)
    body = await _accept(api, text="a" * 161)  # over 160 GSM characters: 153 a segment
    assert (body["encoding"], body["segments"]) == ("gsm7", 2)
    body = await _accept(api, text="hello", encoding="ucs2")
    assert body["encoding"] == "ucs2"
    assert len(api.dispatch.new) == 4


async def test_default_source_and_missing_source(api: Api) -> None:
    auth = await api.account("withdefault", default_source="SHOP")
    resp = await api.session.post("/v1/messages", json={"to": TO, "text": "hi"}, headers=auth)
    assert resp.status == 202
    assert api.dispatch.new[-1].source == "SHOP"

    resp = await api.send({"to": TO, "text": "hi"})  # acme has no default sender
    error = await _error(resp, 400)
    assert error["field"] == "from"
    resp = await api.send({"to": TO, "from": "MUCHTOOLONGNAME", "text": "hi"})
    assert (await _error(resp, 400))["field"] == "from"


async def test_basic_auth(api: Api) -> None:
    token = base64.b64encode(b"acme:acme-pw").decode()
    resp = await api.session.post(
        "/v1/messages",
        json={"to": TO, "from": "ACME", "text": "hi"},
        headers={"Authorization": f"Basic {token}"},
    )
    assert resp.status == 202, await resp.text()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-key",
        "Basic " + base64.b64encode(b"acme:wrong-pw").decode(),
        "Basic " + base64.b64encode(b"nobody:acme-pw").decode(),
        "Basic not-base64!",
        "Digest abc",
    ],
)
async def test_unauthorized(api: Api, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    resp = await api.session.post(
        "/v1/messages", json={"to": TO, "from": "ACME", "text": "hi"}, headers=headers
    )
    error = await _error(resp, 401)
    assert error["code"] == "unauthorized"
    challenges = resp.headers.getall("WWW-Authenticate")
    assert any(c.startswith("Bearer") for c in challenges)
    assert any(c.startswith("Basic") for c in challenges)
    for method in ("GET", "DELETE"):
        resp = await api.session.request(method, "/v1/messages/0123", headers=headers)
        assert (await _error(resp, 401))["code"] == "unauthorized"
    assert not api.dispatch.new


async def test_invalid_destination(api: Api) -> None:
    resp = await api.send({"to": "+1234", "from": "ACME", "text": "hi"})
    error = await _error(resp, 400)
    assert (error["code"], error["field"]) == ("invalid_destination", "to")
    resp = await api.send({"to": "not a number", "from": "ACME", "text": "hi"})
    assert (await _error(resp, 400))["code"] == "invalid_destination"
    assert await _count_messages(api.store) == 0


@pytest.mark.parametrize("raw", [b"", b"{", b'{"to": "+34600123456",}', b"[1, 2]", b'"text"'])
async def test_bad_json(api: Api, raw: bytes) -> None:
    resp = await api.session.post(
        "/v1/messages", data=raw, headers={**api.auth, "Content-Type": "application/json"}
    )
    error = await _error(resp, 400)
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"to": TO, "from": "ACME"}, "text", "missing_field"),
        ({"to": TO, "from": "ACME", "text": ""}, "text", "invalid_field"),
        ({"to": TO, "from": "ACME", "text": "x" * 1601}, "text", "invalid_field"),
        ({"from": "ACME", "text": "hi"}, "to", "missing_field"),
        ({"to": TO, "from": "ACME", "text": "hi", "priority": 1}, "priority", "unknown_field"),
        (
            {"to": TO, "from": "ACME", "text": "hi", "send_at": "2030-01-01T10:00:00"},
            "send_at",
            None,
        ),
        ({"to": TO, "from": "ACME", "text": "hi", "valid_until": "tomorrow"}, "valid_until", None),
        ({"to": TO, "from": "ACME", "text": "hi", "send_at": 1893456000}, "send_at", None),
        (
            {"to": TO, "from": "ACME", "text": "hi", "callback_url": "ftp://x/y"},
            "callback_url",
            None,
        ),
        ({"to": TO, "from": "ACME", "text": "hi", "client_ref": "r" * 65}, "client_ref", None),
        ({"to": TO, "from": "ACME", "text": "hi", "encoding": "utf8"}, "encoding", None),
        ({"to": 34600123456, "from": "ACME", "text": "hi"}, "to", None),
    ],
)
async def test_validation_names_the_field(
    api: Api, body: dict[str, Any], field: str, code: str | None
) -> None:
    error = await _error(await api.send(body), 400)
    assert error["field"] == field, error
    assert field in error["message"]
    if code is not None:
        assert error["code"] == code
    assert await _count_messages(api.store) == 0


async def test_naive_send_at_message_is_clear(api: Api) -> None:
    resp = await api.send({"to": TO, "from": "ACME", "text": "hi", "send_at": "2030-01-01T10:00"})
    error = await _error(resp, 400)
    assert "offset" in error["message"] and "RFC 3339" in error["message"]


async def test_text_that_does_not_fit_its_encoding(api: Api) -> None:
    resp = await api.send({"to": TO, "from": "ACME", "text": "привет", "encoding": "gsm7"})
    assert (await _error(resp, 400))["field"] == "text"


async def test_scheduled_message_is_not_enqueued(api: Api) -> None:
    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = await _accept(api, send_at=send_at)
    assert body["status"] == "scheduled"
    assert api.dispatch.new == []
    view = await (await api.session.get(f"/v1/messages/{body['id']}", headers=api.auth)).json()
    assert view["status"] == "scheduled" and view["send_at"] is not None


async def test_idempotency_key_replays_the_first_answer(api: Api) -> None:
    first = await api.send({"to": TO, "from": "ACME", "text": "hi"}, **{"Idempotency-Key": "k-1"})
    second = await api.send({"to": TO, "from": "ACME", "text": "hi"}, **{"Idempotency-Key": "k-1"})
    assert first.status == second.status == 202
    assert await first.read() == await second.read()
    assert second.headers["Location"] == first.headers["Location"]
    assert await _count_messages(api.store) == 1
    assert len(api.dispatch.new) == 1
    # The key is the account's own: another account with the same key sends its message.
    other = await api.account("other")
    resp = await api.session.post(
        "/v1/messages",
        json={"to": TO, "from": "ACME", "text": "hi"},
        headers={**other, "Idempotency-Key": "k-1"},
    )
    assert resp.status == 202
    assert (await resp.json())["id"] != (await first.json())["id"]
    assert await _count_messages(api.store) == 2


async def test_idempotency_key_concurrent_repeats_make_one_message(api: Api) -> None:
    body = {"to": TO, "from": "ACME", "text": "hi"}
    responses = await asyncio.gather(
        *(api.send(body, **{"Idempotency-Key": "k-2"}) for _ in range(5))
    )
    assert {r.status for r in responses} == {202}
    assert len({await r.read() for r in responses}) == 1
    assert await _count_messages(api.store) == 1


async def test_idempotency_key_too_long(api: Api) -> None:
    resp = await api.send(
        {"to": TO, "from": "ACME", "text": "hi"}, **{"Idempotency-Key": "k" * 129}
    )
    assert (await _error(resp, 400))["field"] == "Idempotency-Key"


async def test_rate_limited_over_tps(api: Api) -> None:
    auth = await api.account("slow", tps=2)
    statuses = []
    for _ in range(3):
        resp = await api.session.post(
            "/v1/messages", json={"to": TO, "from": "ACME", "text": "hi"}, headers=auth
        )
        statuses.append(resp.status)
        if resp.status == 429:
            error = await _error(resp, 429)
            assert error["code"] == "rate_limited"
            assert int(resp.headers["Retry-After"]) >= 1
    assert statuses == [202, 202, 429]
    assert await _count_messages(api.store) == 2
    api.now += 0.5  # half a second later, one more message is allowed at 2 per second
    resp = await api.session.post(
        "/v1/messages", json={"to": TO, "from": "ACME", "text": "hi"}, headers=auth
    )
    assert resp.status == 202


async def test_queue_full(api: Api) -> None:
    api.dispatch.full = True
    resp = await api.send({"to": TO, "from": "ACME", "text": "hi"})
    error = await _error(resp, 503)
    assert error["code"] == "queue_full"
    assert "Retry-After" in resp.headers
    assert await _count_messages(api.store) == 0


async def test_oversized_body(api: Api) -> None:
    resp = await api.session.post(
        "/v1/messages",
        data=json.dumps({"to": TO, "from": "ACME", "text": "x" * 100_000}),
        headers={**api.auth, "Content-Type": "application/json"},
    )
    error = await _error(resp, 413)
    assert error["code"] == "payload_too_large"


async def test_logs_mask_the_number_and_omit_the_text(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    body = await _accept(api, text="my secret code 4711")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert body["id"] in logged
    assert "+34600***456" in logged
    assert TO not in logged and "4711" not in logged


# ------------------------------------------------------------------------ GET / DELETE


async def test_get_returns_the_contract_fields(api: Api) -> None:
    accepted = await _accept(api, client_ref="order-7")
    resp = await api.session.get(f"/v1/messages/{accepted['id']}", headers=api.auth)
    assert resp.status == 200
    view = await resp.json()
    MessageView.model_validate(view)  # the documented schema is what is answered
    assert view["id"] == accepted["id"]
    assert (view["to"], view["from"], view["status"]) == (TO, "ACME", "accepted")
    assert (view["segments"], view["encoding"], view["client_ref"]) == (1, "gsm7", "order-7")
    for unset in ("route", "price", "left_infrastructure_at", "handed_to_carrier_at",
                  "delivered_at", "error", "send_at", "valid_until"):  # fmt: skip
        assert view[unset] is None, unset
    assert view["created_at"].endswith("Z")
    assert [e["status"] for e in view["events"]] == ["accepted"]
    assert view["events"][0]["at"].endswith("Z")


async def test_get_after_submission_shows_milestone_and_events(api: Api) -> None:
    accepted = await _accept(api)
    await api.store.part_update(
        PartUpdate(
            accepted["id"],
            1,
            Status.SUBMITTED,
            utcnow(),
            upstream="agg-a",
            upstream_message_id="6699",
            price=0.04,
        )
    )
    view = await (await api.session.get(f"/v1/messages/{accepted['id']}", headers=api.auth)).json()
    MessageView.model_validate(view)
    assert view["status"] == "submitted" and view["route"] == "agg-a"
    assert view["left_infrastructure_at"] is not None
    assert [e["status"] for e in view["events"]] == ["accepted", "submitted"]
    assert "6699" in json.dumps(view["events"][1]["detail"])


async def test_other_accounts_message_is_not_found(api: Api) -> None:
    accepted = await _accept(api)
    other = await api.account("other")
    resp = await api.session.get(f"/v1/messages/{accepted['id']}", headers=other)
    assert (await _error(resp, 404))["code"] == "not_found"
    resp = await api.session.delete(f"/v1/messages/{accepted['id']}", headers=other)
    assert (await _error(resp, 404))["code"] == "not_found"
    # Untouched, and still queued for sending.
    view = await (await api.session.get(f"/v1/messages/{accepted['id']}", headers=api.auth)).json()
    assert view["status"] == "accepted"
    assert [r.id for r in api.dispatch.records] == [accepted["id"]]


async def test_unknown_id_is_not_found(api: Api) -> None:
    for method in ("GET", "DELETE"):
        for message_id in ("0190aaaabbbbccccddddeeee0000", "x" * 500):
            resp = await api.session.request(method, f"/v1/messages/{message_id}", headers=api.auth)
            assert (await _error(resp, 404))["code"] == "not_found"


async def test_cancel_then_get_shows_canceled(api: Api) -> None:
    accepted = await _accept(api)
    resp = await api.session.delete(f"/v1/messages/{accepted['id']}", headers=api.auth)
    assert resp.status == 200
    assert await resp.json() == {"id": accepted["id"], "status": "canceled"}
    assert api.dispatch.discarded == [accepted["id"]]
    view = await (await api.session.get(f"/v1/messages/{accepted['id']}", headers=api.auth)).json()
    assert view["status"] == "canceled"
    assert [e["status"] for e in view["events"]] == ["accepted", "canceled"]
    # DELETE again is answered the same.
    resp = await api.session.delete(f"/v1/messages/{accepted['id']}", headers=api.auth)
    assert resp.status == 200


async def test_cancel_after_submission_is_too_late(api: Api) -> None:
    accepted = await _accept(api)
    await api.store.part_update(
        PartUpdate(
            accepted["id"], 1, Status.SUBMITTED, utcnow(), upstream="x", upstream_message_id="1"
        )
    )
    resp = await api.session.delete(f"/v1/messages/{accepted['id']}", headers=api.auth)
    assert (await _error(resp, 409))["code"] == "too_late"
    view = await (await api.session.get(f"/v1/messages/{accepted['id']}", headers=api.auth)).json()
    assert view["status"] == "submitted"


# ------------------------------------------------------------------------ operations


async def test_healthz(api: Api) -> None:
    resp = await api.session.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_readyz(api: Api) -> None:
    resp = await api.session.get("/readyz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    api.not_ready.extend(["no upstream is bound", "database: TimeoutError"])
    resp = await api.session.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {
        "status": "unavailable",
        "reasons": ["no upstream is bound", "database: TimeoutError"],
    }


async def test_readyz_when_the_check_itself_fails(api: Api) -> None:
    api.readiness_fails = True
    resp = await api.session.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["reasons"] == ["readiness check failed: OSError"]


async def test_unexpected_error_is_a_json_500(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(api.store, "get_message", broken)
    caplog.set_level(logging.ERROR, logger="gateway.http_api")
    error = await _error(await api.session.get("/v1/messages/abc", headers=api.auth), 500)
    assert error["code"] == "internal_error" and "fire" not in error["message"]
    assert any(r.exc_info for r in caplog.records)


async def test_metrics_count_accepts_per_account(api: Api) -> None:
    await _accept(api)
    resp = await api.session.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await resp.text()
    assert 'smsgw_messages_accepted_total{account="acme",interface="http"} 1.0' in text
    assert TO not in text and TO[1:] not in text


async def test_openapi_document(api: Api) -> None:
    resp = await api.session.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/v1/messages"]
    assert {"get", "delete"} <= set(doc["paths"]["/v1/messages/{id}"])
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert "get" in doc["paths"][path]
    schemas = doc["components"]["schemas"]
    request = schemas["SendMessageRequest"]
    assert {"to", "text"} <= set(request["required"]) and "from" in request["properties"]
    assert request["additionalProperties"] is False
    assert set(schemas["ErrorDetail"]["properties"]) == {"code", "message", "field"}
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth", "basicAuth"}
    # Every $ref points at something that is there.
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        root, components, kind, name = ref.split("/")
        assert (root, components) == ("#", "components") and name in doc["components"][kind], ref


async def test_unknown_path_and_method_are_json_errors(api: Api) -> None:
    error = await _error(await api.session.get("/nope"), 404)
    assert error["code"] == "not_found"
    resp = await api.session.put("/v1/messages", headers=api.auth)
    error = await _error(resp, 405)
    assert error["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]
