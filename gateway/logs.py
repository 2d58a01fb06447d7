"""Structured, redacted logs: one line per event, key=value (logfmt) or JSON lines.

Every line carries ``ts`` (UTC), ``level``, ``logger`` and ``msg``; fields passed
with ``extra={...}`` follow as keys of their own. A record never spans lines:
newlines in a message or a traceback are escaped.

Redaction is a review rule first (a phone number goes through `mask_number`,
message text and secrets are never logged at INFO) and `MaskNumbers` is the
safety net behind it: at INFO and above, any run of 8 to 15 digits standing on
its own (an E.164 number, with or without its "+") is masked in the message,
in string fields and in tracebacks. DEBUG lines are left whole for
troubleshooting on a test system.
"""

from __future__ import annotations

import json as _json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final

__all__ = ["JsonFormatter", "KeyValueFormatter", "MaskNumbers", "configure_logging", "mask_number"]

# E.164 allows up to 15 digits; 8 is the shortest national significant number
# worth hiding. Not inside a word (hex message ids, 0x00000058), a dotted or
# colon-separated value (addresses, times) or a longer run.
_NUMBER_RE: Final = re.compile(r"(?<![\w.:+])\+?\d{8,15}(?![\w.:])")

# LogRecord's own attributes: everything else on a record came from `extra`.
_RECORD_ATTRIBUTES: Final = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
}


def mask_number(number: str) -> str:
    """For logs: ``+34600***456``. Never log a whole number at INFO."""
    if len(number) <= 6:
        return "***"
    return f"{number[:6]}***{number[-3:]}"


def mask_numbers(text: str) -> str:
    """`text` with every phone-number-looking run of digits masked."""
    return _NUMBER_RE.sub(lambda m: mask_number(m.group()), text)


class MaskNumbers(logging.Filter):
    """Masks phone numbers in records at `level` and above (on a handler: it sees
    the records of every logger that propagate to it)."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True  # a bad format string: the handler reports it (handleError)
        masked = mask_numbers(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, mask_numbers(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_numbers(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_numbers(record.stack_info)
        return True


_FORMATTER: Final = logging.Formatter()


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """ts, level, logger, msg, the `extra` fields, then exc and stack if any."""
    fields: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES and key not in fields:
            fields[key] = value
    if record.exc_info and not record.exc_text:
        record.exc_text = _FORMATTER.formatException(record.exc_info)
    if record.exc_text:
        fields["exc"] = record.exc_text
    if record.stack_info:
        fields["stack"] = record.stack_info
    return fields


_BARE: Final = re.compile(r"[^\s=\"\\]+")


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text) and text.isprintable():
        return text
    return _json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=INFO logger=gateway.dispatch msg="..." key=value``, one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values that JSON cannot hold are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        return _json.dumps(_fields(record), ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler[IO[str]]):
    """The handler `configure_logging` installs (and replaces when called again)."""


def configure_logging(
    level: str = "INFO", *, json: bool = False, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every logger's records at `level` and above to `stream` (stderr), one line each.

    Calling it again replaces the handler it installed before. Returns the handler.
    """
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else KeyValueFormatter())
    handler.addFilter(MaskNumbers())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)
    return handler


def current_logging() -> tuple[str, bool] | None:
    """(level, json) of what `configure_logging` installed, None when it was not called:
    for a child process (the store's writer) to log the same way to the same stderr."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, _Handler):
            return logging.getLevelName(root.level), isinstance(handler.formatter, JsonFormatter)
    return None
