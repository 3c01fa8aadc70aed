"""Retry schedule: exponential backoff with full jitter, honouring `Retry-After`, bounded by
attempts and elapsed time.

Hand-rolled rather than `stamina` because the decision is not "retry on these exceptions": it
depends on the operation (an `add` whose outcome is unknown must not be resent), every attempt has
to pass through the pacer again, the wait must honour the platform's `Retry-After`, and tests need
an injectable clock and sleep (stamina sleeps with the real `asyncio.sleep` and adds jitter to the
exponential delay instead of drawing the whole delay at random). What remains is one small class.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class RetryPolicy:
    """When and how long to wait before attempt n+1 of one request.

    `attempts` counts all attempts (the first included); `max_elapsed` bounds the time from the
    first attempt to the start of the last one. Delay before retry k (k = 1, 2, ...) is drawn
    uniformly from [0, min(max_delay, initial_delay · 2^(k-1))] (full jitter); a `Retry-After`
    hint raises it to at least the hint (plus a little jitter so waiters do not return together).
    """

    attempts: int = 8
    max_elapsed: float = 180.0
    initial_delay: float = 0.5
    max_delay: float = 30.0
    clock: Clock = time.monotonic
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """The wait before retry `retry_number` (1-based)."""
        ceiling = min(self.max_delay, self.initial_delay * 2 ** (retry_number - 1))
        wait = self.rng.uniform(0.0, ceiling)
        if retry_after is not None and retry_after > 0:
            wait = retry_after + self.rng.uniform(0.0, min(1.0, self.initial_delay))
        return wait

    def start(self) -> RetryBudget:
        """The bookkeeping of one request's retries, starting now."""
        return RetryBudget(self, self.clock())


@dataclass
class RetryBudget:
    """Retries left for one request. `await budget.wait(retry_after)` returns False (without
    sleeping) once another attempt would break the attempts or elapsed-time bound."""

    policy: RetryPolicy
    started: float
    attempts_made: int = 1
    retries: int = 0

    async def wait(self, retry_after: float | None = None) -> bool:
        if self.attempts_made >= self.policy.attempts:
            return False
        delay = self.policy.delay(self.attempts_made, retry_after)
        elapsed = self.policy.clock() - self.started
        if elapsed + delay > self.policy.max_elapsed:
            return False
        await self.policy.sleep(delay)
        self.attempts_made += 1
        self.retries += 1
        return True
