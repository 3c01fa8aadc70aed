"""A window of CRM activity after the initial load: updates, deletes, a re-index, new contacts
and a new column. A re-index is never a delete followed by a create."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from crm_genesys.crm.simulate import simulate_activity
from crm_genesys.defs.partitions import partition_key_for
from crm_genesys_tests.defs.conftest import NOW, WINDOWS, World
from crm_genesys_tests.oracle import expected_contacts


def _by_key(world: World) -> dict[str, dict]:
    contacts = world.emulator.all_contacts()
    keys = Counter(c["externalIds"][0]["value"] for c in contacts)
    assert max(keys.values()) == 1, "a business key has two contacts"
    return {c["externalIds"][0]["value"]: c for c in contacts}


def test_activity_window_updates_deletes_reindexes_and_creates(world: World) -> None:
    for key in WINDOWS:
        world.materialize(key)
    before = _by_key(world)

    activity = simulate_activity(
        world.crm_path,
        now=NOW,
        seed=5,
        updates=40,
        deletes=10,
        reindex=30,
        creates=25,
        new_column="loyalty_tier",
    )
    window = partition_key_for(activity.window_start)
    result = world.materialize(window)
    (event,) = result.asset_materializations_for_node("genesys_sync")
    summary = {k: v.value for k, v in event.metadata.items()}
    after = _by_key(world)

    # Re-indexed records keep their Genesys contact: same id, nothing deleted or created for them.
    for key in activity.reindexed:
        if key in before:
            assert after[key]["id"] == before[key]["id"]
    for key in activity.deleted_keys:
        assert key not in after
    assert summary["deleted"] == len([k for k in activity.deleted_keys if k in before])
    assert summary["accounted"] is True
    drift = {e.check_name: e for e in result.get_asset_check_evaluations()}["schema_drift"]
    assert "loyalty_tier" in str(drift.metadata)

    first_window = datetime.strptime(WINDOWS[0], "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
    expected = expected_contacts(
        world.crm_path, first_window, activity.window_end, strict_dots=True
    )
    assert set(after) == set(expected)
    for key, contact in after.items():
        assert contact.get("lastName") == expected[key].last_name
