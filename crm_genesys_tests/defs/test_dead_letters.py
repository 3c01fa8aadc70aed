"""Dead letters drain: each keeps its reason and CRM version; it leaves the table once its change
takes effect, after the CRM row is fixed, after the mapping changes, or when a person asks."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
from pathlib import Path

import dagster as dg
import yaml

from crm_genesys import settings
from crm_genesys.contacts.schema import build_contact_schema
from crm_genesys.defs.dead_letters import DRAIN_TAG, drain_dead_letters
from crm_genesys.defs.resources import CrmResource
from crm_genesys_tests.defs.conftest import WINDOWS, World


def _push_schema(world: World, tiers: list[str]) -> None:
    """The org's contact schema with only `tiers` as customer tiers (someone edited it)."""
    body = copy.deepcopy(build_contact_schema(world.crm.mapping()))
    body["jsonSchema"]["properties"]["customer_tier_enum"]["enum"] = tiers

    async def push() -> None:
        async with world.genesys.resolve().client() as client:
            await client.upsert_contact_schema(body)

    asyncio.run(push())


def _letters(world: World):
    with world.state.store() as store:
        return store.dead_letters()


def _drain(world: World) -> list[dg.RunRequest]:
    context = dg.build_sensor_context(
        instance=world.instance, definitions=world.definitions, resources=world.resources
    )
    result = drain_dead_letters(context)
    return list(result.run_requests or [])


def _run(world: World, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    job = world.definitions.resolve_job_def("sync_job")
    return job.execute_in_process(
        partition_key=request.partition_key, instance=world.instance, tags=dict(request.tags)
    )


def _rejected_window(world: World) -> dg.ExecuteInProcessResult:
    """Window 1 synced while the org refuses the tier Gold: its Gold contacts dead-letter."""
    _push_schema(world, ["Bronze", "Silver", "Platinum"])
    result = world.materialize(WINDOWS[0])
    letters = _letters(world)
    assert len(letters) > 0 and set(letters["op"]) == {"create"}
    assert letters["reason"].str.len().min() > 0 and letters["crm_version"].min() > 0
    return result


def test_rejected_changes_are_grouped_by_reason_in_the_check(world: World) -> None:
    result = _rejected_window(world)
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "dead_letters")
    assert not check.passed
    assert check.metadata["open_in_window"].value == len(_letters(world))
    table = check.metadata["by_reason"].value
    (row,) = table.records
    assert row.data["op"] == "create" and row.data["letters"] == len(_letters(world))
    # Nothing is due on its own: the mapping is the one the letters were built with.
    assert _drain(world) == []


def test_a_dead_letter_drains_after_the_crm_row_is_fixed(world: World) -> None:
    _rejected_window(world)
    letters = _letters(world)
    fixed = str(letters["crm_id"].iloc[0])
    with sqlite3.connect(world.crm_path) as db:
        db.execute(
            "UPDATE contacts SET customer_tier = 'Silver', modified_at = ? WHERE id = ?",
            ("2026-11-29 11:40:00.000000", fixed),
        )
    assert world.materialize(WINDOWS[1]).success
    after = _letters(world)
    assert fixed not in set(after["crm_id"].astype(str))
    # A letter leaves the table only once its change, or a newer one (an edit, a deletion),
    # holds in Genesys.
    gone = letters[~letters["business_key"].isin(set(after["business_key"]))]
    with world.state.store() as store:
        state = store.snapshot(gone["business_key"].tolist()).set_index("business_key")
    for letter in gone.itertuples():
        assert state.loc[letter.business_key, "crm_version"] >= letter.crm_version
    assert len(after[after["business_key"].isin(set(letters["business_key"]))]) > 0
    key = letters.loc[letters["crm_id"].astype(str) == fixed, "business_key"].iloc[0]
    held = [c for c in world.emulator.all_contacts() if c["externalIds"][0]["value"] == key]
    assert len(held) == 1 and held[0]["customFields"]["customer_tier_enum"] == "Silver"


def test_dead_letters_drain_when_the_mapping_changes(world: World, tmp_path: Path) -> None:
    _rejected_window(world)
    # The mapping no longer sends tiers the org refuses: Gold is dropped from the value.
    document = yaml.safe_load(Path(settings.DEMO_MAPPING).read_text())
    document["custom_fields"]["fields"]["customer_tier"]["options"] = [
        "Bronze",
        "Silver",
        "Platinum",
    ]
    changed = tmp_path / "mapping.yaml"
    changed.write_text(yaml.safe_dump(document))
    world = world.but(
        crm=CrmResource(database_url=world.crm.database_url, mapping_path=str(changed))
    )

    (request,) = _drain(world)
    assert request.partition_key == WINDOWS[0] and request.tags[DRAIN_TAG] == "mapping_changed"
    assert _run(world, request).success
    assert len(_letters(world)) == 0
    assert _drain(world) == []


def test_dead_letters_drain_when_a_person_asks(world: World) -> None:
    _rejected_window(world)
    count = len(_letters(world))
    _push_schema(world, ["Bronze", "Silver", "Gold", "Platinum"])  # the org is fixed
    assert _drain(world) == []
    asked = world.definitions.resolve_job_def("dead_letters_job").execute_in_process(
        instance=world.instance,
        run_config={"ops": {"request_dead_letter_retry": {"config": {"codes": ["invalid.value"]}}}},
    )
    assert asked.success and asked.output_for_node("request_dead_letter_retry") == count
    (request,) = _drain(world)
    assert request.tags[DRAIN_TAG].startswith("requested:")
    result = _run(world, request)
    (event,) = result.asset_materializations_for_node("genesys_sync")
    assert event.metadata["created"].value == count
    assert event.metadata["dead_letters_cleared"].value == count
    assert len(_letters(world)) == 0
