"""Plain, frozen records the store hands out and takes in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gateway.frozen import record
from gateway.lifecycle import Status

__all__ = [
    "AcceptResult",
    "Account",
    "CancelOutcome",
    "CreatedAccount",
    "EventRecord",
    "MessageRecord",
    "MqttEvent",
    "NewMessage",
    "PartRecord",
    "ReceiptResult",
    "SmppReceipt",
    "StatusChange",
    "WebhookDelivery",
    "format_time",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@record
class Account:
    id: int
    system_id: str
    tps: int
    routing: str
    default_source: str | None
    callback_url: str | None
    webhook_secret: str
    max_price: float | None
    created_at: datetime


@record
class CreatedAccount:
    """A new account and its secrets in clear, which are shown this once."""

    account: Account
    api_key: str


@record
class NewMessage:
    """A message to accept. ``callback_url`` None means the account's default."""

    id: str
    account_id: int
    interface: str  # "http" | "smpp"
    source: str
    destination: str
    text: str
    encoding: str
    data_coding: int
    segments: int
    created_at: datetime
    registered_delivery: int = 0
    client_ref: str | None = None
    callback_url: str | None = None
    send_at: datetime | None = None
    valid_until: datetime | None = None


@record
class EventRecord:
    status: Status
    at: datetime
    detail: Mapping[str, Any]


@record
class PartRecord:
    message_id: str
    seqnum: int
    upstream: str | None
    upstream_message_id: str | None
    status: Status
    price: float | None
    error: str | None
    submitted_at: datetime | None
    handed_to_carrier_at: datetime | None
    done_at: datetime | None


@record
class MessageRecord:
    id: str
    account_id: int
    interface: str
    source: str
    destination: str
    text: str
    encoding: str
    data_coding: int
    segments: int
    registered_delivery: int
    client_ref: str | None
    callback_url: str | None
    status: Status
    route: str | None
    price: float | None
    error: str | None
    send_at: datetime | None
    valid_until: datetime | None
    due_at: datetime
    attempts: int
    created_at: datetime
    updated_at: datetime
    left_infrastructure_at: datetime | None
    handed_to_carrier_at: datetime | None
    delivered_at: datetime | None
    parts: tuple[PartRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()  # only filled by Store.get_message


@record
class StatusChange:
    """A committed transition of a message: what metrics, MQTT and SMPP receipts report."""

    message_id: str
    account_id: int
    previous: Status
    status: Status
    at: datetime
    route: str | None
    error: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    # A webhook delivery was written with it (the message has a callback URL):
    # lets the webhook sender wake only when it has work.
    has_callback: bool = False


@record
class AcceptResult:
    """``replayed_response`` is set when the idempotency key was used before: the
    message was NOT inserted again and this is the first answer to send back."""

    message_id: str
    status: Status
    replayed_response: str | None = None


class CancelOutcome(StrEnum):
    CANCELED = "canceled"
    NOT_FOUND = "not_found"  # no such message, or another account's
    TOO_LATE = "too_late"  # already submitted or final


@record
class ReceiptResult:
    """``matched`` False: no part has this upstream id yet; the receipt is kept in
    unmatched_receipts and applied when the submit_sm_resp is recorded."""

    matched: bool
    message_id: str | None
    changes: tuple[StatusChange, ...] = ()


@record
class WebhookDelivery:
    id: int
    message_id: str
    account_id: int
    url: str
    body: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime


@record
class SmppReceipt:
    """A deliver_sm receipt owed to an SMPP account."""

    id: int
    account_id: int
    message_id: str
    status: Status
    error: str | None
    at: datetime


@record
class ReceiptMessage:
    """What a deliver_sm receipt tells of its message (SMPP 3.4 Appendix B): the
    addresses, the submit date and the start of the text (``text`` holds its first
    RECEIPT_TEXT_CHARS characters only)."""

    id: str
    source: str
    destination: str
    text: str
    created_at: datetime


# The receipt text's "text:" field is the first 20 characters of the message.
RECEIPT_TEXT_CHARS = 20


@record
class MqttEvent:
    """A row of the MQTT outbox: ``payload`` goes to
    ``<prefix>/events/<system_id>/<message_id>``."""

    id: int
    system_id: str
    message_id: str
    payload: str
    created_at: datetime
