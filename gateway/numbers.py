"""E.164 validation: whether a destination is a valid number, and its E.164 form.

phonenumbers is the source of truth: its metadata decides what is valid. But
``parse`` + ``is_valid_number`` cost ~55 µs per number, most of it generic work
(extension and RFC 3966 handling, regexes looked up by string, PhoneNumber
objects) that the form the fronts send, "+" then ASCII digits, never needs;
and most destinations are new, so a cache rarely saves it.

For that form `e164` replays phonenumbers' own decisions, step by step, against
its metadata, with the regexes of each country calling code compiled once.
Each step names the phonenumberutil function it reproduces; the tests compare
the replay with phonenumbers on every region's example numbers and on random
digits. Any other form, and any country whose metadata the replay does not
cover, goes through phonenumbers itself.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, Literal

import phonenumbers
from phonenumbers.phonemetadata import REGION_CODE_FOR_NON_GEO_ENTITY, PhoneMetadata
from phonenumbers.phonenumberutil import (
    _MAX_INPUT_STRING_LENGTH,
    _MAX_LENGTH_COUNTRY_CODE,
    _MAX_LENGTH_FOR_NSN,
    _MIN_LENGTH_FOR_NSN,
    COUNTRY_CODE_TO_REGION_CODE,
    country_code_for_valid_region,
    region_code_for_country_code,
)


class Replay(enum.Enum):
    NOT_COVERED = "not covered"  # the replay cannot decide: ask phonenumbers


def e164(candidate: str) -> str | None:
    """The E.164 form (``+34600123456``) of a valid international number, else None.

    The same answer as phonenumbers.parse(candidate, None), is_valid_number and
    format_number(E164), for every input.
    """
    replayed = replay(candidate)
    if replayed is not Replay.NOT_COVERED:
        return replayed
    return e164_by_phonenumbers(candidate)


def e164_by_phonenumbers(candidate: str) -> str | None:
    """`e164` the slow way, for any form phonenumbers accepts."""
    try:
        parsed = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def replay(candidate: str) -> str | Literal[Replay.NOT_COVERED] | None:
    """`e164` for a "+<ASCII digits>" candidate, or NOT_COVERED."""
    digits = candidate[1:]
    # isdigit alone would take other scripts' digits, which parse normalises.
    if not (candidate[:1] == "+" and digits.isdigit() and digits.isascii()):
        return Replay.NOT_COVERED
    if len(candidate) > _MAX_INPUT_STRING_LENGTH:
        return None  # parse: TOO_LONG
    # _maybe_extract_country_code: at most two digits after the "+" is
    # TOO_SHORT_AFTER_IDD (and not even viable below three).
    if len(digits) <= _MIN_LENGTH_FOR_NSN:
        return None
    # _extract_country_code: the shortest known code wins; none starts with 0.
    # An unknown code fails again when parse retries without the "+".
    for length in range(1, _MAX_LENGTH_COUNTRY_CODE + 1):
        code = digits[:length]
        if code in _KNOWN_CODES:
            break
    else:
        return None
    plan = _PLANS.get(code)
    if plan is None:
        plan = _PLANS[code] = _plan_country(int(code))
    if plan is Replay.NOT_COVERED:
        return plan
    return plan.e164(digits[length:])


_KNOWN_CODES: Final = frozenset(str(code) for code in COUNTRY_CODE_TO_REGION_CODE)
# Built on first use: most gateways only ever see a few countries.
_PLANS: dict[str, _CountryPlan | Literal[Replay.NOT_COVERED]] = {}


@dataclass(frozen=True, slots=True)
class _TypeCheck:
    """``_number_type_helper(nsn, metadata) != UNKNOWN`` for one metadata.

    Validity only needs "some type matched", so the descs are tried mobile and
    fixed line first, and grouped by the lengths they allow
    (``_is_number_matching_desc`` skips a desc whose possible lengths miss).
    """

    general_lengths: frozenset[int]  # empty: any length
    general: re.Pattern[str] | None  # None: the desc has no pattern, nothing matches
    by_length: dict[int, tuple[re.Pattern[str], ...]]
    any_length: tuple[re.Pattern[str], ...]  # the descs that list no lengths

    def __call__(self, nsn: str) -> bool:
        length = len(nsn)
        if self.general is None or (self.general_lengths and length not in self.general_lengths):
            return False
        if self.general.fullmatch(nsn) is None:
            return False
        return any(p.fullmatch(nsn) for p in self.by_length.get(length, self.any_length))


@dataclass(frozen=True, slots=True)
class _Region:
    """One region sharing a calling code, as ``_region_code_for_number_from_list`` sees it."""

    leading_digits: re.Pattern[str] | None
    typed: _TypeCheck
    # is_valid_number_for_region also wants the region's own code to be this one.
    same_code: bool


@dataclass(frozen=True, slots=True)
class _CountryPlan:
    code: str
    # parse: the national prefix, stripped with the main region's metadata.
    national_prefix: re.Pattern[str] | None
    transform_rule: str | None
    viable: re.Pattern[str] | None  # general desc pattern of the main region
    possible_lengths: tuple[int, ...]
    local_only_lengths: tuple[int, ...]
    # is_valid_number: a code of one region needs no selection.
    shared: bool
    single: _TypeCheck | None  # not shared; None: never valid
    regions: tuple[_Region, ...]  # shared, in phonenumbers' order

    def e164(self, national: str) -> str | None:
        if len(national) < _MIN_LENGTH_FOR_NSN:
            return None  # parse: TOO_SHORT_NSN
        national = self._strip_national_prefix(national)
        if not _MIN_LENGTH_FOR_NSN <= len(national) <= _MAX_LENGTH_FOR_NSN:
            return None  # parse: TOO_SHORT_NSN / TOO_LONG
        # format_number(E164) is "+", the code and national_significant_number,
        # which the Italian leading zeros bring back to exactly this string.
        return "+" + self.code + national if self._valid(national) else None

    def _strip_national_prefix(self, number: str) -> str:
        # _maybe_strip_national_prefix_carrier_code, then parse keeps the result
        # only if it still has a possible length: "+44 07911 123456" is GB 7911123456.
        prefix = self.national_prefix
        if prefix is None:
            return number
        match = prefix.match(number)
        if match is None:
            return number
        viable_before = self._is_viable(number)
        groups = match.groups()
        if self.transform_rule is None or groups[-1] is None:
            stripped = number[match.end() :]
        else:
            stripped = prefix.sub(self.transform_rule, number, count=1)
        if viable_before and not self._is_viable(stripped):
            return number
        return stripped if self._possible_after_strip(len(stripped)) else number

    def _is_viable(self, number: str) -> bool:
        # _match_national_number with the general desc: the pattern, not the lengths.
        return self.viable is not None and self.viable.fullmatch(number) is not None

    def _possible_after_strip(self, length: int) -> bool:
        # _test_number_length(number, metadata) not in TOO_SHORT,
        # IS_POSSIBLE_LOCAL_ONLY, INVALID_LENGTH; so TOO_LONG keeps the strip.
        if length in self.local_only_lengths:
            return False
        lengths = self.possible_lengths
        if lengths[0] == length:
            return True
        if lengths[0] > length:
            return False
        if lengths[-1] < length:
            return True
        return length in lengths[1:]

    def _valid(self, nsn: str) -> bool:
        # is_valid_number: region_code_for_number, then is_valid_number_for_region.
        if not self.shared:
            return self.single is not None and self.single(nsn)
        for region in self.regions:
            if region.leading_digits is not None:
                if region.leading_digits.match(nsn):
                    return region.same_code and region.typed(nsn)
            elif region.typed(nsn):
                return region.same_code
        return False


def _plan_country(code: int) -> _CountryPlan | Literal[Replay.NOT_COVERED]:
    main = PhoneMetadata.metadata_for_region_or_calling_code(
        code, region_code_for_country_code(code)
    )
    # Metadata that would make parse fail in its own way (no general desc, no
    # lengths, a transform rule without a group): let parse do it.
    if main is None or main.general_desc is None or not main.general_desc.possible_length:
        return Replay.NOT_COVERED
    prefix = _compile(main.national_prefix_for_parsing)
    transform_rule = main.national_prefix_transform_rule or None
    if prefix is not None and transform_rule is not None and prefix.groups == 0:
        return Replay.NOT_COVERED
    region_codes = COUNTRY_CODE_TO_REGION_CODE[code]
    shared = len(region_codes) > 1
    single: _TypeCheck | None = None
    regions: list[_Region] = []
    if not shared:
        metadata = _metadata_for_validity(code, region_codes[0])
        single = _type_check(metadata) if metadata is not None else None
    else:
        for region_code in region_codes:
            metadata = PhoneMetadata.metadata_for_region(region_code.upper(), None)
            if metadata is None:
                continue  # _region_code_for_number_from_list skips it too
            regions.append(
                _Region(
                    # Not None but empty still matches everything there.
                    leading_digits=_compile(metadata.leading_digits, empty_is_none=False),
                    typed=_type_check(metadata),
                    same_code=_metadata_for_validity(code, region_code) is metadata,
                )
            )
    return _CountryPlan(
        code=str(code),
        national_prefix=prefix,
        transform_rule=transform_rule,
        viable=_compile(main.general_desc.national_number_pattern),
        possible_lengths=tuple(main.general_desc.possible_length),
        local_only_lengths=tuple(main.general_desc.possible_length_local_only),
        shared=shared,
        single=single,
        regions=tuple(regions),
    )


def _metadata_for_validity(code: int, region_code: str) -> PhoneMetadata | None:
    """What is_valid_number_for_region checks against; None: never valid for the region."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region_code.upper())
    if metadata is None:
        return None
    if region_code != REGION_CODE_FOR_NON_GEO_ENTITY and code != country_code_for_valid_region(
        region_code
    ):
        return None
    return metadata


def _type_check(metadata: PhoneMetadata) -> _TypeCheck:
    # _number_type_helper looks at mobile only when its pattern differs from
    # fixed line's: with the same pattern but other lengths it would not match.
    mobile = () if metadata.same_mobile_and_fixed_line_pattern else (metadata.mobile,)
    descs = [
        (tuple(d.possible_length), re.compile(d.national_number_pattern))
        for d in (
            *mobile,
            metadata.fixed_line,
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
        )
        # _match_national_number: no pattern, or an empty one, never matches.
        if d is not None and d.national_number_pattern
    ]
    any_length = tuple(p for lengths, p in descs if not lengths)
    by_length = {
        n: tuple(p for lengths, p in descs if not lengths or n in lengths)
        for n in {n for lengths, _ in descs for n in lengths}
    }
    general = metadata.general_desc
    return _TypeCheck(
        general_lengths=frozenset(general.possible_length) if general is not None else frozenset(),
        general=_compile(general.national_number_pattern) if general is not None else None,
        by_length=by_length,
        any_length=any_length,
    )


def _compile(pattern: str | None, *, empty_is_none: bool = True) -> re.Pattern[str] | None:
    # phonenumbers compiles metadata patterns without flags (re_util.re_compile);
    # most of its checks treat an empty pattern as absent.
    if pattern is None or (empty_is_none and not pattern):
        return None
    return re.compile(pattern)
