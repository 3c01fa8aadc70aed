"""CRM activity on a demo CRM, so that every sync window has work.

`simulate_activity` changes the demo CRM the way users and admins do, all in one transaction,
every touched row stamped with a `modified_at` inside the window holding `now`:
- updates: the latest live version of a key gets a new tier (always different), and a new
  mobile phone and/or e-mail (always well-formed, so a syncable contact stays syncable);
- phone moves (`phone_moves` of the updated keys): the mobile and work phones become numbers of
  another country, one in E.164 and one in international format (valid for any region);
- deletes: the latest live version becomes a tombstone (`is_deleted=1`, row kept);
- hard deletes: every row of a key is removed (no tombstone: only a full sync's mirror or a
  reconciliation finds it);
- re-index: rows get new internal ids and a new `modified_at`, business data unchanged — the
  pipeline must see "unchanged" (a version bump), never a delete plus a create;
- creates: new keys after the highest existing `AC-` number, generated like the demo rows;
- schema drift: `new_column` is added (TEXT) if missing and filled on updated and created rows.
The sets of updated, deleted, hard-deleted, re-indexed and created keys are disjoint. A new
stamp is always later than any existing version of the key, so per-key versions only move
forward. Stamps are written in the demo's text form, or, when
the CRM was generated with `mixed_times` (or `mixed_times=True` is passed), each in a random one
of `demo.TIME_STYLES`; versions are compared as instants (`crm.instants`), whatever the form.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from crm_genesys.crm import _pools as pools
from crm_genesys.crm.demo import (
    CONTACT_COLUMNS,
    account_numbers,
    format_micros,
    format_styled,
    insert_rows,
    international_phone,
    meta_from_items,
    people,
    style_stamps,
    valid_email,
    write_demo_meta,
)
from crm_genesys.crm.instants import as_utc, instants_array, to_micros, window_floor

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_KEY_NUMBER = re.compile(r"^AC-(\d+)$")


@dataclass(frozen=True)
class ActivitySummary:
    """What one `simulate_activity` call did. Keys are canonical (trimmed) account numbers."""

    window_start: datetime
    window_end: datetime
    updated_keys: tuple[str, ...]
    deleted_keys: tuple[str, ...]
    # key → (old internal id, new internal id)
    reindexed: dict[str, tuple[int, int]] = field(default_factory=dict)
    created_keys: tuple[str, ...] = ()
    new_column: str | None = None
    hard_deleted_keys: tuple[str, ...] = ()
    moved_keys: tuple[str, ...] = ()  # updated keys whose phones moved to another country

    @property
    def updates(self) -> int:
        return len(self.updated_keys)

    @property
    def deletes(self) -> int:
        return len(self.deleted_keys)

    @property
    def reindexes(self) -> int:
        return len(self.reindexed)

    @property
    def creates(self) -> int:
        return len(self.created_keys)

    @property
    def rows_touched(self) -> int:
        """Rows whose `modified_at` now lies in [window_start, window_end)."""
        return self.updates + self.deletes + self.reindexes + self.creates


def _latest_versions(conn: sqlite3.Connection) -> pd.DataFrame:
    """The latest row of every non-blank key: id, key (trimmed), modified_at, its instant `us`,
    is_deleted, country."""
    frame = pd.read_sql_query(
        "SELECT id, account_number, modified_at, is_deleted, country FROM contacts "
        "WHERE account_number IS NOT NULL",
        conn,
    )
    frame["key"] = frame["account_number"].str.strip()
    frame = frame[frame["key"] != ""].copy()
    frame["us"] = instants_array(frame["modified_at"].astype(object))[0]
    # Ties on the instant are broken by id so the choice is deterministic.
    frame = frame.sort_values(["key", "us", "id"], kind="stable")
    return frame.drop_duplicates("key", keep="last").reset_index(drop=True)


class _Stamper:
    """Writes new stamps in the demo form, or in mixed styles (a generator of their own)."""

    def __init__(self, mixed: bool, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 1]) if mixed else None

    def __call__(self, stamps: np.ndarray, floor_us: np.ndarray | None) -> np.ndarray:
        if self._rng is None:
            return format_micros(stamps)
        styled, styles = style_stamps(self._rng, stamps, floor_us)
        return format_styled(styled, styles)


def _stamps(
    rng: np.random.Generator,
    n: int,
    span: tuple[int, int, int],
    floor_us: np.ndarray | None,
) -> np.ndarray:
    """`n` stamps uniform in [low, high] of `span` = (low, high, last), each raised to
    `floor_us + 1` where given (a key's version must move forward) but never past `last`, the
    window's last microsecond."""
    low, high, last = span
    stamps = low + (rng.random(n) * (high - low + 1)).astype(np.int64)
    if floor_us is not None:
        stamps = np.maximum(stamps, floor_us + 1)
    return np.minimum(stamps, last)


def _country_index(values: pd.Series) -> np.ndarray:
    """Pool index of the country column where it is a clean alpha-2 code, else US (index 0)."""
    lookup = {code: i for i, code in enumerate(pools.COUNTRY_CODES)}
    return np.array([lookup.get(str(v).strip().upper(), 0) for v in values], dtype=np.int64)


def simulate_activity(
    path: str | os.PathLike[str],
    *,
    now: datetime,
    seed: int,
    updates: int = 100,
    deletes: int = 10,
    reindex: int = 50,
    creates: int = 50,
    new_column: str | None = None,
    mixed_times: bool | None = None,
    hard_deletes: int = 0,
    phone_moves: int = 0,
) -> ActivitySummary:
    """Apply one round of CRM activity to the demo CRM at `path`; see the module docstring.

    `mixed_times` (None: as the CRM was generated) writes the new stamps in mixed styles.

    Stamps fall in [start of the window holding `now`, `now`] (so none is in the future) unless
    a key's existing version is already later, in which case the stamp is that version + 1 µs,
    capped at the window's last microsecond. The window length comes from `demo_meta`. Asking
    for more updates/deletes/re-indexes than there are live keys raises ValueError.
    """
    if new_column is not None and not _IDENTIFIER.match(new_column):
        raise ValueError(f"new_column must be a plain SQL identifier, got {new_column!r}")
    if min(updates, deletes, reindex, creates, hard_deletes, phone_moves) < 0:
        raise ValueError("counts must not be negative")
    if phone_moves > updates:
        raise ValueError("phone_moves counts updated keys: at most `updates`")
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(Path(path), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")  # one writer; readers see all of it or none of it
        meta = meta_from_items(dict(conn.execute("SELECT key, value FROM demo_meta").fetchall()))
        start = window_floor(now, meta.window)
        end = start + meta.window
        low_us = to_micros(start)
        last_us = to_micros(end) - 1
        span = (low_us, max(low_us, min(to_micros(now), last_us)), last_us)

        latest = _latest_versions(conn)
        live = latest[latest["is_deleted"] == 0]
        wanted = updates + deletes + reindex + hard_deletes
        if wanted > len(live):
            raise ValueError(f"asked to touch {wanted} keys, only {len(live)} live keys exist")
        chosen = live.iloc[rng.permutation(len(live))[:wanted]]
        upd = chosen.iloc[:updates]
        dele = chosen.iloc[updates : updates + deletes]
        rei = chosen.iloc[updates + deletes : updates + deletes + reindex]
        gone = chosen.iloc[updates + deletes + reindex :]
        prev_us = {
            name: part["us"].to_numpy(dtype=np.int64)
            for name, part in (("upd", upd), ("del", dele), ("rei", rei))
        }
        stamp_text = _Stamper(meta.mixed_times if mixed_times is None else mixed_times, seed)

        if new_column is not None:
            existing = {row[1] for row in conn.execute("PRAGMA table_info(contacts)")}
            if new_column not in existing:
                conn.execute(f'ALTER TABLE contacts ADD COLUMN "{new_column}" TEXT')

        # Updates: new tier always; new mobile phone and/or e-mail.
        stamps = stamp_text(_stamps(rng, len(upd), span, prev_us["upd"]), prev_us["upd"])
        tiers = conn.execute(
            f"SELECT id, customer_tier FROM contacts WHERE id IN ({','.join('?' * len(upd))})",
            [int(i) for i in upd["id"]],
        ).fetchall()
        tier_of = dict(tiers)
        what = rng.integers(0, 3, len(upd))  # 0 phone, 1 e-mail, 2 both
        phones = international_phone(rng, _country_index(upd["country"]))
        names = pools.name_pool()
        first_pick = rng.integers(0, len(names.first_ascii), len(upd))
        last_pick = rng.integers(0, len(names.last_ascii), len(upd))
        emails = valid_email(rng, names.first_ascii[first_pick], names.last_ascii[last_pick])
        drift = [f"segment-{'abc'[k % 3]}{k}" for k in rng.integers(0, 1000, len(upd))]
        moved: dict[str, np.ndarray] = {}
        if phone_moves:
            home = _country_index(upd["country"].iloc[:phone_moves])
            away = (home + rng.integers(1, len(pools.COUNTRY_CODES), phone_moves)) % len(
                pools.COUNTRY_CODES
            )
            pp = pools.phone_pool()
            pick = rng.integers(0, pools.PHONE_POOL_SIZE, (2, phone_moves))
            moved = {
                "mobile_phone": pp.e164[away, 1, pick[0]].astype(object),
                "work_phone": pp.international[away, 0, pick[1]].astype(object),
            }
        for k, row_id in enumerate(int(i) for i in upd["id"]):
            old = tier_of.get(row_id)
            old_index = pools.TIERS.index(old) if old in pools.TIERS else 0
            sets = {"customer_tier": pools.TIERS[(old_index + 1 + k % 3) % 4]}
            if what[k] != 1:
                sets["mobile_phone"] = phones[k]
            if what[k] != 0:
                sets["email"] = emails[k]
            if k < phone_moves:
                sets.update({c: v[k] for c, v in moved.items()})
            if new_column is not None:
                sets[new_column] = drift[k]
            sets["modified_at"] = stamps[k]
            assignments = ", ".join(f'"{c}" = ?' for c in sets)
            conn.execute(
                f"UPDATE contacts SET {assignments} WHERE id = ?", [*sets.values(), row_id]
            )

        # Deletes: tombstone the latest live row in place.
        stamps = stamp_text(_stamps(rng, len(dele), span, prev_us["del"]), prev_us["del"])
        conn.executemany(
            "UPDATE contacts SET is_deleted = 1, modified_at = ? WHERE id = ?",
            zip(stamps.tolist(), [int(i) for i in dele["id"]], strict=True),
        )

        # Hard deletes: every row of the key goes, as a CRM that purges records does.
        gone_keys = [str(k) for k in gone["key"]]
        for key in gone_keys:
            conn.execute("DELETE FROM contacts WHERE TRIM(account_number) = ?", [key])

        # Re-index: new ids above every existing one, in shuffled order.
        (max_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM contacts").fetchone()
        new_ids = max_id + 1 + rng.permutation(len(rei))
        stamps = stamp_text(_stamps(rng, len(rei), span, prev_us["rei"]), prev_us["rei"])
        old_ids = [int(i) for i in rei["id"]]
        conn.executemany(
            "UPDATE contacts SET id = ?, modified_at = ? WHERE id = ?",
            zip(new_ids.tolist(), stamps.tolist(), old_ids, strict=True),
        )
        reindexed = {
            key: (old, int(new)) for key, old, new in zip(rei["key"], old_ids, new_ids, strict=True)
        }

        # Creates: new keys after the highest AC- number in the table.
        numbers = [
            int(m.group(1))
            for (value,) in conn.execute("SELECT account_number FROM contacts")
            if value is not None and (m := _KEY_NUMBER.match(value.strip()))
        ]
        first_number = max(numbers, default=0) + 1
        created_keys: tuple[str, ...] = ()
        if creates:
            new = people(rng, creates, start.date())
            created = account_numbers(np.arange(first_number, first_number + creates))
            created_keys = tuple(created.tolist())
            (max_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM contacts").fetchone()
            columns: dict[str, np.ndarray] = {
                "id": (max_id + 1 + np.arange(creates)).astype(object),
                "account_number": created,
            }
            for c in CONTACT_COLUMNS:
                if c not in ("id", "account_number", "modified_at", "is_deleted"):
                    columns[c] = new[c]
            columns["modified_at"] = stamp_text(_stamps(rng, creates, span, None), None)
            columns["is_deleted"] = np.zeros(creates, dtype=np.int64).astype(object)
            if new_column is not None:
                columns[new_column] = np.array(
                    [f"segment-new{k}" for k in range(creates)], dtype=object
                )
            insert_rows(conn, "contacts", columns)

        windows = meta.activity_windows
        if start not in windows:
            windows = (*windows, start)
        write_demo_meta(conn, replace(meta, activity_windows=windows))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    return ActivitySummary(
        window_start=as_utc(start),
        window_end=as_utc(end),
        updated_keys=tuple(upd["key"]),
        deleted_keys=tuple(dele["key"]),
        reindexed=reindexed,
        created_keys=created_keys,
        new_column=new_column,
        hard_deleted_keys=tuple(gone_keys),
        moved_keys=tuple(upd["key"].iloc[:phone_moves]),
    )


def next_window_now(path: str | os.PathLike[str], after: datetime) -> datetime:
    """A `now` in the window after the one holding `after` (handy for successive rounds)."""
    conn = sqlite3.connect(Path(path))
    try:
        meta = meta_from_items(dict(conn.execute("SELECT key, value FROM demo_meta").fetchall()))
    finally:
        conn.close()
    return window_floor(after, meta.window) + meta.window + meta.window / 2
