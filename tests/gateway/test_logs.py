"""Logs: one line per event, key=value or JSON, phone numbers masked at INFO and above."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import MaskNumbers, configure_logging, mask_number, mask_numbers
from gateway.messages import mask_number as messages_mask_number

NUMBER = "+34600123456"
MASKED = "+34600***456"


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, given back as it was."""
    logger = logging.getLogger()
    handlers, level = list(logger.handlers), logger.level
    try:
        yield logger
    finally:
        for handler in logger.handlers:
            if handler not in handlers:
                logger.removeHandler(handler)
        logger.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_number_logged_at_info_comes_out_masked(root: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    log = logging.getLogger("gateway.test")
    log.info("accepted to=%s from=%s", NUMBER, "34600987654")
    log.warning("refused destination %s", NUMBER[1:])
    log.info("plain", extra={"to": NUMBER})
    log.debug("not shown at INFO to=%s", NUMBER)
    text = out.getvalue()
    assert NUMBER[1:] not in text and "34600987654" not in text
    first, second, third = lines(out)
    assert f"to={MASKED}" in first and "from=346009***654" in first
    assert "346001***456" in second
    assert third.endswith(f" to={MASKED}")


def test_debug_keeps_numbers_whole(root: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("debug", stream=out)
    logging.getLogger("gateway.test").debug("pdu destination_addr=%s", NUMBER)
    assert NUMBER in out.getvalue()


def test_key_value_lines(root: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("gateway.dispatch").info(
        "upstream %s bound", "simulator", extra={"route": "sim 1", "window": 10}
    )
    (line,) = lines(out)
    assert line.startswith("ts=")
    assert " level=INFO logger=gateway.dispatch " in line
    assert 'msg="upstream simulator bound"' in line
    assert line.endswith(' route="sim 1" window=10')


def test_one_line_per_event_even_with_a_traceback(root: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    log = logging.getLogger("gateway.test")
    try:
        raise ValueError(f"bad destination {NUMBER}")
    except ValueError:
        log.exception("submit failed\nsecond line")
    (line,) = lines(out)
    assert "level=ERROR" in line
    assert 'msg="submit failed\\nsecond line"' in line
    assert "exc=" in line and "ValueError" in line
    assert NUMBER not in line and MASKED in line


def test_json_lines(root: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    log = logging.getLogger("smpp.aio.server")
    log.info("bound peer=%s system_id=%s", ("127.0.0.1", 40000), "acme", extra={"to": NUMBER})
    log.error("handler failed", exc_info=RuntimeError("boom"))
    first, second = (json.loads(line) for line in lines(out))
    assert first["level"] == "INFO" and first["logger"] == "smpp.aio.server"
    assert first["msg"] == "bound peer=('127.0.0.1', 40000) system_id=acme"
    assert first["to"] == MASKED
    assert first["ts"].endswith("Z")
    assert "RuntimeError: boom" in second["exc"]


def test_what_is_not_a_number_is_left_alone() -> None:
    for text in (
        "message 0193f0a2b4c5d6e7f8091a2b3c4d5e6f",  # a gateway message id (hex)
        "status=0x00000058",
        "peer=('127.0.0.1', 40000) port=2775",
        "at 2024-05-01T10:00:00.123Z took 12.345678901s",
        "sequence_number=1234567",  # seven digits: too short for a number
        "id=ab12345678901",
    ):
        assert mask_numbers(text) == text, text
    assert mask_numbers(f"to={NUMBER}, 346001234567890123") == f"to={MASKED}, 346001234567890123"


def test_mask_number_matches_the_messages_helper() -> None:
    for number in (NUMBER, "34600123456", "+1202555014", "12345", "+4915112345678"):
        assert mask_number(number) == messages_mask_number(number)


def test_filter_level_and_bad_format_strings() -> None:
    record = logging.makeLogRecord({"msg": "to=%s", "args": (NUMBER,), "levelno": logging.DEBUG})
    assert MaskNumbers().filter(record) and record.getMessage() == f"to={NUMBER}"
    record = logging.makeLogRecord({"msg": "to=%s %s", "args": (NUMBER,), "levelno": logging.INFO})
    assert MaskNumbers().filter(record)  # left for the handler's handleError


def test_configure_again_replaces_the_handler(root: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging("WARNING", stream=second)
    log = logging.getLogger("gateway.test")
    log.info("hidden")
    log.warning("shown")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
    with pytest.raises(ValueError):
        configure_logging("LOUD")
