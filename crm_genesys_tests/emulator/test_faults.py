"""Fault injection: every profile, counted from the request log against what a client saw."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from crm_genesys.emulator import FAULT_PROFILES, FaultConfig
from crm_genesys.emulator.faults import REQUEST_FAULTS
from crm_genesys_tests.emulator.conftest import API, Org, contact, make_org, run, token

ADD = f"{API}/bulk/contacts/add"


@dataclass
class Observed:
    """What the client saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    retryable_items: int = 0
    added_items: int = 0
    retry_after_missing: int = 0


async def _drive(org: Org, requests: int) -> Observed:
    seen = Observed()
    client = org.client()
    h = await token(client)
    source_response = None
    while source_response is None or source_response.status_code != 200:
        try:
            source_response = await client.post(
                f"{API}/externalsources", json={"name": "crm"}, headers=h
            )
        except httpx.TransportError:
            continue
        if source_response.status_code == 409:  # created by a dropped-after-write attempt
            listed = await client.get(f"{API}/externalsources", headers=h)
            source_response = listed if listed.status_code == 200 else None
    body = source_response.json()
    source = body["entities"][0]["id"] if "entities" in body else body["id"]
    org.app.emulator.reset(data=False, log=True)  # count only the measured requests
    for i in range(requests):
        try:
            if i % 8 == 0:
                entities = [contact(source, f"{i}-{j}") for j in range(20)]
                r = await client.post(ADD, json={"entities": entities}, headers=h)
            else:
                r = await client.get(f"{API}/externalsources", headers=h)
        except httpx.TransportError:
            seen.transport_errors += 1
            continue
        seen.statuses[r.status_code] += 1
        if r.status_code in (429, 503) and "Retry-After" not in r.headers:
            seen.retry_after_missing += 1
        if r.status_code == 200 and "results" in r.json():
            for res in r.json()["results"]:
                if res["success"]:
                    seen.added_items += 1
                elif res["error"]["retryable"]:
                    assert res["status"] == 503
                    seen.retryable_items += 1
    return seen


def _plausible(count: int, n: int, p: float) -> bool:
    """Within ~5 standard deviations of a binomial(n, p) mean (the seed is fixed, so this only
    guards against a broken generator, never against bad luck on a re-run)."""
    mean = n * p
    return abs(count - mean) <= 5 * math.sqrt(mean * (1 - p)) + 2


@pytest.mark.parametrize("profile", sorted(FAULT_PROFILES))
def test_every_profile_injects_what_it_says_and_the_log_counts_it(profile: str) -> None:
    faults = FaultConfig.profile(profile, seed=11, revoke_tokens_after_s=None)
    org = make_org(faults=faults, rate_limit_per_minute=1_000_000)
    n = 1500
    seen = run(_drive(org, n))
    log = [e for e in org.app.emulator.requests() if e.path.startswith("/api")]
    assert len(log) == n
    by_fault = Counter(e.fault for e in log)

    assert seen.transport_errors == by_fault["drop"] + by_fault["drop_after_write"]
    for status in ("429", "500", "502", "503", "504"):
        assert seen.statuses[int(status)] == by_fault[status], status
        assert all(e.status == int(status) for e in log if e.fault == status)
    assert seen.retry_after_missing == 0
    assert seen.retryable_items == sum(e.item_failures for e in log if e.status == 200)
    assert not any(e.rate_limited for e in log)
    stats = org.app.emulator.stats()["counters"]
    for kind in REQUEST_FAULTS:
        assert stats.get(f"fault.{kind}", 0) == by_fault[kind]
    assert stats.get("fault.slow", 0) == sum(1 for e in log if e.slow_ms > 0)

    for kind in REQUEST_FAULTS:
        p = getattr(faults, f"p_{kind}")
        assert _plausible(by_fault[kind], n, p), (kind, by_fault[kind], p)
        if p == 0:
            assert by_fault[kind] == 0
    assert _plausible(sum(e.slow_ms > 0 for e in log), n, faults.p_slow)
    slow = [e.slow_ms for e in log if e.slow_ms]
    assert all(faults.slow_ms_min <= ms <= faults.slow_ms_max for ms in slow)
    if profile == "none":
        assert sum(by_fault.values()) == by_fault[None] == n and seen.retryable_items == 0
    else:
        assert seen.retryable_items > 0 and by_fault["drop_after_write"] > 0

    # Drop-after-write applied the write: the org holds what the client saw added plus what
    # the dropped bulk adds stored.
    adds_dropped = [e for e in log if e.fault == "drop_after_write" and e.path == ADD]
    written_unseen = sum((e.entities or 0) - e.item_failures for e in adds_dropped)
    assert len(org.app.emulator.all_contacts()) == seen.added_items + written_unseen


def test_the_same_seed_gives_the_same_faults() -> None:
    def faults_of(seed: int) -> list[tuple[str | None, float, int]]:
        org = make_org(
            faults=FaultConfig.profile("hostile", seed=seed), rate_limit_per_minute=10**6
        )
        run(_drive(org, 200))
        return [(e.fault, e.slow_ms, e.item_failures) for e in org.app.emulator.requests()]

    assert faults_of(5) == faults_of(5)
    assert faults_of(5) != faults_of(6)


def test_hostile_profile_revokes_tokens_and_can_be_changed_at_runtime() -> None:
    org = make_org(faults=FaultConfig.profile("hostile", p_slow=0.0), rate_limit_per_minute=10**6)

    async def go() -> None:
        client = org.client()
        h = await token(client)
        org.clock.advance(FAULT_PROFILES["hostile"].revoke_tokens_after_s or 0)
        r = await client.get(f"{API}/externalsources", headers=h)
        assert r.status_code == 401
        assert org.app.emulator.requests()[-1].fault == "token_revoked"
        org.app.emulator.set_faults(FaultConfig.profile("none"))
        h = await token(client)
        for _ in range(20):
            assert (await client.get(f"{API}/externalsources", headers=h)).status_code == 200

    run(go())


def test_admin_endpoints_change_faults_latency_and_settings(org: Org) -> None:
    async def go() -> None:
        client, admin = org.client(), org.admin()
        r = await admin.put("/__emulator/faults", json={"profile": "flaky", "seed": 9})
        assert r.status_code == 200 and r.json()["p_429"] == FAULT_PROFILES["flaky"].p_429
        assert org.app.emulator.faults.seed == 9
        bad = await admin.put("/__emulator/faults", json={"p_500": 2})
        assert bad.status_code == 400
        unknown = await admin.put("/__emulator/faults", json={"nonsense": 1})
        assert unknown.status_code == 400
        r = await admin.put("/__emulator/latency", json={"ms": 250})
        assert r.json() == {"ms": 250.0} and org.app.emulator.faults.p_429 > 0  # rest kept
        await admin.put("/__emulator/faults", json={"profile": "none", "latency_ms": 250})
        r = await admin.put("/__emulator/settings", json={"rate_limit_per_minute": 2})
        assert r.json()["rate_limit_per_minute"] == 2
        h = await token(client)
        before = org.clock.time()
        statuses = [
            (await client.get(f"{API}/externalsources", headers=h)).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        # The latency is spent on the emulator's clock (simulated here: no real waiting), by
        # the two admitted requests only: the budget refuses before any latency.
        assert org.clock.time() - before == pytest.approx(0.5)
        log = (await admin.get("/__emulator/requests", params={"since": 0})).json()
        assert [e["status"] for e in log if e["path"].startswith("/api")] == [200, 200, 429]
        await admin.post("/__emulator/reset", json={"data": False})
        assert (await admin.get("/__emulator/requests")).json() == []

    run(go())


def test_every_request_level_fault_alone(org: Org) -> None:
    async def go() -> None:
        client = org.client()
        h = await token(client)
        for kind in REQUEST_FAULTS:
            org.app.emulator.set_faults(FaultConfig.from_dict({f"p_{kind}": 1.0}))
            if kind.startswith("drop"):
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(f"{API}/externalsources", headers=h)
            else:
                r = await client.get(f"{API}/externalsources", headers=h)
                assert r.status_code == int(kind)
                assert set(r.json()) >= {"message", "code", "status", "contextId"}
                assert "inin-ratelimit-count" in r.headers
            assert org.app.emulator.requests()[-1].fault == kind

    run(go())


def test_item_failures_are_retryable_and_not_applied(org: Org) -> None:
    async def go() -> None:
        client = org.client()
        h = await token(client)
        source = (await client.post(f"{API}/externalsources", json={"name": "s"}, headers=h)).json()
        org.app.emulator.set_faults(FaultConfig(p_item_failure=0.5, seed=1))
        entities = [contact(source["id"], str(i)) for i in range(40)]
        body: dict[str, Any] = (
            await client.post(ADD, json={"entities": entities}, headers=h)
        ).json()
        failed = [r for r in body["results"] if not r["success"]]
        assert 0 < len(failed) < 40 and len(body["errorIndexes"]) == len(failed)
        assert all(f["error"]["retryable"] and f["status"] == 503 for f in failed)
        assert len(org.app.emulator.all_contacts()) == 40 - len(failed)
        stored = {c["externalIds"][0]["value"] for c in org.app.emulator.all_contacts()}
        assert stored == {str(i) for i in range(40) if i not in body["errorIndexes"]}

    run(go())
