"""The reconciliation job finds a contact deleted in Genesys by hand; with repair, the next run of
its window re-creates it through the normal path."""

from __future__ import annotations

from crm_genesys_tests.defs.conftest import WINDOWS, World


def _reconcile(world: World, repair: bool) -> dict[str, int]:
    result = world.definitions.resolve_job_def("reconcile_job").execute_in_process(
        instance=world.instance,
        run_config={"ops": {"reconcile_genesys": {"config": {"repair": repair}}}},
    )
    return result.output_for_node("reconcile_genesys")


def test_a_contact_deleted_in_genesys_is_found_and_restored(world: World) -> None:
    for key in WINDOWS:
        world.materialize(key)
    assert _reconcile(world, repair=False)["missing"] == 0

    victim = world.emulator.all_contacts()[0]
    key = victim["externalIds"][0]["value"]
    world.emulator.delete_contact(victim["id"])

    found = _reconcile(world, repair=False)
    assert found["missing"] == 1
    assert _reconcile(world, repair=True)["repaired"] == 1
    for window in WINDOWS:
        world.materialize(window)

    keys = [c["externalIds"][0]["value"] for c in world.emulator.all_contacts()]
    assert keys.count(key) == 1
    assert _reconcile(world, repair=False)["missing"] == 0
