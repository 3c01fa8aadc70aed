"""Eventual consistency: when the org's search index sees a write.

The store keeps contacts (the primary, read by id at once) and an index of lookup keys and scan
membership whose entries become visible at a time drawn per write: `IndexLag.visible_at(now)`.
`RealismConfig` chooses the distribution; with the `basic` profile the lag is zero and every
write is visible at once. Draws come from one generator seeded by `RealismConfig.seed`, in the
order of the writes, so the same writes in the same order meet the same lags.
"""

from __future__ import annotations

import random
import threading

from crm_genesys.emulator.config import RealismConfig


class IndexLag:
    """Draws the lag of each write from the realism profile's distribution."""

    def __init__(self, realism: RealismConfig) -> None:
        self._lock = threading.Lock()
        self.configure(realism)

    def configure(self, realism: RealismConfig) -> None:
        with self._lock:
            self._realism = realism
            self._rng = random.Random(f"index-lag:{realism.seed}")

    def draw(self) -> float:
        """The lag of one write, in seconds."""
        r = self._realism
        if r.lag_max_s == 0.0:
            return 0.0
        with self._lock:
            if r.lag_distribution == "exponential":
                lag = r.lag_min_s + self._rng.expovariate(1.0 / r.lag_mean_s)
                return min(lag, r.lag_max_s)
            return self._rng.uniform(r.lag_min_s, r.lag_max_s)

    def visible_at(self, now: float) -> float:
        """When a write made at `now` becomes visible to lookups and scans."""
        return now + self.draw()
