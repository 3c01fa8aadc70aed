"""Sync windows: one partition per window of CRM modification time.

The window length is set by `CRM_GENESYS_WINDOW` (`15min`, `hourly`, `daily`; hourly by default) and
the first window by `CRM_GENESYS_PARTITION_START` (`YYYY-MM-DD-HH:MM`, UTC). Only complete windows
are partitions, so a window is never synced while rows can still land in it (late commits are caught
by the extract's lookback).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import dagster as dg

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_START = "2026-01-01-00:00"

# name -> (cron schedule, window length)
WINDOWS: dict[str, tuple[str, timedelta]] = {
    "15min": ("*/15 * * * *", timedelta(minutes=15)),
    "hourly": ("0 * * * *", timedelta(hours=1)),
    "daily": ("0 0 * * *", timedelta(days=1)),
}


def window_name() -> str:
    name = os.environ.get("CRM_GENESYS_WINDOW", "hourly")
    if name not in WINDOWS:
        raise ValueError(f"CRM_GENESYS_WINDOW={name!r}: expected one of {sorted(WINDOWS)}")
    return name


def window_length() -> timedelta:
    return WINDOWS[window_name()][1]


def build_sync_windows() -> dg.TimeWindowPartitionsDefinition:
    cron, _ = WINDOWS[window_name()]
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron,
        start=os.environ.get("CRM_GENESYS_PARTITION_START", DEFAULT_START),
        fmt=PARTITION_FORMAT,
        timezone="UTC",
    )


sync_windows = build_sync_windows()


def window_bounds(partition_key: str) -> tuple[datetime, datetime]:
    """The half-open [start, end) of a window, as aware UTC datetimes."""
    window = sync_windows.time_window_for_partition_key(partition_key)
    return window.start, window.end


def partition_key_for(moment: datetime) -> str:
    """The key of the window containing `moment` (aware, or naive meaning UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return sync_windows.get_partition_key_for_timestamp(moment.timestamp())
