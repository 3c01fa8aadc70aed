"""Live changes go first on the rate budget: a long sink run that holds the budget (a stand-in
for the full sync: `LONG_SINK` is the one thing to point at it) does not delay a burst of live
changes beyond the 60-second target, and nobody gets a 429. The lanes' arithmetic is tested on
its own below."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_genesys.state.store import SinkIdentity, SinkPresence, SyncStateStore
from crm_genesys.sync.concurrency import FLOOR, LIVE, MIN_RESERVE, WINDOW, Lane, allotted_share
from crm_genesys.sync.sink import SyncReport, apply_changes
from crm_genesys_tests.sync.emulated import contacts_by_external_id
from crm_genesys_tests.sync.helpers import change, changeset
from crm_genesys_tests.sync.shared_budget import SharedOrg, shared_org

BUDGET = 300  # the platform's default per OAuth client
TARGET_S = 60.0
# The long run: 1,500 creates, 150 requests, half a minute of the whole budget and more.
LONG_SINK = [f"F{n:05d}" for n in range(1500)]
LIVE_BURST = [f"L{n:04d}" for n in range(300)]


class Sink(threading.Thread):
    """One sink run in a thread of its own (its own client and event loop)."""

    def __init__(self, org: SharedOrg, store: SyncStateStore, source_id: str, keys: list[str],
                 lane: Lane) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.org, self.store, self.source_id, self.keys, self.lane = (
            org,
            store,
            source_id,
            keys,
            lane,
        )
        self.report: SyncReport | BaseException | None = None
        self.client: Any = None
        self.seconds = 0.0

    async def main(self) -> SyncReport:
        async with self.org.client(batch_size=10, max_in_flight=8) as client:
            self.client = client
            return await apply_changes(
                changeset([change(k, "create", 1) for k in self.keys]),
                client,
                self.store,
                source_id=self.source_id,
                window=self.lane.name,
                batch_size=10,
                max_in_flight=8,
                lane=self.lane,
            )

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.report = asyncio.run(self.main())
        except BaseException as exc:
            self.report = exc
        self.seconds = time.monotonic() - started


def test_a_long_sink_does_not_delay_live_changes_beyond_the_target(tmp_path) -> None:
    store = SyncStateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    store.create_all()
    with shared_org(BUDGET) as org:

        async def source() -> str:
            async with org.client() as client:
                return await client.ensure_external_source("crm-priority")

        source_id = asyncio.run(source())
        long = Sink(org, store, source_id, LONG_SINK, WINDOW)
        long.start()
        # The long run holds the budget: a good part of the platform's window is its.
        deadline = time.monotonic() + 60
        while sum(u.ours for u in org.emulator.rate_usage()) < 60:
            assert time.monotonic() < deadline and long.is_alive()
            time.sleep(0.2)
        shares: list[float] = []
        live = Sink(org, store, source_id, LIVE_BURST, LIVE)
        live.start()
        while live.is_alive():
            if long.client is not None:
                shares.append(long.client.pacer.share)
            time.sleep(0.1)
        assert long.is_alive(), "the long run ended first: nothing was shown"
        long.join(timeout=300)

        assert isinstance(live.report, SyncReport), live.report
        assert isinstance(long.report, SyncReport), long.report
        assert live.seconds < TARGET_S, f"live changes took {live.seconds:.0f}s"
        assert live.report.created == len(LIVE_BURST) and live.report.failed == 0
        assert long.report.created == len(LONG_SINK) and long.report.failed == 0
        # The long run gave way while the live one ran, and got its share back after.
        assert min(shares) <= FLOOR * 0.8 + 1e-9
        assert long.client.pacer.share == 0.8
        held = contacts_by_external_id(org.emulator.all_contacts(), source_id)
        assert sorted(held) == sorted(LONG_SINK + LIVE_BURST)
        assert all(len(c) == 1 for c in held.values())
        assert org.refused() == (0, 0)
        assert org.busiest_minute() <= BUDGET


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def sink(holder: str, lane: Lane, *, age: float = 0.0, ended: float | None = None,
         spend: float = 0.0) -> SinkPresence:  # fmt: skip
    seen = NOW - timedelta(seconds=age)
    return SinkPresence(
        holder, lane.name, lane.priority, "h", 1, 1, seen, seen, spend,
        None if ended is None else NOW - timedelta(seconds=ended),
    )  # fmt: skip


def me(lane: Lane) -> SinkIdentity:
    return SinkIdentity("me", lane.name, lane.priority, "h", 1, 1)


def share(lane: Lane, *others: SinkPresence) -> float:
    return allotted_share(
        me(lane), [sink("me", lane), *others], now=NOW, total=0.8, budget_per_minute=300
    )


def test_the_lanes_arithmetic() -> None:
    assert share(WINDOW) == 0.8
    assert share(WINDOW, sink("w2", WINDOW)) == 0.4  # peers split their lane
    assert share(WINDOW, sink("old", WINDOW, age=30)) == 0.8  # silent: not running
    # A live sink runs: lower lanes keep the floor, the live one all but what they spend.
    assert share(WINDOW, sink("l", LIVE)) == FLOOR * 0.8
    assert share(LIVE, sink("w", WINDOW, spend=60)) == 0.8 - 60 / 300
    assert share(LIVE, sink("w", WINDOW, spend=240)) == (1 - FLOOR) * 0.8
    # A live sink ended 20 s ago: a reserve of twice its spend, at least MIN_RESERVE.
    assert share(WINDOW, sink("l", LIVE, age=20, ended=20, spend=0)) == 0.8 - MIN_RESERVE * 0.8
    assert abs(share(WINDOW, sink("l", LIVE, age=20, ended=20, spend=60)) - (0.8 - 0.4)) < 1e-9
    # ...and none once its spend has left the platform's window.
    assert share(WINDOW, sink("l", LIVE, age=90, ended=90, spend=60)) == 0.8
