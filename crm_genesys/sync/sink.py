"""The sink: applies a window's ChangeSet to Genesys through a `ContactsApi`, exactly once.

Contract (`apply_changes`):
- Every change of the ChangeSet ends in exactly one bucket of the `SyncReport`: `created`,
  `updated`, `deleted` (the change's effect holds in Genesys and in state), `stale_skipped`
  (state already holds a newer CRM version), `dead_lettered` (Genesys rejected it permanently;
  recorded in `dead_letters` with its reason) or `failed` (still failing retryably after
  `max_rounds` attempts: the window must be re-run; the re-run sends only what is missing).
- Creates are exactly-once: a create intent is committed before each create request; pending
  intents of earlier (crashed) runs are resolved by ExternalId lookup before anything is created;
  items whose outcome is unknown (dropped connection, timeout) are looked up before any re-create.
- State is written per batch, as results arrive, in one transaction with the batch's intent
  resolutions and dead letters: a crash keeps everything that was done.
- State writes are monotonic per key (enforced in SQL by the store), and a change older than
  state at apply time is skipped as stale.
- An update that finds its contact gone (404) re-creates it; a delete that finds nothing is done.

Assumption: one sync at a time writes a given business key (the `genesys_api` concurrency pool
of the Dagster deployment). Pending intents are resolved whichever run wrote them, so a run that
is alive while another starts could have its in-flight create looked up too early. State writes
stay monotonic regardless: an older window never overwrites a newer one.
"""

from __future__ import annotations

import asyncio
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
    PermissionDeniedError,
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

log = logging.getLogger(__name__)

Op = Literal["create", "update", "delete"]
# A changes frame may come without payloads (deletes need none).
REQUIRED_COLUMNS = tuple(c for c in CHANGE_COLUMNS if c != "payload")
# Failures of a whole request that no retry will cure within this run: stop at once.
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    AuthError,
    ConfigurationError,
    PermissionDeniedError,
)
MAX_ROUND_DELAY = 30.0
_T = TypeVar("_T")


class ChangeSetLike(Protocol):
    """What the sink reads of `contacts.diff.ChangeSet`: its `changes` frame (columns
    `business_key, op, contact_id, crm_id, crm_version, content_hash, payload`)."""

    @property
    def changes(self) -> pd.DataFrame: ...


@dataclass
class SyncReport:
    """What one `apply_changes` call did. Bucket counts add up to the number of changes.

    `already_applied` and `recreated` are informational subsets of the buckets: changes whose
    effect was found already in place (no request sent) and updates that re-created a contact
    deleted in Genesys. `requests` counts the sink's API calls (bulk calls and lookups);
    `client` holds the client's own metrics (requests incl. retries, 429s, ...), when it has any.
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
    rounds: int = 0
    item_retries: int = 0
    bulk_requests: int = 0
    lookups: int = 0
    duration_s: float = 0.0
    failed_keys: list[str] = field(default_factory=list)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    client: dict[str, float | int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.bulk_requests + self.lookups

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
    # A create that may already have happened (unknown outcome): look up before re-creating.
    verify_first: bool = False
    recreated: bool = False
    last_error: str = ""


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
        self.report = SyncReport()
        self.slots = asyncio.Semaphore(max_in_flight)
        self.next_round: list[_Item] = []

    # ------------------------------------------------------------ entities

    def _external_ids(self, key: str) -> list[dict[str, Any]]:
        return [{"externalSource": {"id": self.source_id}, "value": key}]

    def entity(self, item: _Item) -> Contact:
        """The ExternalContact body: the canonical payload + our ExternalId (+ id, division)."""
        body: Contact = json.loads(item.payload) if item.payload else {}
        body["externalIds"] = self._external_ids(item.key)
        if item.op == "update":
            body["id"] = item.contact_id
        if self.division_id is not None:
            body["division"] = {"id": self.division_id}
        if self.schema is not None and "customFields" in body:
            # Custom fields are valid only against the contact schema (and version) they name.
            body["schema"] = dict(self.schema)
        return body

    # ------------------------------------------------------------ api calls

    async def _call(self, make: Callable[[], Awaitable[_T]]) -> _T:
        async with self.slots:
            return await make()

    async def lookup(self, key: str) -> Contact | None:
        self.report.lookups += 1
        return await self._call(lambda: self.api.lookup_by_external_id(self.source_id, key))

    async def lookup_many(self, keys: Sequence[str]) -> dict[str, Contact | BaseException | None]:
        """ExternalId lookups, at most `max_in_flight` at once; errors returned, not raised
        (except the fatal ones)."""

        async def one(key: str) -> tuple[str, Contact | BaseException | None]:
            try:
                return key, await self.lookup(key)
            except FATAL_ERRORS:
                raise
            except Exception as exc:
                return key, exc

        results = await asyncio.gather(*(one(k) for k in keys))
        return dict(results)

    # ------------------------------------------------------------ phase 1: intents

    async def resolve_pending_intents(self, keys: Iterable[str]) -> set[str]:
        """Resolve pending intents of `keys` and of this window; return the keys still unknown
        (lookup failed), which must not be created before a lookup succeeds."""
        if not self.store.has_pending_intents():
            return set()  # the usual case: skip the per-key queries
        pending = self.store.pending_intents(keys)
        seen = {i.id for i in pending}
        pending += [i for i in self.store.pending_intents(window=self.window) if i.id not in seen]
        if not pending:
            return set()
        by_key: dict[str, list[PendingIntent]] = {}
        for intent in pending:
            by_key.setdefault(intent.business_key, []).append(intent)
        unknown: set[str] = set()
        order = sorted(by_key)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            found = await self.lookup_many(chunk)
            writes: list[StateWrite] = []
            resolved: dict[str, str | None] = {}
            for key in chunk:
                result = found[key]
                if isinstance(result, BaseException):
                    unknown.add(key)
                    continue
                if result is not None and result.get("id"):
                    writes.append(_found_state(key, str(result["id"]), by_key[key]))
                    resolved[key] = str(result["id"])
                else:
                    resolved[key] = None
            with self.store.batch(self.window) as tx:
                tx.record_created(writes)
                _resolve(tx, resolved, run_id=None)
            self.report.resolved_intents += len(resolved)
        self.report.unresolved_intents = len(unknown)
        return unknown

    # ------------------------------------------------------------ phase 2: plan

    def plan(self, items: list[_Item], unknown: set[str]) -> list[_Item]:
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
                    live_done.append(
                        StateWrite(item.key, contact_id, item.content_hash, item.crm_version)
                    )
                    self._done(item, already=True)
                    continue
                item.op, item.contact_id = "update", contact_id
            elif st is None and item.origin == "update" and item.contact_id:
                item.op = "update"  # no state row at all: trust the ChangeSet's contact id
            else:
                item.op, item.contact_id = "create", None
                # A pending intent we could not resolve: the contact may exist already.
                item.verify_first = item.key in unknown
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

    def _retry(self, out: _Outcome, item: _Item, reason: str) -> None:
        item.attempts += 1
        item.last_error = reason
        self.report.item_retries += 1
        out.again.append(item)

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

    async def verify(self, items: list[_Item]) -> list[_Item]:
        """Look up creates of unknown outcome. Found: done (state recorded). Missing: create
        now. Lookup failed: retried next round, never created blindly."""
        out = _Outcome()
        to_create: list[_Item] = []
        found = await self.lookup_many([i.key for i in items])
        for item in items:
            result = found[item.key]
            if isinstance(result, BaseException):
                self._retry(out, item, _reason(result))
            elif result is not None and result.get("id"):
                cid = str(result["id"])
                out.created.append(StateWrite(item.key, cid, item.content_hash, item.crm_version))
                out.resolved[item.key] = cid
                out.done.append(item)
            else:
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
                out.created.append(StateWrite(item.key, cid, item.content_hash, item.crm_version))
                out.resolved[item.key] = cid
                out.done.append(item)
            elif r.outcome_unknown or r.success:
                # The contact may exist: the intent stays pending, a lookup decides.
                item.verify_first = True
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
        out = _Outcome()
        results = await self._bulk(out, items, lambda: self.api.bulk_update(self._bodies(items)))
        for item, r in zip(items, results or [], strict=False):
            if r.success:
                cid = str(r.contact_id or item.contact_id)
                out.updated.append(StateWrite(item.key, cid, item.content_hash, item.crm_version))
                out.done.append(item)
            elif _is_not_found(r):
                # Someone deleted the contact in Genesys: the CRM still has it, re-create it.
                item.op, item.contact_id, item.recreated = "create", None, True
                out.again.append(item)
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
    ) -> list[BulkItemResult] | None:
        """One bulk request. `before` runs once the request has its in-flight slot, right before
        it is sent (create intents: committed then, so that only batches actually in flight
        leave intents behind after a crash, and the first request leaves at once).

        A failure of the whole request (raised after the client's own retries) puts every item
        back for the next round; for creates whose request may have been acted on, a lookup
        comes first."""
        self.report.bulk_requests += 1
        async with self.slots:
            if before is not None:
                before()  # a store error propagates: nothing was sent
            try:
                results = await call()
            except FATAL_ERRORS:
                raise
            except Exception as exc:
                unknown = not isinstance(exc, GenesysError) or (
                    isinstance(exc, RetryableError) and exc.outcome_unknown
                )
                for item in items:
                    if item.op == "create":
                        if unknown:
                            item.verify_first = True
                        else:
                            out.resolved[item.key] = None
                    self._retry(out, item, _reason(exc))
                return None
        if len(results) != len(items):
            # The client promises request order; anything else cannot be matched safely.
            log.error("bulk result count %d != request count %d", len(results), len(items))
            for item in items:
                item.verify_first = item.op == "create"
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
            exhausted = [i for i in queue if i.attempts >= self.max_rounds]
            for item in exhausted:
                self.report.failed += 1
                self.report.failed_keys.append(item.key)
                reason = item.last_error or "unknown"
                self.report.failure_reasons[reason] = self.report.failure_reasons.get(reason, 0) + 1
            queue = [i for i in queue if i.attempts < self.max_rounds]
            if not queue:
                break
            if self.report.rounds > 1 and self.round_delay > 0:
                delay = min(MAX_ROUND_DELAY, self.round_delay * 2 ** (self.report.rounds - 2))
                await asyncio.sleep(delay)
            verify = [i for i in queue if i.op == "create" and i.verify_first]
            creates = [i for i in queue if i.op == "create" and not i.verify_first]
            for start in range(0, len(verify), self.batch_size):
                creates += await self.verify(verify[start : start + self.batch_size])
            batches: list[Coroutine[Any, Any, None]] = []
            for op, run in (
                ("create", self.create_batch),
                ("update", self.update_batch),
                ("delete", self.delete_batch),
            ):
                group = creates if op == "create" else [i for i in queue if i.op == op]
                for start in range(0, len(group), self.batch_size):
                    batches.append(run(group[start : start + self.batch_size]))
            try:
                async with asyncio.TaskGroup() as tg:
                    for batch in batches:
                        tg.create_task(batch)
            except BaseExceptionGroup as group:
                # Callers catch what they mean (AuthError, a store error), not a group.
                raise _first_error(group) from group
            queue = self.next_round


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
) -> SyncReport:
    """Apply `changeset` (a `contacts.diff.ChangeSet` or its `changes` frame) to Genesys through
    `api` and record every effect in `store` (see the module docstring for the guarantees).

    `source_id` is the id of our External Source (the ExternalId namespace of business keys);
    `window` labels state rows, intents and dead letters. `batch_size` entities per bulk request;
    at most `max_in_flight` requests at once (the client paces to the rate budget itself).
    Each item is attempted at most `max_rounds` times; rounds after the first wait
    `round_delay * 2**(round-2)` seconds (capped at 30 s). `run_id` names this run's intents.
    `schema` (`{"id", "version"}` of the contact schema) is named by every contact that carries
    `customFields`.
    Raises only what no retry can cure (`AuthError`, `ConfigurationError`) or store errors.
    """
    if batch_size < 1 or max_in_flight < 1 or max_rounds < 1:
        raise ValueError("batch_size, max_in_flight and max_rounds must be >= 1")
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
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    fatal = [e for e in leaves if isinstance(e, FATAL_ERRORS)]
    return (fatal or leaves)[0]


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
