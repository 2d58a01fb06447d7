"""Receipt text (SMPP 3.4 Appendix B) and the stat / message_state mapping."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smpp.constants import FINAL_MESSAGE_STATES, CommandStatus, MessageState
from smpp.errors import RemoteProtocolError
from smpp.receipt import (
    Receipt,
    ReceiptError,
    canonical_message_id,
    format_receipt,
    is_final,
    message_id_forms,
    parse_receipt,
    stat_to_state,
    state_to_stat,
)

SUBMIT = datetime(2024, 3, 9, 14, 5, tzinfo=UTC)
DONE = datetime(2024, 3, 9, 14, 7, tzinfo=UTC)

# --- format: the layout interface.md promises ------------------------------


def test_format_matches_interface_md_exactly() -> None:
    r = Receipt(
        id="7f3a9c",
        stat="DELIVRD",
        sub=1,
        dlvrd=1,
        submit_date=SUBMIT,
        done_date=DONE,
        err="000",
        text="Hello from smsgw, this is longer than twenty",
    )
    assert format_receipt(r) == (
        "id:7f3a9c sub:001 dlvrd:001 submit date:2403091405 done date:2403091407"
        " stat:DELIVRD err:000 text:Hello from smsgw, th"
    )


def test_format_layout_is_the_interface_pattern() -> None:
    pattern = re.compile(
        r"id:\S+ sub:\d{3} dlvrd:\d{3} submit date:\d{10} done date:\d{10}"
        r" stat:[A-Z]+ err:\d{3} text:.{0,20}"
    )
    r = Receipt(id="1", stat="UNDELIV", submit_date=SUBMIT, done_date=DONE, text="x" * 40)
    assert pattern.fullmatch(format_receipt(r))


def test_format_pads_err_and_counts() -> None:
    out = format_receipt(Receipt(id="1", stat="UNDELIV", sub=2, dlvrd=0, err="5"))
    assert " sub:002 dlvrd:000 " in out
    assert " err:005 " in out


def test_format_converts_aware_dates_to_utc_and_treats_naive_as_utc() -> None:
    madrid = timezone(timedelta(hours=2))
    aware = Receipt(id="1", stat="DELIVRD", submit_date=datetime(2024, 6, 1, 12, 0, tzinfo=madrid))
    naive = Receipt(id="1", stat="DELIVRD", submit_date=datetime(2024, 6, 1, 10, 0, 59))
    assert "submit date:2406011000 " in format_receipt(aware)
    assert "submit date:2406011000 " in format_receipt(naive)


def test_format_without_dates_keeps_the_layout_and_parses_back_to_none() -> None:
    out = format_receipt(Receipt(id="1", stat="ENROUTE"))
    assert "submit date:0000000000 done date:0000000000 " in out
    parsed = parse_receipt(out)
    assert parsed.submit_date is None
    assert parsed.done_date is None


# --- lenient parsing --------------------------------------------------------


def test_parse_canonical_receipt() -> None:
    r = parse_receipt(
        "id:0123456789 sub:001 dlvrd:001 submit date:2403091405 done date:2403091407"
        " stat:DELIVRD err:000 text:Hello"
    )
    assert r == Receipt(
        id="0123456789",
        stat="DELIVRD",
        sub=1,
        dlvrd=1,
        submit_date=SUBMIT,
        done_date=DONE,
        err="000",
        text="Hello",
    )


def test_parse_bytes_as_latin1_with_trailing_nul() -> None:
    r = parse_receipt(b"id:abc stat:DELIVRD err:000 text:caf\xe9\x00")
    assert r.text == "café"
    assert r.id == "abc"


def test_parse_reordered_fields() -> None:
    r = parse_receipt(
        "stat:UNDELIV err:012 id:99 done date:2403091407 dlvrd:000 sub:001"
        " submit date:2403091405 text:x"
    )
    assert (r.id, r.stat, r.err, r.dlvrd) == ("99", "UNDELIV", "012", 0)
    assert r.submit_date == SUBMIT
    assert r.done_date == DONE


@pytest.mark.parametrize(
    "text",
    [
        "ID:99 SUB:001 DLVRD:001 SUBMIT DATE:2403091405 DONE DATE:2403091407 STAT:DELIVRD ERR:000 TEXT:x",
        "Id:99 Sub:001 Dlvrd:001 Submit date:2403091405 Done date:2403091407 Stat:delivrd Err:000 Text:x",
        "id:99 sub:001 dlvrd:001 submit_date:2403091405 done_date:2403091407 stat:DELIVRD err:000 text:x",
    ],
)
def test_parse_key_case_and_spelling_varies(text: str) -> None:
    r = parse_receipt(text)
    assert (r.id, r.stat, r.sub, r.dlvrd) == ("99", "DELIVRD", 1, 1)
    assert r.submit_date == SUBMIT
    assert r.done_date == DONE


def test_parse_dates_with_seconds() -> None:
    r = parse_receipt("id:1 submit date:240309140530 done date:240309140759 stat:DELIVRD")
    assert r.submit_date == datetime(2024, 3, 9, 14, 5, 30, tzinfo=UTC)
    assert r.done_date == datetime(2024, 3, 9, 14, 7, 59, tzinfo=UTC)


def test_parse_four_digit_year_dates() -> None:
    r = parse_receipt("id:1 submit date:20240309140530 stat:DELIVRD")
    assert r.submit_date == datetime(2024, 3, 9, 14, 5, 30, tzinfo=UTC)


@pytest.mark.parametrize("date", ["2413091405", "24030914", "24O3091405", "", "2402301405"])
def test_parse_bad_dates_are_none_not_errors(date: str) -> None:
    r = parse_receipt(f"id:1 submit date:{date} stat:DELIVRD")
    assert r.submit_date is None


def test_parse_without_text_field() -> None:
    r = parse_receipt("id:1 sub:001 dlvrd:001 stat:DELIVRD err:000")
    assert r.text == ""
    assert r.err == "000"


def test_parse_minimal_receipt_uses_defaults() -> None:
    assert parse_receipt("id:1 stat:ACCEPTD") == Receipt(id="1", stat="ACCEPTD")


def test_text_may_contain_field_lookalikes() -> None:
    r = parse_receipt(
        "id:1 sub:001 dlvrd:001 submit date:2403091405 done date:2403091407"
        " stat:DELIVRD err:000 text:hi stat:FAKE id:666 err:999"
    )
    assert r.stat == "DELIVRD"
    assert r.id == "1"
    assert r.err == "000"
    assert r.text == "hi stat:FAKE id:666 err:999"


def test_text_is_kept_verbatim_including_colons_and_spaces() -> None:
    r = parse_receipt("id:1 stat:DELIVRD text: a:b  c ")
    assert r.text == " a:b  c "


def test_fields_after_text_are_used_only_when_required_ones_are_missing() -> None:
    r = parse_receipt("id:1 text:hello there stat:DELIVRD err:005")
    assert (r.id, r.stat, r.err) == ("1", "DELIVRD", "005")
    assert r.text == "hello there"


def test_extra_spaces_and_unknown_fields_are_ignored() -> None:
    r = parse_receipt(
        "  id : 42   sub:001  dlvrd:001 foo:bar  submit date: 2403091405"
        "   done  date:2403091407 mccmnc:21401 stat:  DELIVRD   err:000 xid:7 text:ok"
    )
    assert (r.id, r.stat, r.err, r.text) == ("42", "DELIVRD", "000", "ok")
    assert r.submit_date == SUBMIT
    assert r.done_date == DONE


def test_lookalike_keys_inside_other_words_are_not_keys() -> None:
    r = parse_receipt("subid:5 id:6 substat:FOO stat:EXPIRED")
    assert (r.id, r.stat) == ("6", "EXPIRED")


@pytest.mark.parametrize(
    "message_id", ["0123456789", "7F3A9C2B", "7f3a9c2b", "c1b2a3-uuid-like", "18446744073709551615"]
)
def test_ids_are_returned_as_given(message_id: str) -> None:
    assert parse_receipt(f"id:{message_id} stat:DELIVRD").id == message_id


def test_non_numeric_counts_fall_back_to_defaults() -> None:
    r = parse_receipt("id:1 sub:x dlvrd:\xb2 stat:DELIVRD")  # "²" is a digit to str.isdigit
    assert (r.sub, r.dlvrd) == (1, 0)


def test_short_err_is_padded() -> None:
    assert parse_receipt("id:1 stat:UNDELIV err:1").err == "001"


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("sub:001 dlvrd:001 stat:DELIVRD err:000 text:x", "id"),
        ("id:1 sub:001 dlvrd:001 err:000 text:x", "stat"),
        ("id: stat:DELIVRD", "id"),
        ("id:1 stat:", "stat"),
        ("", "id"),
        ("hello world", "id"),
        ("id:1 text:stat is not here", "stat"),
    ],
)
def test_missing_required_field_raises_naming_it(text: str, missing: str) -> None:
    with pytest.raises(ReceiptError) as info:
        parse_receipt(text)
    assert info.value.field == missing
    assert isinstance(info.value, RemoteProtocolError)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_raises_only_receipt_error(data: str | bytes) -> None:
    try:
        r = parse_receipt(data)
    except ReceiptError as exc:
        assert exc.field in ("id", "stat")
        return
    assert r.id
    assert r.stat


# --- round trip ---------------------------------------------------------------

_token = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
_dates = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59)
).map(lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC))
_receipts = st.builds(
    Receipt,
    id=_token,
    stat=st.sampled_from(
        ["DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE"]
    )
    | st.from_regex(r"[A-Z]{1,9}", fullmatch=True),
    sub=st.integers(0, 999),
    dlvrd=st.integers(0, 999),
    submit_date=_dates,
    done_date=_dates,
    err=st.from_regex(r"[0-9]{3}", fullmatch=True),
    text=st.text(
        alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]),
        max_size=20,
    ),
)


@given(_receipts)
def test_parse_format_round_trip(r: Receipt) -> None:
    assert parse_receipt(format_receipt(r)) == r


@given(_receipts)
def test_round_trip_through_latin1_bytes(r: Receipt) -> None:
    text = format_receipt(r)
    if all(ord(c) < 256 for c in text):
        assert parse_receipt(text.encode("latin-1")) == r


def test_parse_is_reasonably_fast() -> None:
    import time

    text = format_receipt(
        Receipt(id="7f3a9c2b", stat="DELIVRD", submit_date=SUBMIT, done_date=DONE, text="hi")
    ).encode()
    start = time.perf_counter()
    for _ in range(10_000):
        parse_receipt(text)
    # Generous bound for slow CI machines; about 0.1 s on a laptop core.
    assert time.perf_counter() - start < 2.0


# --- stat <-> message_state ---------------------------------------------------


@pytest.mark.parametrize(
    ("stat", "state"),
    [
        ("DELIVRD", MessageState.DELIVERED),
        ("EXPIRED", MessageState.EXPIRED),
        ("DELETED", MessageState.DELETED),
        ("UNDELIV", MessageState.UNDELIVERABLE),
        ("ACCEPTD", MessageState.ACCEPTED),
        ("UNKNOWN", MessageState.UNKNOWN),
        ("REJECTD", MessageState.REJECTED),
        ("ENROUTE", MessageState.ENROUTE),
        ("BUFFRED", MessageState.ENROUTE),
        ("ACKED", MessageState.ENROUTE),
        ("SCHEDULED", MessageState.SCHEDULED),
        ("SKIPPED", MessageState.SKIPPED),
        ("delivrd", MessageState.DELIVERED),
        ("Undeliv", MessageState.UNDELIVERABLE),
        ("WHATEVER", MessageState.UNKNOWN),
        ("", MessageState.UNKNOWN),
    ],
)
def test_stat_to_state(stat: str, state: MessageState) -> None:
    assert stat_to_state(stat) is state


def test_spec_values_of_message_state() -> None:
    # SMPP 3.4 section 5.3.2.35, SCHEDULED and SKIPPED from 5.0.
    assert [stat_to_state(s) for s in ["ENROUTE", "DELIVRD", "EXPIRED", "DELETED"]] == [1, 2, 3, 4]
    assert [stat_to_state(s) for s in ["UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD"]] == [5, 6, 7, 8]


@pytest.mark.parametrize("state", list(MessageState))
def test_state_stat_round_trip(state: MessageState) -> None:
    assert stat_to_state(state_to_stat(state)) is state


def test_state_to_stat_words() -> None:
    assert state_to_stat(2) == "DELIVRD"
    assert state_to_stat(MessageState.UNDELIVERABLE) == "UNDELIV"
    assert state_to_stat(1) == "ENROUTE"
    assert state_to_stat(200) == "UNKNOWN"


@pytest.mark.parametrize("state", list(MessageState))
def test_is_final(state: MessageState) -> None:
    assert is_final(state) == (state in FINAL_MESSAGE_STATES)


def test_is_final_examples() -> None:
    assert is_final(MessageState.DELIVERED)
    assert is_final(MessageState.REJECTED)
    assert not is_final(MessageState.ENROUTE)
    assert not is_final(MessageState.ACCEPTED)
    assert not is_final(MessageState.SCHEDULED)


def test_receipt_error_is_not_a_registered_status() -> None:
    # It must not steal a wire status from the registry in smpp.errors.
    assert ReceiptError.command_status == CommandStatus.RSYSERR


# --- message id forms -------------------------------------------------------------


def _shares_a_form(a: str, b: str) -> bool:
    return bool(set(message_id_forms(a)) & set(message_id_forms(b)))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1A2B", "6699"),
        ("1a2b", "6699"),
        ("0000001a", "26"),
        ("1a2b", "1A2B"),
        ("00001A2B", "1a2b"),
        ("0026", "26"),
        ("ffffffffffffffff", "18446744073709551615"),
        (" 1a2b\x00", "6699"),
    ],
)
def test_same_number_in_hex_and_decimal_share_a_form(a: str, b: str) -> None:
    assert _shares_a_form(a, b)
    assert _shares_a_form(b, a)


@pytest.mark.parametrize(("a", "b"), [("1a2b", "1a2c"), ("msg-1", "MSG-1"), ("abc", "2749")])
def test_different_ids_share_no_form(a: str, b: str) -> None:
    assert not _shares_a_form(a, b)


def test_exact_form_comes_first() -> None:
    assert message_id_forms("1A2B") == ("1A2B", "6699")
    assert message_id_forms("0026") == ("0026", "38", "26")
    assert message_id_forms("26") == ("26", "38")
    assert message_id_forms(" 42 ")[0] == "42"


@pytest.mark.parametrize("message_id", ["msg-xyz", "c1b2a3d4-e5f6", "Zq81kP", "", "1a2b.3"])
def test_non_hex_id_maps_only_to_itself(message_id: str) -> None:
    assert message_id_forms(message_id) == (message_id,)


def test_overlong_numeric_id_has_only_its_exact_form() -> None:
    long_id = "9" * 5000  # str(int) would exceed Python's digit limit
    assert message_id_forms(long_id) == (long_id,)


def test_canonical_message_id_strips_only_padding() -> None:
    assert canonical_message_id(" 00Ab12\x00") == "00Ab12"


@given(st.integers(min_value=0, max_value=2**128))
def test_any_number_in_hex_and_decimal_shares_a_form(n: int) -> None:
    decimal = str(n)
    for hex_id in (f"{n:x}", f"{n:X}", f"{n:016x}"):
        assert _shares_a_form(hex_id, decimal)
