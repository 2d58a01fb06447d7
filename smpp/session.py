"""Sans-IO SMPP 3.4 session: bind states, sequence numbers, window, timers.

Like h11's Connection, a `Session` is fed the bytes that came off the wire
and returns events; `send()` turns PDUs into bytes that the caller writes.
It never touches a socket, a clock or a logger: the caller passes `now` (a
monotonic time in seconds, such as `loop.time()`) and schedules `poll()` at
`next_deadline()`.

Every rule about what may be sent or received in which state, and which PDU
moves the session to which state, is in `TRANSITIONS` below.

What the session answers by itself, so that the application never sees it:
enquire_link, unbind, generic_nack for a frame that cannot be decoded, and
the request's own response with RINVBNDSTS / RALYBND for a valid request
that is not allowed in the current state (SMPP 3.4 section 4.3 and 2.3).
Peer garbage never raises out of `receive_data`: it becomes a
`ProtocolViolation` event and an answer on the wire.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from .codec import decode, encode
from .constants import RESPONSE_BIT, CommandId, CommandStatus
from .errors import (
    AlreadyBound,
    InvalidBindStatus,
    InvalidCommandLength,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from .framing import DEFAULT_MAX_PDU_LENGTH, NEED_DATA, Framer
from .pdu import RESPONSE_CLASS, Pdu

__all__ = [
    "TRANSITIONS",
    "EnquireLinkDue",
    "Event",
    "InactivityTimeout",
    "InvalidState",
    "PduReceived",
    "ProtocolViolation",
    "RequestFailed",
    "ResponseReceived",
    "ResponseTimeout",
    "Role",
    "Session",
    "SessionConfig",
    "State",
    "StateChanged",
    "UnexpectedResponse",
    "WindowFull",
]

# Sequence numbers run 0x00000001..0x7FFFFFFF, then wrap to 1 (section 3.2).
MAX_SEQUENCE_NUMBER: Final = 0x7FFFFFFF


class Role(enum.Enum):
    ESME = "esme"
    SMSC = "smsc"


class State(enum.Enum):
    OPEN = "open"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBOUND = "unbound"
    CLOSED = "closed"


BOUND_STATES: Final = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})


@dataclass(frozen=True, slots=True)
class SessionConfig:
    window: int = 10
    """Our requests outstanding at most (enquire_link and unbind are not counted)."""
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    enquire_link_interval: float | None = 30.0
    """Bound and nothing sent or received for this long -> EnquireLinkDue."""
    response_timeout: float = 10.0
    """An outstanding request older than this -> ResponseTimeout."""
    inactivity_timeout: float | None = 120.0
    """Nothing received for this long -> InactivityTimeout."""
    session_init_timeout: float | None = 30.0
    """Still OPEN this long after the connection opened -> InactivityTimeout."""


# --- errors -----------------------------------------------------------------


class InvalidState(LocalProtocolError):
    """We tried to send a request that the session's state does not allow."""


class WindowFull(LocalProtocolError):
    """`window` requests are already outstanding; wait for a response."""


class UnexpectedResponse(RemoteProtocolError):
    """A response that answers none of our outstanding requests."""


# --- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """Base of everything `receive_data`, `poll` and `connection_lost` return."""


@dataclass(frozen=True, slots=True)
class PduReceived(Event):
    """A request for the application (answer it with `send(make_response(pdu, ...))`)."""

    pdu: Pdu


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response (any command_status, or a generic_nack) to one of our requests."""

    pdu: Pdu
    request: Pdu


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    old: State
    new: State


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """The peer sent something bad. Whatever answer SMPP asks for is already queued."""

    error: ProtocolError


@dataclass(frozen=True, slots=True)
class EnquireLinkDue(Event):
    """The link has been idle for enquire_link_interval: send an EnquireLink()."""


@dataclass(frozen=True, slots=True)
class ResponseTimeout(Event):
    """No response in response_timeout; the request has left the window."""

    request: Pdu


@dataclass(frozen=True, slots=True)
class InactivityTimeout(Event):
    """Nothing received for inactivity_timeout, or not bound within session_init_timeout."""


@dataclass(frozen=True, slots=True)
class RequestFailed(Event):
    """An outstanding request that will get no response (connection lost, malformed response)."""

    request: Pdu
    reason: str


# --- the rules --------------------------------------------------------------

_C = CommandId

_BINDS: Final = frozenset({_C.BIND_TRANSMITTER, _C.BIND_RECEIVER, _C.BIND_TRANSCEIVER})
# What a transmitter sends (section 2.3).
_TRANSMIT: Final = frozenset(
    {_C.SUBMIT_SM, _C.SUBMIT_MULTI, _C.DATA_SM, _C.QUERY_SM, _C.CANCEL_SM, _C.REPLACE_SM}
)
# What the SMSC sends to a receiver or transceiver (section 2.4).
_DELIVER: Final = frozenset({_C.DELIVER_SM, _C.DATA_SM, _C.ALERT_NOTIFICATION})
_LINK: Final = frozenset({_C.ENQUIRE_LINK, _C.UNBIND})
_NOTHING: Final[frozenset[int]] = frozenset()

# A successful bind_*_resp binds as its bind type says (section 4.1).
_BOUND_BY: Final[dict[int, State]] = {
    _C.BIND_TRANSMITTER_RESP: State.BOUND_TX,
    _C.BIND_RECEIVER_RESP: State.BOUND_RX,
    _C.BIND_TRANSCEIVER_RESP: State.BOUND_TRX,
}
# Sending unbind, or answering one, ends the bind (section 4.2): no request
# may follow, in either direction, except a crossed unbind and enquire_link.
_UNBINDS: Final[dict[int, State]] = {_C.UNBIND: State.UNBOUND, _C.UNBIND_RESP: State.UNBOUND}


@dataclass(frozen=True, slots=True)
class Rules:
    """What one role may do in one state.

    `may_send` / `may_receive` are request command_ids; responses are checked
    against the requests they answer, not against the state. `on_send` /
    `on_receive` map a command_id to the state it moves to, when its
    command_status is ROK (a response) or always (a request).
    """

    may_send: frozenset[int]
    may_receive: frozenset[int]
    on_send: dict[int, State] = field(default_factory=dict)
    on_receive: dict[int, State] = field(default_factory=dict)


_E, _S = Role.ESME, Role.SMSC

# Every legal transition, in one place. enquire_link is tolerated in OPEN as
# many peers probe a link before binding; generic_nack is a response and is
# never in these sets. The ESME moves when it *receives* its bind_*_resp, the
# SMSC when it *sends* one. Not in the table: every state goes to CLOSED on
# close(), connection_lost() or a command_length that breaks the stream.
TRANSITIONS: Final[dict[tuple[Role, State], Rules]] = {
    (_E, State.OPEN): Rules(
        may_send=_BINDS | {_C.ENQUIRE_LINK},
        may_receive=frozenset({_C.OUTBIND, _C.ENQUIRE_LINK}),
        on_receive=dict(_BOUND_BY),
    ),
    (_E, State.BOUND_TX): Rules(may_send=_TRANSMIT | _LINK, may_receive=_LINK, on_send=_UNBINDS),
    (_E, State.BOUND_RX): Rules(may_send=_LINK, may_receive=_DELIVER | _LINK, on_send=_UNBINDS),
    (_E, State.BOUND_TRX): Rules(
        may_send=_TRANSMIT | _LINK, may_receive=_DELIVER | _LINK, on_send=_UNBINDS
    ),
    (_E, State.UNBOUND): Rules(may_send=_NOTHING, may_receive=_LINK),
    (_E, State.CLOSED): Rules(may_send=_NOTHING, may_receive=_NOTHING),
    (_S, State.OPEN): Rules(
        may_send=frozenset({_C.OUTBIND, _C.ENQUIRE_LINK}),
        may_receive=_BINDS | {_C.ENQUIRE_LINK},
        on_send=dict(_BOUND_BY),
    ),
    (_S, State.BOUND_TX): Rules(may_send=_LINK, may_receive=_TRANSMIT | _LINK, on_send=_UNBINDS),
    (_S, State.BOUND_RX): Rules(may_send=_DELIVER | _LINK, may_receive=_LINK, on_send=_UNBINDS),
    (_S, State.BOUND_TRX): Rules(
        may_send=_DELIVER | _LINK, may_receive=_TRANSMIT | _LINK, on_send=_UNBINDS
    ),
    (_S, State.UNBOUND): Rules(may_send=_NOTHING, may_receive=_LINK),
    (_S, State.CLOSED): Rules(may_send=_NOTHING, may_receive=_NOTHING),
}

# Requests that have a response and so occupy a sequence number until it
# comes; outbind and alert_notification have none (sections 4.1.7, 4.12).
_ANSWERED: Final = frozenset(cls.command_id for cls in RESPONSE_CLASS)
# Outstanding but not counted against the window: the link must stay
# checkable and closable when the window is full.
_UNCOUNTED: Final = frozenset({_C.ENQUIRE_LINK, _C.UNBIND})

_HEADER: Final = struct.Struct(">IIII")
_ID_SEQ: Final = struct.Struct(">I4xI")  # command_id, sequence_number from offset 4
_new = object.__new__
_set = object.__setattr__


def _header_only(command_id: int, command_status: int, sequence_number: int) -> bytes:
    """A body-less PDU (generic_nack, enquire_link_resp, unbind_resp) without a dataclass."""
    return _HEADER.pack(16, command_id, command_status, sequence_number)


class _Outstanding:
    __slots__ = ("counted", "deadline", "request", "sequence_number")

    def __init__(self, request: Pdu, sequence_number: int, deadline: float, counted: bool) -> None:
        self.request = request
        self.sequence_number = sequence_number
        self.deadline = deadline
        self.counted = counted


class Session:
    """One SMPP session, ESME or SMSC side. See the module docstring."""

    def __init__(
        self,
        role: Role,
        config: SessionConfig = SessionConfig(),
        *,
        now: float = 0.0,
        first_sequence_number: int = 1,
    ) -> None:
        if not 1 <= first_sequence_number <= MAX_SEQUENCE_NUMBER:
            raise ValueError("first_sequence_number must be in 1..0x7FFFFFFF")
        self.role = role
        self.config = config
        self._state = State.OPEN
        self._rules = TRANSITIONS[(role, State.OPEN)]
        self._framer = Framer(config.max_pdu_length)
        self._out: list[bytes] = []
        self._next_sequence_number = first_sequence_number
        # Our requests awaiting a response, by sequence number, and the same
        # entries in send order (= deadline order, `now` being monotonic);
        # answered entries are skipped lazily.
        self._outstanding: dict[int, _Outstanding] = {}
        self._deadlines: deque[_Outstanding] = deque()
        self._in_window = 0
        # The peer's requests that the application has yet to answer:
        # (request command_id << 32 | sequence_number) -> how many.
        self._pending: dict[int, int] = {}
        self._bind_pending = False  # SMSC: a bind was handed to the application
        # Timers (section 7.2). An armed timer fires once, then waits for traffic.
        self._opened_at = now
        self._last_received = now
        self._last_traffic = now
        self._enquire_link_armed = True
        self._inactivity_armed = True
        self._session_init_armed = True

    # --- state --------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def outstanding(self) -> int:
        """Our requests awaiting a response, enquire_link and unbind included."""
        return len(self._outstanding)

    @property
    def window_free(self) -> int:
        return max(0, self.config.window - self._in_window)

    def _move(self, new: State, events: list[Event] | None) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._rules = TRANSITIONS[(self.role, new)]
        if events is not None:
            events.append(StateChanged(old, new))

    # --- incoming -----------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes read from the peer; returns what happened. Never raises for peer input."""
        if self._state is State.CLOSED:
            return []
        self._last_received = self._last_traffic = now
        self._inactivity_armed = self._enquire_link_armed = True
        framer = self._framer
        framer.receive_data(data)
        events: list[Event] = []
        next_frame = framer.next_frame
        while True:
            try:
                frame = next_frame()
            except InvalidCommandLength as exc:
                # The stream cannot be resynchronised (section 4.3): nack, close.
                seq = exc.sequence_number or 0
                self._out.append(_header_only(_C.GENERIC_NACK, exc.command_status, seq))
                events.append(ProtocolViolation(exc))
                self._move(State.CLOSED, events)
                return events
            if frame is NEED_DATA:
                return events
            try:
                pdu = decode(frame)
            except ProtocolError as exc:
                self._reject_frame(frame, exc, events)
                continue
            if pdu.command_id & RESPONSE_BIT:
                self._receive_response(pdu, events)
            else:
                self._receive_request(pdu, events)

    def _reject_frame(self, frame: bytes, exc: ProtocolError, events: list[Event]) -> None:
        """A frame with a good command_length that does not decode."""
        command_id, seq = _ID_SEQ.unpack_from(frame, 4)
        exc.command_id, exc.sequence_number = command_id, seq
        events.append(ProtocolViolation(exc))
        if not command_id & RESPONSE_BIT:
            self._out.append(_header_only(_C.GENERIC_NACK, exc.command_status, seq))
            return
        # A response is never answered: a generic_nack carrying our peer's
        # response sequence number would fail an unrelated request of theirs.
        # Release the request it answers instead of letting it time out.
        entry = self._outstanding.get(seq)
        if entry is not None and command_id == entry.request.command_id | RESPONSE_BIT:
            self._forget(entry)
            events.append(RequestFailed(entry.request, f"malformed response: {exc}"))

    def _receive_request(self, pdu: Pdu, events: list[Event]) -> None:
        command_id = pdu.command_id
        seq = pdu.sequence_number
        if command_id not in self._rules.may_receive or (
            command_id in _BINDS and self._bind_pending
        ):
            self._refuse(pdu, events)
            return
        if command_id == _C.ENQUIRE_LINK:
            self._out.append(_header_only(_C.ENQUIRE_LINK_RESP, 0, seq))
            return
        if command_id == _C.UNBIND:
            self._out.append(_header_only(_C.UNBIND_RESP, 0, seq))
            moved_to = self._rules.on_send.get(_C.UNBIND_RESP)
            if moved_to is not None:
                self._move(moved_to, events)
            return
        if command_id in _ANSWERED:
            key = command_id << 32 | seq
            pending = self._pending
            pending[key] = pending.get(key, 0) + 1
            if command_id in _BINDS:
                self._bind_pending = True
        events.append(PduReceived(pdu))

    def _refuse(self, pdu: Pdu, events: list[Event]) -> None:
        """A valid request that the state does not allow: its own resp (section 4.1, 5.1.3)."""
        command_id = pdu.command_id
        name = type(pdu).__name__
        error: ProtocolError
        if command_id in _BINDS and (self._state in BOUND_STATES or self._bind_pending):
            error = AlreadyBound(f"{name} on a session already bound", field="command_id")
        else:
            error = InvalidBindStatus(
                f"{name} is not allowed from the {'SMSC' if self.role is _E else 'ESME'} "
                f"in {self._state.name}",
                field="command_id",
            )
        error.command_id, error.sequence_number = command_id, pdu.sequence_number
        response_class = RESPONSE_CLASS.get(type(pdu))
        if response_class is not None:
            response = response_class(
                sequence_number=pdu.sequence_number, command_status=error.command_status
            )
            self._out.append(encode(response))
        events.append(ProtocolViolation(error))

    def _receive_response(self, pdu: Pdu, events: list[Event]) -> None:
        command_id = pdu.command_id
        entry = self._outstanding.get(pdu.sequence_number)
        if entry is None or (
            command_id != entry.request.command_id | RESPONSE_BIT and command_id != _C.GENERIC_NACK
        ):
            error = UnexpectedResponse(
                f"{type(pdu).__name__} answers no outstanding request", field="sequence_number"
            )
            error.command_id, error.sequence_number = command_id, pdu.sequence_number
            events.append(ProtocolViolation(error))
            return
        self._forget(entry)
        events.append(ResponseReceived(pdu, entry.request))
        if pdu.command_status == CommandStatus.ROK:
            new = self._rules.on_receive.get(command_id)
            if new is not None:
                self._move(new, events)

    def _forget(self, entry: _Outstanding) -> None:
        del self._outstanding[entry.sequence_number]
        if entry.counted:
            self._in_window -= 1
        self._drop_answered()

    def _drop_answered(self) -> None:
        deadlines, outstanding = self._deadlines, self._outstanding
        while deadlines and outstanding.get(deadlines[0].sequence_number) is not deadlines[0]:
            deadlines.popleft()

    # --- outgoing -----------------------------------------------------------

    def send(self, pdu: Pdu, now: float) -> Pdu:
        """Queue `pdu` for the peer and return it as sent.

        A request gets the next sequence number; a response must answer a
        request of the peer that is still pending. Raises `InvalidState`,
        `WindowFull` or another `LocalProtocolError`; then nothing is queued.
        """
        if self._state is State.CLOSED:
            raise InvalidState("the session is closed", field="state")
        command_id = pdu.command_id
        if command_id & RESPONSE_BIT:
            self._send_response(pdu)
        else:
            pdu = self._send_request(pdu, now)
        self._last_traffic = now
        self._enquire_link_armed = True
        return pdu

    def _send_request(self, pdu: Pdu, now: float) -> Pdu:
        command_id = pdu.command_id
        rules = self._rules
        if command_id not in rules.may_send:
            raise InvalidState(
                f"{type(pdu).__name__} may not be sent by the {self.role.name} "
                f"in {self._state.name}",
                field="state",
            )
        answered = command_id in _ANSWERED
        counted = answered and command_id not in _UNCOUNTED
        if counted and self._in_window >= self.config.window:
            raise WindowFull(f"{self._in_window} requests outstanding", field="window")
        seq = self._next_sequence_number
        outstanding = self._outstanding
        while seq in outstanding:
            seq = seq + 1 if seq < MAX_SEQUENCE_NUMBER else 1
        if pdu.sequence_number != seq:
            numbered = _new(type(pdu))
            d = dict(pdu.__dict__)
            d["sequence_number"] = seq
            _set(numbered, "__dict__", d)
            pdu = numbered
        data = encode(pdu)
        self._next_sequence_number = seq + 1 if seq < MAX_SEQUENCE_NUMBER else 1
        if answered:
            entry = _Outstanding(pdu, seq, now + self.config.response_timeout, counted)
            outstanding[seq] = entry
            self._deadlines.append(entry)
            if counted:
                self._in_window += 1
        self._out.append(data)
        new = rules.on_send.get(command_id)
        if new is not None:
            self._move(new, None)
        return pdu

    def _send_response(self, pdu: Pdu) -> None:
        command_id = pdu.command_id
        if command_id == _C.GENERIC_NACK:
            raise LocalProtocolError(
                "answer a request with its own response; the session sends generic_nack itself",
                field="command_id",
            )
        request_id = command_id & ~RESPONSE_BIT
        key = request_id << 32 | pdu.sequence_number
        count = self._pending.get(key)
        if count is None:
            raise LocalProtocolError(
                f"{type(pdu).__name__} answers no pending request "
                f"with sequence_number {pdu.sequence_number}",
                field="sequence_number",
            )
        data = encode(pdu)
        if count == 1:
            del self._pending[key]
        else:
            self._pending[key] = count - 1
        self._out.append(data)
        if request_id in _BINDS:
            self._bind_pending = False
        if pdu.command_status == CommandStatus.ROK:
            new = self._rules.on_send.get(command_id)
            if new is not None:
                self._move(new, None)

    def data_to_send(self) -> bytes:
        """Everything queued since the last call (b"" if nothing)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # --- timers -------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time at which `poll()` has something to report."""
        if self._state is State.CLOSED:
            return None
        config = self.config
        deadline: float | None = None
        self._drop_answered()
        if self._deadlines:
            deadline = self._deadlines[0].deadline
        candidates = []
        if (
            self._enquire_link_armed
            and config.enquire_link_interval is not None
            and self._state in BOUND_STATES
        ):
            candidates.append(self._last_traffic + config.enquire_link_interval)
        if self._inactivity_armed and config.inactivity_timeout is not None:
            candidates.append(self._last_received + config.inactivity_timeout)
        if (
            self._session_init_armed
            and config.session_init_timeout is not None
            and self._state is State.OPEN
        ):
            candidates.append(self._opened_at + config.session_init_timeout)
        for candidate in candidates:
            if deadline is None or candidate < deadline:
                deadline = candidate
        return deadline

    def poll(self, now: float) -> list[Event]:
        """The timer events due at `now` (section 7.2)."""
        events: list[Event] = []
        if self._state is State.CLOSED:
            return events
        config = self.config
        deadlines, outstanding = self._deadlines, self._outstanding
        while deadlines:
            entry = deadlines[0]
            if outstanding.get(entry.sequence_number) is not entry:
                deadlines.popleft()
            elif entry.deadline <= now:
                deadlines.popleft()
                del outstanding[entry.sequence_number]
                if entry.counted:
                    self._in_window -= 1
                events.append(ResponseTimeout(entry.request))
            else:
                break
        if (
            self._enquire_link_armed
            and config.enquire_link_interval is not None
            and self._state in BOUND_STATES
            and now >= self._last_traffic + config.enquire_link_interval
        ):
            self._enquire_link_armed = False
            events.append(EnquireLinkDue())
        inactive = False
        if (
            self._inactivity_armed
            and config.inactivity_timeout is not None
            and now >= self._last_received + config.inactivity_timeout
        ):
            self._inactivity_armed = False
            inactive = True
        if (
            self._session_init_armed
            and config.session_init_timeout is not None
            and self._state is State.OPEN
            and now >= self._opened_at + config.session_init_timeout
        ):
            self._session_init_armed = False
            inactive = True
        if inactive:
            events.append(InactivityTimeout())
        return events

    # --- the end ------------------------------------------------------------

    def connection_lost(self) -> list[Event]:
        """The transport is gone: every outstanding request fails, the session is CLOSED."""
        events: list[Event] = [
            RequestFailed(entry.request, "connection lost") for entry in self._outstanding.values()
        ]
        self._outstanding.clear()
        self._deadlines.clear()
        self._in_window = 0
        self._move(State.CLOSED, events)
        return events

    def close(self) -> None:
        """Stop: later input is ignored and nothing more may be sent.

        Outstanding requests are kept so that `connection_lost()` still
        reports them once the transport is gone.
        """
        self._move(State.CLOSED, None)
