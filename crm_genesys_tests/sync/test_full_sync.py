"""The full sync without Dagster: a CRM modified over two years, streamed in small chunks (so that
keys meet in several chunks) into the embedded emulator; resume after an interruption; the
mirror and its breaker; the dry run.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_genesys import settings
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.crm.errors import MissingColumnsError
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.genesys.target import GenesysTarget, embedded_app
from crm_genesys.state.store import SyncStateStore
from crm_genesys.sync.breakers import BreakerTripped
from crm_genesys.sync.full import (
    CrmChunks,
    FullSyncOptions,
    FullSyncResult,
    Progress,
    run_full_sync,
)
from crm_genesys_tests.oracle import expected_contacts

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
CHUNK = 137  # small and odd: versions of one key land in different chunks


class Interrupted(Exception):
    pass


class Rig:
    """A two-year demo CRM, an embedded emulator org and a sync state under `root`."""

    def __init__(self, root: Path, rows: int = 900) -> None:
        self.root = root
        self.crm_path = root / "crm.sqlite"
        generate_demo_crm(
            self.crm_path, rows=rows, seed=4, now=NOW, windows=730, window=timedelta(days=1)
        )
        self.mapping = load_mapping(settings.DEMO_MAPPING)
        self.target = GenesysTarget.embedded(root / "emulator.sqlite")
        self.store = SyncStateStore(f"sqlite:///{root / 'state.sqlite'}")
        self.store.create_all()

    @property
    def emulator(self):
        return embedded_app(self.root / "emulator.sqlite").emulator

    def source(self) -> SqlCrmSource:
        return SqlCrmSource(f"sqlite:///{self.crm_path}", "contacts", "modified_at")

    def run(self, on_progress=None, **options) -> FullSyncResult:
        with self.source() as source:
            chunks = CrmChunks(source, self.mapping, options.pop("chunk_rows", CHUNK))
            return asyncio.run(
                run_full_sync(
                    chunks,
                    self.store,
                    self.target,
                    run_id="r" + str(len(self.emulator.requests())),
                    options=FullSyncOptions(**options),
                    on_progress=on_progress,
                )
            )

    def genesys(self) -> dict[str, dict]:
        contacts = self.emulator.all_contacts()
        keys = Counter(x["value"] for c in contacts for x in c.get("externalIds") or [])
        assert not [k for k, n in keys.items() if n > 1], "duplicate ExternalIds"
        return {x["value"]: c for c in contacts for x in c.get("externalIds") or []}

    def assert_exact(self) -> None:
        want = expected_contacts(
            self.crm_path, datetime(2000, 1, 1, tzinfo=UTC), NOW, strict_dots=True
        )
        held = self.genesys()
        assert set(held) == set(want)
        wrong = [
            k
            for k, c in want.items()
            if (held[k].get("firstName"), held[k].get("lastName")) != (c.first_name, c.last_name)
        ]
        assert not wrong
        assert self.store.counts()["intents_pending"] == 0

    def hard_delete(self, keys: list[str]) -> None:
        """Delete every row of `keys` from the CRM, as a CRM purge does: no tombstone."""
        hard_delete(self.crm_path, keys)

    def writes_seen(self) -> int:
        return sum(1 for e in self.emulator.requests() if e.method == "POST" and "/bulk/" in e.path)


def hard_delete(crm_path: Path, keys: list[str]) -> None:
    """Delete every row of `keys` (keys padded with any whitespace too) from a demo CRM."""
    wanted = set(keys)
    with sqlite3.connect(crm_path) as conn:
        rows = conn.execute("SELECT id, account_number FROM contacts").fetchall()
        ids = [(i,) for i, key in rows if key is not None and key.strip() in wanted]
        conn.executemany("DELETE FROM contacts WHERE id = ?", ids)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_a_two_year_crm_in_small_chunks_ends_in_exact_parity(rig: Rig) -> None:
    seen: list[Progress] = []
    result = rig.run(on_progress=seen.append)

    totals = result.totals
    assert totals.accounted
    assert totals["extracted"] == 900 and totals["failed"] == 0
    # Keys met in several chunks: later versions update, later tombstones delete.
    assert totals["updated"] > 0 and totals["deleted"] > 0
    rig.assert_exact()
    assert [p.chunk for p in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].rows_done == seen[-1].rows_total == 900
    assert "ETA" in seen[0].line() and seen[0].requests > 0

    # A second full sync finds everything in place: no write, no lookup.
    before = rig.writes_seen()
    again = rig.run()
    assert again.totals["writes"] == 0 and again.totals["requests"] == 0
    assert rig.writes_seen() == before
    assert again.started_at > result.started_at  # a new full sync, a new T0


def test_an_interrupted_full_sync_resumes_at_the_first_unrecorded_chunk(rig: Rig) -> None:
    def stop_after_two(progress: Progress) -> None:
        if progress.chunk == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        rig.run(on_progress=stop_after_two)
    first = rig.store.last_full_sync("running")
    assert first is not None and first.chunks == 2
    added_before = rig.emulator.stats()["counters"].get("contacts_added", 0)

    result = rig.run()
    assert result.sync.id == first.id and result.started_at == first.started_at  # same T0
    assert result.resumed_from_chunk == 3
    assert result.totals.accounted and result.totals["extracted"] == 900
    rig.assert_exact()
    # Nothing created twice: every create of the resumed run is a new contact.
    added = rig.emulator.stats()["counters"]["contacts_added"]
    assert added == result.totals["created"]
    assert added - added_before < result.totals["created"]


def test_the_mirror_deletes_hard_deleted_rows_and_the_breaker_stops_a_mass_delete(
    rig: Rig,
) -> None:
    rig.run()
    live = sorted(rig.genesys())
    rig.hard_delete(live[:3])
    result = rig.run()
    assert result.mirror.candidates == 3 and result.mirror.deleted == 3
    rig.assert_exact()

    # A third of the CRM gone at once: refused, nothing deleted, the fix named.
    doomed = live[3 : 3 + len(live) // 3]
    rig.hard_delete(doomed)
    with pytest.raises(BreakerTripped) as refused:
        rig.run()
    message = str(refused.value)
    assert f"would delete {len(doomed)} of" in message
    assert f"confirm_deletes: {len(doomed)}" in message
    assert "CRM_GENESYS_MAX_DELETE_SHARE" in message
    assert set(doomed) <= set(rig.genesys())
    # A confirmation of another count does not do; the exact count does (and resumes: no chunk
    # is sent again, only the mirror runs).
    with pytest.raises(BreakerTripped):
        rig.run(confirm_deletes=len(doomed) + 1)
    done = rig.run(confirm_deletes=len(doomed))
    assert done.chunks_this_run == 0 and done.mirror.deleted == len(doomed)
    rig.assert_exact()


def test_a_dry_run_sends_nothing_and_leaves_the_state_as_it_was(rig: Rig) -> None:
    rig.run()
    live = sorted(rig.genesys())
    rig.hard_delete(live[:2])
    with sqlite3.connect(rig.crm_path) as conn:
        # Three contacts lose their work e-mail in the CRM: an update would clear it.
        conn.execute(
            "UPDATE contacts SET email = NULL, modified_at = '2026-11-29 12:00:00.000000' "
            "WHERE email LIKE '%@%.%' AND is_deleted = 0 AND id IN "
            "(SELECT id FROM contacts WHERE is_deleted = 0 ORDER BY id LIMIT 40)"
        )
    state_before = rig.store.snapshot().sort_values("business_key").reset_index(drop=True)
    writes = rig.writes_seen()

    result = rig.run(dry_run=True)
    preview = result.preview
    assert preview is not None
    assert preview.counts["delete"] >= 2  # the mirror's two, at least
    assert preview.counts["update"] > 0 and preview.counts["clear"] > 0
    assert "workEmail" in preview.cleared_fields
    assert preview.counts["quarantine"] > 0
    text = preview.markdown("Full sync")
    assert "@" not in text.replace("***@", "")  # e-mails only masked

    assert rig.writes_seen() == writes
    after = rig.store.snapshot().sort_values("business_key").reset_index(drop=True)
    assert after.equals(state_before)
    assert rig.store.last_full_sync("dry_run") is None  # its marks are gone


def test_a_mapped_column_missing_from_the_crm_stops_before_anything_is_read(rig: Rig) -> None:
    with sqlite3.connect(rig.crm_path) as conn:
        conn.execute("ALTER TABLE contacts RENAME COLUMN mobile_phone TO cell")
    with pytest.raises(MissingColumnsError, match="mobile_phone"):
        rig.run()
    assert rig.writes_seen() == 0


def test_store_resumes_the_unfinished_full_sync_and_restart_abandons_it(tmp_path: Path) -> None:
    store = SyncStateStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    store.create_all()
    first = store.open_full_sync("run-1")
    store.record_full_sync_chunk(first.id, cursor=41, counts={"extracted": 5}, keys=["A", "B"])
    resumed = store.open_full_sync("run-2")
    assert (resumed.id, resumed.cursor, resumed.chunks) == (first.id, 41, 1)
    assert resumed.counts["extracted"] == 5 and resumed.run_id == "run-2"
    fresh = store.open_full_sync("run-3", restart=True)
    assert fresh.id != first.id and fresh.cursor is None
    assert store.full_sync(first.id).status == "abandoned"  # type: ignore[union-attr]


def test_reading_in_a_child_process_gives_the_same_end_state(rig: Rig) -> None:
    result = rig.run(read_in_process=True)

    assert result.totals.accounted and result.totals["failed"] == 0
    assert result.chunks_this_run > 2
    rig.assert_exact()


def test_the_reading_process_ends_when_the_run_is_killed(tmp_path: Path) -> None:
    """A run's process SIGKILLed mid-sync leaves no reading process behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    generate_demo_crm(tmp_path / "crm.sqlite", rows=300, seed=4, now=NOW)
    script = f"""
import os, sys, time
from crm_genesys import settings
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.sync.full import CrmChunks, _Reader
mapping = load_mapping(settings.DEMO_MAPPING)
source = SqlCrmSource("sqlite:///{tmp_path / "crm.sqlite"}", "contacts", "modified_at")
reader = _Reader(CrmChunks(source, mapping, 50), None, in_process=True)
assert reader.in_child and reader.next() is not None
print(*[p.pid for p in reader.pool._processes.values()], flush=True)
time.sleep(600)
"""
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    (child,) = [int(p) for p in run.stdout.readline().split()]
    os.kill(child, 0)  # alive while the run is
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the reading process outlived the killed run")
