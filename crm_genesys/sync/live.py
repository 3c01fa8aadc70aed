"""The live path: the rows the CRM modified in a short range of time, through the same path as
a window (normalize → diff → sink), so that a change reaches Genesys within seconds.

- **Ranges.** A cursor (`LiveCursor`) says up to which instant the CRM's modification column
  has been handed to live runs. `next_range` turns "rows modified since the cursor" into the
  range a run syncs: it starts `overlap` before the cursor (late commits, and a CRM clock a
  little behind ours: re-read rows are unchanged for the diff and cost no request) and ends
  now, or earlier when more than `max_rows` rows were modified since the cursor (a flood):
  runs stay bounded and the cursor catches up range by range.
- **The windows stay the watermark.** A live run writes the sync state exactly as a window
  does, so the window that later covers the same rows finds them unchanged and sends nothing
  for them; its accounting holds as always. A live run's own accounting is exact too
  (`sync.accounting`), but nothing depends on it: what a live run could not send (a key another
  sink holds, a retryable failure, a breaker that would stop the window) is left to the window.
- **Guards.** A range whose quarantine share or whose clears would stop a window sends nothing
  (`LiveResult.held`): the window will stop at its blocking check, where a person decides.
- **Latency.** Per change sent, the seconds from its modification instant (the CRM's stamp,
  read by the one parser of CRM times) to the moment the sink had recorded it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from crm_genesys.contacts.diff import ChangeSet, diff
from crm_genesys.contacts.keys import crm_versions
from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.normalize import NormalizationResult, normalize
from crm_genesys.contacts.quality import breaker_counted, quarantine_blocks
from crm_genesys.contacts.text import clean_text
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.genesys.target import GenesysTarget
from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.accounting import WindowAccount, account
from crm_genesys.sync.breakers import judge_clears
from crm_genesys.sync.concurrency import LIVE
from crm_genesys.sync.ownership import Ownership
from crm_genesys.sync.sink import SyncReport
from crm_genesys.sync.window import sync_window

# What live runs write in the `window` column of state rows, intents and dead letters.
LIVE_LABEL = "live"
# The finest step a flood's range is cut to.
_RESOLUTION = timedelta(milliseconds=1)


@dataclass(frozen=True)
class LiveCursor:
    """Rows modified before `upto` have been handed to live runs (or left to the windows)."""

    upto: datetime

    def dump(self) -> str:
        return json.dumps({"upto": self.upto.isoformat()})

    @classmethod
    def load(cls, text: str | None) -> LiveCursor | None:
        """The cursor `dump` wrote; None for no cursor or one that cannot be read (then the
        live path starts again from now: the windows cover what lies before)."""
        if not text:
            return None
        try:
            upto = datetime.fromisoformat(json.loads(text)["upto"])
        except (ValueError, KeyError, TypeError):
            return None
        return cls(upto if upto.tzinfo else upto.replace(tzinfo=UTC))


@dataclass(frozen=True)
class LiveRange:
    """What one live run syncs: rows modified in [`start`, `end`); `new_rows` of them were
    modified since the cursor (`start + overlap`), the rest are the overlap re-read."""

    start: datetime
    end: datetime
    new_rows: int


def next_range(
    count: Callable[[datetime, datetime], int],
    upto: datetime,
    now: datetime,
    *,
    overlap: timedelta,
    max_rows: int,
) -> LiveRange | None:
    """The next range to sync after cursor `upto`, or None when the CRM modified nothing in
    [upto, now). `count(start, end)` counts the CRM rows modified in [start, end). When more
    than `max_rows` were, the end is cut back (bisected on time) to hold at most `max_rows`
    of them; rows of one instant are never split (a first instant holding more goes whole)."""
    if now <= upto:
        return None
    rows = count(upto, now)
    if rows == 0:
        return None
    end = now
    if rows > max_rows:
        low, high = upto, now  # count(upto, high) > max_rows; find the latest end within
        while high - low > _RESOLUTION:
            middle = low + (high - low) / 2
            if count(upto, middle) > max_rows:
                high = middle
            else:
                low = middle
        end = low
        rows = count(upto, end)
        if rows == 0:
            # The first instant alone holds more than `max_rows`: it goes whole.
            end = _first_end_with_rows(count, upto, high)
            rows = count(upto, end)
    return LiveRange(upto - overlap, end, rows)


def _first_end_with_rows(
    count: Callable[[datetime, datetime], int], upto: datetime, high: datetime
) -> datetime:
    """The earliest end (to `_RESOLUTION`) after `upto` whose range holds a row; `high` does."""
    low = upto
    while high - low > _RESOLUTION:
        middle = low + (high - low) / 2
        if count(upto, middle) > 0:
            high = middle
        else:
            low = middle
    return high


@dataclass
class LiveResult:
    """One live run: its accounting (`WindowAccount`, exact like a window's), the sink's
    report, the latency of each change sent (seconds), why nothing was sent if so, and the
    seconds spent preparing (normalize, diff, guards) and sending (the sink)."""

    account: WindowAccount
    report: SyncReport
    latencies: list[float] = field(default_factory=list)
    held: str = ""
    prepare_s: float = 0.0
    send_s: float = 0.0

    def metadata(self) -> dict[str, float | int]:
        """Numbers for the run's materialization (plotted over time in the UI)."""
        data: dict[str, float | int] = {
            k: v for k, v in self.account.counts().items() if isinstance(v, int)
        }
        data["changes_sent"] = len(self.latencies)
        data["requests"] = self.report.requests
        data["held"] = int(bool(self.held))
        for name, q in (("p50", 0.5), ("p95", 0.95), ("max", 1.0)):
            data[f"latency_{name}_s"] = round(quantile(self.latencies, q), 3)
        data["prepare_s"] = round(self.prepare_s, 3)
        data["send_s"] = round(self.send_s, 3)
        return data


def quantile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (nearest rank) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def extract_range(
    source: SqlCrmSource, mapping: Mapping, start: datetime, end: datetime
) -> pd.DataFrame:
    """The CRM rows modified in [start, end), as a window's extract reads them."""
    return source.extract(start, end, mapping.source_columns())


def hold_reason(
    normalized: NormalizationResult,
    changes: ChangeSet,
    previous: dict[str, frozenset[str] | None],
    mapping: Mapping,
    *,
    max_quarantine_rate: float,
    min_quarantine_rows: int,
    max_clear_share: float,
    min_clear_contacts: int,
    synced: Collection[str] | None = None,
) -> str:
    """Why a range must send nothing ('' when it may): what would stop its window (`synced`:
    the quarantined keys the sync holds contacts of, None when it holds none)."""
    rows = normalized.report.rows_in
    quarantined = len(normalized.quarantine)
    counted = breaker_counted(normalized.quarantine, synced)
    if quarantine_blocks(counted, rows, max_quarantine_rate, min_quarantine_rows):
        return (
            f"{quarantined} of {rows} rows quarantined, above CRM_GENESYS_MAX_QUARANTINE_RATE; "
            "left to the window's blocking check"
        )
    updates = changes.changes[changes.changes["op"] == "update"]
    verdict = judge_clears(
        updates,
        previous,
        Ownership.from_mapping(mapping),
        max_share=max_clear_share,
        min_contacts=min_clear_contacts,
        config_key="ops.contact_changes.config.confirm_clears",
    )
    if not verdict.allowed:
        return "mass clear: left to the window's blocking check (" + verdict.refusal() + ")"
    return ""


async def sync_live(
    frame: pd.DataFrame,
    mapping: Mapping,
    store: SyncStateStore,
    target: GenesysTarget,
    *,
    run_id: str,
    max_quarantine_rate: float,
    min_quarantine_rows: int,
    max_clear_share: float,
    min_clear_contacts: int,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> LiveResult:
    """Normalize, diff and sink the CRM rows `frame` of a live range (see the module docstring).
    Raises what a window's sync raises (a refusal no retry cures, a store error)."""
    began = time.perf_counter()
    normalized = normalize(frame, mapping)
    contacts = normalized.contacts
    changes = diff(contacts, store.snapshot(contacts["business_key"].tolist()))
    updates = changes.changes[changes.changes["op"] == "update"]
    previous = store.owned_fields(updates["business_key"].tolist()) if len(updates) else {}
    synced = store.synced_among(normalized.quarantine["business_key"].dropna().astype(str))
    held = hold_reason(
        normalized,
        changes,
        previous,
        mapping,
        synced=synced,
        max_quarantine_rate=max_quarantine_rate,
        min_quarantine_rows=min_quarantine_rows,
        max_clear_share=max_clear_share,
        min_clear_contacts=min_clear_contacts,
    )
    prepared = time.perf_counter()
    if held:
        report = SyncReport(failed=len(changes.changes))
        return LiveResult(
            account(LIVE_LABEL, normalized, changes, report),
            report,
            held=held,
            prepare_s=prepared - began,
        )
    report = await sync_window(
        changes, mapping, store, LIVE_LABEL, target, lane=LIVE, run_id=run_id
    )
    finished = now()
    return LiveResult(
        account(LIVE_LABEL, normalized, changes, report),
        report,
        latencies=latencies(frame, mapping, changes, report, finished),
        prepare_s=prepared - began,
        send_s=time.perf_counter() - prepared,
    )


def latencies(
    frame: pd.DataFrame,
    mapping: Mapping,
    changes: ChangeSet,
    report: SyncReport,
    finished: datetime,
) -> list[float]:
    """Seconds from each sent change's modification instant to `finished`."""
    sent = changes.changes
    if sent.empty:
        return []
    failed = set(report.failed_keys)
    sent = sent[~sent["business_key"].isin(failed)]
    src = mapping.source
    ids = clean_text(frame[src.internal_id_column]).fillna("").astype(str)
    stamps = crm_versions(frame[src.modified_column], src.zone, src.max_offset)
    # One instant per CRM record: its newest version in the range.
    modified = pd.Series(stamps.to_numpy(dtype="float64", na_value=np.nan), index=ids.to_numpy())
    modified = modified.groupby(level=0).max()
    at = modified.reindex(sent["crm_id"].astype(str).to_numpy()).to_numpy(dtype="float64")
    at = at[~np.isnan(at)]
    end_us = finished.timestamp() * 1e6
    return [max(0.0, (end_us - us) / 1e6) for us in at.tolist()]
