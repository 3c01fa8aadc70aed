"""Bulk add/update/remove/fetch: per-item results, shuffled order, errorIndexes, limits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from crm_genesys_tests.emulator.conftest import API, Org, contact, make_org, new_source, run, token


async def _session(org: Org) -> tuple[httpx.AsyncClient, dict[str, str], str]:
    client = org.client()
    headers = await token(client)
    return client, headers, await new_source(client, headers)


def _key(result: dict[str, Any]) -> str:
    return str(result["entity"]["externalIds"][0]["value"])


def test_bulk_add_results_are_shuffled_and_matchable_by_external_id(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        orders = []
        for batch in range(3):
            keys = [f"b{batch}-{i}" for i in range(50)]
            r = await client.post(
                f"{API}/bulk/contacts/add",
                json={"entities": [contact(source, k) for k in keys]},
                headers=h,
            )
            assert r.status_code == 200
            body = r.json()
            assert body["errorCount"] == 0 and body["errorIndexes"] == []
            got = [_key(res) for res in body["results"]]
            assert sorted(got) == sorted(keys)
            orders.append(got != keys)
            for res in body["results"]:
                assert (
                    res["success"] is True
                    and res["status"] == 200
                    and res["id"] == res["entity"]["id"]
                )
        assert all(orders)  # 50! orders: landing on request order by chance is impossible
        assert len(org.app.emulator.all_contacts()) == 150

    run(go())


def test_result_order_is_reproducible_under_a_seed() -> None:
    def order(seed: int) -> list[str]:
        org = make_org(seed=seed)

        async def go() -> list[str]:
            client, h, source = await _session(org)
            r = await client.post(
                f"{API}/bulk/contacts/add",
                json={"entities": [contact(source, str(i)) for i in range(30)]},
                headers=h,
            )
            return [_key(res) for res in r.json()["results"]]

        return run(go())

    assert order(7) == order(7)
    assert order(7) != order(8)


def test_error_indexes_point_into_the_request(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        entities = [contact(source, str(i)) for i in range(10)]
        entities[3]["workEmail"] = "broken"
        entities[7]["firstName"] = "x" * 1001
        r = await client.post(f"{API}/bulk/contacts/add", json={"entities": entities}, headers=h)
        body = r.json()
        assert body["errorCount"] == 2 and body["errorIndexes"] == [3, 7]
        failed = [res for res in body["results"] if not res["success"]]
        assert {f["error"]["details"][0]["fieldName"] for f in failed} == {"workEmail", "firstName"}
        assert all(f["status"] == 400 and f["error"]["retryable"] is False for f in failed)
        # A failed add has no id; the entity as sent, echoed in the error, carries its key.
        assert {f["error"]["entity"]["externalIds"][0]["value"] for f in failed} == {"3", "7"}
        assert len(org.app.emulator.all_contacts()) == 8

    run(go())


def test_bulk_update_and_remove_report_missing_ids_per_item(org: Org) -> None:
    async def go() -> None:
        client, h, source = await _session(org)
        added = await client.post(
            f"{API}/bulk/contacts/add",
            json={"entities": [contact(source, str(i)) for i in range(4)]},
            headers=h,
        )
        ids = {_key(res): res["id"] for res in added.json()["results"]}
        updates = [
            {**contact(source, "0"), "id": ids["0"], "title": "Updated"},
            {**contact(source, "x"), "id": "gone"},
            {**contact(source, "2"), "id": ids["2"], "title": "Updated"},
        ]
        r = (
            await client.post(f"{API}/bulk/contacts/update", json={"entities": updates}, headers=h)
        ).json()
        assert r["errorIndexes"] == [1]
        by_id = {res["id"]: res for res in r["results"]}
        assert by_id["gone"]["status"] == 404 and by_id["gone"]["error"]["code"] == "not.found"
        assert by_id[ids["0"]]["entity"]["title"] == "Updated"
        assert len(org.app.emulator.all_contacts()) == 4  # an update is never an upsert

        removes = [{"id": ids["1"]}, {"id": "gone"}, {"id": ids["3"]}]
        r = (
            await client.post(f"{API}/bulk/contacts/remove", json={"entities": removes}, headers=h)
        ).json()
        assert r["errorIndexes"] == [1] and r["errorCount"] == 1
        by_id = {res["id"]: res for res in r["results"]}
        assert by_id["gone"]["status"] == 404
        assert by_id[ids["1"]]["success"] and by_id[ids["3"]]["success"]
        left = {c["id"] for c in org.app.emulator.all_contacts()}
        assert left == {ids["0"], ids["2"]}

        fetch = [{"id": ids["0"]}, {"id": ids["1"]}]
        r = (await client.post(f"{API}/bulk/contacts", json={"entities": fetch}, headers=h)).json()
        assert r["errorIndexes"] == [1]
        assert {res["id"]: res["success"] for res in r["results"]} == {
            ids["0"]: True,
            ids["1"]: False,
        }

    run(go())


def test_too_many_entities_is_a_clear_400() -> None:
    org = make_org(max_bulk_entities=5)

    async def go() -> None:
        client, h, source = await _session(org)
        r = await client.post(
            f"{API}/bulk/contacts/add",
            json={"entities": [contact(source, str(i)) for i in range(6)]},
            headers=h,
        )
        assert r.status_code == 400
        assert r.json()["code"] == "bulk.entities.limit.exceeded"
        assert r.json()["details"][0]["fieldName"] == "entities"
        r = await client.post(f"{API}/bulk/contacts/add", json={"entities": []}, headers=h)
        assert r.status_code == 400
        assert org.app.emulator.all_contacts() == []

    run(go())


def test_bulk_add_of_100_costs_a_few_milliseconds() -> None:
    org = make_org(rate_limit_per_minute=10_000)

    async def go() -> float:
        client, h, source = await _session(org)
        timings = []
        for batch in range(15):
            entities = [
                contact(
                    source,
                    f"{batch}-{i}",
                    workPhone={"display": f"+1 317 555 {i:04d}"},
                    workEmail=f"p{i}@example.com",
                    address={"city": "Indianapolis", "postalCode": "46204"},
                )
                for i in range(100)
            ]
            started = time.perf_counter()
            r = await client.post(
                f"{API}/bulk/contacts/add", json={"entities": entities}, headers=h
            )
            timings.append(time.perf_counter() - started)
            assert r.json()["errorCount"] == 0
        timings.sort()
        return timings[len(timings) // 2]

    median = run(go())
    # A few ms is typical (client encode + app + SQLite); the bound leaves room for a busy CI box.
    assert median < 0.1, f"median bulk add of 100 took {median * 1000:.1f} ms"


def test_concurrent_bulk_requests_on_a_shared_file_lose_nothing(tmp_path: Path) -> None:
    """Two apps (as two processes would) over one database, 8 concurrent requests each."""
    orgs = [
        make_org(db_path=tmp_path / "org.sqlite", rate_limit_per_minute=10_000) for _ in range(2)
    ]

    async def go() -> None:
        clients = [o.client() for o in orgs]
        heads = [await token(c) for c in clients]
        source = await new_source(clients[0], heads[0])

        async def add(n: int) -> None:
            c, h = clients[n % 2], heads[n % 2]
            entities = [contact(source, f"{n}-{i}") for i in range(25)]
            r = await c.post(f"{API}/bulk/contacts/add", json={"entities": entities}, headers=h)
            assert r.json()["errorCount"] == 0

        await asyncio.gather(*(add(n) for n in range(16)))

    run(go())
    stored = orgs[1].app.emulator.all_contacts()
    assert len(stored) == 16 * 25
    assert len({c["externalIds"][0]["value"] for c in stored}) == 16 * 25
