"""HTTP API v1 on aiohttp: send, read and cancel messages; health, readiness, metrics.

app = create_app(HttpDeps(store, messages, metrics, limiter, readiness))
runner, port = await start_http(app, "127.0.0.1", 0)
...
await runner.cleanup()   # stops listening, lets requests in flight finish

Every error, aiohttp's own 404/405/413 included, is answered as
``{"error": {"code", "message", "field"}}`` by one middleware. Request bodies are
validated by the pydantic models of `gateway.openapi`, which also describe the
API in /openapi.json.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.logs import mask_number
from gateway.messages import (
    ENCODING_BY_NAME,
    MessageService,
    QueueFull,
    Submission,
    SubmissionError,
    parse_destination,
)
from gateway.metrics import Metrics
from gateway.openapi import MAX_IDEMPOTENCY_KEY, SendMessageRequest, openapi_document
from gateway.ratelimit import TpsLimiter
from gateway.store import Account, CancelOutcome, MessageRecord, Store, format_time, is_transient

__all__ = ["DEPS", "MAX_BODY", "ApiError", "HttpDeps", "create_app", "start_http"]

log = logging.getLogger(__name__)

# A message is at most 1600 characters; with JSON escapes (\uXXXX is 6 bytes a
# character) and the other fields that is well under 16 KiB. 64 KiB leaves room
# without letting a client make us buffer megabytes.
MAX_BODY = 64 * 1024

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_JSON = "application/json"
_CHALLENGES = ('Bearer realm="smsgw"', 'Basic realm="smsgw", charset="UTF-8"')
# Message ids are short (gateway.ids); anything much longer is not one of ours.
_MAX_ID = 64


@dataclass(frozen=True)
class HttpDeps:
    store: Store
    messages: MessageService
    metrics: Metrics
    limiter: TpsLimiter
    # Why the gateway is not ready; an empty list means ready.
    readiness: Callable[[], Awaitable[list[str]]]


DEPS: web.AppKey[HttpDeps] = web.AppKey("smsgw_http_deps", HttpDeps)
_OPENAPI: web.AppKey[bytes] = web.AppKey("smsgw_openapi", bytes)


class ApiError(Exception):
    """An answer other than success; the middleware turns it into the JSON error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers
        self.details = details

    def response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        if self.details is not None:
            error["details"] = self.details
        headers: CIMultiDict[str] = CIMultiDict(self.headers)
        return _json_response({"error": error}, status=self.status, headers=headers)


def _json_response(
    body: Mapping[str, Any] | str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | CIMultiDict[str] | None = None,
) -> web.Response:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type=_JSON, headers=headers)


# ----------------------------------------------------------------------------- errors


def _code_for(exc: web.HTTPException) -> str:
    return {
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
    }.get(exc.status, (exc.reason or "error").lower().replace(" ", "_").replace("-", "_"))


def _message_for(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such resource: {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} not allowed on {request.path}"
    text = exc.text or ""
    # aiohttp's default text is "404: Not Found"; a specific one says more.
    if not text or text.startswith(f"{exc.status}: "):
        return exc.reason
    return text


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        # Keep what the exception says about the request (Allow on 405), not its body.
        headers = [
            (k, v)
            for k, v in exc.headers.items()
            if k.lower() not in ("content-type", "content-length")
        ]
        return ApiError(
            exc.status, _code_for(exc), _message_for(request, exc), headers=headers
        ).response()
    except Exception as exc:
        if is_transient(exc):
            # The database is away (a lost connection, a restart): nothing was
            # stored, and the same request will work once it is back.
            log.warning(
                "%s %s: the store is unavailable (%s)",
                request.method,
                request.path,
                type(exc).__name__,
            )
            return ApiError(
                503,
                "store_unavailable",
                "the message store is unavailable; nothing was stored, try again shortly",
                headers=[(hdrs.RETRY_AFTER, "1")],
            ).response()
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiError(500, "internal_error", "internal error").response()


def _submission_error(exc: SubmissionError) -> ApiError:
    return ApiError(400, exc.code, exc.message, field=exc.field)


def _validation_error(exc: ValidationError) -> ApiError:
    problems = exc.errors(include_url=False, include_input=False)
    details = [{"field": _field(e), "message": _describe(e)} for e in problems]
    first = problems[0]
    if first["type"] == "json_invalid":
        return ApiError(
            400,
            "invalid_json",
            "the body is not valid JSON: " + first["msg"].removeprefix("Invalid JSON: "),
        )
    if first["type"] in ("model_type", "model_attributes_type") and not first["loc"]:
        return ApiError(400, "invalid_json", "the body must be a JSON object")
    code = {"missing": "missing_field", "extra_forbidden": "unknown_field"}.get(
        first["type"], "invalid_field"
    )
    message = _describe(first)
    if len(details) > 1:
        message += f" (and {len(details) - 1} more problem(s), see details)"
    return ApiError(400, code, message, field=_field(first), details=details)


def _field(error: ErrorDetails) -> str | None:
    return ".".join(str(part) for part in error["loc"]) or None


def _describe(error: ErrorDetails) -> str:
    name = _field(error) or "body"
    kind = error["type"]
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        return f"{name} is not a known field"
    if kind in (
        "timezone_aware",
        "datetime_from_date_parsing",
        "datetime_parsing",
        "datetime_type",
    ):
        return (
            f"{name} must be an RFC 3339 time with an offset, e.g. 2030-05-01T12:00:00Z or "
            "2030-05-01T14:00:00+02:00"
        )
    return f"{name}: {error['msg']}"


# ------------------------------------------------------------------------------- auth


async def authenticate(request: web.Request) -> Account:
    store = request.app[DEPS].store
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    challenge = [(hdrs.WWW_AUTHENTICATE, c) for c in _CHALLENGES]
    if not header.strip():
        raise ApiError(
            401,
            "unauthorized",
            "authentication required: Authorization: Bearer <api key>, or Basic with "
            "system_id:password",
            headers=challenge,
        )
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    account: Account | None = None
    if scheme.lower() == "bearer" and credentials:
        account = await store.authenticate_api_key(credentials)
        problem = "invalid API key"
    elif scheme.lower() == "basic" and credentials:
        problem = "invalid system_id or password"
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        system_id, colon, password = decoded.partition(":")
        if colon and system_id:
            account = await store.authenticate_password(system_id, password)
    else:
        problem = "unsupported Authorization scheme: use Bearer or Basic"
    if account is None:
        raise ApiError(401, "unauthorized", problem, headers=challenge)
    return account


# --------------------------------------------------------------------------- messages


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            field="Idempotency-Key",
        )
    return key


def _location(message_id: str) -> str:
    return f"/v1/messages/{message_id}"


async def post_message(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    account = await authenticate(request)
    idempotency_key = _idempotency_key(request)
    raw = await request.read()  # HTTPRequestEntityTooLarge beyond client_max_size
    try:
        body = SendMessageRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    source = body.from_ or account.default_source
    if source is None:
        raise ApiError(
            400,
            "missing_source",
            "from is required: the account has no default sender",
            field="from",
        )
    try:
        destination = parse_destination(body.to, field="to")
    except SubmissionError as exc:
        raise _submission_error(exc) from None
    # Checked once the request is known to be a message: tps counts messages.
    if not deps.limiter.allow(account.id, account.tps):
        retry = max(1, math.ceil(1 / account.tps)) if account.tps > 0 else 1
        raise ApiError(
            429,
            "rate_limited",
            f"over this account's limit of {account.tps} messages per second",
            headers=[(hdrs.RETRY_AFTER, str(retry))],
        )
    submission = Submission(
        source=source,
        destination=destination,
        text=body.text,
        data_coding=ENCODING_BY_NAME[body.encoding] if body.encoding is not None else None,
        client_ref=body.client_ref,
        callback_url=body.callback_url,
        send_at=body.send_at,
        valid_until=body.valid_until,
        idempotency_key=idempotency_key,
    )
    try:
        accepted = await deps.messages.accept(account, "http", submission)
    except SubmissionError as exc:
        raise _submission_error(exc) from None
    except QueueFull as exc:
        raise ApiError(
            503, "queue_full", f"{exc}; try again shortly", headers=[(hdrs.RETRY_AFTER, "1")]
        ) from None
    headers: dict[str, str] = {hdrs.LOCATION: _location(accepted.id)}
    if accepted.replayed_response is not None:
        log.info(
            "replayed message id=%s account=%s (idempotency key used before)",
            accepted.id,
            account.system_id,
        )
        headers["Idempotent-Replayed"] = "true"
        return _json_response(accepted.replayed_response, status=202, headers=headers)
    log.info(
        "accepted message id=%s account=%s to=%s segments=%d status=%s",
        accepted.id,
        account.system_id,
        mask_number(destination),
        accepted.segments,
        accepted.status.value,
    )
    return _json_response(accepted.response_body(), status=202, headers=headers)


def _time(at: datetime | None) -> str | None:
    return format_time(at) if at is not None else None


def message_view(record: MessageRecord) -> dict[str, Any]:
    """The GET /v1/messages/{id} body (schema: gateway.openapi.MessageView)."""
    return {
        "id": record.id,
        "to": record.destination,
        "from": record.source,
        "status": record.status.value,
        "segments": record.segments,
        "encoding": record.encoding,
        "route": record.route,
        "price": record.price,
        "client_ref": record.client_ref,
        "created_at": format_time(record.created_at),
        "send_at": _time(record.send_at),
        "valid_until": _time(record.valid_until),
        "left_infrastructure_at": _time(record.left_infrastructure_at),
        "handed_to_carrier_at": _time(record.handed_to_carrier_at),
        "delivered_at": _time(record.delivered_at),
        "error": record.error,
        "events": [
            {"status": e.status.value, "at": format_time(e.at), "detail": dict(e.detail)}
            for e in record.events
        ],
    }


def _not_found(message_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no message {message_id!r}", field="id")


async def get_message(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    account = await authenticate(request)
    message_id = request.match_info["id"]
    record = None
    if len(message_id) <= _MAX_ID:
        record = await deps.messages.get(account, message_id)
    if record is None:
        raise _not_found(message_id[:_MAX_ID])
    return _json_response(message_view(record))


async def delete_message(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    account = await authenticate(request)
    message_id = request.match_info["id"]
    if len(message_id) > _MAX_ID:
        raise _not_found(message_id[:_MAX_ID])
    outcome = await deps.messages.cancel(account, message_id)
    if outcome is CancelOutcome.NOT_FOUND:
        raise _not_found(message_id)
    if outcome is CancelOutcome.TOO_LATE:
        raise ApiError(
            409,
            "too_late",
            "the message was already submitted upstream or has reached a final status",
            field="id",
        )
    log.info("canceled message id=%s account=%s", message_id, account.system_id)
    return _json_response({"id": message_id, "status": "canceled"})


# ---------------------------------------------------------------------- operations


async def healthz(request: web.Request) -> web.Response:
    return _json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        reasons = await request.app[DEPS].readiness()
    except Exception as exc:  # a failing check is a reason, not a 500
        log.warning("readiness check failed: %s", type(exc).__name__)
        reasons = [f"readiness check failed: {type(exc).__name__}"]
    if reasons:
        return _json_response({"status": "unavailable", "reasons": reasons}, status=503)
    return _json_response({"status": "ok", "reasons": []})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[DEPS].metrics.render()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI], content_type=_JSON)


# ------------------------------------------------------------------------- the app


def create_app(deps: HttpDeps, *, client_max_size: int = MAX_BODY) -> web.Application:
    app = web.Application(middlewares=[_errors_as_json], client_max_size=client_max_size)
    app[DEPS] = deps
    app[_OPENAPI] = json.dumps(openapi_document(), separators=(",", ":")).encode()
    app.router.add_post("/v1/messages", post_message)
    app.router.add_get("/v1/messages/{id}", get_message, allow_head=False)
    app.router.add_delete("/v1/messages/{id}", delete_message)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    return app


async def start_http(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 5.0
) -> tuple[web.AppRunner, int]:
    """Listen on host:port (0: any free port) and return the runner and the bound port.

    ``await runner.cleanup()`` stops listening, waits up to ``shutdown_timeout`` for
    requests in flight (a POST waiting for its group commit finishes and is answered),
    then closes the connections and runs the app's cleanup."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    log.info("HTTP API listening on %s:%d", host, bound_port)
    return runner, bound_port
