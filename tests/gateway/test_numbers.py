"""The E.164 replay against phonenumbers itself: same answer for every "+digits" input."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import cast

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc
from phonenumbers.phonenumberutil import (
    COUNTRY_CODE_TO_REGION_CODE,
    PhoneNumberType,
    ValidationResult,
    _number_type_helper,
    _test_number_length,
    region_code_for_country_code,
)

from gateway import numbers
from gateway.messages import SubmissionError, parse_destination

DESC_NAMES = (
    "general_desc",
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)


def reference(candidate: str) -> str | None:
    """What parse_destination accepted before the replay: phonenumbers, nothing else."""
    try:
        parsed = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mismatches(candidates: Iterable[str]) -> tuple[int, list[tuple[str, object, str | None]]]:
    count = 0
    wrong: list[tuple[str, object, str | None]] = []
    for candidate in candidates:
        count += 1
        replayed = numbers.replay(candidate)
        expected = reference(candidate)
        # NOT_COVERED counts as a mismatch: for this form the replay must decide.
        if replayed != expected or numbers.e164(candidate) != expected:
            wrong.append((candidate, replayed, expected))
    return count, wrong


def example_numbers() -> list[tuple[str, str]]:
    """(calling code, national significant number) of every example in the metadata."""
    examples: set[tuple[str, str]] = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for num_type in phonenumbers.PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, num_type)
            if example is not None:
                nsn = phonenumbers.national_significant_number(example)
                examples.add((str(example.country_code), nsn))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            examples.add((str(code), phonenumbers.national_significant_number(example)))
        metadata = PhoneMetadata.metadata_for_nongeo_region(code)
        assert metadata is not None
        for name in DESC_NAMES:
            desc: PhoneNumberDesc | None = getattr(metadata, name)
            if desc is not None and desc.example_number:
                examples.add((str(code), desc.example_number))
    return sorted(examples)


def variants(nsn: str, rng: random.Random) -> Iterator[str]:
    """The number itself and near misses: a digit removed, changed or added, cut, extended."""
    yield nsn
    for i in range(len(nsn)):
        yield nsn[:i] + nsn[i + 1 :]
        for digit in rng.sample("0123456789", 2):
            yield nsn[:i] + digit + nsn[i + 1 :]
        yield nsn[:i] + rng.choice("0123456789") + nsn[i:]
    for extra in range(1, 4):
        yield nsn + "".join(rng.choices("0123456789", k=extra))
        yield nsn[:-extra]


def test_example_numbers_and_near_misses() -> None:
    rng = random.Random(1)
    examples = example_numbers()
    assert len(examples) > 1000
    count, wrong = mismatches(
        "+" + code + variant for code, nsn in examples for variant in variants(nsn, rng)
    )
    assert count > 40_000
    assert wrong == []
    # Near misses are mostly invalid: make sure this also compared many valid ones.
    assert sum(reference("+" + code + nsn) is not None for code, nsn in examples) > 900


def test_national_prefix_after_the_country_code() -> None:
    rng = random.Random(2)
    candidates = [
        "+4407911123456",  # GB: the 0 goes
        "+440201234567",
        "+390612345678",  # IT: the 0 is part of the number (Italian leading zero)
        "+3903123456789",
        "+393123456789",
        "+89161234567",  # +8 is no code; +7 8 916... strips the 8
        "+789161234567",
        "+7849512345678",
        "+4903012345678",
        "+49015123456789",
        "+3306 12345678",
        "+33061234567",
        "+9109876543210",
        "+919876543210",
        "+110125551234",
        "+5401115123456789",  # AR: 0, area code, 15, subscriber: transform rule
        "+540111512345678",
        "+54111523456789",
        "+55015119876543210",  # BR: 0, carrier code 15, number: transform rule
        "+5590151198765432",
        "+550119876543210",
        "+8109012345678",  # JP, and regions with other transform rules
        "+241012345678",
        "+261033123456",
        "+37805491234567",
        "+672312345",
        "+6723012345",
    ]
    # Every region's national prefix put back in front of each of its examples.
    for region in phonenumbers.SUPPORTED_REGIONS:
        metadata = PhoneMetadata.metadata_for_region(region)
        assert metadata is not None
        prefixes = {metadata.national_prefix or "", "0", "8", "1"}
        for num_type in phonenumbers.PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, num_type)
            if example is None:
                continue
            nsn = phonenumbers.national_significant_number(example)
            for prefix in prefixes:
                candidates.append(f"+{example.country_code}{prefix}{nsn}")
                candidates.append(f"+{example.country_code}{prefix}{nsn[:-1]}")
                candidates.append(f"+{example.country_code}{prefix}{nsn}{rng.randrange(10)}")
    count, wrong = mismatches(c.replace(" ", "") for c in candidates)
    assert count > 5_000
    assert wrong == []


def test_every_short_prefix_with_random_digits() -> None:
    rng = random.Random(3)
    prefixes = [str(n) for n in range(10)] + [f"{n:02d}" for n in range(100)]
    prefixes += [f"{n:03d}" for n in range(1000)]
    prefixes += [str(code) for code in COUNTRY_CODE_TO_REGION_CODE]

    def candidates() -> Iterator[str]:
        for prefix in prefixes:
            for length in range(1, 18):
                yield "+" + prefix + "".join(rng.choices("0123456789", k=length))

    count, wrong = mismatches(candidates())
    assert count == len(prefixes) * 17
    assert wrong == []


def test_limits() -> None:
    _, wrong = mismatches(
        ["+0", "+1", "+12", "+123", "+0123456789", "+" + "9" * 20, "+" + "1" * 250]
        + ["+1" + "2" * n for n in range(25)]
        + ["+39" + "0" * n for n in range(25)]
        + ["+44" + "0" * n for n in range(25)]
    )
    assert wrong == []
    assert numbers.replay("+" + "1" * 300) is None
    # "+" alone is not the "+digits" form: phonenumbers answers.
    assert numbers.replay("+") is numbers.Replay.NOT_COVERED
    assert numbers.e164("+") is None


def test_other_forms_go_through_phonenumbers() -> None:
    for candidate in ("+34 600 123 456", "+34-600-123-456", "+34600123456 ext. 7", "0034600123456"):
        assert numbers.replay(candidate) is numbers.Replay.NOT_COVERED
        assert numbers.e164(candidate) == reference(candidate)
    # Other scripts' digits are normalised by parse; str.isdigit alone would take them.
    arabic_indic = "+" + "34600123456".translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert numbers.replay(arabic_indic) is numbers.Replay.NOT_COVERED
    assert numbers.e164(arabic_indic) == "+34600123456"


def test_parse_destination_still_explains() -> None:
    assert parse_destination(" 34600123456 ") == "+34600123456"
    assert parse_destination("+4407911123456") == "+447911123456"
    for number, message in (
        ("+999123456", "not an international phone number"),
        ("+3460012345", "not a valid phone number for its country"),
    ):
        try:
            parse_destination(number, field="destination_addr")
        except SubmissionError as exc:
            assert exc.code == "invalid_destination"
            assert exc.field == "destination_addr"
            assert exc.message.startswith(message)
        else:
            raise AssertionError(f"{number} accepted")


def test_possible_length_after_strip_as_phonenumbers_decides() -> None:
    rejected = (
        ValidationResult.TOO_SHORT,
        ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        ValidationResult.INVALID_LENGTH,
    )
    for code in COUNTRY_CODE_TO_REGION_CODE:
        plan = numbers._plan_country(code)
        assert plan is not numbers.Replay.NOT_COVERED, code
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(
            code, region_code_for_country_code(code)
        )
        for length in range(25):
            expected = _test_number_length("5" * length, metadata) not in rejected
            assert plan._possible_after_strip(length) == expected, (code, length)


def _desc(pattern: str | None, *lengths: int) -> PhoneNumberDesc:
    return PhoneNumberDesc(national_number_pattern=pattern, possible_length=lengths)


def _metadata(**descs: PhoneNumberDesc) -> PhoneMetadata:
    fields = {name: descs.get(name) for name in DESC_NAMES}
    same = (fields["mobile"] is None and fields["fixed_line"] is None) or (
        fields["mobile"] is not None
        and fields["fixed_line"] is not None
        and fields["mobile"].national_number_pattern == fields["fixed_line"].national_number_pattern
    )
    return cast(PhoneMetadata, SimpleNamespace(same_mobile_and_fixed_line_pattern=same, **fields))


def test_type_check_on_metadata_the_real_one_lacks() -> None:
    # Shapes no region has today, checked against phonenumbers' own helper.
    general = _desc(r"[1-3]\d{5,8}", 6, 7, 8, 9)
    cases = [
        # Same mobile and fixed-line pattern, other lengths: mobile is never tried.
        _metadata(
            general_desc=general, fixed_line=_desc(r"1\d{7}", 8), mobile=_desc(r"1\d{7}", 7, 9)
        ),
        _metadata(
            general_desc=general, fixed_line=_desc(r"1\d{5,8}", 7), mobile=_desc(r"1\d{5,8}", 8)
        ),
        # A desc without lengths takes any, but the general lengths still apply.
        _metadata(
            general_desc=_desc(r"\d{6,10}", 7, 9), mobile=_desc(r"2\d{5,9}"), voip=_desc("", 8)
        ),
        # No pattern, an empty one, only an exotic type matching.
        _metadata(general_desc=general, fixed_line=_desc(None, 7), uan=_desc(r"3\d{6}", 7)),
        _metadata(general_desc=_desc(r"\d{7}"), voicemail=_desc(r"2\d{6}", 7), pager=_desc("")),
        _metadata(general_desc=_desc(None, 7), mobile=_desc(r"\d{7}", 7)),
        _metadata(general_desc=_desc("", 7), fixed_line=_desc(r"\d{7}", 7)),
    ]
    nsns = [
        first + "".join(rest)
        for n in range(4, 10)
        for first in "0123"
        for rest in itertools.product("12", repeat=n)
    ]
    for metadata in cases:
        check = numbers._type_check(metadata)
        for nsn in nsns:
            expected = _number_type_helper(nsn, metadata) != PhoneNumberType.UNKNOWN
            assert check(nsn) == expected, (nsn, metadata)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789", min_size=1, max_size=22))
def test_random_plus_digits(digits: str) -> None:
    candidate = "+" + digits
    assert numbers.replay(candidate) == reference(candidate)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(str(code) for code in COUNTRY_CODE_TO_REGION_CODE)),
    st.text(alphabet="0123456789", max_size=18),
)
def test_random_digits_after_a_known_code(code: str, digits: str) -> None:
    candidate = "+" + code + digits
    assert numbers.replay(candidate) == reference(candidate)
