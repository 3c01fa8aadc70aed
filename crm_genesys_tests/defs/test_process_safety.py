"""A killed or stopped run never blocks the next one, and one window never runs twice at once.

Each test drives `crm-genesys sync` processes over a persistent Dagster instance (with the
project's `genesys_api` pool) against an emulator server, as an operator's terminal would.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys_tests.cli_deployment import Deployment, start_deployment

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
WINDOW = "2026-11-29-11:00"


@pytest.fixture
def deployment(tmp_path: Path):
    # 100 ms per request: a window's sync takes long enough to be interrupted mid-way.
    deployment = start_deployment(tmp_path, "--latency-ms", "100")
    generate_demo_crm(
        deployment.crm_path, rows=400, seed=4, now=NOW, windows=2, window=timedelta(hours=1)
    )
    assert deployment.cli("schema", "push").returncode == 0
    yield deployment
    deployment.stop()


def _keys(deployment: Deployment) -> Counter[str]:
    return Counter(
        ext["value"] for c in deployment.contacts() for ext in c.get("externalIds") or []
    )


def _materializations(deployment: Deployment) -> list[dict]:
    """The `genesys_sync` materializations of WINDOW recorded in the instance, as dicts."""
    instance = dg.DagsterInstance.from_config(str(deployment.dagster_home))
    try:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("genesys_sync"), asset_partitions=[WINDOW]),
            limit=100,
        ).records
        return [
            {k: v.value for k, v in r.asset_materialization.metadata.items()}  # type: ignore[union-attr]
            for r in records
        ]
    finally:
        instance.dispose()


def test_a_sync_killed_inside_genesys_sync_does_not_block_the_next_run(
    deployment: Deployment,
) -> None:
    child, signalled = deployment.start_and_signal(WINDOW, after_requests=6)
    assert signalled, "the sync ended before it could be killed"
    child.wait(timeout=30)

    started = time.monotonic()
    status = deployment.sync(WINDOW, timeout=60)  # a run left holding the pool would hang
    assert status == 0, deployment.output()[-3000:]
    assert time.monotonic() - started < 60
    keys = _keys(deployment)
    assert keys and max(keys.values()) == 1


def test_sigterm_stops_a_sync_within_ten_seconds_and_the_rerun_completes(
    deployment: Deployment,
) -> None:
    child, signalled = deployment.start_and_signal(WINDOW, after_requests=6, sig=signal.SIGTERM)
    assert signalled
    sent = time.monotonic()
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        pytest.fail("SIGTERM did not stop the sync:\n" + deployment.output()[-5000:])
    assert time.monotonic() - sent < 10, deployment.output()[-5000:]
    assert child.returncode != 0
    hard_stop = "Timeout (0:00:07)!" in deployment.output()
    with sqlite3.connect(deployment.data_dir / "sync_state.sqlite") as conn:
        (leases,) = conn.execute("SELECT count(*) FROM window_leases").fetchone()
    # An orderly stop releases the lease; a hard stop after the grace period leaves it to be
    # reclaimed by the next run (the re-run below proves it is).
    assert leases == 0 or hard_stop, "a stopped run left its window lease behind"

    assert deployment.sync(WINDOW) == 0, deployment.output()[-3000:]
    keys = _keys(deployment)
    assert keys and max(keys.values()) == 1


def test_two_runs_of_one_window_started_together_never_double_count(
    deployment: Deployment,
) -> None:
    first, second = deployment.start_sync(WINDOW), deployment.start_sync(WINDOW)
    statuses = [first.wait(timeout=240), second.wait(timeout=240)]
    assert 0 in statuses, deployment.output(1)[-2000:] + deployment.output(2)[-2000:]

    keys = _keys(deployment)
    assert keys and max(keys.values()) == 1
    done = _materializations(deployment)
    assert done, "no run materialized the window"
    created = sum(int(m["created"]) for m in done)
    assert created == len(keys), f"{created} creates reported for {len(keys)} contacts"
    for m in done:
        assert m["accounted"] is True
