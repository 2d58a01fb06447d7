"""The shape of HTTP API v1: pydantic models of its bodies and the OpenAPI document.

The request model is what `gateway.http_api` validates POST /v1/messages with;
the response models describe what it answers (a test checks real answers
against them). The document is built from the same models, so it cannot
drift from what the server accepts. No aiohttp here.
"""

from __future__ import annotations

import re
from datetime import datetime
from importlib import metadata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from pydantic_core import PydanticCustomError

from gateway.lifecycle import Status

__all__ = [
    "MAX_CLIENT_REF",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_TEXT",
    "CancelResult",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "MessageAccepted",
    "MessageEvent",
    "MessageView",
    "Readiness",
    "SendMessageRequest",
    "openapi_document",
]

MAX_TEXT = 1600
MAX_CLIENT_REF = 64
MAX_IDEMPOTENCY_KEY = 128
MAX_URL = 2048

# A sender is a number (E.164 digits, at most 15, 3GPP TS 23.040 section 9.1.2.5)
# or an alphanumeric name: 11 characters are what fit into the 7-bit packed
# TP-Originating-Address, and handsets show no more.
_NUMERIC_SENDER = re.compile(r"\+?[0-9]{1,15}")
_ALPHANUMERIC_SENDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._&'+-]{0,10}")

_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _check_sender(value: str) -> str:
    if _NUMERIC_SENDER.fullmatch(value) or _ALPHANUMERIC_SENDER.fullmatch(value):
        return value
    raise PydanticCustomError(
        "invalid_source",
        "must be a number of at most 15 digits (optional leading +) or an alphanumeric "
        "sender of at most 11 characters (letters, digits, space . _ & ' + -)",
    )


def _check_callback_url(value: str) -> str:
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        raise PydanticCustomError("invalid_url", "must be an absolute http or https URL") from None
    return value  # as the client wrote it, not pydantic's normalised form


Sender = Annotated[
    str,
    Field(
        json_schema_extra={
            "pattern": r"^(\+?[0-9]{1,15}|[A-Za-z0-9][A-Za-z0-9 ._&'+-]{0,10})$",
            "maxLength": 16,
        }
    ),
    AfterValidator(_check_sender),
]
# RFC 3339 strings only: strict, so a bare number is not taken for a Unix time.
Rfc3339 = Annotated[AwareDatetime, Field(strict=True)]
CallbackUrl = Annotated[
    str,
    Field(max_length=MAX_URL, json_schema_extra={"format": "uri"}),
    AfterValidator(_check_callback_url),
]


class SendMessageRequest(BaseModel):
    """POST /v1/messages."""

    model_config = ConfigDict(extra="forbid", title="SendMessageRequest")

    to: str = Field(
        min_length=1,
        max_length=32,
        description="Destination in international form, e.g. +34600123456 (a missing + is "
        "assumed); answered in E.164.",
        examples=["+34600123456"],
    )
    from_: Sender | None = Field(
        default=None,
        alias="from",
        description="Sender: a number (at most 15 digits) or an alphanumeric name (at most "
        "11 characters). Defaults to the account's default sender; required when it has none.",
        examples=["ACME"],
    )
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="The message text.")
    send_at: Rfc3339 | None = Field(
        default=None,
        description="RFC 3339 time with an offset; the message is scheduled until then.",
        examples=["2030-05-01T12:00:00Z"],
    )
    valid_until: Rfc3339 | None = Field(
        default=None,
        description="RFC 3339 time with an offset; not sent (expired) after it.",
    )
    callback_url: CallbackUrl | None = Field(
        default=None,
        description="Every status transition is POSTed here (default: the account's).",
    )
    client_ref: str | None = Field(
        default=None, max_length=MAX_CLIENT_REF, description="Your reference, echoed back."
    )
    encoding: Literal["gsm7", "ucs2", "latin1"] | None = Field(
        default=None,
        description="Force an encoding; by default GSM 03.38 when the text allows, else UCS-2.",
    )


class MessageAccepted(BaseModel):
    """202 answer of POST /v1/messages."""

    id: str
    status: Literal["accepted", "scheduled"]
    segments: int = Field(ge=1)
    encoding: str = Field(examples=["gsm7", "ucs2"])


class MessageEvent(BaseModel):
    status: Status
    at: datetime = Field(description="RFC 3339, UTC.")
    detail: dict[str, Any] = Field(
        description="What is known of the transition: route, upstream message id, error code."
    )


class MessageView(BaseModel):
    """GET /v1/messages/{id}. Times are RFC 3339 in UTC, null until reached."""

    model_config = ConfigDict(extra="forbid")

    id: str
    to: str
    from_: str = Field(alias="from")
    status: Status
    segments: int
    encoding: str
    route: str | None
    price: float | None = Field(description="Total price of all segments sent.")
    client_ref: str | None
    created_at: datetime
    send_at: datetime | None
    valid_until: datetime | None
    left_infrastructure_at: datetime | None = Field(
        description="When an upstream SMSC accepted it (status submitted)."
    )
    handed_to_carrier_at: datetime | None = Field(
        description="When a receipt showed the carrier had it (status enroute)."
    )
    delivered_at: datetime | None
    error: str | None
    events: list[MessageEvent]


class CancelResult(BaseModel):
    id: str
    status: Literal["canceled"]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_destination"])
    message: str
    field: str | None = Field(
        description="The request field at fault, dotted for nested ones; null when none."
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    reasons: list[str] = Field(default_factory=list)


_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (SendMessageRequest, "validation"),
    (MessageAccepted, "serialization"),
    (MessageView, "serialization"),
    (CancelResult, "serialization"),
    (ErrorBody, "serialization"),
    (Health, "serialization"),
    (Readiness, "serialization"),
]

_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"basicAuth": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _version() -> str:
    try:
        return metadata.version("smsgw")
    except metadata.PackageNotFoundError:
        return "0"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of API v1 (JSON Schema 2020-12, which pydantic emits)."""
    _, defs = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = defs["$defs"]
    message_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The gateway message id (the same one SMPP submit_sm_resp gives).",
    }
    retry_after = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smsgw HTTP API",
            "version": _version(),
            "description": "Send SMS and follow them to the handset. Every error is "
            '`{"error": {"code", "message", "field"}}`.',
        },
        "paths": {
            "/v1/messages": {
                "post": {
                    "operationId": "sendMessage",
                    "summary": "Accept a message for sending",
                    "security": _SECURITY,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
                            "description": "A repeat with the same key returns the first "
                            "answer instead of sending a second message.",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SendMessageRequest")}},
                    },
                    "responses": {
                        "202": _json(
                            _ref("MessageAccepted"),
                            "Committed; it will be sent (or is scheduled).",
                            headers={
                                "Location": {
                                    "schema": {"type": "string"},
                                    "description": "Where to read its status.",
                                }
                            },
                        ),
                        "400": _error("BadRequest"),
                        "401": _error("Unauthorized"),
                        "413": _error("TooLarge"),
                        "429": _json(
                            _ref("ErrorBody"),
                            "Over the account's messages per second.",
                            headers=retry_after,
                        ),
                        "503": _json(
                            _ref("ErrorBody"),
                            "The gateway's queue is full; try again.",
                            headers=retry_after,
                        ),
                    },
                }
            },
            "/v1/messages/{id}": {
                "parameters": [message_id],
                "get": {
                    "operationId": "getMessage",
                    "summary": "A message's status, milestones and events",
                    "security": _SECURITY,
                    "responses": {
                        "200": _json(_ref("MessageView"), "The message."),
                        "401": _error("Unauthorized"),
                        "404": _error("NotFound"),
                    },
                },
                "delete": {
                    "operationId": "cancelMessage",
                    "summary": "Cancel a message not yet submitted upstream",
                    "security": _SECURITY,
                    "responses": {
                        "200": _json(_ref("CancelResult"), "Canceled (also when it was already)."),
                        "401": _error("Unauthorized"),
                        "404": _error("NotFound"),
                        "409": _json(
                            _ref("ErrorBody"), "Too late: submitted upstream or final already."
                        ),
                    },
                },
            },
            "/v1/reports/summary": {
                "get": {
                    "operationId": "reportSummary",
                    "summary": "Delivery statistics: counts by status, delivery ratio, "
                    "median and p95 time to delivered, segments and cost, by day, hour, "
                    "route, country, account or status",
                    "security": _SECURITY,
                    "parameters": [
                        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                        for n in ("from", "to", "group_by", "account")
                    ],
                    "responses": {"200": {"description": "The groups and their totals"}},
                }
            },
            "/v1/messages.csv": {
                "get": {
                    "operationId": "exportMessages",
                    "summary": "The messages of GET /v1/messages as CSV, every page",
                    "security": _SECURITY,
                    "responses": {"200": {"description": "text/csv"}},
                }
            },
            "/v1/routes": {
                "get": {
                    "operationId": "listRoutes",
                    "summary": "Admin: each upstream's health and learned quality; with ?to= the "
                    "ranking for that destination",
                    "parameters": [
                        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                        for n in ("to", "policy", "from")
                    ],
                    "responses": {"200": {"description": "Routes"}},
                }
            },
            "/v1/routes/reload": {
                "post": {
                    "operationId": "reloadRoutes",
                    "summary": "Admin: read prices and rules again (as SIGHUP does)",
                    "responses": {"200": {"description": "Reloaded"}},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": _json(_ref("Health"), "The process runs.")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readiness",
                    "summary": "Readiness: the database answers and an upstream is bound",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Readiness"), "Ready."),
                        "503": _json(_ref("Readiness"), "Not ready, with the reasons."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format 0.0.4.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The account's API key.",
                },
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The account's system_id and password.",
                },
            },
            "responses": {
                "BadRequest": _json(
                    _ref("ErrorBody"),
                    "Bad JSON (invalid_json), a field that fails validation (the error names "
                    "it), or a message that cannot be sent as given (invalid_destination, "
                    "text_too_long, ...).",
                ),
                "Unauthorized": _json(
                    _ref("ErrorBody"),
                    "Missing or wrong credentials.",
                    headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
                ),
                "NotFound": _json(_ref("ErrorBody"), "No such message for this account."),
                "TooLarge": _json(_ref("ErrorBody"), "The body is larger than allowed."),
            },
        },
        "security": _SECURITY,
    }
