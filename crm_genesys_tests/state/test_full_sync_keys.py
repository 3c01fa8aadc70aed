"""The full sync's seen-key marks (the mirror's evidence), on SQLite and on PostgreSQL
(`db_backend`, see crm_genesys_tests/conftest.py): recorded with each chunk in bulk,
idempotent, per full sync, and what the mirror reads from them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_genesys.state.store import WRITE_CHUNK, StateWrite, SyncStateStore, full_sync_keys

# Business keys as a CRM may hold them (PostgreSQL text holds no NUL).
KEYS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
               min_size=1, max_size=12)  # fmt: skip


@pytest.fixture
def store(db_url: str) -> Iterator[SyncStateStore]:
    with SyncStateStore(db_url) as s:
        s.create_all()
        yield s


def _unseen(store: SyncStateStore, sync_id: str) -> list[str]:
    return [r.business_key for r in store.unseen_live(sync_id, limit=1_000_000)]


def test_marks_are_idempotent_per_sync_and_read_by_the_mirror(store: SyncStateStore) -> None:
    live = [f"K{i:05d}" for i in range(2 * WRITE_CHUNK + 7)]  # marks: over one driver batch
    store.record_created([StateWrite(k, f"c-{k}", "h", 1) for k in live])
    first = store.open_full_sync("run-1")
    marked = live[::2]
    extra = ["NOT-IN-STATE", 'it\'s "quoted"', "é∂"]
    store.record_full_sync_chunk(
        first.id, cursor=10, counts={"extracted": 1}, keys=marked + marked[:50] + extra
    )
    # A re-read chunk marks again (a resumed run): no error, no second mark.
    store.record_full_sync_chunk(first.id, cursor=20, counts={"extracted": 2}, keys=marked[:10])
    store.record_full_sync_chunk(first.id, cursor=30, counts={"extracted": 3}, keys=[])
    assert _unseen(store, first.id) == live[1::2]
    assert store.count_unseen_live(first.id) == len(live[1::2])
    with store.engine.connect() as conn:
        held = conn.execute(sa.select(full_sync_keys.c.business_key)).scalars().all()
    assert sorted(held) == sorted(set(marked + extra))
    progress = store.full_sync(first.id)
    assert progress is not None and (progress.cursor, progress.chunks) == (30, 3)
    # Marks belong to their full sync: a restart abandons them.
    second = store.open_full_sync("run-2", restart=True)
    assert second.id != first.id
    assert _unseen(store, second.id) == live


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    live=st.sets(KEYS, max_size=40),
    batches=st.lists(st.lists(KEYS, max_size=30), max_size=4),
)
def test_unseen_live_is_state_minus_every_mark(
    new_db_url, live: set[str], batches: list[list[str]]
) -> None:
    with SyncStateStore(new_db_url()) as store:
        store.create_all()
        store.record_created([StateWrite(k, f"c{i}", "h", 1) for i, k in enumerate(live)])
        sync = store.open_full_sync("run")
        for n, keys in enumerate(batches):
            store.record_full_sync_chunk(sync.id, cursor=n, counts={}, keys=keys)
        seen = {k for keys in batches for k in keys}
        assert set(_unseen(store, sync.id)) == live - seen
        assert store.count_unseen_live(sync.id) == len(live - seen)
