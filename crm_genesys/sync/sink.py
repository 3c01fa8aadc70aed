"""The sink: applies a window's ChangeSet to Genesys through a `ContactsApi`, exactly once.

Contract (`apply_changes`):
- Every change of the ChangeSet ends in exactly one bucket of the `SyncReport`: `created`,
  `updated`, `deleted` (the change's effect holds in Genesys and in state), `stale_skipped`
  (state already holds a newer CRM version), `dead_lettered` (Genesys rejected the item
  permanently inside an accepted request; recorded in `dead_letters` with its reason) or
  `failed` (still failing retryably after `max_rounds` attempts, or waiting for lookups to
  become trustworthy: the window must be re-run; the re-run sends only what is missing).
- Only what the sync owns is written (`sync.ownership`): updates fetch the current contacts
  (`bulk_fetch`), merge the owned fields into them and write the result, so what agents, other
  integrations and Genesys wrote survives. `ownership` mode `contact` skips the fetch.
- Creates are exactly-once: a create intent is committed before each create request; pending
  intents of earlier (crashed) runs are resolved by ExternalId lookup before anything is created;
  items whose outcome is unknown (dropped connection, timeout) are looked up before any re-create.
  Lookups may lag writes (`lookup_lag`): a lookup is made only once it can be trusted, at least
  `lookup_lag` seconds after the write it must see (the intent's commit, the unknown answer);
  the run waits for that when it is at most `max_lag_wait` away, else defers the item (failed,
  intent pending) to a later run. A "not found" is never taken as "absent" any earlier.
- An update whose contact is gone (404: deleted, or merged into another) is looked up by
  ExternalId, once trustworthy, before anything is created: found (a merge survivor), the
  survivor is updated and state learns its id; only a trustworthy miss re-creates the contact.
- Two contacts carrying our ExternalId for one key, when a lookup shows them, are reported
  (`SyncReport.duplicates`); state keeps the one it holds.
- A request refused as a whole (a `PermanentError`: 403, or `RequestRejectedError` for a 400/422
  narrowed to one entity, a 404 on a bulk path, a 409...) raises it, with the platform's status,
  code and message: the window fails with that reason. Only the client's retryable errors are
  retried; any other exception (a bug) propagates with its traceback.
- State is written per batch, as results arrive, in one transaction with the batch's intent
  resolutions and dead letters: a crash keeps everything that was done.
- State writes are monotonic per key (enforced in SQL by the store), and a change older than
  state at apply time is skipped as stale.
- A delete that finds nothing is done.

Cost: a create, a delete and an update of a whole-contact mapping are one request per batch; a
merged update is two (fetch, then update). Batches run concurrently (at most `max_in_flight`
requests at once), so one batch's fetch overlaps other batches' updates and the pacer keeps the
request rate at the budget: a merged update costs request budget, not latency.

Assumption: one sync at a time writes a given business key (the `genesys_api` concurrency pool
of the Dagster deployment). Pending intents are resolved whichever run wrote them, so a run that
is alive while another starts could have its in-flight create looked up too early. State writes
stay monotonic regardless: an older window never overwrites a newer one. The platform has no
conditional update: an edit made between our fetch and our update of a contact (milliseconds)
is overwritten.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import pandas as pd

from crm_genesys.contacts.diff import CHANGE_COLUMNS
from crm_genesys.genesys.errors import (
    AuthError,
    ConfigurationError,
    GenesysError,
    PermanentError,
    RetryableError,
)
from crm_genesys.genesys.types import BulkItemResult, Contact, ContactsApi
from crm_genesys.state.store import (
    DeadLetter,
    DeleteWrite,
    IntentWrite,
    PendingIntent,
    StateWrite,
    StoreBatch,
    SyncStateStore,
)
from crm_genesys.sync.ownership import Ownership, merge_contact, writable

log = logging.getLogger(__name__)

Op = Literal["create", "update", "delete"]
# A changes frame may come without payloads (deletes need none).
REQUIRED_COLUMNS = tuple(c for c in CHANGE_COLUMNS if c != "payload")
# Failures of a whole request that no retry will cure: the window fails with them.
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    AuthError,
    ConfigurationError,
    PermanentError,
)
MAX_ROUND_DELAY = 30.0
# The longest a run waits for lookups to become trustworthy; longer waits defer to a re-run.
MAX_LAG_WAIT = 30.0
_T = TypeVar("_T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class ChangeSetLike(Protocol):
    """What the sink reads of `contacts.diff.ChangeSet`: its `changes` frame (columns
    `business_key, op, contact_id, crm_id, crm_version, content_hash, payload`)."""

    @property
    def changes(self) -> pd.DataFrame: ...


@dataclass(frozen=True)
class DuplicateContacts:
    """Several contacts carry our ExternalId for one business key: state holds `kept`; the
    `others` are the duplicates (to be removed under the mass-delete breaker)."""

    business_key: str
    kept: str
    others: tuple[str, ...]


@dataclass
class SyncReport:
    """What one `apply_changes` call did. Bucket counts add up to the number of changes.

    `already_applied`, `recreated` and `relocated` are informational subsets of the buckets:
    changes whose effect was found already in place (no write sent), updates that re-created a
    contact deleted in Genesys, and updates that found their contact merged into another (state
    now holds the survivor). `deferred` of the failed changes wait for lookups to become
    trustworthy. `requests` counts the sink's API calls (bulk writes, bulk fetches, lookups);
    `client` holds the client's own metrics (requests incl. retries, 429s, ...), when it has any.
    `duplicates` lists keys whose ExternalId two contacts carry (state keeps `kept`).
    """

    created: int = 0
    updated: int = 0
    deleted: int = 0
    dead_lettered: int = 0
    failed: int = 0
    stale_skipped: int = 0
    resolved_intents: int = 0
    unresolved_intents: int = 0
    already_applied: int = 0
    recreated: int = 0
    relocated: int = 0
    deferred: int = 0
    rounds: int = 0
    item_retries: int = 0
    bulk_requests: int = 0
    fetch_requests: int = 0
    lookups: int = 0
    duration_s: float = 0.0
    failed_keys: list[str] = field(default_factory=list)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    duplicates: list[DuplicateContacts] = field(default_factory=list)
    client: dict[str, float | int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.bulk_requests + self.fetch_requests + self.lookups

    @property
    def total(self) -> int:
        """Changes accounted for (every bucket)."""
        return (
            self.created
            + self.updated
            + self.deleted
            + self.dead_lettered
            + self.failed
            + self.stale_skipped
        )

    def as_metadata(self) -> dict[str, float | int]:
        """Flat numbers for Dagster metadata (no keys, no contact data)."""
        data: dict[str, float | int] = {
            k: v for k, v in asdict(self).items() if isinstance(v, int | float)
        }
        data["requests"] = self.requests
        data["duplicates"] = len(self.duplicates)
        data["duration_s"] = round(self.duration_s, 3)
        for reason, count in self.failure_reasons.items():
            data[f"failure:{reason}"] = count
        # The client's keys are already namespaced (`genesys_*`).
        data.update(self.client)
        return data


@dataclass
class _Item:
    """One change on its way: the planned operation may differ from the ChangeSet's `origin`
    (a create whose contact was found becomes an update; an update whose contact vanished
    becomes a create). Counted in the bucket of its origin."""

    key: str
    origin: Op
    op: Op
    crm_id: str | None
    crm_version: int
    content_hash: str
    payload: str
    contact_id: str | None
    attempts: int = 0
    # Look up by ExternalId before writing: a create that may already have happened (unknown
    # outcome), or an update whose contact is gone (`relocate`: deleted or merged).
    verify_first: bool = False
    relocate: bool = False
    # When a lookup can first be trusted to show the write it must see (epoch seconds).
    lookup_after: float = 0.0
    recreated: bool = False
    relocated: bool = False
    last_error: str = ""
    # The owned fields the payload holds a value in (`Ownership.present`), once computed.
    present: frozenset[str] | None = None


@dataclass
class _Outcome:
    """What one batch produced: writes for one transaction, and items for the next round."""

    created: list[StateWrite] = field(default_factory=list)
    updated: list[StateWrite] = field(default_factory=list)
    deleted: list[DeleteWrite] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    resolved: dict[str, str | None] = field(default_factory=dict)
    done: list[_Item] = field(default_factory=list)
    dead: list[_Item] = field(default_factory=list)
    again: list[_Item] = field(default_factory=list)


class _Run:
    """State of one `apply_changes` call."""

    def __init__(
        self,
        api: ContactsApi,
        store: SyncStateStore,
        *,
        source_id: str,
        window: str,
        run_id: str,
        batch_size: int,
        max_in_flight: int,
        division_id: str | None,
        schema: Mapping[str, Any] | None,
        max_rounds: int,
        round_delay: float,
        ownership: Ownership,
        lookup_lag: float,
        max_lag_wait: float,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self.api = api
        self.store = store
        self.source_id = source_id
        self.window = window
        self.run_id = run_id
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.division_id = division_id
        self.schema = dict(schema) if schema else None
        self.max_rounds = max_rounds
        self.round_delay = round_delay
        self.ownership = ownership
        self.lag = lookup_lag
        self.max_lag_wait = max_lag_wait
        self.clock = clock
        self.sleep = sleep
        self.report = SyncReport()
        self.slots = asyncio.Semaphore(max_in_flight)
        self.next_round: list[_Item] = []
        self.deferred: list[_Item] = []

    # ------------------------------------------------------------ entities

    def _external_ids(self, key: str) -> list[dict[str, Any]]:
        return [{"externalSource": {"id": self.source_id}, "value": key}]

    def entity(self, item: _Item) -> Contact:
        """The ExternalContact body: the canonical payload + our ExternalId (+ id, division)."""
        body: Contact = json.loads(item.payload) if item.payload else {}
        if item.present is None:
            item.present = self.ownership.present(body)
        body["externalIds"] = self._external_ids(item.key)
        if item.op == "update":
            body["id"] = item.contact_id
        if self.division_id is not None:
            body["division"] = {"id": self.division_id}
        if self.schema is not None and "customFields" in body:
            # Custom fields are valid only against the contact schema (and version) they name.
            body["schema"] = dict(self.schema)
        return body

    def _written(self, item: _Item, contact_id: str) -> StateWrite:
        """State for `item`'s content, now held by `contact_id`, with the owned fields it holds
        (what a later update without them would clear)."""
        if item.present is None:
            item.present = self.ownership.present(json.loads(item.payload) if item.payload else {})
        return StateWrite(item.key, contact_id, item.content_hash, item.crm_version, item.present)

    def merged(self, item: _Item, current: Contact) -> Contact:
        """The update of `item` written into `current` (the contact as Genesys holds it)."""
        return merge_contact(
            current,
            self.entity(item),
            self.ownership,
            source_id=self.source_id,
            key=item.key,
            schema=self.schema,
        )

    # ------------------------------------------------------------ api calls

    async def _call(self, make: Callable[[], Awaitable[_T]]) -> _T:
        async with self.slots:
            return await make()

    async def lookup(self, key: str) -> Contact | None:
        self.report.lookups += 1
        return await self._call(lambda: self.api.lookup_by_external_id(self.source_id, key))

    async def lookup_many(self, keys: Sequence[str]) -> dict[str, Contact | RetryableError | None]:
        """ExternalId lookups, at most `max_in_flight` at once. Retryable failures are returned
        (the key stays unknown); anything else raises."""

        async def one(key: str) -> tuple[str, Contact | RetryableError | None]:
            try:
                return key, await self.lookup(key)
            except RetryableError as exc:
                return key, exc

        results = await asyncio.gather(*(one(k) for k in keys))
        return dict(results)

    async def trust(self, items: list[_Item]) -> list[_Item]:
        """Wait until lookups about `items` can be trusted; return those that can be looked up
        in this run. Items further away than `max_lag_wait` are deferred to a later run, except
        relocations (their 404 is not recorded anywhere, so a later run could not do better)."""
        now = self.clock()
        ready = [i for i in items if i.relocate or i.lookup_after - now <= self.max_lag_wait]
        later = [i for i in items if not (i.relocate or i.lookup_after - now <= self.max_lag_wait)]
        self.deferred.extend(later)
        if ready:
            wait = max(i.lookup_after for i in ready) - now
            if wait > 0:
                await self.sleep(wait)
        return ready

    def _lookup_after_now(self) -> float:
        return self.clock() + self.lag

    # ------------------------------------------------------------ phase 1: intents

    async def resolve_pending_intents(self, keys: Iterable[str]) -> dict[str, float]:
        """Resolve pending intents of `keys` and of this window. Returns the keys still unknown
        (lookup failed, or not yet trustworthy) with the time their lookup becomes trustworthy:
        they must not be created before a trustworthy lookup."""
        if not self.store.has_pending_intents():
            return {}  # the usual case: skip the per-key queries
        pending = self.store.pending_intents(keys)
        seen = {i.id for i in pending}
        pending += [i for i in self.store.pending_intents(window=self.window) if i.id not in seen]
        if not pending:
            return {}
        by_key: dict[str, list[PendingIntent]] = {}
        for intent in pending:
            by_key.setdefault(intent.business_key, []).append(intent)
        trusted_at = {
            key: max(_epoch(i.created_at) for i in intents) + self.lag
            for key, intents in by_key.items()
        }
        now = self.clock()
        unknown = {k: at for k, at in trusted_at.items() if at - now > self.max_lag_wait}
        order = sorted(k for k in by_key if k not in unknown)
        if order:
            wait = max(trusted_at[k] for k in order) - now
            if wait > 0:
                await self.sleep(wait)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            found = await self.lookup_many(chunk)
            writes: list[StateWrite] = []
            resolved: dict[str, str | None] = {}
            candidates: dict[str, str] = {}
            for key in chunk:
                result = found[key]
                if isinstance(result, RetryableError):
                    unknown[key] = self.clock()
                elif result is not None and result.get("id"):
                    candidates[key] = str(result["id"])
                else:
                    resolved[key] = None
            kept, undecided = await self._held_elsewhere(candidates)
            for key in undecided:
                unknown[key] = self.clock()
            for key, contact_id in candidates.items():
                if key in undecided:
                    continue
                resolved[key] = contact_id
                if key in kept:
                    self.report.duplicates.append(DuplicateContacts(key, kept[key], (contact_id,)))
                else:
                    writes.append(_found_state(key, contact_id, by_key[key]))
            with self.store.batch(self.window) as tx:
                tx.record_created(writes)
                _resolve(tx, resolved, run_id=None)
            self.report.resolved_intents += len(resolved)
        self.report.unresolved_intents = len(unknown)
        return unknown

    async def _held_elsewhere(self, found: dict[str, str]) -> tuple[dict[str, str], set[str]]:
        """Of `found` (key -> contact a lookup returned), the keys whose state holds another
        live contact that still exists and carries our ExternalId for the key: key -> that
        contact (two contacts carry the key). A state contact that is gone is no conflict.
        Second: the keys this could not be read for (left undecided, their intents pending)."""
        if not found:
            return {}, set()
        snapshot = self.store.snapshot(list(found))
        held = {
            str(row.business_key): str(row.contact_id)
            for row in snapshot.itertuples(index=False)
            if not bool(row.deleted)
            and row.contact_id
            and str(row.contact_id) != found[str(row.business_key)]
        }
        if not held:
            return {}, set()
        self.report.fetch_requests += 1
        try:
            results = await self._call(lambda: self.api.bulk_fetch(list(held.values())))
        except RetryableError:
            return {}, set(held)
        kept: dict[str, str] = {}
        undecided: set[str] = set()
        for (key, contact_id), r in zip(held.items(), results, strict=True):
            if r.success and _carries(r.entity, self.source_id, key):
                kept[key] = contact_id
            elif not r.success and not _is_not_found(r):
                undecided.add(key)
        return kept, undecided

    # ------------------------------------------------------------ phase 2: plan

    def plan(self, items: list[_Item], unknown: dict[str, float]) -> list[_Item]:
        """Decide each change's operation against state as it is now. Returns the work; stale
        and already-applied changes are accounted (and recorded) here."""
        snapshot = self.store.snapshot([i.key for i in items])
        state = {
            row.business_key: row
            for row in snapshot.itertuples(index=False)  # columns: SNAPSHOT_COLUMNS
        }
        work: list[_Item] = []
        live_done: list[StateWrite] = []
        deleted_done: list[DeleteWrite] = []
        for item in items:
            st = state.get(item.key)
            if st is not None and int(st.crm_version) > item.crm_version:
                self.report.stale_skipped += 1
                continue
            live = st is not None and not bool(st.deleted) and bool(st.contact_id)
            if item.origin == "delete":
                if live:
                    item.op, item.contact_id = "delete", str(st.contact_id)  # type: ignore[union-attr]
                    work.append(item)
                else:
                    # Nothing of ours in Genesys: recording the tombstone's version keeps any
                    # older live version from being applied later.
                    deleted_done.append(DeleteWrite(item.key, item.crm_version))
                    self._done(item, already=True)
                continue
            if live:
                contact_id = str(st.contact_id)  # type: ignore[union-attr]
                if st.content_hash == item.content_hash:  # type: ignore[union-attr]
                    live_done.append(self._written(item, contact_id))
                    self._done(item, already=True)
                    continue
                item.op, item.contact_id = "update", contact_id
            elif st is None and item.origin == "update" and item.contact_id:
                item.op = "update"  # no state row at all: trust the ChangeSet's contact id
            else:
                item.op, item.contact_id = "create", None
                # A pending intent we could not resolve: the contact may exist already.
                item.verify_first = item.key in unknown
                item.lookup_after = unknown.get(item.key, 0.0)
            work.append(item)
        with self.store.batch(self.window) as tx:
            tx.record_updated(live_done)
            tx.record_deleted(deleted_done)
        return work

    # ------------------------------------------------------------ accounting

    def _done(self, item: _Item, *, already: bool = False) -> None:
        if item.origin == "create":
            self.report.created += 1
        elif item.origin == "update":
            self.report.updated += 1
        else:
            self.report.deleted += 1
        if already:
            self.report.already_applied += 1
        if item.recreated:
            self.report.recreated += 1
        if item.relocated:
            self.report.relocated += 1

    def _fail(self, item: _Item, reason: str) -> None:
        self.report.failed += 1
        self.report.failed_keys.append(item.key)
        self.report.failure_reasons[reason] = self.report.failure_reasons.get(reason, 0) + 1

    def _retry(self, out: _Outcome, item: _Item, reason: str) -> None:
        item.attempts += 1
        item.last_error = reason
        self.report.item_retries += 1
        out.again.append(item)

    def _relocate(self, out: _Outcome, item: _Item) -> None:
        """The update's contact is gone (deleted, or merged into another): find it by
        ExternalId once lookups can be trusted to show what happened before this answer."""
        item.relocate = item.verify_first = True
        item.lookup_after = self._lookup_after_now()
        self._retry(out, item, "not_found")

    def _dead(self, out: _Outcome, item: _Item, r: BulkItemResult) -> None:
        reason = r.error_message or r.error_code or f"HTTP {r.status}"
        out.letters.append(
            DeadLetter(
                business_key=item.key,
                crm_id=item.crm_id,
                crm_version=item.crm_version,
                op=item.op,
                status=r.status,
                code=r.error_code,
                reason=reason,
            )
        )
        out.dead.append(item)

    def _commit(self, out: _Outcome) -> None:
        """One transaction per batch: state, intent resolutions and dead letters together."""
        with self.store.batch(self.window) as tx:
            tx.record_created(out.created)
            tx.record_updated(out.updated)
            tx.record_deleted(out.deleted)
            tx.dead_letter(out.letters)
            _resolve(tx, out.resolved, run_id=self.run_id)
        for item in out.done:
            self._done(item)
        self.report.dead_lettered += len(out.dead)

    # ------------------------------------------------------------ phase 3: batches

    async def verify_then_create(self, items: list[_Item]) -> None:
        """Look up `items` once lookups can be trusted, then create what is trustworthily
        absent (in batches, each behind its intents)."""
        ready = await self.trust(items)
        if not ready:
            return
        to_create = await self.verify(ready)
        for start in range(0, len(to_create), self.batch_size):
            await self.create_batch(to_create[start : start + self.batch_size])

    async def verify(self, items: list[_Item]) -> list[_Item]:
        """Look up creates of unknown outcome and updates whose contact is gone. A create
        found: done (state recorded). An update found on another contact (a merge survivor):
        updated there next round. Missing: create now. Lookup failed: retried next round,
        never created blindly."""
        out = _Outcome()
        to_create: list[_Item] = []
        found = await self.lookup_many([i.key for i in items])
        for item in items:
            result = found[item.key]
            if isinstance(result, RetryableError):
                self._retry(out, item, _reason(result))
            elif result is not None and result.get("id"):
                cid = str(result["id"])
                if not item.relocate:
                    out.created.append(self._written(item, cid))
                    out.resolved[item.key] = cid
                    out.done.append(item)
                elif cid == item.contact_id:
                    # The lookup still shows the contact that answered 404: ask again later.
                    item.lookup_after = self._lookup_after_now()
                    self._retry(out, item, "lookup_stale")
                else:
                    item.op, item.contact_id, item.relocated = "update", cid, True
                    item.relocate = item.verify_first = False
                    out.again.append(item)
            else:
                if item.relocate:
                    # Trustworthily gone: the CRM still has it, so it is created again.
                    item.op, item.contact_id, item.recreated = "create", None, True
                    item.relocate = False
                item.verify_first = False
                to_create.append(item)
        self._commit(out)
        self._requeue(out.again)
        return to_create

    async def create_batch(self, items: list[_Item]) -> None:
        def write_intents() -> None:
            self.store.add_intents(
                [IntentWrite(i.key, i.crm_version, i.content_hash) for i in items],
                run_id=self.run_id,
                window=self.window,
            )

        out = _Outcome()
        results = await self._bulk(
            out, items, lambda: self.api.bulk_add(self._bodies(items)), before=write_intents
        )
        for item, r in zip(items, results or [], strict=False):
            contact_id = r.contact_id or (r.entity or {}).get("id")
            if r.success and contact_id:
                cid = str(contact_id)
                out.created.append(self._written(item, cid))
                out.resolved[item.key] = cid
                out.done.append(item)
            elif r.outcome_unknown or r.success:
                # The contact may exist: the intent stays pending, a lookup decides.
                item.verify_first = True
                item.lookup_after = self._lookup_after_now()
                self._retry(out, item, "outcome_unknown")
            elif r.retryable:
                out.resolved[item.key] = None  # definitely not created
                self._retry(out, item, _result_reason(r))
            else:
                out.resolved[item.key] = None
                self._dead(out, item, r)
        self._commit(out)
        self._requeue(out.again)

    async def update_batch(self, items: list[_Item]) -> None:
        """Update `items`: merged into the contacts as Genesys holds them (fetched first), or
        whole when the CRM owns whole contacts."""
        out = _Outcome()
        send = items
        if self.ownership.merges:
            send = []
            bodies: list[Contact] = []
            ids = [str(i.contact_id) for i in items]
            fetched = await self._bulk(out, items, lambda: self.api.bulk_fetch(ids), fetch=True)
            for item, r in zip(items, fetched or [], strict=False):
                if r.success and r.entity is not None:
                    body = self.merged(item, r.entity)
                    if body == {**writable(r.entity), "id": r.entity.get("id")}:
                        # Genesys holds this already (an earlier run's update landed).
                        cid = str(r.entity.get("id") or item.contact_id)
                        out.updated.append(self._written(item, cid))
                        self.report.already_applied += 1
                        out.done.append(item)
                    else:
                        send.append(item)
                        bodies.append(body)
                elif _is_not_found(r):
                    self._relocate(out, item)
                elif r.outcome_unknown or r.retryable:
                    self._retry(out, item, _result_reason(r))
                else:
                    self._dead(out, item, r)
        else:
            bodies = self._bodies(items)
        results = await self._bulk(out, send, lambda: self.api.bulk_update(bodies)) if send else []
        for item, r in zip(send, results or [], strict=False):
            if r.success:
                cid = str(r.contact_id or item.contact_id)
                out.updated.append(self._written(item, cid))
                out.done.append(item)
            elif _is_not_found(r):
                self._relocate(out, item)
            elif r.outcome_unknown or r.retryable:
                self._retry(out, item, _result_reason(r))  # updates are idempotent
            else:
                self._dead(out, item, r)
        self._commit(out)
        self._requeue(out.again)

    async def delete_batch(self, items: list[_Item]) -> None:
        out = _Outcome()
        ids = [str(i.contact_id) for i in items]
        results = await self._bulk(out, items, lambda: self.api.bulk_remove(ids))
        for item, r in zip(items, results or [], strict=False):
            if r.success or _is_not_found(r):
                out.deleted.append(DeleteWrite(item.key, item.crm_version))
                out.done.append(item)
            elif r.outcome_unknown or r.retryable:
                self._retry(out, item, _result_reason(r))
            else:
                self._dead(out, item, r)
        self._commit(out)
        self._requeue(out.again)

    def _bodies(self, items: list[_Item]) -> list[Contact]:
        return [self.entity(i) for i in items]

    async def _bulk(
        self,
        out: _Outcome,
        items: list[_Item],
        call: Callable[[], Awaitable[list[BulkItemResult]]],
        *,
        before: Callable[[], None] | None = None,
        fetch: bool = False,
    ) -> list[BulkItemResult] | None:
        """One bulk request. `before` runs once the request has its in-flight slot, right before
        it is sent (create intents: committed then, so that only batches actually in flight
        leave intents behind after a crash, and the first request leaves at once).

        A retryable failure of the whole request (raised after the client's own retries) puts
        every item back for the next round; for creates whose request may have been acted on,
        a lookup comes first. A permanent refusal raises (the window fails with its reason;
        intents stay pending, since a split request may have been partly applied); so does
        anything that is not a Genesys error (a bug)."""
        if fetch:
            self.report.fetch_requests += 1
        else:
            self.report.bulk_requests += 1
        async with self.slots:
            if before is not None:
                before()  # a store error propagates: nothing was sent
            try:
                results = await call()
            except RetryableError as exc:
                for item in items:
                    if item.op == "create" and not fetch:
                        if exc.outcome_unknown:
                            item.verify_first = True
                            item.lookup_after = self._lookup_after_now()
                        else:
                            out.resolved[item.key] = None
                    self._retry(out, item, _reason(exc))
                return None
        if len(results) != len(items):
            # The client promises request order; anything else cannot be matched safely.
            log.error("bulk result count %d != request count %d", len(results), len(items))
            for item in items:
                if item.op == "create" and not fetch:
                    item.verify_first = True
                    item.lookup_after = self._lookup_after_now()
                self._retry(out, item, "result_mismatch")
            return None
        return results

    def _requeue(self, items: list[_Item]) -> None:
        self.next_round.extend(items)

    async def run_rounds(self, work: list[_Item]) -> None:
        queue = work
        while queue:
            self.report.rounds += 1
            self.next_round = []
            for item in [i for i in queue if i.attempts >= self.max_rounds]:
                self._fail(item, item.last_error or "unknown")
            queue = [i for i in queue if i.attempts < self.max_rounds]
            if not queue:
                break
            if self.report.rounds > 1 and self.round_delay > 0:
                delay = min(MAX_ROUND_DELAY, self.round_delay * 2 ** (self.report.rounds - 2))
                await self.sleep(delay)
            batches: list[Coroutine[Any, Any, None]] = []
            verify = [i for i in queue if i.verify_first]
            for start in range(0, len(verify), self.batch_size):
                batches.append(self.verify_then_create(verify[start : start + self.batch_size]))
            for op, run in (
                ("create", self.create_batch),
                ("update", self.update_batch),
                ("delete", self.delete_batch),
            ):
                group = [i for i in queue if i.op == op and not i.verify_first]
                for start in range(0, len(group), self.batch_size):
                    batches.append(run(group[start : start + self.batch_size]))
            try:
                async with asyncio.TaskGroup() as tg:
                    for batch in batches:
                        tg.create_task(batch)
            except BaseExceptionGroup as group:
                # Callers catch what they mean (a Genesys refusal, a store error), not a group.
                raise _first_error(group) from group
            queue = self.next_round
        for item in self.deferred:
            self._fail(item, "lookup_lag")
        self.report.deferred = len(self.deferred)


async def apply_changes(
    changeset: ChangeSetLike | pd.DataFrame,
    api: ContactsApi,
    store: SyncStateStore,
    *,
    source_id: str,
    window: str,
    batch_size: int = 100,
    max_in_flight: int = 8,
    division_id: str | None = None,
    schema: Mapping[str, Any] | None = None,
    max_rounds: int = 4,
    round_delay: float = 1.0,
    run_id: str | None = None,
    ownership: Ownership | None = None,
    lookup_lag: float | None = None,
    max_lag_wait: float = MAX_LAG_WAIT,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
) -> SyncReport:
    """Apply `changeset` (a `contacts.diff.ChangeSet` or its `changes` frame) to Genesys through
    `api` and record every effect in `store` (see the module docstring for the guarantees).

    `source_id` is the id of our External Source (the ExternalId namespace of business keys);
    `window` labels state rows, intents and dead letters. `batch_size` entities per bulk request;
    at most `max_in_flight` requests at once (the client paces to the rate budget itself).
    Each item is attempted at most `max_rounds` times; rounds after the first wait
    `round_delay * 2**(round-2)` seconds (capped at 30 s). `run_id` names this run's intents.
    `schema` (`{"id", "version"}` of the contact schema) is named by every contact that carries
    `customFields`. `ownership` says what the sync owns (`Ownership.from_mapping(mapping)`);
    None owns every field a mapping can name and every custom field of `schema`, merged.
    `lookup_lag` (seconds; default: the API's `lookup_lag_seconds`) is how long lookups may lag
    writes; waits longer than `max_lag_wait` are deferred to a re-run. `clock` (epoch seconds,
    the clock intents are stamped with) and `sleep` are injectable for tests.
    Raises what no retry can cure (`AuthError`, `ConfigurationError`, `PermanentError` such as
    `RequestRejectedError`, with the platform's reason), store errors, and bugs.
    """
    if batch_size < 1 or max_in_flight < 1 or max_rounds < 1:
        raise ValueError("batch_size, max_in_flight and max_rounds must be >= 1")
    lag = api.lookup_lag_seconds if lookup_lag is None else lookup_lag
    if lag < 0 or max_lag_wait < 0:
        raise ValueError("lookup_lag and max_lag_wait must be >= 0")
    started = time.monotonic()
    frame = changeset if isinstance(changeset, pd.DataFrame) else changeset.changes
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"changes frame lacks columns {missing}")
    payloads = frame["payload"] if "payload" in frame.columns else pd.Series([], dtype=object)
    if schema is None and payloads.astype(str).str.contains('"customFields"', regex=False).any():
        raise ValueError("changes carry customFields but no contact schema was given")
    run = _Run(
        api,
        store,
        source_id=source_id,
        window=window,
        run_id=run_id or uuid.uuid4().hex,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        division_id=division_id,
        schema=schema,
        max_rounds=max_rounds,
        round_delay=round_delay,
        ownership=ownership or Ownership(),
        lookup_lag=lag,
        max_lag_wait=max_lag_wait,
        clock=clock,
        sleep=sleep,
    )
    items, duplicates = _items(frame)
    run.report.stale_skipped += duplicates
    unknown = await run.resolve_pending_intents([i.key for i in items])
    work = run.plan(items, unknown)
    await run.run_rounds(work)
    run.report.duration_s = time.monotonic() - started
    run.report.client = client_metrics(api)
    return run.report


def client_metrics(api: object) -> dict[str, float | int]:
    """The client's counters if it exposes any (`metrics` with `as_metadata()` like
    `genesys.metrics.ClientMetrics`, a mapping or a dataclass, or a method returning one);
    an empty dict otherwise."""
    metrics: Any = getattr(api, "metrics", None)
    if callable(metrics):
        metrics = metrics()
    if metrics is None:
        return {}
    if hasattr(metrics, "as_metadata"):
        metrics = metrics.as_metadata()
    elif hasattr(metrics, "as_dict"):
        metrics = metrics.as_dict()
    elif hasattr(metrics, "__dataclass_fields__"):
        metrics = asdict(metrics)
    if not isinstance(metrics, dict):
        return {}
    return {
        str(k): v
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _items(frame: pd.DataFrame) -> tuple[list[_Item], int]:
    """Work items from the changes frame; of several changes of one key only the newest is kept
    (the others count as stale)."""
    best: dict[str, _Item] = {}
    n = len(frame)
    # Plain column lists: several times faster than itertuples for windows of 100k rows.
    payloads = frame["payload"].tolist() if "payload" in frame.columns else [""] * n
    columns = zip(
        frame["business_key"].tolist(),
        frame["op"].tolist(),
        frame["crm_id"].tolist(),
        frame["crm_version"].tolist(),
        frame["content_hash"].tolist(),
        payloads,
        frame["contact_id"].tolist(),
        strict=True,
    )
    for key, op, crm_id, version, digest, payload, contact_id in columns:
        if op not in ("create", "update", "delete"):
            raise ValueError(f"unknown op {op!r} for key {key!r}")
        item = _Item(
            key=str(key),
            origin=op,
            op=op,
            crm_id=None if _missing(crm_id) else str(crm_id),
            crm_version=int(version),
            content_hash="" if _missing(digest) else str(digest),
            payload="" if _missing(payload) else str(payload),
            contact_id=None if _missing(contact_id) else str(contact_id),
        )
        seen = best.get(item.key)
        if seen is None or item.crm_version >= seen.crm_version:
            best[item.key] = item
    return list(best.values()), n - len(best)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def _found_state(key: str, contact_id: str, intents: list[PendingIntent]) -> StateWrite:
    """State for a contact found by a pending intent's lookup. With one intent (or several of
    the same content) the contact holds that content; otherwise which attempt landed is unknown,
    so the hash is left empty (the next diff sends an update) with the oldest version."""
    hashes = {i.content_hash for i in intents}
    if len(hashes) == 1:
        newest = max(intents, key=lambda i: i.crm_version)
        return StateWrite(key, contact_id, newest.content_hash, newest.crm_version)
    oldest = min(intents, key=lambda i: i.crm_version)
    return StateWrite(key, contact_id, "", oldest.crm_version)


def _resolve(tx: StoreBatch, resolved: dict[str, str | None], *, run_id: str | None) -> None:
    if resolved:
        ids = {k: v for k, v in resolved.items() if v is not None}
        tx.resolve_intents(list(resolved), run_id=run_id, contact_ids=ids)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to raise for a failed round: a bug (not a Genesys error) first, so that
    it surfaces with its traceback; then a refusal no retry cures; else the first one."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    bugs = [e for e in leaves if not isinstance(e, GenesysError)]
    fatal = [e for e in leaves if isinstance(e, FATAL_ERRORS)]
    return (bugs or fatal or leaves)[0]


def _epoch(when: dt.datetime) -> float:
    """Epoch seconds of a store timestamp (naive ones are UTC: SQLite keeps no zone)."""
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _carries(contact: Contact | None, source_id: str, key: str) -> bool:
    """Whether `contact` carries our ExternalId for `key`."""
    for ext in (contact or {}).get("externalIds") or []:
        source = ext.get("externalSource") if isinstance(ext, Mapping) else None
        if isinstance(source, Mapping) and (source.get("id"), ext.get("value")) == (
            source_id,
            key,
        ):
            return True
    return False


def _is_not_found(r: BulkItemResult) -> bool:
    return r.status == 404 or r.error_code in ("not.found", "resource.not.found")


def _result_reason(r: BulkItemResult) -> str:
    if r.outcome_unknown:
        return "outcome_unknown"
    return r.error_code or f"http_{r.status}"


def _reason(exc: BaseException) -> str:
    """A short, secret-free label for an exception: its class and status, never its text
    (which might quote a request)."""
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}" + (f"_{status}" if status else "")
