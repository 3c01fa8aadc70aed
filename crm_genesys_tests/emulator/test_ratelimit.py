"""The per-token budget over simulated minutes, its headers, and Retry-After."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.emulator import ManualClock
from crm_genesys.emulator.ratelimit import RateLimiter
from crm_genesys_tests.emulator.conftest import API, make_org, run, token


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
