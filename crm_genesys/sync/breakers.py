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
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import pandas as pd

from crm_genesys.contacts.masking import mask_key
from crm_genesys.sync.ownership import Ownership

SAMPLES = 5
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
