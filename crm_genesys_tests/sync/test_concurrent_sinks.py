"""Several sinks writing the same business keys at once (a live run beside a window run, two
windows that share keys): nothing duplicated, the newest version wins in Genesys as in state, and
every change is accounted for in the run that had it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from crm_genesys.genesys.types import BulkItemResult, Contact
from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.sink import SyncReport, apply_changes
from crm_genesys_tests.sync.fake_api import FakeContactsApi
from crm_genesys_tests.sync.helpers import (
    body_for,
    canonical,
    change,
    changeset,
    diff_against_state,
)

SOURCE = "src-crm"


@pytest.fixture
def store(tmp_path: Path) -> SyncStateStore:
    s = SyncStateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    s.create_all()
    return s


class Slow:
    """One run's view of a shared `FakeContactsApi`, whose writes take `delay` seconds to answer
    (and land only at the end of it, as a slow request does)."""

    def __init__(self, api: FakeContactsApi, delay: float) -> None:
        self.api = api
        self.delay = delay

    @property
    def lookup_lag_seconds(self) -> float:
        return self.api.lookup_lag_seconds

    async def ensure_external_source(self, name: str, uri_template: str | None = None) -> str:
        return await self.api.ensure_external_source(name, uri_template)

    async def bulk_add(self, entities: Sequence[Contact]) -> list[BulkItemResult]:
        await asyncio.sleep(self.delay)
        return await self.api.bulk_add(entities)

    async def bulk_update(self, entities: Sequence[Contact]) -> list[BulkItemResult]:
        await asyncio.sleep(self.delay)
        return await self.api.bulk_update(entities)

    async def bulk_remove(self, contact_ids: Sequence[str]) -> list[BulkItemResult]:
        await asyncio.sleep(self.delay)
        return await self.api.bulk_remove(contact_ids)

    async def bulk_fetch(self, contact_ids: Sequence[str]) -> list[BulkItemResult]:
        return await self.api.bulk_fetch(contact_ids)

    async def lookup_by_external_id(self, source_id: str, value: str) -> Contact | None:
        return await self.api.lookup_by_external_id(source_id, value)

    async def get_contact(self, contact_id: str) -> Contact | None:
        return await self.api.get_contact(contact_id)

    def scan_contacts(self) -> Any:
        return self.api.scan_contacts()


async def _together(*runs: Any) -> list[SyncReport]:
    return list(await asyncio.gather(*runs))


def _run(cs: Any, api: Any, store: SyncStateStore, window: str, **kw: Any) -> Any:
    kw.setdefault("round_delay", 0.05)
    kw.setdefault("max_rounds", 8)
    return apply_changes(cs, api, store, source_id=SOURCE, window=window, **kw)


def _held(api: FakeContactsApi) -> dict[str, list[Contact]]:
    return api.by_external_id(SOURCE)


def test_two_runs_creating_the_same_keys_create_each_contact_once(store: SyncStateStore) -> None:
    api = FakeContactsApi()
    keys = [f"K{i:03d}" for i in range(30)]
    # The window saw version 1 of each key, the live run version 2; both find no state.
    window = changeset([change(k, "create", 1) for k in keys])
    live = changeset([change(k, "create", 2) for k in keys])
    reports = asyncio.run(
        _together(
            _run(window, Slow(api, 0.2), store, "2026-11-29-10:00", batch_size=10),
            _run(live, Slow(api, 0.05), store, "live", batch_size=10),
        )
    )
    held = _held(api)
    assert sorted(held) == keys
    assert all(len(contacts) == 1 for contacts in held.values()), "duplicate contact"
    snap = store.snapshot().set_index("business_key")
    for key in keys:
        assert int(snap.loc[key, "crm_version"]) == 2
        assert held[key][0]["lastName"] == "v2"
        assert snap.loc[key, "contact_id"] == held[key][0]["id"]
    for report in reports:
        assert report.total == len(keys)
    assert store.counts()["intents_pending"] == 0


def test_an_older_window_never_overwrites_a_newer_live_write(store: SyncStateStore) -> None:
    api = FakeContactsApi()
    keys = [f"K{i:03d}" for i in range(10)]
    asyncio.run(_run(changeset([change(k, "create", 1) for k in keys]), api, store, "w0"))
    # Both diffs are made against the same state (version 1); the window's update (version 2)
    # is slow, the live run's (version 3) fast.
    older = diff_against_state(store, {k: (2, _payload(k, 2)) for k in keys})
    newer = diff_against_state(store, {k: (3, _payload(k, 3)) for k in keys})
    window_report, live_report = asyncio.run(
        _together(
            _run(older, Slow(api, 0.3), store, "2026-11-29-10:00"),
            _run(newer, Slow(api, 0.0), store, "live"),
        )
    )
    held = _held(api)
    snap = store.snapshot().set_index("business_key")
    for key in keys:
        assert len(held[key]) == 1
        assert int(snap.loc[key, "crm_version"]) == 3
        assert held[key][0]["lastName"] == "v3", "an older version overwrote a newer one"
    assert live_report.updated == len(keys) and live_report.failed == 0
    # The window's changes were overtaken: stale, or applied before the newer one.
    assert window_report.total == len(keys) and window_report.failed == 0


def test_a_live_runs_pending_create_is_never_resolved_by_another_run(
    store: SyncStateStore,
) -> None:
    api = FakeContactsApi()
    keys = [f"K{i:03d}" for i in range(5)]

    async def both() -> list[SyncReport]:
        first = asyncio.create_task(
            _run(changeset([change(k, "create", 1) for k in keys]), Slow(api, 0.5), store, "w1")
        )
        # The first run's intents are committed and its create is in flight.
        while not store.pending_intents():
            await asyncio.sleep(0.01)
        second = _run(changeset([change(k, "create", 1) for k in keys]), api, store, "w2")
        return [await second, await first]

    asyncio.run(both())
    held = _held(api)
    assert sorted(held) == keys
    assert all(len(contacts) == 1 for contacts in held.values()), "duplicate contact"
    assert store.counts()["intents_pending"] == 0


def _payload(key: str, version: int) -> str:
    return canonical(body_for(key, version))


class _ReleasingStore(SyncStateStore):
    """A store on which another live sink (`other`) holds `key` until the third time a sink
    asks to claim it: a holder busy for several of the waiting sink's rounds."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(url)
        self.key = key
        self.asked = 0

    def claim_keys(self, keys, holder, *, stale):  # type: ignore[no-untyped-def]
        keys = list(keys)
        if holder != "other" and self.key in keys:
            self.asked += 1
            if self.asked == 3:
                self.release_keys("other", [self.key])
        return super().claim_keys(keys, holder, stale=stale)


def test_waiting_for_a_live_sinks_claim_is_not_a_failed_attempt(tmp_path: Path) -> None:
    from crm_genesys.sync.concurrency import WINDOW, identity

    store = _ReleasingStore(f"sqlite:///{tmp_path / 'state.sqlite'}", "K1")
    store.create_all()
    store.announce_sink(identity("other", WINDOW))  # alive: this process, seen just now
    store.claim_keys(["K1"], "other", stale=lambda h, p: False)
    api = FakeContactsApi()
    report = asyncio.run(
        _run(changeset([change("K1", "create", 1)]), api, store, "w1", max_rounds=2)
    )
    # Two rounds found K1 held; the third got it: a wait, not two failed attempts.
    assert store.asked == 3
    assert (report.created, report.failed) == (1, 0)
    assert len(_held(api)["K1"]) == 1


class _SlowAnnounce(SyncStateStore):
    """A store whose first `announce_sink` takes a while (or fails), recording when each
    announcement and each claim happened."""

    def __init__(self, url: str, *, fail: bool = False) -> None:
        super().__init__(url)
        self.fail = fail
        self.events: list[str] = []

    def announce_sink(self, *args: Any, **kwargs: Any) -> Any:
        if not self.events:
            time.sleep(0.3)
            if self.fail:
                self.events.append("announce failed")
                raise RuntimeError("state unreachable")
        result = super().announce_sink(*args, **kwargs)
        self.events.append("announced")
        return result

    def claim_keys(self, *args: Any, **kwargs: Any) -> Any:
        self.events.append("claim")
        return super().claim_keys(*args, **kwargs)


def test_no_key_is_claimed_before_the_sink_has_announced_itself(tmp_path: Path) -> None:
    # The first announcement runs beside the first reads; another sink judges a claim by its
    # holder's announcement, so no claim may come before it.
    store = _SlowAnnounce(f"sqlite:///{tmp_path / 'state.sqlite'}")
    store.create_all()
    api = FakeContactsApi()
    cs = changeset([change(f"K{i}", "create", 1) for i in range(6)])
    report = asyncio.run(_run(cs, api, store, "w1", batch_size=2))
    assert report.created == 6
    assert store.events[0] == "announced" and "claim" in store.events


def test_a_sink_that_cannot_announce_itself_sends_nothing(tmp_path: Path) -> None:
    store = _SlowAnnounce(f"sqlite:///{tmp_path / 'state.sqlite'}", fail=True)
    store.create_all()
    api = FakeContactsApi()
    with pytest.raises(RuntimeError, match="state unreachable"):
        asyncio.run(_run(changeset([change("A", "create", 1)]), api, store, "w1"))
    assert api.requests == [] and store.events == ["announce failed"]
    assert store.key_claims() == {}
