"""The sink with the real client against the real emulator (in-process): what reaches Genesys is
read back from the emulator's own store and request log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crm_genesys.emulator import EmulatorConfig
from crm_genesys.emulator.config import FaultConfig
from crm_genesys.genesys.client import API
from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.ownership import Ownership
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
    assert report.failed > 0 and report.item_retries > 0
    # The bad row is dead-lettered with the platform's reason, unless injected failures hit it
    # in every round first: then it is still failing (retried later), never counted as synced.
    assert report.dead_lettered + ("BAD" in report.failed_keys) == 1
    letters = store.dead_letters("w1")
    if report.dead_lettered:
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
    missing = set(report.failed_keys) - {"BAD"}
    assert report2.created == len(missing) and report2.dead_lettered == 1
    del expected["BAD"]
    snap = store.snapshot()
    assert "BAD" not in set(snap.business_key)
    assert_exact_parity(org, store, source_id, expected)


def agent_edits(org: InProcess, contact_id: str) -> str:
    """What others do to a contact between syncs, through the platform's own API: an agent
    opts the customer out of surveys and links a social id in the desktop, another integration
    adds its ExternalId. Returns the other integration's External Source id."""

    async def go() -> str:
        async with org.client() as client:
            billing = await client.ensure_external_source("billing-system")
            changes = [
                {"field": "$.surveyOptOut", "value": True, "action": "Update"},
                {
                    "field": "$.externalSystemUrl",
                    "value": "https://b.example/7",
                    "action": "Update",
                },
                {"field": "$.twitterId", "value": {"screenName": "ada"}, "action": "Update"},
                {
                    "field": "$.externalIds",
                    "value": {"externalSource": {"id": billing}, "value": "BILL-7"},
                    "action": "AppendToCollection",
                },
            ]
            await client.request("PATCH", f"{API}/contacts/{contact_id}", json={"changes": changes})
            return billing

    return asyncio.run(go())


def test_agent_edits_and_other_external_ids_survive_every_update(store: SyncStateStore) -> None:
    org = InProcess(EmulatorConfig(rate_limit_per_minute=100_000))
    expected = wanted_live(["A", "B"], 1)
    _, source_id = sync(org, store, expected, "w1")
    contact_id = store.snapshot(["A"]).contact_id[0]
    billing = agent_edits(org, contact_id)
    for version in (2, 3):
        expected.update(wanted_live(["A"], version))
        report, _ = sync(org, store, expected, f"w{version}")
        assert report.updated == 1
        contact = org.emulator.get_contact(contact_id)
        assert contact["lastName"] == f"v{version}"  # the CRM's change arrived
        assert contact["surveyOptOut"] is True  # the agent's edits survived it
        assert contact["externalSystemUrl"] == "https://b.example/7"
        assert contact["twitterId"] == {"screenName": "ada"}
        assert {"externalSource": {"id": billing}, "value": "BILL-7"} in contact["externalIds"]
    assert_exact_parity(org, store, source_id, expected)


def test_only_the_mapped_slots_and_parts_are_written(store: SyncStateStore) -> None:
    """A mapping that names the names, the work phone, the work e-mail and the city: the
    agent's cell phone, other e-mail and street survive; the CRM blanking its work phone
    clears it in Genesys; a phone whose number is unchanged keeps what the agent set on it."""
    org = InProcess(EmulatorConfig(rate_limit_per_minute=100_000))
    own = Ownership(
        scalars=frozenset({"firstName", "lastName"}),
        phones=frozenset({"workPhone"}),
        emails=frozenset({"workEmail"}),
        address=frozenset({"city"}),
        custom_fields=frozenset(),
    )
    work = {"display": "+4930123456", "normalizationCountryCode": "DE"}
    crm = {"firstName": "Ada", "lastName": "v1", "workPhone": work, "address": {"city": "Berlin"}}
    wanted = {"A": (1, canonical(crm))}
    _, source_id = sync(org, store, wanted, "w1", ownership=own)
    contact_id = store.snapshot(["A"]).contact_id[0]

    async def agent() -> None:
        async with org.client() as client:
            cell = {"display": "+14155550100", "normalizationCountryCode": "US"}
            changes = [
                {"field": "$.cellPhone", "value": cell, "action": "Update"},
                {"field": "$.workPhone.acceptsSMS", "value": True, "action": "Update"},
                {"field": "$.otherEmail", "value": "ada@home.example", "action": "Update"},
                {"field": "$.address.address1", "value": "1 Main St", "action": "Update"},
            ]
            await client.request("PATCH", f"{API}/contacts/{contact_id}", json={"changes": changes})

    asyncio.run(agent())
    wanted["A"] = (2, canonical({**crm, "lastName": "v2"}))
    report, _ = sync(org, store, wanted, "w2", ownership=own)
    assert report.updated == 1
    held = org.emulator.get_contact(contact_id)
    assert held["lastName"] == "v2" and held["workPhone"]["acceptsSMS"] is True
    assert held["cellPhone"]["e164"] == "+14155550100"
    assert held["otherEmail"] == "ada@home.example"
    assert held["address"] == {"address1": "1 Main St", "city": "Berlin"}

    blank = {k: v for k, v in crm.items() if k != "workPhone"}
    wanted["A"] = (3, canonical({**blank, "lastName": "v3", "address": {}}))
    sync(org, store, wanted, "w3", ownership=own)
    held = org.emulator.get_contact(contact_id)
    assert "workPhone" not in held and held["cellPhone"]["e164"] == "+14155550100"
    assert held["address"] == {"address1": "1 Main St"}  # the CRM's city cleared, not the rest
    assert [e["externalSource"]["id"] for e in held["externalIds"]] == [source_id]


def test_unmapped_custom_fields_of_the_same_schema_survive(store: SyncStateStore) -> None:
    org = InProcess(EmulatorConfig(rate_limit_per_minute=100_000))
    document = {
        "name": "crm_fields",
        "enabled": True,
        "jsonSchema": {
            "type": "object",
            "properties": {
                "tier_text": {"allOf": [{"$ref": "#/definitions/text"}], "title": "Tier"},
                "vip_checkbox": {"allOf": [{"$ref": "#/definitions/checkbox"}], "title": "VIP"},
            },
        },
    }

    async def push() -> dict:
        async with org.client() as client:
            return await client.upsert_contact_schema(document)

    pushed = asyncio.run(push())
    schema = {"id": pushed["id"], "version": pushed["version"]}
    own = Ownership(custom_fields=frozenset({"tier_text"}))
    crm = {"lastName": "v1", "customFields": {"tier_text": "Gold"}}
    wanted = {"A": (1, canonical(crm))}
    sync(org, store, wanted, "w1", ownership=own, schema=schema)
    contact_id = store.snapshot(["A"]).contact_id[0]

    async def agent() -> None:
        async with org.client() as client:
            change = {"field": "$.customFields.vip_checkbox", "value": True, "action": "Update"}
            await client.request(
                "PATCH", f"{API}/contacts/{contact_id}", json={"changes": [change]}
            )

    asyncio.run(agent())
    wanted["A"] = (2, canonical({"lastName": "v2", "customFields": {"tier_text": "Platinum"}}))
    sync(org, store, wanted, "w2", ownership=own, schema=schema)
    held = org.emulator.get_contact(contact_id)
    assert held["customFields"] == {"tier_text": "Platinum", "vip_checkbox": True}
    assert held["schema"] == schema
    wanted["A"] = (3, canonical({"lastName": "v3"}))  # the CRM blanked its custom field
    sync(org, store, wanted, "w3", ownership=own, schema=schema)
    held = org.emulator.get_contact(contact_id)
    assert held["customFields"] == {"vip_checkbox": True} and held["schema"] == schema


def test_an_update_of_a_merged_away_contact_lands_on_the_survivor(store: SyncStateStore) -> None:
    """Genesys merged A's contact into B's (the survivor carries both ExternalIds; A's id
    answers 404). A's next update goes to the survivor: no contact is created."""
    org = InProcess(EmulatorConfig(rate_limit_per_minute=100_000))
    expected = wanted_live(["A", "B"], 1)
    _, source_id = sync(org, store, expected, "w1")
    snap = store.snapshot().set_index("business_key")
    away, survivor = snap.loc["A", "contact_id"], snap.loc["B", "contact_id"]

    async def merge() -> None:
        async with org.client() as client:
            ext = {"externalSource": {"id": source_id}, "value": "A"}
            change = {"field": "$.externalIds", "value": ext, "action": "AppendToCollection"}
            await client.request("PATCH", f"{API}/contacts/{survivor}", json={"changes": [change]})
            await client.request("DELETE", f"{API}/contacts/{away}")

    asyncio.run(merge())
    expected.update(wanted_live(["A"], 2))
    report, _ = sync(org, store, expected, "w2", lookup_lag=0.2)
    assert (report.updated, report.relocated, report.recreated) == (1, 1, 0)
    held = contacts_by_external_id(org.emulator.all_contacts(), source_id)
    assert [c["id"] for c in held["A"]] == [survivor] == [c["id"] for c in held["B"]]
    assert len(org.emulator.all_contacts()) == 1
    assert store.snapshot(["A"]).contact_id[0] == survivor
