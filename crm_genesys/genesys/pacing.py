"""Pacing: spend our share of the rate budget fully, never in bursts that earn 429s, and never
at the expense of the other consumers of the same OAuth client.

The platform counts requests per OAuth client (every token and every application using it) in
a one-minute window (`inin-ratelimit-allowed`, `-count`, `-reset`). The pacer is a token bucket
whose target is our share of that budget, with four corrections:

* **Burst.** A bucket of capacity B refilled at rate r lets through at most B + 60·r requests in
  any 60-second interval, whatever the alignment of the platform's window. With
  r = (target − B)/60 that bound is exactly the target, so the bucket alone cannot overspend.
  B = one second of the target (at most `max_in_flight`) absorbs the jitter of request
  completion while costing only B/target of throughput.
* **A fair share.** The target is `share` × budget (0.8 by default: headroom for the client's
  other consumers), and never more than what the others leave: budget − their spend − a margin
  (below). Their spend is read from each response: `inin-ratelimit-count` counts
  everyone's requests in the platform's window, which ends `inin-ratelimit-reset` seconds from
  now (a sliding window reports 0: it ends now); what we sent in that window is ours, the rest
  is theirs. The margin is a tenth of their spend (at least 2 requests; none while nobody else
  spends). The estimate follows a rise at once and a fall within seconds, so we slow down as
  soon as others spend more and come back up when they stop.
* **Headers.** `inin-ratelimit-allowed` is the budget (never above the configured one; it goes
  back up when the platform allows more again). When the platform's window is spent the pacer
  holds until `reset`.
* **429s (AIMD).** A 429 halves the rate (once per congestion event: 429s of requests sent
  before the last decrease are the same event), drains the bucket and pauses everyone until
  `Retry-After`. Each success then adds back 2% of the target rate.

A semaphore caps requests in flight. Acquisition is FIFO under one lock: a single waiter sleeps
for the next token, so requests leave in order and the clock and sleep can be faked in tests.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
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
# The platform's window (seconds) that `inin-ratelimit-count` covers.
_WINDOW = 60.0
# Room left to the other consumers on top of their measured spend: a share of it (their
# traffic is burstier than our estimate), at least a couple of requests.
_MARGIN_SHARE = 0.1
_MIN_MARGIN = 2.0
# Others' spend is estimated only from windows at least this old (fewer requests are noise).
_MIN_ELAPSED = 10.0
# Seconds over which a fall of the others' measured spend is followed.
_FALL_TIME = 5.0
# Our target never drops below this share of the budget, so progress never stops.
_MIN_TARGET_SHARE = 0.02


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
        share: float = 1.0,
        max_in_flight: int = 8,
        burst: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self._clock = clock
        self._sleep = sleep
        self._max_in_flight = max_in_flight
        self._configured_budget = max(1, rate_per_minute)
        self._share = share
        self._burst_override = burst
        self._allowed: int | None = None
        self._others = 0.0  # the other consumers' spend, requests per minute
        self._others_at = clock()
        # AIMD: the share of the target rate currently used (1 until a 429).
        self._aimd = 1.0
        self._retarget()
        self._level = float(self._burst)
        self._last_refill = clock()
        self._paused_until = 0.0
        self._last_decrease = -float("inf")
        # The platform's current window as last reported: requests still allowed and its end.
        self._window_remaining: float | None = None
        self._window_reset_at = 0.0
        self._in_flight = 0
        self._sent: list[float] = []  # our send times (ascending) of the last windows
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(max_in_flight)
        self.granted = 0
        self.rate_limited = 0
        self.waited_seconds = 0.0

    def _retarget(self) -> None:
        """Recompute the budget, our target and the bucket from what is known now."""
        allowed = self._allowed if self._allowed is not None else self._configured_budget
        self._budget = max(1, min(self._configured_budget, allowed))
        margin = max(_MIN_MARGIN, _MARGIN_SHARE * self._others) if self._others >= 0.5 else 0.0
        left = self._budget - self._others - margin
        floor = max(1.0, _MIN_TARGET_SHARE * self._budget)
        self._target = max(floor, min(self._share * self._budget, left))
        whole = max(1, math.floor(self._target))
        default_burst = max(1, min(self._max_in_flight, whole // 60))
        burst = self._burst_override if self._burst_override is not None else default_burst
        self._burst = max(1, min(burst, whole - 1)) if whole > 1 else 1
        # Rate such that burst + 60 s of refill never exceeds the target.
        self._full_rate = max(self._target - self._burst, 1.0) / 60.0
        self._rate = max(_MIN_RATE_SHARE, self._aimd) * self._full_rate

    @property
    def share(self) -> float:
        """The share of the budget we pace to at most (`set_share`)."""
        return self._share

    def set_share(self, share: float) -> None:
        """Pace to `share` of the budget from now on: sinks that run at once divide the
        client's budget between them while they run (`sync.concurrency`)."""
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        if share != self._share:
            self._share = share
            self._retarget()
            self._level = min(self._level, float(self._burst))

    @property
    def budget_per_minute(self) -> int:
        """The OAuth client's budget (configured, or lower while the platform says so)."""
        return self._budget

    @property
    def target_per_minute(self) -> float:
        """What we pace to: our share of the budget, less when the others spend more."""
        return self._target

    @property
    def others_per_minute(self) -> float:
        """The other consumers' spend as last estimated (requests per minute)."""
        return self._others

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
                    self._sent.append(now)
                    if self._sent[0] < now - 2 * _WINDOW:
                        del self._sent[: bisect.bisect_left(self._sent, now - _WINDOW)]
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
        self._refill(now)
        self._observe_headers(now, permit, headers)
        if status == 429:
            self._on_429(permit, now, headers)
        elif status < 500:
            self._aimd = min(1.0, self._aimd + _ADDITIVE_STEP)
        self._retarget()
        self._level = min(self._level, float(self._burst))

    def _observe_headers(self, now: float, permit: Permit, headers: Mapping[str, str]) -> None:
        allowed = _number(headers.get("inin-ratelimit-allowed"))
        count = _number(headers.get("inin-ratelimit-count"))
        reset = _number(headers.get("inin-ratelimit-reset"))
        if allowed is not None and allowed >= 1 and int(allowed) != self._allowed:
            if int(allowed) < self._configured_budget:
                logger.info("Genesys reports a rate budget of %d/min; pacing to it", int(allowed))
            self._allowed = int(allowed)
        if allowed is None or count is None or reset is None or not 0 <= reset <= 3600:
            return
        self._observe_others(now, permit, count, min(reset, _WINDOW))
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

    def _observe_others(self, now: float, permit: Permit, count: float, reset: float) -> None:
        """Update the others' spend from one count: the platform's window ends `reset` from
        now; our requests in it are those sent from its start up to this one (later ones may
        not have reached the platform yet)."""
        elapsed = _WINDOW - reset
        if elapsed < _MIN_ELAPSED:
            return
        start = now - elapsed
        ours = bisect.bisect_right(self._sent, permit.sent_at) - bisect.bisect_left(
            self._sent, start
        )
        sample = max(0.0, count - ours) * _WINDOW / elapsed
        if sample >= self._others:
            self._others = sample
        else:
            follow = 1.0 - math.exp(-max(0.0, now - self._others_at) / _FALL_TIME)
            self._others += (sample - self._others) * follow
        self._others_at = now

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
            self._aimd = max(_MIN_RATE_SHARE, self._aimd / 2)
            self._rate = max(_MIN_RATE_SHARE, self._aimd) * self._full_rate
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
