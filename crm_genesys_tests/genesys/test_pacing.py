"""Pacer: bucket math with a fake clock, AIMD on 429, header correction, the in-flight cap,
and the end-to-end goal (>=95% of the budget with <=1% 429s) against a fixed-window fake."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.pacing import Pacer, Permit
from crm_genesys.genesys.settings import GenesysSettings
from crm_genesys_tests.genesys.fakes import CLIENT_ID, CLIENT_SECRET, FakeGenesys, run_virtual


def grant_times(pacer_kwargs: dict[str, Any], n: int) -> list[float]:
    """Virtual send times of n sequential acquisitions."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(clock=loop.time, **pacer_kwargs)
        times = []
        for _ in range(n):
            async with pacer.slot() as permit:
                times.append(permit.sent_at)
        return times

    times, _ = run_virtual(main)
    return times


def max_in_window(times: list[float], window: float = 60.0) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@given(
    budget=st.integers(min_value=2, max_value=1200),
    max_in_flight=st.integers(min_value=1, max_value=16),
)
@settings(max_examples=30, deadline=None)
def test_no_60s_interval_exceeds_the_budget(budget: int, max_in_flight: int) -> None:
    n = min(3 * budget, 1500)
    times = grant_times({"rate_per_minute": budget, "max_in_flight": max_in_flight}, n)
    assert max_in_window(times) <= budget
    # ...while using nearly all of it over the long run.
    span = times[-1] - times[0]
    if span > 0:
        assert (n - 1) / span * 60 >= budget - max(1, min(max_in_flight, budget // 60)) - 0.01


def test_burst_is_one_second_of_budget_then_steady() -> None:
    times = grant_times({"rate_per_minute": 300, "max_in_flight": 8}, 20)
    assert times[:5] == [0.0] * 5  # the burst: one second's worth
    gaps = [b - a for a, b in itertools.pairwise(times[5:])]
    assert all(g == pytest.approx(60 / 295) for g in gaps)


def test_429_halves_the_rate_pauses_and_recovers_additively() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pacer = Pacer(300, clock=loop.time)
        full = pacer.rate_per_second
        async with pacer.slot() as p1:
            pass
        async with pacer.slot() as p2:
            pass
        pacer.on_response(p1, 429, {"Retry-After": "4"})
        pacer.on_response(p2, 429, {"Retry-After": "4"})  # same congestion event
        assert pacer.rate_per_second == pytest.approx(full / 2)
        async with pacer.slot() as p3:
            # Everyone waits out Retry-After.
            assert p3.sent_at >= 4.0
        pacer.on_response(p3, 429, {})  # a new event: halves again
        assert pacer.rate_per_second == pytest.approx(full / 4)
        for _ in range(100):
            pacer.on_response(p3, 200, {})
        assert pacer.rate_per_second == pytest.approx(full)
        assert pacer.rate_limited == 3

    run_virtual(main)


def test_headers_lower_the_budget_and_hold_until_the_window_resets() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(300, clock=loop.time)
        await asyncio.sleep(40)
        async with pacer.slot() as permit:
            pass
        # The platform allows 200, and its window (30 s from its end) is spent: 200 of 200.
        window = {"inin-ratelimit-allowed": "200", "inin-ratelimit-reset": "30"}
        pacer.on_response(permit, 200, {**window, "inin-ratelimit-count": "200"})
        assert pacer.budget_per_minute == 200
        times = []
        for _ in range(2):
            async with pacer.slot() as p:
                times.append(p.sent_at)
        return times

    times, _ = run_virtual(main)
    assert times[0] >= 70  # held until the reset


def test_the_budget_comes_back_up_when_the_platform_allows_more() -> None:
    pacer = Pacer(300, clock=lambda: 0.0)
    pacer.on_response(Permit(0.0), 200, {"inin-ratelimit-allowed": "120"})
    assert pacer.budget_per_minute == 120 and pacer.target_per_minute == 120
    pacer.on_response(Permit(0.0), 200, {"inin-ratelimit-allowed": "300"})
    assert pacer.budget_per_minute == 300 and pacer.target_per_minute == 300
    pacer.on_response(Permit(0.0), 200, {"inin-ratelimit-allowed": "900"})
    assert pacer.budget_per_minute == 300  # never above the configured budget


def test_our_share_leaves_room_for_others_and_follows_their_spend() -> None:
    async def main() -> list[tuple[float, float]]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(300, share=0.8, clock=loop.time)
        assert pacer.target_per_minute == 240
        seen = []
        # A sliding window (reset 0): 60 s of our requests plus others' 150.
        for t in range(200):
            async with pacer.slot() as permit:
                pass
            ours = sum(1 for s in pacer._sent if s > loop.time() - 60)
            others = 150 if t < 100 else 0  # then the other consumer stops
            count = {"inin-ratelimit-count": str(ours + others)}
            headers = {"inin-ratelimit-allowed": "300", "inin-ratelimit-reset": "0", **count}
            pacer.on_response(permit, 200, headers)
            seen.append((pacer.others_per_minute, pacer.target_per_minute))
        return seen

    seen, _ = run_virtual(main)
    others, target = seen[99]
    assert others == pytest.approx(150, abs=1)
    assert target == pytest.approx(300 - 150 - 15, abs=1)  # what is left, minus a margin
    assert seen[-1][1] == 240  # they stopped: back to our share


def test_unparseable_headers_are_ignored() -> None:
    pacer = Pacer(300, clock=lambda: 0.0)
    pacer.on_response(
        Permit(0.0), 200, {"inin-ratelimit-allowed": "lots", "inin-ratelimit-reset": "-5"}
    )
    assert pacer.budget_per_minute == 300


def test_in_flight_cap() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        pacer = Pacer(6000, max_in_flight=3, clock=loop.time)
        peak = 0

        async def one() -> None:
            nonlocal peak
            async with pacer.slot():
                peak = max(peak, pacer.in_flight)
                await asyncio.sleep(0.5)

        await asyncio.gather(*(one() for _ in range(20)))
        return peak

    peak, _ = run_virtual(main)
    assert peak == 3


@pytest.mark.parametrize("budget", [300, 120])
def test_sustains_95_percent_of_budget_with_at_most_1_percent_429s(budget: int) -> None:
    """The whole client against a fixed-window rate-limited fake with 0.4 s latency, for 5
    virtual minutes, starting mid-window (the platform's window is not ours)."""
    fake = FakeGenesys(rate_limit=budget, latency=0.4)
    fake.window_start = -23.0

    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        fake.clock = loop.time
        settings_ = GenesysSettings.for_region(
            "us_east_1", CLIENT_ID, CLIENT_SECRET, rate_limit_per_minute=budget, rate_share=1.0
        )
        async with GenesysClient(settings_, transport=fake.transport(), clock=loop.time) as c:
            stop = loop.time() + 300

            async def worker() -> None:
                while loop.time() < stop:
                    await c.get_contact("missing")

            await asyncio.gather(*(worker() for _ in range(12)))
            return c.metrics.requests, c.metrics.elapsed

    (requests, elapsed), _ = run_virtual(main)
    share = fake.api_requests / (budget * elapsed / 60)
    assert share >= 0.95, share
    assert fake.rate_limited <= 0.01 * fake.api_requests
    assert requests == fake.api_requests


@pytest.mark.parametrize("budget", [300, 1200])
def test_another_consumer_of_the_client_never_gets_429s_and_we_use_what_remains(
    budget: int,
) -> None:
    """One fixed one-minute window per OAuth client, shared by our client and another
    application spending 30% of the budget at a steady pace, for 6 virtual minutes. Once paced
    (after the first two windows) neither side gets a 429, and we use >= 90% of what remains."""
    fake = FakeGenesys(rate_limit=budget, latency=0.2)
    fake.window_start = -17.0  # the platform's window is not aligned with anyone's start
    log: list[tuple[float, str, int]] = []  # (time, who, status)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fake.clock = loop.time

        async def handler(request: httpx.Request) -> httpx.Response:
            response = await fake.handler(request)
            if request.url.path != "/oauth/token":
                who = "theirs" if request.headers.get("x-app") == "other" else "ours"
                log.append((loop.time(), who, response.status_code))
            return response

        transport = httpx.MockTransport(handler)
        settings_ = GenesysSettings.for_region(
            "us_east_1", CLIENT_ID, CLIENT_SECRET, rate_limit_per_minute=budget
        )
        stop = loop.time() + 360
        async with (
            GenesysClient(settings_, transport=transport, clock=loop.time) as ours,
            httpx.AsyncClient(transport=transport, base_url=settings_.api_base_url) as other,
        ):
            token = (
                await other.post(
                    f"{settings_.login_base_url}/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(CLIENT_ID, CLIENT_SECRET),
                )
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}", "x-app": "other"}

            async def background() -> None:
                interval = 60 / (0.3 * budget)
                tasks = []
                for k in itertools.count():
                    at = k * interval
                    if at >= 360:
                        break
                    await asyncio.sleep(max(0.0, at - loop.time()))
                    tasks.append(asyncio.ensure_future(other.get("/api/v2/x", headers=headers)))
                await asyncio.gather(*tasks)

            async def worker() -> None:
                while loop.time() < stop:
                    await ours.get_contact("missing")

            await asyncio.gather(background(), *(worker() for _ in range(12)))

    run_virtual(main)
    paced = [(who, status) for t, who, status in log if 120 <= t < 360]
    theirs = [s for who, s in paced if who == "theirs"]
    mine = [s for who, s in paced if who == "ours"]
    assert 429 not in theirs, f"{theirs.count(429)} of the other consumer's requests got 429"
    assert 429 not in mine
    minutes = 4.0
    remaining = budget - len(theirs) / minutes
    assert len(theirs) / minutes == pytest.approx(0.3 * budget, rel=0.02)
    assert len(mine) / minutes >= 0.9 * remaining, (len(mine) / minutes, remaining)
