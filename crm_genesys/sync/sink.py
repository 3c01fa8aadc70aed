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
  resolutions, dead letters and the release of its finished keys: a crash keeps everything that
  was done. An intent is committed before the create it announces is sent.
- State writes are monotonic per key (enforced in SQL by the store), and a change older than
  state at apply time is skipped as stale.
- A delete that finds nothing is done.
- Several sinks may run at once (windows, live runs, a full sync): a sink writes a business key
  only while it holds the key's claim (`SyncStateStore.claim_keys`), taken per batch before
  anything is sent for it and released with the batch's outcome; at most
  `BATCHES_PER_SLOT * max_in_flight` batches are in progress at once, in order, so a sink
  holds only the claims of the batches it is about to send (and the first request leaves
  after one claim, not after all of them). Once claimed, the key's change
  is checked again against state as it is now (stale, already applied, or another operation).
  A key another live sink holds waits for a later round (not counted as an attempt for
  `claim_ttl` seconds); still held after that and `max_rounds` more rounds, its change fails
  retryably (`key_claimed`), so accounting stays exact. Pending intents are
  resolved only under a claim, so the in-flight creates of a live sink are never looked up by
  another; claims of a sink that is gone are taken over (`sync.concurrency.holder_gone`).
- Each sink announces itself in the state once a second and paces to the share of the client's
  budget its lane is allotted (`sync.concurrency`): live runs first.
- State reads and writes run in worker threads (`state_threads`), never on the event loop, so
  a slow state database never stalls the requests in flight.
- The window is planned in slices while it is sent, so the first request leaves after the first
  slice's reads, not the whole window's: the newest change of each key is picked over the whole
  frame first (cheap, in memory); then slice by slice (`slice_changes`; the first just big
  enough for the batches in progress, then `SLICE_CHANGES`) the slice's pending intents are
  resolved, its changes planned against state, and its batches started as places among the
  batches in progress free up, while earlier slices' batches are in flight. A key whose
  intents stay unresolved is remembered across slices: its create looks up first whichever
  slice it is in.

Cost: a create, a delete and an update of a whole-contact mapping are one request per batch; a
merged update is two (fetch, then update). Batches run concurrently (at most `max_in_flight`
requests at once), so one batch's fetch overlaps other batches' updates and the pacer keeps the
request rate at the budget: a merged update costs request budget, not latency.

The platform has no conditional update: an edit made by someone else between our fetch and our
update of a contact (milliseconds) is overwritten.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import itertools
import json
import logging
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

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
    KeyClaim,
    PendingIntent,
    SinkPresence,
    StateWrite,
    StoreBatch,
    SyncStateStore,
)
from crm_genesys.sync.concurrency import (
    CLAIM_TTL,
    HEARTBEAT_S,
    WINDOW,
    Lane,
    allotted_share,
    holder_gone,
    identity,
)
from crm_genesys.sync.ownership import Ownership, merge_contact, writable

log = logging.getLogger(__name__)

Op = Literal["create", "update", "delete"]
_OPS: tuple[Op, ...] = ("create", "update", "delete")
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
# Batches in progress (claimed, not yet recorded) per request in flight: enough to keep the
# requests busy while the next batches claim their keys and write their intents, few enough
# that a sink holds the claims of only the batches it is about to send.
BATCHES_PER_SLOT = 2
# Changes planned (state read, pending intents resolved) per slice after the first, which holds
# just the batches in progress: one state read each, small enough that planning the next slice
# takes less time than the batches in progress take to send.
SLICE_CHANGES = 5_000
_T = TypeVar("_T")
_P = ParamSpec("_P")
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
    # When this change first found its key claimed by another live sink (`clock` seconds).
    claim_wait_since: float | None = None
    # The owned fields the payload holds a value in (`Ownership.present`), once computed.
    present: frozenset[str] | None = None
    # Pending create intents of other (ended) runs on this key: a lookup that finds the
    # contact adopts it with their content, and resolves them.
    foreign: list[PendingIntent] = field(default_factory=list)


@dataclass
class _Outcome:
    """What one batch produced: writes for one transaction, and items for the next round."""

    created: list[StateWrite] = field(default_factory=list)
    updated: list[StateWrite] = field(default_factory=list)
    deleted: list[DeleteWrite] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    resolved: dict[str, str | None] = field(default_factory=dict)
    # Other runs' intents resolved by this batch (key -> contact id found, or None).
    adopted: dict[str, str | None] = field(default_factory=dict)
    done: list[_Item] = field(default_factory=list)
    # Done without a write: found applied already when the key was claimed.
    already: list[_Item] = field(default_factory=list)
    stale: list[_Item] = field(default_factory=list)
    dead: list[_Item] = field(default_factory=list)
    again: list[_Item] = field(default_factory=list)

    def finished(self) -> list[str]:
        """Keys whose change needs nothing more from this run (their claims are released)."""
        return [i.key for i in (*self.done, *self.already, *self.stale, *self.dead)]


@dataclass(frozen=True)
class _Unknown:
    """A key whose pending intents could not be resolved yet: its lookup can be trusted from
    `lookup_after` (epoch seconds); `intents` are what a lookup that finds it adopts."""

    lookup_after: float
    intents: list[PendingIntent]


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
        lane: Lane,
        executor: Executor,
        claim_ttl: float,
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
        # Batches in progress: each claims its keys when it enters, releases them when it ends.
        self.ahead = asyncio.Semaphore(BATCHES_PER_SLOT * max_in_flight)
        self.next_round: list[_Item] = []
        self.deferred: list[_Item] = []
        # Keys whose pending intents could not be resolved yet (their creates look up first).
        self.unknown: dict[str, _Unknown] = {}
        # Whether any intent may be pending (probed once; later ones are met under claims).
        self.pending_possible: bool | None = None
        self.executor = executor
        self.identity = identity(run_id, lane)
        self.claim_ttl = claim_ttl
        # Keys this run holds the claim of (it may write them).
        self.held: set[str] = set()
        # The sink's first announcement (`running`): claims wait for it.
        self.announced: asyncio.Future[None] | None = None
        # The share of the client's budget the lanes divide (the pacer's own share at start).
        pacer = getattr(api, "pacer", None)
        self.pacer = pacer if hasattr(pacer, "set_share") else None
        self.total_share = float(self.pacer.share) if self.pacer is not None else 1.0
        # (monotonic time, requests so far): what this run spent over the last minute.
        self.spend: collections.deque[tuple[float, int]] = collections.deque()

    # ------------------------------------------------------------ state, off the loop

    async def db(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """`fn(*args, **kwargs)` (a state read or write) in a worker thread: the event loop,
        and with it every request in flight, never waits for the database."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def gone(self, holder: str, presence: SinkPresence | None) -> bool:
        """Whether the sink `holder` whose claim is in the way is gone (see `holder_gone`)."""
        return holder_gone(
            presence,
            now=dt.datetime.now(dt.UTC),
            host=self.identity.host,
            ttl=self.claim_ttl,
        )

    async def heartbeat(self) -> None:
        """Announce this sink once a second, with what it spent over the last minute, and pace
        to the share of the budget its lane is allotted (`sync.concurrency`). Unable to announce
        itself for half of `claim_ttl`, the sink stops (raises): others may soon take its keys."""
        last = time.monotonic()
        while True:
            await self.sleep(HEARTBEAT_S)
            try:
                await self.announce()
                last = time.monotonic()
            except Exception:
                if time.monotonic() - last > self.claim_ttl / 2:
                    raise
                log.warning("sink %s could not announce itself; trying again", self.run_id)

    async def announce(self) -> None:
        now = time.monotonic()
        self.spend.append((now, self.report.requests))
        while self.spend and self.spend[0][0] < now - 60.0:
            self.spend.popleft()
        first_at, first = self.spend[0]
        elapsed = max(now - first_at, HEARTBEAT_S)
        per_minute = (self.report.requests - first) * 60.0 / elapsed
        sinks = await self.db(self.store.announce_sink, self.identity, spend_per_minute=per_minute)
        if self.pacer is not None:
            share = allotted_share(
                self.identity,
                sinks,
                now=dt.datetime.now(dt.UTC),
                total=self.total_share,
                budget_per_minute=float(self.pacer.budget_per_minute),
            )
            self.pacer.set_share(min(1.0, share))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """While the block runs: the sink is announced, its heartbeat beats. The first
        announcement runs beside the block's first state reads; no key is claimed before it
        is done (`claim_keys`), so other sinks never see claims of an unannounced holder.
        Afterwards its claims are released, it is marked ended, and its pacer gets its whole
        share back."""
        announced = self.announced = asyncio.ensure_future(self.announce())
        beat = asyncio.ensure_future(self.heartbeat())
        main = asyncio.current_task()

        def stop_main(task: asyncio.Future[None]) -> None:
            if main is not None and not task.cancelled() and task.exception() is not None:
                main.cancel()

        beat.add_done_callback(stop_main)
        try:
            yield
            await announced  # a run that claimed nothing must still have announced itself
        except asyncio.CancelledError:
            if beat.done() and not beat.cancelled() and beat.exception() is not None:
                raise RuntimeError("the sink lost its sync state") from beat.exception()
            raise
        finally:
            beat.cancel()
            announced.cancel()
            await asyncio.wait([beat, announced])  # their outcomes were dealt with above
            if not announced.cancelled():
                announced.exception()  # retrieved: it was raised, or another error was
            try:
                # Synchronous: the run is over (or being cancelled), nothing else is in flight.
                self.store.end_sink(self.identity.holder)
            except Exception:  # the claims then die with the heartbeat (CLAIM_TTL)
                log.warning("could not release the claims of sink %s", self.identity.holder)
            if self.pacer is not None:
                self.pacer.set_share(self.total_share)

    async def claim_keys(self, keys: Sequence[str]) -> KeyClaim:
        """`SyncStateStore.claim_keys` for this sink, once it has announced itself."""
        if self.announced is None:
            raise RuntimeError("a sink claims keys only while it runs")
        await self.announced
        return await self.db(self.store.claim_keys, keys, self.run_id, stale=self.gone)

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

    async def resolve_pending_intents(self, keys: Sequence[str], *, of_window: bool) -> None:
        """Resolve pending intents of `keys` (and of this window when `of_window`), each under
        its key's claim: the intents of a sink that is still alive (it holds their keys) are
        never touched. The keys still unknown (lookup failed, or not yet trustworthy) go to
        `self.unknown` with the time their lookup becomes trustworthy and their intents: they
        must not be created before a trustworthy lookup. The claims of `keys` and of the
        unknown keys are kept (the plan is made under them); the others are released once
        resolved."""
        if self.pending_possible is None:
            self.pending_possible = await self.db(self.store.has_pending_intents)
        if not self.pending_possible:
            return  # the usual case: skip the per-key queries

        def read() -> list[PendingIntent]:
            pending = self.store.pending_intents(keys) if keys else []
            if not of_window:
                return pending
            seen = {i.id for i in pending}
            return pending + [
                i for i in self.store.pending_intents(window=self.window) if i.id not in seen
            ]

        pending = await self.db(read)
        if not pending:
            return
        claim = await self.claim_keys(sorted({i.business_key for i in pending}))
        self.held.update(claim.claimed)
        # Read under the claims: what is pending now (the holder may have resolved some).
        by_key = {k: claim.intents[k] for k in claim.claimed if k in claim.intents}
        ours = set(keys)
        letgo = [k for k in claim.claimed if k not in ours and k not in by_key]
        if letgo:
            await self.db(self.store.release_keys, self.run_id, letgo)
            self.held.difference_update(letgo)
        trusted_at = {
            key: max(_epoch(i.created_at) for i in intents) + self.lag
            for key, intents in by_key.items()
        }
        now = self.clock()
        unknown = self.unknown
        later = {k for k, at in trusted_at.items() if at - now > self.max_lag_wait}
        for k in later:
            unknown[k] = _Unknown(trusted_at[k], by_key[k])
        order = sorted(k for k in by_key if k not in later)
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
                    unknown[key] = _Unknown(self.clock(), by_key[key])
                elif result is not None and result.get("id"):
                    candidates[key] = str(result["id"])
                else:
                    resolved[key] = None
                    unknown.pop(key, None)
            kept, undecided = await self._held_elsewhere(candidates)
            for key in undecided:
                unknown[key] = _Unknown(self.clock(), by_key[key])
            for key, contact_id in candidates.items():
                if key in undecided:
                    continue
                resolved[key] = contact_id
                unknown.pop(key, None)
                if key in kept:
                    self.report.duplicates.append(DuplicateContacts(key, kept[key], (contact_id,)))
                else:
                    writes.append(_found_state(key, contact_id, by_key[key]))
            release = [k for k in resolved if k not in ours]

            def commit(
                writes: list[StateWrite] = writes,
                resolved: dict[str, str | None] = resolved,
                release: list[str] = release,
            ) -> None:
                with self.store.batch(self.window) as tx:
                    tx.record_created(writes)
                    _resolve(tx, resolved, run_id=None)
                    tx.release_keys(self.run_id, release)

            await self.db(commit)
            self.held.difference_update(release)
            self.report.resolved_intents += len(resolved)
        self.report.unresolved_intents = len(unknown)

    async def _held_elsewhere(self, found: dict[str, str]) -> tuple[dict[str, str], set[str]]:
        """Of `found` (key -> contact a lookup returned), the keys whose state holds another
        live contact that still exists and carries our ExternalId for the key: key -> that
        contact (two contacts carry the key). A state contact that is gone is no conflict.
        Second: the keys this could not be read for (left undecided, their intents pending)."""
        if not found:
            return {}, set()
        snapshot = await self.db(self.store.snapshot, list(found))
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

    async def plan(self, items: list[_Item], snapshot: pd.DataFrame | None = None) -> list[_Item]:
        """Decide each change's operation against state as it is now (`snapshot` of their
        keys when it has just been read). Returns the work; stale and already-applied changes
        are accounted (and recorded) here. Keys not claimed yet are checked again once claimed
        (`claim`)."""
        rows: pd.DataFrame = (
            snapshot
            if snapshot is not None
            else await self.db(self.store.snapshot, [i.key for i in items])
        )
        state = {
            row.business_key: row
            for row in rows.itertuples(index=False)  # columns: SNAPSHOT_COLUMNS
        }
        out = _Outcome()
        work: list[_Item] = []
        for item in items:
            if self._decide(out, item, state.get(item.key)):
                unknown = self.unknown.get(item.key)
                if item.op == "create" and unknown is not None:
                    # A pending intent we could not resolve: the contact may exist already.
                    item.verify_first = True
                    item.lookup_after = unknown.lookup_after
                    item.foreign = unknown.intents
                work.append(item)
        await self._commit(out)
        return work

    async def plan_slices(
        self, frame: pd.DataFrame, order: Sequence[int], sizes: Iterator[int]
    ) -> AsyncGenerator[list[_Item], None]:
        """The work of `frame`'s rows at `order` (positions), slice by slice (`sizes`): each
        slice's pending intents resolved, then planned, before it is yielded. At least one
        slice, so the window's own pending intents are resolved even when nothing changed."""
        start = 0
        while True:
            stop = start + next(sizes)
            items = await self.db(_items, frame, order[start:stop])
            keys = [i.key for i in items]
            snapshot: pd.DataFrame | None = None
            if self.pending_possible is None:
                # The first slice's state is read while the store is asked whether any intent
                # is pending (it is usually not: then that read is the plan's).
                self.pending_possible, snapshot = await asyncio.gather(
                    self.db(self.store.has_pending_intents), self.db(self.store.snapshot, keys)
                )
            if self.pending_possible:
                await self.resolve_pending_intents(keys, of_window=start == 0)
                snapshot = None  # resolutions write state: read it again
            yield await self.plan(items, snapshot)
            start = stop
            if start >= len(order):
                return

    def _decide(self, out: _Outcome, item: _Item, st: Any) -> bool:
        """Plan `item` against state row `st` (a snapshot row, `StateRow`, or None): True when
        it must be sent (`item.op` and `item.contact_id` set); else it is stale or already
        applied, and `out` holds what to record."""
        if st is not None and int(st.crm_version) > item.crm_version:
            out.stale.append(item)
            return False
        live = st is not None and not bool(st.deleted) and bool(st.contact_id)
        if item.origin == "delete":
            if live:
                item.op, item.contact_id = "delete", str(st.contact_id)
                return True
            # Nothing of ours in Genesys: recording the tombstone's version keeps any older
            # live version from being applied later.
            out.deleted.append(DeleteWrite(item.key, item.crm_version))
            out.already.append(item)
            return False
        if live:
            contact_id = str(st.contact_id)
            if st.content_hash == item.content_hash:
                out.updated.append(self._written(item, contact_id))
                out.already.append(item)
                return False
            item.op, item.contact_id = "update", contact_id
        elif st is None and item.origin == "update" and item.contact_id:
            item.op = "update"  # no state row at all: trust the ChangeSet's contact id
        else:
            item.op, item.contact_id = "create", None
        return True

    # ------------------------------------------------------------ claims

    async def claim(self, out: _Outcome, items: list[_Item]) -> list[_Item]:
        """Claim the keys of `items` this run does not hold yet; return the items it may send
        now. A key another live sink holds waits for the next round. A newly claimed key is
        planned again against state as it is now: a stale or applied change is done (`out`
        records it); one that now needs another operation, or a lookup first (pending intents
        of an ended run), goes to the next round."""
        new = [i for i in items if i.key not in self.held]
        if not new:
            return items
        claim = await self.claim_keys([i.key for i in new])
        self.held.update(claim.claimed)
        fresh = {i.key for i in new}
        ready = [i for i in items if i.key not in fresh]
        for item in new:
            if item.key not in self.held:
                # Another live sink is on the key: waiting for it is no failed attempt for as
                # long as a silent holder would keep it (`claim_ttl`); after that, rounds count.
                now = self.clock()
                if item.claim_wait_since is None:
                    item.claim_wait_since = now
                waited = now - item.claim_wait_since
                self._retry(out, item, "key_claimed", attempt=waited >= self.claim_ttl)
                continue
            was = (item.op, item.contact_id)
            if not self._decide(out, item, claim.state.get(item.key)):
                continue
            intents = claim.intents.get(item.key, [])
            if item.op == "create" and intents and not item.verify_first:
                item.verify_first = True
                item.lookup_after = max(_epoch(i.created_at) for i in intents) + self.lag
                item.foreign = intents
                self._retry(out, item, "pending_intent")
            elif item.op == "delete" or (item.op, item.contact_id) == was:
                ready.append(item)
            else:
                # Progress, not a failure: another sink acted on the key while this one waited
                # for it. It stays claimed, so it is re-planned at most once per claim.
                self._retry(out, item, "replanned", attempt=False)
        return ready

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

    def _retry(self, out: _Outcome, item: _Item, reason: str, *, attempt: bool = True) -> None:
        """`item` goes to the next round; `attempt` counts it toward `max_rounds`."""
        if attempt:
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

    async def _commit(self, out: _Outcome) -> None:
        """One transaction per batch: state, intent resolutions, dead letters and the release
        of the keys that are finished, together (in a worker thread)."""
        finished = [k for k in out.finished() if k in self.held]
        if (
            out.created
            or out.updated
            or out.deleted
            or out.letters
            or out.resolved
            or out.adopted
            or finished
        ):

            def write() -> None:
                with self.store.batch(self.window) as tx:
                    tx.record_created(out.created)
                    tx.record_updated(out.updated)
                    tx.record_deleted(out.deleted)
                    tx.dead_letter(out.letters)
                    _resolve(tx, out.resolved, run_id=self.run_id)
                    _resolve(tx, out.adopted, run_id=None)
                    tx.release_keys(self.run_id, finished)

            await self.db(write)
            self.held.difference_update(finished)
        for item in out.done:
            self._done(item)
        for item in out.already:
            self._done(item, already=True)
        self.report.stale_skipped += len(out.stale)
        self.report.dead_lettered += len(out.dead)
        self._requeue(out.again)

    # ------------------------------------------------------------ phase 3: batches

    async def verify_then_create(self, items: list[_Item]) -> None:
        """Look up `items` once lookups can be trusted, then create what is trustworthily
        absent (in batches, each behind its intents)."""
        out = _Outcome()
        items = await self.claim(out, items)
        await self._commit(out)
        ready = await self.trust(items)
        if not ready:
            return
        to_create = await self.verify(ready)
        for start in range(0, len(to_create), self.batch_size):
            await self._batch(to_create[start : start + self.batch_size], self._create)

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
                if not item.relocate and item.foreign:
                    # Another (ended) run's create landed: the contact holds its content.
                    found_state = _found_state(item.key, cid, item.foreign)
                    out.adopted[item.key] = cid
                    out.resolved[item.key] = cid
                    item.foreign, item.verify_first = [], False
                    if found_state.content_hash == item.content_hash:
                        out.created.append(self._written(item, cid))
                        out.done.append(item)
                    else:
                        out.created.append(found_state)
                        item.op, item.contact_id = "update", cid
                        out.again.append(item)
                elif not item.relocate:
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
                if item.foreign:
                    out.adopted[item.key] = None  # nothing of those creates landed
                    item.foreign = []
                item.verify_first = False
                to_create.append(item)
        await self._commit(out)
        return to_create

    async def _batch(
        self,
        items: list[_Item],
        send: Callable[[_Outcome, list[_Item]], Awaitable[None]],
        *,
        slot_taken: bool = False,
    ) -> None:
        """One batch in progress (at most `BATCHES_PER_SLOT` x `max_in_flight` at once): its keys
        claimed as it starts, `send` for the claimed items, then the outcome committed. Its
        place among the batches in progress (`ahead`) is released at the end; `slot_taken`:
        the caller has taken it already."""
        if not slot_taken:
            await self.ahead.acquire()
        try:
            out = _Outcome()
            claimed = await self.claim(out, items)
            if claimed:
                await send(out, claimed)
            await self._commit(out)
        finally:
            self.ahead.release()

    async def _create(self, out: _Outcome, items: list[_Item]) -> None:
        """Create `items`, their intents written before the request."""

        async def write_intents() -> None:
            await self.db(
                self.store.add_intents,
                [IntentWrite(i.key, i.crm_version, i.content_hash) for i in items],
                run_id=self.run_id,
                window=self.window,
            )

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

    async def _update(self, out: _Outcome, items: list[_Item]) -> None:
        """Update `items`: merged into the contacts as Genesys holds them (fetched first), or
        whole when the CRM owns whole contacts."""
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

    async def _delete(self, out: _Outcome, items: list[_Item]) -> None:
        """Remove `items`; one already gone counts as deleted."""
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

    def _bodies(self, items: list[_Item]) -> list[Contact]:
        return [self.entity(i) for i in items]

    async def _bulk(
        self,
        out: _Outcome,
        items: list[_Item],
        call: Callable[[], Awaitable[list[BulkItemResult]]],
        *,
        before: Callable[[], Awaitable[None]] | None = None,
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
                await before()  # a store error propagates: nothing was sent
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

    def _batches(self, queue: list[_Item]) -> Iterator[tuple[Op | None, list[_Item]]]:
        """`queue` cut into batches: the ones to look up first (op None), then creates,
        updates and deletes."""
        verify = [i for i in queue if i.verify_first]
        for start in range(0, len(verify), self.batch_size):
            yield None, verify[start : start + self.batch_size]
        for op in ("create", "update", "delete"):
            group = [i for i in queue if i.op == op and not i.verify_first]
            for start in range(0, len(group), self.batch_size):
                yield op, group[start : start + self.batch_size]

    def _start(
        self, tg: asyncio.TaskGroup, op: Op | None, items: list[_Item], *, slot_taken: bool
    ) -> None:
        if op is None:
            tg.create_task(self.verify_then_create(items))
        else:
            send = {"create": self._create, "update": self._update, "delete": self._delete}[op]
            tg.create_task(self._batch(items, send, slot_taken=slot_taken))

    async def _round(self, feed: Callable[[asyncio.TaskGroup], Awaitable[None]]) -> None:
        """One round: the batches `feed` starts, until all are done; what they put back is
        `self.next_round`."""
        self.next_round = []
        try:
            async with asyncio.TaskGroup() as tg:
                await feed(tg)
        except BaseExceptionGroup as group:
            # Callers catch what they mean (a Genesys refusal, a store error), not a group.
            raise _first_error(group) from group

    async def run_rounds(self, slices: AsyncGenerator[list[_Item], None]) -> None:
        """The first round sends each slice's work as soon as it is planned, while the next
        slices are planned: a batch starts once it has a place among the batches in progress,
        so planning stays just ahead of sending. Later rounds send what earlier ones put back,
        after a growing delay, until nothing is left or items have had `max_rounds` attempts."""

        async def first(tg: asyncio.TaskGroup) -> None:
            async with aclosing(slices):
                async for work in slices:
                    for op, batch in self._batches(work):
                        if op is not None:
                            await self.ahead.acquire()  # released by the batch
                        self._start(tg, op, batch, slot_taken=op is not None)

        self.report.rounds += 1
        await self._round(first)
        queue = self.next_round
        while queue:
            self.report.rounds += 1
            for item in [i for i in queue if i.attempts >= self.max_rounds]:
                self._fail(item, item.last_error or "unknown")
            queue = [i for i in queue if i.attempts < self.max_rounds]
            if not queue:
                break
            if self.round_delay > 0:
                delay = min(MAX_ROUND_DELAY, self.round_delay * 2 ** (self.report.rounds - 2))
                await self.sleep(delay)

            async def again(tg: asyncio.TaskGroup, queue: list[_Item] = queue) -> None:
                for op, batch in self._batches(queue):
                    self._start(tg, op, batch, slot_taken=False)

            await self._round(again)
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
    lane: Lane = WINDOW,
    state_threads: int | None = None,
    claim_ttl: float = CLAIM_TTL,
    slice_changes: int | None = None,
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
    `run_id` also names the sink's key claims and its row in the state's `sinks`; `lane` says
    how it shares the client's budget with the other sinks (`sync.concurrency.LIVE` goes
    first); a claim held by a sink silent for `claim_ttl` seconds is taken over. State reads
    and writes run in `state_threads` worker threads (None: `store.concurrency`; 0: on the
    event loop, for virtual-time tests).
    The window is planned (its state read, its pending intents resolved) in slices while earlier
    batches are sent: `slice_changes` changes per slice; None: a first slice just large enough
    for the batches in progress (`BATCHES_PER_SLOT * max_in_flight * batch_size`), so that the
    first request leaves early, then slices of `SLICE_CHANGES` (at least the first's size).
    Raises what no retry can cure (`AuthError`, `ConfigurationError`, `PermanentError` such as
    `RequestRejectedError`, with the platform's reason), store errors, and bugs.
    """
    if batch_size < 1 or max_in_flight < 1 or max_rounds < 1:
        raise ValueError("batch_size, max_in_flight and max_rounds must be >= 1")
    if state_threads is None:
        state_threads = store.concurrency
    if state_threads < 0 or claim_ttl <= 0:
        raise ValueError("state_threads must be >= 0 and claim_ttl > 0")
    if slice_changes is not None and slice_changes < 1:
        raise ValueError("slice_changes must be >= 1")
    lag = api.lookup_lag_seconds if lookup_lag is None else lookup_lag
    if lag < 0 or max_lag_wait < 0:
        raise ValueError("lookup_lag and max_lag_wait must be >= 0")
    first_slice = slice_changes or BATCHES_PER_SLOT * max_in_flight * batch_size
    sizes = itertools.chain(
        [first_slice], itertools.repeat(slice_changes or max(SLICE_CHANGES, first_slice))
    )
    started = time.monotonic()
    frame = changeset if isinstance(changeset, pd.DataFrame) else changeset.changes
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"changes frame lacks columns {missing}")
    payloads = frame["payload"] if "payload" in frame.columns else pd.Series([], dtype=object)
    if schema is None and payloads.astype(str).str.contains('"customFields"', regex=False).any():
        raise ValueError("changes carry customFields but no contact schema was given")
    executor: Executor = (
        ThreadPoolExecutor(state_threads, thread_name_prefix="sink-state")
        if state_threads
        else _Inline()
    )
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
        lane=lane,
        executor=executor,
        claim_ttl=claim_ttl,
    )
    try:
        async with run.running():
            order, duplicates = await run.db(_newest, frame)
            run.report.stale_skipped += duplicates
            await run.run_rounds(run.plan_slices(frame, order, sizes))
    finally:
        executor.shutdown(wait=True)
    run.report.duration_s = time.monotonic() - started
    run.report.client = client_metrics(api)
    return run.report


class _Inline(Executor):
    """An executor that runs each call at once, in the caller's thread."""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


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


def _newest(frame: pd.DataFrame) -> tuple[list[int], int]:
    """The positions of the changes to apply, in the order their keys first appear: of several
    changes of one key only the newest (the last of equal versions) is kept; and how many
    were dropped (they count as stale). Raises on an unknown operation, before anything is
    sent."""
    best: dict[str, tuple[int, int]] = {}
    columns = zip(
        frame["business_key"].tolist(),
        frame["op"].tolist(),
        frame["crm_version"].tolist(),
        strict=True,
    )
    for position, (key, op, version) in enumerate(columns):
        if op not in _OPS:
            raise ValueError(f"unknown op {op!r} for key {key!r}")
        name, newer = str(key), int(version)
        seen = best.get(name)
        if seen is None or newer >= seen[0]:
            best[name] = (newer, position)
    return [position for _, position in best.values()], len(frame) - len(best)


def _items(frame: pd.DataFrame, positions: Sequence[int]) -> list[_Item]:
    """Work items from the rows of the changes frame at `positions`."""
    rows = frame.iloc[list(positions)]
    n = len(rows)
    # Plain column lists: several times faster than itertuples.
    payloads = rows["payload"].tolist() if "payload" in rows.columns else [""] * n
    columns = zip(
        rows["business_key"].tolist(),
        rows["op"].tolist(),
        rows["crm_id"].tolist(),
        rows["crm_version"].tolist(),
        rows["content_hash"].tolist(),
        payloads,
        rows["contact_id"].tolist(),
        strict=True,
    )
    return [
        _Item(
            key=str(key),
            origin=op,
            op=op,
            crm_id=None if _missing(crm_id) else str(crm_id),
            crm_version=int(version),
            content_hash="" if _missing(digest) else str(digest),
            payload="" if _missing(payload) else str(payload),
            contact_id=None if _missing(contact_id) else str(contact_id),
        )
        for key, op, crm_id, version, digest, payload, contact_id in columns
    ]


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
