"""`python -m crm_genesys.sync apply ...`: apply a ChangeSet file to Genesys, outside Dagster.

For operators (replaying a window's changes by hand) and for the crash tests, which SIGKILL this
process in the middle of its writes and run it again. Genesys is configured from the
environment (`GENESYS_BASE_URL` or region, `GENESYS_CLIENT_ID`, `GENESYS_CLIENT_SECRET`, tuning:
see `genesys.settings`): never from arguments, which other users of the machine can read.

The changes file is JSON: a list of records with the ChangeSet `changes` columns
(`business_key, op, contact_id, crm_id, crm_version, content_hash, payload`). The report is
printed as one JSON object on stdout. Exit status: 0 when every change is accounted for, 3 when
retryable failures remain (run it again), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from crm_genesys.contacts.diff import CHANGE_COLUMNS
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.settings import GenesysSettings
from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.sink import SyncReport, apply_changes

EXIT_FAILED_REMAIN = 3


def read_changes(path: Path) -> pd.DataFrame:
    """The changes frame from a JSON list of records (`crm_version` as int64)."""
    records = json.loads(path.read_text())
    frame = pd.DataFrame.from_records(
        records,
        columns=CHANGE_COLUMNS,
    )
    frame["crm_version"] = frame["crm_version"].astype("int64")
    return frame


async def run_apply(args: argparse.Namespace) -> SyncReport:
    settings = GenesysSettings.from_env()
    retry = {
        name: value
        for name, value in (
            ("retry_initial_delay", args.retry_initial_delay),
            ("retry_max_delay", args.retry_max_delay),
        )
        if value is not None
    }
    if retry:
        settings = dataclasses.replace(settings, **retry)
    store = SyncStateStore(args.state)
    store.create_all()
    try:
        async with GenesysClient(settings) as client:
            source_id = await client.ensure_external_source(args.source_name)
            return await apply_changes(
                read_changes(args.changes),
                client,
                store,
                source_id=source_id,
                window=args.window,
                batch_size=args.batch_size or settings.batch_size,
                max_in_flight=args.max_in_flight or settings.max_in_flight,
                division_id=args.division_id,
                max_rounds=args.max_rounds,
                round_delay=args.round_delay,
            )
    finally:
        store.dispose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crm_genesys.sync")
    commands = parser.add_subparsers(dest="command", required=True)
    apply = commands.add_parser("apply", help="apply a ChangeSet file to Genesys")
    apply.add_argument("--changes", type=Path, required=True, help="JSON list of change records")
    apply.add_argument("--state", required=True, help="SQLAlchemy URL of the sync-state store")
    apply.add_argument("--window", required=True, help="the window (partition key) of the changes")
    apply.add_argument("--source-name", required=True, help="our External Source's name")
    apply.add_argument("--division-id", default=None)
    apply.add_argument("--batch-size", type=int, default=0, help="0: GENESYS_BATCH_SIZE")
    apply.add_argument("--max-in-flight", type=int, default=0, help="0: GENESYS_MAX_IN_FLIGHT")
    apply.add_argument("--max-rounds", type=int, default=4)
    apply.add_argument("--round-delay", type=float, default=1.0)
    apply.add_argument(
        "--retry-initial-delay", type=float, default=None, help="client backoff start, seconds"
    )
    apply.add_argument(
        "--retry-max-delay", type=float, default=None, help="client backoff cap, seconds"
    )
    apply.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    report = asyncio.run(run_apply(args))
    out = asdict(report)
    out["requests"] = report.requests
    print(json.dumps(out, sort_keys=True), flush=True)
    return EXIT_FAILED_REMAIN if report.failed else 0
