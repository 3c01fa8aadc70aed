"""`sync.live.next_range` on any CRM: every row modified after the cursor is handed to exactly
one range, no range holds more than `max_rows` new rows unless one instant does, and the cursor
never passes now."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.sync.live import LiveCursor, next_range, quantile

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
OVERLAP = timedelta(seconds=30)


def counter(stamps: list[datetime]):
    ordered = sorted(stamps)

    def count(start: datetime, end: datetime) -> int:
        return bisect.bisect_left(ordered, end) - bisect.bisect_left(ordered, start)

    return count


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=60_000), max_size=300),
    max_rows=st.integers(min_value=1, max_value=50),
)
def test_ranges_cover_every_row_once_and_stay_bounded(offsets: list[int], max_rows: int) -> None:
    stamps = [T0 + timedelta(milliseconds=ms) for ms in offsets]
    count = counter(stamps)
    now = T0 + timedelta(seconds=61)
    upto = T0
    handed = 0
    for _ in range(len(stamps) + 2):
        found = next_range(count, upto, now, overlap=OVERLAP, max_rows=max_rows)
        if found is None:
            break
        assert found.start == upto - OVERLAP
        assert upto < found.end <= now
        assert found.new_rows == count(upto, found.end) > 0
        # Bounded, unless the first instant after the cursor (to the millisecond) holds more.
        first = min(t for t in stamps if t >= upto)
        single = count(upto, first + timedelta(milliseconds=1))
        assert found.new_rows <= max(max_rows, single)
        if found.end < now:  # cut: one more millisecond would be too many
            assert count(upto, found.end + timedelta(milliseconds=1)) > max_rows
        handed += found.new_rows
        upto = found.end
    assert handed == len(stamps)
    assert next_range(count, upto, now, overlap=OVERLAP, max_rows=max_rows) is None


def test_a_cursor_survives_its_text_and_a_broken_one_restarts() -> None:
    cursor = LiveCursor(T0)
    assert LiveCursor.load(cursor.dump()) == cursor
    assert LiveCursor.load(None) is None
    assert LiveCursor.load("not json") is None
    assert LiveCursor.load('{"upto": "yesterday"}') is None


def test_quantiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (quantile(values, 0.5), quantile(values, 0.95), quantile(values, 1.0)) == (
        50.0,
        95.0,
        100.0,
    )
    assert quantile([], 0.5) != quantile([], 0.5)  # NaN: no change, no latency
