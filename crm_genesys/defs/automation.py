"""The job, its schedule, and the sensor that re-runs failed windows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

from crm_genesys import settings
from crm_genesys.defs.assets import contact_changes, crm_contacts, genesys_sync, normalized_contacts
from crm_genesys.defs.partitions import (
    partition_key_for,
    schedule_offset_minutes,
    sync_windows,
    window_length,
    window_name,
)

sync_job = dg.define_asset_job(
    "sync_job",
    selection=[crm_contacts, normalized_contacts, contact_changes, genesys_sync],
    description="Sync one CRM window into Genesys Cloud External Contacts.",
)


def schedule_cron(name: str) -> str:
    """Cron of the scheduled runs: each window's close plus `schedule_offset_minutes`."""
    offset = schedule_offset_minutes(name)
    return {
        "15min": f"{offset}-59/15 * * * *",
        "hourly": f"{offset} * * * *",
        "daily": f"{offset} 0 * * *",
    }[name]


@dg.schedule(
    job=sync_job,
    cron_schedule=schedule_cron(window_name()),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def sync_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Each window is synced a few minutes after it closes, when late commits have landed."""
    closed_at = context.scheduled_execution_time - timedelta(minutes=schedule_offset_minutes())
    key = partition_key_for(closed_at - window_length())
    return dg.RunRequest(partition_key=key, run_key=f"scheduled:{key}")


# A window is tried at most this many times in all (its first run included).
MAX_ATTEMPTS = int(settings.get("CRM_GENESYS_MAX_WINDOW_ATTEMPTS"))
# How many of the most recent windows the sensor looks at.
LOOKBACK_WINDOWS = int(settings.get("CRM_GENESYS_RETRY_LOOKBACK_WINDOWS"))


def failed_windows(instance: dg.DagsterInstance, keys: Sequence[str]) -> list[str]:
    """The windows among `keys` whose last `genesys_sync` attempt failed."""
    status = instance.get_status_by_partition(genesys_sync.key, keys, sync_windows) or {}
    return [key for key in keys if status.get(key) == dg.AssetPartitionStatus.FAILED]


def attempts(instance: dg.DagsterInstance, key: str) -> int:
    runs = instance.get_run_records(
        dg.RunsFilter(job_name=sync_job.name, tags={"dagster/partition": key}),
        limit=MAX_ATTEMPTS + 1,
    )
    return len(runs)


@dg.sensor(
    job=sync_job,
    minimum_interval_seconds=int(timedelta(minutes=10).total_seconds()),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def retry_failed_windows(context: dg.SensorEvaluationContext):
    """Re-runs recent windows whose sync failed, at most CRM_GENESYS_MAX_WINDOW_ATTEMPTS times each.

    A re-run sends only what is still missing: the sync state holds what earlier attempts did.
    """
    keys = sync_windows.get_partition_keys()[-LOOKBACK_WINDOWS:]
    for key in failed_windows(context.instance, keys):
        tried = attempts(context.instance, key)
        if tried >= MAX_ATTEMPTS:
            context.log.warning(f"window {key} failed {tried} times; leaving it for a person")
            continue
        yield dg.RunRequest(partition_key=key, run_key=f"retry:{key}:{tried}")
