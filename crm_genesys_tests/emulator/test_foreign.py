"""The org's other writers: every edit the foreign writer makes is reported exactly (and nothing
else changes), merges of duplicates, interaction contacts in scans, seeding and the admin API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from crm_genesys.emulator import EmulatorConfig, ForeignEdit, create_app
from crm_genesys.emulator.foreign import EDIT_KINDS, FOREIGN_SOURCE_NAME
from crm_genesys_tests.emulator.conftest import API, Org, contact, make_org, realistic, run, session

SERVER_SET = {"modifyDate"}


async def synced_org(
    org: Org, n: int = 12, duplicates: int = 2
) -> tuple[httpx.AsyncClient, dict[str, str], str]:
    """`n` contacts as a sync makes them (one ExternalId each), `duplicates` of them twice."""
    client, h, source = await session(org)
    keys = [f"AC-{i}" for i in range(n)] + [f"AC-{i}" for i in range(duplicates)]
    body = {
        "entities": [
            contact(source, k, workPhone={"display": f"+1317555{i:04d}"})
            for i, k in enumerate(keys)
        ]
    }
    added = await client.post(f"{API}/bulk/contacts/add", json=body, headers=h)
    assert added.json()["errorCount"] == 0
    return client, h, source


def _without(contact: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in contact.items() if k not in (*fields, "modifyDate")}


def test_every_edit_is_reported_exactly_and_nothing_else_changes() -> None:
    org = make_org(realism=realistic(lag_max_s=0.0))

    async def go() -> None:
        await synced_org(org)
        emulator = org.app.emulator
        before = {c["id"]: c for c in emulator.all_contacts()}
        edits = emulator.run_foreign_writer(seed=3, edits=10, merges=2, interactions=4)
        # Merges come first: every later edit is on a contact still live.
        after = {c["id"]: c for c in emulator.all_contacts()}
        kinds = [e.kind for e in edits]
        assert sorted(set(kinds)) == sorted({*EDIT_KINDS, "merge", "interaction"})
        assert kinds.count("merge") == 2 and kinds.count("interaction") == 4
        assert sum(1 for k in kinds if k in EDIT_KINDS) == 10
        merged_away = {i for e in edits if e.kind == "merge" for i in e.merged_ids}
        survivors = {e.contact_id for e in edits if e.kind == "merge"}
        created = {e.contact_id for e in edits if e.kind == "interaction"}
        assert set(after) == set(before) - merged_away | created
        edited: set[str] = set()
        for edit in (e for e in edits if e.kind in EDIT_KINDS):
            cid = edit.contact_id
            assert cid not in edited  # one edit per contact
            edited.add(cid)
            old, new = before[cid], after[cid]
            if cid in survivors:
                assert edit.survives_in(new)
                continue  # its other fields changed in the merge: checked below
            # The reported field holds the reported value; every other field is untouched.
            assert _without(new, edit.field) == _without(old, edit.field)
            if edit.field in ("externalIds", "identifiers"):
                assert new[edit.field][: len(old.get(edit.field, []))] == old.get(edit.field, [])
                added = new[edit.field][len(old.get(edit.field, [])) :]
                assert len(added) == 1 and {k: added[0][k] for k in edit.value} == edit.value
            else:
                assert new[edit.field] == edit.value
            assert edit.survives_in(new)
        for cid, old in before.items():
            if cid not in edited | merged_away | survivors:
                assert after[cid] == old
        for edit in (e for e in edits if e.kind == "merge"):
            survivor = after[edit.contact_id]
            assert edit.survives_in(survivor) and survivor["mergedFrom"]
            values = {x["value"] for x in survivor["externalIds"]}
            assert {x["value"] for i in edit.merged_ids for x in before[i]["externalIds"]} <= values
        for cid in created:
            assert after[cid]["type"] in ("Ephemeral", "Identified")
        # The foreign ExternalIds come from a source of their own, created once.
        foreign = [s for _, s in emulator.store.list_sources(FOREIGN_SOURCE_NAME, None, 0, 10)]
        assert len(foreign) == 1
        assert emulator.foreign_edits() == edits

    run(go())


def test_an_edit_that_a_later_update_erases_no_longer_survives() -> None:
    org = make_org(realism=realistic(lag_max_s=0.0))

    async def go() -> None:
        client, h, source = await synced_org(org, duplicates=0)
        emulator = org.app.emulator
        (edit,) = emulator.run_foreign_writer(seed=1, edits=1, kinds=["surveyOptOut"])
        assert edit.survives_in(emulator.get_contact(edit.contact_id))
        # A full update built from the CRM's fields alone replaces the agent's edit.
        await client.put(
            f"{API}/contacts/{edit.contact_id}", json=contact(source, "AC-x"), headers=h
        )
        assert not edit.survives_in(emulator.get_contact(edit.contact_id))

    run(go())


def test_the_writer_is_seeded() -> None:
    async def edits_of(seed: int) -> list[tuple[str, str, int, str]]:
        org = make_org(realism=realistic(lag_max_s=0.0))
        await synced_org(org)
        emulator = org.app.emulator
        order = [c["id"] for c in emulator.all_contacts()]
        done = emulator.run_foreign_writer(seed=seed, edits=6, merges=1)
        position = {cid: i for i, cid in enumerate(order)}
        return [
            (
                e.kind,
                e.field,
                position[e.contact_id],
                "" if e.kind in ("externalId", "merge") else str(e.value),
            )
            for e in done
        ]

    async def go() -> None:
        first = await edits_of(11)
        assert first == await edits_of(11)
        assert first != await edits_of(12)

    run(go())


def test_the_admin_api_runs_the_writer_and_lists_its_edits() -> None:
    org = make_org(realism=realistic(lag_max_s=0.0))

    async def go() -> None:
        await synced_org(org)
        admin = org.admin()
        response = await admin.post(
            "/__emulator/foreign-writer",
            json={"seed": 2, "edits": 3, "merges": 1, "kinds": ["twitterId", "identifier"]},
        )
        assert response.status_code == 200, response.text
        edits = response.json()["edits"]
        assert {e["kind"] for e in edits} == {"twitterId", "identifier", "merge"}
        listed = (await admin.get("/__emulator/foreign-writer")).json()["edits"]
        assert listed == edits
        rebuilt = [ForeignEdit(**{**e, "merged_ids": tuple(e["merged_ids"])}) for e in listed]
        assert rebuilt == org.app.emulator.foreign_edits()
        bad = await admin.post("/__emulator/foreign-writer", json={"kinds": ["delete everything"]})
        assert bad.status_code == 400
        wrong = await admin.post("/__emulator/foreign-writer", json={"edits": "many"})
        assert wrong.status_code == 400
        await admin.post("/__emulator/reset", json={"data": False})
        assert (await admin.get("/__emulator/foreign-writer")).json() == {"edits": []}

    run(go())


def test_a_realistic_org_holds_interaction_contacts_that_scans_see(tmp_path: Path) -> None:
    db = tmp_path / "emulator.sqlite"

    async def scanned(org_app: Any) -> list[dict[str, Any]]:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=org_app), base_url="http://e")
        tok = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("demo-client", "demo-secret"),
        )
        h = {"Authorization": f"Bearer {tok.json()['access_token']}"}
        page = await client.get(f"{API}/scan/contacts", params={"limit": 200}, headers=h)
        return list(page.json()["entities"])

    async def go() -> None:
        realism = realistic(lag_max_s=0.0, interaction_contacts=6)
        first = create_app(EmulatorConfig(db_path=db, realism=realism))
        contacts = await scanned(first)
        assert sorted(c["type"] for c in contacts) == ["Ephemeral"] * 3 + ["Identified"] * 3
        identified = [c for c in contacts if c["type"] == "Identified"]
        assert all(c["cellPhone"]["e164"] and c["identifiers"] for c in identified)
        # The same org file is seeded once, whoever opens it.
        again = create_app(EmulatorConfig(db_path=db, realism=realism))
        assert len(await scanned(again)) == 6
        # A reset forgets them and seeds the org anew.
        again.state.emulator.reset()
        assert len(await scanned(again)) == 6
        assert (
            len(await scanned(create_app(EmulatorConfig(db_path=tmp_path / "basic.sqlite")))) == 0
        )

    run(go())
