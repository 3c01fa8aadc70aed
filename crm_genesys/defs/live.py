"""The live path in Dagster: the `sync_live_changes` sensor and the small `live_sync_job` runs it
launches (the logic is `sync.live`; docs/LIVE.md).

At each tick (the daemon's sensor loop, every 5 s; `CRM_GENESYS_LIVE_INTERVAL_SECONDS` is
the sensor's minimum interval) the sensor counts the CRM rows modified since its
cursor (or, with `CRM_GENESYS_LIVE_NOTIFY_CHANNEL`, first asks a PostgreSQL CRM's notifications
whether anything changed). When some were, it launches a run of `live_sync_job` for the range
`[cursor - overlap, now)` (cut back to `CRM_GENESYS_LIVE_MAX_ROWS` new rows under a flood) and
moves its cursor to the range's end. While `CRM_GENESYS_LIVE_MAX_RUNS` live runs are queued or
in flight it launches nothing: the next range simply grows. Live runs carry the run priority
`dagster/priority` = 10 (the queue and the pools serve them first) and the tag
`crm_genesys/lane: live`; their sink is of the live lane, which goes first on the rate budget.
Their step is in the pool `genesys_live` (one slot): one live sync at a time, while the next
live run's process starts (the instance's `op_granularity_run_buffer`).

What the UI shows: the sensor's cursor (`{"upto": ...}`) and, per tick, its lag (how far the
cursor is behind now) in the tick's skip reason or log; each live run's materialization of
`genesys_live_sync` carries its accounting and the change-to-Genesys latency (p50, p95, max in
seconds), which the asset's plots show over time.
"""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from crm_genesys import settings
from crm_genesys.crm.notify import listener
from crm_genesys.defs import checks
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.defs.stopping import run_async
from crm_genesys.sync.concurrency import LIVE
from crm_genesys.sync.live import LiveCursor, extract_range, next_range, sync_live

GROUP = "crm_to_genesys"
LANE_TAG = "crm_genesys/lane"
FROM_TAG = "crm_genesys/live_from"
TO_TAG = "crm_genesys/live_to"
JOB_TAGS = {"dagster/priority": str(LIVE.priority), LANE_TAG: LIVE.name}
# The pool of the live step: one live step syncs at a time (the instance's `default_limit: 1`),
# while the next live run's process starts; two live sinks would wait on each other's keys.
LIVE_POOL = "genesys_live"
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class LiveRangeConfig(dg.Config):
    """The CRM rows a live run syncs: modified in [start, end) (ISO-8601 instants)."""

    start: str
    end: str


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dg.asset(group_name=GROUP, kinds={"genesys"}, pool=LIVE_POOL)
def genesys_live_sync(
    context: dg.AssetExecutionContext,
    config: LiveRangeConfig,
    crm: CrmResource,
    genesys: GenesysResource,
    state: SyncStateResource,
) -> dg.MaterializeResult:
    """The CRM rows modified in a short range of time, synced to Genesys by the window's path
    (normalize, diff, sink) ahead of their window, which then finds them unchanged. What a live
    run cannot send now (a key another sink holds, a failure, a breaker) its window sends."""
    target = genesys.resolve()
    start, end = _instant(config.start), _instant(config.end)
    mapping = crm.mapping()
    began = time.perf_counter()
    with crm.source(mapping) as source:
        frame = extract_range(source, mapping, start, end)
    extract_s = time.perf_counter() - began
    with state.store() as store:
        result = run_async(
            sync_live(
                frame,
                mapping,
                store,
                target,
                run_id=context.run.run_id,
                max_quarantine_rate=checks.max_quarantine_rate(),
                min_quarantine_rows=checks.min_quarantine_rows(),
                max_clear_share=float(settings.get("CRM_GENESYS_MAX_CLEAR_SHARE")),
                min_clear_contacts=int(settings.get("CRM_GENESYS_MASS_CLEAR_MIN_CONTACTS")),
            )
        )
    if result.held:
        context.log.warning(f"nothing sent: {result.held}")
    elif result.report.failed:
        context.log.warning(
            f"{result.report.failed} change(s) could not be sent now "
            f"({', '.join(sorted(result.report.failure_reasons))}); their window will send them"
        )
    metadata: dict[str, object] = {
        **result.metadata(),
        "range_from": start.isoformat(),
        "range_to": end.isoformat(),
        "extract_s": round(extract_s, 3),
        "target": target.describe(),
    }
    if result.held:
        metadata["held_reason"] = result.held
    return dg.MaterializeResult(metadata=metadata)  # type: ignore[arg-type]


live_sync_job = dg.define_asset_job(
    "live_sync_job",
    selection=[genesys_live_sync],
    executor_def=dg.in_process_executor,
    tags=JOB_TAGS,
    description="Sync the CRM rows modified in a short range (launched by the live sensor).",
)


def live_runs_in_flight(instance: dg.DagsterInstance) -> int:
    """Runs of `live_sync_job` queued or in progress."""
    return instance.get_runs_count(dg.RunsFilter(job_name=live_sync_job.name, statuses=_IN_FLIGHT))


def _status() -> dg.DefaultSensorStatus:
    if settings.get("CRM_GENESYS_LIVE") == "on":
        return dg.DefaultSensorStatus.RUNNING
    return dg.DefaultSensorStatus.STOPPED


@dg.sensor(
    job=live_sync_job,
    minimum_interval_seconds=int(settings.get("CRM_GENESYS_LIVE_INTERVAL_SECONDS")),
    default_status=_status(),
)
def sync_live_changes(context: dg.SensorEvaluationContext, crm: CrmResource):
    """Launches a live run for the CRM rows modified since its cursor (see the module
    docstring); its cursor is how far the CRM has been read."""
    now = datetime.now(UTC)
    cursor = LiveCursor.load(context.cursor)
    if cursor is None:
        context.update_cursor(LiveCursor(now).dump())
        return dg.SkipReason(
            f"the live path starts at {now:%Y-%m-%d %H:%M:%S} UTC; earlier rows are the windows'"
        )
    lag = (now - cursor.upto).total_seconds()
    busy = live_runs_in_flight(context.instance)
    limit = int(settings.get("CRM_GENESYS_LIVE_MAX_RUNS"))
    if busy >= limit:
        return dg.SkipReason(
            f"{busy} live run(s) queued or in flight (at most {limit}): the next range grows; "
            f"lag {lag:.1f}s"
        )
    channel = str(settings.get("CRM_GENESYS_LIVE_NOTIFY_CHANNEL"))
    if channel and not listener(crm.database_url, channel).changed():
        context.update_cursor(LiveCursor(now).dump())
        return dg.SkipReason(f"no notification on {channel}; cursor at now")
    mapping = crm.mapping()
    with crm.source(mapping) as source:
        found = next_range(
            source.count,
            cursor.upto,
            now,
            overlap=timedelta(seconds=int(settings.get("CRM_GENESYS_LIVE_OVERLAP_SECONDS"))),
            max_rows=int(settings.get("CRM_GENESYS_LIVE_MAX_ROWS")),
        )
    if found is None:
        context.update_cursor(LiveCursor(now).dump())
        return dg.SkipReason(f"no CRM row modified since {cursor.upto:%H:%M:%S.%f}; lag 0s")
    context.update_cursor(LiveCursor(found.end).dump())
    context.log.info(
        f"live range [{found.start.isoformat()}, {found.end.isoformat()}): {found.new_rows} "
        f"row(s) modified since the cursor; lag {lag:.1f}s"
    )
    return dg.RunRequest(
        run_key=f"live:{found.end.isoformat()}",
        run_config={
            "ops": {
                genesys_live_sync.key.to_python_identifier(): {
                    "config": {"start": found.start.isoformat(), "end": found.end.isoformat()}
                }
            }
        },
        tags={FROM_TAG: found.start.isoformat(), TO_TAG: found.end.isoformat()},
    )
