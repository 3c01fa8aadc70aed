"""Modification times read as instants: the one parser of a CRM time value, and the time helpers.

An *instant* here is an int64 count of microseconds since the Unix epoch (UTC). `parse_instants`
turns a column of CRM time values into instants, NA where a value is not a point in time; the
window extract (`crm.source`) and the versions (`contacts.keys.crm_versions`) both read time
through it, so a row's window and its version can never disagree.

What is read (everything else is NA):
- datetimes (`datetime`, pandas `Timestamp`, numpy `datetime64`) and dates (midnight). Aware ones
  are converted; naive ones are wall-clock times in the CRM's zone (`zone`, UTC by default).
- ISO-8601 text, in fixed-width fields: `YYYY-MM-DD`, optionally followed by `T` or a space and
  `HH:MM`, `HH:MM:SS` or `HH:MM:SS.f` (1 to 9 fraction digits, floored to the microsecond),
  optionally followed (after an optional space) by `Z`, `±HH:MM`, `±HHMM` or `±HH`; trailing
  ASCII whitespace is ignored. Each value's offset is its own (one value's offset never affects
  another's); an offset beyond `max_offset` either way (±14:00 by default: no zone has more) is
  refused, so the SQL superset of a window (`text_ranges`) can be exact. Text without an offset
  is a wall-clock time in `zone`. Not read: leading whitespace, `t`/`z` in lower case, hour-only
  times, one-digit fields (`10:5`), the basic format (`20240601T1000`), years outside 1-9999,
  impossible dates and times (`2024-02-30`, `24:00`, `10:60`), numbers (seconds? milliseconds?
  a counter?) and booleans.
- Wall-clock times in a zone with daylight saving time: a time that occurs twice (the hour
  repeated when clocks go back) is its first occurrence (the earlier instant, still on summer
  time); a time that does not exist (the hour skipped when clocks go forward) is the first
  instant after the gap (as pandas' `nonexistent="shift_forward"`).

`text_ranges(start, end, zone, max_offset)` is the SQL side of the same grammar: text intervals
(with, for the margins of `max_offset` around the window, a marker that must occur in the text)
that together hold every text whose instant lies in [start, end), so a source can select a
tight superset through the index of a text column and keep exactly the window after parsing.
`edge_ranges` is the part of them a quick time report must parse.

Also here: `as_utc`, `window_floor`, `to_micros`, `from_micros`, `zone_named`, `is_utc`, the
helpers every module that handles window bounds needs.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MINUTE = timedelta(minutes=1)
# No time zone has ever been further from UTC than this (Kiribati, +14:00; -12:00 the other way).
MAX_OFFSET = timedelta(hours=14)
# Spans longer than this use the widest naive bounds instead of sampling the zone's offsets.
_SAMPLED_SPAN = timedelta(days=7)
# Naive wall clocks of any zone since 1800 stay within this of UTC (LMT offsets included).
_NAIVE_MARGIN = timedelta(hours=16)
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Universal", "Etc/Universal", "Zulu"})


# --- time helpers ---------------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def window_floor(moment: datetime, window: timedelta) -> datetime:
    """Start of the window holding `moment`; windows are aligned to the Unix epoch in UTC."""
    if window <= timedelta(0):
        raise ValueError("window must be positive")
    since = as_utc(moment) - EPOCH
    return EPOCH + (since // window) * window


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch (naive = UTC)."""
    return (as_utc(moment) - EPOCH) // _US


def from_micros(us: int) -> datetime:
    """Inverse of `to_micros`: an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=int(us))


def zone_named(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. `Europe/Berlin`); ValueError when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone name ({exc})") from None


def is_utc(zone: tzinfo) -> bool:
    """True when `zone` is UTC itself (naive values need no conversion)."""
    if zone is UTC:
        return True
    if isinstance(zone, ZoneInfo):
        return zone.key in _UTC_NAMES
    return False


# --- the parser -----------------------------------------------------------------------------


def parse_instants(
    values: pd.Series | Sequence[Any] | np.ndarray,
    zone: tzinfo = UTC,
    max_offset: timedelta = MAX_OFFSET,
) -> pd.Series:
    """Instants (nullable Int64, microseconds since the epoch) of CRM time values; NA where a
    value is not a point in time. A Series keeps its index. Text whose offset is beyond
    `max_offset` either way (the mapping's `source.max_offset_hours`) is not read. See the
    module docstring for what is read and how naive values and offsets are treated."""
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    us, valid = _instants(series, zone, max_offset)
    return pd.Series(pd.arrays.IntegerArray(us, ~valid), index=series.index)


def instants_array(
    values: pd.Series | Sequence[Any] | np.ndarray,
    zone: tzinfo = UTC,
    max_offset: timedelta = MAX_OFFSET,
) -> tuple[np.ndarray, np.ndarray]:
    """`parse_instants` as plain arrays: (int64 microseconds, bool valid); invalid slots hold 0."""
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    return _instants(series, zone, max_offset)


def _instants(
    series: pd.Series, zone: tzinfo, max_offset: timedelta
) -> tuple[np.ndarray, np.ndarray]:
    n = len(series)
    us = np.zeros(n, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    everything = np.arange(n)
    if n == 0:
        return us, valid
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        utc = series.dt.tz_convert("UTC").dt.tz_localize(None)
        _put(us, valid, everything, utc.to_numpy("datetime64[us]"))
        return us, valid
    if pd.api.types.is_datetime64_dtype(series.dtype):
        _put_walls(us, valid, everything, series.to_numpy("datetime64[us]"), zone)
        return us, valid
    obj = series.to_numpy(dtype=object)
    kind = infer_dtype(obj, skipna=True)
    if kind == "string":
        present = ~pd.isna(obj)
        where = everything if present.all() else np.flatnonzero(present)
        _parse_texts(us, valid, where, obj, zone, max_offset)
        return us, valid
    if kind == "empty":
        return us, valid
    if kind == "datetime":
        _put_datetimes(us, valid, obj, zone)
        return us, valid
    # Mixed content: text, datetimes and dates are read; numbers (seconds? millis? a counter?),
    # booleans and anything else are refused rather than guessed.
    texts, walls, aware = [], [], []
    for i, v in enumerate(obj.tolist()):
        if isinstance(v, str):
            texts.append(i)
        elif isinstance(v, datetime) and v.utcoffset() is not None:
            aware.append(i)
        elif isinstance(v, date | np.datetime64) and not pd.isna(v):
            walls.append(i)
    if texts:
        idx = np.array(texts, dtype=np.int64)
        _parse_texts(us, valid, idx, obj, zone, max_offset)
    if walls:
        idx = np.array(walls, dtype=np.int64)
        _put_walls(us, valid, idx, _datetime64(obj[idx].tolist()), zone)
    if aware:
        idx = np.array(aware, dtype=np.int64)
        utc = [v.astimezone(UTC).replace(tzinfo=None) for v in obj[idx].tolist()]
        _put(us, valid, idx, _datetime64(utc))
    return us, valid


def _put_datetimes(us: np.ndarray, valid: np.ndarray, obj: np.ndarray, zone: tzinfo) -> None:
    """Store a column of datetimes (and None), naive or aware or both, in C where pandas can."""
    present = np.flatnonzero(~pd.isna(obj))
    values = obj[present]
    aware = np.fromiter((v.tzinfo is not None for v in values), dtype=bool, count=len(values))
    for part, utc in ((aware, True), (~aware, False)):
        if not part.any():
            continue
        idx, chunk = present[part], values[part]
        # Objects, not text: pandas converts each aware one with its own offset.
        stamps = pd.to_datetime(pd.Series(chunk, dtype=object), utc=utc, errors="coerce")
        if utc:
            stamps = stamps.dt.tz_localize(None)
        got = stamps.to_numpy("datetime64[us]")
        lost = np.flatnonzero(np.isnat(got))  # beyond pandas' nanosecond range
        if len(lost):
            got[lost] = _datetime64(
                [v.astimezone(UTC).replace(tzinfo=None) if utc else v for v in chunk[lost]]
            )
        if utc:
            _put(us, valid, idx, got)
        else:
            _put_walls(us, valid, idx, got, zone)


def _datetime64(values: list[Any]) -> np.ndarray:
    """Naive datetimes, dates, Timestamps and datetime64 values as datetime64[us] (NaT where one
    cannot be held)."""
    try:
        return np.array(values, dtype="datetime64[us]")
    except (ValueError, TypeError, OverflowError):
        out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[us]")
        for i, v in enumerate(values):
            with contextlib.suppress(ValueError, TypeError, OverflowError):
                out[i] = np.datetime64(v, "us")
        return out


def _put(us: np.ndarray, valid: np.ndarray, idx: np.ndarray, utc: np.ndarray) -> None:
    """Store UTC datetime64[us] values (NaT = not a time) at positions `idx`."""
    ok = ~np.isnat(utc)
    us[idx[ok]] = utc[ok].view(np.int64)
    valid[idx[ok]] = True


def _put_walls(
    us: np.ndarray, valid: np.ndarray, idx: np.ndarray, walls: np.ndarray, zone: tzinfo
) -> None:
    """Store wall-clock datetime64[us] values, read in `zone`, at positions `idx`."""
    if not is_utc(zone):
        local = pd.DatetimeIndex(walls.astype("datetime64[us]")).tz_localize(
            zone,
            # First occurrence of a repeated wall time; a skipped one moves past the gap.
            ambiguous=np.ones(len(walls), dtype=bool),
            nonexistent="shift_forward",
        )
        walls = local.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[us]")
    _put(us, valid, idx, walls.astype("datetime64[us]"))


# Text is read by this module, not by pandas: `to_datetime(format="ISO8601")` (pandas 2.3) carries
# one value's offset over to the naive values after it, and reads `10:5` as 10:05, a text that
# does not sort like its time. The grammar is the module docstring's, with fixed-width fields.
_LONGEST = 36  # YYYY-MM-DDTHH:MM:SS.fffffffff +HH:MM
_MAX_FRACTION = 9
_CHUNK = 1 << 17
# Whitespace a value may end with: all of it sorts below every character of a time, so the text
# of a value still orders like its wall clock (other Unicode spaces do not, and are not read).
_TRAILING = np.frombuffer(b" \t\r\n\x0b\x0c", dtype=np.uint8)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_ZERO, _NINE = ord("0"), ord("9")


def _parse_texts(
    us: np.ndarray,
    valid: np.ndarray,
    where: np.ndarray,
    obj: np.ndarray,
    zone: tzinfo,
    max_offset: timedelta,
) -> None:
    """Parse the texts `obj[where]` (all str) into `us`/`valid` at positions `where`, a chunk at
    a time (the bytes of one chunk at once: a few MB, whatever the column's length)."""
    for lo in range(0, len(where), _CHUNK):
        part = where[lo : lo + _CHUNK]
        texts = obj[part].tolist()
        n = len(texts)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
        blob = "".join(texts).encode("utf-8", "surrogatepass")
        if len(blob) != int(lengths.sum()):
            # Some text is not ASCII, so not a time: blank it to keep one byte per character.
            ascii_ = np.fromiter(map(str.isascii, texts), dtype=bool, count=n)
            blob = "".join(t for t, a in zip(texts, ascii_, strict=True) if a).encode("ascii")
            lengths[~ascii_] = 0
        buf = np.frombuffer(blob, dtype=np.uint8)
        starts = np.cumsum(lengths) - lengths
        # Texts of one length (the usual case) are a matrix of the buffer: no gather needed.
        width = int(lengths[0]) if n and (lengths == lengths[0]).all() else None
        _drop_trailing_space(buf, starts, lengths)
        chars = _characters(buf, starts, lengths, width)
        wall, offset, ok, aware = _parse_chunk(chars, lengths, max_offset // _MINUTE)
        plain = ok & ~aware
        if plain.any():
            _put_walls(us, valid, part[plain], wall[plain].view("datetime64[us]"), zone)
        if aware.any():
            utc = wall[aware] - offset[aware] * 60_000_000
            _put(us, valid, part[aware], utc.view("datetime64[us]"))


def _drop_trailing_space(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
    """Shorten `lengths` in place past each text's trailing whitespace."""
    idx = np.flatnonzero(lengths > 0)
    while len(idx):
        idx = idx[np.isin(buf[starts[idx] + lengths[idx] - 1], _TRAILING)]
        lengths[idx] -= 1
        idx = idx[lengths[idx] > 0]


def _characters(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int | None
) -> np.ndarray:
    """The texts at `starts` as a (position, text) uint8 matrix, 0 past each text's length."""
    m = len(starts)
    if width is not None and width <= _LONGEST:
        ch = np.zeros((_LONGEST, m), dtype=np.uint8)
        if m and width:
            first = int(starts[0]) // width
            ch[:width] = buf.reshape(-1, width)[first : first + m].T
    else:
        pos = starts[None, :] + np.arange(_LONGEST)[:, None]
        ch = buf[np.minimum(pos, len(buf) - 1)] if len(buf) else np.zeros(pos.shape, np.uint8)
    if width is None or width > _LONGEST or (lengths != width).any():
        ch[np.arange(_LONGEST)[:, None] >= lengths[None, :]] = 0
    return ch


def _parse_chunk(
    ch: np.ndarray, lengths: np.ndarray, max_minutes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(wall-clock µs, offset minutes, readable, has an offset) of the texts in `ch`, a
    (position, text) matrix of characters (see `_characters`), of `lengths`; offsets beyond
    `max_minutes` either way are not read."""
    m = ch.shape[1]
    cols = np.arange(m)
    digit = (ch >= _ZERO) & (ch <= _NINE)

    def number(a: int, b: int) -> np.ndarray:
        out = ch[a].astype(np.int64) - _ZERO
        for k in range(a + 1, b):
            out = out * 10 + (ch[k].astype(np.int64) - _ZERO)
        return out

    def all_digits(a: int, b: int) -> np.ndarray:
        out = digit[a].copy()
        for k in range(a + 1, b):
            out &= digit[k]
        return out

    def at(rows: np.ndarray) -> np.ndarray:
        return ch[np.minimum(rows, _LONGEST - 1), cols]

    def digits_at(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        ok = np.ones(m, dtype=bool)
        out = np.zeros(m, dtype=np.int64)
        for k in range(count):
            c = at(rows + k).astype(np.int64)
            ok &= (c >= _ZERO) & (c <= _NINE)
            out = out * 10 + (c - _ZERO)
        return out, ok

    ok = (lengths >= 10) & (lengths <= _LONGEST) & all_digits(0, 4) & (ch[4] == ord("-"))
    ok &= all_digits(5, 7) & (ch[7] == ord("-")) & all_digits(8, 10)
    year, month, day = number(0, 4), number(5, 7), number(8, 10)
    timed = lengths > 10
    ok &= ~timed | (
        ((ch[10] == ord("T")) | (ch[10] == ord(" ")))
        & all_digits(11, 13)
        & (ch[13] == ord(":"))
        & all_digits(14, 16)
    )
    hour = np.where(timed, number(11, 13), 0)
    minute = np.where(timed, number(14, 16), 0)
    with_seconds = timed & (ch[16] == ord(":"))
    ok &= ~with_seconds | all_digits(17, 19)
    second = np.where(with_seconds, number(17, 19), 0)
    with_fraction = with_seconds & (ch[19] == ord("."))
    run = digit[20].copy()
    frac_digits = run.astype(np.int64)
    for k in range(21, 20 + _MAX_FRACTION):
        run &= digit[k]
        frac_digits += run
    frac_digits = np.where(with_fraction, frac_digits, 0)
    ok &= ~with_fraction | (frac_digits >= 1)
    fraction = np.zeros(m, dtype=np.int64)
    for k in range(6):  # microseconds; finer digits are floored away
        fraction = fraction * 10 + np.where(frac_digits > k, ch[20 + k].astype(np.int64) - _ZERO, 0)
    wall_end = np.where(
        with_fraction, 20 + frac_digits, np.where(with_seconds, 19, np.where(timed, 16, 10))
    )
    # The tail: nothing, or an optional space and Z / ±HH / ±HHMM / ±HH:MM.
    tail = lengths - wall_end
    aware = np.zeros(m, dtype=bool)
    offset = np.zeros(m, dtype=np.int64)
    tailed = np.flatnonzero(tail > 0)
    if len(tailed):
        ok[tailed] &= timed[tailed]
        t_ok, t_offset = _parse_offsets(
            ch[:, tailed], wall_end[tailed], lengths[tailed], max_minutes
        )
        ok[tailed] &= t_ok
        aware[tailed] = t_ok
        offset[tailed] = t_offset
    # The calendar: years 1 to 9999 of the proleptic Gregorian calendar, as `datetime` has.
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    dim = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= dim)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    seconds = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    return seconds * 1_000_000 + fraction, offset, ok, aware & ok


def _parse_offsets(
    ch: np.ndarray, wall_end: np.ndarray, lengths: np.ndarray, max_minutes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(valid, minutes east of UTC) of the tails after the wall-clock text."""
    cols = np.arange(ch.shape[1])

    def at(rows: np.ndarray) -> np.ndarray:
        return ch[np.minimum(rows, _LONGEST - 1), cols].astype(np.int64)

    def two_digits(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = at(rows), at(rows + 1)
        ok = (a >= _ZERO) & (a <= _NINE) & (b >= _ZERO) & (b <= _NINE)
        return (a - _ZERO) * 10 + (b - _ZERO), ok

    tz_at = wall_end + ((at(wall_end) == ord(" ")) & (lengths > wall_end + 1))
    size = lengths - tz_at
    sign = at(tz_at)
    signed = (sign == ord("+")) | (sign == ord("-"))
    hh, hh_ok = two_digits(tz_at + 1)
    compact_mm, compact_ok = two_digits(tz_at + 3)
    colon_mm, colon_ok = two_digits(tz_at + 4)
    zulu = (size == 1) & (sign == ord("Z"))
    hours_only = (size == 3) & signed & hh_ok
    compact = (size == 5) & signed & hh_ok & compact_ok
    colon = (size == 6) & signed & hh_ok & (at(tz_at + 3) == ord(":")) & colon_ok
    mm = np.where(compact, compact_mm, np.where(colon, colon_mm, 0))
    minutes = np.where(zulu, 0, hh * 60 + mm)
    ok = (zulu | hours_only | compact | colon) & (mm < 60) & (minutes <= max_minutes)
    return ok, np.where(sign == ord("-"), -minutes, minutes)


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


# --- the SQL side of the grammar ------------------------------------------------------------

PLUS = "+"
MINUS = "-"


@dataclass(frozen=True)
class TextRange:
    """Text values `low <= value < high` (bytewise) that also contain every marker in `marks`
    — at least one of them: `+` (a positive offset) or `-` after a `:` (a negative offset).
    Empty `marks`: every value in the range."""

    low: str
    high: str
    marks: frozenset[str] = frozenset()


def wall_bounds(start: datetime, end: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """Naive wall-clock bounds [low, high) holding every naive wall time in `zone` whose instant
    (as `parse_instants` reads it) lies in [start, end)."""
    start, end = as_utc(start), as_utc(end)
    if is_utc(zone):
        return _naive(start), _naive(end)
    if end - start > _SAMPLED_SPAN:
        return _naive(_shift(start, -_NAIVE_MARGIN)), _naive(_shift(end, _NAIVE_MARGIN))
    # A wall time's offset from its instant is one the zone had within hours of that instant.
    moment, stop = _shift(start, -timedelta(hours=3)), _shift(end, timedelta(hours=3))
    offsets = set()
    while moment <= stop:
        offsets.add(moment.astimezone(zone).utcoffset() or timedelta(0))
        moment += timedelta(minutes=15)
    offsets.add(stop.astimezone(zone).utcoffset() or timedelta(0))
    return _naive(_shift(start, min(offsets))), _naive(_shift(end, max(offsets)))


def text_ranges(
    start: datetime, end: datetime, zone: tzinfo = UTC, max_offset: timedelta = MAX_OFFSET
) -> list[TextRange]:
    """Disjoint text ranges, in order, holding every text value (of the grammar
    `parse_instants` reads) whose instant lies in [start, end); see `TextRange`.

    Values without an offset, and those in `Z`/`+00:00`, have their wall clock inside the
    window's wall-clock bounds: those ranges are read whole. Values with an offset have their
    wall clock within 14 h of the window: the margins are read through their marker (`-` below
    the window, `+` above). Ranges are split per date and separator (`T` and space sort apart),
    so mixing both costs nothing.
    """
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        return []
    core_low, core_high = _core(start, end, zone)
    margin_low = _naive(_shift(start, -max_offset))
    margin_high = _naive(_shift(end, max_offset))
    pieces: list[TextRange] = []
    for low, high, marks in (
        (margin_low, core_low, frozenset({MINUS})),
        (core_low, core_high, frozenset()),
        (core_high, margin_high, frozenset({PLUS})),
    ):
        if low < high:
            pieces.extend(_date_pieces(low, high, marks))
    return _disjoint(pieces)


def edge_ranges(
    start: datetime, end: datetime, zone: tzinfo = UTC, max_offset: timedelta = MAX_OFFSET
) -> list[TextRange]:
    """Within the whole ranges of `text_ranges(start, end, zone)`, the ranges (some with a
    marker) holding every text whose instant lies outside [start, end): the whole ranges'
    slack beyond the span's wall clock (whole minutes, the zone's offsets), and texts with an
    offset near the edges — a positive offset takes a wall clock less than 14 h after the start
    back before it, a negative one a wall clock less than 14 h before the end past it."""
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        return []
    core_low, core_high = _core(start, end, zone)
    hour = timedelta(hours=1)
    # Naive wall clocks of instants just outside the span end below / start above these.
    # (Whole minutes again: `HH:MMZ` sorts above the start's text when that has seconds.)
    slack_low = _ceil_minute(
        max(_naive(start), wall_bounds(start - MAX_OFFSET - hour, start, zone)[1])
    )
    slack_high = min(_naive(end), wall_bounds(end, end + MAX_OFFSET + hour, zone)[0])
    early = min(core_high, _naive(_shift(start, max_offset)))
    late = max(core_low, _naive(_shift(end, -max_offset)))
    pieces = [
        *_date_pieces(core_low, early, frozenset({PLUS})),
        *_date_pieces(late, core_high, frozenset({MINUS})),
    ]
    if core_low < min(slack_low, core_high):
        pieces += _date_pieces(core_low, min(slack_low, core_high), frozenset())
    if max(slack_high, core_low) < core_high:
        pieces += _date_pieces(max(slack_high, core_low), core_high, frozenset())
    if _is_long(core_low, core_high):
        pieces += _long_slack(core_low, core_high)
    return _disjoint(pieces)


def _core(start: datetime, end: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """The wall-clock span [low, high) whose texts `text_ranges` reads whole."""
    wall_low, wall_high = wall_bounds(start, end, zone)
    # Whole minutes above: `HH:MMZ` stays below the bound's text whenever its time is earlier.
    return min(wall_low, _naive(start)), _ceil_minute(max(wall_high, _naive(end)))


def _date_pieces(low: datetime, high: datetime, marks: frozenset[str]) -> list[TextRange]:
    """[low, high) as text ranges for each separator; per date when it spans few dates."""
    first, last = low.date(), (high - _US).date()
    out: list[TextRange] = []
    if _is_long(low, high):
        # Long spans: one range across both separators (the dates in between hold both).
        out.append(TextRange(bound_text(low, " "), bound_text(high, "T"), marks))
        return out
    day = first
    while day <= last:
        head = _date_text(day)
        for sep, after in ((" ", "!"), ("T", "U")):
            lo = bound_text(low, sep) if day == first else head
            hi = bound_text(high, sep) if day == high.date() else head + after
            if sep == "T":
                lo = max(lo, head + "T")  # a bare date belongs to the space ranges
            hi = min(hi, head + after)
            lo = max(lo, head)
            if lo < hi:
                out.append(TextRange(lo, hi, marks))
        day += timedelta(days=1)
    return out


def _is_long(low: datetime, high: datetime) -> bool:
    return ((high - _US).date() - low.date()).days > 3


def _long_slack(low: datetime, high: datetime) -> list[TextRange]:
    """The texts the one range of a long span [low, high) holds beyond its wall clock: `T`
    texts of the first date before `low`, space texts of the last date from `high` on."""
    out = []
    head = _date_text(low.date()) + "T"
    if head < bound_text(low, "T"):
        out.append(TextRange(head, bound_text(low, "T")))
    if high.time() != time(0):
        out.append(TextRange(bound_text(high, " "), _date_text(high.date()) + "!"))
    return out


def _disjoint(pieces: list[TextRange]) -> list[TextRange]:
    """The union of `pieces` as disjoint ranges in order; where pieces overlap, a whole range
    wins over a marked one and marks add up."""
    cuts = sorted({p.low for p in pieces} | {p.high for p in pieces})
    out: list[TextRange] = []
    for low, high in itertools.pairwise(cuts):
        cover = [p for p in pieces if p.low <= low and high <= p.high]
        if not cover:
            continue
        marks: frozenset[str] = (
            frozenset()
            if any(not p.marks for p in cover)
            else frozenset().union(*(p.marks for p in cover))
        )
        if out and out[-1].high == low and out[-1].marks == marks:
            out[-1] = TextRange(out[-1].low, high, marks)
        else:
            out.append(TextRange(low, high, marks))
    return out


def text_complement(ranges: Sequence[TextRange]) -> list[tuple[str | None, str | None]]:
    """The gaps around and between `ranges` (as returned by `text_ranges`) as [low, high) pairs,
    None for an open end."""
    gaps: list[tuple[str | None, str | None]] = []
    previous: str | None = None
    for r in ranges:
        if previous is None or previous < r.low:
            gaps.append((previous, r.low))
        previous = r.high
    gaps.append((previous, None))
    return gaps


def bound_text(moment: datetime, sep: str) -> str:
    """The shortest text of the naive wall time `moment` with separator `sep`: every value of
    the grammar with that separator sorts at or above it iff its wall time is at or after
    `moment` (a bare date for midnight, then down to the last non-zero field)."""
    head = _date_text(moment.date())
    if moment.time() == time(0):
        return head
    text = f"{head}{sep}{moment.hour:02d}"
    if moment.minute or moment.second or moment.microsecond:
        text += f":{moment.minute:02d}"
    if moment.second or moment.microsecond:
        text += f":{moment.second:02d}"
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text


def _date_text(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def _naive(moment: datetime) -> datetime:
    return as_utc(moment).replace(tzinfo=None)


def _shift(moment: datetime, by: timedelta) -> datetime:
    """`moment + by`, clamped to the datetime range."""
    try:
        return moment + by
    except OverflowError:
        extreme = datetime.max if by > timedelta(0) else datetime.min
        return extreme.replace(tzinfo=moment.tzinfo)


def _ceil_minute(moment: datetime) -> datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else _shift(floor, timedelta(minutes=1))
