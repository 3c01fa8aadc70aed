"""`make demo`: the whole sync on the embedded defaults, window by window, through Dagster.

Runs go through the Dagster instance in DAGSTER_HOME (the Makefile sets it), so every window the
demo syncs is visible afterwards in `make dev`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from crm_genesys import settings
from crm_genesys.defs.execution import COLUMNS, format_table, instance, run_window
from crm_genesys.defs.partitions import partition_key_for, sync_windows, window_length


def windows_between(first: datetime, last: datetime) -> list[str]:
    """Partition keys of every window from the one holding `first` to the one holding `last`."""
    keys = sync_windows.get_partition_keys()
    start, end = partition_key_for(first), partition_key_for(last)
    return [k for k in keys if start <= k <= end]


def run_demo(rows: int, seed: int, windows: int) -> int:
    from crm_genesys.crm.demo import generate_demo_crm
    from crm_genesys.defs.resources import CrmResource

    crm_path = settings.demo_crm_path()
    crm_path.parent.mkdir(parents=True, exist_ok=True)
    if not crm_path.exists():
        now = datetime.now(UTC)
        print(f"Generating the demo CRM: {rows} contacts over {windows} windows -> {crm_path}")
        generate_demo_crm(
            crm_path, rows=rows, seed=seed, now=now, windows=windows, window=window_length()
        )
    crm = CrmResource.from_env()  # the CRM exactly as the assets read it
    with crm.source(crm.mapping()) as source:
        span = source.modified_range()
    if span is None:
        print("The CRM table has no rows: nothing to sync.")
        return 0
    keys = windows_between(*span)
    dagster_instance = instance()
    print(f"Syncing {len(keys)} windows into the Genesys emulator at {settings.emulator_db_path()}")
    results = []
    for key in keys:
        _, counts = run_window(key, dagster_instance)
        results.append((key, counts))
        print(
            f"  {key}: "
            + ", ".join(f"{counts[c]} {c.replace('_', ' ')}" for c in COLUMNS if counts[c])
        )
    print()
    print(format_table(results))
    writes = sum(c["writes"] for _, c in results)
    failed = [k for k, c in results if not c["ok"]]
    print()
    print(
        f"Writes sent to Genesys: {writes}"
        + ("" if writes else " (everything was already in sync)")
    )
    if failed:
        print(f"Windows that failed (the retry sensor re-runs them): {', '.join(failed)}")
    print(
        "\nWhere to look next:\n"
        "  make dev    the Dagster UI on http://127.0.0.1:3000: asset `genesys_sync`, its\n"
        "              partitions and run logs, the checks on `normalized_contacts`\n"
        f"  crm-genesys emulator serve --data {settings.data_dir()}\n"
        "              the emulator's org over HTTP (GET /__emulator/contacts with\n"
        "              the header 'Authorization: Bearer demo-admin-token')\n"
        f"  sqlite3 {settings.data_dir() / 'sync_state.sqlite'} 'select * from dead_letters'\n"
        "              what Genesys rejected, and why"
    )
    return 1 if failed else 0
