"""The one parser of CRM time values, and the text ranges that find them through an index.

The parser is checked against an independent reading: a regular expression of the documented
grammar and the standard library's `datetime.fromisoformat`.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.crm.instants import (
    MINUS,
    PLUS,
    TextRange,
    bound_text,
    edge_ranges,
    from_micros,
    parse_instants,
    text_complement,
    text_ranges,
    to_micros,
    wall_bounds,
    window_floor,
    zone_named,
)

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2024, 6, 1, 10, tzinfo=UTC)
# Instants from 1900 to 2100, in µs.
INSTANTS = st.integers(to_micros(datetime(1900, 1, 1)), to_micros(datetime(2100, 1, 1)))
OFFSETS = st.integers(-14 * 60, 14 * 60)


def us(text: str) -> int | None:
    value = parse_instants(pd.Series([text], dtype=object)).iloc[0]
    return None if value is pd.NA else int(value)


# --- an independent reading of the grammar ---------------------------------------------------

GRAMMAR = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:([T ])(\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)"
    r"(?: ?(Z|[+-]\d{2}(?::?\d{2})?))?)?[ \t\r\n\x0b\x0c]*"
)


def oracle(text: str, zone: ZoneInfo | None = None) -> int | None:
    """The instant the module docstring promises for `text`, from `fromisoformat`."""
    match = GRAMMAR.fullmatch(text)
    if not match:
        return None
    day, _, clock, offset = match.groups()
    iso = day + ("T" + clock if clock else "")
    if offset and offset != "Z" and int(offset.replace(":", "")[3:] or 0) >= 60:
        return None  # an offset's minutes are below 60
    if offset:
        iso += "+00:00" if offset == "Z" else offset
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        if abs(moment.utcoffset() or timedelta(0)) > timedelta(hours=14):
            return None
        return to_micros(moment)
    if zone is None:
        return to_micros(moment)
    # Naive in a zone: first occurrence of a repeated time, skipped times past the gap.
    local = pd.Timestamp(moment).tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
    return to_micros(local.to_pydatetime())


STYLES = st.integers(0, 11)


def render(instant: int, style: int, offset_minutes: int = 0) -> str:
    """One of many texts of `instant`: naive UTC with a space or `T`, with microseconds, whole
    seconds or minutes (those lose precision), `Z`, or an offset (`±HH:MM`, `±HHMM`, `±HH`,
    after a space or not)."""
    moment = from_micros(instant)
    sep = "T" if style % 2 else " "
    wall = moment.replace(tzinfo=None)
    if style < 2:
        return wall.isoformat(sep=sep, timespec="microseconds")
    if style < 4:
        return wall.isoformat(sep=sep, timespec="seconds")
    if style == 4:
        return wall.isoformat(sep=sep) + "Z"
    if style == 5:
        return wall.isoformat(sep=sep, timespec="minutes") + "Z"
    if style == 6:
        return wall.isoformat(sep=sep, timespec="minutes")
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes))).replace(tzinfo=None)
    hours, minutes = divmod(abs(offset_minutes), 60)
    sign = "-" if offset_minutes < 0 else "+"
    text = local.isoformat(sep=sep, timespec="minutes" if style == 11 else "auto")
    if style in (7, 11):
        return f"{text}{sign}{hours:02d}:{minutes:02d}"
    if style == 8:
        return f"{text}{sign}{hours:02d}{minutes:02d}"
    if style == 9:
        return f"{text} {sign}{hours:02d}:{minutes:02d}"
    return f"{text}{sign}{hours:02d}" + (f"{minutes:02d}" if minutes else "")


# Instants on whole minutes and seconds too: their texts are shorter than a window bound's.
SOME_INSTANTS = st.one_of(
    INSTANTS,
    INSTANTS.map(lambda u: u - u % 1_000_000),
    INSTANTS.map(lambda u: u - u % 60_000_000),
)
# Offsets, often at the extremes.
SOME_OFFSETS = st.one_of(OFFSETS, st.sampled_from([-840, -839, -720, -1, 0, 1, 330, 839, 840]))
# A distance in µs from an instant to a window's edge.
EDGE = st.one_of(
    st.integers(0, 10), st.integers(0, 1_000_000), st.integers(0, 3 * 86_400 * 1_000_000)
)


# --- the parser ------------------------------------------------------------------------------


def test_every_representation_of_one_instant_is_the_same_instant() -> None:
    want = to_micros(datetime(2024, 6, 1, 10, 0, 0, 250000, tzinfo=UTC))
    texts = [
        "2024-06-01 10:00:00.250000",
        "2024-06-01T10:00:00.25",
        "2024-06-01T10:00:00.250000Z",
        "2024-06-01 10:00:00.25 Z",
        "2024-06-01T12:00:00.25+02:00",
        "2024-06-01T12:00:00.25+0200",
        "2024-06-01T15:00:00.25+05",
        "2024-06-01 05:00:00.25-05:00",
        "2024-06-01T15:30:00.250000001+05:30",
        "2024-06-01 10:00:00.25 \t\r\n",
    ]
    objects = [
        datetime(2024, 6, 1, 10, 0, 0, 250000),
        datetime(2024, 6, 1, 12, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2))),
        pd.Timestamp("2024-06-01 10:00:00.25"),
        pd.Timestamp("2024-06-01 19:00:00.25", tz="Asia/Tokyo"),
        np.datetime64("2024-06-01T10:00:00.250"),
    ]
    got = parse_instants(pd.Series([*texts, *objects], dtype=object))
    assert got.tolist() == [want] * (len(texts) + len(objects))
    typed = pd.Series(pd.to_datetime(["2024-06-01 10:00:00.25"]))
    aware = typed.dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    assert parse_instants(typed).tolist() == parse_instants(aware).tolist() == [want]


def test_one_values_offset_never_changes_anothers() -> None:
    """pandas 2.3's to_datetime(format="ISO8601", utc=True) reads the naive value after an offset
    in that offset (here 08:00 UTC for both); the parser reads each value on its own."""
    values = ["2024-06-01T10:00:00+02:00", "2024-06-01 10:00:00", "2024-06-01 10:00:00.5"]
    got = parse_instants(pd.Series(values)).tolist()
    assert got == [
        to_micros(datetime(2024, 6, 1, 8, tzinfo=UTC)),
        to_micros(T0),
        to_micros(T0 + timedelta(milliseconds=500)),
    ]


@pytest.mark.parametrize(
    "value",
    [
        None,
        float("nan"),
        "",
        "   ",
        "junk",
        "2024-02-30 10:00:00",  # impossible date
        "2023-02-29",
        "2024-06-01 24:00",
        "2024-06-01 10:60",
        "2024-06-01 10:00:60",
        " 2024-06-01 10:00:00",  # leading blank: would not sort as a time
        "2024-06-01 10:5",  # pandas reads 10:05
        "2024-06-01T10",  # hour only
        "20240601T100000",  # basic format
        "2024-06-01t10:00:00",
        "2024-06-01T10:00:00z",
        "2024-06-01T10:00:00+14:30",  # no zone is that far from UTC
        "2024-06-01T10:00:00+02:60",
        "2024-06-01T10:00:00+2",
        "2024-06-01T10:00:00.",
        "2024-06-01T10:00:00.1234567891",  # ten fraction digits
        "2024-06-01 10:00:00\u3000",  # a Unicode space sorts above the digits
        "2024-06-01Z",
        "0000-01-01",
        1717236000,  # seconds? milliseconds? refused, not guessed
        1717236000.5,
        True,
        b"2024-06-01",
    ],
)
def test_what_is_not_a_point_in_time_is_na(value: object) -> None:
    assert parse_instants(pd.Series([value], dtype=object)).isna().all()


def test_extremes_and_order_of_an_index_are_kept() -> None:
    values = pd.Series(["0001-01-01", "9999-12-31 23:59:59.999999", None], index=[7, 3, 5])
    got = parse_instants(values)
    assert got.index.tolist() == [7, 3, 5]
    assert got.iloc[0] == to_micros(datetime(1, 1, 1))
    assert got.iloc[1] == to_micros(datetime(9999, 12, 31, 23, 59, 59, 999999))
    assert got.isna().tolist() == [False, False, True]
    assert len(parse_instants(pd.Series([], dtype=object))) == 0


def test_naive_values_are_wall_clock_in_the_zone() -> None:
    """Berlin: 2024-03-31 02:00-03:00 does not exist, 2024-10-27 02:00-03:00 happens twice."""
    values = pd.Series(
        [
            "2024-06-01 12:00:00",  # summer: UTC+2
            "2024-01-15 11:00:00",  # winter: UTC+1
            "2024-03-31 02:30:00",  # skipped: the first instant after the gap (01:00 UTC)
            "2024-10-27 02:30:00",  # repeated: the first occurrence (00:30 UTC, still summer)
            "2024-10-27 03:00:00",  # after the repeat: 02:00 UTC
            "2024-06-01T12:00:00Z",  # an explicit offset wins over the zone
        ]
    )
    got = [from_micros(v) for v in parse_instants(values, BERLIN)]
    assert got == [
        datetime(2024, 6, 1, 10, tzinfo=UTC),
        datetime(2024, 1, 15, 10, tzinfo=UTC),
        datetime(2024, 3, 31, 1, tzinfo=UTC),
        datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
        datetime(2024, 10, 27, 2, tzinfo=UTC),
        datetime(2024, 6, 1, 12, tzinfo=UTC),
    ]
    objects = pd.Series([datetime(2024, 10, 27, 2, 30), date(2024, 6, 1)], dtype=object)
    assert [from_micros(v) for v in parse_instants(objects, BERLIN)] == [
        datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
        datetime(2024, 5, 31, 22, tzinfo=UTC),
    ]


def test_zone_names_are_iana() -> None:
    assert zone_named("Europe/Berlin") == BERLIN
    with pytest.raises(ValueError, match="IANA"):
        zone_named("Europe/Berln")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(SOME_INSTANTS, STYLES, SOME_OFFSETS), min_size=1, max_size=40))
def test_any_mix_of_representations_reads_the_same_instants(
    rows: list[tuple[int, int, int]],
) -> None:
    texts = [render(instant, style, offset) for instant, style, offset in rows]
    got = parse_instants(pd.Series(texts)).tolist()
    # Texts without a fraction lose the instant's microseconds: compare with what they say.
    assert got == [oracle(t) for t in texts]
    for (instant, style, _), value in zip(rows, got, strict=True):
        if style not in (2, 3, 5, 6, 11):
            assert value == instant


_PIECES = st.sampled_from(
    ["2024", "-", "06", "01", "1", "T", " ", "t", "10", ":", "00", "5", ".", "123456", "7", "Z",
     "z", "+", "-", "02", "14", "15", "30", "60", "99", "\t", "\u3000", "x", "13", "29", "24"]
)  # fmt: skip
_CHARS = st.sampled_from([*"0123456789-:.TZ+ tz\t\x0c", "\u3000", "é"])


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    """`text` with characters replaced, inserted or deleted."""
    for kind, at, char in edits:
        at %= len(text) + 1
        if kind == 0:
            text = text[:at] + char + text[at + 1 :]
        elif kind == 1:
            text = text[:at] + char + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
    return text


# Texts near the grammar: valid ones (offsets up to ±23:59) with a few characters changed.
NEAR = st.tuples(
    SOME_INSTANTS,
    STYLES,
    st.integers(-24 * 60 + 1, 24 * 60 - 1),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), _CHARS), max_size=2),
).map(lambda r: _mutate(render(r[0], r[1], r[2]), r[3]))


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.lists(_PIECES, max_size=14).map("".join), NEAR))
def test_the_parser_reads_exactly_the_documented_grammar(text: str) -> None:
    assert us(text) == oracle(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4 * 365 * 24 * 60), st.integers(0, 59_999_999)), max_size=30),
    st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
)
def test_naive_values_in_a_zone_match_the_reference(
    walls: list[tuple[int, int]], zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    base = datetime(2022, 1, 1)
    texts = [
        (base + timedelta(minutes=m, microseconds=u)).isoformat(sep=" ", timespec="microseconds")
        for m, u in walls
    ]
    assert parse_instants(pd.Series(texts, dtype=object), zone).tolist() == [
        oracle(t, zone) for t in texts
    ]


def test_pandas_ns_units_and_datetime_dtypes() -> None:
    naive = pd.Series(pd.to_datetime(["2024-06-01 10:00:00.000001", None]))
    assert parse_instants(naive).tolist() == [to_micros(T0) + 1, pd.NA]
    assert parse_instants(naive, BERLIN).iloc[0] == to_micros(T0) + 1 - 2 * 3600 * 10**6


# --- window bounds and text ranges --------------------------------------------------------


def test_bound_text_is_the_shortest_text_of_a_wall_time() -> None:
    assert bound_text(datetime(2024, 6, 1), " ") == "2024-06-01"
    assert bound_text(datetime(2024, 6, 1, 10), "T") == "2024-06-01T10"
    assert bound_text(datetime(2024, 6, 1, 10, 15), " ") == "2024-06-01 10:15"
    assert bound_text(datetime(2024, 6, 1, 10, 0, 5), " ") == "2024-06-01 10:00:05"
    assert bound_text(datetime(2024, 6, 1, 10, 0, 0, 500), " ") == "2024-06-01 10:00:00.0005"


def _covered(text: str, start: datetime, end: datetime, zone: ZoneInfo | None = None) -> bool:
    """True when some range of `text_ranges` holds `text`, as the SQL would test it."""
    for r in text_ranges(start, end, zone or UTC):
        if r.low <= text < r.high:
            if not r.marks:
                return True
            plus = PLUS in r.marks and "+" in text
            minus = MINUS in r.marks and re.search(":.*-", text) is not None
            return plus or minus
    return False


@settings(max_examples=1500, deadline=None)
@given(SOME_INSTANTS, STYLES, SOME_OFFSETS, EDGE, EDGE, st.sampled_from(["", " ", "\t "]))
def test_text_ranges_hold_every_text_of_the_window(
    instant: int, style: int, offset: int, before: int, after: int, pad: str
) -> None:
    """Any window, aligned or not, holding a value's instant has a range that holds its text."""
    text = render(instant, style, offset) + pad
    value = us(text)
    assert value is not None
    start, end = from_micros(value - before), from_micros(value + after + 1)
    assert _covered(text, start, end)


@settings(max_examples=300, deadline=None)
@given(
    SOME_INSTANTS,
    STYLES,
    SOME_OFFSETS,
    st.sampled_from([timedelta(minutes=15), timedelta(hours=1), timedelta(days=1)]),
)
def test_text_ranges_hold_the_texts_of_aligned_windows(
    instant: int, style: int, offset: int, window: timedelta
) -> None:
    text = render(instant, style, offset)
    start = window_floor(from_micros(us(text) or 0), window)
    assert _covered(text, start, start + window)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2 * 365 * 24 * 4),
    st.integers(0, 899_999_999),
    st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Tokyo"]),
    st.sampled_from([timedelta(minutes=15), timedelta(hours=1), timedelta(days=1)]),
)
def test_text_ranges_hold_naive_texts_of_a_zone(
    quarter: int, micros: int, zone_name: str, window: timedelta
) -> None:
    zone = ZoneInfo(zone_name)
    wall = datetime(2023, 1, 1) + timedelta(minutes=15 * quarter, microseconds=micros)
    text = wall.isoformat(sep="T" if quarter % 2 else " ")
    value = us_in(text, zone)
    start = window_floor(from_micros(value), window)
    assert _covered(text, start, start + window, zone)
    low, high = wall_bounds(start, start + window, zone)
    assert low <= wall < high


def us_in(text: str, zone: ZoneInfo) -> int:
    return int(parse_instants(pd.Series([text]), zone).iloc[0])


def test_text_ranges_read_the_window_whole_and_the_margins_by_sign() -> None:
    ranges = text_ranges(T0, T0 + timedelta(hours=1))
    whole = [(r.low, r.high) for r in ranges if not r.marks]
    assert whole == [("2024-06-01 10", "2024-06-01 11"), ("2024-06-01T10", "2024-06-01T11")]
    below = {r.low for r in ranges if r.marks == {MINUS}}
    above = {r.high for r in ranges if r.marks == {PLUS}}
    assert min(below) == "2024-05-31 20" and max(above) == "2024-06-02T01"
    assert all(a.high <= b.low for a, b in itertools.pairwise(ranges))
    gaps = text_complement(ranges)
    assert gaps[0] == (None, ranges[0].low) and gaps[-1] == (ranges[-1].high, None)


def test_long_spans_are_one_range() -> None:
    ranges = text_ranges(datetime(2020, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    whole = [r for r in ranges if not r.marks]
    assert len(whole) == 1 and whole[0].low == "2020-01-01" and whole[0].high == "2024-01-01"


def _in(ranges: list[TextRange], text: str) -> bool:
    for r in ranges:
        if r.low <= text < r.high:
            plus = PLUS in r.marks and "+" in text
            minus = MINUS in r.marks and re.search(":.*-", text) is not None
            return not r.marks or plus or minus
    return False


@settings(max_examples=1500, deadline=None)
@given(
    SOME_INSTANTS,
    STYLES,
    SOME_OFFSETS,
    EDGE,
    EDGE,
    st.booleans(),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Pacific/Kiritimati"]),
)
def test_edge_ranges_hold_every_whole_range_text_outside_the_span(
    instant: int, style: int, offset: int, gap: int, length: int, after: bool, zone_name: str
) -> None:
    """A text in a whole range of a span whose instant is outside the span (an offset, the
    zone or the bound's rounding moved it) is in the span's edge ranges: what a quick time
    report parses."""
    zone = ZoneInfo(zone_name)
    text = render(instant, style, offset)
    value = int(parse_instants(pd.Series([text]), zone).iloc[0])
    # A span just after the instant (it is before the span) or just before it.
    start = from_micros(value + 1 + gap) if not after else from_micros(value - gap - length - 1)
    end = start + timedelta(microseconds=length + 1)
    whole = [r for r in text_ranges(start, end, zone) if not r.marks]
    if _in(whole, text):
        assert _in(edge_ranges(start, end, zone), text)


def test_offsets_beyond_the_mappings_maximum_are_not_read() -> None:
    values = pd.Series(["2024-06-01T12:00:00+02:00", "2024-06-01T10:00:00Z", "2024-06-01 10:00"])
    assert parse_instants(values, max_offset=timedelta(hours=1)).isna().tolist() == [
        True,
        False,
        False,
    ]
    assert parse_instants(values, max_offset=timedelta(hours=2)).notna().all()
    # Without offsets to allow for, a window's ranges are its own wall clock only.
    ranges = text_ranges(T0, T0 + timedelta(hours=1), max_offset=timedelta(0))
    assert [(r.low, r.high, r.marks) for r in ranges] == [
        ("2024-06-01 10", "2024-06-01 11", frozenset()),
        ("2024-06-01T10", "2024-06-01T11", frozenset()),
    ]


def test_a_column_of_datetimes_naive_aware_and_far_off() -> None:
    """What a driver returns for a timestamp column: datetimes, each aware one with its own
    offset, naive ones in the zone, years beyond pandas' nanosecond range included."""
    plus2 = timezone(timedelta(hours=2))
    values = pd.Series(
        [
            datetime(2024, 6, 1, 12, tzinfo=plus2),
            datetime(2024, 6, 1, 12),
            datetime(9999, 1, 1, tzinfo=plus2),
            datetime(1, 1, 2),
            None,
        ],
        dtype=object,
    )
    got = parse_instants(values, BERLIN).tolist()
    assert got == [
        to_micros(datetime(2024, 6, 1, 10, tzinfo=UTC)),
        to_micros(datetime(2024, 6, 1, 10, tzinfo=UTC)),
        to_micros(datetime(9999, 1, 1, tzinfo=plus2)),
        # Berlin's local mean time in year 1: +00:53:28.
        to_micros(datetime(1, 1, 2, tzinfo=UTC)) - (53 * 60 + 28) * 1_000_000,
        pd.NA,
    ]
