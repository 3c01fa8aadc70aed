"""Dry runs: what a sync would do, counted and sampled (masked), with nothing sent or recorded.

`Preview` collects, over any number of chunks or one window, the creates, updates, deletes,
clears (owned fields Genesys holds that the CRM now blanks) and quarantined rows, with counts and
a few masked samples each, for Dagster metadata tables. It also holds the comparison of a contact
as Genesys holds it with the payload the CRM gives now (`owned_view`, `edited`, `cleared`), which
the reconciliation uses to find contacts edited by hand.

Owned fields are those of `sync.ownership.Ownership` (what the mapping names); the comparison is
`Ownership.view`.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from crm_genesys.contacts.diff import ChangeSet
from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.masking import mask_email, mask_key, mask_phone
from crm_genesys.contacts.normalize import NormalizationResult
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.target import GenesysTarget, identify
from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.ownership import Ownership
from crm_genesys.sync.window import ORG_BINDING, TargetMismatch

SAMPLES = 5
KINDS = ("create", "update", "delete", "clear", "quarantine")


def owned_view(contact: dict[str, Any] | None, mapping: Mapping) -> dict[str, Any]:
    """The owned fields of `contact` as `Ownership.view` compares them."""
    return Ownership.from_mapping(mapping).view(contact)


def payload_view(payload: str, mapping: Mapping) -> dict[str, Any]:
    return owned_view(json.loads(payload) if payload else None, mapping)


def edited(genesys_view: dict[str, Any], crm_view: dict[str, Any]) -> bool:
    """Whether the owned fields Genesys holds differ from the CRM's payload."""
    return genesys_view != crm_view


def cleared(genesys_view: dict[str, Any], crm_view: dict[str, Any]) -> list[str]:
    """Owned fields Genesys holds that the CRM's payload blanks (an update would clear them)."""
    return [name for name in genesys_view if name not in crm_view]


def _masked_sample(row: Any) -> dict[str, str]:
    """A reviewer's sample of a contact row: key, names' initials, masked phone and e-mail."""
    phone = next(
        (getattr(row, c) for c in ("work_phone", "cell_phone", "home_phone", "other_phone")
         if isinstance(getattr(row, c, None), str)),
        None,
    )  # fmt: skip
    email = next(
        (getattr(row, c) for c in ("work_email", "personal_email", "other_email")
         if isinstance(getattr(row, c, None), str)),
        None,
    )  # fmt: skip
    first = getattr(row, "first_name", None)
    last = getattr(row, "last_name", None)
    initials = "".join(n[0] + "." for n in (first, last) if isinstance(n, str) and n)
    return {
        "business_key": mask_key(str(row.business_key)),
        "name": initials,
        "phone": mask_phone(phone),
        "email": mask_email(email),
    }


@dataclass
class Preview:
    """What a dry run found (see the module docstring). Counts are exact; samples capped."""

    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    cleared_fields: Counter[str] = field(default_factory=Counter)
    # Updates whose Genesys contact was read to find clears, of all updates.
    clear_checked: int = 0
    unchanged: int = 0
    stale: int = 0

    def _sample(self, kind: str, sample: dict[str, str]) -> None:
        bucket = self.samples.setdefault(kind, [])
        if len(bucket) < SAMPLES:
            bucket.append(sample)

    def add(self, normalized: NormalizationResult, changes: ChangeSet) -> None:
        """Count one window's or chunk's changes and quarantined rows, with samples."""
        self.unchanged += changes.unchanged
        self.stale += changes.stale + normalized.superseded
        frame = changes.changes
        if len(frame):
            contacts = normalized.contacts.set_index("business_key", drop=False)
            for op, group in frame.groupby("op", sort=False):
                self.counts[str(op)] += len(group)
                for key in group["business_key"].head(SAMPLES):
                    if key in contacts.index:
                        self._sample(str(op), _masked_sample(contacts.loc[key]))
        quarantine = normalized.quarantine
        self.counts["quarantine"] += len(quarantine)
        for row in quarantine.head(SAMPLES).itertuples(index=False):
            self._sample(
                "quarantine",
                {"business_key": mask_key(str(row.business_key or "")), "reason": str(row.reason)},
            )

    def add_deletes(self, count: int, keys: list[str], what: str) -> None:
        """Deletes found outside a diff (the mirror, duplicates, unknown contacts)."""
        self.counts["delete"] += count
        for key in keys:
            self._sample("delete", {"business_key": mask_key(key), "why": what})

    def add_clear(self, key: str, fields: list[str], genesys_view: dict[str, Any]) -> None:
        """An update that would clear `fields` on the contact Genesys holds for `key`."""
        if not fields:
            return
        self.counts["clear"] += 1
        self.cleared_fields.update(fields)
        shown = {
            name: mask_phone(v[0]) if isinstance(v, tuple) else mask_email(v)
            if isinstance(v, str) and "@" in v else "(set)"
            for name, v in genesys_view.items() if name in fields
        }  # fmt: skip
        self._sample("clear", {"business_key": mask_key(key), "fields": ", ".join(fields), **shown})

    def counts_table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"would": list(KINDS), "contacts": [int(self.counts.get(k, 0)) for k in KINDS]}
        )

    def markdown(self, title: str) -> str:
        """The preview as markdown for the run's metadata: counts, then masked samples."""
        lines = [f"### {title} (dry run: nothing was sent, the sync state is unchanged)", ""]
        lines += ["| would | contacts |", "|---|---|"]
        lines += [f"| {k} | {int(self.counts.get(k, 0))} |" for k in KINDS]
        lines += [f"| unchanged | {self.unchanged} |", f"| stale | {self.stale} |", ""]
        if self.cleared_fields:
            fields = ", ".join(f"{k} ({v})" for k, v in self.cleared_fields.most_common())
            lines += [f"Fields an update would clear: {fields}", ""]
        for kind in KINDS:
            rows = self.samples.get(kind) or []
            if not rows:
                continue
            columns = list(dict.fromkeys(c for r in rows for c in r))
            lines += [f"**{kind}** (samples, masked)", ""]
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
            lines.append("")
        return "\n".join(lines)

    def as_metadata(self) -> dict[str, int | bool]:
        """Flat counts for run metadata (the markdown goes beside them)."""
        data: dict[str, int | bool] = {f"would_{k}": int(self.counts.get(k, 0)) for k in KINDS}
        data["unchanged"] = self.unchanged
        data["stale"] = self.stale
        data["clear_checked"] = self.clear_checked
        data["dry_run"] = True
        return data


async def check_target(client: GenesysClient, target: GenesysTarget, store: SyncStateStore) -> None:
    """Refuse (`TargetMismatch`) a target other than the org the state is bound to, without
    binding anything (dry runs write nothing)."""
    held = store.binding(ORG_BINDING)
    if held is None:
        return
    org = await identify(client, target.kind)
    if org.key != held[0]:
        raise TargetMismatch(
            f"the sync state at {store.display_url} was built against {held[1]}, but this run "
            f"targets {org.label} ({target.describe()}); a dry run against it would compare "
            "another org's contacts"
        )


async def preview_clears(
    client: GenesysClient,
    mapping: Mapping,
    changes: pd.DataFrame,
    contacts: pd.DataFrame,
    preview: Preview,
    limit: int,
) -> int:
    """Read the contacts of (at most `limit`) updates as Genesys holds them, and add to `preview`
    the owned fields each update would clear. Returns how many contacts were read."""
    updates = changes[changes["op"] == "update"].head(max(0, limit))
    if updates.empty:
        return 0
    found = await asyncio.gather(*(client.get_contact(str(cid)) for cid in updates["contact_id"]))
    payloads = dict(zip(contacts["business_key"], contacts["payload"], strict=True))
    for key, contact in zip(updates["business_key"], found, strict=True):
        preview.clear_checked += 1
        held = owned_view(contact, mapping)
        preview.add_clear(str(key), cleared(held, payload_view(payloads[key], mapping)), held)
    return len(updates)


async def preview_window(
    target: GenesysTarget,
    store: SyncStateStore,
    mapping: Mapping,
    normalized: NormalizationResult,
    changes: ChangeSet,
    max_clear_reads: int,
) -> Preview:
    """The preview of one window: its changes counted and sampled, and the clears of (at most
    `max_clear_reads`) updates read from Genesys. Nothing is sent, bound or recorded."""
    preview = Preview()
    preview.add(normalized, changes)
    if max_clear_reads > 0 and (changes.changes["op"] == "update").any():
        async with target.client() as client:
            await check_target(client, target, store)
            await preview_clears(
                client, mapping, changes.changes, normalized.contacts, preview, max_clear_reads
            )
    return preview


def _cell(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
