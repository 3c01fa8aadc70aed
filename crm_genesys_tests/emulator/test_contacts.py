"""Single-contact endpoints, validation and lookups, in-process."""

from __future__ import annotations

from typing import Any

import httpx

from crm_genesys_tests.emulator.conftest import (
    API,
    Org,
    contact,
    make_org,
    new_source,
    realistic,
    run,
    session,
    token,
)


async def _session(org: Org) -> tuple[httpx.AsyncClient, dict[str, str], str]:
    client = org.client()
    headers = await token(client)
    return client, headers, await new_source(client, headers)


def test_create_get_put_patch_delete(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        created = await client.post(
            f"{API}/contacts", json={**contact(source, "k1"), "id": "mine"}, headers=h
        )
        assert created.status_code == 200
        body = created.json()
        assert body["id"] != "mine"  # the server generates ids
        assert body["type"] == "Curated" and body["createDate"].endswith("Z")
        got = await client.get(f"{API}/contacts/{body['id']}?expand=externalSources", headers=h)
        assert got.json() == body

        org.clock.advance(5)
        put = await client.put(
            f"{API}/contacts/{body['id']}",
            json={"firstName": "Only", "lastName": "This"},
            headers=h,
        )
        assert put.status_code == 200
        updated = put.json()
        assert updated["firstName"] == "Only" and "externalIds" not in updated  # full update
        assert updated["createDate"] == body["createDate"]
        assert updated["modifyDate"] > body["modifyDate"]

        patch = await client.patch(
            f"{API}/contacts/{body['id']}",
            json={
                "changes": [
                    {"field": "$.title", "value": "Dr", "action": "UpdateIfEmpty"},
                    {"field": "$.firstName", "value": "X", "action": "UpdateIfEmpty"},
                    {"field": "$.address.city", "value": "Oslo", "action": "Update"},
                    {"field": "$.lastName", "action": "Remove"},
                ]
            },
            headers=h,
        )
        assert patch.status_code == 200, patch.text
        patched = patch.json()
        assert patched["title"] == "Dr" and patched["firstName"] == "Only"
        assert patched["address"] == {"city": "Oslo"} and "lastName" not in patched

        assert (await client.delete(f"{API}/contacts/{body['id']}", headers=h)).status_code == 200
        missing = await client.get(f"{API}/contacts/{body['id']}", headers=h)
        assert missing.status_code == 404 and missing.json()["code"] == "not.found"
        assert org.app.emulator.all_contacts() == []

    run(go())


def test_put_on_missing_contact_is_404_not_an_upsert(org: Org) -> None:
    async def go() -> None:
        client, h, _ = await _session(org)
        response = await client.put(f"{API}/contacts/nope", json={"firstName": "A"}, headers=h)
        assert response.status_code == 404
        assert set(response.json()) >= {
            "message",
            "code",
            "status",
            "messageWithParams",
            "contextId",
            "details",
            "errors",
        }
        assert org.app.emulator.all_contacts() == []

    run(go())


def test_phone_without_normalization_country_is_read_as_plus_one(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        phones = {
            "workPhone": {"display": "317-222-2222"},
            "cellPhone": {"display": "030 1234567", "normalizationCountryCode": "DE"},
            "homePhone": {"display": "+44 20 7946 0958", "extension": 12},
            "otherPhone": {"display": "call me maybe"},
        }
        response = await client.post(
            f"{API}/contacts", json=contact(source, "k", **phones), headers=h
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["workPhone"]["e164"] == "+13172222222"
        assert body["workPhone"]["countryCode"] == "US"
        assert body["workPhone"]["userInput"] == "317-222-2222"
        assert body["cellPhone"]["e164"] == "+49301234567"
        assert body["homePhone"]["e164"] == "+442079460958" and body["homePhone"]["extension"] == 12
        # Unreadable numbers are kept as typed, without e164 (and are not searchable).
        assert body["otherPhone"] == {"display": "call me maybe", "userInput": "call me maybe"}
        lookup = await client.post(
            f"{API}/identifierlookup/contacts",
            json={"type": "Phone", "value": "+13172222222"},
            headers=h,
        )
        assert lookup.status_code == 200 and lookup.json()["id"] == body["id"]
        pages = await client.get(
            f"{API}/reversewhitepageslookup", params={"lookupVal": "+49301234567"}, headers=h
        )
        assert [c["id"] for c in pages.json()["contacts"]] == [body["id"]]

    run(go())


def _invalid(body_fields: dict[str, Any], field_name: str) -> None:
    org = make_org()

    async def go() -> None:
        client, h, source = await _session(org)
        response = await client.post(
            f"{API}/contacts", json=contact(source, "k", **body_fields), headers=h
        )
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["code"] == "invalid.value"
        assert field_name in [d["fieldName"] for d in error["details"]]
        assert field_name in error["message"]

    run(go())


def test_field_limits_are_enforced_with_the_field_named() -> None:
    _invalid({"firstName": "x" * 1001}, "firstName")
    _invalid({"title": "x" * 1001}, "title")
    _invalid({"workEmail": "a" * 250 + "@ex.com"}, "workEmail")
    _invalid({"personalEmail": "not-an-email"}, "personalEmail")
    _invalid({"address": {"address1": "x" * 201}}, "address.address1")
    _invalid({"address": {"city": "x" * 101}}, "address.city")
    _invalid({"address": {"state": "x" * 51}}, "address.state")
    _invalid({"address": {"postalCode": "x" * 26}}, "address.postalCode")
    _invalid({"address": {"countryCode": "x" * 26}}, "address.countryCode")
    _invalid({"externalSystemUrl": "x" * 1001}, "externalSystemUrl")
    _invalid({"workPhone": {"display": "+13172222222", "extension": "12"}}, "workPhone.extension")
    _invalid(
        {"workPhone": {"display": "1", "normalizationCountryCode": "XX"}},
        "workPhone.normalizationCountryCode",
    )
    _invalid({"first_name": "snake"}, "first_name")


def test_external_ids_are_checked() -> None:
    org = make_org()

    async def go() -> None:
        client, h, source = await _session(org)
        eleven = [{"externalSource": {"id": source}, "value": str(i)} for i in range(11)]
        r = await client.post(
            f"{API}/contacts", json={"firstName": "A", "externalIds": eleven}, headers=h
        )
        assert r.status_code == 400 and r.json()["details"][0]["fieldName"] == "externalIds"
        ghost = [{"externalSource": {"id": "ghost"}, "value": "1"}]
        r = await client.post(
            f"{API}/contacts", json={"firstName": "A", "externalIds": ghost}, headers=h
        )
        assert r.status_code == 400
        assert r.json()["details"][0]["fieldName"] == "externalIds[0].externalSource.id"

    run(go())


def test_exactly_at_the_limits_is_accepted(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        body = contact(
            source,
            "k",
            firstName="x" * 1000,
            workEmail="a" * 240 + "@example.com",
            address={"address1": "x" * 200, "state": "x" * 50, "postalCode": "x" * 25},
        )
        body["externalIds"] = [
            {"externalSource": {"id": source}, "value": str(i)} for i in range(10)
        ]
        r = await client.post(f"{API}/contacts", json=body, headers=h)
        assert r.status_code == 200, r.text

    run(go())


def test_null_fields_are_left_out_of_responses(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        r = await client.post(
            f"{API}/contacts", json=contact(source, "k", middleName=None, workPhone=None), headers=h
        )
        body = r.json()
        assert "middleName" not in body and "workPhone" not in body

        def no_nulls(value: Any) -> bool:
            if isinstance(value, dict):
                return all(v is not None and no_nulls(v) for v in value.values())
            if isinstance(value, list):
                return all(no_nulls(v) for v in value)
            return True

        assert no_nulls(body)

    run(go())


def test_duplicate_external_id_is_accepted_and_lookup_returns_the_oldest(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        first = (
            await client.post(f"{API}/contacts", json=contact(source, "dup"), headers=h)
        ).json()
        org.clock.advance(1)
        second = (
            await client.post(f"{API}/contacts", json=contact(source, "dup"), headers=h)
        ).json()
        assert first["id"] != second["id"]
        assert len(org.app.emulator.all_contacts()) == 2
        for _ in range(3):
            found = await client.post(
                f"{API}/identifierlookup/contacts",
                json={"type": "ExternalId", "value": "dup", "externalSource": {"id": source}},
                headers=h,
            )
            assert found.json()["id"] == first["id"]
        miss = await client.post(
            f"{API}/identifierlookup/contacts",
            json={"type": "ExternalId", "value": "nobody", "externalSource": {"id": source}},
            headers=h,
        )
        assert miss.status_code == 404
        # Other source, same value: not the same identifier.
        other = await new_source(client, h, "other")
        miss = await client.post(
            f"{API}/identifierlookup/contacts",
            json={"type": "ExternalId", "value": "dup", "externalSource": {"id": other}},
            headers=h,
        )
        assert miss.status_code == 404

    run(go())


def test_email_lookup_is_case_insensitive(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        made = (
            await client.post(
                f"{API}/contacts", json=contact(source, "k", workEmail="Ann@Example.com"), headers=h
            )
        ).json()
        r = await client.post(
            f"{API}/identifierlookup/contacts",
            json={"type": "Email", "value": "ann@example.COM"},
            headers=h,
        )
        assert r.json()["id"] == made["id"]

    run(go())


def test_body_over_512000_bytes_gets_413_and_at_the_limit_passes(org: Org) -> None:
    async def go() -> None:
        client, h, _ = await _session(org)
        filler = "x" * (513_000)
        r = await client.post(
            f"{API}/contacts",
            content=f'{{"firstName":"{filler}"}}',
            headers={**h, "Content-Type": "application/json"},
        )
        assert r.status_code == 413 and r.json()["status"] == 413
        assert "inin-ratelimit-count" in r.headers
        # Just under the limit the body is read (and then refused for the field length: 400).
        small = '{"firstName":"' + "x" * (512_000 - 17) + '"}'
        assert len(small) <= 512_000
        r = await client.post(
            f"{API}/contacts", content=small, headers={**h, "Content-Type": "application/json"}
        )
        assert r.status_code == 400

    run(go())


def test_external_sources_crud_and_prefix_listing(org: Org) -> None:
    async def go() -> None:
        client = org.client()
        h = await token(client)
        ids = [await new_source(client, h, f"crm-{i:02d}") for i in range(12)]
        await new_source(client, h, "other")
        dup = await client.post(f"{API}/externalsources", json={"name": "crm-00"}, headers=h)
        assert dup.status_code == 409
        page = (
            await client.get(
                f"{API}/externalsources", params={"name": "crm-", "limit": 10}, headers=h
            )
        ).json()
        assert [s["id"] for s in page["entities"]] == ids[:10]
        rest = (
            await client.get(
                f"{API}/externalsources",
                params={"name": "crm-", "limit": 10, "cursor": page["cursors"]["after"]},
                headers=h,
            )
        ).json()
        assert [s["id"] for s in rest["entities"]] == ids[10:] and "cursors" not in rest
        put = await client.put(
            f"{API}/externalsources/{ids[0]}", json={"name": "renamed", "active": False}, headers=h
        )
        assert put.json()["active"] is False
        inactive = (
            await client.get(f"{API}/externalsources", params={"active": "false"}, headers=h)
        ).json()
        assert [s["name"] for s in inactive["entities"]] == ["renamed"]
        assert (
            await client.delete(f"{API}/externalsources/{ids[0]}", headers=h)
        ).status_code == 200
        assert (await client.get(f"{API}/externalsources/{ids[0]}", headers=h)).status_code == 404
        bad_limit = await client.get(f"{API}/externalsources", params={"limit": 5}, headers=h)
        assert bad_limit.status_code == 400

    run(go())


def test_scan_pages_through_every_contact_once(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        made = []
        for start in range(0, 45, 15):
            entities = [contact(source, f"k{i}") for i in range(start, start + 15)]
            r = await client.post(
                f"{API}/bulk/contacts/add", json={"entities": entities}, headers=h
            )
            made += [res["id"] for res in r.json()["results"]]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 10}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(f"{API}/scan/contacts", params=params, headers=h)).json()
            pages += 1
            seen += [c["id"] for c in page["entities"]]
            cursor = page.get("cursors", {}).get("after")
            if not cursor:
                assert "nextUri" not in page
                break
        assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
        assert pages == 5
        for bad in (9, 201):
            r = await client.get(f"{API}/scan/contacts", params={"limit": bad}, headers=h)
            assert r.status_code == 400
        first = (await client.get(f"{API}/scan/contacts", params={"limit": 10}, headers=h)).json()
        org.clock.advance(25 * 3600)  # cursors live 24 h (and so do tokens: take a new one)
        h = await token(client)
        stale = {"limit": 10, "cursor": first["cursors"]["after"]}
        r = await client.get(f"{API}/scan/contacts", params=stale, headers=h)
        assert r.status_code == 400 and r.json()["details"][0]["fieldName"] == "cursor"

    run(go())


def test_get_and_delete_accept_a_json_content_type(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        made = (await client.post(f"{API}/contacts", json=contact(source, "k"), headers=h)).json()
        hj = {**h, "Content-Type": "application/json"}
        assert (await client.get(f"{API}/contacts/{made['id']}", headers=hj)).status_code == 200
        r = await client.delete(f"{API}/contacts/{made['id']}", headers=hj)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"

    run(go())


def test_the_realistic_server_reformats_phone_display_internationally() -> None:
    org = make_org(realism=realistic(lag_max_s=0.0))

    async def go() -> None:
        client, h, source = await session(org)
        body = contact(
            source,
            "P",
            workPhone={"display": "(317) 222-2222"},
            cellPhone={"display": "030 1234567", "normalizationCountryCode": "DE"},
            homePhone={"display": "not a number"},
        )
        made = (await client.post(f"{API}/contacts", json=body, headers=h)).json()
        assert made["workPhone"]["display"] == "+1 3172222222"
        assert made["workPhone"]["userInput"] == "(317) 222-2222"
        assert made["workPhone"]["e164"] == "+13172222222"
        assert made["cellPhone"]["display"] == "+49 301234567"
        assert made["cellPhone"]["e164"] == "+49301234567"
        assert made["homePhone"]["display"] == "not a number" and "e164" not in made["homePhone"]
        # Sent back as read, a phone keeps what was typed in originally.
        again = await client.put(f"{API}/contacts/{made['id']}", json=made, headers=h)
        assert again.json()["workPhone"] == made["workPhone"]
        changed = {**made, "workPhone": {"display": "+13175550000"}}
        changed = (await client.put(f"{API}/contacts/{made['id']}", json=changed, headers=h)).json()
        assert changed["workPhone"]["display"] == "+1 3175550000"
        assert changed["workPhone"]["userInput"] == "+13175550000"

    run(go())


def test_the_basic_profile_keeps_phone_display_as_sent(org: Org) -> None:
    async def go() -> None:
        client, h, source = await session(org)
        body = contact(source, "P", workPhone={"display": "(317) 222-2222"})
        made = (await client.post(f"{API}/contacts", json=body, headers=h)).json()
        assert made["workPhone"]["display"] == "(317) 222-2222"

    run(go())
