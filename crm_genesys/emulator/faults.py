"""Deterministic fault decisions: one generator per request, seeded by `(seed, request number)`,
so the same seed and the same request order give the same faults whatever else happens."""

from __future__ import annotations

import random
from dataclasses import dataclass

from crm_genesys.emulator.config import FaultConfig

# Request-level faults in order of precedence (see FaultConfig).
REQUEST_FAULTS = ("drop", "drop_after_write", "429", "500", "502", "503", "504")


@dataclass(frozen=True)
class FaultDecision:
    """What happens to one request: an exclusive request-level fault (or None), the latency to
    add, and the generator the handler uses for per-item failures and result order."""

    kind: str | None
    delay_s: float
    slow: bool
    rng: random.Random


def decide(config: FaultConfig, request_no: int) -> FaultDecision:
    rng = random.Random(f"{config.seed}:{request_no}")
    draw = rng.random()
    kind: str | None = None
    edge = 0.0
    for name in REQUEST_FAULTS:
        edge += getattr(config, f"p_{name}")
        if draw < edge:
            kind = name
            break
    delay = config.latency_ms / 1000.0
    slow = rng.random() < config.p_slow
    if slow:
        delay += rng.uniform(config.slow_ms_min, config.slow_ms_max) / 1000.0
    return FaultDecision(kind, delay, slow, rng)
