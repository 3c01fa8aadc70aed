"""The `crm-genesys` command line on the embedded defaults."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crm_genesys import settings
from crm_genesys.cli import main
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.genesys.settings import GENESYS_CONNECTION_VARS
from crm_genesys.genesys.target import GenesysTarget


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CRM_GENESYS_DATA_DIR", str(tmp_path))
    for name in (*GENESYS_CONNECTION_VARS, "CRM_MAPPING"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _schema(name: str) -> dict | None:
    async def find() -> dict | None:
        async with GenesysTarget.embedded(settings.emulator_db_path()).client() as client:
            return await client.find_contact_schema(name)

    return asyncio.run(find())


def test_schema_push_creates_keeps_then_updates_the_contact_schema(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = load_mapping(settings.crm_mapping_path())
    assert mapping.custom_fields is not None
    name = mapping.custom_fields.schema_name

    assert main(["schema", "push"]) == 0
    first = _schema(name)
    assert main(["schema", "push"]) == 0
    unchanged = _schema(name)
    assert "unchanged" in capsys.readouterr().out
    grown = data_dir / "grown.yaml"
    grown.write_text(
        settings.DEMO_MAPPING.read_text().replace(
            "    website:", "    segment: {column: segment, type: text}\n    website:"
        )
    )
    assert main(["schema", "push", "--mapping", str(grown)]) == 0
    second = _schema(name)

    assert first is not None and unchanged is not None and second is not None
    assert unchanged["version"] == first["version"]
    assert second["id"] == first["id"]
    assert second["version"] == first["version"] + 1
    declared = set(second["jsonSchema"]["properties"])
    assert len(declared) == len(mapping.custom_fields.fields) + 1
    assert any(p.startswith("customer_tier") for p in declared)


def test_check_without_credentials_says_what_to_set(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check"]) == 2
    assert "GENESYS_CLIENT_ID" in capsys.readouterr().err


def test_crm_generate_refuses_to_overwrite(data_dir: Path) -> None:
    assert main(["crm", "generate", "--rows", "50", "--windows", "2"]) == 0
    assert settings.demo_crm_path().exists()
    assert main(["crm", "generate", "--rows", "50"]) == 2
