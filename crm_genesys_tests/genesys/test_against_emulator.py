"""The client against the project's emulator, in-process (ASGI) and in virtual time: the same
code that talks to real Genesys, exercised on the emulator's shapes, faults and rate limits."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from crm_genesys.emulator import EmulatorConfig, create_app
from crm_genesys.emulator.config import FaultConfig
from crm_genesys.genesys.check import check_connection
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.settings import GenesysSettings
from crm_genesys_tests.genesys.fakes import (
    VirtualClockSelector,
    VirtualEmulatorClock,
    run_virtual,
)

T = TypeVar("T")
BASE = "http://emulator.test"


def emulate(
    body: Callable[[GenesysClient, Any], Awaitable[T]],
    *,
    faults: FaultConfig | None = None,
    rate_limit: int = 300,
    **overrides: Any,
) -> tuple[T, Any, GenesysClient]:
    """Run `body(client, app)` against a fresh in-memory emulator, all in virtual time."""
    selector = VirtualClockSelector()
    app = create_app(
        EmulatorConfig(
            clock=VirtualEmulatorClock(selector),
            faults=faults or FaultConfig(),
            rate_limit_per_minute=rate_limit,
            seed=3,
        )
    )
    settings = GenesysSettings.for_base_url(
        BASE, "demo-client", "demo-secret", rate_limit_per_minute=rate_limit, **overrides
    )
    holder: dict[str, GenesysClient] = {}

    async def main() -> T:
        loop = asyncio.get_running_loop()
        transport = httpx.ASGITransport(app=app)
        async with GenesysClient(settings, transport=transport, clock=loop.time) as client:
            holder["client"] = client
            return await body(client, app)

    result, _ = run_virtual(main, selector)
    return result, app, holder["client"]


def person(source: str, key: str) -> dict[str, Any]:
    return {
        "firstName": "Ada",
        "lastName": f"Lovelace {key}",
        "workEmail": f"{key.lower()}@example.com",
        "externalIds": [{"externalSource": {"id": source}, "value": key}],
    }


def test_full_round_trip_on_the_emulator() -> None:
    async def body(client: GenesysClient, app: Any) -> None:
        source = await client.ensure_external_source("crm-genesys", "https://crm.test/{{id}}")
        assert await client.ensure_external_source("crm-genesys") == source
        keys = [f"AC-{i:07d}" for i in range(230)]
        added = await client.bulk_add([person(source, k) for k in keys])
        assert all(r.success for r in added), [r for r in added if not r.success][:2]
        ids = [r.contact_id or "" for r in added]
        for key, cid in zip(keys, ids, strict=True):
            found = await client.lookup_by_external_id(source, key) if key.endswith("7") else None
            if found is not None:
                assert found["id"] == cid
        assert await client.lookup_by_external_id(source, "AC-missing") is None
        contact = await client.get_contact(ids[0])
        assert contact is not None and contact["lastName"] == "Lovelace AC-0000000"
        updated = await client.bulk_update(
            [
                {**person(source, k), "id": i, "title": "Countess"}
                for k, i in zip(keys, ids, strict=True)
            ]
        )
        assert all(r.success and r.contact_id == i for r, i in zip(updated, ids, strict=True))
        removed = await client.bulk_remove(ids[:50])
        assert all(r.success for r in removed)
        again = await client.bulk_remove(ids[:2])
        assert all(r.success for r in again)  # already gone is success
        stale = await client.bulk_update([{**person(source, keys[0]), "id": ids[0]}])
        assert not stale[0].success and stale[0].status == 404
        scanned = [c["id"] async for c in client.scan_contacts()]
        assert sorted(scanned) == sorted(ids[50:])
        schema = {
            "name": "crm",
            "enabled": True,
            "jsonSchema": {
                "title": "crm",
                "properties": {
                    "tier_text": {"allOf": [{"$ref": "#/definitions/text"}], "title": "Tier",
                                  "minLength": 0, "maxLength": 100},
                },
            },
        }  # fmt: skip
        first = await client.upsert_contact_schema(schema)
        second = await client.upsert_contact_schema(schema)
        assert second["id"] == first["id"] and second["version"] == first["version"] + 1

    _, _, client = emulate(body)
    assert client.metrics.rate_limited == 0


def test_hostile_emulator_never_duplicates_and_accounts_for_every_item() -> None:
    """Under drops, drops-after-write, 5xx, 429s and item failures: every contact is either
    created exactly once, or reported as outcome_unknown / retryable, and a lookup resolves
    every unknown one; no ExternalId is ever held by two contacts."""
    faults = FaultConfig.profile("hostile", seed=11, revoke_tokens_after_s=None)

    async def body(client: GenesysClient, app: Any) -> tuple[list[Any], str]:
        source = await client.ensure_external_source("crm")
        keys = [f"K{i:05d}" for i in range(3000)]
        results = await client.bulk_add([person(source, k) for k in keys])
        resolved: dict[str, str | None] = {}
        for key, result in zip(keys, results, strict=True):
            if result.outcome_unknown:
                found = await client.lookup_by_external_id(source, key)
                resolved[key] = found["id"] if found else None
        return [(k, r, resolved.get(k)) for k, r in zip(keys, results, strict=True)], source

    (rows, source), app, client = emulate(body, faults=faults)
    held = Counter(
        ext["value"]
        for c in app.emulator.all_contacts()
        for ext in c.get("externalIds", [])
        if ext["externalSource"]["id"] == source
    )
    assert max(held.values()) == 1  # never a duplicate
    unknown = 0
    for key, result, looked_up in rows:
        if result.success:
            assert held[key] == 1
        elif result.outcome_unknown:
            unknown += 1
            assert (looked_up is not None) == (held[key] == 1)
        else:
            assert result.retryable and held[key] == 0
    assert unknown > 0  # the profile did drop some after writing
    assert client.metrics.retries > 0


def test_rate_budget_used_fully_against_the_emulator() -> None:
    """Three virtual minutes of single-contact reads at the emulator's 300/min window: the
    whole budget, or the share of it the sync is given."""

    async def body(client: GenesysClient, app: Any) -> float:
        loop = asyncio.get_running_loop()
        stop = loop.time() + 180

        async def worker() -> None:
            while loop.time() < stop:
                await client.get_contact("00000000-0000-0000-0000-000000000000")

        await asyncio.gather(*(worker() for _ in range(10)))
        return client.metrics.budget_share_used

    for rate_share in (1.0, 0.8):
        share, _, client = emulate(
            body,
            faults=FaultConfig(latency_ms=300.0),
            retry_attempts=8,
            max_in_flight=8,
            rate_share=rate_share,
        )
        assert rate_share * 0.95 <= share <= rate_share
        assert client.metrics.rate_limited <= 0.01 * client.metrics.requests


@pytest.mark.parametrize("rate_limit", [300])
def test_check_connection_against_the_emulator(rate_limit: int) -> None:
    app = create_app(EmulatorConfig(rate_limit_per_minute=rate_limit))
    transport = httpx.ASGITransport(app=app)
    good = GenesysSettings.for_base_url(BASE, "demo-client", "demo-secret")
    report = asyncio.run(check_connection(good, transport=transport))
    assert report.ok, report.render()
    assert "demo-secret" not in report.render()
    bad = GenesysSettings.for_base_url(BASE, "demo-client", "nope-secret")
    report = asyncio.run(check_connection(bad, transport=httpx.ASGITransport(app=app)))
    assert not report.ok
    assert "credentials" in report.render() and "nope-secret" not in report.render()
