"""Reconciliation: state against a full scan of Genesys; repairs the next diff completes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crm_genesys.state.store import StateWrite, SyncStateStore
from crm_genesys.sync.reconcile import reconcile
from crm_genesys.sync.sink import apply_changes
from crm_genesys_tests.sync.fake_api import FakeContactsApi
from crm_genesys_tests.sync.helpers import body_for, canonical, diff_against_state

SOURCE = "src-crm"


@pytest.fixture
def store(tmp_path: Path) -> SyncStateStore:
    s = SyncStateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    s.create_all()
    return s


def add_raw(api: FakeContactsApi, key: str, source: str = SOURCE) -> str:
    ext = [{"externalSource": {"id": source}, "value": key}]
    (result,) = asyncio.run(api.bulk_add([{**body_for(key, 1), "externalIds": ext}]))
    assert result.contact_id is not None
    return result.contact_id


def test_reconcile_finds_and_repairs_every_kind_of_drift(store: SyncStateStore) -> None:
    api = FakeContactsApi()
    wanted = {k: (1, canonical(body_for(k, 1))) for k in "ABCDE"}
    asyncio.run(
        apply_changes(diff_against_state(store, wanted), api, store, source_id=SOURCE, window="w")
    )
    snap = store.snapshot().set_index("business_key")
    api.contacts.pop(snap.loc["A", "contact_id"])  # deleted in Genesys by an agent
    orphan = add_raw(api, "F")  # created with our ExternalId outside the sync
    dup = add_raw(api, "B")  # a duplicate of B
    api.contacts.pop(snap.loc["C", "contact_id"])
    moved = add_raw(api, "C")  # C re-created under another id
    add_raw(api, "G", source="someone-else")  # not ours: ignored

    report = asyncio.run(reconcile(api, store, source_id=SOURCE))
    assert (report.scanned, report.ours, report.matched) == (7, 6, 3)
    assert (report.missing, report.orphans, report.moved) == (["A"], ["F"], ["C"])
    assert report.duplicates == {"B": sorted([snap.loc["B", "contact_id"], dup])}
    assert not report.in_parity and report.repaired == 0
    assert len(store.snapshot()) == 5  # nothing written without repair

    report = asyncio.run(
        reconcile(api, store, source_id=SOURCE, repair=True, remove_duplicates=True)
    )
    assert report.repaired == 3 and report.duplicates_removed == 1
    assert dup not in api.contacts
    snap = store.snapshot().set_index("business_key")
    assert bool(snap.loc["A", "deleted"])
    assert snap.loc["F", "contact_id"] == orphan and snap.loc["C", "contact_id"] == moved

    # The next window (CRM: F is a tombstone, everything else live) restores exact parity.
    wanted["F"] = (1, None)
    asyncio.run(
        apply_changes(diff_against_state(store, wanted), api, store, source_id=SOURCE, window="w2")
    )
    final = asyncio.run(reconcile(api, store, source_id=SOURCE))
    assert final.in_parity and final.matched == 5
    held = api.by_external_id(SOURCE)
    assert sorted(held) == list("ABCDE")
    assert all(c[0]["lastName"] == "v1" for c in held.values())


def test_reconcile_of_a_parity_org_is_clean(store: SyncStateStore) -> None:
    api = FakeContactsApi()
    cid = add_raw(api, "A")
    store.record_created([StateWrite("A", cid, "h", 1)])
    report = asyncio.run(reconcile(api, store, source_id=SOURCE, repair=True))
    assert report.in_parity and report.repaired == 0 and report.matched == 1
