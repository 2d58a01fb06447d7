"""Accepting, cancelling and reading messages: the one path HTTP and SMPP share.

A message is acknowledged (HTTP 202, submit_sm_resp) only after `accept`
returns, and `accept` returns only after the store's group commit has
written it. Then it is handed to the dispatcher in memory; the dispatcher's
recovery finds it in the store after a crash.
"""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import datetime
from typing import Protocol

import phonenumbers

from gateway.frozen import record
from gateway.futures import pass_failure
from gateway.ids import new_message_id
from gateway.lifecycle import Status
from gateway.logs import mask_number as mask_number  # re-exported; defined once, in logs
from gateway.metrics import Metrics
from gateway.numbers import e164
from gateway.store import (
    AcceptResult,
    Account,
    CancelOutcome,
    MessageRecord,
    NewMessage,
    Store,
    utcnow,
)
from smpp import text as smstext

# data_coding -> the name the API shows as "encoding".
ENCODING_NAMES: dict[int, str] = {0: "gsm7", 1: "ascii", 3: "latin1", 8: "ucs2"}
ENCODING_BY_NAME: dict[str, int] = {name: dc for dc, name in ENCODING_NAMES.items()}

# The longest text accepted: 255 concatenated parts is the UDH limit (one-octet
# count, 3GPP TS 23.040 section 9.2.3.24.1); a gateway that bills per segment
# should not let a runaway template send 255 though, so the API caps lower.
MAX_SEGMENTS = 20


class SubmissionError(Exception):
    """A message that cannot be accepted as given. `code` and `field` go into the answer."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class QueueFull(Exception):
    """The dispatcher holds as many unsent messages as it is allowed to (RMSGQFUL / 503)."""


def parse_destination(number: str, *, field: str = "to") -> str:
    """An international number in E.164 (``+34600123456``), or SubmissionError."""
    candidate = number.strip()
    if not candidate.startswith("+"):
        candidate = "+" + candidate
    valid = _valid_e164(candidate)
    if valid is not None:
        return valid
    # Not valid: phonenumbers says why.
    try:
        parsed = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException as exc:
        raise SubmissionError(
            "invalid_destination", f"not an international phone number: {exc}", field=field
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise SubmissionError(
            "invalid_destination", "not a valid phone number for its country", field=field
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=100_000)
def _valid_e164(candidate: str) -> str | None:
    """The E.164 form of a valid number, else None (then parse_destination explains).

    Cached: a dunning run sends to the same numbers again and again; a hit is
    cheaper still than gateway.numbers' few microseconds for a "+digits" number,
    and saves phonenumbers' tens of microseconds for any other form.
    """
    return e164(candidate)


@record
class Submission:
    """A message as an interface received it, already validated field by field."""

    source: str
    destination: str  # E.164, "+" included
    text: str
    data_coding: int | None = None  # None: GSM-7 when the text allows it, else UCS-2
    registered_delivery: int = 0
    client_ref: str | None = None
    callback_url: str | None = None
    send_at: datetime | None = None
    valid_until: datetime | None = None
    idempotency_key: str | None = None


@record
class Accepted:
    id: str
    status: Status
    segments: int
    encoding: str
    # Set when the idempotency key was used before: the first answer, verbatim.
    replayed_response: str | None = None

    def response_body(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "status": self.status.value,
                "segments": self.segments,
                "encoding": self.encoding,
            },
            separators=(",", ":"),
        )


class Dispatch(Protocol):
    """What the service needs of the dispatcher."""

    @property
    def full(self) -> bool: ...

    def enqueue_new(self, message: NewMessage, account: Account | None = None) -> None: ...

    def enqueue_record(self, record: MessageRecord) -> None: ...

    def discard(self, message_id: str) -> bool: ...


class MessageService:
    def __init__(self, store: Store, dispatch: Dispatch, metrics: Metrics) -> None:
        self.store = store
        self.dispatch = dispatch
        self.metrics = metrics

    async def accept(self, account: Account, interface: str, sub: Submission) -> Accepted:
        return await self.accept_nowait(account, interface, sub)

    def accept_nowait(
        self, account: Account, interface: str, sub: Submission
    ) -> asyncio.Future[Accepted]:
        """`accept` as a Future, done once the message is committed and handed on.

        What is wrong with the submission raises here, at once (QueueFull,
        SubmissionError); the Future fails only if the commit does. The SMPP
        front answers submit_sm from it without a task per message. The hand-over
        to the dispatcher runs whether or not the caller still waits.
        """
        message, status, accepted = self._prepare(account, interface, sub)
        committed = self.store.accept_nowait(
            message,
            idempotency_key=sub.idempotency_key,
            response=accepted.response_body() if sub.idempotency_key is not None else None,
        )
        out: asyncio.Future[Accepted] = committed.get_loop().create_future()

        def done(committed: asyncio.Future[AcceptResult]) -> None:
            if pass_failure(committed, out):
                return
            result = self._committed(account, interface, message, status, committed.result())
            if not out.done():
                out.set_result(result or accepted)

        committed.add_done_callback(done)
        return out

    def _prepare(
        self, account: Account, interface: str, sub: Submission
    ) -> tuple[NewMessage, Status, Accepted]:
        """The message to store for `sub`, its first status and the answer; raises
        QueueFull or SubmissionError for one that cannot be accepted."""
        if self.dispatch.full:
            raise QueueFull("the gateway's queue is full")
        data_coding = sub.data_coding
        if data_coding is None:
            data_coding = int(smstext.choose_encoding(sub.text))
        try:
            segments = smstext.count_segments(sub.text, data_coding)
        except smstext.TextError as exc:
            raise SubmissionError("invalid_text", str(exc), field="text") from None
        if segments > MAX_SEGMENTS:
            raise SubmissionError(
                "text_too_long", f"{segments} segments, at most {MAX_SEGMENTS}", field="text"
            )
        now = utcnow()
        if sub.valid_until is not None and sub.valid_until <= now:
            raise SubmissionError(
                "invalid_validity", "valid_until is in the past", field="valid_until"
            )
        if (
            sub.send_at is not None
            and sub.valid_until is not None
            and sub.valid_until <= sub.send_at
        ):
            raise SubmissionError(
                "invalid_validity", "valid_until is not after send_at", field="valid_until"
            )
        message = NewMessage(
            id=new_message_id(),
            account_id=account.id,
            interface=interface,
            source=sub.source,
            destination=sub.destination,
            text=sub.text,
            encoding=ENCODING_NAMES.get(data_coding, f"dc{data_coding}"),
            data_coding=data_coding,
            segments=segments,
            created_at=now,
            registered_delivery=sub.registered_delivery,
            client_ref=sub.client_ref,
            callback_url=sub.callback_url,
            send_at=sub.send_at,
            valid_until=sub.valid_until,
        )
        status = (
            Status.SCHEDULED if sub.send_at is not None and sub.send_at > now else Status.ACCEPTED
        )
        return message, status, Accepted(message.id, status, segments, message.encoding)

    def _committed(
        self,
        account: Account,
        interface: str,
        message: NewMessage,
        status: Status,
        result: AcceptResult,
    ) -> Accepted | None:
        """After the commit: a replayed answer (idempotency key seen before), or None
        once the new message is counted and handed to the dispatcher."""
        if result.replayed_response is not None:
            return Accepted(
                result.message_id,
                result.status,
                message.segments,
                message.encoding,
                result.replayed_response,
            )
        self.metrics.child(self.metrics.messages_accepted, account.system_id, interface).inc()
        if status is Status.ACCEPTED:
            self.dispatch.enqueue_new(message, account)
        return None

    async def cancel(self, account: Account, message_id: str) -> CancelOutcome:
        # Take it out of the dispatcher first, so that no submit_sm for it can
        # start between the store's check and the cancel being committed.
        taken = self.dispatch.discard(message_id)
        outcome = await self.store.cancel(account.id, message_id)
        if taken and outcome is not CancelOutcome.CANCELED:
            # Not ours to cancel after all (another account's, or raced to a final
            # status): give it back.
            record = await self.store.get_message(message_id)
            if record is not None and record.status in (Status.ACCEPTED, Status.SCHEDULED):
                self.dispatch.enqueue_record(record)
        return outcome

    async def get(self, account: Account, message_id: str) -> MessageRecord | None:
        return await self.store.get_message(message_id, account_id=account.id)
