"""Starting from the CRM as it is, through Dagster: the full sync of a CRM modified over two
years, the cutover to the windows (launched by the `cutover_windows` sensor), activity, hard
deletes in the CRM and hand edits in Genesys, the mirror and the reconciliation that repairs, and
dry runs of a window, a full sync and a reconciliation."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.crm.simulate import simulate_activity
from crm_genesys.defs.full_sync import CUTOVER_TAG, cutover_windows
from crm_genesys.defs.partitions import partition_key_for, sync_windows, window_bounds
from crm_genesys.state.store import SyncStateStore
from crm_genesys_tests.defs.conftest import WINDOWS, World
from crm_genesys_tests.oracle import expected_contacts
from crm_genesys_tests.sync.test_full_sync import hard_delete

FAR = datetime(2100, 1, 1, tzinfo=UTC)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def full_sync(world: World, **config: Any) -> dg.ExecuteInProcessResult:
    return world.definitions.resolve_job_def("full_sync_job").execute_in_process(
        instance=world.instance,
        run_config={"ops": {"genesys_full_sync": {"config": {"chunk_rows": 250, **config}}}},
        raise_on_error=False,
    )


def reconcile(world: World, **config: Any) -> tuple[dict[str, int], dict[str, Any]]:
    result = world.definitions.resolve_job_def("reconcile_job").execute_in_process(
        instance=world.instance,
        run_config={"ops": {"reconcile_genesys": {"config": {"chunk_rows": 250, **config}}}},
    )
    output = result.output_for_node("reconcile_genesys")
    events = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in events[0].step_output_data.metadata.items()}
    return output, metadata


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    events = result.asset_materializations_for_node("genesys_full_sync")
    assert events, "the full sync did not materialize"
    return {k: getattr(v, "value", v) for k, v in events[0].metadata.items()}


def genesys(world: World) -> dict[str, dict]:
    contacts = world.emulator.all_contacts()
    keys = Counter(x["value"] for c in contacts for x in c.get("externalIds") or [])
    assert not [k for k, n in keys.items() if n > 1], "duplicate ExternalIds"
    return {x["value"]: c for c in contacts for x in c.get("externalIds") or []}


def assert_genesys_is_the_crm(world: World) -> None:
    """The emulator equals an independent reading of the CRM: same keys, same names."""
    want = expected_contacts(world.crm_path, EPOCH, FAR, strict_dots=True)
    held = genesys(world)
    assert set(held) == set(want), (set(held) ^ set(want)).__len__()
    wrong = [
        k
        for k, c in want.items()
        if (held[k].get("firstName"), held[k].get("lastName")) != (c.first_name, c.last_name)
    ]
    assert not wrong, wrong[:5]


def requested_windows(
    world: World, result: dg.ExecuteInProcessResult, tags: dict[str, str] | None = None
) -> list[str]:
    """What `cutover_windows` asks for after this full-sync run (its tags replaced by `tags`)."""
    run = world.instance.get_run_by_id(result.run_id)
    assert run is not None
    if tags is not None:
        run = run._replace(tags={**run.tags, **tags})
    context = dg.build_run_status_sensor_context(
        sensor_name=cutover_windows.name,
        dagster_instance=world.instance,
        dagster_run=run,
        dagster_event=result.get_run_success_event(),
    )
    requests = list(cutover_windows(context) or [])
    return [r.partition_key for r in requests]


def test_start_from_the_crm_as_it_is(recent_world: World) -> None:
    world = recent_world
    now = datetime.now(UTC)
    # Two years of modifications (in hourly windows, so that the activity below lands in one
    # window), most of them long before the first window.
    generate_demo_crm(
        world.crm_path, rows=1_200, seed=8, now=now, windows=2 * 365 * 24, window=timedelta(hours=1)
    )

    # 1. The full sync: the whole CRM, in chunks, with a window's accounting.
    started = datetime.now(UTC)
    first = full_sync(world)
    assert first.success
    summary = metadata(first)
    assert summary["accounted"] and summary["extracted"] == 1_200
    assert summary["chunks"] == 5 and summary["failed"] == 0
    assert_genesys_is_the_crm(world)

    # 2. The cutover: from the window holding T0 - lookback up to the last closed window.
    t0 = datetime.fromisoformat(summary["cutover_t0"])
    assert started <= t0 <= datetime.now(UTC)
    start = partition_key_for(t0 - timedelta(minutes=5))
    assert summary["cutover_from_window"] == start
    assert world.instance.get_run_by_id(first.run_id).tags[CUTOVER_TAG] == start  # type: ignore[union-attr]
    keys = sync_windows.get_partition_keys()
    # From the cutover window to the last closed one (none yet when it is still open: then
    # `sync_schedule` runs it when it closes).
    assert requested_windows(world, first) == [k for k in keys if k >= start]

    # Activity in the last closed window, then the windows take over.
    last = keys[-1]
    window_start, _ = window_bounds(last)
    simulate_activity(
        world.crm_path,
        now=window_start + timedelta(minutes=30),
        seed=2,
        updates=40,
        deletes=10,
        reindex=10,
        creates=20,
        new_column=None,
    )
    assert world.materialize(last).success
    assert_genesys_is_the_crm(world)

    # 3. Outside the sync: rows purged in the CRM, contacts edited, deleted and duplicated by
    # hand in Genesys, and one carrying our External Source that no CRM key explains.
    held = genesys(world)
    keys_held = sorted(held)
    hard_delete(world.crm_path, keys_held[:4])
    emulator = world.emulator
    edited = keys_held[10:13]
    originals = {k: (held[k]["firstName"], held[k].get("workPhone")) for k in edited}
    for key in edited:
        body = {k: v for k, v in held[key].items() if k not in ("workPhone",)}
        body["firstName"] = "Edited by hand"
        emulator.update_contact(held[key]["id"], body)
    for key in keys_held[20:23]:
        emulator.delete_contact(held[key]["id"])
    source = held[keys_held[30]]["externalIds"][0]["externalSource"]
    twin = {k: v for k, v in held[keys_held[30]].items() if k in ("firstName", "lastName")}
    emulator.create_contact({**twin, "externalIds": held[keys_held[30]]["externalIds"]})
    emulator.create_contact(
        {"firstName": "Nobody", "externalIds": [{"externalSource": source, "value": "AC-9999999"}]}
    )

    # The mirror (a full sync again): the purged keys are deleted, nothing else is sent.
    second = full_sync(world)
    assert second.success
    again = metadata(second)
    assert again["mirror_deleted"] == 4 and again["created"] == 0 and again["updated"] == 0

    # 4. The reconciliation: first as a dry run (nothing sent), then repairing.
    writes = len([e for e in emulator.requests() if "/bulk/" in e.path])
    found, shown = reconcile(world)
    assert (found["missing"], found["edited"], found["duplicates"]) == (3, 3, 1)
    assert found["unknown"] == 1 and found["scan_requests"] >= 1
    assert shown["would_create"] == 3 and shown["would_update"] == 3
    assert shown["would_delete"] == 1  # the duplicate (unknown ones only on request)
    assert len([e for e in emulator.requests() if "/bulk/" in e.path]) == writes

    repaired, _ = reconcile(world, repair=True, remove_unknown=True)
    assert repaired["created"] == 3 and repaired["updated"] == 3 and repaired["removed"] == 2
    assert_genesys_is_the_crm(world)
    now_held = genesys(world)
    assert "AC-9999999" not in now_held
    for key, (first_name, phone) in originals.items():
        assert now_held[key]["firstName"] == first_name
        assert (now_held[key].get("workPhone") or {}).get("e164") == (phone or {}).get("e164")
    final, _ = reconcile(world)
    assert final["matched"] == len(now_held) and not any(
        final[k] for k in ("missing", "edited", "duplicates", "unknown")
    )
    with SyncStateStore(world.state.url) as store:
        assert store.counts()["intents_pending"] == 0


def test_cutover_windows_requests_every_closed_window_from_the_cutover_on(
    recent_world: World,
) -> None:
    result = full_sync(recent_world)
    assert result.success
    keys = sync_windows.get_partition_keys()
    assert requested_windows(recent_world, result, {CUTOVER_TAG: keys[-3]}) == keys[-3:]
    # A dry run carries no cutover: nothing is handed over.
    dry = full_sync(recent_world, dry_run=True)
    assert requested_windows(recent_world, dry) == []


def test_a_full_sync_dry_run_previews_and_hands_nothing_over(world: World) -> None:
    result = full_sync(world, dry_run=True)
    assert result.success
    assert not result.asset_materializations_for_node("genesys_full_sync")
    observed = [
        e.asset_observation_data.asset_observation.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    preview = observed[-1]
    assert preview["would_create"].value > 0 and preview["dry_run"].value is True
    assert "nothing was sent" in preview["preview"].value
    assert world.emulator.all_contacts() == []
    assert CUTOVER_TAG not in world.instance.get_run_by_id(result.run_id).tags  # type: ignore[union-attr]
    with SyncStateStore(world.state.url) as store:
        assert store.counts()["contacts_live"] == 0 and store.binding("genesys_org") is None


def test_a_window_dry_run_shows_what_it_would_do_and_does_not_materialize(world: World) -> None:
    world.materialize(WINDOWS[0])
    contacts_before = world.emulator.all_contacts()
    result = world.materialize(
        WINDOWS[1], run_config={"ops": {"genesys_sync": {"config": {"dry_run": True}}}}
    )
    assert result.success
    assert not result.asset_materializations_for_node("genesys_sync")
    status = world.instance.get_status_by_partition(
        dg.AssetKey("genesys_sync"), WINDOWS, sync_windows
    )
    assert status is not None and status.get(WINDOWS[1]) != dg.AssetPartitionStatus.MATERIALIZED
    observed = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observed and observed[0].partition == WINDOWS[1]
    would = observed[0].metadata
    assert would["would_create"].value > 0
    assert world.emulator.all_contacts() == contacts_before

    # The real run afterwards does what the preview said.
    real = world.materialize(WINDOWS[1])
    done = real.asset_materializations_for_node("genesys_sync")[0].metadata
    assert done["created"].value == would["would_create"].value
    assert done["updated"].value == would["would_update"].value
    assert done["deleted"].value == would["would_delete"].value


SALES = "6f1c2d3e-4b5a-4c7d-8e9f-a0b1c2d3e4f5"  # a division of the emulator's org


def _with_division(world: World, division: str) -> World:
    from crm_genesys import settings
    from crm_genesys.defs.resources import CrmResource

    mapping = world.root / f"division-{division}.yaml"
    mapping.write_text(settings.DEMO_MAPPING.read_text() + f"\ndivision: {division}\n")
    crm = CrmResource(database_url=world.crm.database_url, mapping_path=str(mapping))
    return world.realistic().but(crm=crm)


def test_the_full_sync_creates_contacts_in_the_mappings_division(world: World) -> None:
    real = _with_division(world, SALES)
    assert full_sync(real).success
    ours = [c for c in real.emulator.all_contacts() if c.get("externalIds")]
    assert ours
    assert {(c.get("division") or {}).get("id") for c in ours} == {SALES}


def test_a_full_sync_naming_a_division_the_org_lacks_sends_nothing(world: World) -> None:
    real = _with_division(world, "no-such-division")
    result = full_sync(real)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no-such-division" in str(failure.step_failure_data.error)
    assert [c for c in real.emulator.all_contacts() if c.get("externalIds")] == []
