"""The SMPP front's server handler: binds, submit_sm / data_sm, query_sm, cancel_sm.

`SmppFront` is the `smpp.aio.ServerHandler` of the gateway's SMPP server
(SMPP 3.4, interface.md "SMPP server"). A submit_sm or data_sm goes through
`MessageService.accept`, the path HTTP shares, and is answered with the
gateway message id only once the store has committed it. Receipts go out
through `gateway.smpp_front.receipts.ReceiptSender`.

Decisions where SMPP 3.4 leaves room (each says why where it is made):

* destination_addr must be international: TON 1, or TON 0 with digits (a
  leading "+" or "00" is tolerated). Other TONs are refused with RINVDSTADR:
  a national number names no country here, and guessing one would send the
  message to the wrong country.
* data_coding 0, 1, 3 and 8 pass through. Other text alphabets (Cyrillic,
  Hebrew, the 0xC0-0xFF coding groups with a text alphabet) are decoded and
  re-sent as GSM-7 or UCS-2, whichever carries the text; a message class or
  waiting indication they carry is lost. Binary (2, 4, 8-bit coding groups)
  and alphabets without a codec are refused with RINVMSGLEN: there is no
  "invalid data_coding" status in 3.4 (5.0's RINVDCS 0x104 is not ours to
  send to a 3.4 peer), and RSYSERR is temporary (Kannel re-queues on it), so
  the ESME would resend forever.
* query_sm and cancel_sm of an unknown message, or another account's, get
  RINVMSGID: the same answer for both, so that nobody learns that someone
  else's id exists (HTTP answers 404 for both alike).
* The account is read once, at bind: a changed tps or default sender applies
  from the next bind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl as ssl_module
from datetime import datetime, timedelta

from gateway.config import SmppSettings, parse_listen
from gateway.events import StatusBus
from gateway.futures import pass_failure
from gateway.lifecycle import FINAL, Status
from gateway.logs import mask_number
from gateway.messages import (
    Accepted,
    MessageService,
    QueueFull,
    Submission,
    SubmissionError,
    parse_destination,
)
from gateway.metrics import Metrics
from gateway.ratelimit import TpsLimiter
from gateway.smpp_front.receipts import ReceiptSender, message_state
from gateway.store import Account, CancelOutcome, MessageRecord, Store, is_transient, utcnow
from smpp import text as smstext
from smpp.aio import ServerSession, SmppServer
from smpp.constants import CommandStatus, DataCoding, EsmClass, Ton
from smpp.errors import (
    CancelFailed,
    CommandFailed,
    InvalidDestinationAddress,
    InvalidExpiry,
    InvalidMessageId,
    InvalidMessageLength,
    InvalidOptionalParameter,
    InvalidPassword,
    InvalidSourceAddress,
    InvalidSystemId,
    MessageQueueFull,
    ProtocolError,
    ReplaceFailed,
    SmscSystemError,
    Throttled,
)
from smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    DataSm,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    SubmitSm,
)
from smpp.session import SessionConfig
from smpp.times import format_absolute, parse_smpp_time

__all__ = ["SmppFront"]

log = logging.getLogger("gateway.smpp_front")

_ACCOUNT = "account"  # ServerSession.extra: the Account behind the bind
_COUNTED = "sessions_metric_labels"  # ServerSession.extra: labels of the +1 to undo on close
_RECEIVING = ("receiver", "transceiver")

_DIGITS = re.compile(r"[0-9]+")
# E.164 section 6.1: at most 15 digits; an alphanumeric sender at most 11 characters.
_MAX_NUMBER_DIGITS = 15
_MAX_ALPHANUMERIC = 11

# Sent as given: the codings MessageService and the dispatcher encode themselves.
_PASS_THROUGH = frozenset({DataCoding.DEFAULT, DataCoding.IA5, DataCoding.LATIN_1, DataCoding.UCS2})
# Decoded with "replace" by smpp.text: an octet the alphabet lacks would silently
# become U+FFFD, so these are checked to re-encode to exactly what came.
_STRICT = frozenset({DataCoding.IA5, DataCoding.UCS2})


# ------------------------------------------------------------------ the handler


class SmppFront:
    """The gateway's SMPP server: an `smpp.aio.ServerHandler` over MessageService."""

    def __init__(
        self,
        store: Store,
        messages: MessageService,
        bus: StatusBus,
        metrics: Metrics,
        limiter: TpsLimiter,
        settings: SmppSettings,
        *,
        session_config: SessionConfig | None = None,
        system_id: str = "smsgw",
    ) -> None:
        self.store = store
        self.messages = messages
        self.metrics = metrics
        self.limiter = limiter
        self.settings = settings
        self.session_config = session_config or SessionConfig()
        self.system_id = system_id
        self.receipts = ReceiptSender(store, settings, window=self.session_config.window)
        bus.subscribe(self.receipts.on_changes)
        self._servers: list[SmppServer] = []
        self._server: SmppServer | None = None
        self._tls_server: SmppServer | None = None

    # --- lifecycle

    @property
    def port(self) -> int:
        """The plain listener's port (the one the OS chose when started with port 0)."""
        if self._server is None:
            raise RuntimeError("the SMPP front is not started")
        return self._server.port

    @property
    def tls_port(self) -> int | None:
        """The TLS listener's port, when `settings.tls_listen` is configured."""
        return self._tls_server.port if self._tls_server is not None else None

    @property
    def sessions(self) -> list[ServerSession]:
        return [session for server in self._servers for session in server.sessions]

    async def start(
        self,
        host: str | None = None,
        port: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        """Listen on `host`:`port` (default `settings.listen`; port 0 = any free port),
        and on `settings.tls_listen` with TLS when that is configured."""
        if self._servers:
            raise RuntimeError("the SMPP front is already started")
        default_host, default_port = parse_listen(self.settings.listen)
        self._server = self._make_server(
            default_host if host is None else host,
            default_port if port is None else port,
            ssl,
        )
        servers = [self._server]
        if self.settings.tls_listen is not None:
            tls_host, tls_port = parse_listen(self.settings.tls_listen)
            self._tls_server = self._make_server(tls_host, tls_port, self._tls_context())
            servers.append(self._tls_server)
        self.receipts.start()
        try:
            for server in servers:
                await server.start()
                self._servers.append(server)
        except BaseException:
            await self.close(timeout=0.0)
            raise

    def _make_server(self, host: str, port: int, ssl: ssl_module.SSLContext | None) -> SmppServer:
        return SmppServer(
            self,
            host=host,
            port=port,
            ssl=ssl,
            config=self.session_config,
            system_id=self.system_id,
            on_pdu=self.metrics.pdu_observer("esme"),
        )

    def _tls_context(self) -> ssl_module.SSLContext:
        settings = self.settings
        assert settings.tls_cert is not None and settings.tls_key is not None  # SmppSettings checks
        context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        return context

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, unbind every ESME (answering what is in progress), then stop
        the receipt sender; receipts not acknowledged stay in the outbox."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        servers, self._servers = self._servers, []
        if servers:
            await asyncio.gather(
                *(server.close(max(0.0, deadline - loop.time())) for server in servers)
            )
        await self.receipts.close(max(0.0, deadline - loop.time()))

    # --- ServerHandler: binds

    async def authenticate(
        self, session: ServerSession, bind: BindTransmitter | BindReceiver | BindTransceiver
    ) -> None:
        # Two reads so that the ESME learns which of the two is wrong (interface.md:
        # RINVSYSID / RINVPASWD); binds are rare, this is no hot path.
        if await self.store.get_account_by_system_id(bind.system_id) is None:
            raise InvalidSystemId("no such system_id", field="system_id")
        account = await self.store.authenticate_password(bind.system_id, bind.password)
        if account is None:
            raise InvalidPassword("wrong password", field="password")
        session.extra[_ACCOUNT] = account

    def session_bound(self, session: ServerSession) -> None:
        account: Account = session.extra[_ACCOUNT]
        labels = (account.system_id, session.bind_type or "")
        self.metrics.smpp_sessions.labels(*labels).inc()
        session.extra[_COUNTED] = labels
        if session.bind_type in _RECEIVING:
            self.receipts.add_session(account.id, session)

    def session_closed(self, session: ServerSession) -> None:
        labels = session.extra.pop(_COUNTED, None)
        if labels is None:
            return  # never bound
        self.metrics.smpp_sessions.labels(*labels).dec()
        account: Account = session.extra[_ACCOUNT]
        self.receipts.remove_session(account.id, session)

    # --- ServerHandler: messages

    def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> asyncio.Future[str]:
        """A plain function: refusals raise at once, and the answer is a Future the
        server answers from without a task per submit_sm (the hottest request)."""
        if pdu.short_message and pdu.message_payload:
            # Section 5.3.2.32: message_payload is for when short_message is empty.
            raise InvalidOptionalParameter(
                "both short_message and message_payload are set", field="message_payload"
            )
        account, submission = self._submission(
            session,
            source_addr=pdu.source_addr,
            source_ton=pdu.source_addr_ton,
            destination_addr=pdu.destination_addr,
            destination_ton=pdu.dest_addr_ton,
            esm_class=pdu.esm_class,
            data_coding=pdu.data_coding,
            registered_delivery=pdu.registered_delivery,
            user_data=pdu.short_message or pdu.message_payload or b"",
            schedule_delivery_time=pdu.schedule_delivery_time,
            validity_period=pdu.validity_period,
        )
        return self._accept(account, submission)

    def data_sm(self, session: ServerSession, pdu: DataSm) -> asyncio.Future[str]:
        # data_sm has no short_message (section 4.7.1): the text is message_payload; its
        # validity is the qos_time_to_live TLV, in seconds.
        valid_until = None
        if pdu.qos_time_to_live:
            valid_until = utcnow() + timedelta(seconds=pdu.qos_time_to_live)
        account, submission = self._submission(
            session,
            source_addr=pdu.source_addr,
            source_ton=pdu.source_addr_ton,
            destination_addr=pdu.destination_addr,
            destination_ton=pdu.dest_addr_ton,
            esm_class=pdu.esm_class,
            data_coding=pdu.data_coding,
            registered_delivery=pdu.registered_delivery,
            user_data=pdu.message_payload or b"",
            valid_until=valid_until,
        )
        return self._accept(account, submission)

    def _accept(self, account: Account, submission: Submission) -> asyncio.Future[str]:
        """The message id once `submission` is committed; refusals raise at once."""
        try:
            accepted = self.messages.accept_nowait(account, "smpp", submission)
        except QueueFull:
            raise MessageQueueFull("the gateway's queue is full") from None
        except SubmissionError as exc:
            raise _submission_status(exc) from None
        message_id: asyncio.Future[str] = accepted.get_loop().create_future()
        accepted.add_done_callback(
            functools.partial(_message_id_of, message_id, account, submission.destination)
        )
        return message_id

    def _submission(
        self,
        session: ServerSession,
        *,
        source_addr: str,
        source_ton: int,
        destination_addr: str,
        destination_ton: int,
        esm_class: int,
        data_coding: int,
        registered_delivery: int,
        user_data: bytes,
        schedule_delivery_time: str = "",
        validity_period: str = "",
        valid_until: datetime | None = None,
    ) -> tuple[Account, Submission]:
        """The submission a submit_sm or data_sm asks for; raises the ProtocolError
        that refuses it (bad field, over the account's tps)."""
        account: Account = session.extra[_ACCOUNT]
        now = utcnow()
        destination = _destination(destination_addr, destination_ton)
        source = _source(source_addr, source_ton, account)
        text, coding = _text(user_data, data_coding, esm_class)
        # parse_smpp_time raises InvalidScheduleTime / InvalidExpiry (RINVSCHED /
        # RINVEXPIRY, section 7.1.1) for a value it cannot read.
        send_at = parse_smpp_time(schedule_delivery_time, now=now, field="schedule_delivery_time")
        if validity_period:
            valid_until = parse_smpp_time(validity_period, now=now, field="validity_period")
        # Counted once the PDU is known to be a message, as HTTP does: tps counts messages.
        if not self.limiter.allow(account.id, account.tps):
            raise Throttled(f"over the account's {account.tps} messages per second")
        return account, Submission(
            source=source,
            destination=destination,
            text=text,
            data_coding=coding,
            registered_delivery=registered_delivery,
            send_at=send_at,
            valid_until=valid_until,
        )

    async def query_sm(self, session: ServerSession, pdu: QuerySm) -> QuerySmResp:
        account: Account = session.extra[_ACCOUNT]
        message_id = _message_id(pdu.message_id)
        record = await self.messages.get(account, message_id)
        if record is None:
            raise InvalidMessageId("no such message", field="message_id")
        final_date = ""
        if record.status in FINAL:
            final_date = format_absolute(_final_time(record))
        return QuerySmResp(
            message_id=record.id,
            final_date=final_date,
            message_state=message_state(record.status),
            error_code=0,
        )

    async def cancel_sm(self, session: ServerSession, pdu: CancelSm) -> None:
        account: Account = session.extra[_ACCOUNT]
        message_id = _message_id(pdu.message_id)
        if not message_id:
            # Section 4.9.1: an empty message_id cancels every message from
            # source_addr to destination_addr. Not offered: one id per cancel_sm.
            raise CancelFailed("cancel_sm without a message_id is not supported")
        outcome = await self.messages.cancel(account, message_id)
        if outcome is CancelOutcome.NOT_FOUND:
            raise InvalidMessageId("no such message", field="message_id")
        if outcome is CancelOutcome.TOO_LATE:
            raise CancelFailed("the message has already left the gateway or is final")

    async def replace_sm(self, session: ServerSession, pdu: ReplaceSm) -> None:
        raise ReplaceFailed("replace_sm is not supported")


# ------------------------------------------------------------- field by field


def _message_id_of(
    out: asyncio.Future[str],
    account: Account,
    destination: str,
    accepted: asyncio.Future[Accepted],
) -> None:
    """submit_sm's answer from the accept: the message id, or the commit's failure."""
    if out.done():
        return  # the session went away meanwhile; the message is accepted all the same
    if not accepted.cancelled() and is_transient(exc := accepted.exception()):
        # The database is away: nothing was stored. RSYSERR is temporary (ESMEs
        # such as Kannel queue the message again), and no traceback per submit_sm.
        log.warning("submit_sm not stored: the store is unavailable (%s)", type(exc).__name__)
        out.set_exception(SmscSystemError("the message store is unavailable"))
        return
    if pass_failure(accepted, out):
        return
    result = accepted.result()
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "accepted id=%s system_id=%s to=%s segments=%d",
            result.id,
            account.system_id,
            mask_number(destination),
            result.segments,
        )
    out.set_result(result.id)


def _message_id(value: str) -> str:
    return value.strip(" \t\r\n\x00")


def _destination(addr: str, ton: int) -> str:
    """E.164 from destination_addr; InvalidDestinationAddress otherwise."""
    number = addr.strip()
    if ton not in (Ton.UNKNOWN, Ton.INTERNATIONAL):
        raise InvalidDestinationAddress(
            f"dest_addr_ton {ton}: only international numbers are accepted",
            field="destination_addr",
        )
    if ton == Ton.UNKNOWN and number.startswith("00"):
        number = number[2:]  # the international prefix most of the world dials
    digits = number[1:] if number.startswith("+") else number
    if not _DIGITS.fullmatch(digits):
        raise InvalidDestinationAddress("not a phone number", field="destination_addr")
    try:
        return parse_destination(digits, field="destination_addr")
    except SubmissionError as exc:
        raise InvalidDestinationAddress(exc.message, field="destination_addr") from None


def _source(addr: str, ton: int, account: Account) -> str:
    """The sender as MessageService stores it: "+digits" for an international number,
    else as given (a short code, an alphanumeric name)."""
    source = addr.strip()
    if not source:
        if account.default_source:
            return account.default_source
        raise InvalidSourceAddress(
            "source_addr is empty and the account has no default sender", field="source_addr"
        )
    digits = source[1:] if source.startswith("+") else source
    if _DIGITS.fullmatch(digits):
        if len(digits) > _MAX_NUMBER_DIGITS:
            raise InvalidSourceAddress(
                f"more than {_MAX_NUMBER_DIGITS} digits", field="source_addr"
            )
        if ton == Ton.INTERNATIONAL or source.startswith("+"):
            return "+" + digits
        return digits
    if len(source) > _MAX_ALPHANUMERIC:
        raise InvalidSourceAddress(
            f"an alphanumeric sender has at most {_MAX_ALPHANUMERIC} characters",
            field="source_addr",
        )
    return source


def _is_binary(data_coding: int) -> bool:
    if data_coding in (DataCoding.BINARY_8BIT_A, DataCoding.BINARY):
        return True
    # 3GPP TS 23.038 section 4: 0xF0-0xFF with bit 2 set is 8-bit data.
    return 0xF0 <= data_coding <= 0xFF and bool(data_coding & 0x04)


_UDHI = int(EsmClass.UDHI)  # a plain int: Flag's & costs a call per submit_sm


def _text(user_data: bytes, data_coding: int, esm_class: int) -> tuple[str, int | None]:
    """The text and the data_coding to hand to MessageService (None: it chooses)."""
    if esm_class & _UDHI:
        # Each submit_sm is one message of its own: a part of a concatenated message
        # (UDH or SAR) is accepted, stored, billed and receipted by itself, under its
        # own id, which is what the ESME's one submit_sm_resp per part refers to. The
        # UDH is ours to write again when the dispatcher splits, so it is dropped here.
        try:
            _, user_data = smstext.parse_udh(user_data)
        except smstext.MalformedUdh as exc:
            raise InvalidMessageLength(exc.reason, field="short_message") from None
    if _is_binary(data_coding):
        raise InvalidMessageLength(
            f"binary data_coding 0x{data_coding:02X} is not accepted", field="data_coding"
        )
    try:
        text = smstext.decode(user_data, data_coding)
        if data_coding in _STRICT and smstext.encode(text, data_coding) != user_data:
            raise InvalidMessageLength(
                f"octets that data_coding 0x{data_coding:02X} does not define",
                field="short_message",
            )
    except smstext.TextError as exc:
        raise InvalidMessageLength(exc.reason, field="data_coding") from None
    if not text:
        raise InvalidMessageLength("the message is empty", field="short_message")
    return text, data_coding if data_coding in _PASS_THROUGH else None


# SubmissionError.code -> the status closest to it.
_SUBMISSION_STATUS: dict[str, type[ProtocolError]] = {
    "invalid_destination": InvalidDestinationAddress,
    "invalid_source": InvalidSourceAddress,
    "invalid_text": InvalidMessageLength,
    "text_too_long": InvalidMessageLength,
    "invalid_validity": InvalidExpiry,
}


def _submission_status(exc: SubmissionError) -> ProtocolError:
    error_class = _SUBMISSION_STATUS.get(exc.code)
    if error_class is None:
        return CommandFailed(f"{exc.code}: {exc.message}", status=CommandStatus.RSYSERR)
    return error_class(exc.message, field=exc.field)


def _final_time(record: MessageRecord) -> datetime:
    if record.status is Status.DELIVERED and record.delivered_at is not None:
        return record.delivered_at
    for event in reversed(record.events):
        if event.status is record.status:
            return event.at
    return record.updated_at
