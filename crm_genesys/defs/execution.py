"""Running a window's sync in this process (the command line and the demo), on the instance the
Dagster UI reads, with the same definitions and assets as the daemon's runs.

Before a run starts, runs of this host whose process died are failed and their pool slots freed
(`liveness.reap_dead_runs`); the run is tagged with this process so that a later run can do the
same if this one is killed. SIGTERM is handled like Ctrl-C: the run stops at once, what was sent
is recorded in the sync state, and a re-run sends only what is missing.
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg

from crm_genesys.defs import liveness, stopping
from crm_genesys.sync.accounting import BUCKETS

COLUMNS = ("extracted", *BUCKETS, "failed")


def instance() -> dg.DagsterInstance:
    """The persistent instance of DAGSTER_HOME (so `make dev` shows the runs), else ephemeral.

    Opening a fresh instance creates and migrates its storage; two processes doing that at the
    same instant would both stamp the schema (and corrupt it), so opening is serialized by a lock
    file in DAGSTER_HOME."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, ".crm-genesys-open.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        opened = dg.DagsterInstance.get()
        # Touch every storage while the lock is held: their schemas are created on first use.
        opened.get_run_records(limit=1)
        opened.event_log_storage.get_asset_records([])
        if opened.schedule_storage is not None:
            opened.schedule_storage.all_instigator_state()
    return opened


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM is Ctrl-C: it goes to whatever handles SIGINT at that moment,
    as Dagster's own processes map it (once the run executes, Dagster routes SIGTERM itself;
    a step's async work is stopped by `stopping.run_async`). Should the orderly stop hang, the
    process exits after `stopping.STOP_GRACE_SECONDS`: a stop is never ignored."""

    def interrupt(signum: int, frame: Any) -> None:
        stopping.arm_hard_stop()
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_window(
    key: str,
    dagster_instance: dg.DagsterInstance,
    definitions: dg.Definitions | None = None,
    *,
    run_config: dict[str, Any] | None = None,
    log_level: str = "WARNING",
    tags: dict[str, str] | None = None,
) -> tuple[dg.ExecuteInProcessResult, dict[str, int]]:
    """Run `sync_job` for window `key` in this process (with `tags` on the run); the result and
    its accounting counts (`COLUMNS`, plus `ok` and `writes`)."""
    if definitions is None:
        from crm_genesys.definitions import defs

        definitions = defs
    liveness.reap_dead_runs(dagster_instance)
    job = definitions.resolve_job_def("sync_job")
    config = {"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})}
    with sigterm_as_interrupt():
        result = job.execute_in_process(
            partition_key=key,
            instance=dagster_instance,
            raise_on_error=False,
            run_config=config,
            tags={**(tags or {}), **liveness.process_tags()},
        )
    return result, window_counts(result)


def window_counts(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    """The accounting of a sync run, from its materialization (or its failure's metadata)."""
    counts = {name: 0 for name in COLUMNS}
    events = result.asset_materializations_for_node("genesys_sync") if result.success else []
    metadata = events[0].metadata if events else failure_metadata(result)
    for name in COLUMNS:
        if name in metadata:
            counts[name] = int(metadata[name].value)  # type: ignore[arg-type]
    counts["ok"] = int(result.success)
    counts["writes"] = counts["created"] + counts["updated"] + counts["deleted"]
    return counts


def failure_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dg.MetadataValue]:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            return dict(event.step_failure_data.user_failure_data.metadata)
    return {}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first step failure's description or error, in one line, for the terminal."""
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return f"{event.step_key}: {data.user_failure_data.description}"
        if data.error is not None:
            cause = data.error.cause or data.error
            return f"{event.step_key}: {cause.message.strip().splitlines()[-1]}"
    return "the run failed (see its event log in the Dagster UI)"


def format_table(rows: Sequence[tuple[str, dict[str, int]]]) -> str:
    header = ["window"] + [c.replace("_", " ") for c in COLUMNS] + ["result"]
    body = [
        [key] + [str(c[name]) for name in COLUMNS] + ["ok" if c["ok"] else "FAILED"]
        for key, c in rows
    ]
    totals = {name: sum(c[name] for _, c in rows) for name in COLUMNS}
    body.append(["total"] + [str(totals[name]) for name in COLUMNS] + [""])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)
