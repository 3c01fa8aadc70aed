"""The full sync: the whole CRM table through the one path (normalize → diff → sink), chunk by
chunk, resumable, in bounded memory; then the mirror of hard deletes.

Contract (`run_full_sync`):
- **Chunks.** The table is read in keyset pages on the mapping's internal id (`id > cursor ORDER
  BY id LIMIT chunk_rows`), each page normalized, diffed against the sync state as it is when the
  page is sent, and sent through `sync.sink.apply_changes` (the same intents, per-key monotonic
  versions and accounting as a window). A key found in several chunks comes out right: each
  chunk's diff and the sink's plan see what the earlier chunks wrote, and older versions are
  stale.
- **Pipeline.** A producer thread reads and normalizes chunk k+1 while chunk k is sent, so local
  work hides behind the rate budget; at most two chunks are held at once (a semaphore of two).
  For a long table (more than `PROCESS_READ_ROWS` rows left) the reading and normalizing run in
  a child process: they are pure Python, and under one GIL they took the CPU the sending needs
  (at 1,000,000 rows the run's process was at 99 % of a core and sent 71-75 % of its budget).
  The child exits with the run, and by itself once the run's process is gone.
- **Resumable.** After each chunk, in one transaction, the state records the keys it saw, the
  cursor and the accumulated accounting (`full_syncs`, `full_sync_keys`). A run killed at any
  point is resumed by the next run from the first chunk not recorded: that chunk is read again
  and its already-sent rows diff as unchanged (no request); pending create intents are resolved
  by ExternalId lookup, as in a window. A chunk whose changes still fail after the sink's retries
  is not recorded: the run fails and the re-run starts at that chunk.
- **Accounting.** Every row read lands in one bucket: `extracted = created + updated + deleted +
  unchanged + stale + quarantined + dead_lettered` (`sync.accounting`), summed over chunks (a
  resumed chunk counts once: the attempt that recorded it).
- **Mirror.** After the last chunk, keys the state holds live that no chunk saw (rows the CRM
  deleted without a tombstone) are deleted from Genesys, through the mass-delete breaker
  (`sync.breakers.judge_deletes`), at the state's version.
- **Cutover.** The full sync's T0 (when its first attempt started) is kept in the state: rows
  modified from T0 on may have been read before their change, so the windows from the one holding
  T0 - lookback on must run after it (the Dagster layer launches them).
- **Dry run.** Nothing is sent and the sync state is unchanged, except the seen-key marks that
  the mirror's count needs, dropped at the end. A key present in several chunks is previewed once
  per chunk (each chunk is diffed against the state as it is).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from crm_genesys.contacts.diff import CHANGE_COLUMNS, diff
from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.normalize import NormalizationResult, normalize
from crm_genesys.crm.errors import MissingColumnsError
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.target import GenesysTarget
from crm_genesys.state.store import FullSyncProgress, LiveRow, SyncStateStore
from crm_genesys.sync.accounting import BUCKETS, account
from crm_genesys.sync.breakers import BreakerTripped, MassDelete, judge_deletes
from crm_genesys.sync.ownership import Ownership
from crm_genesys.sync.preview import Preview, check_target, preview_clears
from crm_genesys.sync.sink import SyncReport, apply_changes
from crm_genesys.sync.window import prepare_writes, record_version_bumps

COUNT_NAMES = ("extracted", *BUCKETS, "failed", "writes", "requests")
MIRROR_PAGE = 5_000
MIRROR_CONFIRM_KEY = "confirm_deletes"


class FullSyncIncomplete(RuntimeError):
    """Changes of a chunk (or of the mirror) still fail after the sink's retries; the chunk is
    not recorded, so the next run resumes there and sends only what is missing."""


@dataclass(frozen=True)
class FullSyncOptions:
    """`chunk_rows` CRM rows per chunk; `mirror` deletes what the CRM no longer has (through the
    breaker: `confirm_deletes` must equal the count when it is over `max_delete_share`);
    `restart` abandons an unfinished full sync instead of resuming it; `dry_run` sends nothing
    and reads at most `max_clear_reads` contacts from Genesys to find fields updates would
    clear."""

    chunk_rows: int = 50_000
    dry_run: bool = False
    mirror: bool = True
    confirm_deletes: int = 0
    max_delete_share: float = 0.05
    restart: bool = False
    max_clear_reads: int = 1_000
    # Read and normalize in a child process (None: when more than `PROCESS_READ_ROWS` rows are
    # left to read and the CRM can be opened again from its URL).
    read_in_process: bool | None = None


# ---------------------------------------------------------------------------- reading


class CrmChunks:
    """The CRM table in keyset pages of at most `chunk_rows` rows, in internal-id order, with the
    columns the mapping reads (denied columns are never read). Each page is its own short query:
    no connection is held across the (long) sending of a chunk."""

    def __init__(self, source: SqlCrmSource, mapping: Mapping, chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        self.source = source
        self.mapping = mapping
        self.chunk_rows = chunk_rows
        self.id_column = mapping.source.internal_id_column
        present = source.columns()
        missing = [c for c in mapping.source_columns() if c not in present]
        if missing:
            uses = mapping.column_locations()
            raise MissingColumnsError(
                mapping.source.table, {c: uses.get(c, []) for c in missing}, present
            )
        self.names = [c for c in present if c in set(mapping.source_columns())]

    def total_rows(self) -> int:
        return self.source.count()

    def rows_after(self, cursor: Any) -> int:
        """Rows whose internal id is after `cursor` (all when None): what is left to read."""
        table = sa.table(self.mapping.source.table, sa.column(self.id_column),
                         schema=self.source.schema)  # fmt: skip
        stmt = sa.select(sa.func.count()).select_from(table)
        if cursor is not None:
            stmt = stmt.where(table.c[self.id_column] > cursor)
        with self.source.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def pages(self, cursor: Any) -> Iterator[tuple[pd.DataFrame, Any]]:
        """(frame, cursor after it) for each page after `cursor`; object-dtype values as the
        driver returns them."""
        table = sa.table(self.mapping.source.table, *[sa.column(n) for n in self.names],
                         schema=self.source.schema)  # fmt: skip
        key = table.c[self.id_column]
        base = sa.select(*[table.c[n] for n in self.names]).order_by(key).limit(self.chunk_rows)
        while True:
            stmt = base if cursor is None else base.where(key > cursor)
            with self.source.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            if not rows:
                return
            frame = pd.DataFrame(rows, columns=self.names, dtype=object)
            cursor = _plain(frame[self.id_column].iloc[-1])
            yield frame, cursor
            if len(rows) < self.chunk_rows:
                return


def _plain(value: Any) -> Any:
    """A cursor value that JSON keeps exactly (ints and strings as they are)."""
    if isinstance(value, int | str):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# A full sync with more rows than this left to read reads them in a child process (`_Reader`):
# below it, reading is a few seconds of CPU and a process's start-up would cost more.
PROCESS_READ_ROWS = 200_000
# How often the reading process checks that the run's process is still there (seconds).
_PARENT_CHECK_S = 1.0


@dataclass(frozen=True)
class _Recipe:
    """What a child process needs to read the same pages: the CRM's URL (with its password:
    it only crosses the pipe to the child, never a log), the table's schema, the mapping, the
    page size and the columns read."""

    url: str
    schema: str | None
    mapping: Mapping
    chunk_rows: int

    @classmethod
    def of(cls, chunks: CrmChunks) -> _Recipe | None:
        """The recipe of `chunks`, or None when its CRM cannot be opened again from its URL (an
        engine handed in, an in-memory database)."""
        source = chunks.source
        if not source.owns_engine:
            return None
        url = sa.make_url(source.url)
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            return None
        return cls(
            url.render_as_string(hide_password=False),
            source.schema,
            chunks.mapping,
            chunks.chunk_rows,
        )

    def key(self) -> tuple[str, str | None, int, str]:
        return (self.url, self.schema, self.chunk_rows, self.mapping.model_dump_json())


# The reading process's open CRM (one per recipe), kept from page to page.
_OPENED: dict[tuple[str, str | None, int, str], CrmChunks] = {}


def _watch_parent(parent: int) -> None:
    """In the reading process: exit once the run's process is gone (killed), rather than live
    on as an orphan holding a CRM connection."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _normalized_page(
    chunks: CrmChunks, cursor: Any
) -> tuple[NormalizationResult, Any, bool] | None:
    """The page of `chunks` after `cursor`, normalized, with the cursor after it and whether it
    was the last; None when nothing is left."""
    page = next(chunks.pages(cursor), None)
    if page is None:
        return None
    frame, after = page
    last = len(frame) < chunks.chunk_rows
    return normalize(frame, chunks.mapping), after, last


def _read_page(recipe: _Recipe, cursor: Any) -> tuple[NormalizationResult, Any, bool] | None:
    """In the reading process: `_normalized_page` of the CRM `recipe` opens (kept open from page
    to page)."""
    chunks = _OPENED.get(recipe.key())
    if chunks is None:
        source = SqlCrmSource.from_mapping(recipe.url, recipe.mapping, schema=recipe.schema)
        chunks = _OPENED[recipe.key()] = CrmChunks(source, recipe.mapping, recipe.chunk_rows)
    return _normalized_page(chunks, cursor)


class _Reader:
    """Pages of the CRM, normalized, one after another: in this process, or, for a long table,
    in a child process, so that reading and normalizing (pure Python, under the GIL) do not take
    the CPU the sending needs. The child holds one page at a time, exits with the run (or when
    the run's process is killed), and raises what reading raises here."""

    def __init__(self, chunks: CrmChunks, cursor: Any, in_process: bool) -> None:
        self.chunks = chunks
        self.cursor = cursor
        self.done = False
        recipe = _Recipe.of(chunks) if in_process else None
        self.recipe = recipe
        self.pool: ProcessPoolExecutor | None = None
        if recipe is not None:
            self.pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )

    @property
    def in_child(self) -> bool:
        return self.pool is not None

    def next(self) -> tuple[NormalizationResult, Any] | None:
        """The next page, normalized, and the cursor after it; None at the end."""
        if self.done:
            return None
        if self.pool is not None and self.recipe is not None:
            got = self.pool.submit(_read_page, self.recipe, self.cursor).result()
        else:
            got = _normalized_page(self.chunks, self.cursor)
        if got is None:
            self.done = True
            return None
        normalized, self.cursor, self.done = got
        return normalized, self.cursor

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Prepared:
    index: int
    normalized: NormalizationResult
    cursor: Any
    keys: list[str]


_END = object()


@dataclass
class _Failed:
    error: BaseException


def _seen_keys(normalized: NormalizationResult) -> list[str]:
    """Every business key a chunk holds (quarantined rows too: the CRM still has them)."""
    keys = normalized.contacts["business_key"].astype(str).tolist()
    if len(normalized.quarantine):
        keys += [str(k) for k in normalized.quarantine["business_key"].dropna() if str(k)]
    return keys


def _produce(
    reader: _Reader,
    first_index: int,
    out: queue.Queue[Any],
    slots: threading.Semaphore,
    stop: threading.Event,
) -> None:
    """Read and normalize chunks into `out`, each only once a slot is free (at most two
    chunks exist at once: the one being sent and this one)."""
    try:
        index = first_index
        while True:
            slots.acquire()
            if stop.is_set():
                return
            page = reader.next()
            if page is None:
                out.put(_END)
                return
            normalized, after = page
            out.put(_Prepared(index, normalized, after, _seen_keys(normalized)))
            index += 1
    except BaseException as exc:  # handed to the consumer, which raises it
        out.put(_Failed(exc))
    finally:
        reader.close()


# ---------------------------------------------------------------------------- progress


@dataclass
class Totals:
    """Accounting summed over chunks (`COUNT_NAMES`); `accounted` is the window identity."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_NAMES, 0))

    @classmethod
    def of(cls, counts: dict[str, int]) -> Totals:
        return cls({name: int(counts.get(name, 0)) for name in COUNT_NAMES})

    def add(self, counts: dict[str, int]) -> None:
        for name in COUNT_NAMES:
            self.counts[name] += int(counts.get(name, 0))

    @property
    def accounted(self) -> bool:
        return self.counts["extracted"] == sum(self.counts[b] for b in BUCKETS)

    def __getitem__(self, name: str) -> int:
        return self.counts[name]


@dataclass(frozen=True)
class Progress:
    """Where a full sync is, for the run's log and metadata."""

    chunk: int
    rows_done: int
    rows_total: int
    requests: int
    elapsed_s: float
    rows_this_run: int
    requests_this_run: int
    totals: dict[str, int]

    @property
    def rows_per_s(self) -> float:
        return self.rows_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def requests_per_min(self) -> float:
        return 60 * self.requests_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        left = max(0, self.rows_total - self.rows_done)
        return left / self.rows_per_s if self.rows_per_s > 0 else None

    def line(self) -> str:
        share = 100 * self.rows_done / self.rows_total if self.rows_total else 100.0
        eta = "unknown" if self.eta_s is None else _duration(self.eta_s)
        return (
            f"full sync chunk {self.chunk}: {self.rows_done:,} of {self.rows_total:,} CRM rows "
            f"({share:.1f} %), {self.totals.get('writes', 0):,} contacts written, "
            f"{self.requests:,} requests; {self.rows_per_s:,.0f} rows/s, "
            f"{self.requests_per_min:,.0f} requests/min; ETA {eta}"
        )

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "chunk": self.chunk,
            "rows_done": self.rows_done,
            "rows_total": self.rows_total,
            "contacts_written": self.totals.get("writes", 0),
            "requests": self.requests,
            "rows_per_s": round(self.rows_per_s, 1),
            "requests_per_min": round(self.requests_per_min, 1),
            "eta_s": round(self.eta_s, 1) if self.eta_s is not None else -1,
        }


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@dataclass
class MirrorReport:
    """The mirror: `candidates` live keys no chunk saw, of `live`; `deleted` sent; the breaker's
    verdict; masked samples of the keys."""

    candidates: int = 0
    live: int = 0
    deleted: int = 0
    failed: int = 0
    verdict: MassDelete | None = None
    samples: list[str] = field(default_factory=list)
    ran: bool = False


@dataclass
class FullSyncResult:
    sync: FullSyncProgress
    totals: Totals
    mirror: MirrorReport
    preview: Preview | None
    resumed_from_chunk: int
    chunks_this_run: int
    duration_s: float
    target: str = ""
    client: dict[str, float | int] = field(default_factory=dict)

    @property
    def started_at(self) -> datetime:
        """T0: the cutover instant."""
        return self.sync.started_at


ProgressCallback = Callable[[Progress], None]


# ---------------------------------------------------------------------------- the run


async def run_full_sync(
    chunks: CrmChunks,
    store: SyncStateStore,
    target: GenesysTarget,
    *,
    run_id: str,
    options: FullSyncOptions,
    on_progress: ProgressCallback | None = None,
) -> FullSyncResult:
    """Run (or resume) the full sync of `chunks` into `target` (see the module docstring).

    Raises `FullSyncIncomplete` when changes still fail after retries, `BreakerTripped` when the
    mirror would delete too much unconfirmed (everything before it is recorded), and what the sink
    raises (`AuthError`, store errors)."""
    started = time.monotonic()
    if options.dry_run:
        sync = store.open_full_sync(run_id, dry_run=True)
    else:
        sync = store.open_full_sync(run_id, restart=options.restart)
    totals = Totals.of(sync.counts)
    preview = Preview() if options.dry_run else None
    label = f"full-sync:{sync.id[:16]}"
    rows_total = chunks.total_rows()
    rows_before = totals["extracted"]
    requests_before = totals["requests"]
    done_chunks = 0
    try:
        async with target.client() as client:
            session = _Session(chunks.mapping, store, client, target, options, label, run_id)
            await session.open()
            slots = threading.Semaphore(2)
            ready: queue.Queue[Any] = queue.Queue()
            stop = threading.Event()
            in_process = options.read_in_process
            if in_process is None:
                in_process = chunks.rows_after(sync.cursor) > PROCESS_READ_ROWS
            reader = _Reader(chunks, sync.cursor, in_process)
            producer = threading.Thread(
                target=_produce,
                args=(reader, sync.chunks + 1, ready, slots, stop),
                name="full-sync-reader",
                daemon=True,  # a killed or interrupted run must not wait for a read to finish
            )
            producer.start()
            try:
                while True:
                    item = await asyncio.to_thread(ready.get)
                    if item is _END:
                        break
                    if isinstance(item, _Failed):
                        raise item.error
                    counts = await session.chunk(item.normalized, preview)
                    totals.add(counts)
                    store.record_full_sync_chunk(
                        sync.id, cursor=item.cursor, counts=totals.counts, keys=item.keys
                    )
                    done_chunks += 1
                    if on_progress is not None:
                        on_progress(
                            Progress(
                                chunk=item.index,
                                rows_done=totals["extracted"],
                                rows_total=rows_total,
                                requests=totals["requests"],
                                elapsed_s=time.monotonic() - started,
                                rows_this_run=totals["extracted"] - rows_before,
                                requests_this_run=totals["requests"] - requests_before,
                                totals=dict(totals.counts),
                            )
                        )
                    del item
                    slots.release()
            finally:
                stop.set()
                slots.release()  # a producer waiting for a slot sees `stop` and ends
                ready.put(_END)  # a reader of `ready` still waiting (cancelled run) returns
            mirror = await session.mirror(sync.id, preview) if options.mirror else MirrorReport()
            totals.counts["requests"] += session.mirror_requests
            client_figures = client.metrics.as_metadata()
        if not options.dry_run:
            store.finish_full_sync(sync.id, totals.counts)
            sync = store.full_sync(sync.id) or sync
    finally:
        if options.dry_run:
            store.drop_full_sync(sync.id)
    return FullSyncResult(
        sync=sync,
        totals=totals,
        mirror=mirror,
        preview=preview,
        resumed_from_chunk=sync.chunks - done_chunks + 1 if not options.dry_run else 1,
        chunks_this_run=done_chunks,
        duration_s=time.monotonic() - started,
        target=target.describe(),
        client=client_figures,
    )


class _Session:
    """What one full-sync run holds while it sends: the client, the External Source, the contact
    schema reference, and the dry run's budget of Genesys reads."""

    def __init__(
        self,
        mapping: Mapping,
        store: SyncStateStore,
        client: GenesysClient,
        target: GenesysTarget,
        options: FullSyncOptions,
        label: str,
        run_id: str,
    ) -> None:
        self.mapping = mapping
        self.store = store
        self.client = client
        self.target = target
        self.options = options
        self.label = label
        self.run_id = run_id
        self.source_id = ""
        self.schema: dict[str, Any] | None = None
        self.reads_left = options.max_clear_reads
        self.checked = False
        self.mirror_requests = 0
        self.ownership = Ownership.from_mapping(mapping)

    async def open(self) -> None:
        if self.options.dry_run:
            return  # a dry run binds, creates and pushes nothing
        self.source_id, self.schema = await prepare_writes(
            self.client, self.target, self.store, self.mapping
        )

    async def chunk(
        self, normalized: NormalizationResult, preview: Preview | None
    ) -> dict[str, int]:
        """Diff one chunk against the state as it is now and send it (or preview it); its
        accounting counts."""
        contacts = normalized.contacts
        changes = diff(contacts, self.store.snapshot(contacts["business_key"].tolist()))
        if preview is not None:
            preview.add(normalized, changes)
            if self.reads_left > 0 and (changes.changes["op"] == "update").any():
                if not self.checked:
                    await check_target(self.client, self.target, self.store)
                    self.checked = True
                self.reads_left -= await preview_clears(
                    self.client, self.mapping, changes.changes, contacts, preview, self.reads_left
                )
            report = SyncReport()
            return {**account(self.label, normalized, changes, report).counts(), "requests": 0}
        record_version_bumps(self.store, changes, self.label)
        report = SyncReport()
        if not changes.changes.empty or self.store.pending_intents(window=self.label):
            report = await apply_changes(
                changes,
                self.client,
                self.store,
                source_id=self.source_id,
                window=self.label,
                batch_size=self.client.settings.batch_size,
                max_in_flight=self.client.settings.max_in_flight,
                schema=self.schema,
                run_id=self.run_id,
                ownership=self.ownership,
                division_id=self.mapping.division,
            )
        summary = account(self.label, normalized, changes, report)
        if summary.failed:
            raise FullSyncIncomplete(
                f"{summary.failed} change(s) of this chunk still fail after retries "
                f"({', '.join(f'{k}: {v}' for k, v in report.failure_reasons.items())}); the "
                "chunk is not recorded: re-run the full sync, it resumes here and sends only "
                "what is missing"
            )
        return {**summary.counts(), "requests": report.requests}

    async def mirror(self, sync_id: str, preview: Preview | None) -> MirrorReport:
        """Delete what the state holds live and no chunk saw, through the breaker."""
        report = MirrorReport(ran=True)
        report.candidates = self.store.count_unseen_live(sync_id)
        report.live = self.store.counts()["contacts_live"]
        report.samples = [r.business_key for r in self.store.unseen_live(sync_id, limit=10)]
        report.verdict = judge_deletes(
            "the mirror (live keys the CRM no longer has)",
            report.candidates,
            report.live,
            max_share=self.options.max_delete_share,
            confirmed=self.options.confirm_deletes,
            samples=report.samples,
            config_key=MIRROR_CONFIRM_KEY,
        )
        if preview is not None:
            preview.add_deletes(report.candidates, report.samples, "gone from the CRM")
            return report
        if not report.verdict.allowed:
            raise BreakerTripped(report.verdict)
        while True:
            page = self.store.unseen_live(sync_id, limit=MIRROR_PAGE)
            if not page:
                break
            result = await apply_changes(
                mirror_deletes(page),
                self.client,
                self.store,
                source_id=self.source_id,
                window=self.label,
                batch_size=self.client.settings.batch_size,
                max_in_flight=self.client.settings.max_in_flight,
                run_id=self.run_id,
                ownership=self.ownership,
            )
            report.deleted += result.deleted
            report.failed += result.failed + result.dead_lettered
            self.mirror_requests += result.requests
            if result.failed or result.dead_lettered:
                raise FullSyncIncomplete(
                    f"the mirror: {result.failed + result.dead_lettered} delete(s) still fail; "
                    "re-run the full sync to finish them"
                )
        return report


def mirror_deletes(rows: list[LiveRow]) -> pd.DataFrame:
    """Delete changes for live state rows, at the state's own version (a key that comes back in
    the CRM later, even with an old version, is created again)."""
    return pd.DataFrame(
        {
            "business_key": [r.business_key for r in rows],
            "op": ["delete"] * len(rows),
            "contact_id": [r.contact_id for r in rows],
            "crm_id": [None] * len(rows),
            "crm_version": [r.crm_version for r in rows],
            "content_hash": [""] * len(rows),
            "payload": [""] * len(rows),
        },
        columns=CHANGE_COLUMNS,
    )


def new_run_id() -> str:
    return uuid.uuid4().hex
