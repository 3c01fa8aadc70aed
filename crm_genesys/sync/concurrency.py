"""Sinks that run at once: who they are, when one is gone, and how they share one rate budget.

Several sinks may write at once: window runs of different windows, live runs, a full sync. Two
things keep them correct and fair, both through the sync-state store:

- **Key claims** (`SyncStateStore.claim_keys`): a sink writes a business key only while it holds
  its claim. A claim held by a sink that is gone (`holder_gone`: ended, its process dead on this
  host, or silent for `CLAIM_TTL` seconds on any host) may be taken over.
- **Lanes** (`allotted_share`): each sink announces itself once a second (its heartbeat, with
  what it spent over the last minute) and paces to the share of the client's budget its lane
  is allotted. A lane of higher priority goes first: while a live sink runs, lower lanes keep
  only `FLOOR` of our share; for a minute after one ran (what it spent still counts in the
  platform's window, and the next live run comes soon) they leave it twice its recent spend,
  at least `MIN_RESERVE` of our share. Sinks of one lane split what their lane gets. Our
  total stays within the client's `rate_share`; each pacer still reads the shared
  `inin-ratelimit-count`, so whatever else spends the client's budget is left its room.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from crm_genesys.processes import process_alive, this_process
from crm_genesys.state.store import SinkIdentity, SinkPresence

# Seconds between two heartbeats of a running sink.
HEARTBEAT_S = 1.0
# A sink not seen for this long is gone, whatever its host (claims of it may be taken over).
CLAIM_TTL = 60.0
# A sink seen within this many seconds is running (it shares its lane's allotment).
ALIVE_S = 5.0
# What a sink spent stays counted this long after it was last seen: the platform's window.
HOLD_S = 60.0
# While a higher lane runs, lower lanes keep this share of our budget...
FLOOR = 0.25
# ...and for a minute after, leave it at least this share, or twice what it spent.
MIN_RESERVE = 0.1
HEADROOM = 2.0


@dataclass(frozen=True)
class Lane:
    """A kind of sink; sinks of a higher `priority` go first on the rate budget."""

    name: str
    priority: int


LIVE = Lane("live", 10)
WINDOW = Lane("window", 0)


def identity(holder: str, lane: Lane) -> SinkIdentity:
    """The identity of a sink named `holder` of `lane` in this process."""
    host, pid, started = this_process()
    return SinkIdentity(holder, lane.name, lane.priority, host, pid, started)


def holder_gone(
    presence: SinkPresence | None,
    *,
    now: dt.datetime,
    host: str,
    ttl: float = CLAIM_TTL,
) -> bool:
    """Whether the sink behind a claim is gone: never announced (or forgotten), ended, its
    process dead (on `host`, this machine), or silent for more than `ttl` seconds."""
    if presence is None or presence.ended_at is not None:
        return True
    if presence.host == host and not process_alive(presence.pid, presence.pid_started):
        return True
    return (now - presence.seen_at).total_seconds() > ttl


def allotted_share(
    me: SinkIdentity,
    sinks: Sequence[SinkPresence],
    *,
    now: dt.datetime,
    total: float,
    budget_per_minute: float,
) -> float:
    """The share of the client's budget sink `me` paces to, in (0, `total`], given every sink
    the store knows (`total` is our whole share, the client's `rate_share`)."""
    others = [s for s in sinks if s.holder != me.holder]
    running = [s for s in others if s.ended_at is None and _age(now, s.seen_at) <= ALIVE_S]
    peers = 1 + sum(1 for s in running if s.priority == me.priority)
    budget = max(1.0, budget_per_minute)
    if any(s.priority > me.priority for s in running):
        return max(_TINY, FLOOR * total / peers)
    # Higher lanes that ran lately keep a reserve while what they spent is still in the
    # platform's window: the next of their runs finds room at once.
    higher = [s for s in others if s.priority > me.priority and _age(now, _last(s)) <= HOLD_S]
    if higher:
        demand = sum(s.spend_per_minute for s in higher) / budget
        reserve = min((1 - FLOOR) * total, max(MIN_RESERVE * total, HEADROOM * demand))
        return max(_TINY, (total - reserve) / peers)
    lower = sum(s.spend_per_minute for s in running if s.priority < me.priority) / budget
    return max(_TINY, max((1 - FLOOR) * total, total - lower) / peers)


# A share is never 0: the pacer needs a rate, and a sink always makes some progress.
_TINY = 0.01


def _age(now: dt.datetime, then: dt.datetime) -> float:
    return (now - then).total_seconds()


def _last(sink: SinkPresence) -> dt.datetime:
    return sink.ended_at or sink.seen_at
