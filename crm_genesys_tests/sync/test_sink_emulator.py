"""The sink with the real client against the real emulator (in-process): what reaches Genesys is
read back from the emulator's own store and request log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crm_genesys.emulator import EmulatorConfig
from crm_genesys.emulator.config import FaultConfig
from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.sink import SyncReport, apply_changes
from crm_genesys_tests.sync.emulated import InProcess, contacts_by_external_id
from crm_genesys_tests.sync.helpers import body_for, canonical, diff_against_state

SOURCE_NAME = "crm-test"


@pytest.fixture
def store(tmp_path: Path) -> SyncStateStore:
    s = SyncStateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    s.create_all()
    return s


def sync(org: InProcess, store, wanted, window: str, **kw) -> tuple[SyncReport, str]:
    """Diff `wanted` (key -> (version, payload|None)) against state and apply it."""
    kw.setdefault("round_delay", 0)

    async def go() -> tuple[SyncReport, str]:
        async with org.client(batch_size=kw.get("batch_size", 100)) as client:
            source_id = await client.ensure_external_source(SOURCE_NAME)
            changes = diff_against_state(store, wanted)
            report = await apply_changes(
                changes, client, store, source_id=source_id, window=window, **kw
            )
            return report, source_id

    return asyncio.run(go())


def wanted_live(keys, version: int) -> dict[str, tuple[int, str | None]]:
    return {k: (version, canonical(body_for(k, version))) for k in keys}


def assert_exact_parity(org: InProcess, store, source_id: str, expected: dict) -> None:
    """Genesys holds exactly the expected live keys, once each, with the expected content."""
    held = contacts_by_external_id(org.emulator.all_contacts(), source_id)
    live = {k: v for k, v in expected.items() if v[1] is not None}
    assert sorted(held) == sorted(live)
    for key, contacts in held.items():
        assert len(contacts) == 1, f"duplicate ExternalId {key}"
        assert contacts[0]["lastName"] == f"v{live[key][0]}"
    snap = store.snapshot().set_index("business_key")
    for key, (version, payload) in expected.items():
        assert int(snap.loc[key, "crm_version"]) == version
        assert bool(snap.loc[key, "deleted"]) == (payload is None)
        if payload is not None:
            assert snap.loc[key, "contact_id"] == held[key][0]["id"]
    assert store.counts()["intents_pending"] == 0


def test_first_load_rerun_and_mixed_window(store: SyncStateStore) -> None:
    org = InProcess(EmulatorConfig(rate_limit_per_minute=100_000, max_bulk_entities=100))
    keys = [f"AC-{i:05d}" for i in range(230)]
    expected = wanted_live(keys, 1)
    report, source_id = sync(org, store, expected, "w1")
    assert (report.created, report.failed, report.dead_lettered) == (230, 0, 0)
    requests = org.api_requests()
    assert requests["bulk/contacts/add"] == 3
    assert report.client["genesys_contacts_added"] == 230
    assert_exact_parity(org, store, source_id, expected)

    # The same window again: nothing to do, and not a single API request for it.
    org.emulator.reset(data=False, log=True)
    report, _ = sync(org, store, expected, "w1")
    assert report.requests == 0
    api = org.api_requests()
    assert api["bulk/contacts/add"] == 0 and api["bulk/contacts/update"] == 0
    assert sum(api.values()) <= 2  # the external-source lookup of this test's setup only

    # A mixed window: 40 updates, 30 deletes, 20 new, the rest unchanged (zero cost).
    mixed = dict(expected)
    mixed.update(wanted_live(keys[:40], 2))
    mixed.update({k: (2, None) for k in keys[40:70]})
    new_keys = [f"AC-9{i:04d}" for i in range(20)]
    mixed.update(wanted_live(new_keys, 2))
    org.emulator.reset(data=False, log=True)
    report, _ = sync(org, store, mixed, "w2")
    assert (report.created, report.updated, report.deleted) == (20, 40, 30)
    api = org.api_requests()
    assert (api["bulk/contacts/add"], api["bulk/contacts/update"]) == (1, 1)
    assert api["bulk/contacts/remove"] == 1
    assert_exact_parity(org, store, source_id, mixed)


def test_contact_deleted_in_genesys_is_recreated_on_update(store: SyncStateStore) -> None:
    org = InProcess(EmulatorConfig(rate_limit_per_minute=100_000))
    expected = wanted_live(["A", "B", "C"], 1)
    _, source_id = sync(org, store, expected, "w1")
    gone = store.snapshot(["B"]).contact_id[0]
    org.emulator.delete_contact(gone)  # an agent deleted it in Genesys
    expected.update(wanted_live(["B"], 2))
    report, _ = sync(org, store, expected, "w2")
    assert (report.updated, report.recreated, report.failed) == (1, 1, 0)
    assert store.snapshot(["B"]).contact_id[0] != gone
    assert_exact_parity(org, store, source_id, expected)


def test_item_failures_are_retried_or_reported_never_counted_as_synced(
    store: SyncStateStore,
) -> None:
    org = InProcess(
        EmulatorConfig(
            rate_limit_per_minute=100_000,
            faults=FaultConfig(seed=7, p_item_failure=0.5),
        )
    )
    keys = [f"K{i:03d}" for i in range(60)]
    expected = wanted_live(keys, 1)
    # An invalid e-mail is a permanent rejection: dead-lettered with the platform's reason.
    expected["BAD"] = (1, canonical({"lastName": "v1", "workEmail": "not-an-email"}))
    report, source_id = sync(org, store, expected, "w1", batch_size=10, max_rounds=2)
    assert report.total == 61
    assert report.dead_lettered == 1 and report.failed > 0 and report.item_retries > 0
    letters = store.dead_letters("w1")
    assert letters.business_key.tolist() == ["BAD"] and letters.status[0] == 400
    assert letters.reason[0]
    held = contacts_by_external_id(org.emulator.all_contacts(), source_id)
    live = set(store.snapshot().business_key)
    # exactly the keys counted as created are in Genesys and in state
    assert set(held) == live and len(live) == report.created
    assert set(report.failed_keys).isdisjoint(held)

    # The partition is re-run later (faults gone): only the missing ones are sent.
    org.emulator.set_faults(FaultConfig())
    org.emulator.reset(data=False, log=True)
    report2, _ = sync(org, store, expected, "w1", batch_size=10)
    assert report2.created == len(report.failed_keys) and report2.dead_lettered == 1
    del expected["BAD"]
    snap = store.snapshot()
    assert "BAD" not in set(snap.business_key)
    assert_exact_parity(org, store, source_id, expected)
