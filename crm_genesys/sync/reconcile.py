"""Reconciliation of the sync state with what Genesys really holds (a full scan).

The sink keeps state exact for everything it does; this catches what happens outside it: an
agent deleting a contact in Genesys, a contact created with our ExternalId by someone else, a
create whose intent was lost with its database. `reconcile` reads every contact once
(`scan_contacts`), keeps only (ExternalId value, contact id) pairs of our External Source, and
compares them with state's live rows.

Findings and, with `repair=True`, what is done about them (each repair leaves state such that the
next window's diff does the right thing through the normal, exactly-once path):
- `missing`: state says live, Genesys has no contact for the key → state marks it deleted (at the
  same CRM version), so the next diff of a live CRM row re-creates it.
- `orphans`: a contact carries our ExternalId but state has no live row → adopted into state with
  an empty content hash (at state's version), so the next diff updates it to the CRM content, or
  deletes it when the CRM row is a tombstone.
- `moved`: state's contact id differs from the contact carrying the key → state takes the id
  Genesys has (empty hash: the next diff re-sends the content).
- `duplicates`: several contacts carry one key → all but one removed (the one state references,
  else the oldest id) — only with `remove_duplicates=True`, since it deletes data in Genesys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from crm_genesys.genesys.types import ContactsApi
from crm_genesys.state.store import DeleteWrite, StateWrite, SyncStateStore


@dataclass
class ReconcileReport:
    """Counts are complete; the key lists are capped at `sample` entries for reports."""

    scanned: int = 0
    ours: int = 0
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    repaired: int = 0
    duplicates_removed: int = 0

    @property
    def in_parity(self) -> bool:
        return not (self.missing or self.orphans or self.moved or self.duplicates)

    def as_metadata(self) -> dict[str, int]:
        return {
            "scanned": self.scanned,
            "ours": self.ours,
            "matched": self.matched,
            "missing": len(self.missing),
            "orphans": len(self.orphans),
            "moved": len(self.moved),
            "duplicated_keys": len(self.duplicates),
            "repaired": self.repaired,
            "duplicates_removed": self.duplicates_removed,
        }


def _our_keys(contact: dict[str, object], source_id: str) -> Iterable[str]:
    for ext in contact.get("externalIds") or []:  # type: ignore[attr-defined]
        if isinstance(ext, dict) and (ext.get("externalSource") or {}).get("id") == source_id:
            value = ext.get("value")
            if isinstance(value, str):
                yield value


async def reconcile(
    api: ContactsApi,
    store: SyncStateStore,
    *,
    source_id: str,
    repair: bool = False,
    remove_duplicates: bool = False,
    window: str = "reconcile",
) -> ReconcileReport:
    """Compare state with a full scan of Genesys (see the module docstring); repair on request.

    Costs one scan (`contacts / page size` requests) plus, with `remove_duplicates`, one bulk
    remove per 100 duplicates. Run it when no sync of the same keys is running.
    """
    report = ReconcileReport()
    held: dict[str, list[str]] = {}
    async for contact in api.scan_contacts():
        report.scanned += 1
        cid = contact.get("id")
        if not isinstance(cid, str):
            continue
        for key in _our_keys(contact, source_id):
            held.setdefault(key, []).append(cid)
    report.ours = sum(len(ids) for ids in held.values())

    snapshot = store.snapshot()
    state = {row.business_key: row for row in snapshot.itertuples(index=False)}
    to_delete: list[DeleteWrite] = []
    to_adopt: list[StateWrite] = []
    extra_ids: list[str] = []
    for key, row in state.items():
        if bool(row.deleted) or key in held:
            continue
        report.missing.append(key)
        to_delete.append(DeleteWrite(key, int(row.crm_version)))
    for key, ids in held.items():
        row = state.get(key)
        live = row is not None and not bool(row.deleted)
        known = str(row.contact_id) if live and row is not None else None
        if len(ids) > 1:
            report.duplicates[key] = sorted(ids)
            keep = known if known in ids else min(ids)
            extra_ids.extend(i for i in ids if i != keep)
        else:
            keep = ids[0]
        version = int(row.crm_version) if row is not None else 0
        if not live:
            report.orphans.append(key)
            to_adopt.append(StateWrite(key, keep, "", version))
        elif known != keep:
            report.moved.append(key)
            to_adopt.append(StateWrite(key, keep, "", version))
        else:
            report.matched += 1

    if repair:
        with store.batch(window) as tx:
            tx.record_deleted(to_delete)
            tx.record_updated(to_adopt)
        report.repaired = len(to_delete) + len(to_adopt)
    if remove_duplicates and extra_ids:
        for start in range(0, len(extra_ids), 100):
            results = await api.bulk_remove(extra_ids[start : start + 100])
            report.duplicates_removed += sum(1 for r in results if r.success or r.status == 404)
    return report
