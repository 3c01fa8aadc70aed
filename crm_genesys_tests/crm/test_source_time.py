"""Time is read as time: a window holds exactly the rows whose modification instant falls in it,
whatever mix of representations the column holds (SQLite; PostgreSQL in test_source_postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.pool import StaticPool

from crm_genesys.contacts.keys import crm_versions
from crm_genesys.crm.instants import from_micros, to_micros
from crm_genesys.crm.source import SqlCrmSource

from .time_tables import (
    EXACT_STYLES,
    NEAR_T0,
    OFFSET,
    T0,
    render_all,
    said,
    text_table,
    windows_around,
)

HOUR = timedelta(hours=1)
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    """One in-memory SQLite database for the module (each example replaces its table)."""
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    yield engine
    engine.dispose()


def window_ids(source, start: datetime, end: datetime) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    frame = source.extract(start, end)
    return frame["id"].tolist(), crm_versions(frame["modified_at"]).tolist()


ROWS = st.lists(st.tuples(NEAR_T0, st.integers(0, 11), OFFSET), min_size=1, max_size=30)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=ROWS,
    declared=st.sampled_from(["TEXT", "DATETIME", ""]),
    window=st.sampled_from([timedelta(minutes=15), HOUR, timedelta(days=1)]),
    odd=st.tuples(NEAR_T0, st.integers(1, 3 * 86_400_000_000)),
)
def test_a_window_holds_exactly_the_rows_of_its_instants(
    engine: sa.Engine,
    rows: list[tuple[int, int, int]],
    declared: str,
    window: timedelta,
    odd: tuple[int, int],
) -> None:
    source = text_table(engine, render_all(rows), declared)
    truth = [said(instant, style) for instant, style, _ in rows]
    spans = windows_around(truth, window)
    spans.append((from_micros(odd[0]), from_micros(odd[0] + odd[1])))  # not aligned
    seen: list[int] = []
    for start, end in spans[:-1]:
        ids, versions = window_ids(source, start, end)
        low, high = to_micros(start), to_micros(end)
        expected = [i for i, us in enumerate(truth, start=1) if low <= us < high]
        assert sorted(ids) == expected
        # In instant order, and each version is the row's instant.
        assert versions == sorted(versions) == [truth[i - 1] for i in ids]
        seen.extend(ids)
    assert sorted(seen) == list(range(1, len(rows) + 1))  # every row in exactly one window
    start, end = spans[-1]
    ids, _ = window_ids(source, start, end)
    assert sorted(ids) == [
        i for i, us in enumerate(truth, start=1) if to_micros(start) <= us < to_micros(end)
    ]
    assert source.count(start, end) == len(ids)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    instants=st.lists(NEAR_T0, min_size=1, max_size=25),
    styles=st.data(),
    window=st.sampled_from([timedelta(minutes=15), HOUR]),
)
def test_any_mix_of_representations_of_the_same_instants_gives_the_same_windows_and_versions(
    engine: sa.Engine, instants: list[int], styles: st.DataObject, window: timedelta
) -> None:
    mixes = [
        [(us, styles.draw(st.sampled_from(EXACT_STYLES)), styles.draw(OFFSET)) for us in instants]
        for _ in range(2)
    ]
    plain = text_table(engine, render_all([(us, 0, 0) for us in instants]), name="plain")
    mixed = [text_table(engine, render_all(mix), name=f"mix{k}") for k, mix in enumerate(mixes)]
    for start, end in windows_around(instants, window):
        want = sorted(zip(*window_ids(plain, start, end), strict=True))
        for source in mixed:
            # The same rows with the same versions (rows of one instant in any order).
            assert sorted(zip(*window_ids(source, start, end), strict=True)) == want


def test_a_row_on_a_window_start_belongs_to_that_window() -> None:
    """Every text of 10:00:00 is in [10:00, 11:00); of 09:59:59.999999, in the window before."""
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    on_start = [
        "2024-06-01 10:00:00.000000",
        "2024-06-01 10:00:00",
        "2024-06-01T10:00",
        "2024-06-01T10:00:00Z",
        "2024-06-01T12:00:00+02:00",
        "2024-06-01 05:00:00-0500",
        "2024-06-02T00:00:00+14:00",
        "2024-05-31T22:00:00-12:00",
    ]
    just_before = [
        "2024-06-01 09:59:59.999999",
        "2024-06-01T09:59:59.999999Z",
        "2024-06-01T11:59:59.999999+02:00",
        "2024-06-01T23:59:59.999999+14:00",
        "2024-05-31 21:59:59.999999-12:00",
    ]
    source = text_table(engine, [*on_start, *just_before])
    start = datetime(2024, 6, 1, 10, tzinfo=UTC)
    ids, _ = window_ids(source, start, start + HOUR)
    assert sorted(ids) == list(range(1, len(on_start) + 1))
    ids, _ = window_ids(source, start - HOUR, start)
    assert sorted(ids) == list(range(len(on_start) + 1, len(on_start) + len(just_before) + 1))
    # A bound between microseconds of the same second: both sides exact.
    inner = start + timedelta(microseconds=1)
    assert sorted(window_ids(source, start, inner)[0]) == list(range(1, len(on_start) + 1))
    assert window_ids(source, inner, inner + HOUR)[0] == []


def test_naive_times_are_read_in_the_mappings_zone_across_daylight_saving() -> None:
    """Berlin local text every 15 minutes through both changes of 2024: each row lands in the
    UTC window of its instant; the skipped hour moves past the gap, the repeated hour is read
    as its first occurrence."""
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    walls = []
    for day in (datetime(2024, 3, 31), datetime(2024, 10, 27)):
        walls += [day + timedelta(minutes=15 * k) for k in range(0, 20)]  # 00:00 to 04:45
    values = [w.isoformat(sep=" ") for w in walls]
    source = text_table(engine, values)
    source.zone = BERLIN
    expected_utc = {
        "2024-03-31 01:45:00": datetime(2024, 3, 31, 0, 45, tzinfo=UTC),
        "2024-03-31 02:00:00": datetime(2024, 3, 31, 1, tzinfo=UTC),  # skipped: after the gap
        "2024-03-31 02:45:00": datetime(2024, 3, 31, 1, tzinfo=UTC),
        "2024-03-31 03:00:00": datetime(2024, 3, 31, 1, tzinfo=UTC),
        "2024-10-27 01:45:00": datetime(2024, 10, 26, 23, 45, tzinfo=UTC),
        "2024-10-27 02:00:00": datetime(2024, 10, 27, 0, tzinfo=UTC),  # repeated: the first
        "2024-10-27 02:45:00": datetime(2024, 10, 27, 0, 45, tzinfo=UTC),
        "2024-10-27 03:00:00": datetime(2024, 10, 27, 2, tzinfo=UTC),
    }
    seen: dict[int, datetime] = {}
    for day in (datetime(2024, 3, 30, 20, tzinfo=UTC), datetime(2024, 10, 26, 20, tzinfo=UTC)):
        for q in range(4 * 10):
            start = day + q * timedelta(minutes=15)
            frame = source.extract(start, start + timedelta(minutes=15))
            for row_id in frame["id"]:
                assert row_id not in seen
                seen[row_id] = start
    assert sorted(seen) == list(range(1, len(values) + 1))
    for text, instant in expected_utc.items():
        row_id = values.index(text) + 1
        assert seen[row_id] <= instant < seen[row_id] + timedelta(minutes=15)
    # Hourly windows agree with the 15-minute ones.
    hourly = source.extract(
        datetime(2024, 10, 27, 0, tzinfo=UTC), datetime(2024, 10, 27, 1, tzinfo=UTC)
    )
    assert sorted(hourly["id"]) == sorted(
        i
        for i, s in seen.items()
        if datetime(2024, 10, 27, tzinfo=UTC) <= s < datetime(2024, 10, 27, 1, tzinfo=UTC)
    )


def test_extract_orders_by_instant_not_by_text() -> None:
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    values = ["2024-06-01T10:30:00+02:00", "2024-06-01 10:10:00", "2024-06-01T09:20:00-01:00"]
    source = text_table(engine, values)
    frame = source.extract(T0.replace(tzinfo=UTC) - 2 * HOUR, T0.replace(tzinfo=UTC) + 2 * HOUR)
    assert frame["id"].tolist() == [1, 2, 3]  # 08:30, 10:10, 10:20 UTC
    assert frame.index.tolist() == [0, 1, 2]


def test_a_crm_that_writes_no_offsets_reads_no_margins_and_refuses_offsets() -> None:
    """With max_offset 0 (`source.max_offset_hours: 0`) a window reads its own range only; a
    text with an offset is then not a time: never in a window, in the time report."""
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    values = ["2024-06-01 10:30:00", "2024-06-01T10:45:00Z", "2024-06-01T12:50:00+02:00"]
    strict = text_table(engine, values)
    strict.max_offset = timedelta(0)
    start = T0.replace(tzinfo=UTC)
    assert sorted(strict.extract(start, start + HOUR)["id"]) == [1, 2]
    report = strict.time_report(start - HOUR, start + HOUR)
    assert report.counts["unreadable"] == 1 and report.samples["unreadable"][0].crm_id == "3"
    lenient = text_table(engine, values, name="lenient")
    assert sorted(lenient.extract(start, start + HOUR)["id"]) == [1, 2, 3]
    with pytest.raises(ValueError, match="max_offset"):
        SqlCrmSource("sqlite://", "crm", "modified_at", engine=engine, max_offset=15 * HOUR)
