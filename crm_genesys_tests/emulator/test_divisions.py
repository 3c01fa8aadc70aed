"""Divisions: the org's list, unknown ids refused with their name, and no division change on
update (PUT or bulk update item) when divisions are strict."""

from __future__ import annotations

from crm_genesys.emulator import Division
from crm_genesys_tests.emulator.conftest import API, Org, contact, make_org, realistic, run, session

SALES = Division("5a1e5000-0000-4000-8000-000000000001", "Sales")
HOME = Division("40e00000-0000-4000-8000-000000000000", "Home")


def strict_org() -> Org:
    return make_org(realism=realistic(lag_max_s=0.0), divisions=(HOME, SALES))


def test_the_org_lists_its_divisions() -> None:
    org = strict_org()

    async def go() -> None:
        client, h, _ = await session(org)
        listing = (await client.get("/api/v2/authorization/divisions", headers=h)).json()
        assert [(d["id"], d["name"], d["homeDivision"]) for d in listing["entities"]] == [
            (HOME.id, "Home", True),
            (SALES.id, "Sales", False),
        ]
        assert listing["total"] == 2 and listing["pageCount"] == 1
        page = await client.get(
            "/api/v2/authorization/divisions", params={"pageSize": 1, "pageNumber": 2}, headers=h
        )
        assert [d["name"] for d in page.json()["entities"]] == ["Sales"]

    run(go())


def test_unknown_division_is_a_400_naming_it() -> None:
    org = strict_org()

    async def go() -> None:
        client, h, source = await session(org)
        body = contact(source, "K", division={"id": "no-such-division"})
        single = await client.post(f"{API}/contacts", json=body, headers=h)
        assert single.status_code == 400
        assert "no-such-division" in single.json()["message"]
        assert single.json()["details"][0]["fieldName"] == "division.id"
        bulk = await client.post(f"{API}/bulk/contacts/add", json={"entities": [body]}, headers=h)
        item = bulk.json()["results"][0]
        assert item["status"] == 400 and "no-such-division" in item["error"]["message"]
        assert org.app.emulator.all_contacts() == []
        # A known division is stored with its name; none given means the home division.
        sales = (
            await client.post(
                f"{API}/contacts", json=contact(source, "S", division={"id": SALES.id}), headers=h
            )
        ).json()
        assert sales["division"]["name"] == "Sales"
        home = (await client.post(f"{API}/contacts", json=contact(source, "H"), headers=h)).json()
        assert home["division"]["id"] == HOME.id

    run(go())


def test_a_contact_cannot_change_division() -> None:
    org = strict_org()

    async def go() -> None:
        client, h, source = await session(org)
        created = (
            await client.post(f"{API}/contacts", json=contact(source, "K"), headers=h)
        ).json()
        cid = created["id"]
        moved = contact(source, "K", division={"id": SALES.id})
        put = await client.put(f"{API}/contacts/{cid}", json=moved, headers=h)
        assert put.status_code == 400 and "cannot change division" in put.json()["message"]
        bulk = await client.post(
            f"{API}/bulk/contacts/update", json={"entities": [{**moved, "id": cid}]}, headers=h
        )
        item = bulk.json()["results"][0]
        assert item["status"] == 400 and "cannot change division" in item["error"]["message"]
        assert bulk.json()["errorIndexes"] == [0]
        stored = (await client.get(f"{API}/contacts/{cid}", headers=h)).json()
        assert stored["division"]["id"] == HOME.id and stored["modifyDate"] == created["modifyDate"]
        # The same division, or none at all, is an ordinary update that keeps it.
        same = contact(source, "K", division={"id": HOME.id}, title="A")
        assert (await client.put(f"{API}/contacts/{cid}", json=same, headers=h)).status_code == 200
        kept = await client.put(
            f"{API}/contacts/{cid}", json=contact(source, "K", title="B"), headers=h
        )
        assert kept.json()["division"]["id"] == HOME.id

    run(go())


def test_the_basic_profile_keeps_unknown_divisions_and_ignores_changes(org: Org) -> None:
    async def go() -> None:
        client, h, source = await session(org)
        made = await client.post(
            f"{API}/contacts", json=contact(source, "K", division={"id": "anything"}), headers=h
        )
        assert made.status_code == 200 and made.json()["division"] == {"id": "anything"}
        moved = await client.put(
            f"{API}/contacts/{made.json()['id']}",
            json=contact(source, "K", division={"id": "elsewhere"}),
            headers=h,
        )
        assert moved.status_code == 200 and moved.json()["division"] == {"id": "anything"}

    run(go())
