"""A small in-memory `ContactsApi` with the platform's semantics the sink relies on, and hooks to
inject per-item failures. For unit tests; integration tests use the real client and emulator.

Faithful points: ids are server-generated; an `add` never dedupes by ExternalId (a resent add
duplicates); updates are full replacements; bulk update and fetch of a missing id are 404 items;
bulk remove of a missing id is reported as success (as the client does); results come back in
request order (the client aligns them). ExternalId lookups see a write only `lookup_lag_seconds`
after it happened (by `clock`), reads by id at once; `merge` folds one contact into another as
the platform's merge does (the merged-away id stops answering, its ExternalIds move).
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from crm_genesys.genesys.errors import RetryableError
from crm_genesys.genesys.types import BulkItemResult, BulkOp, Contact

# What a fault hook may return for one item:
#   None                   -> normal processing
#   ("reject", status, code, retryable)
#   "apply_then_unknown"   -> the write happens, the caller gets outcome_unknown
#   "unknown"              -> nothing happens, the caller gets outcome_unknown
Fault = tuple[str, int, str, bool] | Literal["apply_then_unknown", "unknown"] | None
FaultHook = Callable[[BulkOp, Contact], Fault]


@dataclass
class FakeContactsApi:
    fault: FaultHook | None = None
    # Raise this for the next N bulk calls (a whole-request failure after client retries).
    fail_next_requests: int = 0
    fail_with: Callable[[], Exception] = field(
        default=lambda: RetryableError("bulk failed", status=503)
    )
    contacts: dict[str, Contact] = field(default_factory=dict)
    requests: list[tuple[str, int]] = field(default_factory=list)
    lookup_lag_seconds: float = 0.0
    clock: Callable[[], float] = time.time
    # When each contact's ExternalIds were last written (what lagging lookups go by).
    written_at: dict[str, float] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -------------------------------------------------------------- helpers for tests

    def by_external_id(self, source_id: str) -> dict[str, list[Contact]]:
        """ExternalId value -> every contact carrying it (more than one would be a duplicate)."""
        out: dict[str, list[Contact]] = {}
        for contact in self.contacts.values():
            for ext in contact.get("externalIds", []):
                if ext["externalSource"]["id"] == source_id:
                    out.setdefault(ext["value"], []).append(contact)
        return out

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.requests if k == kind)

    def store(self, contact: Contact) -> None:
        """Write a contact as the platform would (an agent, another integration)."""
        self.contacts[contact["id"]] = copy.deepcopy(contact)
        self.written_at[contact["id"]] = self.clock()

    def merge(self, away_id: str, into_id: str) -> None:
        """The platform's merge: `away_id` stops answering, its ExternalIds live on `into_id`."""
        away = self.contacts.pop(away_id)
        survivor = self.contacts[into_id]
        survivor["externalIds"] = survivor.get("externalIds", []) + away.get("externalIds", [])
        survivor["mergedFrom"] = [{"id": away_id}]
        self.written_at[into_id] = self.clock()

    def _fault(self, op: BulkOp, entity: Contact) -> Fault:
        return self.fault(op, entity) if self.fault else None

    def _maybe_fail_request(self) -> None:
        if self.fail_next_requests > 0:
            self.fail_next_requests -= 1
            raise self.fail_with()

    # -------------------------------------------------------------- ContactsApi

    async def ensure_external_source(self, name: str, uri_template: str | None = None) -> str:
        return f"src-{name}"

    async def bulk_add(self, entities: Sequence[Contact]) -> list[BulkItemResult]:
        self.requests.append(("add", len(entities)))
        self._maybe_fail_request()
        results = []
        for entity in entities:
            fault = self._fault("add", entity)
            if isinstance(fault, tuple):
                _, status, code, retryable = fault
                results.append(
                    BulkItemResult("add", False, status, None, None, code, code, retryable)
                )
                continue
            if fault == "unknown":
                results.append(BulkItemResult("add", False, 0, outcome_unknown=True))
                continue
            contact = copy.deepcopy(dict(entity))
            contact["id"] = f"c{next(self._ids):06d}"
            self.contacts[contact["id"]] = contact
            self.written_at[contact["id"]] = self.clock()
            if fault == "apply_then_unknown":
                results.append(BulkItemResult("add", False, 0, outcome_unknown=True))
            else:
                results.append(BulkItemResult("add", True, 200, contact["id"], contact))
        return results

    async def bulk_update(self, entities: Sequence[Contact]) -> list[BulkItemResult]:
        self.requests.append(("update", len(entities)))
        self._maybe_fail_request()
        results = []
        for entity in entities:
            fault = self._fault("update", entity)
            cid = entity["id"]
            if isinstance(fault, tuple):
                _, status, code, retryable = fault
                results.append(
                    BulkItemResult("update", False, status, cid, None, code, code, retryable)
                )
                continue
            if fault == "unknown":
                results.append(BulkItemResult("update", False, 0, cid, outcome_unknown=True))
                continue
            if cid not in self.contacts:
                results.append(
                    BulkItemResult("update", False, 404, cid, None, "not.found", "gone", False)
                )
                continue
            self.contacts[cid] = copy.deepcopy(dict(entity))
            self.written_at[cid] = self.clock()
            if fault == "apply_then_unknown":
                results.append(BulkItemResult("update", False, 0, cid, outcome_unknown=True))
            else:
                results.append(BulkItemResult("update", True, 200, cid, self.contacts[cid]))
        return results

    async def bulk_remove(self, contact_ids: Sequence[str]) -> list[BulkItemResult]:
        self.requests.append(("remove", len(contact_ids)))
        self._maybe_fail_request()
        results = []
        for cid in contact_ids:
            fault = self._fault("remove", {"id": cid})
            if isinstance(fault, tuple):
                _, status, code, retryable = fault
                results.append(
                    BulkItemResult("remove", False, status, cid, None, code, code, retryable)
                )
                continue
            if fault == "unknown":
                results.append(BulkItemResult("remove", False, 0, cid, outcome_unknown=True))
                continue
            self.contacts.pop(cid, None)  # a missing id is success: already gone
            if fault == "apply_then_unknown":
                results.append(BulkItemResult("remove", False, 0, cid, outcome_unknown=True))
            else:
                results.append(BulkItemResult("remove", True, 200, cid))
        return results

    async def bulk_fetch(self, contact_ids: Sequence[str]) -> list[BulkItemResult]:
        self.requests.append(("fetch", len(contact_ids)))
        self._maybe_fail_request()
        results = []
        for cid in contact_ids:
            fault = self._fault("fetch", {"id": cid})
            if isinstance(fault, tuple):
                _, status, code, retryable = fault
                results.append(
                    BulkItemResult("fetch", False, status, cid, None, code, code, retryable)
                )
            elif cid in self.contacts:
                results.append(
                    BulkItemResult("fetch", True, 200, cid, copy.deepcopy(self.contacts[cid]))
                )
            else:
                results.append(
                    BulkItemResult("fetch", False, 404, cid, None, "not.found", "gone", False)
                )
        return results

    async def lookup_by_external_id(self, source_id: str, value: str) -> Contact | None:
        """The oldest contact carrying the ExternalId, among those the (lagging) index shows."""
        self.requests.append(("lookup", 1))
        horizon = self.clock() - self.lookup_lag_seconds
        found = [
            c
            for c in self.by_external_id(source_id).get(value, [])
            if self.written_at.get(c["id"], 0.0) <= horizon
        ]
        return copy.deepcopy(found[0]) if found else None

    async def get_contact(self, contact_id: str) -> Contact | None:
        self.requests.append(("get", 1))
        contact = self.contacts.get(contact_id)
        return copy.deepcopy(contact) if contact else None

    async def scan_contacts(self) -> AsyncIterator[Contact]:
        self.requests.append(("scan", 1))
        for contact in list(self.contacts.values()):
            yield copy.deepcopy(contact)


def payload_of(contact: Contact) -> dict[str, Any]:
    """The part of a stored contact that came from the CRM payload."""
    return {k: v for k, v in contact.items() if k not in ("id", "externalIds", "division")}
