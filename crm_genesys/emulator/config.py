"""Settings of the emulator: the org it serves (`EmulatorConfig`) and the faults it injects
(`FaultConfig`, with the named profiles `none`, `flaky` and `hostile`).

The same dataclasses drive the in-process app and the HTTP server; the server's admin endpoint
`/__emulator/faults` reads and writes `FaultConfig.to_dict()` / `FaultConfig.from_dict()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crm_genesys.emulator.clock import Clock, SystemClock

DEFAULT_CLIENT_ID = "demo-client"
DEFAULT_CLIENT_SECRET = "demo-secret"
# Platform limit `request.bytes.max`.
MAX_REQUEST_BYTES = 512_000


@dataclass(frozen=True)
class FaultConfig:
    """What goes wrong, and how often. Probabilities are per API request (token and admin
    endpoints are never faulted), drawn from a generator seeded by `(seed, request number)`, so a
    run with the same seed and the same request order meets the same faults.

    Exactly one request-level fault is chosen per request, in this order of precedence:
    drop, drop-after-write, 429, 500, 502, 503, 504 (their probabilities add up). `p_slow`,
    `latency_ms` and `p_item_failure` combine with any of them.
    """

    seed: int = 0
    p_429: float = 0.0
    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_504: float = 0.0
    # Close the connection without answering, before the request is processed.
    p_drop: float = 0.0
    # Process the request (the write is applied), then close the connection without answering.
    p_drop_after_write: float = 0.0
    # Extra latency on a share of requests, uniform in [slow_ms_min, slow_ms_max].
    p_slow: float = 0.0
    slow_ms_min: float = 50.0
    slow_ms_max: float = 500.0
    # Latency added to every API request.
    latency_ms: float = 0.0
    # Per-item transient failures inside bulk add/update/remove (item not applied, retryable 503).
    p_item_failure: float = 0.0
    # Tokens stop working this many seconds after they were issued (None: never).
    revoke_tokens_after_s: float | None = None
    # Retry-After sent with injected 429 and 503 responses.
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.startswith("p_"):
                value = getattr(self, f.name)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must be within [0, 1], got {value}")
        if self.request_fault_probability() > 1.0:
            raise ValueError("the request-level fault probabilities add up to more than 1")
        if self.slow_ms_min < 0 or self.slow_ms_max < self.slow_ms_min:
            raise ValueError("need 0 <= slow_ms_min <= slow_ms_max")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")

    def request_fault_probability(self) -> float:
        """The chance that a request meets one of the exclusive request-level faults."""
        return (
            self.p_drop
            + self.p_drop_after_write
            + self.p_429
            + self.p_500
            + self.p_502
            + self.p_503
            + self.p_504
        )

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> FaultConfig:
        """The named profile (`none`, `flaky`, `hostile`) with individual knobs overridden."""
        try:
            base = FAULT_PROFILES[name]
        except KeyError:
            known = ", ".join(sorted(FAULT_PROFILES))
            raise ValueError(f"unknown fault profile {name!r} (known: {known})") from None
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        """Build from a JSON object: an optional `profile` name plus individual knobs."""
        data = dict(data)
        profile = data.pop("profile", "none")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        return cls.profile(str(profile), **data)


FAULT_PROFILES: dict[str, FaultConfig] = {
    "none": FaultConfig(),
    # A bad day on a real org: occasional throttling, gateway errors and resets.
    "flaky": FaultConfig(
        p_429=0.02,
        p_500=0.005,
        p_502=0.005,
        p_503=0.01,
        p_504=0.005,
        p_drop=0.005,
        p_drop_after_write=0.005,
        p_slow=0.05,
        slow_ms_min=20.0,
        slow_ms_max=200.0,
        p_item_failure=0.01,
    ),
    # Everything at once, often: what a sync must survive without losing or duplicating anything.
    "hostile": FaultConfig(
        p_429=0.06,
        p_500=0.03,
        p_502=0.03,
        p_503=0.04,
        p_504=0.03,
        p_drop=0.03,
        p_drop_after_write=0.03,
        p_slow=0.1,
        slow_ms_min=50.0,
        slow_ms_max=500.0,
        p_item_failure=0.05,
        revoke_tokens_after_s=300.0,
    ),
}


@dataclass
class EmulatorConfig:
    """The emulated org.

    `db_path`: the SQLite file holding the org (None: in memory, private to this app). Several
    processes (or apps) pointed at the same file see the same contacts, sources, schemas and
    tokens; rate-limit windows, the request log and counters are per process.
    """

    db_path: Path | None = None
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = field(default=DEFAULT_CLIENT_SECRET, repr=False)
    token_ttl_s: int = 86_400
    rate_limit_per_minute: int = 300
    max_bulk_entities: int = 200
    max_request_bytes: int = MAX_REQUEST_BYTES
    faults: FaultConfig = field(default_factory=FaultConfig)
    # Seeds the order of bulk results (and nothing about faults: those use `faults.seed`).
    seed: int = 0
    # The request log keeps this many most recent entries; counters count everything.
    request_log_size: int = 100_000
    clock: Clock = field(default_factory=SystemClock, repr=False)
    org_id: str = "9c2f1c8e-6d2b-4e6a-9a52-3f0e6f6d0a11"
    org_name: str = "crm-genesys emulator"

    def __post_init__(self) -> None:
        if self.rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be >= 1")
        if self.max_bulk_entities < 1:
            raise ValueError("max_bulk_entities must be >= 1")
        if self.token_ttl_s < 1:
            raise ValueError("token_ttl_s must be >= 1")
