"""The sync-state store: monotonic writes, snapshot, intents, dead letters, counts.

Every test that takes `store`, `db_url` or `new_db_url` runs on SQLite and on PostgreSQL
(`db_backend`, see crm_genesys_tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_genesys.state.store import (
    IN_CHUNK,
    MAX_CONNECTIONS,
    SNAPSHOT_COLUMNS,
    SQLITE_CONCURRENCY,
    DeadLetter,
    DeleteWrite,
    IntentWrite,
    StateWrite,
    SyncStateStore,
    metadata,
)


@pytest.fixture
def store(db_url: str) -> Iterator[SyncStateStore]:
    with SyncStateStore(db_url) as s:
        s.create_all()
        yield s


def test_create_all_is_idempotent(store: SyncStateStore, db_backend: str) -> None:
    store.create_all()
    store.create_all()
    assert store.dialect == db_backend
    assert store.counts() == {
        "contacts_live": 0,
        "contacts_deleted": 0,
        "intents_pending": 0,
        "dead_letters": 0,
    }


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_sqlite_uses_wal_and_waits_for_the_lock(store: SyncStateStore) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_repr_hides_password() -> None:
    s = SyncStateStore("postgresql+psycopg://user:hunter2@db.example/state")
    assert "hunter2" not in repr(s)


def test_a_server_store_runs_as_many_state_calls_as_it_has_connections(tmp_path) -> None:
    # A sink's state threads: each waits on its own round trip to a server; SQLite has one
    # writer, so a few are enough.
    server = SyncStateStore("postgresql+psycopg://user@db.example/state")
    assert server.concurrency == MAX_CONNECTIONS > SQLITE_CONCURRENCY
    assert SyncStateStore(f"sqlite:///{tmp_path / 's.sqlite'}").concurrency == SQLITE_CONCURRENCY


def test_snapshot_columns_types_and_key_filter(store: SyncStateStore) -> None:
    empty = store.snapshot()
    assert list(empty.columns) == SNAPSHOT_COLUMNS and len(empty) == 0
    store.record_created([StateWrite(f"K{i}", f"c{i}", f"h{i}", i) for i in range(10)], window="w")
    store.record_deleted([DeleteWrite("K3", 100)])
    snap = store.snapshot(["K1", "K3", "missing", "K1"]).set_index("business_key")
    assert sorted(snap.index) == ["K1", "K3"]
    assert snap.loc["K1"].tolist() == ["c1", "h1", 1, False]
    assert snap.loc["K3"].tolist() == [None, "", 100, True]
    full = store.snapshot()
    assert len(full) == 10
    assert str(full.crm_version.dtype) == "int64" and str(full.deleted.dtype) == "bool"


def test_snapshot_chunks_large_key_lists(store: SyncStateStore) -> None:
    n = IN_CHUNK * 2 + 7
    store.record_created([StateWrite(f"K{i:06d}", f"c{i}", "h", i) for i in range(n)])
    keys = [f"K{i:06d}" for i in range(0, n, 1)] + ["nope"]
    assert len(store.snapshot(keys)) == n


def _empty(store: SyncStateStore) -> None:
    """Delete every row (a fresh database per hypothesis example would cost a CREATE DATABASE)."""
    with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


# Writes are (kind, key, version, contact id); the final row of a key must be the last write
# among those with the key's maximum version, whatever the order and batching.
write = st.tuples(
    st.sampled_from(["live", "deleted", "bump"]),
    st.sampled_from(["A", "B", "C"]),
    st.integers(0, 6),
    st.sampled_from(["c1", "c2", "c3"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(write, max_size=25), batch=st.integers(1, 5))
def test_property_any_interleaving_leaves_the_max_version(
    store: SyncStateStore, writes: list, batch: int
) -> None:
    _empty(store)
    expected: dict[str, tuple[int, bool, str | None]] = {}
    for start in range(0, len(writes), batch):
        with store.batch("w") as tx:
            for kind, key, version, cid in writes[start : start + batch]:
                current = expected.get(key)
                if kind == "bump":
                    tx.bump_versions(
                        pd.DataFrame({"business_key": [key], "crm_version": [version]})
                    )
                    if current is not None and current[0] < version:
                        expected[key] = (version, current[1], current[2])
                    continue
                if kind == "live":
                    tx.record_updated([StateWrite(key, cid, f"h{version}", version)])
                    row = (version, False, cid)
                else:
                    tx.record_deleted([DeleteWrite(key, version)])
                    row = (version, True, None)
                if current is None or current[0] <= version:
                    expected[key] = row
    snap = store.snapshot().set_index("business_key")
    got = {k: (int(r.crm_version), bool(r.deleted), r.contact_id) for k, r in snap.iterrows()}
    assert got == expected
    max_version = {}
    for kind, key, version, _ in writes:
        if kind != "bump" or key in max_version:
            max_version[key] = max(max_version.get(key, -1), version)
    assert {k: v[0] for k, v in got.items()} == {k: v for k, v in max_version.items() if k in got}


def test_one_batch_with_several_writes_of_a_key_keeps_the_newest(store: SyncStateStore) -> None:
    store.record_created(
        [
            StateWrite("A", "c5", "h5", 5),
            StateWrite("A", "c9", "h9", 9),
            StateWrite("A", "c7", "h", 7),
        ]
    )
    assert store.snapshot().contact_id.tolist() == ["c9"]


def test_concurrent_writers_leave_the_max_version(db_url: str) -> None:
    """Two connections (threads) racing on the same keys: the SQL guard keeps the newest."""
    url = db_url
    with SyncStateStore(url) as s:
        s.create_all()
    keys = [f"K{i}" for i in range(50)]
    errors: list[BaseException] = []

    def writer(versions: range, tag: str) -> None:
        s = SyncStateStore(url)
        try:
            for v in versions:
                s.record_updated([StateWrite(k, f"{tag}{v}", f"h{v}", v) for k in keys])
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            s.dispose()

    threads = [
        threading.Thread(target=writer, args=(range(0, 40, 2), "even")),
        threading.Thread(target=writer, args=(range(39, 0, -2), "odd")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with SyncStateStore(url) as s:
        snap = s.snapshot()
    assert set(snap.crm_version) == {39} and set(snap.contact_id) == {"odd39"}


def test_bump_versions_raises_only_and_ignores_unknown_keys(store: SyncStateStore) -> None:
    store.record_created([StateWrite("A", "c", "h", 5), StateWrite("B", "c", "h", 5)])
    store.bump_versions(
        pd.DataFrame({"business_key": ["A", "B", "B", "Z"], "crm_version": [9, 3, 4, 7]})
    )
    snap = store.snapshot().set_index("business_key")
    assert snap.crm_version.to_dict() == {"A": 9, "B": 5}
    assert snap.loc["A", "content_hash"] == "h"
    store.bump_versions(pd.DataFrame({"business_key": [], "crm_version": []}))


def test_intents_lifecycle(store: SyncStateStore) -> None:
    store.add_intents(
        [IntentWrite("A", 1, "ha"), IntentWrite("B", 1, "hb")], run_id="r1", window="w1"
    )
    store.add_intents([IntentWrite("A", 2, "ha2")], run_id="r2", window="w2")
    assert [(i.business_key, i.run_id) for i in store.pending_intents()] == [
        ("A", "r1"),
        ("B", "r1"),
        ("A", "r2"),
    ]
    assert [i.business_key for i in store.pending_intents(["B"])] == ["B"]
    assert [i.run_id for i in store.pending_intents(window="w2")] == ["r2"]
    assert [i.run_id for i in store.pending_intents(["A"], window="w1")] == ["r1"]
    # re-arming the same run's intent does not duplicate it
    store.add_intents([IntentWrite("B", 3, "hb3")], run_id="r1", window="w1")
    b = store.pending_intents(["B"])
    assert len(b) == 1 and (b[0].crm_version, b[0].content_hash) == (3, "hb3")
    store.resolve_intents(["A"], run_id="r1", contact_ids={"A": "cA"})
    # oldest first: B was re-armed after A's r2 intent
    assert [(i.business_key, i.run_id) for i in store.pending_intents()] == [
        ("A", "r2"),
        ("B", "r1"),
    ]
    store.resolve_intents(["A", "B"])  # any run
    assert store.pending_intents() == []
    assert store.counts()["intents_pending"] == 0


def test_dead_letters_are_idempotent_per_key_version_op(store: SyncStateStore) -> None:
    letter = DeadLetter("A", "crm-1", 5, "create", 400, "invalid.value", "bad email")
    store.dead_letter([letter], window="w1")
    store.dead_letter([letter], window="w1")
    store.dead_letter(
        [DeadLetter("A", "crm-1", 5, "create", 400, "invalid.value", "bad phone")], window="w1"
    )
    store.dead_letter([DeadLetter("B", None, 1, "update", 422, None, None)], window="w2")
    all_letters = store.dead_letters()
    assert len(all_letters) == 2
    w1 = store.dead_letters("w1")
    assert w1[
        ["business_key", "crm_id", "crm_version", "op", "status", "code", "reason"]
    ].values.tolist() == [["A", "crm-1", 5, "create", 400, "invalid.value", "bad phone"]]
    assert store.counts()["dead_letters"] == 2


def test_batch_is_one_transaction(store: SyncStateStore) -> None:
    with pytest.raises(RuntimeError), store.batch("w") as tx:
        tx.record_created([StateWrite("A", "c", "h", 1)])
        tx.add_intents([IntentWrite("A", 1, "h")], run_id="r")
        raise RuntimeError("crash inside the batch")
    assert len(store.snapshot()) == 0 and store.pending_intents() == []


def test_one_call_naming_a_key_twice_is_one_intent_and_one_letter(store: SyncStateStore) -> None:
    """Several writes of one row in one call leave one row, the last write's, on both backends
    (a multi-row upsert touching a row twice would be refused by PostgreSQL)."""
    store.add_intents(
        [IntentWrite("A", 1, "h1"), IntentWrite("B", 1, "hb"), IntentWrite("A", 2, "h2")],
        run_id="r",
        window="w",
    )
    intents = {i.business_key: (i.crm_version, i.content_hash) for i in store.pending_intents()}
    assert intents == {"A": (2, "h2"), "B": (1, "hb")}
    store.dead_letter(
        [
            DeadLetter("A", "crm-1", 5, "create", 400, "invalid.value", "bad email"),
            DeadLetter("A", "crm-1", 5, "create", 400, "invalid.value", "bad phone"),
        ],
        window="w",
    )
    assert store.dead_letters()["reason"].tolist() == ["bad phone"]


def test_concurrent_batches_in_opposite_key_orders_both_commit(db_url: str) -> None:
    """Two windows writing overlapping keys in opposite orders at once: both commit (row locks
    taken in one order, so PostgreSQL never has to abort one as a deadlock victim)."""
    with SyncStateStore(db_url) as s:
        s.create_all()
    keys = [f"K{i:04d}" for i in range(400)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(order: list[str], tag: str) -> None:
        with SyncStateStore(db_url) as s:
            start.wait()
            try:
                for v in range(15):
                    with s.batch(tag) as tx:
                        tx.record_updated([StateWrite(k, f"{tag}{v}", "h", v) for k in order])
                        tx.add_intents([IntentWrite(k, v, "h") for k in order], run_id=tag)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(keys, "up")),
        threading.Thread(target=writer, args=(keys[::-1], "down")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    with SyncStateStore(db_url) as s:
        assert set(s.snapshot().crm_version) == {14}
        assert len(s.pending_intents()) == 2 * len(keys)


def test_create_all_from_several_processes_at_once(db_url: str) -> None:
    """Workers starting together on a fresh database all get the schema, none fails."""
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def create() -> None:
        with SyncStateStore(db_url) as s:
            start.wait()
            try:
                s.create_all()
                s.record_created([StateWrite("A", "c", "h", 1)])
            except BaseException as exc:  # surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    with SyncStateStore(db_url) as s:
        assert s.counts()["contacts_live"] == 1


def test_claiming_free_keys_is_one_transaction_that_reads_their_state_and_intents(
    store: SyncStateStore,
) -> None:
    # Each transaction costs a few round trips on a distant store: a batch's claim is one.
    store.record_created([StateWrite("A", "c-a", "hash-a", 3)], window="w")
    store.add_intents([IntentWrite("B", 1, "hash-b")], run_id="crashed", window="w")
    begins: list[object] = []

    def began(conn: object) -> None:
        begins.append(conn)

    sa.event.listen(store.engine, "begin", began)
    claim = store.claim_keys(["C", "A", "B"], "me", stale=lambda holder, presence: False)
    sa.event.remove(store.engine, "begin", began)
    assert len(begins) == 1
    assert claim.claimed == ["A", "B", "C"] and claim.held == {}
    assert {k: (r.contact_id, r.crm_version) for k, r in claim.state.items()} == {"A": ("c-a", 3)}
    assert [(k, [i.content_hash for i in v]) for k, v in claim.intents.items()] == [
        ("B", ["hash-b"])
    ]
    # A key another live sink holds: not claimed, reported held, nothing read for it.
    other = store.claim_keys(["A", "D"], "other", stale=lambda holder, presence: False)
    assert other.claimed == ["D"] and other.held == {"A": "me"} and set(other.state) == set()
