"""Thin asyncio adapters over the sans-IO `smpp.session`: an SMPP server and client."""

from ._connection import PduObserver
from ._errors import (
    BindRefusedError,
    ConnectionLostError,
    NotBoundError,
    ResponseTimeoutError,
    SmppAioError,
)
from .client import DeliverSmCallback, SmppClient, StateCallback, submit_sm_resp
from .server import (
    BaseServerHandler,
    BindType,
    ServerHandler,
    ServerSession,
    SmppServer,
    deliver_sm_resp,
)

__all__ = [
    "BaseServerHandler",
    "BindRefusedError",
    "BindType",
    "ConnectionLostError",
    "DeliverSmCallback",
    "NotBoundError",
    "PduObserver",
    "ResponseTimeoutError",
    "ServerHandler",
    "ServerSession",
    "SmppAioError",
    "SmppClient",
    "SmppServer",
    "StateCallback",
    "deliver_sm_resp",
    "submit_sm_resp",
]
