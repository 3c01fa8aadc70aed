"""Crash safety: the sync process is SIGKILLed in the middle of its writes, then run again.

An emulator server (a real HTTP server in a subprocess) holds the org; `python -m crm_genesys.sync
apply` runs in a child process and is killed after it has made k requests (seen through the
emulator's stats), at several k. Each re-run diffs the wanted contacts against the state the
killed run left behind (as a Dagster re-run of the partition would) and continues. At the end
the emulator must hold exactly the expected contacts: no ExternalId twice, none missing, none
with stale content. With the `hostile` profile the server also drops connections after applying
writes, answers 5xx and 429s, fails bulk items, and delays requests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crm_genesys.state.store import SyncStateStore
from crm_genesys_tests.emulator_server import REPO, Server, start_server
from crm_genesys_tests.sync.emulated import contacts_by_external_id, genesys_env
from crm_genesys_tests.sync.helpers import body_for, canonical, diff_against_state

SOURCE_NAME = "crm-crash"
MAX_RUNS = 12


def wanted_live(keys, version: int) -> dict[str, tuple[int, str | None]]:
    return {k: (version, canonical(body_for(k, version))) for k in keys}


class Harness:
    def __init__(self, tmp: Path, server: Server) -> None:
        self.tmp = tmp
        self.server = server
        self.state_url = f"sqlite:///{tmp / 'state.sqlite'}"
        self.store = SyncStateStore(self.state_url)
        self.store.create_all()
        self.env = genesys_env(server.url, rate_limit_per_minute=30_000, max_in_flight=4)
        self.kills = 0
        self.runs = 0

    def requests_seen(self) -> int:
        return int(self.server.get("/__emulator/stats")["counters"].get("requests", 0))

    def start_child(self, wanted: dict, window: str) -> subprocess.Popen[str]:
        changes = diff_against_state(self.store, wanted).changes
        path = self.tmp / f"changes-{self.runs}.json"
        path.write_text(changes.to_json(orient="records"))
        self.runs += 1
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crm_genesys.sync",
                "apply",
                "--changes",
                str(path),
                "--state",
                self.state_url,
                "--window",
                window,
                "--source-name",
                SOURCE_NAME,
                "--batch-size",
                "10",
                "--round-delay",
                "0.05",
                "--retry-initial-delay",
                "0.02",
                "--retry-max-delay",
                "0.2",
            ],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_and_kill(self, wanted: dict, window: str, after_requests: int) -> None:
        """Start a run and SIGKILL it once the emulator has seen `after_requests` more requests
        (if it finishes first, that is a completed run: fine)."""
        base = self.requests_seen()
        child = self.start_child(wanted, window)
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            if self.requests_seen() >= base + after_requests:
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        child.communicate(timeout=30)
        if child.returncode == -signal.SIGKILL:
            self.kills += 1

    def run_to_completion(self, wanted: dict, window: str) -> dict:
        """Re-run (as the retry sensor would) until a run accounts for every change."""
        for _ in range(MAX_RUNS):
            child = self.start_child(wanted, window)
            out, err = child.communicate(timeout=120)
            if child.returncode == 0:
                return json.loads(out)
            assert child.returncode == 3, f"sync crashed: {err[-2000:]}"
        raise AssertionError(f"no complete run in {MAX_RUNS} attempts")

    def assert_exact(self, expected: dict) -> None:
        contacts = self.server.get("/__emulator/contacts")
        sources = {
            ext["externalSource"]["id"] for c in contacts for ext in c.get("externalIds") or []
        }
        assert len(sources) <= 1, "contacts carry ExternalIds of more than one source"
        held = contacts_by_external_id(contacts, sources.pop()) if sources else {}
        live = {k: v for k, v in expected.items() if v[1] is not None}
        duplicates = {k: len(v) for k, v in held.items() if len(v) > 1}
        assert not duplicates, f"duplicate ExternalIds: {duplicates}"
        assert sorted(held) == sorted(live), "missing or extra contacts"
        stale = {k for k, v in held.items() if v[0]["lastName"] != f"v{live[k][0]}"}
        assert not stale, f"stale content: {sorted(stale)[:5]}"
        assert len(contacts) == len(live), "contacts without our ExternalId"
        snap = self.store.snapshot().set_index("business_key")
        for key, (version, payload) in expected.items():
            assert int(snap.loc[key, "crm_version"]) == version
            assert bool(snap.loc[key, "deleted"]) == (payload is None)
            if payload is not None:
                assert snap.loc[key, "contact_id"] == held[key][0]["id"]
        assert self.store.counts()["intents_pending"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["none", "hostile"])
def test_sigkill_during_writes_then_rerun_leaves_exact_parity(tmp_path: Path, profile: str) -> None:
    server = start_server(
        "--data",
        str(tmp_path),
        "--rate-limit-per-minute",
        "30000",
        "--max-bulk-entities",
        "100",
        "--faults",
        profile,
        "--latency-ms",
        "15",
        "--seed",
        "11",
    )
    try:
        # Retry-After 0 on injected 429/503: the client's own (short) backoff paces the retries,
        # so the test is quick; the faults themselves are unchanged.
        server.put("/__emulator/faults", {"profile": profile, "seed": 11, "latency_ms": 15,
                                          "retry_after_s": 0})  # fmt: skip
        h = Harness(tmp_path, server)
        keys = [f"AC-{i:05d}" for i in range(120)]

        # Window 1: a first load, killed twice at different points, then completed.
        first = wanted_live(keys, 1)
        for k in (4, 9):
            h.run_and_kill(first, "w1", k)
        h.run_to_completion(first, "w1")
        h.assert_exact(first)
        assert h.kills >= 1

        # Window 2: updates, deletes and new contacts, killed twice, then completed.
        second = dict(first)
        second.update(wanted_live(keys[:40], 2))
        second.update({k: (2, None) for k in keys[40:70]})
        second.update(wanted_live([f"AC-9{i:04d}" for i in range(20)], 2))
        kills_before = h.kills
        for k in (3, 6):
            h.run_and_kill(second, "w2", k)
        report = h.run_to_completion(second, "w2")
        h.assert_exact(second)
        assert h.kills > kills_before
        # A last run of the same window has nothing left to do: no write, no lookup.
        last_seq = max((e["seq"] for e in server.get("/__emulator/requests")), default=0)
        again = h.run_to_completion(second, "w2")
        assert again["requests"] == 0 and report["failed"] == 0
        paths = [e["path"] for e in server.get(f"/__emulator/requests?since={last_seq}")]
        assert not [p for p in paths if "/bulk/" in p or "identifierlookup" in p]
    finally:
        server.stop()
