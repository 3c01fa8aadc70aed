"""The job, its schedule, and the sensor that re-runs failed windows with a growing delay.

The retry sensor reads run storage, never the list of every partition key: each tick it reads
the runs that failed since its cursor (backfills and runs launched by hand included) and the run
history of the windows it is still watching. From a window's history since its last success it
counts the FAILED attempts (a run a person canceled is not one) and decides:

- a run of the window is in progress: nothing (it is never requested twice);
- fewer failed attempts than `CRM_GENESYS_MAX_WINDOW_ATTEMPTS`: re-run it once the delay since
  the last failure has passed, `CRM_GENESYS_RETRY_BASE_DELAY_MINUTES` doubled after each failed
  attempt, at most `CRM_GENESYS_RETRY_MAX_DELAY_MINUTES`;
- as many failed attempts as allowed: no more retries. The sensor says so where a person looks:
  a `crm_genesys/attention` tag on the last failed run, an observation on the window's
  `genesys_sync` partition, and a line in the tick's log. A run launched by hand that succeeds
  clears the window; one that fails again is reported again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from crm_genesys import settings
from crm_genesys.defs.assets import contact_changes, crm_contacts, genesys_sync, normalized_contacts
from crm_genesys.defs.partitions import (
    partition_key_for,
    schedule_offset_minutes,
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


PARTITION_TAG = "dagster/partition"
# Set on the last failed run of a window the sensor no longer retries: why, in one sentence.
ATTENTION_TAG = "crm_genesys/attention"
# Set on the runs the sensor requests: which attempt of the window it is.
ATTEMPT_TAG = "crm_genesys/attempt"
# Jobs whose runs sync windows: ours, and the one the UI uses for asset backfills.
SYNC_JOBS = frozenset({sync_job.name, "__ASSET_JOB"})
# Failed runs read per tick; a larger backlog is read over the next ticks.
FAILED_RUNS_PER_TICK = 500
# Runs whose update time is this close to the cursor are read again (equal timestamps at a page
# boundary); the cursor remembers their ids so that none is taken twice.
OVERLAP_S = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failed window is tried again."""

    max_attempts: int
    base_delay: timedelta
    max_delay: timedelta

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        return cls(
            max_attempts=int(settings.get("CRM_GENESYS_MAX_WINDOW_ATTEMPTS")),
            base_delay=timedelta(minutes=int(settings.get("CRM_GENESYS_RETRY_BASE_DELAY_MINUTES"))),
            max_delay=timedelta(minutes=int(settings.get("CRM_GENESYS_RETRY_MAX_DELAY_MINUTES"))),
        )

    def delay(self, failures: int) -> timedelta:
        """The wait after the `failures`-th failed attempt: base, doubled each time, capped."""
        if failures <= 0:
            return timedelta(0)
        grown = self.base_delay * (2 ** min(failures - 1, 32))
        return min(grown, self.max_delay)


@dataclass(frozen=True)
class WindowHistory:
    """A window's runs since its last success, as the retry decision needs them."""

    window: str
    failures: int = 0
    last_failure_at: float | None = None
    last_failed_run_id: str | None = None
    in_progress: bool = False
    succeeded: bool = False
    # The last failed run already carries the attention tag: a person was told.
    attention_noted: bool = False


Action = Literal["retry", "wait", "give_up", "busy", "done"]


@dataclass(frozen=True)
class RetryDecision:
    """What the sensor does about one window now, and why (in words a person reads)."""

    window: str
    action: Action
    failures: int
    reason: str
    due_at: float | None = None
    last_failed_run_id: str | None = None
    already_reported: bool = False

    @property
    def run_key(self) -> str:
        return f"retry:{self.window}:{self.failures}"


def decide(history: WindowHistory, policy: RetryPolicy, now: float) -> RetryDecision:
    """The retry decision for one window (pure: run history, policy and the time)."""
    w, n = history.window, history.failures
    if history.in_progress:
        return RetryDecision(w, "busy", n, f"window {w} has a run in progress")
    if history.succeeded or n == 0 or history.last_failure_at is None:
        return RetryDecision(w, "done", n, f"window {w} has no failed attempt since its success")
    if n >= policy.max_attempts:
        return RetryDecision(
            w,
            "give_up",
            n,
            f"window {w} failed {n} times (CRM_GENESYS_MAX_WINDOW_ATTEMPTS={policy.max_attempts}):"
            " no more automatic retries. Read the last run's failure, fix the cause, then "
            "re-run the window (Launchpad, or `crm-genesys sync --window ...`).",
            last_failed_run_id=history.last_failed_run_id,
            already_reported=history.attention_noted,
        )
    due = history.last_failure_at + policy.delay(n).total_seconds()
    if now < due:
        return RetryDecision(
            w, "wait", n, f"window {w}: attempt {n + 1} due at {_iso(due)}", due_at=due
        )
    return RetryDecision(
        w,
        "retry",
        n,
        f"window {w}: attempt {n + 1} of {policy.max_attempts} after {n} failed",
        due_at=due,
        last_failed_run_id=history.last_failed_run_id,
    )


def window_history(instance: dg.DagsterInstance, window: str, policy: RetryPolicy) -> WindowHistory:
    """The window's sync runs since its last success, newest first, from run storage."""
    records = instance.get_run_records(
        dg.RunsFilter(tags={PARTITION_TAG: window}), limit=2 * policy.max_attempts + 10
    )
    failures, last_at, last_id, busy, noted = 0, None, None, False, False
    for record in records:
        run = record.dagster_run
        if run.job_name not in SYNC_JOBS:
            continue
        if run.status not in FINISHED_STATUSES:
            busy = True
            continue
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return WindowHistory(window, failures, last_at, last_id, busy, failures == 0, noted)
        if run.status == dg.DagsterRunStatus.FAILURE:
            failures += 1
            if last_at is None:
                ended = record.end_time or record.update_timestamp.timestamp()
                last_at, last_id = float(ended), run.run_id
                noted = ATTENTION_TAG in run.tags
    return WindowHistory(window, failures, last_at, last_id, busy, False, noted)


@dataclass
class RetryCursor:
    """The sensor's cursor: how far failed runs were read, and the windows still watched."""

    since: float | None = None
    seen: list[str] = field(default_factory=list)
    watching: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: str | None) -> RetryCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(data.get("since"), list(data.get("seen", [])), list(data.get("watching", [])))

    def dump(self) -> str:
        return json.dumps(
            {"since": self.since, "seen": sorted(self.seen), "watching": sorted(self.watching)}
        )


def newly_failed_windows(instance: dg.DagsterInstance, cursor: RetryCursor) -> set[str]:
    """Windows with a sync run that failed since `cursor` (which is advanced)."""
    after = None if cursor.since is None else cursor.since - OVERLAP_S
    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE],
            updated_after=None if after is None else datetime.fromtimestamp(after, UTC),
        ),
        limit=FAILED_RUNS_PER_TICK,
        order_by="update_timestamp",
        ascending=True,
    )
    seen = set(cursor.seen)
    windows: set[str] = set()
    for record in records:
        run = record.dagster_run
        window = run.tags.get(PARTITION_TAG)
        if run.run_id not in seen and window and run.job_name in SYNC_JOBS:
            windows.add(window)
    if records:
        cursor.since = max(cursor.since or 0.0, *(r.update_timestamp.timestamp() for r in records))
        # The next (overlapping) read returns these again: they are not new then.
        floor = cursor.since - OVERLAP_S
        cursor.seen = sorted(
            r.dagster_run.run_id for r in records if r.update_timestamp.timestamp() >= floor
        )
    return windows


def plan_retries(
    instance: dg.DagsterInstance,
    cursor: RetryCursor,
    policy: RetryPolicy,
    now: float,
) -> list[RetryDecision]:
    """Decide every watched window (the cursor's, plus those failed since it); the cursor keeps
    those still waiting for their delay or their run."""
    watched = set(cursor.watching) | newly_failed_windows(instance, cursor)
    decisions = [decide(window_history(instance, w, policy), policy, now) for w in sorted(watched)]
    cursor.watching = sorted(d.window for d in decisions if d.action in ("wait", "busy", "retry"))
    return decisions


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dg.sensor(
    job=sync_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def retry_failed_windows(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Re-runs failed windows with a growing delay, at most CRM_GENESYS_MAX_WINDOW_ATTEMPTS
    times each; says on the window why it is no longer retried. A re-run sends only what is
    still missing: the sync state holds what earlier attempts did."""
    policy = RetryPolicy.from_settings()
    cursor = RetryCursor.parse(context.cursor)
    decisions = plan_retries(context.instance, cursor, policy, time.time())
    requests: list[dg.RunRequest] = []
    events: list[dg.AssetObservation] = []
    for d in decisions:
        if d.action == "retry":
            context.log.info(d.reason)
            requests.append(
                dg.RunRequest(
                    partition_key=d.window,
                    run_key=d.run_key,
                    tags={ATTEMPT_TAG: str(d.failures + 1)},
                )
            )
        elif d.action == "give_up" and not d.already_reported:
            context.log.warning(d.reason)
            if d.last_failed_run_id is not None:
                context.instance.add_run_tags(d.last_failed_run_id, {ATTENTION_TAG: d.reason})
            events.append(
                dg.AssetObservation(
                    asset_key=genesys_sync.key,
                    partition=d.window,
                    description=d.reason,
                    metadata={
                        "window": d.window,
                        "failed_attempts": d.failures,
                        "retries": "stopped: needs a person",
                        "last_failed_run": d.last_failed_run_id or "",
                    },
                )
            )
        elif d.action == "wait":
            context.log.info(d.reason)
    waiting = sum(d.action == "wait" for d in decisions)
    return dg.SensorResult(
        run_requests=requests,
        asset_events=events,
        cursor=cursor.dump(),
        skip_reason=(
            None
            if requests or events
            else f"no failed window is due ({waiting} waiting for their delay)"
        ),
    )
