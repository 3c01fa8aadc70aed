"""What a CRM table holds in its modification column that no sync window will ever extract.

`TimeReport` counts, per kind, the rows whose modification time is missing, unreadable, before
the first window or in the future, with a few samples each: the CRM's internal id and the raw
value of the modification column, never contact data. `SqlCrmSource.time_report` builds one;
`TimeTally` is the accumulator it feeds with parsed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

MISSING = "missing"  # NULL, or blank text
UNREADABLE = "unreadable"  # not a point in time (junk, an impossible date, a number, …)
BEFORE_FIRST_WINDOW = "before_first_window"
IN_FUTURE = "in_future"  # later than `now` plus the tolerance
KINDS: tuple[str, ...] = (MISSING, UNREADABLE, BEFORE_FIRST_WINDOW, IN_FUTURE)
_VALUE_CHARS = 80


@dataclass(frozen=True)
class TimeSample:
    """One row of a kind: its CRM internal id (None when the source has no id column) and the
    raw modification value as `repr` shows it (quotes show blanks and padding), cut to 80
    characters."""

    crm_id: str | None
    value: str


@dataclass(frozen=True)
class TimeReport:
    """Rows of the CRM table outside every window, by kind (see `KINDS`).

    `rows` is the table's row count, `scanned` how many modification values were parsed to
    produce this report, `thorough` whether rows whose text sorts inside the window span were
    parsed too (see `SqlCrmSource.time_report`).
    """

    first_start: datetime
    horizon: datetime
    rows: int
    scanned: int
    thorough: bool
    counts: dict[str, int]
    samples: dict[str, tuple[TimeSample, ...]]

    @property
    def problems(self) -> int:
        """Rows no window will extract."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return self.problems == 0


@dataclass
class TimeTally:
    """Accumulates classified rows into a `TimeReport`."""

    first_us: int
    horizon_us: int
    max_samples: int
    scanned: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    samples: dict[str, list[TimeSample]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def add(
        self,
        ids: Sequence[Any] | None,
        raw: Sequence[Any],
        us: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Classify rows with raw modification values `raw`, parsed into `us`/`valid`."""
        self.scanned += len(raw)
        values = np.empty(len(raw), dtype=object)
        values[:] = list(raw)
        blank = np.zeros(len(values), dtype=bool)
        unread = np.flatnonzero(~valid)
        if len(unread):
            blank[unread] = [
                v is None or (isinstance(v, str) and not v.strip()) for v in values[unread]
            ]
        self.count(MISSING, ~valid & blank, ids, values)
        self.count(UNREADABLE, ~valid & ~blank, ids, values)
        self.count(BEFORE_FIRST_WINDOW, valid & (us < self.first_us), ids, values)
        self.count(IN_FUTURE, valid & (us >= self.horizon_us), ids, values)

    def count(
        self,
        kind: str,
        mask: np.ndarray,
        ids: Sequence[Any] | None,
        values: np.ndarray,
        extra: int = 0,
    ) -> None:
        """Add the rows of `mask` (plus `extra` rows counted elsewhere) to `kind`."""
        hits = np.flatnonzero(mask)
        self.counts[kind] += len(hits) + extra
        room = self.max_samples - len(self.samples[kind])
        for i in hits[: max(room, 0)]:
            self.samples[kind].append(
                TimeSample(
                    crm_id=None if ids is None or ids[i] is None else str(ids[i]),
                    value="NULL" if values[i] is None else repr(values[i])[:_VALUE_CHARS],
                )
            )

    def report(
        self, first_start: datetime, horizon: datetime, rows: int, thorough: bool
    ) -> TimeReport:
        return TimeReport(
            first_start=first_start,
            horizon=horizon,
            rows=rows,
            scanned=self.scanned,
            thorough=thorough,
            counts=dict(self.counts),
            samples={k: tuple(v) for k, v in self.samples.items()},
        )
