"""The `crm-genesys` command: demo, emulator server, demo CRM, connection check, schema push."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from crm_genesys import settings


def _demo(args: argparse.Namespace) -> int:
    from crm_genesys.demo import run_demo

    return run_demo(rows=args.rows, seed=args.seed, windows=args.windows, tour=args.tour)


def _sync(args: argparse.Namespace) -> int:
    from crm_genesys.demo import use_demo_partition_start

    # The same partitions as `make demo` and `make dev` (before the definitions are built).
    use_demo_partition_start()
    from crm_genesys.defs.execution import failure_message, format_table, instance, run_window
    from crm_genesys.defs.partitions import check_window_key

    key = check_window_key(args.window)
    if not os.environ.get("DAGSTER_HOME"):
        print(
            "DAGSTER_HOME is not set: this run goes to a throwaway instance and will not show "
            "in the Dagster UI (make sets DAGSTER_HOME=.dagster_home)",
            file=sys.stderr,
        )
    result, counts = run_window(key, instance(), log_level="INFO" if args.verbose else "WARNING")
    print(format_table([(key, counts)]))
    if not result.success:
        print(f"\nwindow {key} failed: {failure_message(result)}", file=sys.stderr)
    return 0 if counts["ok"] else 1


def _full_sync(args: argparse.Namespace) -> int:
    from crm_genesys.defs.execution import failure_message, instance
    from crm_genesys.defs.full_sync import FullSyncConfig, full_sync_summary, run_full_sync_job

    config = FullSyncConfig(
        dry_run=args.dry_run,
        mirror=not args.no_mirror,
        confirm_deletes=args.confirm_deletes,
        restart=args.restart,
        chunk_rows=args.chunk_rows,
    )
    result = run_full_sync_job(
        instance(), config=config, log_level="DEBUG" if args.verbose else "INFO"
    )
    summary = full_sync_summary(result)
    shown = [k for k in summary if not k.startswith("sink/") and k != "preview"]
    width = max((len(k) for k in shown), default=0)
    for key in shown:
        print(f"{key.ljust(width)}  {summary[key]}")
    if "preview" in summary:
        print(summary["preview"])
    if not result.success:
        print(f"\nfull sync failed: {failure_message(result)}", file=sys.stderr)
        return 1
    return 0


def _crm_generate(args: argparse.Namespace) -> int:
    from crm_genesys.crm.demo import generate_demo_crm
    from crm_genesys.defs.partitions import window_length

    path = Path(args.path) if args.path else settings.demo_crm_path()
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to replace it", file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    generate_demo_crm(
        path,
        rows=args.rows,
        seed=args.seed,
        now=datetime.now(UTC),
        windows=args.windows,
        window=window_length(),
    )
    print(f"demo CRM with {args.rows} contacts written to {path}")
    return 0


def _crm_simulate(args: argparse.Namespace) -> int:
    from crm_genesys.crm.simulate import simulate_activity
    from crm_genesys.demo import describe_activity

    path = Path(args.path) if args.path else settings.demo_crm_path()
    if not path.exists():
        print(f"{path} does not exist: run `crm-genesys crm generate` first", file=sys.stderr)
        return 2
    summary = simulate_activity(
        path,
        now=datetime.now(UTC),
        seed=args.seed,
        updates=args.updates,
        deletes=args.deletes,
        reindex=args.reindex,
        creates=args.creates,
        new_column=args.new_column,
    )
    key = summary.window_start.strftime(settings.PARTITION_FORMAT)
    print(describe_activity(summary))
    print(
        f"Window {key} holds them; once it closes ({summary.window_end:%Y-%m-%d %H:%M} UTC) "
        f"the schedule syncs it, or: crm-genesys sync --window {key}"
    )
    return 0


def _crm_first_window(args: argparse.Namespace) -> int:
    from crm_genesys.demo import demo_partition_start

    start = demo_partition_start()
    if start is not None:
        print(start)
    return 0


def _check(args: argparse.Namespace) -> int:
    from crm_genesys.genesys.check import CheckReport, check_connection
    from crm_genesys.genesys.settings import GenesysSettings, configured_connection_vars

    if not configured_connection_vars():
        print(
            "No Genesys connection settings in the environment (GENESYS_CLIENT_ID, "
            "GENESYS_CLIENT_SECRET, and GENESYS_REGION or GENESYS_API_HOST): the sync runs on "
            "the embedded emulator. Set them to check a real org.",
            file=sys.stderr,
        )
        return 2

    async def check() -> CheckReport:
        # With no region configured, the region is found by trying each region's login host.
        return await check_connection(await GenesysSettings.from_env_discovering())

    report = asyncio.run(check())
    print(report.render())
    return 0 if report.ok else 1


def _schema_push(args: argparse.Namespace) -> int:
    from crm_genesys.contacts.mapping import load_mapping
    from crm_genesys.contacts.schema import build_contact_schema, schema_holds
    from crm_genesys.genesys.target import GenesysTarget

    mapping = load_mapping(Path(args.mapping) if args.mapping else settings.crm_mapping_path())
    body = build_contact_schema(mapping)
    target = GenesysTarget.from_env(
        os.environ, settings.emulator_db_path(), str(settings.get("CRM_GENESYS_EMULATOR_REALISM"))
    )

    async def push() -> tuple[dict, bool]:
        async with target.client() as client:
            existing = await client.find_contact_schema(str(body["name"]))
            if existing is not None and schema_holds(existing, body):
                return existing, False
            return await client.upsert_contact_schema(body), True

    schema, changed = asyncio.run(push())
    verb = "pushed" if changed else "unchanged"
    print(
        f"contact schema {schema.get('name')!r} {verb} on {target.describe()}: "
        f"id {schema.get('id')}, version {schema.get('version')}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-genesys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="sync the demo CRM into the embedded emulator, window by window"
    )
    demo.add_argument(
        "--rows", type=int, default=10_000, help="contacts in a newly generated demo CRM"
    )
    demo.add_argument(
        "--seed", type=int, default=7, help="seed of a newly generated demo CRM (deterministic)"
    )
    demo.add_argument("--windows", type=int, default=12, help="recent windows the demo data spans")
    demo.add_argument(
        "--tour",
        action="store_true",
        help="after syncing, show activity, a failure and its retry, a reconciliation (the "
        "first run, with a new demo CRM, always does)",
    )
    demo.set_defaults(func=_demo)

    sync = sub.add_parser(
        "sync", help="run the sync job for one window in this process, on the Dagster instance"
    )
    sync.add_argument(
        "--window",
        required=True,
        help="the window's partition key: its start, YYYY-MM-DD-HH:MM in UTC "
        "(e.g. 2026-11-29-10:00); it must have closed",
    )
    sync.add_argument("-v", "--verbose", action="store_true", help="log every step's events")
    sync.set_defaults(func=_sync)

    full = sub.add_parser(
        "full-sync",
        help="the whole CRM into Genesys (first load, mirror), in this process on the Dagster "
        "instance; resumes an unfinished one",
    )
    full.add_argument("--dry-run", action="store_true", help="preview; send and record nothing")
    full.add_argument("--no-mirror", action="store_true", help="do not delete what the CRM lost")
    full.add_argument(
        "--confirm-deletes",
        type=int,
        default=0,
        help="confirm exactly this many mirror deletes (the mass-delete breaker)",
    )
    full.add_argument("--restart", action="store_true", help="abandon an unfinished full sync")
    full.add_argument("--chunk-rows", type=int, default=0, help="CRM rows per chunk")
    full.add_argument("-v", "--verbose", action="store_true", help="log every step's events")
    full.set_defaults(func=_full_sync)

    crm = sub.add_parser("crm", help="the demo CRM").add_subparsers(
        dest="crm_command", required=True
    )
    path_help = "the demo CRM's SQLite file (default: demo_crm.sqlite in CRM_GENESYS_DATA_DIR)"
    generate = crm.add_parser("generate", help="generate the demo CRM (seeded, deterministic)")
    generate.add_argument("--path", default="", help=path_help)
    generate.add_argument("--rows", type=int, default=10_000, help="contacts to generate")
    generate.add_argument("--seed", type=int, default=7, help="random seed (same seed, same CRM)")
    generate.add_argument(
        "--windows", type=int, default=12, help="recent windows the modification times span"
    )
    generate.add_argument("--force", action="store_true", help="replace an existing demo CRM")
    generate.set_defaults(func=_crm_generate)
    simulate = crm.add_parser(
        "simulate", help="simulate CRM activity in the current window (prints a summary)"
    )
    simulate.add_argument("--path", default="", help=path_help)
    simulate.add_argument("--seed", type=int, default=11, help="random seed of this round")
    simulate.add_argument("--updates", type=int, default=200, help="records edited")
    simulate.add_argument("--deletes", type=int, default=20, help="records deleted (tombstones)")
    simulate.add_argument(
        "--reindex",
        type=int,
        default=50,
        help="records given a new internal id (same business key: an update, never a delete "
        "and a create)",
    )
    simulate.add_argument("--creates", type=int, default=100, help="new records")
    simulate.add_argument(
        "--new-column", default=None, help="add a CRM column no mapping names (schema drift)"
    )
    simulate.set_defaults(func=_crm_simulate)
    first = crm.add_parser(
        "first-window",
        help="print the first window of the demo CRM's data (the partitions' start of make "
        "demo and make dev); nothing when the sync reads another CRM",
    )
    first.set_defaults(func=_crm_first_window)

    from crm_genesys.emulator.cli import add_parser as add_emulator_parser

    add_emulator_parser(sub)

    check = sub.add_parser(
        "check", help="check credentials, region and permissions on real Genesys"
    )
    check.set_defaults(func=_check)

    schema = sub.add_parser("schema", help="the Genesys contact schema (custom fields)")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    push = schema_sub.add_parser(
        "push", help="create or update the contact schema from the mapping"
    )
    push.add_argument(
        "--mapping",
        default="",
        help="the mapping registry YAML (default: CRM_MAPPING, or the demo's)",
    )
    push.set_defaults(func=_schema_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. Configuration mistakes end in one plain sentence on stderr and exit 2,
    never in a traceback; anything else is a bug and keeps its traceback."""
    from crm_genesys.contacts.mapping import MappingError
    from crm_genesys.crm.errors import CrmError
    from crm_genesys.genesys.errors import ConfigurationError, GenesysError
    from crm_genesys.settings import SettingError
    from crm_genesys.sync.window import ContactSchemaMissing, TargetMismatch, UnknownDivision

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    # WindowKeyError is imported only when an error is being matched: importing the partitions
    # builds them, and `demo`/`sync` first choose their start.
    except (
        SettingError,
        MappingError,
        CrmError,
        _window_key_error(),
        TargetMismatch,
        ConfigurationError,
    ) as exc:
        print(f"crm-genesys {args.command}: {exc}", file=sys.stderr)
        return 2
    except (GenesysError, ContactSchemaMissing, UnknownDivision) as exc:
        print(f"crm-genesys {args.command}: {exc}", file=sys.stderr)
        return 1


def _window_key_error() -> type[Exception]:
    from crm_genesys.defs.partitions import WindowKeyError

    return WindowKeyError


if __name__ == "__main__":
    raise SystemExit(main())
