"""Reconciliation that repairs, without Dagster: every kind of drift between the sync state, the
CRM and what Genesys holds is found, a dry run changes nothing, and a repair leaves Genesys equal
to the CRM through the sink."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crm_genesys.state.store import StateWrite, contact_state
from crm_genesys.sync.breakers import BreakerTripped
from crm_genesys.sync.full import CrmChunks
from crm_genesys.sync.reconcile import ReconcileOptions, ReconcileReport, reconcile
from crm_genesys.sync.window import contact_schema_ref
from crm_genesys_tests.sync.test_full_sync import CHUNK, Rig


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    rig = Rig(tmp_path, rows=600)
    rig.run()
    return rig


def run(rig: Rig, **options: object) -> ReconcileReport:
    async def go() -> ReconcileReport:
        async with rig.target.client() as client:
            source_id = await client.ensure_external_source(rig.mapping.external_source.name)
            schema = await contact_schema_ref(client, rig.mapping, push_if_missing=True)
            with rig.source() as source:
                return await reconcile(
                    client,
                    rig.store,
                    CrmChunks(source, rig.mapping, CHUNK),
                    source_id=source_id,
                    options=ReconcileOptions(**options),  # type: ignore[arg-type]
                    schema=schema,
                )

    return asyncio.run(go())


def test_every_kind_of_drift_is_found_and_repaired_through_the_sink(rig: Rig) -> None:
    held = rig.genesys()
    keys = sorted(held)
    emulator = rig.emulator
    emulator.delete_contact(held[keys[0]]["id"])  # deleted by an agent
    body = {k: v for k, v in held[keys[1]].items() if k != "workEmail"}
    emulator.update_contact(held[keys[1]]["id"], {**body, "lastName": "Hand"})  # edited
    twin = {"firstName": "Twin", "externalIds": held[keys[2]]["externalIds"]}
    emulator.create_contact(twin)  # a duplicate of keys[2]
    # The state lost a key (its contact is still there) and names a wrong id for another.
    with rig.store.engine.begin() as conn:
        conn.execute(contact_state.delete().where(contact_state.c.business_key == keys[3]))
    version = int(rig.store.snapshot([keys[4]]).crm_version.iloc[0])
    rig.store.record_updated([StateWrite(keys[4], "not-an-id", "", version)])
    source = held[keys[5]]["externalIds"][0]["externalSource"]
    emulator.create_contact(
        {"lastName": "Ghost", "externalIds": [{"externalSource": source, "value": "AC-7777777"}]}
    )
    state_before = rig.store.snapshot().sort_values("business_key").reset_index(drop=True)
    contacts_before = emulator.all_contacts()

    found = run(rig)  # a dry run
    counts = found.counts
    assert (counts.get("missing"), counts.get("edited"), counts.get("duplicates")) == (1, 1, 1)
    assert (counts.get("adopted"), counts.get("moved"), counts.get("unknown")) == (1, 1, 1)
    assert found.preview is not None and found.preview.counts["create"] == 1
    assert found.scan_requests >= 1 and found.scanned == len(contacts_before)
    assert emulator.all_contacts() == contacts_before
    after = rig.store.snapshot().sort_values("business_key").reset_index(drop=True)
    assert after.equals(state_before)

    # Deletes over the breaker's share need the exact count confirmed; the re-sends (not
    # destructive) are done before the refusal, and not again.
    with pytest.raises(BreakerTripped, match="would delete 2 of"):
        run(rig, repair=True, remove_unknown=True, max_delete_share=0.0)
    assert len(emulator.all_contacts()) == len(contacts_before) + 1  # the deleted one is back
    repaired = run(rig, repair=True, remove_unknown=True, max_delete_share=0.0, confirm_deletes=2)
    assert repaired.sent.created == 0 and repaired.removed == 2
    rig.assert_exact()
    assert held[keys[1]]["lastName"] == rig.genesys()[keys[1]].get("lastName")
    assert run(rig).in_parity
