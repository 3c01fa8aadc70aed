"""What a reviewer reads: the same numeric metadata on every materialization (zero-write re-runs
included), one request count, a budget share that a paced run keeps under 1, a markdown summary,
column schemas and owners; and frames at rest: Parquet, owner-only, gone when the window
succeeds unless retention keeps them."""

from __future__ import annotations

import stat
import time

import dagster as dg
import pytest

from crm_genesys.definitions import make_definitions
from crm_genesys.defs.review import SYNC_NUMBERS, budget_share
from crm_genesys.defs.storage import FrameStore
from crm_genesys.emulator.faults import FaultConfig
from crm_genesys_tests.defs.conftest import WINDOWS, World


def _sync_event(result: dg.ExecuteInProcessResult) -> dg.AssetMaterialization:
    (event,) = result.asset_materializations_for_node("genesys_sync")
    return event


def _numbers(event: dg.AssetMaterialization) -> dict[str, float]:
    return {
        k: float(v.value)  # type: ignore[arg-type]
        for k, v in event.metadata.items()
        if isinstance(v.value, int | float) and not isinstance(v.value, bool)
    }


def test_a_zero_write_rerun_reports_the_same_numeric_keys(world: World) -> None:
    first = _numbers(_sync_event(world.materialize(WINDOWS[0])))
    again = _sync_event(world.materialize(WINDOWS[0]))
    second = _numbers(again)
    assert set(first) == set(second) == set(SYNC_NUMBERS)
    assert first["writes"] > 0 and first["requests"] > 0
    assert second["writes"] == 0 and second["requests"] == 0 and second["budget_share"] == 0
    # One request count: what the run sent, the screen-pop lookups included.
    assert first["requests"] >= (
        first["requests_bulk_writes"] + first["requests_screen_pop"] + first["requests_lookups"]
    )
    assert 0 < first["budget_share"] <= 1
    summary = str(again.metadata["summary"].value)
    assert f"Window {WINDOWS[0]}: synced" in summary and "| extracted |" in summary


def test_the_budget_share_counts_at_least_a_minute() -> None:
    # 40 requests in 10 s of a 300/min budget: 40 of one minute's 300, not 40 of 50.
    assert budget_share(40, 10.0, 300) == pytest.approx(40 / 300, abs=1e-4)
    assert budget_share(600, 120.0, 300) == pytest.approx(1.0)
    assert budget_share(0, 0.0, 300) == 0


def test_assets_carry_descriptions_owners_kinds_and_column_schemas(world: World) -> None:
    graph = world.definitions.resolve_asset_graph()
    for key in ("crm_contacts", "normalized_contacts", "contact_changes", "genesys_sync"):
        node = graph.get(dg.AssetKey(key))
        assert node.description and node.owners and node.kinds
    schema = graph.get(dg.AssetKey("normalized_contacts")).metadata["dagster/column_schema"]
    names = [c.name for c in schema.columns]
    assert names[:3] == ["business_key", "crm_id", "crm_version"] and "work_phone" in names


def _run(world: World, store: FrameStore, key: str) -> dg.ExecuteInProcessResult:
    """`sync_job` for `key` with the frames kept in `store`."""
    definitions = make_definitions({**world.resources, "frames": store})
    return definitions.resolve_job_def("sync_job").execute_in_process(
        partition_key=key, instance=world.instance, raise_on_error=False
    )


def test_frames_of_a_failed_window_are_parquet_owner_only_and_go_at_its_success(
    world: World,
) -> None:
    store = FrameStore(base_url=str(world.root / "frames"))
    world.emulator.set_faults(FaultConfig(p_item_failure=1.0))
    assert not _run(world, store, WINDOWS[0]).success
    files = store.files()
    assert {f.parent.parent.name for f in files} == {
        "crm_contacts",
        "normalized_contacts",
        "contact_changes",
    }
    assert {f.suffix for f in files} == {".parquet", ".json"}
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert all(stat.S_IMODE(f.parent.stat().st_mode) == 0o700 for f in files)
    assert not list((world.root).rglob("*.pickle"))

    world.emulator.set_faults(FaultConfig())
    assert _run(world, store, WINDOWS[0]).success
    assert store.files() == []


def test_retention_keeps_the_frames_of_a_successful_window(world: World) -> None:
    store = FrameStore(base_url=str(world.root / "frames"), retention_hours=24)
    assert _run(world, store, WINDOWS[0]).success
    assert any(f.name.endswith(".parquet") for f in store.files())
    # Past the retention, the next successful window's sweep removes them.
    assert store.sweep(now=time.time() + 25 * 3600) == 3
    assert store.files() == []
