"""Identifier claims (`GET/PATCH /contacts/{id}/identifiers`, `IdentifierClaimRequest`): exclusive
in the realistic profile, replaced by full updates, found first by lookups. ExternalIds in the
`externalIds` field stay shareable: duplicates are possible, and the realistic lookup picks any
of them."""

from __future__ import annotations

from typing import Any

import httpx

from crm_genesys_tests.emulator.conftest import API, Org, contact, make_org, realistic, run, session

LOOKUP = f"{API}/identifierlookup/contacts"
COOKIE = {"type": "Cookie", "value": "visitor-1"}


def exclusive() -> Org:
    return make_org(realism=realistic(lag_max_s=0.0))


async def add(client: httpx.AsyncClient, h: dict[str, str], body: dict[str, Any]) -> str:
    response = await client.post(f"{API}/contacts", json=body, headers=h)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def claim(
    client: httpx.AsyncClient,
    h: dict[str, str],
    cid: str,
    identifier: dict[str, Any],
    op: str = "Claim",
) -> httpx.Response:
    return await client.patch(
        f"{API}/contacts/{cid}/identifiers",
        json={"operation": op, "identifier": identifier},
        headers=h,
    )


def test_claim_list_and_release() -> None:
    org = exclusive()

    async def go() -> None:
        client, h, source = await session(org)
        cid = await add(client, h, contact(source, "K"))
        claimed = await claim(client, h, cid, {"type": "Phone", "value": "+1 317 222 2222"})
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["value"] == "+13172222222" and claimed.json()["dateCreated"]
        again = await claim(client, h, cid, {"type": "Phone", "value": "+13172222222"})
        assert again.json() == claimed.json()  # claiming what one holds changes nothing
        listing = (await client.get(f"{API}/contacts/{cid}/identifiers", headers=h)).json()
        assert listing == {"entities": [claimed.json()]}
        found = await client.post(
            LOOKUP, json={"type": "Phone", "value": "+13172222222"}, headers=h
        )
        assert found.json()["id"] == cid
        released = await claim(
            client, h, cid, {"type": "Phone", "value": "+13172222222"}, "Release"
        )
        assert released.status_code == 200
        assert (await client.get(f"{API}/contacts/{cid}/identifiers", headers=h)).json() == {
            "entities": []
        }
        twice = await claim(client, h, cid, {"type": "Phone", "value": "+13172222222"}, "Release")
        assert twice.status_code == 404
        bad = await claim(client, h, cid, {"type": "Phone", "value": "317 222"})
        assert bad.status_code == 400
        unknown = await client.patch(
            f"{API}/contacts/{cid}/identifiers",
            json={"operation": "Steal", "identifier": COOKIE},
            headers=h,
        )
        assert unknown.status_code == 400
        assert (await claim(client, h, "ghost", COOKIE)).status_code == 404

    run(go())


def test_a_second_claim_of_an_identifier_is_refused_everywhere() -> None:
    org = exclusive()

    async def go() -> None:
        client, h, source = await session(org)
        owner = await add(client, h, {**contact(source, "A"), "identifiers": [COOKIE]})
        other = await add(client, h, contact(source, "B"))
        refused = await claim(client, h, other, COOKIE)
        assert refused.status_code == 409 and owner in refused.json()["message"]
        # ... on create, in a bulk add, in an update and in a bulk update item.
        create = await client.post(
            f"{API}/contacts", json={**contact(source, "C"), "identifiers": [COOKIE]}, headers=h
        )
        assert create.status_code == 409
        bulk = await client.post(
            f"{API}/bulk/contacts/add",
            json={
                "entities": [
                    {**contact(source, "D"), "identifiers": [COOKIE]},
                    contact(source, "E"),
                ]
            },
            headers=h,
        )
        statuses = sorted(r["status"] for r in bulk.json()["results"])
        assert statuses == [200, 409] and bulk.json()["errorIndexes"] == [0]
        put = await client.put(
            f"{API}/contacts/{other}",
            json={**contact(source, "B"), "identifiers": [COOKIE]},
            headers=h,
        )
        assert put.status_code == 409
        update = await client.post(
            f"{API}/bulk/contacts/update",
            json={"entities": [{**contact(source, "B"), "id": other, "identifiers": [COOKIE]}]},
            headers=h,
        )
        assert update.json()["results"][0]["status"] == 409
        # Two claims of one identifier inside one request: the first wins.
        twins = await client.post(
            f"{API}/bulk/contacts/add",
            json={
                "entities": [
                    {"firstName": f"T{i}", "identifiers": [{"type": "Cookie", "value": "t"}]}
                    for i in range(2)
                ]
            },
            headers=h,
        )
        assert sorted(r["status"] for r in twins.json()["results"]) == [200, 409]
        holders = [
            c["id"]
            for c in org.app.emulator.all_contacts()
            if COOKIE["value"] in str(c.get("identifiers"))
        ]
        assert holders == [owner]
        # Once released, another contact may claim it.
        await claim(client, h, owner, COOKIE, "Release")
        assert (await claim(client, h, other, COOKIE)).status_code == 200

    run(go())


def test_a_full_update_without_identifiers_releases_them() -> None:
    org = exclusive()

    async def go() -> None:
        client, h, source = await session(org)
        cid = await add(client, h, contact(source, "A"))
        first = (await claim(client, h, cid, COOKIE)).json()
        org.clock.advance(60)
        # Round-tripped identifiers keep their claim date; an update leaving them out drops them.
        current = (await client.get(f"{API}/contacts/{cid}", headers=h)).json()
        kept = await client.put(f"{API}/contacts/{cid}", json=current, headers=h)
        assert kept.json()["identifiers"] == [first]
        dropped = await client.put(f"{API}/contacts/{cid}", json=contact(source, "A"), headers=h)
        assert "identifiers" not in dropped.json()
        assert (await client.post(LOOKUP, json=COOKIE, headers=h)).status_code == 404
        other = await add(client, h, contact(source, "B"))
        assert (await claim(client, h, other, COOKIE)).status_code == 200

    run(go())


def test_a_claimed_identifier_wins_the_lookup_over_contact_fields() -> None:
    org = exclusive()

    async def go() -> None:
        client, h, source = await session(org)
        by_field = await add(client, h, contact(source, "A", workEmail="Ada@Example.com"))
        claimer = await add(client, h, contact(source, "B"))
        email = {"type": "Email", "value": "ada@example.com"}
        assert (await client.post(LOOKUP, json=email, headers=h)).json()["id"] == by_field
        assert (
            await claim(client, h, claimer, {"type": "Email", "value": "ADA@example.com"})
        ).status_code == 200
        assert (await client.post(LOOKUP, json=email, headers=h)).json()["id"] == claimer
        # An ExternalId claim is scoped to its External Source.
        ext = {"type": "ExternalId", "value": "Z-1", "externalSource": {"id": source}}
        assert (await claim(client, h, claimer, ext)).status_code == 200
        assert (await client.post(LOOKUP, json=ext, headers=h)).json()["id"] == claimer
        no_source = await claim(
            client,
            h,
            claimer,
            {"type": "ExternalId", "value": "Z-2", "externalSource": {"id": "nope"}},
        )
        assert no_source.status_code == 400

    run(go())


def test_duplicate_external_ids_are_accepted_and_the_lookup_order_is_a_knob() -> None:
    async def ids_found(order: str, seed: int) -> tuple[list[str], list[str]]:
        org = make_org(realism=realistic(lag_max_s=0.0, duplicate_lookup_order=order, seed=seed))
        client, h, source = await session(org)
        made = [await add(client, h, contact(source, "DUP")) for _ in range(3)]
        ext = {"type": "ExternalId", "value": "DUP", "externalSource": {"id": source}}
        found = [(await client.post(LOOKUP, json=ext, headers=h)).json()["id"] for _ in range(12)]
        return made, found

    async def go() -> None:
        made, oldest = await ids_found("oldest", 0)
        assert len(set(made)) == 3 and set(oldest) == {made[0]}
        made, newest = await ids_found("newest", 0)
        assert set(newest) == {made[-1]}
        made, shuffled = await ids_found("random", 1)
        assert len(set(shuffled)) > 1 and set(shuffled) <= set(made)
        # Seeded: the same seed and the same requests pick the same contacts in the same order.
        made_again, again = await ids_found("random", 1)
        assert [made.index(i) for i in shuffled] == [made_again.index(i) for i in again]

    run(go())


def test_the_basic_profile_lets_contacts_share_a_claim(org: Org) -> None:
    async def go() -> None:
        client, h, source = await session(org)
        first = await add(client, h, {**contact(source, "A"), "identifiers": [COOKIE]})
        second = await add(client, h, {**contact(source, "B"), "identifiers": [COOKIE]})
        assert first != second
        assert (await client.post(LOOKUP, json=COOKIE, headers=h)).json()["id"] == first

    run(go())
