"""Crash safety on the one sync path: `crm-genesys sync` (the Dagster job, in-process, on a
persistent instance) is SIGKILLed in the middle of its writes, then run again.

An emulator server (a real HTTP server in a subprocess) holds the org; the sync runs in a child
process that is killed after the emulator has seen k more requests, at several k, and then re-run
as the retry sensor would. At the end Genesys must hold exactly what an independent reading of the
CRM says: no ExternalId twice, none missing, no stale content, and a last run sends nothing. With
the `hostile` profile the server also drops connections after applying writes, answers 5xx and
429s, fails bulk items, and delays requests.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.crm.simulate import simulate_activity
from crm_genesys.state.store import SyncStateStore
from crm_genesys_tests.cli_deployment import Deployment, start_deployment
from crm_genesys_tests.oracle import expected_contacts

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
WINDOWS = ["2026-11-29-10:00", "2026-11-29-11:00"]
ACTIVITY = "2026-11-29-12:00"
MAX_RUNS = 10


def run_to_completion(deployment: Deployment, window: str) -> None:
    """Re-run (as the retry sensor would) until a run accounts for every row of the window."""
    for _ in range(MAX_RUNS):
        status = deployment.sync(window)
        if status == 0:
            return
        assert status == 1, f"sync crashed:\n{deployment.output()[-3000:]}"
    raise AssertionError(f"no complete run of {window} in {MAX_RUNS} attempts")


def kill_and_rerun(deployment: Deployment, window: str, kill_after: list[int]) -> int:
    kills = 0
    for k in kill_after:
        child, signalled = deployment.start_and_signal(window, k)
        child.wait(timeout=60)
        kills += int(signalled)
    run_to_completion(deployment, window)
    return kills


def assert_exact(deployment: Deployment, end: datetime) -> None:
    contacts = deployment.contacts()
    keys = Counter(ext["value"] for c in contacts for ext in c.get("externalIds") or [])
    duplicates = {k: n for k, n in keys.items() if n > 1}
    assert not duplicates, f"duplicate ExternalIds: {duplicates}"
    expected = expected_contacts(
        deployment.crm_path, datetime(2000, 1, 1, tzinfo=UTC), end, strict_dots=True
    )
    by_key = {ext["value"]: c for c in contacts for ext in c.get("externalIds") or []}
    assert set(by_key) == set(expected), "missing or extra contacts"
    stale = [
        key
        for key, want in expected.items()
        if (by_key[key].get("firstName"), by_key[key].get("lastName"))
        != (want.first_name, want.last_name)
    ]
    assert not stale, f"stale content: {stale[:5]}"
    with SyncStateStore(deployment.state_url) as store:
        assert store.counts()["intents_pending"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["none", "hostile"])
def test_sigkill_during_writes_then_rerun_leaves_exact_parity(tmp_path: Path, profile: str) -> None:
    deployment = start_deployment(
        tmp_path, "--faults", profile, "--seed", "11", "--latency-ms", "15"
    )
    try:
        # Retry-After 0 on injected 429/503: the client's own backoff paces retries, so the test
        # is quick; the faults themselves are unchanged.
        deployment.server.put(
            "/__emulator/faults",
            {"profile": profile, "seed": 11, "latency_ms": 15, "retry_after_s": 0},
        )
        generate_demo_crm(
            deployment.crm_path, rows=300, seed=5, now=NOW, windows=2, window=timedelta(hours=1)
        )
        assert deployment.cli("schema", "push").returncode == 0
        kills = 0
        # The first load, window by window, each killed twice at different points.
        for window, points in zip(WINDOWS, ([4, 9], [3, 7]), strict=True):
            kills += kill_and_rerun(deployment, window, points)
        assert_exact(deployment, datetime(2026, 11, 29, 12, 0, tzinfo=UTC))

        # A window of activity (updates, deletes, a re-index, new contacts), killed twice too.
        simulate_activity(
            deployment.crm_path,
            now=NOW,
            seed=9,
            updates=60,
            deletes=15,
            reindex=20,
            creates=30,
            new_column=None,
        )
        kills += kill_and_rerun(deployment, ACTIVITY, [3, 6])
        assert_exact(deployment, datetime(2026, 11, 29, 13, 0, tzinfo=UTC))
        assert kills >= 4

        # A last run of every window has nothing left to do: no write, no lookup.
        mark = deployment.requests_seen()
        for window in [*WINDOWS, ACTIVITY]:
            assert deployment.sync(window) == 0
        assert deployment.requests_seen() == mark
    finally:
        deployment.stop()
