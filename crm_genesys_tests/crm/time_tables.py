"""Tables of modification times for the source tests: the same instants in many representations.

`render` (from the parser tests) writes an instant as one of many texts; `said` is the instant a
text of that style says (styles without a fraction drop the microseconds, minute styles the
seconds too), which is what a window must be judged by.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from hypothesis import strategies as st

from crm_genesys.crm.instants import from_micros, to_micros, window_floor
from crm_genesys.crm.source import SqlCrmSource

from .test_instants import render

SECOND, MINUTE = 1_000_000, 60_000_000
# Styles that keep every microsecond of an instant (see `render`).
EXACT_STYLES = (0, 1, 4, 7, 8, 9, 10)
T0 = datetime(2024, 6, 1, 10)
# Instants within three days of T0, sometimes on whole seconds or minutes.
_RAW = st.integers(to_micros(T0 - timedelta(days=3)), to_micros(T0 + timedelta(days=3)))
NEAR_T0 = st.one_of(_RAW, _RAW.map(lambda u: u - u % SECOND), _RAW.map(lambda u: u - u % MINUTE))
OFFSET = st.one_of(st.integers(-840, 840), st.sampled_from([-840, -300, 0, 60, 120, 330, 840]))


def said(instant: int, style: int) -> int:
    """The instant the text `render(instant, style, …)` says."""
    if style in (2, 3):
        return instant - instant % SECOND
    if style in (5, 6, 11):
        return instant - instant % MINUTE
    return instant


def text_table(
    engine: sa.Engine, values: Sequence[object], declared: str = "TEXT", name: str = "crm"
) -> SqlCrmSource:
    """A table `name` (id, modified_at, payload) holding `values` in order, ids from 1, with an
    index on modified_at; the source reads it through `engine`."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
        conn.exec_driver_sql(
            f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, modified_at {declared}, payload TEXT)'
        )
        conn.exec_driver_sql(f'CREATE INDEX "ix_{name}_modified" ON "{name}" (modified_at)')
        if values:
            conn.execute(
                sa.text(f'INSERT INTO "{name}" (id, modified_at, payload) VALUES (:i, :m, :p)'),
                [{"i": i, "m": v, "p": f"row {i}"} for i, v in enumerate(values, start=1)],
            )
    return SqlCrmSource("sqlite://", name, "modified_at", None, "id", engine=engine)


def windows_around(instants: Sequence[int], window: timedelta) -> list[tuple[datetime, datetime]]:
    """The aligned windows holding `instants`, and their neighbours."""
    starts: set[datetime] = set()
    for us in instants:
        start = window_floor(from_micros(us), window)
        starts.update({start - window, start, start + window})
    return [(s, s + window) for s in sorted(starts)]


def render_all(rows: Sequence[tuple[int, int, int]]) -> list[str]:
    return [render(instant, style, offset) for instant, style, offset in rows]
