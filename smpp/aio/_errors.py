"""Errors of the asyncio adapters.

These are about the connection, not about SMPP itself, so they are not
`ProtocolError`s and have no wire status (except `BindRefusedError`, which
reports the peer's). A response with a non-zero command_status is returned,
not raised: the caller decides whether it is temporary or permanent.
"""

from __future__ import annotations

__all__ = [
    "BindRefusedError",
    "ConnectionLostError",
    "NotBoundError",
    "ResponseTimeoutError",
    "SmppAioError",
]


class SmppAioError(Exception):
    """Base of the errors raised by `smpp.aio`."""


class ConnectionLostError(SmppAioError):
    """The connection closed before the request was answered (or before it could be sent)."""


class ResponseTimeoutError(SmppAioError):
    """No response arrived within the response timeout (SMPP 3.4 section 7.2)."""


class NotBoundError(SmppAioError):
    """The client has no bound session to send on (not started, reconnecting or closing)."""


class BindRefusedError(SmppAioError):
    """The SMSC answered our bind with a non-zero command_status."""

    def __init__(self, command_status: int) -> None:
        self.command_status = command_status
        super().__init__(f"bind refused with command_status 0x{command_status:08X}")
