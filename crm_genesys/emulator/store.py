"""The org's state in SQLite: contacts, their lookup keys, external sources, contact schemas,
tokens and the org's own facts (`meta`: its id). Nothing is cached in memory, so processes
sharing one database file see one org (WAL journal and a busy timeout let them write
concurrently).

Contacts are stored as the JSON the API returns: the primary, read by id at once. Two things
lag behind it by the `IndexLag` of each write (zero unless the realism profile asks for more):
- `contact_keys`, the index that identifier lookup and reverse-whitepages lookup search:
  ExternalIds (`ext`, "source id \x1f value"), E.164 phones (`phone`), lower-cased e-mails
  (`email`) and claimed identifiers (`claim`, see `claim_key`). Each entry is visible from
  `visible_from` until `visible_until` (NULL: still current), so a lookup sees the contact as it
  was indexed, and an update replaces the old entries only when the new ones become visible.
  Keys are not unique: a second contact with the same ExternalId is accepted (see the package
  docstring).
- scan membership: a contact appears in scans from `contacts.scan_from`.
Hits are hydrated from the primary: a contact deleted since is not returned at all (its keys go
with it), one merged away since is returned with its `merged_into` for the caller to decide.
A contact's index versions become visible in write order (`contacts.indexed_at` is the latest).
Merged-away contacts stay in `contacts` with `merged_into` set (the canonical contact's id).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from crm_genesys.emulator.config import RealismConfig
from crm_genesys.emulator.consistency import IndexLag
from crm_genesys.emulator.errors import EntityError
from crm_genesys.emulator.validation import PHONE_FIELDS, claim_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contact_keys (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS contact_keys_lookup ON contact_keys (kind, key, seq);
CREATE INDEX IF NOT EXISTS contact_keys_seq ON contact_keys (seq);
CREATE TABLE IF NOT EXISTS external_sources (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schemas (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
# Columns added to tables of older org files (`ALTER TABLE ... ADD COLUMN` when missing).
_COLUMNS = (
    ("contacts", "indexed_at", "REAL NOT NULL DEFAULT 0"),
    ("contacts", "scan_from", "REAL NOT NULL DEFAULT 0"),
    ("contacts", "merged_into", "TEXT"),
    ("contact_keys", "visible_from", "REAL NOT NULL DEFAULT 0"),
    ("contact_keys", "visible_until", "REAL"),
)
# Indexes over columns of `_COLUMNS`, created once those exist.
_INDEXES = (
    # Merges repoint contacts merged into a merged-away one; few are, so the index stays small.
    "CREATE INDEX IF NOT EXISTS contacts_merged_into ON contacts (merged_into) "
    "WHERE merged_into IS NOT NULL",
)
# WAL pages between checkpoints: index pages rewritten by successive requests are copied
# into the database once per checkpoint rather than once per request.
WAL_CHECKPOINT_PAGES = 10_000
_VISIBLE = "k.visible_from <= ? AND (k.visible_until IS NULL OR k.visible_until > ?)"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def contact_keys(contact: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The (kind, key) pairs under which `contact` can be looked up."""
    for ext in contact.get("externalIds", ()):
        yield "ext", f"{ext['externalSource']['id']}\x1f{ext['value']}"
    for slot in PHONE_FIELDS:
        e164 = (contact.get(slot) or {}).get("e164")
        if e164:
            yield "phone", e164
    for slot in ("workEmail", "personalEmail", "otherEmail"):
        email = contact.get(slot)
        if email:
            yield "email", email.lower()
    for identifier in contact.get("identifiers", ()):
        yield "claim", claim_key(identifier)


class Conflict(Exception):
    """A unique name, an expected version or an exclusive claim did not hold."""


class ClaimConflict(Conflict):
    """An identifier is claimed by another contact (`holder`, its id)."""

    def __init__(self, key: str, holder: str) -> None:
        super().__init__(f"identifier claimed by contact {holder}")
        self.key = key
        self.holder = holder


class ContactRecord(NamedTuple):
    """A stored contact: its position, its body, and the contact it was merged into (or None)."""

    seq: int
    body: dict[str, Any]
    merged_into: str | None


# (seq or None for a new contact, stored body or None, body to store) -> body to store;
# may raise `EntityError` to refuse the write of that one contact.
Prepare = Callable[[int | None, dict[str, Any] | None, dict[str, Any]], dict[str, Any]]


class Store:
    """Thread-safe access to one org database (`path` None: a private in-memory database).
    `lag` says when the index sees each write; `exclusive_claims` refuses an identifier that
    another contact claims (`ClaimConflict`)."""

    def __init__(self, path: Path | None, lag: IndexLag | None = None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.lag = lag or IndexLag(RealismConfig())
        self.exclusive_claims = False
        self._conn = sqlite3.connect(
            str(path) if path is not None else ":memory:",
            check_same_thread=False,
            isolation_level=None,
            timeout=30.0,
        )
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout = 30000")
            if path is not None:
                self._conn.execute("PRAGMA journal_mode = WAL")
                # No fsync: a killed process loses nothing (the OS holds the pages), only an OS
                # crash could, and without it the WAL's rewritten pages never reach the disk.
                self._conn.execute("PRAGMA synchronous = OFF")
                self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            with self._write() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                for table, column, decl in _COLUMNS:
                    present = {row[1] for row in cur.execute(f"PRAGMA table_info({table})")}
                    if column not in present:
                        cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                for statement in _INDEXES:
                    cur.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def trace(self, callback: Callable[[str], object] | None) -> None:
        """Call `callback` with every SQL statement the store runs, its parameters written in
        (None: stop)."""
        with self._lock:
            self._conn.set_trace_callback(callback)

    def pragma(self, name: str) -> Any:
        """The value of the connection's `PRAGMA name`."""
        return self._read(f"PRAGMA {name}")[0][0]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, taken immediately so concurrent writers queue on the busy
        timeout instead of failing on lock upgrade."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- the org ---------------------------------------------------------------------------

    def org_id(self) -> str:
        """The org's GUID, generated on first use and kept in the database."""
        with self._write() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('org_id', ?)", (str(uuid.uuid4()),)
            )
            return str(cur.execute("SELECT value FROM meta WHERE key = 'org_id'").fetchone()[0])

    def first_time(self, flag: str) -> bool:
        """True exactly once per org (and per `reset`) for `flag`, whichever process asks."""
        with self._write() as cur:
            cur.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, '1')", (flag,))
            return cur.rowcount > 0

    # --- contacts -------------------------------------------------------------------------

    def _claims_free(self, cur: sqlite3.Cursor, keys: list[tuple[str, str]], seq: int) -> None:
        """With exclusive claims: `ClaimConflict` when another contact than `seq` holds a
        current claim on one of the `claim` keys."""
        if not self.exclusive_claims:
            return
        for kind, key in keys:
            if kind != "claim":
                continue
            row = cur.execute(
                "SELECT c.id FROM contact_keys k JOIN contacts c ON c.seq = k.seq "
                "WHERE k.kind = 'claim' AND k.key = ? AND k.visible_until IS NULL "
                "AND k.seq != ? LIMIT 1",
                (key, seq),
            ).fetchone()
            if row is not None:
                raise ClaimConflict(key, str(row[0]))

    @staticmethod
    def _retire(cur: sqlite3.Cursor, seq: int, at: float, now: float) -> None:
        """The current index entries of contact `seq` stop being visible at `at`."""
        if at <= now:
            cur.execute("DELETE FROM contact_keys WHERE seq = ?", (seq,))
            return
        cur.execute(
            "UPDATE contact_keys SET visible_until = ? WHERE seq = ? AND visible_until IS NULL",
            (at, seq),
        )
        cur.execute("DELETE FROM contact_keys WHERE seq = ? AND visible_until <= ?", (seq, now))

    @staticmethod
    def _add_keys(
        cur: sqlite3.Cursor, seq: int, keys: list[tuple[str, str]], visible: float
    ) -> None:
        cur.executemany(
            "INSERT INTO contact_keys (kind, key, seq, visible_from) VALUES (?, ?, ?, ?)",
            [(kind, key, seq, visible) for kind, key in keys],
        )

    def _insert(self, cur: sqlite3.Cursor, contact: dict[str, Any], now: float) -> None:
        """Insert a new contact and index it after its lag (checks first: nothing is written
        when a claim is refused)."""
        keys = list(contact_keys(contact))
        self._claims_free(cur, keys, -1)
        visible = self.lag.visible_at(now)
        cur.execute(
            "INSERT INTO contacts (id, body, indexed_at, scan_from) VALUES (?, ?, ?, ?)",
            (contact["id"], _dumps(contact), visible, visible),
        )
        assert cur.lastrowid is not None
        self._add_keys(cur, cur.lastrowid, keys, visible)

    def _replace(
        self, cur: sqlite3.Cursor, seq: int, body: dict[str, Any], now: float, after: float
    ) -> None:
        """Store `body` as the next version of contact `seq`: its keys become visible at a lagged
        time (never before `after`, the previous version's), when the previous keys retire."""
        keys = list(contact_keys(body))
        self._claims_free(cur, keys, seq)
        visible = max(self.lag.visible_at(now), after)
        self._retire(cur, seq, visible, now)
        self._add_keys(cur, seq, keys, visible)
        cur.execute(
            "UPDATE contacts SET body = ?, indexed_at = ? WHERE seq = ?",
            (_dumps(body), visible, seq),
        )

    def add_contacts(
        self, contacts: Sequence[dict[str, Any]], now: float, prepare: Prepare | None = None
    ) -> list[dict[str, Any] | Exception]:
        """Insert contacts (each with its `id`) in one transaction: per contact, the body stored,
        or the exception `prepare` or an exclusive claim refused it with (nothing stored)."""
        out: list[dict[str, Any] | Exception] = []
        if not contacts:
            return out
        with self._write() as cur:
            for contact in contacts:
                try:
                    body = prepare(None, None, contact) if prepare else contact
                    self._insert(cur, body, now)
                except (Conflict, EntityError) as exc:
                    out.append(exc)
                else:
                    out.append(body)
        return out

    def replace_contacts(
        self, updates: Sequence[tuple[str, dict[str, Any]]], now: float, prepare: Prepare
    ) -> dict[str, dict[str, Any] | Exception | None]:
        """Full updates in one transaction: `prepare(seq, stored body, fields)` makes each new
        body. Returns id -> new body, the exception that refused it, or None (no such live
        contact: missing or merged away)."""
        out: dict[str, dict[str, Any] | Exception | None] = {}
        if not updates:
            return out
        with self._write() as cur:
            for contact_id, fields in updates:
                row = cur.execute(
                    "SELECT seq, body, indexed_at FROM contacts "
                    "WHERE id = ? AND merged_into IS NULL",
                    (contact_id,),
                ).fetchone()
                if row is None:
                    out[contact_id] = None
                    continue
                seq, old, indexed_at = row[0], json.loads(row[1]), row[2]
                try:
                    body = prepare(seq, old, fields)
                    self._replace(cur, seq, body, now, indexed_at)
                except (Conflict, EntityError) as exc:
                    out[contact_id] = exc
                else:
                    out[contact_id] = body
        return out

    def delete_contacts(self, contact_ids: Iterable[str]) -> set[str]:
        """Delete live contacts in one transaction; the ids that existed. Their index entries
        go at once: a lagging hit would be hydrated from the primary, which no longer has it."""
        found: set[str] = set()
        with self._write() as cur:
            for contact_id in contact_ids:
                row = cur.execute(
                    "SELECT seq FROM contacts WHERE id = ? AND merged_into IS NULL", (contact_id,)
                ).fetchone()
                if row is None:
                    continue
                cur.execute("DELETE FROM contact_keys WHERE seq = ?", (row[0],))
                cur.execute("DELETE FROM contacts WHERE seq = ?", (row[0],))
                found.add(contact_id)
        return found

    def merge(
        self,
        survivor: dict[str, Any],
        survivor_is_new: bool,
        merged: Sequence[dict[str, Any]],
        now: float,
    ) -> None:
        """Store a merge in one transaction: the `merged` contacts (bodies carrying their merge
        fields) become merged into `survivor` (inserted when new, else replaced); contacts
        merged into them before now point at the survivor too. Index entries of the merged
        contacts retire, and the survivor's appear, each after its own lag."""
        survivor_id = survivor["id"]
        with self._write() as cur:
            for body in merged:
                row = cur.execute(
                    "SELECT seq, indexed_at FROM contacts WHERE id = ? AND merged_into IS NULL",
                    (body["id"],),
                ).fetchone()
                if row is None:
                    raise Conflict(f"contact {body['id']} is not a live contact")
                seq, indexed_at = row
                visible = max(self.lag.visible_at(now), indexed_at)
                self._retire(cur, seq, visible, now)
                cur.execute(
                    "UPDATE contacts SET body = ?, merged_into = ?, indexed_at = ? WHERE seq = ?",
                    (_dumps(body), survivor_id, visible, seq),
                )
                cur.execute(
                    "UPDATE contacts SET merged_into = ? WHERE merged_into = ?",
                    (survivor_id, body["id"]),
                )
            if survivor_is_new:
                self._insert(cur, survivor, now)
            else:
                row = cur.execute(
                    "SELECT seq, indexed_at FROM contacts WHERE id = ? AND merged_into IS NULL",
                    (survivor_id,),
                ).fetchone()
                if row is None:
                    raise Conflict(f"contact {survivor_id} is not a live contact")
                self._replace(cur, row[0], survivor, now, row[1])

    def get_contact(self, contact_id: str) -> ContactRecord | None:
        """The stored contact, live or merged away (see `ContactRecord.merged_into`)."""
        rows = self._read("SELECT seq, body, merged_into FROM contacts WHERE id = ?", (contact_id,))
        return ContactRecord(rows[0][0], json.loads(rows[0][1]), rows[0][2]) if rows else None

    def get_contacts(self, contact_ids: Sequence[str]) -> dict[str, ContactRecord]:
        out: dict[str, ContactRecord] = {}
        ids = list(dict.fromkeys(contact_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for seq, cid, body, merged_into in self._read(
                f"SELECT seq, id, body, merged_into FROM contacts WHERE id IN ({marks})", chunk
            ):
                out[cid] = ContactRecord(seq, json.loads(body), merged_into)
        return out

    def lookup(self, kind: str, key: str, now: float) -> list[ContactRecord]:
        """What the index holds under a key at `now`, hydrated from the primary, oldest first
        (deleted contacts are gone; merged-away ones carry `merged_into`)."""
        rows = self._read(
            "SELECT DISTINCT c.seq, c.body, c.merged_into FROM contact_keys k "
            f"JOIN contacts c ON c.seq = k.seq WHERE k.kind = ? AND k.key = ? AND {_VISIBLE} "
            "ORDER BY c.seq",
            (kind, key, now, now),
        )
        return [ContactRecord(seq, json.loads(body), merged) for seq, body, merged in rows]

    def scan(self, after_seq: int, limit: int, now: float) -> list[tuple[int, dict[str, Any]]]:
        """Live contacts the index lists at `now`, after position `after_seq`, as they are now."""
        rows = self._read(
            "SELECT seq, body FROM contacts WHERE seq > ? AND scan_from <= ? "
            "AND merged_into IS NULL ORDER BY seq LIMIT ?",
            (after_seq, now, limit),
        )
        return [(seq, json.loads(body)) for seq, body in rows]

    def all_contacts(self) -> list[dict[str, Any]]:
        """Every live contact (merged-away ones excluded), oldest first, as stored now."""
        return [
            json.loads(body)
            for (body,) in self._read(
                "SELECT body FROM contacts WHERE merged_into IS NULL ORDER BY seq"
            )
        ]

    def count_contacts(self) -> int:
        return int(self._read("SELECT count(*) FROM contacts WHERE merged_into IS NULL")[0][0])

    # --- external sources -----------------------------------------------------------------

    def add_source(self, source: dict[str, Any]) -> None:
        try:
            with self._write() as cur:
                cur.execute(
                    "INSERT INTO external_sources (id, name, body) VALUES (?, ?, ?)",
                    (source["id"], source["name"], _dumps(source)),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"an external source named {source['name']!r} exists") from exc

    def replace_source(self, source: dict[str, Any]) -> bool:
        try:
            with self._write() as cur:
                cur.execute(
                    "UPDATE external_sources SET name = ?, body = ? WHERE id = ?",
                    (source["name"], _dumps(source), source["id"]),
                )
                return cur.rowcount > 0
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"an external source named {source['name']!r} exists") from exc

    def delete_source(self, source_id: str) -> bool:
        with self._write() as cur:
            cur.execute("DELETE FROM external_sources WHERE id = ?", (source_id,))
            return cur.rowcount > 0

    def get_source(self, source_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT body FROM external_sources WHERE id = ?", (source_id,))
        return json.loads(rows[0][0]) if rows else None

    def source_exists(self, source_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM external_sources WHERE id = ?", (source_id,)))

    def list_sources(
        self, name_prefix: str | None, active: bool | None, after_seq: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        sql = "SELECT seq, body FROM external_sources WHERE seq > ?"
        params: list[Any] = [after_seq]
        if name_prefix:
            # substr comparison: a prefix match without LIKE's wildcards and case folding.
            sql += " AND substr(name, 1, ?) = ?"
            params += [len(name_prefix), name_prefix]
        rows = self._read(sql + " ORDER BY seq", params)
        out = []
        for seq, body in rows:
            source = json.loads(body)
            if active is not None and bool(source.get("active", True)) != active:
                continue
            out.append((seq, source))
            if len(out) >= limit:
                break
        return out

    # --- contact schemas ------------------------------------------------------------------

    def add_schema(self, schema: dict[str, Any]) -> None:
        with self._write() as cur:
            cur.execute(
                "INSERT INTO schemas (id, version, body) VALUES (?, ?, ?)",
                (schema["id"], schema["version"], _dumps(schema)),
            )

    def new_schema_version(self, schema: dict[str, Any], expected_version: int) -> None:
        """Store `schema` (whose version is `expected_version + 1`) if the current version is
        still `expected_version`; `Conflict` otherwise."""
        with self._write() as cur:
            row = cur.execute(
                "SELECT max(version) FROM schemas WHERE id = ?", (schema["id"],)
            ).fetchone()
            if row[0] != expected_version:
                raise Conflict(f"current version is {row[0]}, not {expected_version}")
            cur.execute(
                "INSERT INTO schemas (id, version, body) VALUES (?, ?, ?)",
                (schema["id"], schema["version"], _dumps(schema)),
            )

    def get_schema(self, schema_id: str, version: int | None = None) -> dict[str, Any] | None:
        if version is None:
            rows = self._read(
                "SELECT body FROM schemas WHERE id = ? ORDER BY version DESC LIMIT 1", (schema_id,)
            )
        else:
            rows = self._read(
                "SELECT body FROM schemas WHERE id = ? AND version = ?", (schema_id, version)
            )
        return json.loads(rows[0][0]) if rows else None

    def list_schemas(self) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT s.body FROM schemas s WHERE s.version = "
            "(SELECT max(version) FROM schemas t WHERE t.id = s.id) ORDER BY s.rowid"
        )
        return [json.loads(body) for (body,) in rows]

    def schema_versions(self, schema_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT body FROM schemas WHERE id = ? ORDER BY version", (schema_id,))
        return [json.loads(body) for (body,) in rows]

    # --- tokens ---------------------------------------------------------------------------

    def add_token(self, digest: str, client_id: str, issued_at: float, expires_at: float) -> None:
        with self._write() as cur:
            cur.execute(
                "INSERT INTO tokens (digest, client_id, issued_at, expires_at) VALUES (?,?,?,?)",
                (digest, client_id, issued_at, expires_at),
            )

    def get_token(self, digest: str) -> tuple[str, float, float, bool] | None:
        """(client id, issued at, expires at, revoked) of a token digest."""
        rows = self._read(
            "SELECT client_id, issued_at, expires_at, revoked FROM tokens WHERE digest = ?",
            (digest,),
        )
        if not rows:
            return None
        client_id, issued, expires, revoked = rows[0]
        return str(client_id), float(issued), float(expires), bool(revoked)

    def revoke_token(self, digest: str) -> None:
        with self._write() as cur:
            cur.execute("UPDATE tokens SET revoked = 1 WHERE digest = ?", (digest,))

    def purge_tokens(self, before: float) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM tokens WHERE expires_at < ?", (before,))

    # --- admin ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything but the org's id: contacts, sources, schemas and tokens."""
        with self._write() as cur:
            for table in ("contact_keys", "contacts", "external_sources", "schemas", "tokens"):
                cur.execute(f"DELETE FROM {table}")
            cur.execute("DELETE FROM meta WHERE key != 'org_id'")
