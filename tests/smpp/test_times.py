"""SMPP absolute and relative times (SMPP 3.4 section 7.1.1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smpp.constants import CommandStatus
from smpp.errors import InvalidExpiry, InvalidScheduleTime, LocalProtocolError
from smpp.times import format_absolute, format_relative, parse_smpp_time

NOW = datetime(2024, 3, 9, 14, 5, 30, tzinfo=UTC)

# --- golden values --------------------------------------------------------


def test_empty_is_none() -> None:
    assert parse_smpp_time("", now=NOW) is None
    assert parse_smpp_time("", now=NOW, field="validity_period") is None


def test_relative_one_day_from_the_spec() -> None:
    assert parse_smpp_time("000001000000000R", now=NOW) == NOW + timedelta(days=1)


def test_relative_one_minute() -> None:
    assert parse_smpp_time("000000000100000R", now=NOW) == NOW + timedelta(minutes=1)


def test_relative_all_fields() -> None:
    # 1 year, 2 months, 3 days, 4 h 5 min 6 s from 2024-03-09 14:05:30.
    assert parse_smpp_time("010203040506000R", now=NOW) == datetime(
        2025, 5, 12, 18, 10, 36, tzinfo=UTC
    )


def test_relative_months_clamp_to_the_month_end() -> None:
    jan31 = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_smpp_time("000100000000000R", now=jan31) == datetime(
        2024, 2, 29, 12, 0, tzinfo=UTC
    )
    assert parse_smpp_time("001300000000000R", now=jan31) == datetime(
        2025, 2, 28, 12, 0, tzinfo=UTC
    )


def test_relative_fields_may_exceed_their_calendar_range() -> None:
    assert parse_smpp_time("000000360000000R", now=NOW) == NOW + timedelta(hours=36)
    assert parse_smpp_time("000000009999000R", now=NOW) == NOW + timedelta(minutes=99, seconds=99)


def test_relative_is_added_to_now_in_any_zone() -> None:
    tokyo_now = NOW.astimezone(timezone(timedelta(hours=9)))
    result = parse_smpp_time("000001000000000R", now=tokyo_now)
    assert result == NOW + timedelta(days=1)
    assert result is not None and result.utcoffset() == timedelta(0)


def test_absolute_utc() -> None:
    assert parse_smpp_time("240309140530100+", now=NOW) == datetime(
        2024, 3, 9, 14, 5, 30, 100_000, tzinfo=UTC
    )


def test_absolute_positive_offset() -> None:
    # 16:05:30.5 local, 8 quarter hours (2 h) ahead of UTC = 14:05:30.5 UTC.
    result = parse_smpp_time("240309160530508+", now=NOW)
    assert result == datetime(2024, 3, 9, 14, 5, 30, 500_000, tzinfo=UTC)
    assert result is not None and result.tzinfo is UTC


def test_absolute_negative_offset() -> None:
    # 23:45 local on Dec 31, 5 h (20 quarters) behind UTC = 04:45 UTC on Jan 1.
    assert parse_smpp_time("991231234500020-", now=NOW) == datetime(2100, 1, 1, 4, 45, tzinfo=UTC)


def test_absolute_quarter_hour_offset() -> None:
    # Nepal, UTC+05:45 = 23 quarter hours.
    assert parse_smpp_time("240101054500023+", now=NOW) == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)


def test_years_are_2000_to_2099() -> None:
    assert parse_smpp_time("000101000000000+", now=NOW) == datetime(2000, 1, 1, tzinfo=UTC)
    assert parse_smpp_time("991231235959900+", now=NOW) == datetime(
        2099, 12, 31, 23, 59, 59, 900_000, tzinfo=UTC
    )


def test_maximum_offset_48_is_accepted() -> None:
    assert parse_smpp_time("240101120000048+", now=NOW) == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert parse_smpp_time("240101120000048-", now=NOW) == datetime(2024, 1, 2, 0, 0, tzinfo=UTC)


def test_format_absolute_golden() -> None:
    assert format_absolute(datetime(2024, 3, 9, 14, 5, 30, 123_456, tzinfo=UTC)) == (
        "240309140530100+"
    )
    plus2 = timezone(timedelta(hours=2))
    assert format_absolute(datetime(2024, 3, 9, 16, 5, 30, tzinfo=plus2)) == "240309160530008+"
    minus5 = timezone(timedelta(hours=-5))
    assert format_absolute(datetime(2024, 3, 9, 9, 5, 30, tzinfo=minus5)) == "240309090530020-"


def test_format_absolute_converts_unrepresentable_offsets_to_utc() -> None:
    tonga = timezone(timedelta(hours=13))  # over 48 quarter hours
    odd = timezone(timedelta(hours=1, minutes=20))  # not a whole quarter
    assert format_absolute(datetime(2024, 3, 10, 3, 5, 30, tzinfo=tonga)) == "240309140530000+"
    assert format_absolute(datetime(2024, 3, 9, 15, 25, 30, tzinfo=odd)) == "240309140530000+"


def test_format_relative_golden() -> None:
    assert format_relative(timedelta(days=1)) == "000001000000000R"
    assert format_relative(timedelta(minutes=1)) == "000000000100000R"
    assert format_relative(timedelta(days=99, hours=23, minutes=59, seconds=59)) == (
        "000099235959000R"
    )
    assert format_relative(timedelta(seconds=90, microseconds=999_999)) == "000000000130000R"
    assert format_relative(timedelta(0)) == "000000000000000R"


@pytest.mark.parametrize("delta", [timedelta(days=100), timedelta(seconds=-1)])
def test_format_relative_out_of_range(delta: timedelta) -> None:
    with pytest.raises(LocalProtocolError):
        format_relative(delta)


@pytest.mark.parametrize(
    "dt", [datetime(1999, 12, 31, 23, 59, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)]
)
def test_format_absolute_out_of_range(dt: datetime) -> None:
    with pytest.raises(LocalProtocolError):
        format_absolute(dt)


def test_naive_datetimes_are_the_callers_bug() -> None:
    with pytest.raises(ValueError):
        format_absolute(datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        parse_smpp_time("000001000000000R", now=datetime(2024, 1, 1))


# --- malformed values ------------------------------------------------------

MALFORMED = [
    "1",
    "24030914053010+",  # 15 characters
    "2403091405301000+",  # 17 characters
    "24030914053a100+",  # non-digit
    "2403091405 0100+",  # space
    "\xb240309140530100+",  # "²": a digit to str.isdigit, not to SMPP
    "240309140530149+",  # offset over 48
    "240309140530100X",  # bad p
    "240309140530100r",  # lower-case R
    "241309140530100+",  # month 13
    "240230140530100+",  # 30 February
    "230229140530100+",  # 29 February in a non-leap year
    "240309240530100+",  # hour 24
    "240309146030100+",  # minute 60
    "240309140560100+",  # second 60
    "240000140530100+",  # month 00
    "240300140530100+",  # day 00
]


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_schedule_delivery_time(value: str) -> None:
    with pytest.raises(InvalidScheduleTime) as info:
        parse_smpp_time(value, now=NOW, field="schedule_delivery_time")
    assert info.value.command_status == CommandStatus.RINVSCHED
    assert CommandStatus.RINVSCHED.value == 0x61
    assert info.value.field == "schedule_delivery_time"
    assert info.value.reason


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_validity_period(value: str) -> None:
    with pytest.raises(InvalidExpiry) as info:
        parse_smpp_time(value, now=NOW, field="validity_period")
    assert info.value.command_status == CommandStatus.RINVEXPIRY
    assert CommandStatus.RINVEXPIRY.value == 0x62
    assert info.value.field == "validity_period"


def test_default_field_is_schedule_delivery_time() -> None:
    with pytest.raises(InvalidScheduleTime):
        parse_smpp_time("garbage", now=NOW)


def test_relative_beyond_the_calendar_is_malformed() -> None:
    late = datetime(9990, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidExpiry):
        parse_smpp_time("990000000000000R", now=late, field="validity_period")


@given(st.text(max_size=20))
def test_arbitrary_text_parses_or_raises_the_field_error(value: str) -> None:
    try:
        result = parse_smpp_time(value, now=NOW, field="validity_period")
    except InvalidExpiry:
        return
    assert result is None or result.utcoffset() == timedelta(0)


# --- round trips -------------------------------------------------------------

_offsets = st.integers(-48, 48).map(lambda q: timezone(timedelta(minutes=15 * q)))
_local_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59, 900_000)
).map(lambda d: d.replace(microsecond=d.microsecond // 100_000 * 100_000))


@given(_local_times, _offsets)
def test_absolute_round_trip(local: datetime, tz: timezone) -> None:
    dt = local.replace(tzinfo=tz)
    text = format_absolute(dt)
    assert len(text) == 16
    result = parse_smpp_time(text, now=NOW)
    assert result == dt
    assert result is not None and result.utcoffset() == timedelta(0)


@given(_local_times)
def test_absolute_string_round_trip_in_utc(local: datetime) -> None:
    text = format_absolute(local.replace(tzinfo=UTC))
    result = parse_smpp_time(text, now=NOW)
    assert result is not None
    assert format_absolute(result) == text


@given(
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=99, seconds=86399)).map(
        lambda d: d - timedelta(microseconds=d.microseconds)
    ),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
    ),
)
def test_relative_round_trip(delta: timedelta, now: datetime) -> None:
    text = format_relative(delta)
    assert text.endswith("000R") and len(text) == 16
    assert parse_smpp_time(text, now=now, field="validity_period") == now + delta
