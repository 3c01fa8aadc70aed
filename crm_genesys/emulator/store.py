"""The org's state in SQLite: contacts, their lookup keys, external sources, contact schemas and
tokens. Nothing is cached in memory, so processes sharing one database file see one org (WAL
journal and a busy timeout let them write concurrently).

Contacts are stored as the JSON the API returns. `contact_keys` indexes what identifier lookup
and reverse-whitepages lookup search: ExternalIds (`ext`, "source id \\x1f value"), E.164 phones
(`phone`) and lower-cased e-mails (`email`). Keys are not unique: a second contact with the same
ExternalId is accepted (see the package docstring), and lookups return the oldest one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crm_genesys.emulator.validation import PHONE_FIELDS

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
"""


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


class Conflict(Exception):
    """A unique name or an expected version did not hold."""


class Store:
    """Thread-safe access to one org database (`path` None: a private in-memory database)."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
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
                # Durable enough for an emulator; a full fsync per bulk request is not needed.
                self._conn.execute("PRAGMA synchronous = NORMAL")
            with self._write() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

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

    # --- contacts -------------------------------------------------------------------------

    def add_contacts(self, contacts: Sequence[dict[str, Any]]) -> None:
        """Insert contacts (each with its `id`) in one transaction."""
        if not contacts:
            return
        with self._write() as cur:
            for contact in contacts:
                cur.execute(
                    "INSERT INTO contacts (id, body) VALUES (?, ?)",
                    (contact["id"], _dumps(contact)),
                )
                seq = cur.lastrowid
                cur.executemany(
                    "INSERT INTO contact_keys (kind, key, seq) VALUES (?, ?, ?)",
                    [(kind, key, seq) for kind, key in contact_keys(contact)],
                )

    def replace_contacts(
        self, updates: Sequence[tuple[str, dict[str, Any]]], modify_date: str
    ) -> dict[str, dict[str, Any] | None]:
        """Full updates in one transaction: each `(id, fields)` replaces the stored contact,
        keeping its id, division and createDate. Returns id -> new body (None: no such contact)."""
        out: dict[str, dict[str, Any] | None] = {}
        if not updates:
            return out
        with self._write() as cur:
            for contact_id, fields in updates:
                row = cur.execute(
                    "SELECT seq, body FROM contacts WHERE id = ?", (contact_id,)
                ).fetchone()
                if row is None:
                    out[contact_id] = None
                    continue
                seq, old = row[0], json.loads(row[1])
                body = dict(fields)
                body["id"] = contact_id
                for kept in ("division", "createDate", "type"):
                    if kept in old:
                        body[kept] = old[kept]
                body["modifyDate"] = modify_date
                body["selfUri"] = old.get("selfUri")
                cur.execute("UPDATE contacts SET body = ? WHERE seq = ?", (_dumps(body), seq))
                cur.execute("DELETE FROM contact_keys WHERE seq = ?", (seq,))
                cur.executemany(
                    "INSERT INTO contact_keys (kind, key, seq) VALUES (?, ?, ?)",
                    [(kind, key, seq) for kind, key in contact_keys(body)],
                )
                out[contact_id] = body
        return out

    def delete_contacts(self, contact_ids: Iterable[str]) -> set[str]:
        """Delete in one transaction; the ids that existed."""
        found: set[str] = set()
        with self._write() as cur:
            for contact_id in contact_ids:
                row = cur.execute("SELECT seq FROM contacts WHERE id = ?", (contact_id,)).fetchone()
                if row is None:
                    continue
                cur.execute("DELETE FROM contact_keys WHERE seq = ?", (row[0],))
                cur.execute("DELETE FROM contacts WHERE seq = ?", (row[0],))
                found.add(contact_id)
        return found

    def get_contact(self, contact_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT body FROM contacts WHERE id = ?", (contact_id,))
        return json.loads(rows[0][0]) if rows else None

    def get_contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(contact_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for cid, body in self._read(
                f"SELECT id, body FROM contacts WHERE id IN ({marks})", chunk
            ):
                out[cid] = json.loads(body)
        return out

    def lookup(self, kind: str, key: str, limit: int = 1) -> list[dict[str, Any]]:
        """Contacts under a lookup key, oldest first (deterministic when keys are shared)."""
        rows = self._read(
            "SELECT DISTINCT c.seq, c.body FROM contact_keys k JOIN contacts c ON c.seq = k.seq "
            "WHERE k.kind = ? AND k.key = ? ORDER BY c.seq LIMIT ?",
            (kind, key, limit),
        )
        return [json.loads(body) for _, body in rows]

    def scan(self, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = self._read(
            "SELECT seq, body FROM contacts WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        return [(seq, json.loads(body)) for seq, body in rows]

    def all_contacts(self) -> list[dict[str, Any]]:
        return [
            json.loads(body) for (body,) in self._read("SELECT body FROM contacts ORDER BY seq")
        ]

    def count_contacts(self) -> int:
        return int(self._read("SELECT count(*) FROM contacts")[0][0])

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
        """Forget everything: contacts, sources, schemas and tokens."""
        with self._write() as cur:
            for table in ("contact_keys", "contacts", "external_sources", "schemas", "tokens"):
                cur.execute(f"DELETE FROM {table}")
