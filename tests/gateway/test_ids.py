from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.ids import is_message_id, message_id_time, new_message_id, upstream_id_forms


def test_message_id_shape_and_order() -> None:
    ids = [new_message_id(now_ms=1_700_000_000_000 + i) for i in range(100)]
    assert all(len(i) == 32 and is_message_id(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 100
    assert message_id_time(ids[0]) == datetime.fromtimestamp(1_700_000_000, tz=UTC)


def test_message_ids_are_unique() -> None:
    assert len({new_message_id() for _ in range(10_000)}) == 10_000


def test_bad_ids() -> None:
    assert not is_message_id("ABC")
    assert not is_message_id("g" * 32)
    with pytest.raises(ValueError):
        message_id_time("nope")
    with pytest.raises(ValueError):
        new_message_id(now_ms=1 << 48)


def test_upstream_id_forms() -> None:
    assert upstream_id_forms("6699")[0] == "6699"
    assert "1a2b" in upstream_id_forms("6699")
    assert "6699" in upstream_id_forms("0001A2B")
    assert "abc" in upstream_id_forms("ABC")
    assert upstream_id_forms("msg-1") == ("msg-1", "MSG-1")
