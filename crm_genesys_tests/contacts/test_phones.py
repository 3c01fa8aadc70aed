"""E.164 normalization: a table written from the numbering plans, and fast path == phonenumbers."""

from __future__ import annotations

import random

import pandas as pd
import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crm_genesys.contacts.phones import (
    REASON_FOREIGN_EXIT,
    _invalid_reason,
    _resolve_unique,
    normalize_phone,
    normalize_phones,
    slow_chain,
)

# (raw, record country, expected E.164 or None, expected extension). Expectations come from the
# national numbering plans (NANP 3+3+4 with trunk 1 and IDD 011; UK trunk 0, London 20 + 8
# digits; German trunk 0, Berlin 30; French trunk 0, mobiles 6/7 + 8; Japanese trunk 0, Tokyo 3
# + 8; Indian mobiles 10 digits from 6-9; Australian trunk 0, mobiles 4 + 8; Brazilian trunk 0,
# São Paulo 11 + 9-digit mobiles starting 9; Russian trunk 8, Moscow 495 + 7), not from the code.
TABLE = [
    ("+1-800-555-0199", "US", "+18005550199", None),
    ("18005550199", "US", "+18005550199", None),
    ("0018005550199", "US", None, None),  # 00 is no exit code in the NANP (011 is)
    ("011 1 800 555 0199", "US", "+18005550199", None),
    ("011 1 800 555 0199", "GB", "+18005550199", None),  # not in GB (exit 00): in the default US
    ("0034810127744", "US", None, None),  # not a Spanish number from a US record
    ("0034810127744", "ES", "+34810127744", None),
    ("(212) 555-0123", "US", "+12125550123", None),
    ("212.555.0123", "US", "+12125550123", None),
    ("1 (212) 555-0123", "US", "+12125550123", None),
    ("+1 212 555 0123 x45", "US", "+12125550123", 45),
    ("212-555-0123 ext. 7", "US", "+12125550123", 7),
    ("(416) 555-0123", "CA", "+14165550123", None),
    ("416 555 0123", "US", "+14165550123", None),
    ("555-0123", "US", None, None),  # 7-digit local number: no area code, not guessed
    ("911", "US", None, None),  # emergency short code
    ("020 7946 0958", "GB", "+442079460958", None),
    ("+44 20 7946 0958", "US", "+442079460958", None),
    ("+44 (0)20 7946 0958", "DE", "+442079460958", None),
    ("0044 20 7946 0958", "GB", "+442079460958", None),
    ("0044 20 7946 0958", "CA", None, None),
    ("011 44 20 7946 0958", "US", "+442079460958", None),
    ("07700 900123", "GB", None, None),  # Ofcom drama range: never assigned
    ("07400 123456", "GB", "+447400123456", None),
    ("999", "GB", None, None),
    ("030 1234567", "DE", "+49301234567", None),
    ("+49 30 1234567", "FR", "+49301234567", None),
    ("0049 30 1234567", "DE", "+49301234567", None),
    ("030/1234567", "DE", "+49301234567", None),
    ("0151 23456789", "DE", "+4915123456789", None),
    ("112", "DE", None, None),
    ("01 23 45 67 89", "FR", "+33123456789", None),
    ("06 12 34 56 78", "FR", "+33612345678", None),
    ("+33 6 12 34 56 78", "US", "+33612345678", None),
    ("0033612345678", "FR", "+33612345678", None),
    ("06 12 34", "FR", None, None),  # too short
    ("03-1234-5678", "JP", "+81312345678", None),
    ("+81 3 1234 5678", "US", "+81312345678", None),
    ("090-1234-5678", "JP", "+819012345678", None),
    ("98765 43210", "IN", "+919876543210", None),
    ("+91 98765 43210", "US", "+919876543210", None),
    ("0412 345 678", "AU", "+61412345678", None),
    ("+61 412 345 678", "GB", "+61412345678", None),
    ("(11) 91234-5678", "BR", "+5511912345678", None),
    ("+55 11 91234 5678", "US", "+5511912345678", None),
    ("8 (495) 123-45-67", "RU", "+74951234567", None),
    ("+7 495 123 45 67", "DE", "+74951234567", None),
    ("+1 800 FLOWERS", "US", "+18003569377", None),  # vanity letters
    ("＋４９ ３０ １２３４５６７", "DE", "+49301234567", None),  # full-width digits
    ("not a phone", "US", None, None),
    ("+999 123 456 789", "US", None, None),  # unassigned country code
    ("00000000000", "US", None, None),
]


@pytest.mark.parametrize(("raw", "country", "e164", "ext"), TABLE)
def test_numbering_plan_table(raw: str, country: str, e164: str | None, ext: int | None) -> None:
    res = normalize_phone(raw, country, "US")
    assert res.e164 == e164
    if e164 is None:
        assert res.reason is not None
        assert res.payload() is None
    else:
        assert res.extension == ext
        assert res.region == phonenumbers.region_code_for_number(phonenumbers.parse(e164))
        body = res.payload()
        assert body is not None and body["display"] == e164
        assert body["normalizationCountryCode"] == res.region
        assert ("extension" in body) == (ext is not None)


def test_table_spans_enough_countries() -> None:
    assert len(TABLE) >= 40
    valid = {
        phonenumbers.region_code_for_number(phonenumbers.parse(e)) for _, _, e, _ in TABLE if e
    }
    assert len(valid) >= 8


def _cases(seed: int) -> tuple[list[str], list[str]]:
    rnd = random.Random(seed)
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    texts, regs = [], []
    fmts = (
        phonenumbers.PhoneNumberFormat.E164,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.NATIONAL,
    )
    for region in regions:
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is None:
                continue
            nsn = phonenumbers.national_significant_number(ex)
            cc = str(ex.country_code)
            for fmt in fmts:
                texts.append(phonenumbers.format_number(ex, fmt))
                regs.append(rnd.choice([region, "US", rnd.choice(regions)]))
            for s in ("00" + cc + nsn, "011" + cc + nsn, cc + nsn, "0" + nsn, "8" + nsn, nsn[:-1]):
                texts.append(s)
                regs.append(rnd.choice([region, "GB", "DE"]))
    return texts, regs


def test_fast_path_agrees_with_phonenumbers_on_every_region() -> None:
    texts, regs = _cases(1)
    e164, _, region, _ = _resolve_unique(texts, regs, "US")
    for i, (t, r) in enumerate(zip(texts, regs, strict=True)):
        ref = slow_chain(t, r, "US")
        assert (e164[i], region[i]) == ((ref[0], ref[1]) if ref else (None, None)), (t, r)


@settings(max_examples=300, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=0, max_size=18),
    prefix=st.sampled_from(["", "+", "00", "011", "0", "1", "8", "+0"]),
    region=st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    default=st.sampled_from(["US", "GB", "DE", "BR", "JP"]),
)
def test_fast_path_agrees_with_phonenumbers_on_any_digits(
    digits: str, prefix: str, region: str, default: str
) -> None:
    text = prefix + digits
    if not text.strip():
        return
    e164, _, got_region, _ = _resolve_unique([text], [region], default)
    ref = slow_chain(text, region, default)
    assert (e164[0], got_region[0]) == ((ref[0], ref[1]) if ref else (None, None))


def _dialled(text: str, region: str, default: str) -> str | None:
    """What the record's region's dialling plan makes of `text` (then the default region's),
    read by phonenumbers alone: the reference for numbers written with an exit code."""
    for where in dict.fromkeys((region, default)):
        try:
            number = phonenumbers.parse(text, where)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


_EXAMPLES = [
    ex
    for r in sorted(phonenumbers.SUPPORTED_REGIONS)
    for ex in (phonenumbers.example_number(r), phonenumbers.example_number_for_type(r, 1))
    if ex is not None
]


@settings(max_examples=400, deadline=None)
@given(
    number=st.sampled_from(_EXAMPLES),
    exit_code=st.sampled_from(["00", "011", "0011", "810", "010"]),
    region=st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    default=st.sampled_from(["US", "CA", "GB", "DE", "ES", "AU", "JP"]),
    spaced=st.booleans(),
)
def test_an_exit_code_is_read_by_the_records_own_dialling_plan(
    number: phonenumbers.PhoneNumber, exit_code: str, region: str, default: str, spaced: bool
) -> None:
    nsn = phonenumbers.national_significant_number(number)
    sep = " " if spaced else ""
    text = f"{exit_code}{sep}{number.country_code}{sep}{nsn}"
    want = _dialled(text, region, default)
    (fast,), _, _, (reason,) = _resolve_unique([text], [region], default)
    assert fast == want, (text, region, default)
    assert normalize_phone(text, region, default).e164 == want
    if want is None:
        assert reason is not None


@pytest.mark.parametrize(
    ("raw", "country"),
    [("0034810127744", "US"), ("0018005550199", "CA"), ("011 44 20 7946 0958", "GB")],
)
def test_a_foreign_exit_code_is_dropped_with_its_own_reason(raw: str, country: str) -> None:
    res = normalize_phone(raw, country, country)
    assert res.e164 is None and res.reason == REASON_FOREIGN_EXIT


# Non-geographic numbers (+800 freephone, +882 networks, ...): the fast path leaves them to
# phonenumbers, so a foreign exit code before one is named through phonenumbers.
_NON_GEO = [
    ex
    for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    if (ex := phonenumbers.example_number_for_non_geo_entity(cc)) is not None
]


@settings(max_examples=400, deadline=None)
@given(
    number=st.sampled_from(_EXAMPLES + _NON_GEO),
    exit_code=st.sampled_from(["", "+", "00", "011", "0011", "010"]),
    trim=st.integers(min_value=0, max_value=2),
    region=st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    default=st.sampled_from(["US", "CA", "GB", "DE", "ES", "AU", "JP"]),
    spaced=st.booleans(),
)
@example(phonenumbers.parse("+80012345678"), "011", 0, "GB", "GB", False)
@example(phonenumbers.parse("+34810127744"), "00", 0, "US", "US", True)
def test_a_rejected_numbers_reason_is_the_one_phonenumbers_gives(
    number: phonenumbers.PhoneNumber,
    exit_code: str,
    trim: int,
    region: str,
    default: str,
    spaced: bool,
) -> None:
    nsn = phonenumbers.national_significant_number(number)
    sep = " " if spaced else ""
    text = f"{exit_code}{sep}{number.country_code}{sep}{nsn[: len(nsn) - trim]}"
    (e164,), _, _, (reason,) = _resolve_unique([text], [region], default)
    if slow_chain(text, region, default) is None:
        assert e164 is None
        assert reason == _invalid_reason(text, region), (text, region, default)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(), st.text(max_size=40), st.integers(), st.floats(), st.binary(max_size=20)
        ),
        max_size=20,
    )
)
def test_never_raises_and_never_guesses(values: list[object]) -> None:
    raw = pd.Series(values, dtype=object)
    out = normalize_phones(raw, pd.Series(["US"] * len(values)), "US")
    assert len(out) == len(values)
    for e164, reason in zip(out["e164"], out["reason"], strict=True):
        if e164 is not None:
            assert reason is None
            assert phonenumbers.is_valid_number(phonenumbers.parse(e164))


def test_parallel_split_matches_single_process() -> None:
    texts, regs = _cases(2)
    raw = pd.Series(texts * 3, dtype=object)
    region = pd.Series(regs * 3, dtype=object)
    import crm_genesys.contacts.phones as phones

    one = normalize_phones(raw, region, "US", workers=1)
    old = phones.PARALLEL_MIN_DISTINCT
    phones.PARALLEL_MIN_DISTINCT = 10
    try:
        two = normalize_phones(raw, region, "US", workers=2)
    finally:
        phones.PARALLEL_MIN_DISTINCT = old
    pd.testing.assert_frame_equal(one, two)
