"""The live path through Dagster: the sensor's ranges and cursor, live runs into the embedded
emulator, and the window that later covers what a live run sent."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from crm_genesys.crm.demo import format_modified, generate_demo_crm
from crm_genesys.defs.live import LANE_TAG, genesys_live_sync, sync_live_changes
from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.accounting import BUCKETS
from crm_genesys.sync.live import LIVE_LABEL, LiveCursor
from crm_genesys_tests.defs.conftest import WINDOWS, World

API_PREFIX = "/api/v2/externalcontacts/"
TARGET_S = 60.0
# Enough rows that the full sync's creates hold the default budget for a good while.
FULL_ROWS = 8_000
LIVE_EDITS = 30


def live_run(world: World, start: datetime, end: datetime) -> dg.ExecuteInProcessResult:
    """One run of `live_sync_job` for [start, end), as the sensor launches it."""
    return world.definitions.resolve_job_def("live_sync_job").execute_in_process(
        instance=world.instance,
        run_config={
            "ops": {
                genesys_live_sync.key.to_python_identifier(): {
                    "config": {"start": start.isoformat(), "end": end.isoformat()}
                }
            }
        },
    )


def materialization(result: dg.ExecuteInProcessResult, node: str) -> dict:
    (event,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in event.metadata.items()}


def api_requests(world: World, since: int) -> list:
    return [r for r in world.emulator.requests(since=since) if API_PREFIX in r.path]


def last_seq(world: World) -> int:
    entries = world.emulator.requests()
    return entries[-1].seq if entries else 0


def state(world: World) -> SyncStateStore:
    return world.state.store()


def rows_by_window_label(store: SyncStateStore) -> dict[str, set[str]]:
    import sqlalchemy as sa

    from crm_genesys.state.store import contact_state

    out: dict[str, set[str]] = {}
    with store.engine.connect() as conn:
        for key, label in conn.execute(
            sa.select(contact_state.c.business_key, contact_state.c["window"])
        ):
            out.setdefault(str(label), set()).add(str(key))
    return out


def changed_since(world: World, moment: datetime) -> set[str]:
    """Business keys (the demo's account numbers) with a CRM row modified at or after `moment`."""
    conn = sqlite3.connect(world.crm_path)
    try:
        rows = conn.execute(
            "SELECT DISTINCT account_number FROM contacts WHERE modified_at >= ?",
            (format_modified(moment),),
        ).fetchall()
    finally:
        conn.close()
    return {str(r[0]).strip() for r in rows if r[0]}


def window_start(key: str) -> datetime:
    return datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)


def test_what_a_live_run_sent_costs_its_window_nothing(world: World) -> None:
    world.materialize(WINDOWS[0])
    start = window_start(WINDOWS[1])
    middle = start + timedelta(minutes=30)

    live = live_run(world, start, middle)
    assert live.success
    facts = materialization(live, "genesys_live_sync")
    assert facts["changes_sent"] > 0 and facts["failed"] == 0
    assert facts["extracted"] == sum(facts[b] for b in BUCKETS)
    # A latency per change sent, in seconds (the CRM stamps are hours old here).
    assert facts["latency_p50_s"] > 0 and facts["latency_max_s"] >= facts["latency_p95_s"]
    with state(world) as store:
        live_keys = rows_by_window_label(store)[LIVE_LABEL]
    assert live_keys

    before = last_seq(world)
    window = world.materialize(WINDOWS[1])
    summary = materialization(window, "genesys_sync")
    # The window's watermark holds exactly, and it wrote none of the keys the live run sent.
    assert summary["accounted"] is True and summary["failed"] == 0
    assert summary["extracted"] == sum(summary[b] for b in BUCKETS)
    assert summary["unchanged"] >= len(live_keys)
    with state(world) as store:
        labels = rows_by_window_label(store)
    # Keys the CRM changed again after the live range are the window's to send; the others
    # the window left alone: not one request for them.
    settled = live_keys - changed_since(world, middle)
    assert len(settled) > len(live_keys) // 2
    assert settled <= labels[LIVE_LABEL]
    assert not (labels.get(WINDOWS[1], set()) & settled)
    # It sent what the live run had not.
    written = [r for r in api_requests(world, before) if "/bulk/contacts/" in r.path]
    assert written and summary["created"] + summary["updated"] + summary["deleted"] > 0


def test_a_live_run_over_a_whole_window_leaves_it_nothing_to_send(world: World) -> None:
    world.materialize(WINDOWS[0])
    start = window_start(WINDOWS[1])
    assert live_run(world, start - world.crm.lookback, start + timedelta(hours=1)).success

    before = last_seq(world)
    summary = materialization(world.materialize(WINDOWS[1]), "genesys_sync")
    assert api_requests(world, before) == [], "the window sent requests for what was live-synced"
    assert summary["accounted"] is True
    assert summary["created"] + summary["updated"] + summary["deleted"] == 0
    assert summary["extracted"] == sum(summary[b] for b in BUCKETS)


def _touch(world: World, count: int, when: datetime, skip: int = 0) -> list[str]:
    """Edit `count` CRM rows as the CRM's users would: new last names, modified at `when`."""
    conn = sqlite3.connect(world.crm_path)
    try:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM contacts WHERE is_deleted = 0 ORDER BY id LIMIT ? OFFSET ?",
                (count, skip),
            )
        ]
        stamp = format_modified(when)
        for n, row_id in enumerate(ids):
            conn.execute(
                "UPDATE contacts SET last_name = ?, modified_at = ? WHERE id = ?",
                (f"Live{n}-{uuid.uuid4().hex[:6]}", stamp, row_id),
            )
        conn.commit()
    finally:
        conn.close()
    return [str(i) for i in ids]


def cursor_time(cursor: str | None) -> datetime:
    loaded = LiveCursor.load(cursor)
    assert loaded is not None
    return loaded.upto


def tick(world: World, cursor: str | None) -> tuple[object, str | None]:
    context = dg.build_sensor_context(
        instance=world.instance, cursor=cursor, resources={"crm": world.crm}
    )
    result = sync_live_changes(context)
    return result, context.cursor


def test_the_sensor_hands_each_change_to_one_live_run(recent_world: World) -> None:
    world = recent_world
    first, cursor = tick(world, None)
    assert isinstance(first, dg.SkipReason)
    started = LiveCursor.load(cursor)
    assert started is not None

    quiet, cursor = tick(world, cursor)
    assert isinstance(quiet, dg.SkipReason)

    _touch(world, 12, datetime.now(UTC))
    request, cursor = tick(world, cursor)
    assert isinstance(request, dg.RunRequest)
    config = request.run_config["ops"][genesys_live_sync.key.to_python_identifier()]["config"]
    moved = LiveCursor.load(cursor)
    assert moved is not None and moved.upto == datetime.fromisoformat(config["end"])
    # The range starts the overlap before the old cursor: late commits are read again.
    assert datetime.fromisoformat(config["start"]) < started.upto
    assert request.tags["crm_genesys/live_to"] == config["end"]

    result = live_run(world, datetime.fromisoformat(config["start"]), moved.upto)
    facts = materialization(result, "genesys_live_sync")
    assert facts["extracted"] == 12 and facts["failed"] == 0
    assert facts["changes_sent"] == facts["created"] + facts["updated"] > 0
    assert 0 <= facts["latency_p50_s"] <= facts["latency_max_s"] < 120
    assert result.dagster_run.tags[LANE_TAG] == "live"
    assert result.dagster_run.tags["dagster/priority"] == "10"

    # Nothing new since: no run.
    again, _ = tick(world, cursor)
    assert isinstance(again, dg.SkipReason)


def test_at_most_n_live_runs_are_queued_and_the_range_grows(
    recent_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = recent_world
    monkeypatch.setenv("CRM_GENESYS_LIVE_MAX_RUNS", "1")
    _, cursor = tick(world, None)
    _touch(world, 3, datetime.now(UTC))
    job = world.definitions.resolve_job_def("live_sync_job")
    some = {"start": cursor_time(cursor).isoformat(), "end": cursor_time(cursor).isoformat()}
    world.instance.create_run_for_job(
        job,
        run_config={"ops": {genesys_live_sync.key.to_python_identifier(): {"config": some}}},
        status=dg.DagsterRunStatus.STARTED,
    )

    busy, held = tick(world, cursor)
    assert isinstance(busy, dg.SkipReason) and "queued or in flight" in str(busy.skip_message)
    assert held == cursor, "the cursor moved while nothing was launched"

    for record in world.instance.get_run_records():
        world.instance.report_run_canceled(record.dagster_run)
    _touch(world, 4, datetime.now(UTC), skip=3)
    request, _ = tick(world, held)
    assert isinstance(request, dg.RunRequest)
    config = request.run_config["ops"][genesys_live_sync.key.to_python_identifier()]["config"]
    start, end = datetime.fromisoformat(config["start"]), datetime.fromisoformat(config["end"])
    with world.crm.source(world.crm.mapping()) as source:
        assert source.count(start, end) >= 7  # both edits, in one larger range


def test_a_flood_is_cut_into_bounded_ranges(
    recent_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = recent_world
    monkeypatch.setenv("CRM_GENESYS_LIVE_MAX_ROWS", "10")
    monkeypatch.setenv("CRM_GENESYS_LIVE_OVERLAP_SECONDS", "0")
    _, cursor = tick(world, None)
    now = datetime.now(UTC)
    for n in range(5):  # 5 x 8 rows, a millisecond apart
        conn = sqlite3.connect(world.crm_path)
        ids = [r[0] for r in conn.execute("SELECT id FROM contacts LIMIT 8 OFFSET ?", (8 * n,))]
        for row_id in ids:
            conn.execute(
                "UPDATE contacts SET modified_at = ? WHERE id = ?",
                (format_modified(now + timedelta(milliseconds=n)), row_id),
            )
        conn.commit()
        conn.close()
    seen = 0
    with world.crm.source(world.crm.mapping()) as source:
        for _ in range(10):
            request, cursor = tick(world, cursor)
            if not isinstance(request, dg.RunRequest):
                break
            config = request.run_config["ops"][genesys_live_sync.key.to_python_identifier()][
                "config"
            ]
            rows = source.count(
                datetime.fromisoformat(config["start"]), datetime.fromisoformat(config["end"])
            )
            assert rows <= 10
            seen += rows
    assert seen == 40


def test_a_full_sync_at_the_same_time_does_not_delay_live_changes_beyond_the_target(
    recent_world: World,
) -> None:
    """The real full sync holds the embedded org's budget (300/min, the platform's default)
    and its pool's one slot for long enough; live changes made meanwhile reach Genesys within
    the 60 s target, before the full sync ends, with no 429 and no duplicate, and both account
    for every row."""
    with dg.instance_for_test(overrides=POOLS_AS_DEPLOYED) as instance:
        check_full_sync_beside_live(dataclasses.replace(recent_world, instance=instance))


# Pools as the instances of the project configure them: one slot each, claimed by steps.
POOLS_AS_DEPLOYED = {"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}


def check_full_sync_beside_live(world: World) -> None:
    generate_demo_crm(
        world.crm_path, rows=FULL_ROWS, seed=11, now=world.now, windows=2,
        window=timedelta(hours=1),
    )  # fmt: skip
    full: dict[str, dg.ExecuteInProcessResult] = {}

    def full_sync() -> None:
        full["result"] = world.definitions.resolve_job_def("full_sync_job").execute_in_process(
            instance=world.instance, raise_on_error=False
        )

    runner = threading.Thread(target=full_sync, daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    # The full sync holds the budget: a good part of the platform's minute is its.
    while sum(u.ours for u in world.emulator.rate_usage()) < 20:
        assert time.monotonic() < deadline and runner.is_alive(), "the full sync sent nothing"
        time.sleep(0.2)

    # Contacts the full sync has created already (their claims are released): the live run
    # updates them while the full sync goes on with the rest.
    created = {
        x["value"] for c in world.emulator.all_contacts() for x in c.get("externalIds") or []
    }
    conn = sqlite3.connect(world.crm_path)
    single = {
        str(k).strip()
        for (k,) in conn.execute(
            "SELECT account_number FROM contacts GROUP BY account_number HAVING COUNT(*) = 1"
        )
    }
    keys = sorted(created & single)[:LIVE_EDITS]
    assert len(keys) == LIVE_EDITS
    edited = datetime.now(UTC)
    with conn:
        conn.executemany(
            "UPDATE contacts SET last_name = ?, modified_at = ? WHERE account_number = ?",
            [(f"Live{n}", format_modified(edited), k) for n, k in enumerate(keys)],
        )
    conn.close()
    live = live_run(world, edited - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1))
    live_done = datetime.now(UTC)
    assert runner.is_alive(), "the full sync ended first: nothing was shown"
    runner.join(timeout=300)

    facts = materialization(live, "genesys_live_sync")
    assert live.success and facts["failed"] == 0 and facts["held"] == 0
    assert facts["changes_sent"] == LIVE_EDITS
    assert facts["latency_max_s"] < TARGET_S, facts
    assert (live_done - edited).total_seconds() < TARGET_S
    result = full["result"]
    assert result.success
    summary = {
        k: getattr(v, "value", v)
        for k, v in result.asset_materializations_for_node("genesys_full_sync")[0].metadata.items()
    }
    assert summary["accounted"] is True and summary["failed"] == 0
    assert sum(u.ours_429 for u in world.emulator.rate_usage()) == 0
    held = Counter(
        x["value"] for c in world.emulator.all_contacts() for x in c.get("externalIds") or []
    )
    assert held and max(held.values()) == 1, "duplicate ExternalIds"
    by_key = {x["value"]: c for c in world.emulator.all_contacts() for x in c["externalIds"]}
    assert [by_key[k]["lastName"] for k in keys] == [f"Live{n}" for n in range(LIVE_EDITS)]


def test_the_sensor_looks_at_every_loop_of_the_daemon() -> None:
    """The daemon evaluates sensors once per loop of 5 s and counts a sensor's interval from
    the end of its last tick: an interval of 5 would look only every other loop (10 s)."""
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

    assert sync_live_changes.minimum_interval_seconds is not None
    assert sync_live_changes.minimum_interval_seconds < MIN_INTERVAL_LOOP_TIME
