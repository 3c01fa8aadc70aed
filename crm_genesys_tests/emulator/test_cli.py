"""The `emulator serve` argparse command as the project CLI registers it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from crm_genesys.emulator.cli import add_parser, config_from_args, run_serve


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="crm-genesys")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_every_option_reaches_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_GENESYS_EMULATOR_CLIENT_SECRET", raising=False)
    args = _parse(
        [
            "emulator", "serve", "--host", "0.0.0.0", "--port", "9999", "--data", str(tmp_path),
            "--rate-limit-per-minute", "120", "--faults", "flaky", "--client-id", "cid",
            "--client-secret", "sec", "--max-bulk-entities", "50", "--token-ttl", "600",
            "--seed", "4", "--latency-ms", "15",
        ]
    )  # fmt: skip
    assert args.func is run_serve and (args.host, args.port) == ("0.0.0.0", 9999)
    config = config_from_args(args)
    assert config.db_path == tmp_path / "emulator.sqlite"
    assert (config.client_id, config.client_secret) == ("cid", "sec")
    assert config.rate_limit_per_minute == 120 and config.max_bulk_entities == 50
    assert config.token_ttl_s == 600 and config.seed == 4
    assert config.faults.p_429 > 0 and config.faults.seed == 4 and config.faults.latency_ms == 15
    assert "sec" not in repr(config)


def test_defaults_and_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_GENESYS_EMULATOR_CLIENT_SECRET", "env-secret")
    config = config_from_args(_parse(["emulator", "serve"]))
    assert config.db_path is None and config.client_id == "demo-client"
    assert config.client_secret == "env-secret"
    assert config.rate_limit_per_minute == 300 and config.token_ttl_s == 86_400
    assert config.faults.request_fault_probability() == 0


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(SystemExit):
        _parse(["emulator", "serve", "--faults", "apocalyptic"])
