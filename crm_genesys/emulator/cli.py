"""`crm-genesys emulator serve ...`: the argparse command the project CLI registers, also run by
`python -m crm_genesys.emulator serve ...`.

Every `RealismConfig` knob has a flag of its own (`--lag-max-s 5`, `--no-strict-divisions`,
`--realism-seed 3`, ...) that overrides the profile chosen with `--realism`."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any, get_type_hints

from crm_genesys.emulator.config import (
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_DIVISIONS,
    FAULT_PROFILES,
    REALISM_PROFILES,
    Division,
    EmulatorConfig,
    FaultConfig,
    RealismConfig,
    SchemaLimits,
)

SECRET_ENV = "CRM_GENESYS_EMULATOR_CLIENT_SECRET"
ADMIN_TOKEN_ENV = "CRM_GENESYS_EMULATOR_ADMIN_TOKEN"
DB_FILE = "emulator.sqlite"


def _realism_flag(name: str) -> str:
    # `--seed` already seeds faults and result order.
    return "--realism-seed" if name == "seed" else "--" + name.replace("_", "-")


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
    serve.add_argument(
        "--admin-token",
        default=None,
        help=f"bearer token of /__emulator/... (default: ${ADMIN_TOKEN_ENV}, "
        f"else {DEFAULT_ADMIN_TOKEN!r})",
    )
    serve.add_argument("--org-id", default=None, help="default: the org file's own GUID")
    serve.add_argument("--max-bulk-entities", type=int, default=200)
    serve.add_argument("--max-request-bytes", type=int, default=EmulatorConfig.max_request_bytes)
    serve.add_argument("--token-ttl", type=int, default=86_400, help="token lifetime, seconds")
    serve.add_argument("--seed", type=int, default=0, help="seeds faults and bulk result order")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="added to every API call")
    serve.add_argument(
        "--division",
        action="append",
        metavar="ID:NAME",
        default=None,
        help="a division besides the home one (repeat; default: "
        + ", ".join(d.name for d in DEFAULT_DIVISIONS[1:])
        + ")",
    )
    serve.add_argument(
        "--schema-limit",
        action="append",
        metavar="KNOB=N",
        default=None,
        help="a SchemaLimits knob, e.g. max_number_of_fields_per_schema=50 (repeat)",
    )
    realism = serve.add_argument_group("realism (each knob overrides the --realism profile)")
    realism.add_argument("--realism", choices=sorted(REALISM_PROFILES), default="basic")
    hints = get_type_hints(RealismConfig)
    for f in dataclasses.fields(RealismConfig):
        kind = hints[f.name]
        if kind is bool:
            realism.add_argument(
                _realism_flag(f.name),
                dest=f"realism_{f.name}",
                action=argparse.BooleanOptionalAction,
            )
        else:
            realism.add_argument(
                _realism_flag(f.name), dest=f"realism_{f.name}", type=kind, metavar=kind.__name__
            )
    serve.set_defaults(func=run_serve)
    return emulator


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    secret = args.client_secret or os.environ.get(SECRET_ENV) or DEFAULT_CLIENT_SECRET
    admin_token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or DEFAULT_ADMIN_TOKEN
    knobs = {
        f.name: getattr(args, f"realism_{f.name}")
        for f in dataclasses.fields(RealismConfig)
        if getattr(args, f"realism_{f.name}") is not None
    }
    divisions: tuple[Division, ...] = DEFAULT_DIVISIONS
    if args.division:
        divisions = (DEFAULT_DIVISIONS[0], *(_division(text) for text in args.division))
    limits = SchemaLimits.from_dict(dict(_limit(text) for text in args.schema_limit or []))
    return EmulatorConfig(
        db_path=args.data / DB_FILE if args.data is not None else None,
        client_id=args.client_id,
        client_secret=secret,
        token_ttl_s=args.token_ttl,
        rate_limit_per_minute=args.rate_limit_per_minute,
        max_bulk_entities=args.max_bulk_entities,
        max_request_bytes=args.max_request_bytes,
        faults=FaultConfig.profile(args.faults, seed=args.seed, latency_ms=args.latency_ms),
        realism=RealismConfig.profile(args.realism, **knobs),
        schema_limits=limits,
        seed=args.seed,
        org_id=args.org_id,
        admin_token=admin_token,
        divisions=divisions,
    )


def _division(text: str) -> Division:
    division_id, sep, name = text.partition(":")
    if not sep or not division_id or not name:
        raise SystemExit(f"--division wants ID:NAME, got {text!r}")
    return Division(division_id, name)


def _limit(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit():
        raise SystemExit(f"--schema-limit wants KNOB=N, got {text!r}")
    return name, int(value)


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
