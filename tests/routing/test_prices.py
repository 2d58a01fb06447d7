from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.prices import PriceError, PriceTable


def test_longest_prefix_wins_then_default() -> None:
    table = PriceTable.from_mapping({"default": 0.08, "34": 0.045, "346": 0.040, "+3460": 0.035})
    assert table.match("34600123456") == ("3460", 0.035)
    assert table.match("34612345678") == ("346", 0.040)
    assert table.match("34912345678") == ("34", 0.045)
    assert table.match("4915112345678") == ("default", 0.08)


def test_no_price_and_no_default_does_not_serve() -> None:
    table = PriceTable.from_mapping({"34": 0.045})
    assert table.price_for("4915112345678") is None
    assert table.price_for("34600") == 0.045


def test_bad_inline_prices() -> None:
    with pytest.raises(PriceError, match="digits"):
        PriceTable.from_mapping({"34a": 0.01})
    with pytest.raises(PriceError, match=">= 0"):
        PriceTable.from_mapping({"34": -0.01})
    with pytest.raises(PriceError, match="twice"):
        PriceTable.from_mapping({"34": 0.01, "+34": 0.02})


def test_csv_with_header_comments_blank_lines_and_currency() -> None:
    text = """# agg-a, May
prefix,price,currency

34,0.045,EUR
346,0.040,eur
"+3460", 0.035
default,0.08
"""
    table = PriceTable.from_csv(text, source="agg-a.csv")
    assert table.currency == "EUR"
    assert table.default == 0.08
    assert dict(table.prefixes) == {"34": 0.045, "346": 0.040, "3460": 0.035}


def test_csv_accepts_lines() -> None:
    table = PriceTable.from_csv(["34,0.045", "44,0.03"], default=0.1)
    assert table.price_for("447700900123") == 0.03
    assert table.price_for("1212") == 0.1


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("34,0.045\n34,abc\n", 2, "not a number"),
        ("34\n", 1, "expected prefix,price"),
        ("34,0.1,EUR,x\n", 1, "expected prefix,price"),
        ("# c\n\n3x4,0.1\n", 3, "must be digits"),
        ("34,0.1\n34,0.2\n", 2, "already priced on line 1"),
        ("34,0.1,EUR\n44,0.1,USD\n", 2, "differs from EUR on line 1"),
        ("34,-1\n", 1, ">= 0"),
        ("34,nan\n", 1, "finite"),
        ("34,0.1\nprefix,price\n", 2, "is not a number"),  # a header only on the first line
    ],
)
def test_csv_errors_name_the_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(PriceError) as caught:
        PriceTable.from_csv(text, source="p.csv")
    assert caught.value.line == line
    assert problem in str(caught.value)
    assert str(caught.value).startswith(f"p.csv line {line}: ")


prefix = st.text("0123456789", min_size=1, max_size=7)


@given(st.dictionaries(prefix, st.floats(0, 1)), st.text("0123456789", min_size=1, max_size=15))
def test_lookup_equals_a_scan(prices: dict[str, float], number: str) -> None:
    table = PriceTable(prices)
    matching = [p for p in prices if number.startswith(p)]
    expected = prices[max(matching, key=len)] if matching else None
    assert table.price_for(number) == expected
