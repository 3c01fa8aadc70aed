"""Rows no window will extract are reported, never silently skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.crm.time_report import (
    BEFORE_FIRST_WINDOW,
    IN_FUTURE,
    MISSING,
    UNREADABLE,
    TimeSample,
)

from .time_tables import text_table

FIRST = datetime(2024, 6, 1, 0, tzinfo=UTC)
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
VALUES: list[object] = [
    "2024-06-01 00:00:00.000000",  # 1: the first window's first instant: fine
    "2024-06-01T11:59:00Z",  # 2: fine
    None,  # 3: missing
    "",  # 4: missing (blank)
    "   ",  # 5: missing (blank)
    "junk",  # 6: unreadable
    "2024-02-30 10:00:00",  # 7: unreadable (sorts before the span)
    "2024-06-01 10:99:00",  # 8: unreadable, and sorts inside the span: only a thorough scan sees it
    "2024-05-31 23:59:59.999999",  # 9: before the first window
    "2024-06-01T01:59:59+02:00",  # 10: before the first window (23:59:59 UTC), sorts inside
    "2024-06-01 12:04:00",  # 11: within the tolerance: fine
    "2024-06-01 12:05:00",  # 12: in the future
    "2024-06-01T00:30:00-14:00",  # 13: 14:30 UTC: in the future, though it sorts early
    "2031-01-01",  # 14: in the future
    1717200000,  # 15: unreadable (seconds? the column stores it as text)
]


def source() -> SqlCrmSource:
    return text_table(sa.create_engine("sqlite://", poolclass=StaticPool), VALUES)


def ids(report_samples: tuple[TimeSample, ...]) -> list[int]:
    return sorted(int(s.crm_id or 0) for s in report_samples)


def test_every_row_outside_the_windows_is_counted_with_samples() -> None:
    report = source().time_report(FIRST, NOW, samples=10)
    assert report.counts == {MISSING: 3, UNREADABLE: 4, BEFORE_FIRST_WINDOW: 2, IN_FUTURE: 3}
    assert ids(report.samples[MISSING]) == [3, 4, 5]
    assert ids(report.samples[UNREADABLE]) == [6, 7, 8, 15]
    assert ids(report.samples[BEFORE_FIRST_WINDOW]) == [9, 10]
    assert ids(report.samples[IN_FUTURE]) == [12, 13, 14]
    assert report.problems == 12 and not report.ok and report.rows == len(VALUES)
    assert report.horizon == NOW + timedelta(minutes=5)
    values = {s.crm_id: s.value for kind in report.samples.values() for s in kind}
    assert (
        values["3"] == "NULL" and values["5"] == "'   '" and values["15"] == "'1717200000'"
    )  # TEXT affinity


def test_samples_are_capped_and_counts_are_not() -> None:
    report = source().time_report(FIRST, NOW, samples=1)
    assert report.counts[UNREADABLE] == 4 and len(report.samples[UNREADABLE]) == 1
    assert report.counts[MISSING] == 3 and len(report.samples[MISSING]) == 1


def test_a_quick_report_reads_only_what_sorts_outside_the_span() -> None:
    report = source().time_report(FIRST, NOW, thorough=False)
    # The junk inside the span's text ranges is not seen; everything else is.
    assert report.counts == {MISSING: 3, UNREADABLE: 3, BEFORE_FIRST_WINDOW: 2, IN_FUTURE: 3}
    full = source().time_report(FIRST, NOW)
    assert report.scanned < full.scanned


def test_a_clean_table_is_ok() -> None:
    clean = text_table(
        sa.create_engine("sqlite://", poolclass=StaticPool),
        ["2024-06-01 00:00:00", "2024-06-01T05:00:00+05:00", "2024-06-01 12:04:59.999999"],
    )
    report = clean.time_report(FIRST, NOW)
    assert report.ok and report.problems == 0 and report.scanned == 3


def test_without_an_internal_id_samples_carry_the_value_only() -> None:
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    text_table(engine, ["junk"])
    report = SqlCrmSource("sqlite://", "crm", "modified_at", engine=engine).time_report(FIRST, NOW)
    assert report.samples[UNREADABLE] == (TimeSample(crm_id=None, value="'junk'"),)
