"""One explicit target: where the sync writes is never guessed, and one state drives one org."""

from __future__ import annotations

import pytest

from crm_genesys.defs.resources import GenesysResource
from crm_genesys.emulator import EmulatorConfig, create_app
from crm_genesys_tests.defs.conftest import WINDOWS, World
from crm_genesys_tests.threaded_server import serve_in_thread


def _failure(result) -> tuple[str, str]:
    event = next(e for e in result.all_events if e.is_step_failure)
    data = event.step_failure_data
    text = data.user_failure_data.description if data.user_failure_data else ""
    return event.step_key, f"{text} {data.error.to_string() if data.error else ''}"


def test_no_genesys_setting_at_all_means_the_embedded_emulator() -> None:
    assert GenesysResource.from_env({}).target == "emulator"
    assert GenesysResource.from_env({"CRM_DATABASE_URL": "sqlite://"}).target == "emulator"


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({"GENESYS_CLIENT_ID": "id"}, ["GENESYS_CLIENT_SECRET"]),
        ({"GENESYS_CLIENT_SECRET": "s", "GENESYS_REGION": "eu_central_1"}, ["GENESYS_CLIENT_ID"]),
        ({"GENESYS_REGION": "eu_central_1"}, ["GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET"]),
    ],
)
def test_half_configured_genesys_fails_before_the_crm_is_read(
    world: World, monkeypatch: pytest.MonkeyPatch, present: dict[str, str], missing: list[str]
) -> None:
    for name, value in present.items():
        monkeypatch.setenv(name, value)
    genesys = GenesysResource.from_env()
    assert genesys.target == "genesys"  # never a silent fall-back to the emulator

    result = world.but(genesys=genesys).materialize(WINDOWS[0], raise_on_error=False)

    assert not result.success
    step, text = _failure(result)
    assert step == "crm_contacts"
    for name in missing:
        assert name in text
    assert result.asset_materializations_for_node("crm_contacts") == []
    assert world.emulator.requests() == []


def test_a_state_built_against_the_demo_refuses_another_org(world: World) -> None:
    assert world.materialize(WINDOWS[0]).success
    other = create_app(EmulatorConfig(db_path=world.root / "other-org.sqlite", org_id="0" * 8))
    with serve_in_thread(other) as url:
        real = GenesysResource(
            target="genesys",
            env={
                "GENESYS_BASE_URL": url,
                "GENESYS_CLIENT_ID": "demo-client",
                "GENESYS_CLIENT_SECRET": "demo-secret",
            },
        )
        result = world.but(genesys=real).materialize(WINDOWS[1], raise_on_error=False)

    assert not result.success
    step, text = _failure(result)
    assert step == "genesys_sync"
    assert "the embedded emulator" in text and "SYNC_STATE_URL" in text
    writes = [r for r in other.emulator.requests() if r.method != "GET" and "/oauth/" not in r.path]
    assert writes == [], "a write reached the other org"
    assert other.emulator.all_contacts() == []


def test_run_metadata_names_the_target(world: World) -> None:
    result = world.materialize(WINDOWS[0])
    (extract,) = result.asset_materializations_for_node("crm_contacts")
    (sync,) = result.asset_materializations_for_node("genesys_sync")
    for event in (extract, sync):
        assert "embedded Genesys emulator" in str(event.metadata["target"].value)
