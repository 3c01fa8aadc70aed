"""Pacing: spend the rate budget fully, never in bursts that earn 429s.

The platform counts requests per token in a one-minute window (`inin-ratelimit-allowed`,
`-count`, `-reset`). The pacer is a token bucket with three corrections:

* **Burst.** A bucket of capacity B refilled at rate r lets through at most B + 60·r requests in
  any 60-second interval, whatever the alignment of the platform's window. With
  r = (budget − B)/60 that bound is exactly the budget, so the bucket alone cannot earn a 429.
  A bucket whose burst is the whole minute's budget would send it all in the first second and
  then stall; B = one second of budget (5 at 300/min, at most `max_in_flight`) absorbs the
  jitter of request completion while costing only B/budget of throughput (1.7% at 300/min).
* **Headers.** Each response's `inin-ratelimit-*` headers say what the platform counted in its
  current window, including requests by other holders of the same token (another run). When
  that window is spent the pacer holds until `reset`; a lower `allowed` lowers the budget.
* **429s (AIMD).** A 429 halves the rate (once per congestion event: 429s of requests sent
  before the last decrease are the same event), drains the bucket and pauses everyone until
  `Retry-After`. Each success then adds back 2% of the full rate.

A semaphore caps requests in flight. Acquisition is FIFO under one lock: a single waiter sleeps
for the next token, so requests leave in order and the clock and sleep can be faked in tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

logger = logging.getLogger("crm_genesys.genesys")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Share of the full rate regained per successful response after a 429 halved it.
_ADDITIVE_STEP = 0.02
# The rate never drops below this share of the full rate, so progress never stops.
_MIN_RATE_SHARE = 0.05
# Float slack: a refill computed to 0.9999999 tokens counts as one (else the waits shrink to 0).
_EPSILON = 1e-6
# Pause after a 429 without Retry-After or reset header.
_DEFAULT_429_PAUSE = 1.0


@dataclass
class Permit:
    """One granted request: when it was sent (for AIMD's congestion events)."""

    sent_at: float


class Pacer:
    """Token bucket at `rate_per_minute`, corrected by rate-limit headers and 429s, with at most
    `max_in_flight` requests outstanding. Use `async with pacer.slot() as permit:` around a
    request and report its outcome with `on_response(permit, status, headers)`.
    """

    def __init__(
        self,
        rate_per_minute: int,
        *,
        max_in_flight: int = 8,
        burst: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._max_in_flight = max_in_flight
        self._configured_budget = rate_per_minute
        self._burst_override = burst
        self._set_budget(rate_per_minute)
        self._rate = self._full_rate
        self._level = float(self._burst)
        self._last_refill = clock()
        self._paused_until = 0.0
        self._last_decrease = -float("inf")
        # The platform's current window as last reported: requests still allowed and its end.
        self._window_remaining: float | None = None
        self._window_reset_at = 0.0
        self._in_flight = 0
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(max_in_flight)
        self.granted = 0
        self.rate_limited = 0
        self.waited_seconds = 0.0

    def _set_budget(self, budget: int) -> None:
        self._budget = max(1, budget)
        default_burst = max(1, min(self._max_in_flight, self._budget // 60))
        burst = self._burst_override if self._burst_override is not None else default_burst
        self._burst = max(1, min(burst, self._budget - 1)) if self._budget > 1 else 1
        # Rate such that burst + 60 s of refill never exceeds the minute's budget.
        self._full_rate = max(self._budget - self._burst, 1) / 60.0

    @property
    def budget_per_minute(self) -> int:
        """The budget currently paced to (configured, or lower when the platform says so)."""
        return self._budget

    @property
    def rate_per_second(self) -> float:
        """The current refill rate (requests/second), after AIMD."""
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Permit]:
        """Wait for an in-flight slot, then for a token; yield the permit; free the slot."""
        async with self._slots:
            permit = await self._acquire()
            self._in_flight += 1
            try:
                yield permit
            finally:
                self._in_flight -= 1

    async def _acquire(self) -> Permit:
        async with self._lock:
            while True:
                now = self._clock()
                self._refill(now)
                wait = 0.0
                if now < self._paused_until:
                    wait = self._paused_until - now
                elif self._window_remaining is not None and self._window_remaining < 1:
                    if now < self._window_reset_at:
                        wait = self._window_reset_at - now
                    else:
                        self._window_remaining = None  # that window is over
                        continue
                elif self._level < 1 - _EPSILON:
                    wait = (1 - self._level) / self._rate
                if wait <= 0:
                    self._level -= 1
                    if self._window_remaining is not None:
                        self._window_remaining -= 1
                    self.granted += 1
                    return Permit(sent_at=now)
                self.waited_seconds += wait
                await self._sleep(wait)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last_refill)
        self._last_refill = now
        self._level = min(float(self._burst), self._level + elapsed * self._rate)

    def on_response(self, permit: Permit, status: int, headers: Mapping[str, str]) -> None:
        """Learn from a response: rate-limit headers always, AIMD from its status."""
        now = self._clock()
        # httpx.Headers is case-insensitive; a plain mapping may not be.
        headers = {k.lower(): v for k, v in headers.items()}
        self._observe_headers(now, headers)
        if status == 429:
            self._on_429(permit, now, headers)
        elif status < 500:
            self._rate = min(self._full_rate, self._rate + _ADDITIVE_STEP * self._full_rate)

    def _observe_headers(self, now: float, headers: Mapping[str, str]) -> None:
        allowed = _number(headers.get("inin-ratelimit-allowed"))
        count = _number(headers.get("inin-ratelimit-count"))
        reset = _number(headers.get("inin-ratelimit-reset"))
        if allowed is not None and 1 <= allowed < self._budget:
            logger.info("Genesys reports a rate budget of %d/min; pacing to it", int(allowed))
            self._refill(now)
            self._set_budget(int(allowed))
            self._rate = min(self._rate, self._full_rate)
            self._level = min(self._level, float(self._burst))
        if allowed is None or count is None or reset is None or not 0 <= reset <= 3600:
            return
        reset_at = now + reset
        # Requests granted but not answered may be counted already, or not: assume not.
        remaining = allowed - count - max(0, self._in_flight - 1)
        same_window = (
            self._window_remaining is not None and abs(reset_at - self._window_reset_at) < 1.0
        )
        if same_window and self._window_remaining is not None:
            self._window_remaining = min(self._window_remaining, remaining)
        elif reset_at >= self._window_reset_at - 1.0:
            self._window_remaining = remaining
            self._window_reset_at = reset_at

    def _on_429(self, permit: Permit, now: float, headers: Mapping[str, str]) -> None:
        self.rate_limited += 1
        pause = _number(headers.get("retry-after"))
        if pause is None:
            pause = _number(headers.get("inin-ratelimit-reset"))
        pause = _DEFAULT_429_PAUSE if pause is None or pause < 0 else min(pause, 3600.0)
        self._paused_until = max(self._paused_until, now + pause)
        self._level = 0.0
        self._last_refill = max(self._last_refill, now)
        if permit.sent_at > self._last_decrease:
            self._rate = max(_MIN_RATE_SHARE * self._full_rate, self._rate / 2)
            self._last_decrease = now
            logger.warning(
                "Genesys rate limit hit (429); pausing %.1fs, rate now %.2f req/s",
                pause,
                self._rate,
            )


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw.strip())
    except ValueError:
        return None
