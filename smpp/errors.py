"""Errors of the SMPP library.

Every error the library raises is a `ProtocolError`. Each one says which
field is at fault and why, and carries the command_status that goes on the
wire when it is answered. Like asyncpg's exception registry, each wire status
that the library or an application must send has exactly one class, found by
`error_for_status`; a second class for the same status is refused at import.

`closes_session` follows Jasmin's split between errors that end a bind (the
byte stream can no longer be trusted) and errors that only answer a PDU.
"""

from __future__ import annotations

from typing import ClassVar

from .constants import CommandStatus

_BY_STATUS: dict[int, type[ProtocolError]] = {}


class ProtocolError(Exception):
    """Base of every error raised by the codec, framing and session."""

    command_status: int = CommandStatus.RSYSERR
    closes_session: ClassVar[bool] = False

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        # Set by the codec when the header could be read, so that the session
        # can answer the offending PDU (generic_nack echoes its sequence_number).
        self.command_id: int | None = None
        self.sequence_number: int | None = None
        super().__init__(f"{field}: {reason}" if field else reason)

    def __init_subclass__(cls, *, status: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status is None:
            return
        if status in _BY_STATUS:
            raise TypeError(
                f"command_status 0x{status:08X} already belongs to {_BY_STATUS[status].__name__}"
            )
        cls.command_status = status
        _BY_STATUS[status] = cls


def error_for_status(status: int) -> type[ProtocolError]:
    """The class registered for a wire status (`CommandFailed` for the rest)."""
    return _BY_STATUS.get(status, CommandFailed)


class LocalProtocolError(ProtocolError):
    """We were asked to do something SMPP forbids: encode a bad value, send in the wrong state."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something SMPP forbids."""


# --- malformed input -------------------------------------------------------


class InvalidCommandLength(RemoteProtocolError, status=CommandStatus.RINVCMDLEN):
    """command_length out of bounds, or a body that does not match it.

    Raised by framing when the length itself is bad: the stream cannot be
    resynchronised, so the session closes. The codec raises `MalformedPdu`
    for a bad body inside a good length, after which the session goes on.
    """

    closes_session = True


class MalformedPdu(RemoteProtocolError):
    """A body that does not parse: truncated field, missing NUL, string too long, bad TLV."""

    command_status = CommandStatus.RINVCMDLEN


class InvalidCommandId(RemoteProtocolError, status=CommandStatus.RINVCMDID):
    """A command_id that SMPP 3.4 does not define."""

    def __init__(self, command_id: int) -> None:
        super().__init__(f"unknown command_id 0x{command_id:08X}", field="command_id")
        self.command_id = command_id


class InvalidBindStatus(RemoteProtocolError, status=CommandStatus.RINVBNDSTS):
    """A valid command that is not allowed in the session's current state."""


class AlreadyBound(RemoteProtocolError, status=CommandStatus.RALYBND):
    """A bind on a session that is already bound."""


# --- statuses an application answers with ---------------------------------


class CommandFailed(ProtocolError):
    """An answer with a status that has no class of its own."""

    def __init__(self, reason: str, *, status: int, field: str | None = None) -> None:
        super().__init__(reason, field=field)
        self.command_status = status


class InvalidMessageLength(ProtocolError, status=CommandStatus.RINVMSGLEN):
    pass


class SmscSystemError(ProtocolError, status=CommandStatus.RSYSERR):
    pass


class InvalidSourceAddress(ProtocolError, status=CommandStatus.RINVSRCADR):
    pass


class InvalidDestinationAddress(ProtocolError, status=CommandStatus.RINVDSTADR):
    pass


class InvalidMessageId(ProtocolError, status=CommandStatus.RINVMSGID):
    pass


class BindFailed(ProtocolError, status=CommandStatus.RBINDFAIL):
    pass


class InvalidPassword(ProtocolError, status=CommandStatus.RINVPASWD):
    pass


class InvalidSystemId(ProtocolError, status=CommandStatus.RINVSYSID):
    pass


class CancelFailed(ProtocolError, status=CommandStatus.RCANCELFAIL):
    pass


class ReplaceFailed(ProtocolError, status=CommandStatus.RREPLACEFAIL):
    pass


class MessageQueueFull(ProtocolError, status=CommandStatus.RMSGQFUL):
    pass


class SubmitFailed(ProtocolError, status=CommandStatus.RSUBMITFAIL):
    pass


class Throttled(ProtocolError, status=CommandStatus.RTHROTTLED):
    pass


class InvalidScheduleTime(ProtocolError, status=CommandStatus.RINVSCHED):
    """schedule_delivery_time that is not an SMPP absolute or relative time (section 7.1.1)."""


class InvalidExpiry(ProtocolError, status=CommandStatus.RINVEXPIRY):
    """validity_period that is not an SMPP absolute or relative time (section 7.1.1)."""


class QueryFailed(ProtocolError, status=CommandStatus.RQUERYFAIL):
    pass


class InvalidOptionalParameter(ProtocolError, status=CommandStatus.RINVOPTPARAMVAL):
    pass


class MissingOptionalParameter(ProtocolError, status=CommandStatus.RMISSINGOPTPARAM):
    pass
