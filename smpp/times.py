"""SMPP time values to and from aware datetimes (SMPP 3.4 section 7.1.1).

schedule_delivery_time and validity_period are 16 characters (plus the NUL
the codec strips):

- absolute `YYMMDDhhmmsstnnp`: local time with t tenths of a second, nn the
  offset of that local time from UTC in quarter hours (00-48) and p `+`
  (ahead of UTC) or `-` (behind);
- relative `YYMMDDhhmmss000R`: a span added to the SMSC's current time
  ("000001000000000R" is one day from now);
- empty: immediate delivery, or the SMSC's default validity.

Years are 2000 + YY. Parsed values are aware datetimes in UTC.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

from .errors import InvalidExpiry, InvalidScheduleTime, LocalProtocolError

__all__ = ["format_absolute", "format_relative", "parse_smpp_time"]

_LENGTH = 16
_MAX_QUARTERS = 48  # section 7.1.1: nn is 00-48, i.e. at most 12 hours
_QUARTER = timedelta(minutes=15)
_MAX_RELATIVE = timedelta(days=99, hours=23, minutes=59, seconds=59)

_ERROR_BY_FIELD: dict[str, type[InvalidScheduleTime] | type[InvalidExpiry]] = {
    "schedule_delivery_time": InvalidScheduleTime,
    "validity_period": InvalidExpiry,
}


def _require_aware(value: datetime, name: str) -> None:
    # A naive datetime is the caller's bug, not the peer's: it must not turn
    # into RINVSCHED / RINVEXPIRY on the wire.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")


def parse_smpp_time(
    value: str, *, now: datetime, field: str = "schedule_delivery_time"
) -> datetime | None:
    """The moment an SMPP time names, as an aware UTC datetime; None when empty.

    Relative times are added to `now` calendar-correctly: years and months
    move the date in the UTC calendar, keeping the day of the month or
    clamping it to the month's last day (Jan 31 + 1 month = Feb 28/29);
    days, hours, minutes and seconds are then added as a timedelta. Each
    relative field may hold any two digits (e.g. 36 hours). The "000" before
    R is reserved; its digits are not checked further.

    Raises InvalidExpiry for field "validity_period" and InvalidScheduleTime
    for any other field (RINVEXPIRY / RINVSCHED, section 7.1.1) when the
    value is not 16 characters, has a non-digit in the first 15, ends in
    anything but `+`, `-` or `R`, has an offset over 48 quarter hours, or
    names no calendar date and time. Raises ValueError for a naive `now`.
    """
    _require_aware(now, "now")
    if value == "":
        return None
    error = _ERROR_BY_FIELD.get(field, InvalidScheduleTime)
    if len(value) != _LENGTH:
        raise error(
            f"{value!r} has {len(value)} characters, SMPP times have 16 (section 7.1.1)",
            field=field,
        )
    digits, p = value[:15], value[15]
    # str.isdigit() alone would let "²" through, which int() refuses.
    if not (digits.isascii() and digits.isdigit()):
        raise error(f"{value!r}: the first 15 characters must be digits", field=field)
    yy, mo, dd, hh, mi, ss = (int(digits[i : i + 2]) for i in range(0, 12, 2))
    if p == "R":
        try:
            return _add_relative(now.astimezone(UTC), yy, mo, dd, hh, mi, ss)
        except (ValueError, OverflowError):
            raise error(f"{value!r} reaches beyond the calendar", field=field) from None
    if p != "+" and p != "-":
        raise error(f"{value!r} ends in {p!r}, not '+', '-' or 'R'", field=field)
    tenths, quarters = int(digits[12]), int(digits[13:15])
    if quarters > _MAX_QUARTERS:
        raise error(
            f"{value!r}: UTC offset {quarters} quarter hours is over {_MAX_QUARTERS}",
            field=field,
        )
    offset = quarters * _QUARTER
    try:
        local = datetime(
            2000 + yy,
            mo,
            dd,
            hh,
            mi,
            ss,
            tenths * 100_000,
            tzinfo=timezone(offset if p == "+" else -offset),
        )
    except ValueError as exc:
        raise error(f"{value!r} is not a calendar date and time: {exc}", field=field) from None
    return local.astimezone(UTC)


def _add_relative(
    base: datetime, years: int, months: int, days: int, hours: int, minutes: int, seconds: int
) -> datetime:
    month_index = base.month - 1 + months + 12 * years
    year, month = base.year + month_index // 12, month_index % 12 + 1
    day = min(base.day, calendar.monthrange(year, month)[1])
    moved = base.replace(year=year, month=month, day=day)
    return moved + timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_absolute(dt: datetime) -> str:
    """`YYMMDDhhmmsstnnp` for an aware datetime (section 7.1.1).

    The datetime's own UTC offset is kept when the format can carry it: a
    whole number of quarter hours of at most 12 hours. Other offsets (e.g.
    UTC+13, or historical ones with seconds) are converted to UTC, "00+".
    Either way the string names the same instant. Below a tenth of a second
    is truncated.

    Raises ValueError for a naive datetime and LocalProtocolError when the
    year written falls outside 2000-2099.
    """
    _require_aware(dt, "dt")
    offset = dt.utcoffset() or timedelta(0)
    if offset % _QUARTER or abs(offset) > _MAX_QUARTERS * _QUARTER:
        dt, offset = dt.astimezone(UTC), timedelta(0)
    if not 2000 <= dt.year <= 2099:
        raise LocalProtocolError(
            f"{dt.isoformat()}: SMPP years are 2000-2099 (section 7.1.1)", field="time"
        )
    quarters = offset // _QUARTER
    sign = "-" if quarters < 0 else "+"
    return (
        f"{dt.year % 100:02d}{dt.month:02d}{dt.day:02d}"
        f"{dt.hour:02d}{dt.minute:02d}{dt.second:02d}"
        f"{dt.microsecond // 100_000}{abs(quarters):02d}{sign}"
    )


def format_relative(delta: timedelta) -> str:
    """`YYMMDDhhmmss000R` for a span (section 7.1.1).

    Written with YY and MM at 00, because years and months have no fixed
    length in a timedelta, so at most 99 days 23:59:59; below a second is
    truncated (the relative form has no tenths). Raises LocalProtocolError
    for a negative or longer span: use `format_absolute` for those.
    """
    if delta < timedelta(0) or delta.days > _MAX_RELATIVE.days:
        raise LocalProtocolError(
            f"{delta} is outside 0 to {_MAX_RELATIVE} (section 7.1.1)", field="time"
        )
    days, rest = delta.days, delta.seconds
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"0000{days:02d}{hours:02d}{minutes:02d}{seconds:02d}000R"
