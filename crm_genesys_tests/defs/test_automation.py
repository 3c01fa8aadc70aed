"""The Definitions load; the schedule and the retry sensor ask for the right windows."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import dagster as dg
import pytest

from crm_genesys.definitions import defs
from crm_genesys.defs.automation import retry_failed_windows, sync_schedule
from crm_genesys.emulator.faults import FaultConfig
from crm_genesys_tests.defs.conftest import World, windows_before


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_schedule_syncs_the_window_that_just_closed() -> None:
    moment = datetime(2026, 11, 29, 12, 5, tzinfo=UTC)
    context = dg.build_schedule_context(
        scheduled_execution_time=moment, repository_def=defs.get_repository_def()
    )
    schedule = defs.resolve_schedule_def(sync_schedule.name)
    (request,) = list(schedule.evaluate_tick(context).run_requests or [])
    assert request.partition_key == "2026-11-29-11:00"


def test_a_failed_window_is_retried_and_the_retry_sends_only_what_is_missing(
    recent_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_GENESYS_RETRY_BASE_DELAY_MINUTES", "0")
    world = recent_world
    first, second = windows_before(world.now, 2)
    assert world.materialize(first).success

    # Every bulk item fails retryably: the window must fail, not pretend to be synced.
    world.emulator.set_faults(FaultConfig(p_item_failure=1.0))
    assert not world.materialize(second, raise_on_error=False).success

    context = dg.build_sensor_context(instance=world.instance, definitions=world.definitions)
    tick = retry_failed_windows(context)
    assert [(r.partition_key, r.run_key) for r in tick.run_requests] == [
        (second, f"retry:{second}:1")
    ]

    world.emulator.set_faults(FaultConfig())
    before = len(world.emulator.all_contacts())
    assert world.materialize(second).success
    keys = Counter(c["externalIds"][0]["value"] for c in world.emulator.all_contacts())
    assert max(keys.values()) == 1
    assert len(keys) > before

    context = dg.build_sensor_context(
        instance=world.instance, definitions=world.definitions, cursor=tick.cursor
    )
    assert retry_failed_windows(context).run_requests == []
