"""Crash safety of the full sync: `crm-genesys full-sync` (the Dagster job, in-process, on a
persistent instance) is SIGKILLed in the middle of its writes against an emulator server, at two
points, then run again. The end state must be what an independent reading of the CRM says, with
no ExternalId twice, and a last run must send nothing at all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.state.store import SyncStateStore
from crm_genesys_tests.cli_deployment import Deployment, start_deployment
from crm_genesys_tests.emulator_server import REPO
from crm_genesys_tests.sync.test_crash import assert_exact

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
ARGS = ("full-sync", "--chunk-rows", "200")


def kill_after(
    deployment: Deployment, requests: int, limit: float = 90, sig: int = signal.SIGKILL
) -> bool:
    """Start a full sync and send it `sig` once the emulator has seen `requests` more requests;
    whether it was signalled before it ended on its own (it has ended when this returns)."""
    base = deployment.requests_seen()
    with open(deployment.root / f"kill-{base}.out", "w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "crm_genesys.cli", *ARGS],
            cwd=REPO,
            env=deployment.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + limit
        killed = False
        while child.poll() is None and time.monotonic() < deadline:
            if deployment.requests_seen() >= base + requests:
                child.send_signal(sig)
                killed = True
                break
            time.sleep(0.005)
        child.wait(timeout=30 if killed else 60)
    return killed


def bulk_writes_since(deployment: Deployment, mark: int) -> int:
    """Bulk writes and lookups the emulator saw after request `mark` (the run's own requests:
    its token, org and source look-ups, must be there)."""
    entries = deployment.server.get(f"/__emulator/requests?since={mark}")
    assert entries, "the run made no request at all: the log position is wrong"
    return sum(1 for e in entries if "/bulk/" in e["path"] or "identifierlookup" in e["path"])


@pytest.mark.slow
def test_sigkill_during_a_full_sync_then_rerun_leaves_exact_parity(tmp_path: Path) -> None:
    deployment = start_deployment(tmp_path, "--latency-ms", "15")
    try:
        generate_demo_crm(
            deployment.crm_path,
            rows=1_500,
            seed=6,
            now=NOW,
            windows=2 * 365,
            window=timedelta(days=1),
        )
        assert deployment.cli("schema", "push").returncode == 0
        kills = sum(kill_after(deployment, k) for k in (25, 70))
        kills += kill_after(deployment, 30, sig=signal.SIGTERM)
        assert kills == 3
        with SyncStateStore(deployment.state_url) as store:
            unfinished = store.last_full_sync("running")
            assert unfinished is not None and unfinished.chunks >= 1  # killed mid-way

        done = deployment.cli(*ARGS, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "accounted" in done.stdout and "True" in done.stdout
        assert_exact(deployment, NOW)
        with SyncStateStore(deployment.state_url) as store:
            finished = store.last_full_sync()
            assert finished is not None and finished.id == unfinished.id  # resumed, same T0

        # A last full sync has nothing left to do: no write, no lookup.
        mark = deployment.requests_seen()
        assert deployment.cli(*ARGS, timeout=300).returncode == 0
        assert bulk_writes_since(deployment, mark) == 0
    finally:
        deployment.stop()
