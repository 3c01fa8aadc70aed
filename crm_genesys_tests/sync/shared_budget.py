"""An emulator with the realistic profile (one budget per OAuth client) served over HTTP from a
thread, for tests where several sinks, each with its own client and event loop, share it; and
the budget as the emulator measured it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from crm_genesys.emulator import EmulatorConfig, create_app
from crm_genesys.emulator.config import RealismConfig
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.settings import GenesysSettings
from crm_genesys_tests.sync.emulated import CLIENT_ID, CLIENT_SECRET
from crm_genesys_tests.threaded_server import serve_in_thread


@dataclass
class SharedOrg:
    """An emulated org at `url`; `emulator` is its state, request log and rate usage."""

    url: str
    emulator: Any
    budget: int

    def client(self, **overrides: Any) -> GenesysClient:
        overrides.setdefault("rate_limit_per_minute", self.budget)
        overrides.setdefault("retry_initial_delay", 0.05)
        overrides.setdefault("retry_max_delay", 0.5)
        settings = GenesysSettings.for_base_url(self.url, CLIENT_ID, CLIENT_SECRET, **overrides)
        return GenesysClient(settings)

    def busiest_minute(self) -> int:
        """The most requests the emulator admitted in any 60 consecutive seconds, ours and the
        other consumer's together."""
        usage = {u.second: u.ours + u.theirs for u in self.emulator.rate_usage()}
        if not usage:
            return 0
        first, last = min(usage), max(usage)
        return max(
            sum(usage.get(s, 0) for s in range(start, start + 60))
            for start in range(first - 59, last + 1)
        )

    def refused(self) -> tuple[int, int]:
        """Requests the budget refused (429): ours, and the other consumer's."""
        usage = self.emulator.rate_usage()
        return sum(u.ours_429 for u in usage), sum(u.theirs_429 for u in usage)


@contextmanager
def shared_org(
    budget: int, *, lag_max_s: float = 1.0, background_share: float = 0.0, seed: int = 7
) -> Iterator[SharedOrg]:
    """A realistic org (per-client budget of `budget` requests/minute, of which another
    consumer spends `background_share`; lookups lagging up to `lag_max_s` seconds) over HTTP
    on a loopback port."""
    realism = RealismConfig.profile(
        "realistic",
        lag_max_s=lag_max_s,
        seed=seed,
        interaction_contacts=0,
        background_share=background_share,
    )
    app = create_app(
        EmulatorConfig(rate_limit_per_minute=budget, realism=realism, max_bulk_entities=100)
    )
    with serve_in_thread(app) as url:
        yield SharedOrg(url, app.state.emulator, budget)
