from __future__ import annotations

import pytest

from routing.e164 import InvalidNumber, calling_code, digits
from routing.rules import RuleBreach, Rules, is_alphanumeric


def test_allowed_and_excluded() -> None:
    rules = Rules(allowed=frozenset({"34", "+44"}), excluded=frozenset({"3460"}))
    assert rules.check_destination("34612345678") is None
    assert rules.check_destination("447700900123") is None
    assert rules.check_destination("34600123456") is RuleBreach.EXCLUDED_PREFIX
    assert rules.check_destination("4915112345678") is RuleBreach.NOT_ALLOWED


def test_excluded_wins_over_a_longer_allowed() -> None:
    rules = Rules(allowed=frozenset({"3460"}), excluded=frozenset({"34"}))
    assert rules.check_destination("34600123456") is RuleBreach.EXCLUDED_PREFIX


def test_no_rules_allow_everything() -> None:
    assert Rules().check_destination("1") is None
    assert Rules().check_sender("ACME") is None


def test_alphanumeric_senders() -> None:
    assert is_alphanumeric("ACME")
    assert is_alphanumeric("Shop24")
    assert not is_alphanumeric("+34600123456")
    assert not is_alphanumeric("12345")
    assert not is_alphanumeric("")
    assert Rules(alphanumeric=False).check_sender("ACME") is RuleBreach.ALPHANUMERIC_SENDER
    assert Rules(alphanumeric=False).check_sender("34600123456") is None


def test_bad_rule_prefix() -> None:
    with pytest.raises(ValueError, match="digits"):
        Rules(excluded=frozenset({"34x"}))


def test_e164() -> None:
    assert digits("+34600123456") == "34600123456"
    for bad in ("", "+", "34 600", "+3460012345678901", "٣٤٦"):
        with pytest.raises(InvalidNumber):
            digits(bad)
    assert calling_code("34600123456") == "34"
    assert calling_code("12125550100") == "1"
    assert calling_code("88216") == "882"
    assert calling_code("2125550100") == "212"
    assert calling_code("999") == ""
