"""The request budget (`token.rate.per.minute` / `client.credentials.token.rate.per.minute`, 300
by default), counted per token or per OAuth client, with optional background traffic.

A sliding one-minute window per key (a token, or a client id when the budget is per client): a
request is allowed when fewer than `limit` allowed requests of the same key fall in the last 60
seconds. Any minute therefore holds at most `limit` requests, and a client pacing itself at
`limit`/minute is never refused. Refused requests do not count, so a client that backs off for
`Retry-After` gets through. (The platform does not document its window shape; this is the
strictest reading of "N requests per minute".)

Background traffic is another consumer of one key's budget (another application using the same
OAuth client): it sends `share * limit` requests per minute at a steady pace, each one admitted
or refused by the same window as ours (a refused one is not retried). Request k falls at a
seeded random point of its own period `[k, k + 1) * 60 / (share * limit)` (`jitter` 1; 0 puts
it at the start): any minute holds its share give or take one request, but a slot it frees is
not always the one it takes next, so a consumer that grabs every free slot can starve it. It
is simulated lazily on the limiter's clock whenever the limiter is consulted, so a
`ManualClock` drives it too. `usage()` counts, per second, the requests and the 429s of both
consumers.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import dataclass

from crm_genesys.emulator.clock import Clock

WINDOW_S = 60.0
# Per-second usage is kept for this long.
USAGE_HISTORY_S = 3600


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int  # requests counted in the current window (everyone's), this one included
    limit: int
    reset_s: int  # seconds until the window has room again (0 when it has room now)

    def headers(self) -> dict[str, str]:
        """The `inin-ratelimit-*` headers the platform sends on API responses."""
        return {
            "inin-ratelimit-count": str(self.count),
            "inin-ratelimit-allowed": str(self.limit),
            "inin-ratelimit-reset": str(self.reset_s),
        }


@dataclass
class SecondUsage:
    """What happened in one second of the limiter's clock."""

    second: int
    ours: int = 0
    ours_429: int = 0
    theirs: int = 0
    theirs_429: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "second": self.second,
            "ours": self.ours,
            "ours_429": self.ours_429,
            "theirs": self.theirs,
            "theirs_429": self.theirs_429,
        }


class RateLimiter:
    """Sliding-window limiter keyed by token or client; `limit` may be changed at runtime."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._usage: dict[int, SecondUsage] = {}
        self._lock = threading.Lock()
        self._background_key: str | None = None
        self._background_share = 0.0
        self._background_jitter = 1.0
        self._background_rng = random.Random(0)
        # Start of the next background request's period, and the request's time within it.
        self._period_start = 0.0
        self._next_background = 0.0

    def set_background(
        self, key: str | None, share: float, *, seed: int = 0, jitter: float = 1.0
    ) -> None:
        """Let another consumer spend `share` of `key`'s budget from now on (None / 0: nobody),
        its requests placed at random within their periods (`jitter` of a period, seeded)."""
        with self._lock:
            self._background_key = key if share > 0 else None
            self._background_share = share
            self._background_jitter = jitter
            self._background_rng = random.Random(f"background:{seed}")
            self._start_background(self._clock.time())

    def _start_background(self, at: float) -> None:
        self._period_start = at
        self._next_background = at + self._offset()

    def _interval(self) -> float:
        return WINDOW_S / (self._background_share * self.limit)

    def _offset(self) -> float:
        if self._background_key is None:
            return 0.0
        return self._background_rng.random() * self._background_jitter * self._interval()

    def check(self, key: str) -> RateDecision:
        """Count a request of `key` if the budget allows it, and say so."""
        now = self._clock.time()
        with self._lock:
            self._run_background(now)
            window = self._window(key, now)
            allowed = len(window) < self.limit
            usage = self._second(now)
            if allowed:
                window.append(now)
                usage.ours += 1
            else:
                usage.ours_429 += 1
            full = len(window) >= self.limit
            # When full, room frees up as the oldest counted request leaves the window.
            reset = math.ceil(window[0] + WINDOW_S - now) if full and window else 0
            return RateDecision(allowed, len(window), self.limit, max(reset, 1) if full else 0)

    def usage(self) -> list[SecondUsage]:
        """Per-second requests and 429s of ours and the background's, oldest first (the last
        `USAGE_HISTORY_S` seconds that saw any)."""
        with self._lock:
            self._run_background(self._clock.time())
            return [self._usage[s] for s in sorted(self._usage)]

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._usage.clear()
            self._start_background(self._clock.time())

    def _window(self, key: str, now: float) -> deque[float]:
        window = self._windows.setdefault(key, deque())
        horizon = now - WINDOW_S
        while window and window[0] <= horizon:
            window.popleft()
        return window

    def _second(self, at: float) -> SecondUsage:
        second = int(at)
        usage = self._usage.get(second)
        if usage is None:
            usage = self._usage[second] = SecondUsage(second)
            if len(self._usage) > USAGE_HISTORY_S:
                for old in [s for s in self._usage if s <= second - USAGE_HISTORY_S]:
                    del self._usage[old]
        return usage

    def _run_background(self, now: float) -> None:
        """Play the background consumer's requests due up to `now`, in time order."""
        key = self._background_key
        if key is None:
            return
        interval = self._interval()
        # After a long quiet spell only the last window matters; the background alone never
        # exceeds the budget, so the skipped requests were all admitted.
        horizon = now - WINDOW_S - interval
        if self._period_start < horizon:
            skipped = math.ceil((horizon - self._period_start) / interval)
            self._start_background(self._period_start + skipped * interval)
        while self._next_background <= now:
            at = self._next_background
            window = self._window(key, at)
            usage = self._second(at)
            if len(window) < self.limit:
                window.append(at)
                usage.theirs += 1
            else:
                usage.theirs_429 += 1
            self._period_start += interval
            self._next_background = self._period_start + self._offset()
