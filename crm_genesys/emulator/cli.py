"""`crm-genesys emulator serve ...`: the argparse command the project CLI registers, also run by
`python -m crm_genesys.emulator serve ...`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from crm_genesys.emulator.config import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    FAULT_PROFILES,
    EmulatorConfig,
    FaultConfig,
)

SECRET_ENV = "CRM_GENESYS_EMULATOR_CLIENT_SECRET"
DB_FILE = "emulator.sqlite"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `emulator` command (with its `serve` subcommand) to an argparse subparsers
    object; the parsed namespace's `func(args)` runs it."""
    emulator = subparsers.add_parser("emulator", help="the Genesys Cloud emulator")
    commands = emulator.add_subparsers(dest="emulator_command", required=True)
    serve = commands.add_parser("serve", help="serve the emulator over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    serve.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"directory of the org's {DB_FILE} (default: memory)",
    )
    serve.add_argument("--rate-limit-per-minute", type=int, default=300)
    serve.add_argument("--faults", choices=sorted(FAULT_PROFILES), default="none")
    serve.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    serve.add_argument(
        "--client-secret",
        default=None,
        help=f"default: ${SECRET_ENV}, else {DEFAULT_CLIENT_SECRET!r}",
    )
    serve.add_argument("--max-bulk-entities", type=int, default=200)
    serve.add_argument("--token-ttl", type=int, default=86_400, help="token lifetime, seconds")
    serve.add_argument("--seed", type=int, default=0, help="seeds faults and bulk result order")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="added to every API call")
    serve.set_defaults(func=run_serve)
    return emulator


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    secret = args.client_secret or os.environ.get(SECRET_ENV) or DEFAULT_CLIENT_SECRET
    return EmulatorConfig(
        db_path=args.data / DB_FILE if args.data is not None else None,
        client_id=args.client_id,
        client_secret=secret,
        token_ttl_s=args.token_ttl,
        rate_limit_per_minute=args.rate_limit_per_minute,
        max_bulk_entities=args.max_bulk_entities,
        faults=FaultConfig.profile(args.faults, seed=args.seed, latency_ms=args.latency_ms),
        seed=args.seed,
    )


def run_serve(args: argparse.Namespace) -> int:
    from crm_genesys.emulator.server import serve

    serve(config_from_args(args), args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm_genesys.emulator")
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser(commands)
    # `python -m crm_genesys.emulator serve ...` means `emulator serve ...`.
    args = parser.parse_args(["emulator", *(argv if argv is not None else _argv())])
    result: int = args.func(args)
    return result


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]
