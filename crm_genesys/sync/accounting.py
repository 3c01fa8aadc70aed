"""Window accounting: where every extracted CRM row of a window ended up (the watermark).

`extracted = created + updated + deleted + unchanged + stale + quarantined + dead_lettered`.
A window's partition materializes only when that identity holds and no change is still failing
retryably; this module is the one place that computes it, from what the three stages report
(normalization, diff, sink), so the Dagster asset, the demo table and the tests read one answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from crm_genesys.contacts.diff import ChangeSet
from crm_genesys.contacts.normalize import NormalizationResult
from crm_genesys.sync.sink import SyncReport

# Where every extracted row of a window ends up; their sum is the watermark condition.
BUCKETS = ("created", "updated", "deleted", "unchanged", "stale", "quarantined", "dead_lettered")


@dataclass
class WindowAccount:
    """What happened to every CRM row of one window. `accounted` is the watermark condition.

    `failed` counts changes still failing retryably (not a bucket: the window is not done);
    `writes` the changes whose effect now holds in Genesys; `sink` the sink's own figures.
    """

    window: str
    extracted: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    stale: int = 0
    quarantined: int = 0
    dead_lettered: int = 0
    failed: int = 0
    writes: int = 0
    sink: dict[str, float | int] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        return self.extracted == sum(getattr(self, bucket) for bucket in BUCKETS)

    @property
    def done(self) -> bool:
        """The window may materialize: every row accounted for, nothing left failing."""
        return self.accounted and not self.failed

    def counts(self) -> dict[str, int]:
        data = asdict(self)
        data.pop("sink")
        data.pop("window")
        return data


def account(
    window: str, normalized: NormalizationResult, changes: ChangeSet, report: SyncReport
) -> WindowAccount:
    """Account for every extracted row of a window from the three stages' results.

    `extracted` is what normalization was given (`report.rows_in`): every row of the extract,
    tombstones and unreadable rows included. Rows whose change failed retryably are not
    accounted: the window is not done until a re-run sends them, which keeps the watermark honest.
    """
    return WindowAccount(
        window=window,
        extracted=normalized.report.rows_in,
        created=report.created,
        updated=report.updated,
        deleted=report.deleted,
        unchanged=changes.unchanged,
        stale=changes.stale + normalized.superseded + report.stale_skipped,
        quarantined=len(normalized.quarantine),
        dead_lettered=report.dead_lettered,
        failed=report.failed,
        writes=report.created + report.updated + report.deleted,
        sink=report.as_metadata(),
    )
