"""The per-token request budget (`token.rate.per.minute`, 300 by default).

A sliding one-minute window per token: a request is allowed when fewer than `limit` allowed
requests of the same token fall in the last 60 seconds. Any minute therefore holds at most
`limit` requests, and a client pacing itself at `limit`/minute is never refused. Refused
requests do not count, so a client that backs off for `Retry-After` gets through. (The platform
does not document its window shape; this is the strictest reading of "N requests per minute".)
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from crm_genesys.emulator.clock import Clock

WINDOW_S = 60.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int  # requests counted in the current window, this one included when allowed
    limit: int
    reset_s: int  # seconds until the window has room again (0 when it has room now)

    def headers(self) -> dict[str, str]:
        """The `inin-ratelimit-*` headers the platform sends on API responses."""
        return {
            "inin-ratelimit-count": str(self.count),
            "inin-ratelimit-allowed": str(self.limit),
            "inin-ratelimit-reset": str(self.reset_s),
        }


class RateLimiter:
    """Sliding-window limiter keyed by token; `limit` may be changed at runtime."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> RateDecision:
        """Count a request of `key` if the budget allows it, and say so."""
        now = self._clock.time()
        with self._lock:
            window = self._windows.setdefault(key, deque())
            horizon = now - WINDOW_S
            while window and window[0] <= horizon:
                window.popleft()
            allowed = len(window) < self.limit
            if allowed:
                window.append(now)
            full = len(window) >= self.limit
            # When full, room frees up as the oldest counted request leaves the window.
            reset = math.ceil(window[0] + WINDOW_S - now) if full and window else 0
            return RateDecision(allowed, len(window), self.limit, max(reset, 1) if full else 0)

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
