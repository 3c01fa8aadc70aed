"""Eventual consistency in the realistic profile: lookups, reverse lookups, searches and scans see
a write only after its lag; reads by id are immediate. Simulated time (ManualClock) throughout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.emulator import ManualClock
from crm_genesys_tests.emulator.conftest import API, Org, contact, make_org, realistic, run, session

LOOKUP = f"{API}/identifierlookup/contacts"


def ext_lookup(source: str, key: str) -> dict[str, Any]:
    return {"type": "ExternalId", "value": key, "externalSource": {"id": source}}


def fixed_lag(seconds: float, **knobs: Any) -> Org:
    return make_org(realism=realistic(lag_min_s=seconds, lag_max_s=seconds, **knobs))


async def scan_ids(client: httpx.AsyncClient, h: dict[str, str]) -> list[str]:
    page = (await client.get(f"{API}/scan/contacts", params={"limit": 200}, headers=h)).json()
    return [c["id"] for c in page["entities"]]


def test_a_created_contact_is_found_by_lookup_only_after_its_lag() -> None:
    org = fixed_lag(3.0)

    async def go() -> None:
        client, h, source = await session(org)
        body = contact(source, "K1", workPhone={"display": "+13172222222"}, workEmail="a@x.org")
        created = (await client.post(f"{API}/contacts", json=body, headers=h)).json()
        cid = created["id"]
        # Reads by id are immediate: GET and the bulk fetch.
        assert (await client.get(f"{API}/contacts/{cid}", headers=h)).status_code == 200
        fetched = await client.post(
            f"{API}/bulk/contacts", json={"entities": [{"id": cid}]}, headers=h
        )
        assert fetched.json()["results"][0]["success"] is True
        # The index does not know it yet: lookups, reverse lookups, search and scan miss it.
        for wait in (0.0, 2.9):
            org.clock.advance(wait)
            assert (
                await client.post(LOOKUP, json=ext_lookup(source, "K1"), headers=h)
            ).status_code == 404
            phone = {"type": "Phone", "value": "+13172222222"}
            assert (await client.post(LOOKUP, json=phone, headers=h)).status_code == 404
            pages = await client.get(
                f"{API}/reversewhitepageslookup", params={"lookupVal": "a@x.org"}, headers=h
            )
            assert pages.json() == {"contacts": []}
            found = await client.get(f"{API}/contacts", params={"q": "first k1"}, headers=h)
            assert found.json()["total"] == 0
            assert await scan_ids(client, h) == []
        org.clock.advance(0.1)  # 3.0 s after the write
        hit = await client.post(LOOKUP, json=ext_lookup(source, "K1"), headers=h)
        assert hit.status_code == 200 and hit.json()["id"] == cid
        pages = await client.get(
            f"{API}/reversewhitepageslookup", params={"lookupVal": "+13172222222"}, headers=h
        )
        assert [c["id"] for c in pages.json()["contacts"]] == [cid]
        found = await client.get(f"{API}/contacts", params={"q": "first k1"}, headers=h)
        assert [c["id"] for c in found.json()["entities"]] == [cid]
        assert await scan_ids(client, h) == [cid]

    run(go())


def test_an_update_replaces_the_indexed_keys_only_after_its_lag() -> None:
    org = fixed_lag(2.0)

    async def go() -> None:
        client, h, source = await session(org)
        cid = (await client.post(f"{API}/contacts", json=contact(source, "OLD"), headers=h)).json()[
            "id"
        ]
        org.clock.advance(2.0)
        put = await client.put(f"{API}/contacts/{cid}", json=contact(source, "NEW"), headers=h)
        assert put.status_code == 200
        # By id: the new version at once.
        got = (await client.get(f"{API}/contacts/{cid}", headers=h)).json()
        assert got["externalIds"][0]["value"] == "NEW"
        org.clock.advance(1.9)
        old = await client.post(LOOKUP, json=ext_lookup(source, "OLD"), headers=h)
        new = await client.post(LOOKUP, json=ext_lookup(source, "NEW"), headers=h)
        # The index still holds the old key; its hit is hydrated from the primary (new content).
        assert old.status_code == 200 and old.json()["externalIds"][0]["value"] == "NEW"
        assert new.status_code == 404
        # Scans list the contact (indexed since its creation) with its current content.
        assert await scan_ids(client, h) == [cid]
        org.clock.advance(0.1)
        old = await client.post(LOOKUP, json=ext_lookup(source, "OLD"), headers=h)
        new = await client.post(LOOKUP, json=ext_lookup(source, "NEW"), headers=h)
        assert old.status_code == 404 and new.json()["id"] == cid

    run(go())


def test_a_deleted_contact_is_never_returned_by_a_lagging_index() -> None:
    org = fixed_lag(5.0)

    async def go() -> None:
        client, h, source = await session(org)
        cid = (await client.post(f"{API}/contacts", json=contact(source, "D"), headers=h)).json()[
            "id"
        ]
        org.clock.advance(5.0)
        assert (
            await client.post(LOOKUP, json=ext_lookup(source, "D"), headers=h)
        ).status_code == 200
        assert (await client.delete(f"{API}/contacts/{cid}", headers=h)).status_code == 200
        # Hits are hydrated from the primary, which no longer has it: gone from lookups at once.
        assert (
            await client.post(LOOKUP, json=ext_lookup(source, "D"), headers=h)
        ).status_code == 404
        assert await scan_ids(client, h) == []

    run(go())


def test_versions_of_one_contact_become_visible_in_write_order() -> None:
    org = make_org(realism=realistic(lag_max_s=5.0))
    lags: Iterator[float] = iter([5.0, 1.0])
    org.app.emulator.index_lag.draw = lambda: next(lags)  # type: ignore[method-assign]

    async def go() -> None:
        client, h, source = await session(org)
        cid = (await client.post(f"{API}/contacts", json=contact(source, "V1"), headers=h)).json()[
            "id"
        ]
        org.clock.advance(1.0)
        await client.put(f"{API}/contacts/{cid}", json=contact(source, "V2"), headers=h)
        org.clock.advance(2.0)  # the update's own lag is over, but the creation is not indexed
        for key in ("V1", "V2"):
            assert (
                await client.post(LOOKUP, json=ext_lookup(source, key), headers=h)
            ).status_code == 404
        org.clock.advance(2.0)  # 5 s: both versions at once, the later one wins
        assert (
            await client.post(LOOKUP, json=ext_lookup(source, "V1"), headers=h)
        ).status_code == 404
        assert (
            await client.post(LOOKUP, json=ext_lookup(source, "V2"), headers=h)
        ).status_code == 200

    run(go())


def test_lags_are_seeded_and_bounded() -> None:
    def visible_times(seed: int) -> list[float]:
        org = make_org(realism=realistic(seed=seed, lag_min_s=1.0, lag_max_s=4.0))
        emulator = org.app.emulator
        return [emulator.index_lag.visible_at(100.0) for _ in range(50)]

    first = visible_times(7)
    assert first == visible_times(7) and first != visible_times(8)
    assert all(101.0 <= t <= 104.0 for t in first) and len(set(first)) > 40


def test_exponential_lags_stay_within_bounds() -> None:
    org = make_org(
        realism=realistic(lag_distribution="exponential", lag_min_s=0.5, lag_max_s=3, lag_mean_s=1)
    )
    draws = [org.app.emulator.index_lag.draw() for _ in range(500)]
    assert all(0.5 <= d <= 3.0 for d in draws)
    assert 0.5 < sum(draws) / len(draws) - 0.5 < 1.5  # about the mean, truncated at the top


def test_the_basic_profile_has_no_lag(org: Org) -> None:
    async def go() -> None:
        client, h, source = await session(org)
        await client.post(f"{API}/contacts", json=contact(source, "NOW"), headers=h)
        assert (
            await client.post(LOOKUP, json=ext_lookup(source, "NOW"), headers=h)
        ).status_code == 200

    run(go())


@settings(max_examples=25, deadline=None)
@given(
    low=st.floats(0, 3, allow_nan=False),
    span=st.floats(0.01, 3, allow_nan=False),
    gaps=st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=8),
    probe=st.floats(0, 10, allow_nan=False),
)
def test_a_write_is_never_visible_before_the_lower_bound_and_always_after_the_upper(
    low: float, span: float, gaps: list[float], probe: float
) -> None:
    clock = ManualClock(0.0)
    org = make_org(clock=clock, realism=realistic(lag_min_s=low, lag_max_s=low + span))

    async def go() -> None:
        client, h, source = await session(org)
        written: list[tuple[str, float]] = []
        for i, gap in enumerate(gaps):
            clock.advance(gap)
            await client.post(f"{API}/contacts", json=contact(source, f"P{i}"), headers=h)
            written.append((f"P{i}", clock.time()))
        clock.advance(probe)
        now = clock.time()
        for key, at in written:
            status = (
                await client.post(LOOKUP, json=ext_lookup(source, key), headers=h)
            ).status_code
            if now < at + low:
                assert status == 404
            if now >= at + low + span:
                assert status == 200

    run(go())
