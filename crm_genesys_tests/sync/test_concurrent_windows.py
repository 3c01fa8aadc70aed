"""Several window runs in flight at once, each in its own thread with its own client and event
loop, over one sync-state store (SQLite, then PostgreSQL) and one OAuth client's budget on the
realistic emulator: the state stays consistent, every window's accounting is exact, the budget
is never exceeded (the emulator's own per-second count)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.sink import SyncReport, apply_changes
from crm_genesys_tests.sync.emulated import contacts_by_external_id
from crm_genesys_tests.sync.helpers import change, changeset
from crm_genesys_tests.sync.shared_budget import SharedOrg, shared_org

# Small enough that the run spans more than a minute of the platform's window.
BUDGET = 60
# Another consumer of the same OAuth client spends this share all along.
BACKGROUND = 0.2
WINDOWS = 4
KEYS_PER_WINDOW = 60
# Window i holds keys [i * STEP, i * STEP + KEYS_PER_WINDOW): each key is in two windows.
STEP = 30
BATCH = 5
SOURCE_NAME = "crm-concurrent"


def window_keys(i: int) -> list[str]:
    return [f"K{n:04d}" for n in range(i * STEP, i * STEP + KEYS_PER_WINDOW)]


def run_windows(org: SharedOrg, store: SyncStateStore, source_id: str) -> list[SyncReport]:
    """Every window at once, version i + 1 for window i, all diffed against the empty state
    (so two windows create, or update, the same keys)."""
    start = threading.Barrier(WINDOWS)
    reports: list[Any] = [None] * WINDOWS

    async def one(i: int) -> SyncReport:
        async with org.client(batch_size=BATCH, max_in_flight=4) as client:
            start.wait()
            return await apply_changes(
                changeset([change(k, "create", i + 1) for k in window_keys(i)]),
                client,
                store,
                source_id=source_id,
                window=f"2026-11-29-{10 + i:02d}:00",
                batch_size=BATCH,
                max_in_flight=4,
                round_delay=0.2,
                max_rounds=10,
            )

    def thread(i: int) -> None:
        try:
            reports[i] = asyncio.run(one(i))
        except BaseException as exc:  # surfaced in the main thread
            reports[i] = exc

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(WINDOWS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for report in reports:
        if isinstance(report, BaseException):
            raise report
    return reports


def test_concurrent_windows_share_one_state_and_one_budget(db_url: str) -> None:
    store = SyncStateStore(db_url)
    store.create_all()
    with shared_org(BUDGET, background_share=BACKGROUND) as org:

        async def source() -> str:
            async with org.client() as client:
                return await client.ensure_external_source(SOURCE_NAME)

        source_id = asyncio.run(source())
        reports = run_windows(org, store, source_id)

        # Every window accounted for exactly: each change in one bucket, nothing left failing.
        for i, report in enumerate(reports):
            assert report.total == KEYS_PER_WINDOW, (i, report)
            assert report.failed == 0, (i, report.failure_reasons)
        # The state is consistent: one contact per key, holding the newest version.
        newest = {k: i + 1 for i in range(WINDOWS) for k in window_keys(i)}
        held = contacts_by_external_id(org.emulator.all_contacts(), source_id)
        assert sorted(held) == sorted(newest)
        snap = store.snapshot().set_index("business_key")
        for key, version in newest.items():
            assert len(held[key]) == 1, f"duplicate contact for {key}"
            assert held[key][0]["lastName"] == f"v{version}"
            assert int(snap.loc[key, "crm_version"]) == version
            assert snap.loc[key, "contact_id"] == held[key][0]["id"]
            assert not bool(snap.loc[key, "deleted"])
        assert store.counts()["intents_pending"] == 0
        assert store.key_claims() == {}
        # The budget was never exceeded: no refusal, ours or the other consumer's, and no
        # minute over it.
        assert org.refused() == (0, 0)
        assert 0 < org.busiest_minute() <= BUDGET
        # They ran at once: every sink's heartbeat overlapped the others'.
        sinks = [s for s in store.sinks() if s.lane == "window"]
        assert len(sinks) == WINDOWS
        assert max(s.started_at for s in sinks) < min(s.ended_at or s.seen_at for s in sinks)


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_a_sink_that_is_gone_leaves_its_keys_to_the_next(db_url: str) -> None:
    """Claims of a sink whose process died (never ended, silent) are taken over."""
    from crm_genesys.state.store import SinkIdentity

    store = SyncStateStore(db_url)
    store.create_all()
    dead = SinkIdentity("dead-run", "window", 0, "this-host", 999_999_999, 1)
    store.announce_sink(dead)
    store.claim_keys(["A", "B"], "dead-run", stale=lambda h, p: False)
    alive = SinkIdentity("alive-run", "window", 0, "other-host", 1, 1)
    store.announce_sink(alive)
    store.claim_keys(["C"], "alive-run", stale=lambda h, p: False)
    from datetime import UTC, datetime

    from crm_genesys.sync.concurrency import holder_gone

    def gone(holder: str, presence: Any) -> bool:
        return holder_gone(presence, now=datetime.now(UTC), host="this-host")

    claim = store.claim_keys(["A", "B", "C", "D"], "next-run", stale=gone)
    assert claim.claimed == ["A", "B", "D"]
    assert claim.held == {"C": "alive-run"}
    assert store.key_claims() == {
        "A": "next-run",
        "B": "next-run",
        "C": "alive-run",
        "D": "next-run",
    }
