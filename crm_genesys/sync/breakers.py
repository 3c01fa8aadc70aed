"""Guards on destructive changes: a sync never clears a field, or deletes contacts, on a large
share of contacts without a person's confirmation in run config.

Each guard is a pure function of what is about to be sent and what the state knows; it returns a
verdict whose `refusal()` says, in words a person can act on, what was stopped and how to let it
through. Nothing has been sent when a verdict refuses.

- `judge_clears`, the mass-clear breaker: a batch of updates that would clear one owned field on
  more than `CRM_GENESYS_MAX_CLEAR_SHARE` (20 %) of the updated contacts (when at least
  `CRM_GENESYS_MASS_CLEAR_MIN_CONTACTS` contacts are updated) stops until the field is confirmed.
  "Clear" means: the content we last sent held a value in the field (state's `owned_fields`),
  and the CRM's content for the update holds none. Contacts whose last content is not known to
  the state are not judged (they are counted as such).
- `judge_deletes`, the mass-delete breaker: deleting more than `CRM_GENESYS_MAX_DELETE_SHARE`
  (5 %) of the live contacts the state holds (the full sync's mirror, the reconciliation's
  removals) stops until the exact count is confirmed. Callers raise `BreakerTripped` with the
  verdict.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from crm_genesys.contacts.masking import mask_key
from crm_genesys.sync.ownership import Ownership

SAMPLES = 5
DELETE_SAMPLES = 10
CONFIRM_ALL = "*"


@dataclass(frozen=True)
class FieldClear:
    """One owned field the updates would clear: on `contacts` of the `updates` judged, with a
    few (masked key, CRM internal id) samples."""

    field: str
    contacts: int
    updates: int
    samples: tuple[tuple[str, str], ...]

    @property
    def share(self) -> float:
        return self.contacts / self.updates if self.updates else 0.0


@dataclass(frozen=True)
class MassClear:
    """The mass-clear breaker's verdict on a batch of updates (see the module docstring)."""

    updates: int
    unknown: int
    clears: tuple[FieldClear, ...]
    max_share: float
    min_contacts: int
    confirmed: frozenset[str]
    config_key: str

    @property
    def judged(self) -> int:
        return self.updates - self.unknown

    @property
    def over_limit(self) -> tuple[FieldClear, ...]:
        if self.judged < self.min_contacts:
            return ()
        return tuple(c for c in self.clears if c.share > self.max_share)

    @property
    def tripped(self) -> tuple[FieldClear, ...]:
        """Fields over the limit that nobody confirmed."""
        if CONFIRM_ALL in self.confirmed:
            return ()
        return tuple(c for c in self.over_limit if c.field not in self.confirmed)

    @property
    def allowed(self) -> bool:
        return not self.tripped

    def refusal(self) -> str:
        """Why the updates were stopped and how to confirm them ('' when allowed)."""
        if self.allowed:
            return ""
        parts = [
            f"{c.field} on {c.contacts} of {self.judged} updated contacts ({c.share:.0%})"
            for c in self.tripped
        ]
        fields = ", ".join(f'"{c.field}"' for c in self.tripped)
        return (
            f"mass-clear breaker: these updates would clear {'; '.join(parts)}, more than the "
            f"{self.max_share:.0%} allowed (CRM_GENESYS_MAX_CLEAR_SHARE). Nothing was sent. If "
            f"the CRM really blanked them, re-run the window with `{self.config_key}: "
            f'[{fields}]` in the run config (or `["*"]` for every field).'
        )


def judge_clears(
    updates: pd.DataFrame,
    previous: Mapping[str, frozenset[str] | None],
    ownership: Ownership,
    *,
    max_share: float,
    min_contacts: int,
    confirmed: Collection[str] = (),
    config_key: str,
) -> MassClear:
    """The mass-clear verdict on `updates` (rows `business_key, crm_id, payload` of the changes
    whose op is `update`) given `previous` (state's owned fields per key, None when unknown)."""
    counts: dict[str, int] = {}
    samples: dict[str, list[tuple[str, str]]] = {}
    unknown = 0
    rows = zip(updates["business_key"], updates["crm_id"], updates["payload"], strict=True)
    for key, crm_id, payload in rows:
        before = previous.get(str(key))
        if before is None:
            unknown += 1
            continue
        now = ownership.present(json.loads(payload) if payload else {})
        for name in before - now:
            counts[name] = counts.get(name, 0) + 1
            shown = samples.setdefault(name, [])
            if len(shown) < SAMPLES:
                shown.append((mask_key(key), "" if crm_id is None else str(crm_id)))
    judged = len(updates) - unknown
    clears = tuple(
        FieldClear(name, n, judged, tuple(samples[name]))
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return MassClear(
        updates=len(updates),
        unknown=unknown,
        clears=clears,
        max_share=max_share,
        min_contacts=min_contacts,
        confirmed=frozenset(confirmed),
        config_key=config_key,
    )


class BreakerTripped(RuntimeError):
    """A guard refused a destructive change; the message names the counts, samples and the run
    config key that confirms it. Nothing was sent."""

    def __init__(self, verdict: MassDelete) -> None:
        self.verdict = verdict
        super().__init__(verdict.refusal())


@dataclass(frozen=True)
class MassDelete:
    """The mass-delete breaker's verdict on deleting `deletes` of `live` contacts.

    `confirmed` is the count a person confirmed (0: none); a confirmation holds only for exactly
    the count it names, so a run that would delete more than was reviewed is stopped again.
    `samples` are masked keys. `what` says which deletes these are (for the message) and
    `config_key` where the confirmation goes.
    """

    what: str
    deletes: int
    live: int
    max_share: float
    confirmed: int
    samples: tuple[str, ...]
    config_key: str

    @property
    def share(self) -> float:
        return self.deletes / self.live if self.live else (1.0 if self.deletes else 0.0)

    @property
    def over_limit(self) -> bool:
        return self.deletes > 0 and self.share > self.max_share

    @property
    def allowed(self) -> bool:
        return not self.over_limit or self.confirmed == self.deletes

    def refusal(self) -> str:
        """Why the deletes were refused and how to confirm them ('' when allowed)."""
        if self.allowed:
            return ""
        shown = ", ".join(self.samples[:DELETE_SAMPLES]) or "none"
        wrong = (
            f" (the run config confirmed {self.confirmed}, which is not this count)"
            if self.confirmed
            else ""
        )
        return (
            f"mass-delete breaker: {self.what} would delete {self.deletes} of {self.live} live "
            f"contacts ({self.share:.1%}), more than the {self.max_share:.1%} allowed "
            f"(CRM_GENESYS_MAX_DELETE_SHARE){wrong}. Nothing was deleted. Samples: {shown}. "
            f"If these deletes are intended, re-run with `{self.config_key}: {self.deletes}` in "
            "the run config."
        )

    def as_metadata(self) -> dict[str, float | int | bool]:
        return {
            "deletes": self.deletes,
            "live": self.live,
            "share": round(self.share, 6),
            "max_share": self.max_share,
            "confirmed": self.confirmed,
            "allowed": self.allowed,
        }


def judge_deletes(
    what: str,
    deletes: int,
    live: int,
    *,
    max_share: float,
    confirmed: int,
    samples: Sequence[str],
    config_key: str,
) -> MassDelete:
    """The mass-delete breaker (see `MassDelete`): `deletes` of the `live` contacts the state
    holds may go when they are at most `max_share` of them, or when `confirmed == deletes`."""
    if deletes < 0 or live < 0 or confirmed < 0:
        raise ValueError("counts must not be negative")
    if not 0.0 <= max_share <= 1.0:
        raise ValueError("max_share must be between 0 and 1")
    return MassDelete(
        what=what,
        deletes=deletes,
        live=live,
        max_share=max_share,
        confirmed=confirmed,
        samples=tuple(mask_key(s) for s in samples[:DELETE_SAMPLES]),
        config_key=config_key,
    )
