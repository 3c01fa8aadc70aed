"""Sync windows: one partition per window of CRM modification time.

The window length is the `CRM_GENESYS_WINDOW` setting (`15min`, `hourly`, `daily`) and the first
window `CRM_GENESYS_PARTITION_START` (`YYYY-MM-DD-HH:MM`, UTC). Only complete windows are
partitions, so a window is never synced while rows can still land in it (late commits are caught
by the extract's lookback). A key names a window's start only: the sync state is bound to the
window length (`sync.window.bind_window_length`), so changing it never reinterprets old keys.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from crm_genesys import settings
from crm_genesys.settings import PARTITION_FORMAT

# name -> (cron schedule of window starts, window length)
WINDOWS: dict[str, tuple[str, timedelta]] = {
    "15min": ("*/15 * * * *", timedelta(minutes=15)),
    "hourly": ("0 * * * *", timedelta(hours=1)),
    "daily": ("0 0 * * *", timedelta(days=1)),
}


class WindowKeyError(ValueError):
    """A window key that names no partition: malformed, before the first, or still open."""


def window_name() -> str:
    return str(settings.get("CRM_GENESYS_WINDOW"))


def window_length(name: str | None = None) -> timedelta:
    return WINDOWS[name or window_name()][1]


def build_sync_windows(name: str | None = None, start: str | None = None):
    """The partitions definition of `name` windows from `start` (the settings by default)."""
    cron, _ = WINDOWS[name or window_name()]
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron,
        start=start or str(settings.get("CRM_GENESYS_PARTITION_START")),
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


def first_window_start() -> datetime:
    """When the first window starts (rows modified before it belong to no window)."""
    first = sync_windows.get_first_partition_key()
    if first is None:
        return datetime.strptime(str(settings.get("CRM_GENESYS_PARTITION_START")),
                                 PARTITION_FORMAT).replace(tzinfo=UTC)  # fmt: skip
    return window_bounds(first)[0]


def check_window_key(key: str, now: datetime | None = None) -> str:
    """`key` when it names a complete window; else `WindowKeyError` saying what is wrong."""
    try:
        start = datetime.strptime(key, PARTITION_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise WindowKeyError(
            f"{key!r} is not a window key: expected YYYY-MM-DD-HH:MM in UTC, e.g. "
            f"{partition_key_for(datetime.now(UTC) - window_length())}"
        ) from None
    first = first_window_start()
    if start < first:
        raise WindowKeyError(
            f"window {key} starts before the first window ({first:%Y-%m-%d-%H:%M}, "
            "CRM_GENESYS_PARTITION_START); rows modified before it are synced by the full sync"
        )
    length = window_length()
    if partition_key_for(start) != key:
        raise WindowKeyError(
            f"{key!r} is not the start of a window ({window_name()} windows, "
            f"CRM_GENESYS_WINDOW); the window holding it is {partition_key_for(start)}"
        )
    moment = now or datetime.now(UTC)
    if start + length > moment:
        raise WindowKeyError(
            f"window {key} is still open (it ends at {start + length:%Y-%m-%d %H:%M} UTC); "
            "a window is synced once it has closed"
        )
    return key


def schedule_offset_minutes(name: str | None = None) -> int:
    """Minutes after a window closes that its scheduled run starts: late commits land first.

    Five minutes for hourly and daily windows, two for 15-minute windows (a third of a window's
    delay would be too long a wait for a quarter-hour)."""
    return 2 if (name or window_name()) == "15min" else 5
