"""The retry sensor on real run history: growing delays up to a cap, failed attempts only,
backfills seen, windows in progress left alone, a clear word when it stops, and the ordering of
a retried old window against a newer one."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from crm_genesys.defs.automation import (
    ATTENTION_TAG,
    RetryCursor,
    RetryPolicy,
    WindowHistory,
    decide,
    plan_retries,
    retry_failed_windows,
)
from crm_genesys.defs.resources import CrmResource
from crm_genesys.emulator.faults import FaultConfig
from crm_genesys_tests.defs.conftest import WINDOWS, World

POLICY = RetryPolicy(max_attempts=5, base_delay=timedelta(minutes=10), max_delay=timedelta(hours=1))


def _broken(world: World) -> World:
    """The world with a CRM that cannot be read: a window fails at its first step."""
    return world.but(
        crm=CrmResource(
            database_url=f"sqlite:///{world.root / 'no-such-dir' / 'crm.db'}",
            mapping_path=world.crm.mapping_path,
        )
    )


def _tick(world: World, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=world.instance, definitions=world.definitions, cursor=cursor
    )
    result = retry_failed_windows(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _last_failure_at(world: World, window: str) -> float:
    records = world.instance.get_run_records(
        dg.RunsFilter(tags={"dagster/partition": window}, statuses=[dg.DagsterRunStatus.FAILURE]),
        limit=1,
    )
    return float(records[0].end_time)


def test_delays_double_after_each_failed_attempt_and_stop_at_the_cap() -> None:
    delays = [POLICY.delay(n) for n in range(1, 6)]
    assert delays == [timedelta(minutes=m) for m in (10, 20, 40, 60, 60)]
    for failures, delay in zip(range(1, 5), delays, strict=False):
        history = WindowHistory("w", failures=failures, last_failure_at=1000.0)
        due = 1000.0 + delay.total_seconds()
        assert decide(history, POLICY, due - 1).action == "wait"
        assert decide(history, POLICY, due).action == "retry"
    stopped = decide(WindowHistory("w", failures=5, last_failure_at=0.0), POLICY, 1e12)
    assert stopped.action == "give_up" and "failed 5 times" in stopped.reason


def test_the_delay_grows_with_the_failed_runs_of_the_window(world: World) -> None:
    broken, window = _broken(world), WINDOWS[0]
    assert not broken.materialize(window, raise_on_error=False).success
    cursor = RetryCursor()
    first = _last_failure_at(world, window)
    (wait,) = plan_retries(world.instance, cursor, POLICY, first + 599)
    assert (wait.action, wait.failures) == ("wait", 1)
    (go,) = plan_retries(world.instance, cursor, POLICY, first + 600)
    assert (go.action, go.run_key) == ("retry", f"retry:{window}:1")

    assert not broken.materialize(window, raise_on_error=False).success
    second = _last_failure_at(world, window)
    (wait,) = plan_retries(world.instance, cursor, POLICY, second + 1199)
    assert (wait.action, wait.failures) == ("wait", 2)
    (go,) = plan_retries(world.instance, cursor, POLICY, second + 1200)
    assert (go.action, go.run_key) == ("retry", f"retry:{window}:2")


def test_canceled_runs_are_not_failed_attempts(world: World) -> None:
    broken, window = _broken(world), WINDOWS[0]
    assert not broken.materialize(window, raise_on_error=False).success
    run = DagsterRun(
        job_name="sync_job",
        run_id=uuid.uuid4().hex,
        status=dg.DagsterRunStatus.CANCELED,
        tags={"dagster/partition": window},
    )
    world.instance.add_run(run)
    (decision,) = plan_retries(world.instance, RetryCursor(), POLICY, 1e12)
    assert (decision.action, decision.failures) == ("retry", 1)


def test_a_window_with_a_run_in_progress_is_never_requested(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_GENESYS_RETRY_BASE_DELAY_MINUTES", "0")
    window = WINDOWS[0]
    assert not _broken(world).materialize(window, raise_on_error=False).success
    running = DagsterRun(
        job_name="sync_job",
        run_id=uuid.uuid4().hex,
        status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": window},
    )
    world.instance.add_run(running)
    result = _tick(world)
    assert result.run_requests == []
    # It is still watched: once the run is over (failed), the window is retried.
    world.instance.report_run_failed(world.instance.get_run_by_id(running.run_id))
    later = _tick(world, result.cursor)
    assert [r.partition_key for r in later.run_requests or []] == [window]


def test_a_failed_backfill_window_long_past_is_retried(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_GENESYS_RETRY_BASE_DELAY_MINUTES", "0")
    broken, window = _broken(world), WINDOWS[0]
    # What the UI launches for an asset backfill: the implicit asset job over the window's
    # assets, tagged with the backfill.
    job = broken.definitions.resolve_implicit_global_asset_job_def()
    window_assets = ("crm_contacts", "normalized_contacts", "contact_changes", "genesys_sync")
    result = job.execute_in_process(
        partition_key=window,
        asset_selection=[dg.AssetKey(name) for name in window_assets],
        instance=world.instance,
        raise_on_error=False,
        tags={"dagster/backfill": "bf1"},
    )
    assert not result.success and job.name == "__ASSET_JOB"
    tick = _tick(world)
    assert [(r.partition_key, r.run_key) for r in tick.run_requests or []] == [
        (window, f"retry:{window}:1")
    ]
    # The next tick reads no failure twice: the same request, deduplicated by its run key.
    again = _tick(world, tick.cursor)
    assert [r.run_key for r in again.run_requests or []] == [f"retry:{window}:1"]


def test_a_window_no_longer_retried_says_why_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_GENESYS_RETRY_BASE_DELAY_MINUTES", "0")
    monkeypatch.setenv("CRM_GENESYS_MAX_WINDOW_ATTEMPTS", "2")
    broken, window = _broken(world), WINDOWS[0]
    cursor = None
    for attempt in (1, 2):
        assert not broken.materialize(window, raise_on_error=False).success
        tick = _tick(world, cursor)
        cursor = tick.cursor
        if attempt == 1:
            assert [r.run_key for r in tick.run_requests or []] == [f"retry:{window}:1"]
    assert tick.run_requests == []
    (event,) = tick.asset_events
    assert isinstance(event, dg.AssetObservation) and event.partition == window
    assert "failed 2 times" in (event.description or "")
    last = world.instance.get_run_records(
        dg.RunsFilter(tags={"dagster/partition": window}), limit=1
    )[0].dagster_run
    assert (
        "no more automatic retries" in world.instance.get_run_by_id(last.run_id).tags[ATTENTION_TAG]
    )
    # Said once: the next tick is quiet.
    quiet = _tick(world, cursor)
    assert quiet.run_requests == [] and not quiet.asset_events


def _newer_copies(world: World, window_start: str, newer_at: str, count: int) -> list[str]:
    """Give `count` customers of the first window a newer record (new internal id, a later
    modification in the next window, another last name), as a CRM re-index or a merge does."""
    with sqlite3.connect(world.crm_path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM contacts WHERE modified_at >= ? AND modified_at < ? AND is_deleted = 0"
            " AND account_number LIKE 'AC-%' AND last_name IS NOT NULL ORDER BY id LIMIT ?",
            (window_start, newer_at[:13] + ":00:00", count),
        ).fetchall()
        top = db.execute("SELECT MAX(id) FROM contacts").fetchone()[0]
        for i, row in enumerate(rows, start=1):
            values = dict(row)
            values.update(id=top + i, last_name="Newer", modified_at=newer_at)
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            db.execute(f"INSERT INTO contacts ({names}) VALUES ({marks})", list(values.values()))
    return [str(r["account_number"]) for r in rows]


def test_a_retried_old_window_never_overwrites_a_newer_one(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_GENESYS_RETRY_BASE_DELAY_MINUTES", "0")
    first, second = WINDOWS
    accounts = _newer_copies(world, "2026-11-29 10:00:00", "2026-11-29 11:30:00.000000", 8)
    assert len(accounts) == 8

    world.emulator.set_faults(FaultConfig(p_item_failure=1.0))
    assert not world.materialize(first, raise_on_error=False).success
    world.emulator.set_faults(FaultConfig())
    assert world.materialize(second).success

    (request,) = _tick(world).run_requests or []
    assert request.partition_key == first
    job = world.definitions.resolve_job_def("sync_job")
    retried = job.execute_in_process(
        partition_key=first, instance=world.instance, tags=dict(request.tags)
    )
    assert retried.success
    (event,) = retried.asset_materializations_for_node("genesys_sync")
    assert int(event.metadata["stale"].value) >= len(accounts)  # type: ignore[arg-type]

    held = {
        c["externalIds"][0]["value"]: c
        for c in world.emulator.all_contacts()
        if c.get("externalIds")
    }
    keys = [k for k in held if any(k.endswith(a) for a in accounts)]
    assert len(keys) == len(accounts)
    assert {held[k]["lastName"] for k in keys} == {"Newer"}
