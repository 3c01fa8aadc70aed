"""Runs whose process died: found, failed and their pool slots freed, so the next run proceeds.

Where `dagster-daemon` runs, its run monitoring does this for the runs it launched. A run started
in-process from the command line (`crm-genesys sync`, `make demo`) has no monitor: if that process
is SIGKILLed its run stays STARTED and keeps the `genesys_api` pool slot it claimed, and the next
run of any window would wait for that slot forever. Such runs carry `process_tags()` (host, pid and
the process's start time, so a reused pid is not mistaken for the dead one); `reap_dead_runs`
fails those whose process is gone. The window lease of the sync state uses the same test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from crm_genesys.processes import process_alive, process_started, this_host
from crm_genesys.state.store import SyncStateStore, WindowLease

HOST_TAG = "crm_genesys/host"
PID_TAG = "crm_genesys/pid"
PID_STARTED_TAG = "crm_genesys/pid_started"

_ACTIVE = [
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.NOT_STARTED,
]
_ENDED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def process_tags() -> dict[str, str]:
    """Tags naming this process, for runs it executes in-process."""
    pid = os.getpid()
    return {
        HOST_TAG: this_host(),
        PID_TAG: str(pid),
        PID_STARTED_TAG: str(process_started(pid) or 0),
    }


def _dead(tags: Mapping[str, str]) -> bool:
    if tags.get(HOST_TAG) != this_host() or not tags.get(PID_TAG, "").isdigit():
        return False  # another machine's process: its own daemon's run monitoring judges it
    started = tags.get(PID_STARTED_TAG, "0")
    return not process_alive(int(tags[PID_TAG]), int(started) if started.isdigit() else 0)


def fail_dead_run(instance: dg.DagsterInstance, run: dg.DagsterRun, why: str) -> None:
    """Mark `run` failed and give back the concurrency (pool) slots it held."""
    instance.report_run_failed(run, message=why)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail every active run of this host whose in-process executor died; their run ids."""
    reaped = []
    records = instance.get_run_records(
        dg.RunsFilter(statuses=_ACTIVE, tags={HOST_TAG: this_host()})
    )
    for record in records:
        run = record.dagster_run
        if _dead(run.tags):
            fail_dead_run(
                instance,
                run,
                f"the process that ran it (pid {run.tags.get(PID_TAG)}) is gone (killed?); "
                "marked failed so that the next run can proceed",
            )
            reaped.append(run.run_id)
    return reaped


def lease_is_stale(instance: dg.DagsterInstance, lease: WindowLease) -> bool:
    """Whether the holder of a window lease is gone: its run ended (or is unknown to this
    instance), or its process on this host died (then its run is failed and slots freed)."""
    run = instance.get_run_by_id(lease.holder)
    if run is None or run.status in _ENDED:
        return True
    if lease.host == this_host() and not process_alive(lease.pid, lease.pid_started):
        fail_dead_run(
            instance,
            run,
            f"its process (pid {lease.pid}) died while syncing window {lease.window}",
        )
        return True
    return False


def claim_window(
    instance: dg.DagsterInstance, store: SyncStateStore, window: str, run_id: str
) -> WindowLease | None:
    """Take the window's lease in `store` for `run_id`; the live holder's lease when another
    run is syncing the window (then nothing may be sent)."""
    pid = os.getpid()
    return store.acquire_window(
        window,
        run_id,
        host=this_host(),
        pid=pid,
        pid_started=process_started(pid) or 0,
        stale=lambda lease: lease_is_stale(instance, lease),
    )
