"""`make demo`: the whole sync on the embedded defaults, window by window, through Dagster.

Runs go through the Dagster instance in DAGSTER_HOME (the Makefile sets it), so every window the
demo syncs is visible afterwards in `make dev`. The partitions start where the demo data starts
(`demo_partition_start`), here and in `make dev`, unless CRM_GENESYS_PARTITION_START is set.

The first run (a CRM just generated, or `--tour`) then shows the tool at work, each step a run
in the UI: CRM activity (updates, deletes, a re-index) synced in its window; the same window
failing under injected faults and recovering through the retry sensor's own decision; a
reconciliation of the state against a full scan of Genesys; a dry run (see `_dry_run`).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_genesys import settings
from crm_genesys.settings import PARTITION_FORMAT


def demo_partition_start() -> str | None:
    """The first window of the demo CRM's data, as a partition key; None when the sync does not
    read the demo CRM (CRM_DATABASE_URL is set) or it does not exist yet."""
    from crm_genesys.crm.demo import read_demo_meta, window_floor

    if settings.get("CRM_DATABASE_URL") or not settings.demo_crm_path().exists():
        return None
    meta = read_demo_meta(settings.demo_crm_path())
    # Aligned to the configured window length (the data may be read with another one).
    length = _window_length()
    return window_floor(meta.first_window_start, length).strftime(PARTITION_FORMAT)


def _window_length() -> timedelta:
    name = str(settings.get("CRM_GENESYS_WINDOW"))
    return {
        "15min": timedelta(minutes=15),
        "hourly": timedelta(hours=1),
        "daily": timedelta(days=1),
    }[name]


def use_demo_partition_start() -> str:
    """Start the partitions at the demo data unless CRM_GENESYS_PARTITION_START says otherwise.
    Must run before `crm_genesys.defs` is imported (the partitions are built at import)."""
    if not os.environ.get("CRM_GENESYS_PARTITION_START", "").strip():
        start = demo_partition_start()
        if start is not None:
            os.environ["CRM_GENESYS_PARTITION_START"] = start
    return str(settings.get("CRM_GENESYS_PARTITION_START"))


def windows_between(first: datetime, last: datetime) -> list[str]:
    """Partition keys of every closed window from the one holding `first` to the one holding
    `last` (read window by window: never the list of every partition key)."""
    from crm_genesys.defs.partitions import partition_key_for, window_bounds, window_length

    keys: list[str] = []
    key = partition_key_for(max(first, _first_start()))
    stop = partition_key_for(last)
    now = datetime.now(UTC)
    while key <= stop:
        start, end = window_bounds(key)
        if end > now:
            break
        keys.append(key)
        key = partition_key_for(start + window_length())
    return keys


def _first_start() -> datetime:
    from crm_genesys.defs.partitions import first_window_start

    return first_window_start()


def run_demo(rows: int, seed: int, windows: int, tour: bool = False) -> int:
    from crm_genesys.crm.demo import generate_demo_crm

    crm_path = settings.demo_crm_path()
    crm_path.parent.mkdir(parents=True, exist_ok=True)
    generated = False
    if not crm_path.exists() and not settings.get("CRM_DATABASE_URL"):
        print(f"Generating the demo CRM: {rows} contacts over {windows} windows -> {crm_path}")
        generate_demo_crm(
            crm_path, rows=rows, seed=seed, now=datetime.now(UTC), windows=windows,
            window=_window_length(),
        )  # fmt: skip
        generated = True
    start = use_demo_partition_start()
    print(f"Windows ({settings.get('CRM_GENESYS_WINDOW')}) start at {start}")

    from crm_genesys.defs.execution import COLUMNS, format_table, instance, run_window
    from crm_genesys.defs.resources import CrmResource

    crm = CrmResource.from_env()  # the CRM exactly as the assets read it
    with crm.source(crm.mapping()) as source:
        span = source.modified_range()
    if span is None:
        print("The CRM table has no rows: nothing to sync.")
        return 0
    keys = windows_between(*span)
    dagster_instance = instance()
    print(f"Syncing {len(keys)} windows into the Genesys emulator at {settings.emulator_db_path()}")
    results: list[tuple[str, dict[str, int]]] = []
    for key in keys:
        _, counts = run_window(key, dagster_instance)
        results.append((key, counts))
        _print_counts(key, counts, COLUMNS)
    if (generated or tour) and keys:
        results += _tour(keys[-1], dagster_instance)
    print()
    print(format_table(results))
    writes = sum(c["writes"] for _, c in results)
    # The run under injected faults is meant to fail; its retry is not.
    failed = [k for k, c in results if not c["ok"] and not k.endswith("(faults)")]
    print()
    print(
        f"Writes sent to Genesys: {writes}"
        + ("" if writes else " (everything was already in sync)")
    )
    if failed:
        print(f"Runs that failed (the retry sensor re-runs their windows): {', '.join(failed)}")
    print(_where_to_look())
    return 1 if failed else 0


def _print_counts(key: str, counts: dict[str, int], columns: tuple[str, ...]) -> None:
    shown = ", ".join(f"{counts[c]} {c.replace('_', ' ')}" for c in columns if counts[c])
    print(f"  {key}: {shown or 'nothing'}" + ("" if counts["ok"] else "  -> FAILED"))


def _tour(window: str, dagster_instance: Any) -> list[tuple[str, dict[str, int]]]:
    """Activity, a failure under faults and its retry, a reconciliation, a dry run."""
    from crm_genesys.crm.simulate import simulate_activity
    from crm_genesys.defs.automation import ATTEMPT_TAG, RetryCursor, RetryPolicy, plan_retries
    from crm_genesys.defs.execution import COLUMNS, run_window
    from crm_genesys.defs.partitions import window_bounds
    from crm_genesys.emulator.faults import FaultConfig
    from crm_genesys.genesys.settings import configured_connection_vars
    from crm_genesys.genesys.target import embedded_app

    rows: list[tuple[str, dict[str, int]]] = []
    start, end = window_bounds(window)
    print(f"\nCRM activity in window {window}: updates, deletes, a re-index")
    activity = simulate_activity(
        settings.demo_crm_path(),
        now=min(start + (end - start) / 2, datetime.now(UTC)),
        seed=int(time.time()) % 10_000,
        updates=60,
        deletes=5,
        reindex=20,
        creates=15,
    )
    print(f"  {describe_activity(activity)}")
    embedded = not configured_connection_vars()
    if embedded:
        emulator = embedded_app(settings.emulator_db_path()).emulator
        print("  synced with every bulk item failing (injected faults): the run must fail")
        emulator.set_faults(FaultConfig(p_item_failure=1.0))
        try:
            # Its failure is expected: the run log in the UI has it, the terminal needs no trace.
            _, counts = run_window(window, dagster_instance, log_level="CRITICAL")
        finally:
            emulator.set_faults(FaultConfig())
        rows.append((f"{window} (faults)", counts))
        _print_counts(window, counts, COLUMNS)
        policy = RetryPolicy.from_settings()
        # What the retry sensor decides once the delay has passed, taken now.
        due = time.time() + policy.delay(1).total_seconds()
        decisions = plan_retries(dagster_instance, RetryCursor(), policy, due)
        for decision in (d for d in decisions if d.action == "retry" and d.window == window):
            print(f"  the retry sensor, {policy.delay(1)} later: {decision.reason}")
            _, counts = run_window(
                window,
                dagster_instance,
                tags={ATTEMPT_TAG: str(decision.failures + 1), "crm_genesys/launched_by": "demo"},
            )
            rows.append((f"{window} (retry)", counts))
            _print_counts(window, counts, COLUMNS)
    else:
        print("  (real Genesys configured: no faults injected, the window synced as it is)")
        _, counts = run_window(window, dagster_instance)
        rows.append((window, counts))

    print("\nReconciliation: the sync state against a full scan of Genesys")
    from crm_genesys.definitions import defs

    result = defs.resolve_job_def("reconcile_job").execute_in_process(
        instance=dagster_instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    if result.success:
        summary = result.output_for_node("reconcile_genesys")
        print("  " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in summary.items()))
    else:
        print("  the reconciliation failed: see reconcile_job in the UI")
    rows.extend(_dry_run(window, dagster_instance))
    return rows


def _dry_run(window: str, dagster_instance: Any) -> list[tuple[str, dict[str, int]]]:
    """More CRM activity in `window`, a dry run of it (what a sync would send, nothing sent),
    then the real run, which sends what the dry run listed."""
    from crm_genesys.crm.simulate import simulate_activity
    from crm_genesys.defs.execution import COLUMNS, run_window
    from crm_genesys.defs.partitions import window_bounds

    start, end = window_bounds(window)
    simulate_activity(
        settings.demo_crm_path(),
        now=min(start + (end - start) * 3 / 4, datetime.now(UTC)),
        seed=int(time.time()) % 10_000 + 1,
        updates=12,
        deletes=2,
        reindex=0,
        creates=3,
    )
    print(f"\nDry run of window {window} after more CRM activity (nothing is sent):")
    result, _ = run_window(
        window,
        dagster_instance,
        run_config={"ops": {"genesys_sync": {"config": {"dry_run": True}}}},
    )
    observed = result.asset_observations_for_node("genesys_sync") if result.success else []
    if observed:
        meta = observed[-1].metadata
        shown = ", ".join(
            f"{int(meta[k].value)} {k.removeprefix('would_')}"  # type: ignore[arg-type]
            for k in meta
            if k.startswith("would_")
        )
        print(f"  it would send: {shown} (the run's observation holds masked samples)")
    else:
        print("  the dry run failed: see its run in the UI")
    _, counts = run_window(window, dagster_instance)
    print("  the real run of the window:")
    _print_counts(window, counts, COLUMNS)
    return [(f"{window} (after dry run)", counts)]


def describe_activity(activity: Any) -> str:
    """One line about a `simulate_activity` round."""
    extra = f", new column {activity.new_column}" if activity.new_column else ""
    return (
        f"{activity.updates} updated, {activity.deletes} deleted, {activity.reindexes} "
        f"re-indexed (new internal ids, same keys), {activity.creates} created{extra}, "
        f"modified in [{activity.window_start:%Y-%m-%d %H:%M}, "
        f"{activity.window_end:%H:%M}) UTC"
    )


def _where_to_look() -> str:
    return (
        "\nWhere to look next (make dev: the Dagster UI on http://127.0.0.1:3000):\n"
        "  Assets > genesys_sync > Partitions   one square per window; click one for its\n"
        "                                       summary, figures and checks\n"
        "  genesys_sync > Checks                dead_letters and screen_pop_ready, per window\n"
        "  normalized_contacts > Checks         quarantine samples, E.164 coverage, drift\n"
        "  Runs                                 the failed run and its retry (tag\n"
        "                                       crm_genesys/attempt), reconcile_job\n"
        "  Automation                           sync_schedule, retry_failed_windows,\n"
        "                                       drain_dead_letters\n"
        f"  crm-genesys emulator serve --data {settings.data_dir()}\n"
        "                                       the emulator's org over HTTP (admin routes\n"
        "                                       need 'Authorization: Bearer demo-admin-token')\n"
        "docs/OPERATING.md says what each check means and what to do."
    )
