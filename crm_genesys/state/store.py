"""The sync-state store: what Genesys holds from us, per business key, and the sink's journals.

SQLAlchemy Core 2.x on SQLite (default; WAL journal and a busy timeout so that a reader never
blocks the writer and concurrent writers wait instead of failing) or PostgreSQL.

Tables
- `contact_state`: one row per business key: the Genesys contact id, the hash of the content we
  sent, the CRM version it came from, whether it is deleted, when and by which window.
- `create_intents`: written and committed BEFORE a create request; resolved once its fate is
  known. A pending intent after a crash means "a contact with this ExternalId may exist": the next
  run looks it up before creating again (exactly-once creates).
- `dead_letters`: items Genesys rejected permanently, with the reason and the CRM metadata.
- `sinks`: every sink (`sync.sink.apply_changes` call) that runs or ran lately: who it is (run
  id, lane and priority, host and process), when it was last seen (a heartbeat each second) and
  what it spends of the rate budget. The lanes share the budget by it (`sync.lanes`), and its
  heartbeat tells whether a claim's holder is still alive.
- `key_claims`: the business keys a sink is writing right now, one holder per key. A sink claims
  the keys of a batch before it sends anything for them and releases them in the transaction
  that records the batch's outcome; a key held by another live sink is left for later.
- `bindings`: what the state was built against (the Genesys org, the window length); a run
  against anything else is refused (`BindingMismatch`), so one org's state never drives another.
- `window_leases`: the run that is syncing a window right now (one at a time per window).
- `full_syncs`: one row per full sync: its start instant T0 (the cutover), how far it got (the
  internal id after which the next chunk starts), its accumulated accounting, its status.
- `full_sync_keys`: the business keys a full sync has seen in the CRM (the mirror's evidence:
  a live state key that no chunk marked is gone from the CRM). Kept on disk, not in memory.

Monotonic writes: a `contact_state` row is only overwritten by an equal or newer `crm_version`.
The guard is part of the SQL statement itself (`ON CONFLICT ... DO UPDATE ... WHERE`), so two
runs writing the same key concurrently can never leave the older version behind.

Lock order: every write touches its rows in key order, so concurrent runs writing overlapping
keys wait for each other on PostgreSQL instead of deadlocking (which aborts one of them).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from crm_genesys.contacts.diff import SNAPSHOT_COLUMNS

# Bound parameters per IN list: well under SQLite's 32766 and PostgreSQL's 65535 limits.
IN_CHUNK = 5_000
# Rows per executemany: keeps a batch's parameter list small in memory.
WRITE_CHUNK = 5_000
# Keys per multi-row claim INSERT (3 parameters each).
CLAIM_CHUNK = 1_000
# A server store's connections: up to MAX_CONNECTIONS at once (a sink's state threads, each
# waiting on a round trip), IDLE_CONNECTIONS of them kept open between bursts.
MAX_CONNECTIONS = 32
IDLE_CONNECTIONS = 8
# SQLite has one writer at a time: more state threads than this only interleave on its lock.
SQLITE_CONCURRENCY = 8

INTENT_COLUMNS = [
    "id",
    "business_key",
    "crm_version",
    "content_hash",
    "run_id",
    "window",
    "created_at",
    "status",
]
DEAD_LETTER_COLUMNS = [
    "id",
    "business_key",
    "crm_id",
    "crm_version",
    "op",
    "status",
    "code",
    "reason",
    "window",
    "created_at",
]

metadata = sa.MetaData()

contact_state = sa.Table(
    "contact_state",
    metadata,
    sa.Column("business_key", sa.String(255), primary_key=True),
    sa.Column("contact_id", sa.String(64), nullable=True),
    sa.Column("content_hash", sa.String(128), nullable=False, default=""),
    sa.Column("crm_version", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    # `window` is an SQL keyword (window functions): always quoted.
    sa.Column("window", sa.String(64), nullable=True, quote=True),
    # The owned fields the content we sent holds a value in, comma-separated (`firstName,
    # address.city`): what an update without them would clear. NULL: not known.
    sa.Column("owned_fields", sa.Text, nullable=True),
)

create_intents = sa.Table(
    "create_intents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("business_key", sa.String(255), nullable=False),
    sa.Column("crm_version", sa.BigInteger, nullable=False),
    sa.Column("content_hash", sa.String(128), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("window", sa.String(64), nullable=True, quote=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("contact_id", sa.String(64), nullable=True),
    sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    # One intent per key and run: a retried create in the same run re-arms the same row.
    sa.UniqueConstraint("run_id", "business_key", name="uq_create_intents_run_key"),
    sa.Index("ix_create_intents_status_key", "status", "business_key"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("business_key", sa.String(255), nullable=False),
    sa.Column("crm_id", sa.String(255), nullable=True),
    sa.Column("crm_version", sa.BigInteger, nullable=False),
    sa.Column("op", sa.String(16), nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("code", sa.String(255), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("window", sa.String(64), nullable=True, quote=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The mapping the rejected content was built with (`mapping_hash`): a letter is due again
    # when the mapping changes. NULL until the window's run stamps it.
    sa.Column("mapping_hash", sa.String(64), nullable=True),
    # A person asked for the letter to be retried (the dead-letter job); cleared once tried.
    sa.Column("retry_requested_at", sa.DateTime(timezone=True), nullable=True),
    # A re-run of a window that fails the same way again refreshes the letter, not duplicates it.
    sa.UniqueConstraint("business_key", "crm_version", "op", name="uq_dead_letters_key_version_op"),
    sa.Index("ix_dead_letters_window", "window"),
)

bindings = sa.Table(
    "bindings",
    metadata,
    # What the state is bound to (`genesys_org`, `window_length`): its first value, for good.
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
)

sinks = sa.Table(
    "sinks",
    metadata,
    # One row per sink: its holder id is the run id that names its intents and claims.
    sa.Column("holder", sa.String(64), primary_key=True),
    sa.Column("lane", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("pid_started", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    # The heartbeat: refreshed about once a second while the sink runs.
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    # Requests per minute it sent over the last minute (what the lanes share out).
    sa.Column("spend_per_minute", sa.Float, nullable=False, default=0.0),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
)

key_claims = sa.Table(
    "key_claims",
    metadata,
    # At most one sink writes a key at a time: the row is the claim, its holder a sink's id.
    sa.Column("business_key", sa.String(255), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_key_claims_holder", "holder"),
)

window_leases = sa.Table(
    "window_leases",
    metadata,
    # At most one run syncs a window at a time: the row is the lock, its holder a run id.
    sa.Column("window", sa.String(64), primary_key=True, quote=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    # When that process started (clock ticks since boot): a reused pid is not the holder.
    sa.Column("pid_started", sa.BigInteger, nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
)


full_syncs = sa.Table(
    "full_syncs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    # T0: when the first attempt started; the windows from the one holding T0 - lookback on
    # must run after it (rows modified while it read may have been read before their change).
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # JSON of the internal id of the last row of the last completed chunk (null: none yet).
    sa.Column("cursor", sa.Text, nullable=True),
    sa.Column("chunks", sa.Integer, nullable=False, default=0),
    # JSON of the accumulated accounting of the completed chunks.
    sa.Column("counts", sa.Text, nullable=False, default="{}"),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_full_syncs_status", "status"),
)

full_sync_keys = sa.Table(
    "full_sync_keys",
    metadata,
    sa.Column("sync_id", sa.String(64), primary_key=True),
    sa.Column("business_key", sa.String(255), primary_key=True),
)

FULL_SYNC_RUNNING = "running"
FULL_SYNC_DONE = "done"
FULL_SYNC_ABANDONED = "abandoned"
FULL_SYNC_DRY_RUN = "dry_run"


@dataclass(frozen=True)
class FullSyncProgress:
    """A full sync as the state records it: `cursor` is the internal id after which the next
    chunk starts (None: from the beginning); `counts` the accounting of completed chunks."""

    id: str
    started_at: dt.datetime
    status: str
    cursor: Any
    chunks: int
    counts: dict[str, int]
    run_id: str | None
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class LiveRow:
    """A key the state holds live: its contact id and CRM version."""

    business_key: str
    contact_id: str
    crm_version: int


@dataclass(frozen=True)
class StateWrite:
    """One live contact to record: the content `content_hash` of CRM version `crm_version` is
    held by Genesys contact `contact_id`."""

    business_key: str
    contact_id: str
    content_hash: str
    crm_version: int
    # The owned fields that content holds (`Ownership.present`); None keeps what state knows.
    owned_fields: frozenset[str] | None = None


@dataclass(frozen=True)
class DeleteWrite:
    """One deletion to record: the key's contact is gone as of CRM version `crm_version`."""

    business_key: str
    crm_version: int


@dataclass(frozen=True)
class IntentWrite:
    """A create about to be sent: the content and CRM version that the contact will hold."""

    business_key: str
    crm_version: int
    content_hash: str


_W = TypeVar("_W", StateWrite, DeleteWrite)


@dataclass(frozen=True)
class PendingIntent:
    """A create whose outcome was never recorded (a crashed or interrupted run)."""

    id: int
    business_key: str
    crm_version: int
    content_hash: str
    run_id: str
    window: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class DeadLetter:
    """An item Genesys rejected permanently (`retryable: false`), with the CRM metadata needed
    to find and fix the source record."""

    business_key: str
    crm_id: str | None
    crm_version: int
    op: str
    status: int | None
    code: str | None
    reason: str | None


class BindingMismatch(RuntimeError):
    """The state was built against something else than this run (another org, another window
    length). `held` is what the state is bound to, `given` what the run brought."""

    def __init__(self, name: str, held_label: str, given_label: str) -> None:
        self.name = name
        self.held = held_label
        self.given = given_label
        super().__init__(f"{name}: the sync state is bound to {held_label}, not {given_label}")


@dataclass(frozen=True)
class WindowLease:
    """Who is syncing a window: a run id, on `host` in process `pid` (started at `pid_started`
    ticks since boot), since `acquired_at`."""

    window: str
    holder: str
    host: str
    pid: int
    pid_started: int
    acquired_at: dt.datetime


@dataclass(frozen=True)
class SinkIdentity:
    """Who a sink is: `holder` (the run id that names its intents and key claims), its `lane`
    and the lane's `priority` (higher goes first), and the process it runs in (`pid` started at
    `pid_started` clock ticks since boot, on `host`)."""

    holder: str
    lane: str
    priority: int
    host: str
    pid: int
    pid_started: int


@dataclass(frozen=True)
class SinkPresence:
    """A row of `sinks`: a sink, when it started, when it was last seen (its heartbeat), what
    it spent per minute over the last minute, and when it ended (None while it runs)."""

    holder: str
    lane: str
    priority: int
    host: str
    pid: int
    pid_started: int
    started_at: dt.datetime
    seen_at: dt.datetime
    spend_per_minute: float
    ended_at: dt.datetime | None


@dataclass(frozen=True)
class StateRow:
    """One `contact_state` row as the sink plans with it (`SNAPSHOT_COLUMNS`)."""

    business_key: str
    contact_id: str | None
    content_hash: str
    crm_version: int
    deleted: bool


@dataclass(frozen=True)
class KeyClaim:
    """What `SyncStateStore.claim_keys` got. `claimed`: the keys the claimant holds now (it may
    write them), with `state` (their `contact_state` rows, read after the claim; a key without
    a row is absent) and `intents` (the pending create intents on them, any run's, oldest first).
    `held`: the keys another live sink holds (key -> its holder); they must not be written."""

    claimed: list[str]
    held: dict[str, str]
    state: dict[str, StateRow]
    intents: dict[str, list[PendingIntent]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers do not block the writer; busy_timeout: concurrent writers wait (30 s) instead
    # of failing with "database is locked"; synchronous=NORMAL is durable with WAL at commit
    # boundaries against process crashes (the failure mode the sink's intents are built for).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class StoreBatch:
    """The store's writes bound to one open transaction (see `SyncStateStore.batch`).

    Everything done through one `StoreBatch` commits together or not at all.
    """

    def __init__(self, store: SyncStateStore, conn: Connection, window: str | None) -> None:
        self._store = store
        self._conn = conn
        self._window = window

    def record_created(self, rows: Iterable[StateWrite]) -> None:
        """Record live contacts (a create succeeded or was found by ExternalId lookup)."""
        self._store._upsert_live(self._conn, list(rows), self._window)

    def record_updated(self, rows: Iterable[StateWrite]) -> None:
        """Record updated contacts: same monotonic upsert as creates (the id may be new when an
        update found its contact gone and re-created it)."""
        self._store._upsert_live(self._conn, list(rows), self._window)

    def record_deleted(self, rows: Iterable[DeleteWrite]) -> None:
        """Record deletions (a tombstone was applied, or Genesys no longer had the contact)."""
        self._store._upsert_deleted(self._conn, list(rows), self._window)

    def bump_versions(self, frame: pd.DataFrame) -> None:
        """Raise `crm_version` of existing rows (never lower it); see `SyncStateStore`."""
        self._store._bump(self._conn, frame)

    def add_intents(self, rows: Iterable[IntentWrite], *, run_id: str) -> None:
        self._store._add_intents(self._conn, list(rows), run_id, self._window)

    def resolve_intents(
        self,
        keys: Iterable[str],
        *,
        run_id: str | None = None,
        contact_ids: dict[str, str] | None = None,
    ) -> None:
        self._store._resolve_intents(self._conn, list(keys), run_id, contact_ids)

    def dead_letter(self, letters: Iterable[DeadLetter]) -> None:
        self._store._dead_letter(self._conn, list(letters), self._window)

    def release_keys(self, holder: str, keys: Iterable[str] | None = None) -> None:
        """Give back `holder`'s claims on `keys` (all of them when None)."""
        stmt = key_claims.delete().where(key_claims.c.holder == holder)
        if keys is None:
            self._conn.execute(stmt)
            return
        for chunk in _chunks(sorted(set(keys)), IN_CHUNK):
            self._conn.execute(stmt.where(key_claims.c.business_key.in_(list(chunk))))


class SyncStateStore:
    """The sync-state store at SQLAlchemy URL `url` (see the module docstring).

    Thread-safe as SQLAlchemy engines are; every public write runs in its own transaction, and
    `batch()` groups several writes into one.
    """

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine if engine is not None else self._make_engine(url)
        self.dialect = self.engine.dialect.name

    @staticmethod
    def _make_engine(url: str) -> Engine:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_on_connect)
            return engine
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=IDLE_CONNECTIONS,
            max_overflow=MAX_CONNECTIONS - IDLE_CONNECTIONS,
        )

    @property
    def concurrency(self) -> int:
        """How many state calls may usefully run at once (a sink's state threads): a server
        store's connections, each waiting on its own round trip (a sink's batches in progress
        each make one state call at a time); SQLite's single writer gains nothing beyond a
        few."""
        return SQLITE_CONCURRENCY if self.dialect == "sqlite" else MAX_CONNECTIONS

    def __repr__(self) -> str:
        return f"SyncStateStore({self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The store's URL as it may be shown: the password, if any, masked."""
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        """Close pooled connections (end of a run, or before a process fork)."""
        self.engine.dispose()

    def __enter__(self) -> SyncStateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    # ---------------------------------------------------------------- schema

    def create_all(self) -> None:
        """Create the tables and indexes that do not exist yet; safe to call any number of times
        (and concurrently: a lost creation race is ignored)."""
        # A lost race means another process created an object between our check and our CREATE;
        # each loss is a different object, so there are at most as many losses as objects.
        objects = sum(1 + len(table.indexes) for table in metadata.tables.values())
        for attempt in range(objects + 1):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                break
            except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
                if attempt == objects:
                    raise
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added to a table after a store was created (nullable, so no backfill)."""
        for table in metadata.tables.values():
            held = {c["name"] for c in sa.inspect(self.engine).get_columns(table.name)}
            for column in table.columns:
                if column.name in held:
                    continue
                assert column.nullable, f"{table.name}.{column.name} cannot be added later"
                kind = column.type.compile(dialect=self.engine.dialect)
                ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"
                try:
                    with self.engine.begin() as conn:
                        conn.exec_driver_sql(ddl)
                except (sa.exc.OperationalError, sa.exc.ProgrammingError):
                    # Another process added it first.
                    if column.name not in {
                        c["name"] for c in sa.inspect(self.engine).get_columns(table.name)
                    }:
                        raise

    # ---------------------------------------------------------------- reads

    def snapshot(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """What state holds: `business_key, contact_id, content_hash, crm_version, deleted`.

        `keys=None` reads the whole table (one streaming SELECT); otherwise only those keys
        (chunked IN lists), missing keys simply absent. `crm_version` is int64, `deleted` bool,
        `contact_id` object (None for never-created / deleted rows).
        """
        cols = [contact_state.c[name] for name in SNAPSHOT_COLUMNS]
        records: list[tuple[Any, ...]] = []
        with self.engine.connect() as conn:
            if keys is None:
                result = conn.execute(sa.select(*cols))
                records.extend(tuple(row) for row in result)
            else:
                unique = sorted(set(keys))
                stmt = sa.select(*cols).where(
                    contact_state.c.business_key.in_(sa.bindparam("keys", expanding=True))
                )
                for chunk in _chunks(unique, IN_CHUNK):
                    records.extend(tuple(row) for row in conn.execute(stmt, {"keys": list(chunk)}))
        frame = pd.DataFrame.from_records(records, columns=SNAPSHOT_COLUMNS)
        return frame.astype(
            {
                "business_key": object,
                "contact_id": object,
                "content_hash": object,
                "crm_version": "int64",
                "deleted": bool,
            }
        )

    def owned_fields(self, keys: Iterable[str]) -> dict[str, frozenset[str] | None]:
        """For each of `keys` state holds live: the owned fields of the content we last sent
        (None where not known). Keys without a live row are absent."""
        stmt = sa.select(contact_state.c.business_key, contact_state.c.owned_fields).where(
            contact_state.c.business_key.in_(sa.bindparam("keys", expanding=True)),
            contact_state.c.deleted.is_(False),
        )
        out: dict[str, frozenset[str] | None] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(keys)), IN_CHUNK):
                for key, fields in conn.execute(stmt, {"keys": list(chunk)}):
                    out[str(key)] = (
                        None if fields is None else frozenset(f for f in fields.split(",") if f)
                    )
        return out

    def pending_intents(
        self, keys: Iterable[str] | None = None, *, window: str | None = None
    ) -> list[PendingIntent]:
        """Unresolved create intents, oldest first; only those of `keys` and/or of `window`
        when given (both given: both conditions hold)."""
        cols = [create_intents.c[name] for name in INTENT_COLUMNS]
        base = sa.select(*cols).where(create_intents.c.status == "pending")
        if window is not None:
            base = base.where(create_intents.c["window"] == window)
        rows: list[Any] = []
        with self.engine.connect() as conn:
            if keys is None:
                rows.extend(conn.execute(base))
            else:
                stmt = base.where(
                    create_intents.c.business_key.in_(sa.bindparam("keys", expanding=True))
                )
                for chunk in _chunks(sorted(set(keys)), IN_CHUNK):
                    rows.extend(conn.execute(stmt, {"keys": list(chunk)}))
        intents = [
            PendingIntent(
                id=row.id,
                business_key=row.business_key,
                crm_version=int(row.crm_version),
                content_hash=row.content_hash,
                run_id=row.run_id,
                window=row.window,
                created_at=row.created_at,
            )
            for row in rows
        ]
        intents.sort(key=lambda i: (i.created_at, i.id))
        return intents

    def has_pending_intents(self) -> bool:
        """Whether any create intent is pending (one indexed probe)."""
        stmt = sa.select(create_intents.c.id).where(create_intents.c.status == "pending").limit(1)
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def dead_letters(self, window: str | None = None) -> pd.DataFrame:
        """Dead letters (all, or one window's), oldest first, columns `DEAD_LETTER_COLUMNS`."""
        cols = [dead_letters.c[name] for name in DEAD_LETTER_COLUMNS]
        stmt = sa.select(*cols).order_by(dead_letters.c.id)
        if window is not None:
            stmt = stmt.where(dead_letters.c.window == window)
        with self.engine.connect() as conn:
            records = [tuple(row) for row in conn.execute(stmt)]
        return pd.DataFrame.from_records(records, columns=DEAD_LETTER_COLUMNS)

    def stamp_dead_letters(self, window: str, mapping_hash: str) -> int:
        """The window's letters were (re)tried with the mapping `mapping_hash`: record it and
        clear any retry request; how many letters."""
        stmt = (
            dead_letters.update()
            .where(dead_letters.c["window"] == window)
            .values(mapping_hash=mapping_hash, retry_requested_at=None)
        )
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount or 0)

    def clear_resolved_dead_letters(self) -> int:
        """Delete the letters whose change has since taken effect: state holds a newer CRM
        version of the key (the row changed and synced), or the same version with the letter's
        effect (deleted for a delete, live for a create or update). How many were deleted."""
        state = contact_state.alias("s")
        effect = sa.case((dead_letters.c.op == "delete", True), else_=False)
        resolved = (
            sa.select(state.c.business_key)
            .where(state.c.business_key == dead_letters.c.business_key)
            .where(
                sa.or_(
                    state.c.crm_version > dead_letters.c.crm_version,
                    sa.and_(
                        state.c.crm_version == dead_letters.c.crm_version,
                        state.c.deleted == effect,
                    ),
                )
            )
        )
        with self.engine.begin() as conn:
            return int(conn.execute(dead_letters.delete().where(resolved.exists())).rowcount or 0)

    def request_dead_letter_retry(
        self,
        *,
        keys: Iterable[str] | None = None,
        codes: Iterable[str] | None = None,
        windows: Iterable[str] | None = None,
    ) -> int:
        """Mark letters for a retry (all of them when nothing narrows it): those of `keys`, of
        error `codes`, of `windows` (every condition given must hold). How many were marked."""
        stmt = dead_letters.update().values(retry_requested_at=_now())
        for column, values in (("business_key", keys), ("code", codes), ("window", windows)):
            if values is not None:
                stmt = stmt.where(dead_letters.c[column].in_(sorted(set(values))))
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount or 0)

    def due_dead_letters(self, mapping_hash: str) -> dict[str, list[str]]:
        """Windows whose letters are due for a retry, with why: `requested:<epoch>` (a person
        asked, latest at that time) and/or `mapping_changed` (a letter was built with another
        mapping than `mapping_hash`). Window -> sorted reasons."""
        asked = dead_letters.c.retry_requested_at.is_not(None)
        remapped = sa.and_(
            dead_letters.c.mapping_hash.is_not(None), dead_letters.c.mapping_hash != mapping_hash
        )
        stmt = sa.select(
            dead_letters.c["window"], dead_letters.c.retry_requested_at, remapped.label("remapped")
        ).where(sa.or_(asked, remapped))
        latest: dict[str, dt.datetime] = {}
        changed: set[str] = set()
        with self.engine.connect() as conn:
            for window, requested_at, was_remapped in conn.execute(stmt):
                if requested_at is not None:
                    seen = latest.get(str(window))
                    latest[str(window)] = requested_at if seen is None else max(seen, requested_at)
                if was_remapped:
                    changed.add(str(window))
        due: dict[str, list[str]] = {}
        for window in sorted(set(latest) | changed):
            why = ["mapping_changed"] if window in changed else []
            if window in latest:
                when = latest[window]
                when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
                why.append(f"requested:{when.timestamp():.0f}")
            due[window] = sorted(why)
        return due

    def dead_letter_summary(self, window: str | None = None) -> pd.DataFrame:
        """Letters grouped by operation, status and error code (all, or one window's): columns
        `op, status, code, letters, windows, oldest`, most letters first."""
        stmt = sa.select(
            dead_letters.c.op,
            dead_letters.c.status,
            dead_letters.c.code,
            sa.func.count().label("letters"),
            sa.func.count(sa.distinct(dead_letters.c["window"])).label("windows"),
            sa.func.min(dead_letters.c.created_at).label("oldest"),
        ).group_by(dead_letters.c.op, dead_letters.c.status, dead_letters.c.code)
        if window is not None:
            stmt = stmt.where(dead_letters.c["window"] == window)
        with self.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(stmt)]
        frame = pd.DataFrame.from_records(
            rows, columns=["op", "status", "code", "letters", "windows", "oldest"]
        )
        return frame.sort_values(["letters", "op"], ascending=[False, True], ignore_index=True)

    def synced_among(self, keys: Iterable[str]) -> set[str] | None:
        """Of `keys`, those the state holds a Genesys contact of (the sync created it and has
        not deleted it); None when there is no key to look up or the state holds no contact at
        all (a sync that has not written yet): for the quarantine breaker, either way every
        quarantined row counts."""
        wanted = [k for k in dict.fromkeys(str(k) for k in keys) if k]
        if not wanted:
            return None
        held = self.snapshot(wanted)
        if len(held):
            return set(held.loc[held["contact_id"].notna(), "business_key"].astype(str))
        with self.engine.connect() as conn:
            some = conn.execute(
                sa.select(contact_state.c.business_key)
                .where(contact_state.c.contact_id.is_not(None))
                .limit(1)
            ).first()
        return set() if some is not None else None

    def counts(self) -> dict[str, int]:
        """Row counts for reports: live and deleted contacts, pending intents, dead letters."""
        live = sa.func.sum(sa.case((contact_state.c.deleted.is_(False), 1), else_=0))
        with self.engine.connect() as conn:
            total, n_live = conn.execute(sa.select(sa.func.count(), live)).one()
            pending = conn.execute(
                sa.select(sa.func.count()).where(create_intents.c.status == "pending")
            ).scalar_one()
            letters = conn.execute(sa.select(sa.func.count()).select_from(dead_letters)).scalar()
        n_live = int(n_live or 0)
        return {
            "contacts_live": n_live,
            "contacts_deleted": int(total) - n_live,
            "intents_pending": int(pending),
            "dead_letters": int(letters or 0),
        }

    # ---------------------------------------------------------------- sinks and key claims

    def announce_sink(
        self, sink: SinkIdentity, *, spend_per_minute: float = 0.0, forget_after: float = 3600.0
    ) -> list[SinkPresence]:
        """Record that `sink` runs now (its heartbeat, with what it spent per minute over the
        last minute); return every sink seen within `forget_after` seconds, itself included.
        Rows of sinks not seen for longer are deleted (with any claims they still hold)."""
        now = _now()
        values = {
            "lane": sink.lane,
            "priority": sink.priority,
            "host": sink.host,
            "pid": sink.pid,
            "pid_started": sink.pid_started,
            "seen_at": now,
            "spend_per_minute": float(spend_per_minute),
            "ended_at": None,
        }
        stmt = self._insert(sinks).values(holder=sink.holder, started_at=now, **values)
        horizon = now - dt.timedelta(seconds=forget_after)
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=[sinks.c.holder], set_=values))
            forgotten = sa.select(sinks.c.holder).where(sinks.c.seen_at < horizon)
            conn.execute(key_claims.delete().where(key_claims.c.holder.in_(forgotten)))
            conn.execute(sinks.delete().where(sinks.c.seen_at < horizon))
            rows = conn.execute(sa.select(sinks)).all()
        return [_presence(row) for row in rows]

    def end_sink(self, holder: str) -> None:
        """`holder` has ended: every key it claims is released, its row marked ended (kept a
        while: the lanes remember what it spent)."""
        with self.engine.begin() as conn:
            conn.execute(key_claims.delete().where(key_claims.c.holder == holder))
            conn.execute(
                sinks.update()
                .where(sinks.c.holder == holder)
                .values(ended_at=_now(), spend_per_minute=0.0)
            )

    def sinks(self) -> list[SinkPresence]:
        """Every sink the store remembers, running or lately ended."""
        with self.engine.connect() as conn:
            return [_presence(row) for row in conn.execute(sa.select(sinks))]

    def claim_keys(
        self,
        keys: Iterable[str],
        holder: str,
        *,
        stale: Callable[[str, SinkPresence | None], bool],
    ) -> KeyClaim:
        """Claim `keys` for sink `holder` (see `KeyClaim`); keys it holds already stay its own.

        A key another sink holds is taken over only when `stale(that holder, its row of sinks
        or None)` says that sink is gone (ended, dead, never announced); then atomically: of two
        claimants taking a key at once, one gets it. Claims are taken in key order, so
        concurrent claimants wait for each other on PostgreSQL instead of deadlocking."""
        wanted = sorted(set(keys))
        if not wanted:
            return KeyClaim([], {}, {}, {})
        now = _now()
        owners: dict[str, str] = {}
        mine: KeyClaim | None = None
        # One cached statement, executed for many rows (a multi-row VALUES would be compiled
        # anew on every call: most of a claim's CPU).
        insert = self._insert(key_claims).on_conflict_do_nothing(
            index_elements=[key_claims.c.business_key]
        )
        with self.engine.begin() as conn:
            for chunk in _chunks(wanted, CLAIM_CHUNK):
                rows = [{"business_key": k, "holder": holder, "claimed_at": now} for k in chunk]
                conn.execute(insert, rows)
                owners.update(self._claim_owners(conn, list(chunk)))
            if all(owners.get(k) == holder for k in wanted):
                # The usual case, every key ours: read them in the claiming transaction (one
                # transaction less per claim, its round trips count on a distant store).
                mine = self._claimed(conn, wanted, {})
        if mine is not None:
            return mine
        others = {k: h for k, h in owners.items() if h != holder}
        if others:
            presence = self._presences(set(others.values()))
            gone = {h for h in set(others.values()) if stale(h, presence.get(h))}
            if gone:
                with self.engine.begin() as conn:
                    for old in sorted(gone):
                        taken = sorted(k for k, h in others.items() if h == old)
                        for chunk in _chunks(taken, IN_CHUNK):
                            conn.execute(
                                key_claims.update()
                                .where(key_claims.c.holder == old)
                                .where(key_claims.c.business_key.in_(list(chunk)))
                                .values(holder=holder, claimed_at=now)
                            )
                    taken_keys = sorted(k for k, h in others.items() if h in gone)
                    for chunk in _chunks(taken_keys, IN_CHUNK):
                        owners.update(self._claim_owners(conn, list(chunk)))
        claimed = [k for k in wanted if owners.get(k) == holder]
        held = {k: owners[k] for k in wanted if k in owners and owners[k] != holder}
        with self.engine.connect() as conn:
            return self._claimed(conn, claimed, held)

    def _claimed(self, conn: Connection, claimed: list[str], held: dict[str, str]) -> KeyClaim:
        """The `KeyClaim` of `claimed` (and `held`): their state rows and pending intents."""
        state = self._state_rows(conn, claimed)
        intents: dict[str, list[PendingIntent]] = {}
        for intent in self._pending_of(conn, claimed):
            intents.setdefault(intent.business_key, []).append(intent)
        return KeyClaim(claimed, held, state, intents)

    def release_keys(self, holder: str, keys: Iterable[str] | None = None) -> None:
        """Give back the claims `holder` has on `keys` (all its claims when None)."""
        with self.batch() as tx:
            tx.release_keys(holder, keys)

    def key_claims(self) -> dict[str, str]:
        """Every claim held now: business key -> holder."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(key_claims.c.business_key, key_claims.c.holder))
            return {str(k): str(h) for k, h in rows}

    def _claim_owners(self, conn: Connection, keys: list[str]) -> dict[str, str]:
        stmt = sa.select(key_claims.c.business_key, key_claims.c.holder).where(
            key_claims.c.business_key.in_(keys)
        )
        return {str(k): str(h) for k, h in conn.execute(stmt)}

    def _presences(self, holders: set[str]) -> dict[str, SinkPresence]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sinks).where(sinks.c.holder.in_(sorted(holders))))
            return {row.holder: _presence(row) for row in rows}

    def _state_rows(self, conn: Connection, keys: list[str]) -> dict[str, StateRow]:
        cols = [contact_state.c[name] for name in SNAPSHOT_COLUMNS]
        out: dict[str, StateRow] = {}
        for chunk in _chunks(keys, IN_CHUNK):
            stmt = sa.select(*cols).where(contact_state.c.business_key.in_(list(chunk)))
            for key, cid, digest, version, deleted in conn.execute(stmt):
                out[str(key)] = StateRow(str(key), cid, digest or "", int(version), bool(deleted))
        return out

    def _pending_of(self, conn: Connection, keys: list[str]) -> list[PendingIntent]:
        cols = [create_intents.c[name] for name in INTENT_COLUMNS]
        rows: list[Any] = []
        for chunk in _chunks(keys, IN_CHUNK):
            stmt = sa.select(*cols).where(
                create_intents.c.status == "pending",
                create_intents.c.business_key.in_(list(chunk)),
            )
            rows.extend(conn.execute(stmt))
        intents = [_intent(row) for row in rows]
        intents.sort(key=lambda i: (i.created_at, i.id))
        return intents

    # ---------------------------------------------------------------- bindings and leases

    def bind(self, name: str, value: str, label: str) -> None:
        """Bind the state to `value` under `name` on first use; afterwards refuse any other value
        with `BindingMismatch` (labels say, in words, what each value is). Atomic: of two runs
        binding different values at once, exactly one wins and the other is refused."""
        stmt = self._insert(bindings).values(name=name, value=value, label=label, bound_at=_now())
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=[bindings.c.name]))
            held = conn.execute(
                sa.select(bindings.c.value, bindings.c.label).where(bindings.c.name == name)
            ).one()
        if held.value != value:
            raise BindingMismatch(name, held.label, label)

    def binding(self, name: str) -> tuple[str, str] | None:
        """(value, label) the state is bound to under `name`, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(bindings.c.value, bindings.c.label).where(bindings.c.name == name)
            ).first()
        return None if row is None else (str(row.value), str(row.label))

    def acquire_window(
        self,
        window: str,
        holder: str,
        *,
        host: str,
        pid: int,
        pid_started: int,
        stale: Callable[[WindowLease], bool],
    ) -> WindowLease | None:
        """Take the lease of `window` for `holder`; None when taken (or already held by it).

        When another holder has it, `stale(lease)` decides whether that holder is gone (its run
        ended, its process died): then the lease passes to `holder`; else the lease is returned
        and nothing changes. Atomic: of two holders taking a free lease at once, one gets it.
        """
        values = {
            "window": window,
            "holder": holder,
            "host": host,
            "pid": pid,
            "pid_started": pid_started,
        }
        for _ in range(3):
            with self.engine.begin() as conn:
                # RETURNING, not rowcount: drivers disagree on rowcount after ON CONFLICT.
                inserted = conn.execute(
                    self._insert(window_leases)
                    .values(**values, acquired_at=_now())
                    .on_conflict_do_nothing(index_elements=[window_leases.c["window"]])
                    .returning(window_leases.c.holder)
                ).first()
                if inserted is not None:
                    return None
                row = conn.execute(
                    sa.select(window_leases).where(window_leases.c["window"] == window)
                ).first()
            if row is None:
                continue  # released in between: try again
            lease = _lease(row)
            if lease.holder == holder:
                return None
            if not stale(lease):
                return lease
            with self.engine.begin() as conn:
                # Take it over only if it is still the stale holder's (compare-and-set).
                conn.execute(
                    window_leases.update()
                    .where(window_leases.c["window"] == window)
                    .where(window_leases.c.holder == lease.holder)
                    .values(**values, acquired_at=_now())
                )
                row = conn.execute(
                    sa.select(window_leases.c.holder).where(window_leases.c["window"] == window)
                ).first()
            if row is not None and row.holder == holder:
                return None
        raise RuntimeError(f"could not settle the lease of window {window!r}")

    def release_window(self, window: str, holder: str) -> None:
        """Give back the lease of `window` if `holder` has it."""
        with self.engine.begin() as conn:
            conn.execute(
                window_leases.delete()
                .where(window_leases.c["window"] == window)
                .where(window_leases.c.holder == holder)
            )

    def window_lease(self, window: str) -> WindowLease | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(window_leases).where(window_leases.c["window"] == window)
            ).first()
        return None if row is None else _lease(row)

    # ---------------------------------------------------------------- full syncs

    def open_full_sync(
        self,
        run_id: str,
        *,
        restart: bool = False,
        dry_run: bool = False,
        now: dt.datetime | None = None,
    ) -> FullSyncProgress:
        """The unfinished full sync, to resume (now driven by `run_id`), or a new one whose T0 is
        `now`. With `restart` an unfinished one is abandoned (its seen keys dropped) first. A
        `dry_run` one is always new and never resumed (drop it with `drop_full_sync`)."""
        with self.engine.begin() as conn:
            row = (
                None
                if dry_run
                else conn.execute(
                    sa.select(full_syncs)
                    .where(full_syncs.c.status == FULL_SYNC_RUNNING)
                    .order_by(full_syncs.c.started_at.desc())
                ).first()
            )
            if row is not None and restart:
                self._abandon(conn, str(row.id))
                row = None
            if row is not None:
                conn.execute(
                    full_syncs.update()
                    .where(full_syncs.c.id == row.id)
                    .values(run_id=run_id, updated_at=_now())
                )
                sync_id = str(row.id)
            else:
                sync_id = uuid.uuid4().hex
                moment = now or _now()
                conn.execute(
                    full_syncs.insert().values(
                        id=sync_id,
                        started_at=moment,
                        status=FULL_SYNC_DRY_RUN if dry_run else FULL_SYNC_RUNNING,
                        cursor=None,
                        chunks=0,
                        counts="{}",
                        run_id=run_id,
                        updated_at=moment,
                    )
                )
        progress = self.full_sync(sync_id)
        assert progress is not None
        return progress

    def _abandon(self, conn: Connection, sync_id: str) -> None:
        conn.execute(
            full_syncs.update()
            .where(full_syncs.c.id == sync_id)
            .values(status=FULL_SYNC_ABANDONED, updated_at=_now())
        )
        conn.execute(full_sync_keys.delete().where(full_sync_keys.c.sync_id == sync_id))

    def full_sync(self, sync_id: str) -> FullSyncProgress | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(full_syncs).where(full_syncs.c.id == sync_id)).first()
        return None if row is None else _full_sync(row)

    def last_full_sync(self, status: str = FULL_SYNC_DONE) -> FullSyncProgress | None:
        """The most recently started full sync with `status`, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(full_syncs)
                .where(full_syncs.c.status == status)
                .order_by(full_syncs.c.started_at.desc())
                .limit(1)
            ).first()
        return None if row is None else _full_sync(row)

    def record_full_sync_chunk(
        self, sync_id: str, *, cursor: Any, counts: dict[str, int], keys: Iterable[str]
    ) -> None:
        """One completed chunk, in one transaction: the keys it saw, where the next chunk
        starts, and the accounting so far. A crash before it commits re-reads the chunk (and
        marks its keys as that read found them). Marking a key twice is one mark."""
        with self.engine.begin() as conn:
            self._mark_keys(conn, sync_id, keys)
            conn.execute(
                full_syncs.update()
                .where(full_syncs.c.id == sync_id)
                .values(
                    cursor=json.dumps(cursor),
                    chunks=full_syncs.c.chunks + 1,
                    counts=json.dumps(counts, sort_keys=True),
                    updated_at=_now(),
                )
            )

    def _mark_keys(self, conn: Connection, sync_id: str, keys: Iterable[str]) -> None:
        unique = sorted(set(keys))  # key order: the lock order (module docstring)
        if not unique:
            return
        # Straight to the driver: SQLAlchemy's per-row parameter processing costs ten times
        # what SQLite spends on the insert, and a full sync marks every key of the CRM.
        if self.dialect == "sqlite":
            sql = (
                "INSERT INTO full_sync_keys (sync_id, business_key) VALUES (?, ?) "
                "ON CONFLICT (sync_id, business_key) DO NOTHING"
            )
            for chunk in _chunks(unique, WRITE_CHUNK):
                conn.exec_driver_sql(sql, [(sync_id, k) for k in chunk])
            return
        if self.dialect == "postgresql":
            sql = (
                "INSERT INTO full_sync_keys (sync_id, business_key) "
                "SELECT %s, k FROM unnest(%s::text[]) AS k "
                "ON CONFLICT (sync_id, business_key) DO NOTHING"
            )
            for chunk in _chunks(unique, WRITE_CHUNK):
                conn.exec_driver_sql(sql, (sync_id, list(chunk)))
            return
        raise NotImplementedError(f"sync state supports sqlite and postgresql, not {self.dialect}")

    def finish_full_sync(self, sync_id: str, counts: dict[str, int]) -> None:
        """Mark the full sync done (its seen keys are dropped: the mirror has used them)."""
        with self.engine.begin() as conn:
            now = _now()
            conn.execute(
                full_syncs.update()
                .where(full_syncs.c.id == sync_id)
                .values(
                    status=FULL_SYNC_DONE,
                    counts=json.dumps(counts, sort_keys=True),
                    updated_at=now,
                    finished_at=now,
                )
            )
            conn.execute(full_sync_keys.delete().where(full_sync_keys.c.sync_id == sync_id))

    def drop_full_sync(self, sync_id: str) -> None:
        """Forget a full sync entirely (a dry run's marks)."""
        with self.engine.begin() as conn:
            conn.execute(full_sync_keys.delete().where(full_sync_keys.c.sync_id == sync_id))
            conn.execute(full_syncs.delete().where(full_syncs.c.id == sync_id))

    def _unseen_live(self, sync_id: str) -> Any:
        seen = (
            sa.select(full_sync_keys.c.business_key)
            .where(full_sync_keys.c.sync_id == sync_id)
            .where(full_sync_keys.c.business_key == contact_state.c.business_key)
        )
        return (
            contact_state.c.deleted.is_(False)
            & contact_state.c.contact_id.is_not(None)
            & ~sa.exists(seen)
        )

    def unseen_live(self, sync_id: str, *, after: str | None = None, limit: int) -> list[LiveRow]:
        """Keys the state holds live that full sync `sync_id` did not see, in key order, the
        first `limit` after `after` (keyset pages: memory bounded whatever the count)."""
        stmt = sa.select(
            contact_state.c.business_key, contact_state.c.contact_id, contact_state.c.crm_version
        ).where(self._unseen_live(sync_id))
        if after is not None:
            stmt = stmt.where(contact_state.c.business_key > after)
        stmt = stmt.order_by(contact_state.c.business_key).limit(limit)
        with self.engine.connect() as conn:
            return [
                LiveRow(str(r.business_key), str(r.contact_id), int(r.crm_version))
                for r in conn.execute(stmt)
            ]

    def count_unseen_live(self, sync_id: str) -> int:
        stmt = (
            sa.select(sa.func.count()).select_from(contact_state).where(self._unseen_live(sync_id))
        )
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    # ---------------------------------------------------------------- writes

    @contextmanager
    def batch(self, window: str | None = None) -> Iterator[StoreBatch]:
        """One transaction for several writes: committed when the block exits normally, rolled
        back when it raises."""
        with self.engine.begin() as conn:
            yield StoreBatch(self, conn, window)

    def record_created(self, rows: Iterable[StateWrite], *, window: str | None = None) -> None:
        """Record live contacts, monotonically (older versions than state are ignored)."""
        with self.batch(window) as tx:
            tx.record_created(rows)

    def record_updated(self, rows: Iterable[StateWrite], *, window: str | None = None) -> None:
        """Record updated contacts, monotonically."""
        with self.batch(window) as tx:
            tx.record_updated(rows)

    def record_deleted(self, rows: Iterable[DeleteWrite], *, window: str | None = None) -> None:
        """Record deleted contacts, monotonically."""
        with self.batch(window) as tx:
            tx.record_deleted(rows)

    def bump_versions(self, frame: pd.DataFrame) -> None:
        """Raise the `crm_version` of existing rows to `frame.crm_version` where that is newer
        (frame columns `business_key, crm_version`): unchanged content seen in a newer CRM
        version, so that a later replay of an older version is recognized as stale. Keys
        without a state row are ignored (there is nothing in Genesys to protect)."""
        with self.batch() as tx:
            tx.bump_versions(frame)

    def add_intents(
        self, rows: Iterable[IntentWrite], *, run_id: str, window: str | None = None
    ) -> None:
        """Write (and commit) pending create intents for `run_id`; re-arms an existing intent of
        the same run and key (a create retried in a later round)."""
        with self.batch(window) as tx:
            tx.add_intents(rows, run_id=run_id)

    def resolve_intents(
        self,
        keys: Iterable[str],
        *,
        run_id: str | None = None,
        contact_ids: dict[str, str] | None = None,
    ) -> None:
        """Mark the pending intents of `keys` resolved (of `run_id` only, when given), noting the
        contact id found or created where known."""
        with self.batch() as tx:
            tx.resolve_intents(keys, run_id=run_id, contact_ids=contact_ids)

    def dead_letter(self, letters: Iterable[DeadLetter], *, window: str | None = None) -> None:
        """Record permanently rejected items (idempotent per key, version and operation)."""
        with self.batch(window) as tx:
            tx.dead_letter(letters)

    # ---------------------------------------------------------------- internals

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT construct, which carries `on_conflict_do_*`."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"sync state supports sqlite and postgresql, not {self.dialect}")

    def _monotonic_upsert(self, conn: Connection, params: list[dict[str, Any]]) -> None:
        params.sort(key=lambda p: p["business_key"])  # lock order, see the module docstring
        stmt = self._insert(contact_state)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[contact_state.c.business_key],
            set_={
                "contact_id": excluded.contact_id,
                "content_hash": excluded.content_hash,
                "crm_version": excluded.crm_version,
                "deleted": excluded.deleted,
                "synced_at": excluded.synced_at,
                "window": excluded["window"],
                # A write that does not know the content's fields keeps what state knows.
                "owned_fields": sa.func.coalesce(
                    excluded.owned_fields, contact_state.c.owned_fields
                ),
            },
            # The monotonic guard: the existing row survives a write of an older version.
            where=contact_state.c.crm_version <= excluded.crm_version,
        )
        for chunk in _chunks(params, WRITE_CHUNK):
            conn.execute(stmt, list(chunk))

    def _upsert_live(self, conn: Connection, rows: list[StateWrite], window: str | None) -> None:
        if not rows:
            return
        now = _now()
        self._monotonic_upsert(
            conn,
            [
                {
                    "business_key": r.business_key,
                    "contact_id": r.contact_id,
                    "content_hash": r.content_hash,
                    "crm_version": int(r.crm_version),
                    "deleted": False,
                    "synced_at": now,
                    "window": window,
                    "owned_fields": (
                        None if r.owned_fields is None else ",".join(sorted(r.owned_fields))
                    ),
                }
                for r in _latest(rows)
            ],
        )

    def _upsert_deleted(
        self, conn: Connection, rows: list[DeleteWrite], window: str | None
    ) -> None:
        if not rows:
            return
        now = _now()
        self._monotonic_upsert(
            conn,
            [
                {
                    "business_key": r.business_key,
                    # The contact no longer exists in Genesys: keeping its id would invite an
                    # update of a contact that is gone.
                    "contact_id": None,
                    "content_hash": "",
                    "crm_version": int(r.crm_version),
                    "deleted": True,
                    "synced_at": now,
                    "window": window,
                    "owned_fields": "",  # nothing of ours is left to clear
                }
                for r in _latest(rows)
            ],
        )

    def _bump(self, conn: Connection, frame: pd.DataFrame) -> None:
        if frame is None or len(frame) == 0:
            return
        versions = frame.groupby("business_key", sort=False)["crm_version"].max()
        params = sorted(({"k": str(k), "v": int(v)} for k, v in versions.items()), key=_by_k)
        stmt = (
            contact_state.update()
            .where(contact_state.c.business_key == sa.bindparam("k"))
            .where(contact_state.c.crm_version < sa.bindparam("v"))
            .values(crm_version=sa.bindparam("v"))
        )
        for chunk in _chunks(params, WRITE_CHUNK):
            conn.execute(stmt, list(chunk))

    def _add_intents(
        self, conn: Connection, rows: list[IntentWrite], run_id: str, window: str | None
    ) -> None:
        if not rows:
            return
        now = _now()
        stmt = self._insert(create_intents)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[create_intents.c.run_id, create_intents.c.business_key],
            set_={
                "crm_version": excluded.crm_version,
                "content_hash": excluded.content_hash,
                "created_at": excluded.created_at,
                "status": "pending",
                "contact_id": None,
                "resolved_at": None,
            },
        )
        params = [
            {
                "business_key": r.business_key,
                "crm_version": int(r.crm_version),
                "content_hash": r.content_hash,
                "run_id": run_id,
                "window": window,
                "created_at": now,
                "status": "pending",
            }
            for r in sorted(rows, key=lambda r: r.business_key)
        ]
        for chunk in _chunks(params, WRITE_CHUNK):
            conn.execute(stmt, list(chunk))

    def _resolve_intents(
        self,
        conn: Connection,
        keys: list[str],
        run_id: str | None,
        contact_ids: dict[str, str] | None,
    ) -> None:
        if not keys:
            return
        ids = contact_ids or {}
        now = _now()
        base = create_intents.update().where(create_intents.c.status == "pending")
        if run_id is not None:
            base = base.where(create_intents.c.run_id == run_id)
        # Keys with a known contact id: one row each (the id is the audit trail of the intent).
        with_id = [{"k": k, "at": now, "cid": ids[k]} for k in sorted(set(keys)) if k in ids]
        stmt = base.where(create_intents.c.business_key == sa.bindparam("k")).values(
            status="resolved", resolved_at=sa.bindparam("at"), contact_id=sa.bindparam("cid")
        )
        for chunk in _chunks(with_id, WRITE_CHUNK):
            conn.execute(stmt, list(chunk))
        # The rest (nothing was created): one statement per IN chunk.
        without = sorted({k for k in keys if k not in ids})
        bulk = base.where(
            create_intents.c.business_key.in_(sa.bindparam("keys", expanding=True))
        ).values(status="resolved", resolved_at=now)
        for key_chunk in _chunks(without, IN_CHUNK):
            conn.execute(bulk, {"keys": list(key_chunk)})

    def _dead_letter(self, conn: Connection, letters: list[DeadLetter], window: str | None) -> None:
        if not letters:
            return
        now = _now()
        stmt = self._insert(dead_letters)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[
                dead_letters.c.business_key,
                dead_letters.c.crm_version,
                dead_letters.c.op,
            ],
            set_={
                "crm_id": excluded.crm_id,
                "status": excluded.status,
                "code": excluded.code,
                "reason": excluded.reason,
                "window": excluded["window"],
                "created_at": excluded.created_at,
            },
        )
        params = [
            {
                "business_key": d.business_key,
                "crm_id": d.crm_id,
                "crm_version": int(d.crm_version),
                "op": d.op,
                "status": d.status,
                "code": d.code,
                "reason": d.reason,
                "window": window,
                "created_at": now,
            }
            for d in sorted(letters, key=lambda d: (d.business_key, d.crm_version, d.op))
        ]
        for chunk in _chunks(params, WRITE_CHUNK):
            conn.execute(stmt, list(chunk))


def _full_sync(row: Any) -> FullSyncProgress:
    return FullSyncProgress(
        id=str(row.id),
        started_at=_aware(row.started_at),
        status=str(row.status),
        cursor=None if row.cursor is None else json.loads(row.cursor),
        chunks=int(row.chunks),
        counts={str(k): int(v) for k, v in json.loads(row.counts or "{}").items()},
        run_id=row.run_id,
        finished_at=None if row.finished_at is None else _aware(row.finished_at),
    )


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes for timezone columns; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _lease(row: Any) -> WindowLease:
    return WindowLease(
        row.window, row.holder, row.host, int(row.pid), int(row.pid_started), row.acquired_at
    )


def _by_k(param: dict[str, Any]) -> str:
    return str(param["k"])


def _latest(rows: list[_W]) -> list[_W]:
    """One write per key (the newest version): a multi-row upsert must not touch a key twice
    (PostgreSQL refuses "ON CONFLICT DO UPDATE command cannot affect row a second time")."""
    best: dict[str, _W] = {}
    for row in rows:
        seen = best.get(row.business_key)
        if seen is None or row.crm_version >= seen.crm_version:
            best[row.business_key] = row
    return list(best.values())


def _presence(row: Any) -> SinkPresence:
    return SinkPresence(
        holder=str(row.holder),
        lane=str(row.lane),
        priority=int(row.priority),
        host=str(row.host),
        pid=int(row.pid),
        pid_started=int(row.pid_started),
        started_at=_utc(row.started_at),
        seen_at=_utc(row.seen_at),
        spend_per_minute=float(row.spend_per_minute or 0.0),
        ended_at=None if row.ended_at is None else _utc(row.ended_at),
    )


def _intent(row: Any) -> PendingIntent:
    return PendingIntent(
        id=row.id,
        business_key=row.business_key,
        crm_version=int(row.crm_version),
        content_hash=row.content_hash,
        run_id=row.run_id,
        window=row.window,
        created_at=row.created_at,
    )


def _utc(moment: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (SQLite keeps no zone: its naive values are UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
