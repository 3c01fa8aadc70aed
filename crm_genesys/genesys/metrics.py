"""What one client did: requests, 429s, retries, contacts written, latency, budget share used.

`ClientMetrics.as_metadata()` is a flat `dict[str, float | int]` the Dagster layer turns into
materialization metadata. Nothing here holds a token, a secret or contact data.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ClientMetrics:
    """Counters of one `GenesysClient`. Latencies are kept per request (seconds, answered or
    not) to report p50/p95; `rate_limit_per_minute` and the clock give the budget share."""

    rate_limit_per_minute: int
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    requests: int = 0
    responses_by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    retries: int = 0
    transport_errors: int = 0
    outcome_unknown: int = 0
    token_refreshes: int = 0
    batch_splits: int = 0
    contacts_written: Counter[str] = field(default_factory=Counter)
    # Contacts read by bulk fetch (the read half of a merged update): not writes.
    contacts_fetched: int = 0
    item_failures: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.started:
            self.started = self.clock()

    def record_request(self, latency: float, status: int | None) -> None:
        self.requests += 1
        self.latencies.append(latency)
        if status is None:
            self.transport_errors += 1
        else:
            self.responses_by_status[status] += 1
            if status == 429:
                self.rate_limited += 1

    @property
    def elapsed(self) -> float:
        return max(0.0, self.clock() - self.started)

    def latency_quantile(self, q: float) -> float:
        """The q-quantile of request latency in seconds (nearest rank); 0 with no requests."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
        return ordered[rank]

    @property
    def budget_share_used(self) -> float:
        """Requests sent divided by what the budget allowed over the elapsed time (0..~1)."""
        minutes = self.elapsed / 60.0
        if minutes <= 0:
            return 0.0
        return self.requests / (self.rate_limit_per_minute * minutes)

    @property
    def contacts_per_second(self) -> float:
        """Contacts written (added, updated, removed) per second of elapsed time."""
        if self.elapsed <= 0:
            return 0.0
        return sum(self.contacts_written.values()) / self.elapsed

    def as_metadata(self) -> dict[str, float | int]:
        """Flat numbers for Dagster metadata (keys prefixed `genesys_`)."""
        out: dict[str, float | int] = {
            "genesys_requests": self.requests,
            "genesys_429s": self.rate_limited,
            "genesys_retries": self.retries,
            "genesys_transport_errors": self.transport_errors,
            "genesys_outcome_unknown": self.outcome_unknown,
            "genesys_token_refreshes": self.token_refreshes,
            "genesys_batch_splits": self.batch_splits,
            "genesys_latency_p50_s": round(self.latency_quantile(0.5), 4),
            "genesys_latency_p95_s": round(self.latency_quantile(0.95), 4),
            "genesys_budget_share_used": round(self.budget_share_used, 4),
            "genesys_elapsed_s": round(self.elapsed, 3),
            "genesys_contacts_per_s": round(self.contacts_per_second, 2),
            "genesys_contacts_fetched": self.contacts_fetched,
            "genesys_item_failures_fetch": self.item_failures["fetch"],
        }
        for op, done in (("add", "added"), ("update", "updated"), ("remove", "removed")):
            out[f"genesys_contacts_{done}"] = self.contacts_written[op]
            out[f"genesys_item_failures_{op}"] = self.item_failures[op]
        return out
