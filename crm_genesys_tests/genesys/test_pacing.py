"""Pacer: bucket math with a fake clock, AIMD on 429, header correction, the in-flight cap,
and the end-to-end goal (>=95% of the budget with <=1% 429s) against a fixed-window fake."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

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
        async with pacer.slot() as permit:
            pass
        # Someone else shares the token: 198 of 200 already spent, 30 s left in the window.
        pacer.on_response(
            permit,
            200,
            {
                "inin-ratelimit-allowed": "200",
                "inin-ratelimit-count": "198",
                "inin-ratelimit-reset": "30",
            },
        )
        assert pacer.budget_per_minute == 200
        times = []
        for _ in range(4):
            async with pacer.slot() as p:
                times.append(p.sent_at)
        return times

    times, _ = run_virtual(main)
    assert times[0] < 1 and times[1] < 1  # the two left in the window
    assert times[2] >= 30  # then hold until the reset


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


def test_unparseable_headers_are_ignored() -> None:
    pacer = Pacer(300, clock=lambda: 0.0)
    pacer.on_response(
        Permit(0.0), 200, {"inin-ratelimit-allowed": "lots", "inin-ratelimit-reset": "-5"}
    )
    assert pacer.budget_per_minute == 300


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
            "us_east_1", CLIENT_ID, CLIENT_SECRET, rate_limit_per_minute=budget
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
