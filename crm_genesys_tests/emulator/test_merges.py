"""Merges as the platform makes them: the merged-away id answers 404 to updates (and, by default,
to reads), its ExternalIds and identifiers live on the survivor, which carries the SDK's merge
fields; lagging lookups of a merged contact; the public merge endpoint and its limits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from crm_genesys.emulator import ManualClock
from crm_genesys_tests.emulator.conftest import API, Org, contact, make_org, realistic, run, session

LOOKUP = f"{API}/identifierlookup/contacts"


async def add(client: httpx.AsyncClient, h: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"{API}/contacts", json=body, headers=h)
    assert response.status_code == 200, response.text
    return dict(response.json())


def ref(contact_id: str) -> dict[str, str]:
    return {"id": contact_id, "selfUri": f"{API}/contacts/{contact_id}"}


def test_merged_away_contact_answers_404_and_the_survivor_holds_its_ids() -> None:
    org = make_org(realism=realistic(lag_max_s=0.0))

    async def go() -> None:
        client, h, crm = await session(org)
        other = (
            await client.post(f"{API}/externalsources", json={"name": "other"}, headers=h)
        ).json()
        a = await add(
            client,
            h,
            {
                **contact(crm, "AC-1"),
                "externalIds": [
                    {"externalSource": {"id": crm}, "value": "AC-1"},
                    {"externalSource": {"id": other["id"]}, "value": "O-9"},
                ],
                "identifiers": [{"type": "Cookie", "value": "c-1"}],
                "workPhone": {"display": "+13172222222"},
            },
        )
        org.clock.advance(1)
        b = await add(client, h, contact(crm, "AC-1", title="Dr"))
        admin = org.admin()
        merged = await admin.post(
            "/__emulator/merge", json={"contactIds": [a["id"]], "into": b["id"]}
        )
        assert merged.status_code == 200, merged.text
        survivor = merged.json()
        assert survivor["id"] == b["id"] and survivor["title"] == "Dr"
        # A's ExternalIds (union, no duplicate of the shared one), identifiers and its phone.
        assert survivor["externalIds"] == [
            {"externalSource": {"id": crm}, "value": "AC-1"},
            {"externalSource": {"id": other["id"]}, "value": "O-9"},
        ]
        assert [i["value"] for i in survivor["identifiers"]] == ["c-1"]
        assert survivor["workPhone"]["e164"] == "+13172222222"
        # The merge fields of the SDK model.
        assert survivor["canonicalContact"] == ref(b["id"])
        assert survivor["mergeSet"] == [ref(b["id"]), ref(a["id"])]
        assert survivor["mergedFrom"] == [ref(a["id"])]
        # A is gone for reads by id and for every update.
        aid = a["id"]
        assert (await client.get(f"{API}/contacts/{aid}", headers=h)).status_code == 404
        put = await client.put(f"{API}/contacts/{aid}", json=contact(crm, "AC-1"), headers=h)
        assert put.status_code == 404
        patch = await client.patch(
            f"{API}/contacts/{aid}",
            json={"changes": [{"field": "$.title", "value": "X", "action": "Update"}]},
            headers=h,
        )
        assert patch.status_code == 404
        bulk = await client.post(
            f"{API}/bulk/contacts/update",
            json={"entities": [{**contact(crm, "AC-1"), "id": aid}]},
            headers=h,
        )
        assert bulk.json()["results"][0]["status"] == 404 and bulk.json()["errorIndexes"] == [0]
        fetch = await client.post(
            f"{API}/bulk/contacts", json={"entities": [{"id": aid}]}, headers=h
        )
        assert fetch.json()["errorIndexes"] == [0]
        assert (await client.delete(f"{API}/contacts/{aid}", headers=h)).status_code == 404
        # The unresolved reads still show it, pointing at the survivor.
        unresolved = (await client.get(f"{API}/contacts/{aid}/unresolved", headers=h)).json()
        assert unresolved["mergedTo"] == ref(b["id"]) and unresolved["canonicalContact"] == ref(
            b["id"]
        )
        bulk_unresolved = await client.post(
            f"{API}/bulk/contacts/unresolved", json={"entities": [{"id": aid}]}, headers=h
        )
        assert bulk_unresolved.json()["results"][0]["entity"]["mergedTo"] == ref(b["id"])
        # Lookups find the survivor by A's other ExternalId; the org holds one live contact.
        hit = await client.post(
            LOOKUP,
            json={"type": "ExternalId", "value": "O-9", "externalSource": {"id": other["id"]}},
            headers=h,
        )
        assert hit.json()["id"] == b["id"]
        assert [c["id"] for c in org.app.emulator.all_contacts()] == [b["id"]]
        # The survivor keeps its merge fields through a later full update.
        again = await client.put(f"{API}/contacts/{b['id']}", json=contact(crm, "AC-1"), headers=h)
        assert again.json()["mergedFrom"] == [ref(aid)]

    run(go())


def test_merged_reads_can_resolve_to_the_canonical_contact() -> None:
    org = make_org(realism=realistic(lag_max_s=0.0, merged_read="canonical"))

    async def go() -> None:
        client, h, crm = await session(org)
        a, b = await add(client, h, contact(crm, "A")), await add(client, h, contact(crm, "B"))
        org.app.emulator.merge_contacts([a["id"]], into=b["id"])
        got = await client.get(f"{API}/contacts/{a['id']}", headers=h)
        assert got.status_code == 200 and got.json()["id"] == b["id"]
        fetch = await client.post(
            f"{API}/bulk/contacts", json={"entities": [{"id": a["id"]}]}, headers=h
        )
        assert fetch.json()["results"][0]["id"] == b["id"]
        # Updates of the merged-away id are still refused.
        put = await client.put(f"{API}/contacts/{a['id']}", json=contact(crm, "A"), headers=h)
        assert put.status_code == 404

    run(go())


@pytest.mark.parametrize("follow", [False, True])
def test_a_lagging_lookup_of_a_merged_contact(follow: bool) -> None:
    clock = ManualClock()
    org = make_org(
        clock=clock,
        realism=realistic(lag_min_s=4.0, lag_max_s=4.0, stale_hits_follow_merges=follow),
    )

    async def go() -> None:
        client, h, crm = await session(org)
        a = await add(client, h, contact(crm, "A"))
        b = await add(client, h, contact(crm, "B"))
        clock.advance(4.0)
        org.app.emulator.merge_contacts([a["id"]], into=b["id"])
        clock.advance(3.9)
        by_a = await client.post(
            LOOKUP,
            json={"type": "ExternalId", "value": "A", "externalSource": {"id": crm}},
            headers=h,
        )
        # The index still maps A's ExternalId to A (merged away since): dropped or followed.
        if follow:
            assert by_a.status_code == 200 and by_a.json()["id"] == b["id"]
        else:
            assert by_a.status_code == 404
        clock.advance(0.1)
        by_a = await client.post(
            LOOKUP,
            json={"type": "ExternalId", "value": "A", "externalSource": {"id": crm}},
            headers=h,
        )
        assert by_a.status_code == 200 and by_a.json()["id"] == b["id"]

    run(go())


def test_the_public_merge_makes_a_new_contact_from_the_most_recent() -> None:
    org = make_org(realism=realistic(lag_max_s=0.0))

    async def go() -> None:
        client, h, crm = await session(org)
        old = await add(client, h, contact(crm, "OLD", title="Old title", workEmail="a@x.org"))
        org.clock.advance(10)
        new = await add(client, h, contact(crm, "NEW", title="New title", workEmail="b@x.org"))
        response = await client.post(
            f"{API}/contacts/merge",
            json={"contactIds": [old["id"], new["id"]], "valueOverride": {"lastName": "Chosen"}},
            headers=h,
        )
        assert response.status_code == 200, response.text
        merged = response.json()
        assert merged["id"] not in (old["id"], new["id"])
        assert merged["title"] == "New title" and merged["lastName"] == "Chosen"
        # The older contact's e-mail moved into a free e-mail slot.
        assert {merged["workEmail"], merged.get("personalEmail")} == {"a@x.org", "b@x.org"}
        assert {e["value"] for e in merged["externalIds"]} == {"OLD", "NEW"}
        assert merged["mergedFrom"] == [ref(old["id"]), ref(new["id"])]
        for gone in (old, new):
            assert (await client.get(f"{API}/contacts/{gone['id']}", headers=h)).status_code == 404

    run(go())


def test_merges_that_cannot_be_made_are_refused(org: Org) -> None:
    async def go() -> None:
        client, h, crm = await session(org)
        many = [{"externalSource": {"id": crm}, "value": f"X{i}"} for i in range(6)]
        more = [{"externalSource": {"id": crm}, "value": f"Y{i}"} for i in range(6)]
        a = await add(client, h, {"firstName": "A", "externalIds": many})
        b = await add(client, h, {"firstName": "B", "externalIds": more})
        admin = org.admin()
        too_many = await admin.post(
            "/__emulator/merge", json={"contactIds": [a["id"]], "into": b["id"]}
        )
        assert too_many.status_code == 400 and "ExternalIds" in too_many.json()["message"]
        alone = await admin.post(
            "/__emulator/merge", json={"contactIds": [a["id"]], "into": a["id"]}
        )
        assert alone.status_code == 400
        ghost = await admin.post(
            "/__emulator/merge", json={"contactIds": ["ghost"], "into": b["id"]}
        )
        assert ghost.status_code == 404
        sales = org.app.emulator.config.divisions[1].id
        c = await add(client, h, {"firstName": "C", "division": {"id": sales}})
        apart = await admin.post(
            "/__emulator/merge", json={"contactIds": [c["id"]], "into": b["id"]}
        )
        assert apart.status_code == 400 and "division" in apart.json()["message"]
        # Nothing was merged by the refused attempts.
        assert len(org.app.emulator.all_contacts()) == 3

    run(go())


def test_a_chain_of_merges_points_every_ancestor_at_the_last_survivor() -> None:
    org = make_org(realism=realistic(lag_max_s=0.0, merged_read="canonical"))

    async def go() -> None:
        client, h, crm = await session(org)
        a, b, c = [await add(client, h, contact(crm, k)) for k in ("A", "B", "C")]
        emulator = org.app.emulator
        emulator.merge_contacts([a["id"]], into=b["id"])
        survivor = emulator.merge_contacts([b["id"]], into=c["id"])
        assert survivor["mergeSet"] == [ref(c["id"]), ref(b["id"]), ref(a["id"])]
        assert survivor["mergedFrom"] == [ref(b["id"])]
        got = await client.get(f"{API}/contacts/{a['id']}", headers=h)
        assert got.json()["id"] == c["id"]
        assert {e["value"] for e in survivor["externalIds"]} == {"A", "B", "C"}

    run(go())
