"""Reconciliation that repairs: the sync state and the CRM against a full scan of Genesys, so that
at the end of the run Genesys holds what the CRM says (not merely a corrected state).

`reconcile` reads every contact of the org once (`scan_contacts`: one request per 200 contacts)
and keeps, per business key of our External Source, the contact ids carrying it and a digest of
their owned fields (`sync.preview.owned_view`; phones on `e164`). It then streams the CRM in
chunks (`sync.full.CrmChunks`), normalizes each, and per key:

- `missing`: the state says live, Genesys has no contact for the key (deleted by hand) → the key
  is re-created from the CRM's current row;
- `edited`: Genesys holds owned fields that differ from the CRM's payload (edited by hand) →
  updated from the CRM's current row;
- `adopted` / `moved`: a contact carries the key but the state has no live row for it, or names
  another id → the state takes that contact and it is updated from the CRM;
- `duplicates`: several contacts carry the key → the one the state holds (else the lowest id)
  is kept; the others are deleted through the mass-delete breaker;
- `unknown`: contacts carrying our External Source whose key no CRM row explains (absent, or a
  tombstone) → reported; removed through the breaker only with `remove_unknown`;
- `unsynced` (a live CRM key Genesys never got) is created, `pending` (a CRM change the windows
  have not sent yet) updated, both by the same diff.

A key is judged once, on its first row that is not older than the state's version (a key's
rows may lie in several chunks; older ones are stale). Memory: the scan's ids and digests and
the set of judged keys, O(contacts).

Repairs go through the normal path: the state is first told what Genesys really holds (a missing
contact as deleted, an edited one with an empty content hash, an adopted one with its id), then
the chunk is diffed and sent by `sync.sink.apply_changes`, with the same intents and versions as
a window. Without `repair` nothing is sent and the state is untouched: the edits are applied to an
in-memory copy of the snapshot, and the run previews what a repair would do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from crm_genesys.contacts.diff import diff
from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.normalize import normalize
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.state.store import DeleteWrite, LiveRow, StateWrite, SyncStateStore
from crm_genesys.sync.breakers import BreakerTripped, MassDelete, judge_deletes
from crm_genesys.sync.full import CrmChunks, mirror_deletes
from crm_genesys.sync.ownership import Ownership
from crm_genesys.sync.preview import Preview, cleared, owned_view, payload_view
from crm_genesys.sync.sink import SyncReport, apply_changes
from crm_genesys.sync.window import record_version_bumps

CONFIRM_KEY = "confirm_deletes"
SCAN_PAGE = 200
SAMPLES = 20


@dataclass(frozen=True)
class ReconcileOptions:
    """`repair`: send what makes Genesys right (else: report and preview only);
    `remove_unknown`: also delete contacts no CRM key explains; deletes over `max_delete_share`
    of the live contacts need `confirm_deletes` equal to their count."""

    repair: bool = False
    remove_unknown: bool = False
    confirm_deletes: int = 0
    max_delete_share: float = 0.05
    chunk_rows: int = 50_000
    max_clear_reads: int = 1_000


@dataclass
class _Copy:
    contact_id: str
    digest: str


@dataclass
class ReconcileReport:
    """Counts are complete; the key lists keep the first `SAMPLES` keys each."""

    scanned: int = 0
    scan_requests: int = 0
    ours: int = 0
    crm_rows: int = 0
    matched: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    duplicate_ids: int = 0
    removed: int = 0
    sent: SyncReport = field(default_factory=SyncReport)
    verdict: MassDelete | None = None
    preview: Preview | None = None

    def found(self, kind: str, key: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        bucket = self.samples.setdefault(kind, [])
        if len(bucket) < SAMPLES:
            bucket.append(key)

    @property
    def in_parity(self) -> bool:
        return not any(self.counts.get(k) for k in FINDINGS)

    @property
    def repaired(self) -> int:
        return sum(self.counts.get(k, 0) for k in FINDINGS if k != "unknown") + self.removed

    def as_metadata(self) -> dict[str, int]:
        data = {
            "scanned": self.scanned,
            "scan_requests": self.scan_requests,
            "ours": self.ours,
            "crm_rows": self.crm_rows,
            "matched": self.matched,
            **{kind: self.counts.get(kind, 0) for kind in (*FINDINGS, *NOTED)},
            "duplicate_ids": self.duplicate_ids,
            "removed": self.removed,
            "repaired": self.repaired if self.preview is None else 0,
            "created": self.sent.created,
            "updated": self.sent.updated,
            "deleted": self.sent.deleted,
            "failed": self.sent.failed,
            "requests": self.sent.requests,
        }
        return data


FINDINGS = ("missing", "edited", "adopted", "moved", "duplicates", "unknown", "unsynced")
# Counted, not drift of Genesys: CRM changes the windows have not synced yet (sent all the same).
NOTED = ("pending",)


def _digest(view: dict[str, Any]) -> str:
    text = json.dumps(view, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _our_keys(contact: dict[str, Any], source_id: str) -> Iterable[str]:
    for ext in contact.get("externalIds") or []:
        if isinstance(ext, dict) and (ext.get("externalSource") or {}).get("id") == source_id:
            value = ext.get("value")
            if isinstance(value, str):
                yield value


async def scan_ours(
    client: GenesysClient, source_id: str, mapping: Mapping, report: ReconcileReport
) -> dict[str, list[_Copy]]:
    """Business key → the contacts carrying it as our ExternalId (id + owned-field digest)."""
    held: dict[str, list[_Copy]] = {}
    before = client.metrics.requests
    async for contact in client.scan_contacts(SCAN_PAGE):
        report.scanned += 1
        cid = contact.get("id")
        if not isinstance(cid, str):
            continue
        keys = list(_our_keys(contact, source_id))
        if keys:
            digest = _digest(owned_view(contact, mapping))
            for key in keys:
                held.setdefault(key, []).append(_Copy(cid, digest))
    report.scan_requests = client.metrics.requests - before
    report.ours = sum(len(v) for v in held.values())
    return held


async def reconcile(
    client: GenesysClient,
    store: SyncStateStore,
    chunks: CrmChunks,
    *,
    source_id: str,
    options: ReconcileOptions,
    schema: dict[str, Any] | None = None,
    label: str = "reconcile",
    run_id: str | None = None,
) -> ReconcileReport:
    """Reconcile (see the module docstring). Raises `BreakerTripped` (before any delete is sent,
    after the re-sends) when the deletes are over the breaker's share and not confirmed."""
    mapping = chunks.mapping
    report = ReconcileReport(preview=None if options.repair else Preview())
    held = await scan_ours(client, source_id, mapping, report)
    extra_ids: list[str] = []
    # Keys judged on one of their rows (the first not older than the state): a key's rows may
    # lie in several chunks, and it is judged once.
    judged: set[str] = set()
    reads_left = options.max_clear_reads
    for frame, _ in chunks.pages(None):
        report.crm_rows += len(frame)
        normalized = normalize(frame, mapping)
        del frame
        contacts = normalized.contacts
        snapshot = store.snapshot(contacts["business_key"].tolist())
        state = snapshot.set_index("business_key", drop=False)
        edits: list[StateWrite] = []
        deleted_by_hand: list[str] = []
        edited_ids: dict[str, str] = {}
        keys = contacts["business_key"].tolist()
        rows = zip(keys, contacts["is_deleted"], contacts["payload"], contacts["content_hash"],
                   contacts["crm_version"], strict=True)  # fmt: skip
        for key, tomb, payload, digest, crm_version in rows:
            st = state.loc[key] if key in state.index else None
            if key in judged or (st is not None and int(crm_version) < int(st.crm_version)):
                # Judged already on another row of the key, or an older version (stale): the
                # diff alone decides what this row needs.
                continue
            judged.add(key)
            copies = held.pop(key, [])
            live = st is not None and not bool(st.deleted) and isinstance(st.contact_id, str)
            known = str(st.contact_id) if live and st is not None else None
            version = int(st.crm_version) if st is not None else 0
            ids = sorted(c.contact_id for c in copies)
            if tomb:
                # The CRM deleted it: the diff deletes what the state holds; any other copy is
                # a leftover no CRM row explains.
                for cid in ids:
                    if cid != known:
                        report.found("unknown", key)
                        if options.remove_unknown:
                            extra_ids.append(cid)
                continue
            if not copies:
                if live:
                    report.found("missing", key)
                    deleted_by_hand.append(key)
                else:
                    report.found("unsynced", key)
                continue
            keep = known if known in ids else ids[0]
            if len(ids) > 1:
                report.found("duplicates", key)
                report.duplicate_ids += len(ids) - 1
                extra_ids.extend(i for i in ids if i != keep)
            kept = next(c for c in copies if c.contact_id == keep)
            if not live:
                report.found("adopted", key)
                edits.append(StateWrite(key, keep, "", version))
            elif keep != known:
                report.found("moved", key)
                edits.append(StateWrite(key, keep, "", version))
            elif st is not None and st.content_hash != digest:
                report.found("pending", key)  # a CRM change not synced yet: the diff sends it
            elif kept.digest != _digest(payload_view(payload, mapping)):
                report.found("edited", key)
                edits.append(StateWrite(key, keep, "", version))
                edited_ids[key] = keep
            else:
                report.matched += 1
        # Quarantined rows: the CRM still has the key, so its contact is explained; of several
        # copies, only the one the state holds stays.
        for key in normalized.quarantine["business_key"].dropna().astype(str):
            if key in judged:
                continue
            judged.add(key)
            copies = held.pop(key, [])
            if len(copies) > 1:
                row = store.snapshot([key])
                known = str(row.contact_id.iloc[0]) if len(row) else None
                ids = sorted(c.contact_id for c in copies)
                keep = known if known in ids else ids[0]
                report.found("duplicates", key)
                report.duplicate_ids += len(ids) - 1
                extra_ids.extend(i for i in ids if i != keep)
        told = _told(snapshot, edits, deleted_by_hand)
        changes = diff(contacts, told)
        if report.preview is not None:
            report.preview.add(normalized, changes)
            if reads_left > 0 and edited_ids:
                reads_left -= await _preview_edit_clears(
                    client, mapping, edited_ids, contacts, report.preview, reads_left
                )
            continue
        with store.batch(label) as tx:
            tx.record_deleted(_deleted_at(snapshot, deleted_by_hand))
            tx.record_updated(edits)
        record_version_bumps(store, changes, label)
        if not changes.changes.empty:
            sent = await apply_changes(
                changes,
                client,
                store,
                source_id=source_id,
                window=label,
                batch_size=client.settings.batch_size,
                max_in_flight=client.settings.max_in_flight,
                schema=schema,
                run_id=run_id,
                ownership=Ownership.from_mapping(mapping),
                division_id=mapping.division,
            )
            _add(report.sent, sent)
    # What is left carries our External Source and no CRM row explains it.
    gone_live: list[str] = []
    unexplained = [(k, c) for k, copies in held.items() for c in copies]
    if unexplained:
        snapshot = store.snapshot(sorted({k for k, _ in unexplained}))
        state = snapshot.set_index("business_key", drop=False)
        for key, copy in unexplained:
            report.found("unknown", key)
            st = state.loc[key] if key in state.index else None
            if st is not None and not bool(st.deleted) and st.contact_id == copy.contact_id:
                gone_live.append(key)
            elif options.remove_unknown:
                extra_ids.append(copy.contact_id)
    deletes = len(extra_ids) + (len(gone_live) if options.remove_unknown else 0)
    live_count = store.counts()["contacts_live"]
    samples = (report.samples.get("duplicates", []) + report.samples.get("unknown", []))[:10]
    report.verdict = judge_deletes(
        "the reconciliation (duplicates and unknown contacts)",
        deletes,
        live_count,
        max_share=options.max_delete_share,
        confirmed=options.confirm_deletes,
        samples=samples,
        config_key=CONFIRM_KEY,
    )
    if report.preview is not None:
        report.preview.add_deletes(deletes, samples, "duplicate or unknown")
        return report
    if not report.verdict.allowed:
        raise BreakerTripped(report.verdict)
    if options.remove_unknown and gone_live:
        rows = store.snapshot(gone_live)
        sent = await apply_changes(
            mirror_deletes(
                [
                    _live(r.business_key, r.contact_id, r.crm_version)
                    for r in rows.itertuples(index=False)
                ]
            ),
            client,
            store,
            source_id=source_id,
            window=label,
            batch_size=client.settings.batch_size,
            max_in_flight=client.settings.max_in_flight,
            run_id=run_id,
            ownership=Ownership.from_mapping(mapping),
        )
        _add(report.sent, sent)
        report.removed += sent.deleted
    batch = client.settings.batch_size
    for start in range(0, len(extra_ids), batch):
        results = await client.bulk_remove(extra_ids[start : start + batch])
        report.removed += sum(1 for r in results if r.success or r.status == 404)
    return report


def _live(key: str, contact_id: str, version: int) -> LiveRow:
    return LiveRow(str(key), str(contact_id), int(version))


def _told(snapshot: pd.DataFrame, edits: list[StateWrite], deleted: list[str]) -> pd.DataFrame:
    """The snapshot as the state will hold it once told what Genesys really holds."""
    told = snapshot.set_index("business_key", drop=False).copy()
    for key in deleted:
        told.loc[key, ["contact_id", "content_hash", "deleted"]] = [None, "", True]
    for write in edits:
        told.loc[write.business_key, ["business_key", "contact_id", "content_hash"]] = [
            write.business_key,
            write.contact_id,
            "",
        ]
        told.loc[write.business_key, "deleted"] = False
        if pd.isna(told.loc[write.business_key, "crm_version"]):
            told.loc[write.business_key, "crm_version"] = write.crm_version
    out = told.reset_index(drop=True)
    return out.astype({"crm_version": "int64", "deleted": bool})


def _deleted_at(snapshot: pd.DataFrame, keys: list[str]) -> list[DeleteWrite]:
    versions = dict(zip(snapshot["business_key"], snapshot["crm_version"], strict=True))
    return [DeleteWrite(k, int(versions[k])) for k in keys]


async def _preview_edit_clears(
    client: GenesysClient,
    mapping: Mapping,
    edited_ids: dict[str, str],
    contacts: pd.DataFrame,
    preview: Preview,
    limit: int,
) -> int:
    payloads = dict(zip(contacts["business_key"], contacts["payload"], strict=True))
    chosen = list(edited_ids.items())[: max(0, limit)]
    for key, cid in chosen:
        contact = await client.get_contact(cid)
        held = owned_view(contact, mapping)
        preview.clear_checked += 1
        preview.add_clear(key, cleared(held, payload_view(payloads[key], mapping)), held)
    return len(chosen)


def _add(total: SyncReport, part: SyncReport) -> None:
    for name in ("created", "updated", "deleted", "dead_lettered", "failed", "stale_skipped"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.bulk_requests += part.bulk_requests
    total.lookups += part.lookups
    for reason, n in part.failure_reasons.items():
        total.failure_reasons[reason] = total.failure_reasons.get(reason, 0) + n
