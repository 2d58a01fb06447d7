"""Framing: bytes as they come off a stream -> complete PDUs.

Feed it whatever a read returned (half a header, or forty PDUs); take out
PDUs until it says NEED_DATA. A command_length under 16 or over the
configured maximum cannot be resynchronised, so it raises
`InvalidCommandLength` (closes_session) and the framer stays broken.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, Literal

from .codec import decode
from .constants import HEADER_LENGTH
from .errors import InvalidCommandLength
from .pdu import Pdu

# The biggest PDU a peer can legitimately send is a data_sm / submit_sm with a
# 64K message_payload, so 70,000 is generous without letting a peer make us
# buffer gigabytes.
DEFAULT_MAX_PDU_LENGTH: Final = 70_000

# Compact the buffer once this much of it has been consumed.
_COMPACT_AT: Final = 64 * 1024


class _NeedData(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _NeedData.NEED_DATA


class Framer:
    """Reassembles PDUs from a byte stream."""

    __slots__ = ("_broken", "_buf", "_pos", "max_length")

    def __init__(self, max_length: int = DEFAULT_MAX_PDU_LENGTH) -> None:
        if max_length < HEADER_LENGTH:
            raise ValueError("max_length must be at least 16")
        self.max_length = max_length
        self._buf = bytearray()
        self._pos = 0
        self._broken: InvalidCommandLength | None = None

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received and not yet taken out as a frame."""
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | Literal[_NeedData.NEED_DATA]:
        """The next complete PDU as raw bytes, or NEED_DATA."""
        if self._broken is not None:
            raise self._broken
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < 4:
            self._compact()
            return NEED_DATA
        length = int.from_bytes(buf[pos : pos + 4], "big")
        if length < HEADER_LENGTH or length > self.max_length:
            self._broken = InvalidCommandLength(
                f"{length} is outside {HEADER_LENGTH}..{self.max_length}", field="command_length"
            )
            if available >= HEADER_LENGTH:
                self._broken.command_id = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                self._broken.sequence_number = int.from_bytes(buf[pos + 12 : pos + 16], "big")
            raise self._broken
        if available < length:
            self._compact()
            return NEED_DATA
        frame = bytes(buf[pos : pos + length])
        self._pos = pos + length
        if self._pos >= _COMPACT_AT:
            self._compact()
        return frame

    def next_pdu(self) -> Pdu | Literal[_NeedData.NEED_DATA]:
        """The next complete PDU decoded, or NEED_DATA.

        A frame whose body does not decode is consumed and its error raised;
        the stream stays in step, so the caller may answer it and go on.
        """
        frame = self.next_frame()
        if frame is NEED_DATA:
            return NEED_DATA
        return decode(frame)

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
