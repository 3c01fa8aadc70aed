"""The `emulator serve` argparse command as the project CLI registers it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from crm_genesys.emulator import RealismConfig
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


def test_realism_flags_admin_token_and_org_settings_reach_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CRM_GENESYS_EMULATOR_ADMIN_TOKEN", raising=False)
    args = _parse(
        [
            "emulator", "serve", "--realism", "realistic", "--lag-max-s", "2.5",
            "--realism-seed", "9", "--no-strict-divisions", "--background-share", "0.3",
            "--merged-read", "canonical", "--admin-token", "adm", "--org-id", "org-1",
            "--division", "d-1:Retail", "--schema-limit", "max_number_of_fields_per_schema=7",
            "--max-request-bytes", "1000",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    realism = config.realism
    assert realism == RealismConfig.profile(
        "realistic",
        lag_max_s=2.5,
        seed=9,
        strict_divisions=False,
        background_share=0.3,
        merged_read="canonical",
    )
    assert (config.admin_token, config.org_id, config.max_request_bytes) == ("adm", "org-1", 1000)
    assert [d.name for d in config.divisions] == ["Home", "Retail"]
    assert config.schema_limits.max_number_of_fields_per_schema == 7
    assert "adm" not in repr(config)


def test_the_default_realism_is_basic_and_every_knob_has_a_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRM_GENESYS_EMULATOR_ADMIN_TOKEN", "env-admin")
    config = config_from_args(_parse(["emulator", "serve"]))
    assert config.realism == RealismConfig() and config.admin_token == "env-admin"
    help_text = _parse_help()
    for f in dataclasses.fields(RealismConfig):
        flag = "--realism-seed" if f.name == "seed" else "--" + f.name.replace("_", "-")
        assert flag in help_text


def test_bad_realism_values_are_refused() -> None:
    with pytest.raises(SystemExit):
        _parse(["emulator", "serve", "--realism", "harsh"])
    with pytest.raises(ValueError, match="merged_read"):
        config_from_args(_parse(["emulator", "serve", "--merged-read", "maybe"]))


def _parse_help() -> str:
    parser = argparse.ArgumentParser(prog="crm-genesys")
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser(commands)
    emulator = commands.choices["emulator"]
    serve_action = next(a for a in emulator._actions if isinstance(a, argparse._SubParsersAction))
    return str(serve_action.choices["serve"].format_help())
