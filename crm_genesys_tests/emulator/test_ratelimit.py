"""The budget over simulated minutes, its headers and Retry-After; per token, or per OAuth
client shared by its tokens and by another consumer's background traffic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.emulator import ManualClock, RealismConfig
from crm_genesys.emulator.ratelimit import RateLimiter
from crm_genesys_tests.emulator.conftest import API, make_org, realistic, run, token


def test_budget_over_a_simulated_minute_is_within_5_percent() -> None:
    org = make_org(rate_limit_per_minute=300)

    async def go() -> None:
        client = org.client()
        h = await token(client)
        allowed = refused = 0
        retry_afters = []
        # 10 requests per second for exactly one minute: twice the budget.
        for _ in range(600):
            r = await client.get(f"{API}/externalsources", headers=h)
            for header in (
                "inin-ratelimit-count",
                "inin-ratelimit-allowed",
                "inin-ratelimit-reset",
            ):
                assert header in r.headers
            assert r.headers["inin-ratelimit-allowed"] == "300"
            if r.status_code == 200:
                allowed += 1
            else:
                assert r.status_code == 429
                assert r.json()["code"] == "too.many.requests"
                retry_afters.append(int(r.headers["Retry-After"]))
                refused += 1
            org.clock.advance(0.1)
        assert abs(allowed - 300) <= 15, allowed
        assert refused == 600 - allowed
        assert retry_afters and all(1 <= s <= 60 for s in retry_afters)
        # Waiting Retry-After is enough to be let in again.
        org.clock.advance(retry_afters[-1])
        assert (await client.get(f"{API}/externalsources", headers=h)).status_code == 200
        log = org.app.emulator.requests()
        assert sum(e.rate_limited for e in log) == refused

    run(go())


def test_a_client_pacing_at_the_budget_is_never_refused() -> None:
    org = make_org(rate_limit_per_minute=120)

    async def go() -> None:
        client = org.client()
        h = await token(client)
        for _ in range(360):  # three minutes at exactly 2 per second
            r = await client.get(f"{API}/externalsources", headers=h)
            assert r.status_code == 200
            org.clock.advance(0.5)

    run(go())


def test_budgets_are_per_token() -> None:
    org = make_org(rate_limit_per_minute=3)

    async def go() -> None:
        client = org.client()
        a, b = await token(client), await token(client)
        statuses = [
            (await client.get(f"{API}/externalsources", headers=a)).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        assert (await client.get(f"{API}/externalsources", headers=b)).status_code == 200

    run(go())


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=300),
)
def test_no_sixty_second_window_ever_exceeds_the_budget(limit: int, gaps: list[float]) -> None:
    clock = ManualClock()
    limiter = RateLimiter(limit, clock)
    allowed_at: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        decision = limiter.check("t")
        if decision.allowed:
            allowed_at.append(clock.time())
        else:
            assert decision.reset_s >= 1
        assert decision.count <= limit
    for i, start in enumerate(allowed_at):
        in_window = [t for t in allowed_at[i:] if t < start + 60]
        assert len(in_window) <= limit


def test_tokens_of_one_client_share_one_budget_when_it_is_per_client() -> None:
    org = make_org(rate_limit_per_minute=3, realism=realistic(lag_max_s=0.0))

    async def go() -> None:
        client = org.client()
        a, b = await token(client), await token(client)
        seen = []
        for h in (a, b, a, b, a):
            r = await client.get(f"{API}/externalsources", headers=h)
            seen.append((r.status_code, r.headers["inin-ratelimit-count"]))
        assert seen == [(200, "1"), (200, "2"), (200, "3"), (429, "3"), (429, "3")]

    run(go())


def test_background_traffic_counts_in_the_shared_headers() -> None:
    clock = ManualClock(0.0)
    org = make_org(
        clock=clock,
        rate_limit_per_minute=100,
        realism=realistic(lag_max_s=0.0, background_share=0.3, background_jitter=0.0),
    )

    async def go() -> None:
        client = org.client()
        h = await token(client)
        clock.advance(60.0)
        r = await client.get(f"{API}/externalsources", headers=h)
        # The other consumer spent 30/min (one every 2 s; the one at t=0 left the window).
        assert r.status_code == 200 and r.headers["inin-ratelimit-count"] == "31"
        usage = org.app.emulator.rate_usage()
        assert sum(u.theirs for u in usage) == 31 and sum(u.ours for u in usage) == 1
        # Placed at random within their periods, they still spend 30 a minute, give or take one.
        org.app.emulator.set_realism(realistic(lag_max_s=0.0, background_share=0.3, seed=5))
        for _ in range(10):
            clock.advance(60.0)
            r = await client.get(f"{API}/externalsources", headers=h)
            assert 29 <= int(r.headers["inin-ratelimit-count"]) - 1 <= 31

    run(go())


def test_both_consumers_get_their_share_when_we_pace_and_429s_when_we_burst() -> None:
    clock = ManualClock(0.0)
    org = make_org(
        clock=clock,
        rate_limit_per_minute=100,
        realism=realistic(lag_max_s=0.0, background_share=0.3),
    )

    async def go() -> None:
        client = org.client()
        h = await token(client)
        admin = org.admin()
        # Paced at 65% of the budget for five minutes: nobody is refused.
        for _ in range(5 * 65):
            assert (await client.get(f"{API}/externalsources", headers=h)).status_code == 200
            clock.advance(60.0 / 65)
        totals = (await admin.get("/__emulator/ratelimit")).json()["totals"]
        assert totals["ours_429"] == 0 and totals["theirs_429"] == 0
        assert totals["ours"] == 325 and 145 <= totals["theirs"] <= 155
        # A client that hammers takes every slot that frees, and the other consumer pays too.
        hammered = []
        for _ in range(300):
            r = await client.get(f"{API}/externalsources", headers=h)
            hammered.append(r.status_code)
            clock.advance(0.1)
        assert 200 in hammered and 429 in hammered
        report = (await admin.get("/__emulator/ratelimit")).json()
        assert report["totals"]["ours_429"] == hammered.count(429)
        assert report["totals"]["theirs_429"] > 0
        assert report["scope"] == "client" and report["background_share"] == 0.3
        per_second = report["per_second"]
        assert per_second == sorted(per_second, key=lambda u: u["second"])
        assert sum(u["theirs_429"] for u in per_second) == report["totals"]["theirs_429"]

    run(go())


def test_background_traffic_needs_a_per_client_budget() -> None:
    with pytest.raises(ValueError, match="client"):
        RealismConfig(background_share=0.3)
