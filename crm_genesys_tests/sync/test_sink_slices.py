"""The sink plans a window in slices: the first batch leaves once the first slice is planned, the
rest is read and planned while earlier batches are in flight, and the accounting is the same
whatever the slice size."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crm_genesys.state.store import DeleteWrite, IntentWrite, StateWrite, SyncStateStore
from crm_genesys.sync.sink import BATCHES_PER_SLOT, SyncReport, apply_changes
from crm_genesys_tests.sync.fake_api import FakeContactsApi, payload_of
from crm_genesys_tests.sync.helpers import body_for, canonical, change, changeset, content_hash

SOURCE = "src-crm"


def run(cs: Any, api: FakeContactsApi, store: SyncStateStore, **kw: Any) -> SyncReport:
    kw.setdefault("round_delay", 0)
    kw.setdefault("window", "w1")
    return asyncio.run(apply_changes(cs, api, store, source_id=SOURCE, **kw))


class _WatchedStore(SyncStateStore):
    """A store that records how many keys' state each `snapshot` has read (once done), and
    holds every read after the first until a request has been sent (at most `deadline`
    seconds): a sink that reads the whole window before sending cannot pass, one that
    pipelines never waits long."""

    def __init__(self, url: str, sent: threading.Event, deadline: float = 20.0) -> None:
        super().__init__(url)
        self.sent = sent
        self.deadline = deadline
        self.reads: list[int] = []
        self.started = False
        self.lock = threading.Lock()

    def snapshot(self, keys: Any = None) -> Any:
        wanted = None if keys is None else list(keys)
        with self.lock:
            later = self.started
            self.started = True
        if later:
            self.sent.wait(self.deadline)
        frame = super().snapshot(wanted)
        with self.lock:
            self.reads.append(-1 if wanted is None else len(wanted))
        return frame


def test_the_first_request_leaves_before_the_rest_of_the_window_is_read(tmp_path: Path) -> None:
    sent = threading.Event()
    store = _WatchedStore(f"sqlite:///{tmp_path / 'state.sqlite'}", sent)
    store.create_all()
    read_at_first_send: list[int] = []

    class Watching(FakeContactsApi):
        async def bulk_add(self, entities):  # type: ignore[no-untyped-def]
            if not sent.is_set():
                read_at_first_send.append(sum(max(n, 0) for n in store.reads))
                sent.set()
            return await super().bulk_add(entities)

    api = Watching()
    n, batch_size, in_flight = 200, 5, 2
    report = run(
        changeset([change(f"K{i:04d}", "create", 1) for i in range(n)]),
        api,
        store,
        batch_size=batch_size,
        max_in_flight=in_flight,
    )
    assert (report.created, report.failed, report.total) == (n, 0, n)
    # Only the first slice (enough for the batches in progress) was read before sending.
    assert read_at_first_send == [BATCHES_PER_SLOT * in_flight * batch_size]
    assert -1 not in store.reads and sum(store.reads) == n  # every key read once, by slice
    assert len(api.by_external_id(SOURCE)) == n
    assert all(len(v) == 1 for v in api.by_external_id(SOURCE).values())


# ------------------------------------------------------------------ accounting per slice size

# What a key is before the run: its state row, and a pending intent of a crashed run.
STATES = ("none", "same", "other", "newer", "deleted")
INTENTS = ("none", "landed", "lost")
OPS = ("create", "update", "delete")
REPORT_FIELDS = (
    "created",
    "updated",
    "deleted",
    "dead_lettered",
    "failed",
    "stale_skipped",
    "resolved_intents",
    "unresolved_intents",
    "already_applied",
    "recreated",
    "relocated",
    "deferred",
    "item_retries",
)


def _ext(key: str) -> list[dict[str, Any]]:
    return [{"externalSource": {"id": SOURCE}, "value": key}]


def _window(
    keys: list[tuple[str, str, list[tuple[str, int]]]],
) -> tuple[FakeContactsApi, list[dict[str, Any]], Any]:
    """The api, change rows and a setup(store) for `keys`: (state, intent, [(op, version)])."""
    api = FakeContactsApi()
    ids: dict[str, str] = {}
    for i, (state, intent, _) in enumerate(keys):
        key = f"K{i:03d}"
        if state in ("same", "other", "newer"):
            body = body_for(key, 1 if state != "same" else 5)
            ids[key] = (
                asyncio.run(api.bulk_add([{**body, "externalIds": _ext(key)}]))[0].contact_id or ""
            )
        elif intent == "landed":
            asyncio.run(api.bulk_add([{**body_for(key, 5), "externalIds": _ext(key)}]))
    rows: list[dict[str, Any]] = []
    for i, (_, _, changes) in enumerate(keys):
        key = f"K{i:03d}"
        for op, version in changes:
            rows.append(change(key, op, version, contact_id=ids.get(key)))

    def setup(store: SyncStateStore) -> None:
        writes, intents, deleted = [], [], []
        for i, (state, intent, _) in enumerate(keys):
            key = f"K{i:03d}"
            if state == "same":
                digest = content_hash(canonical(body_for(key, 5)))
                writes.append(StateWrite(key, ids[key], digest, 5))
            elif state == "other":
                writes.append(StateWrite(key, ids[key], "old-hash", 1))
            elif state == "newer":
                writes.append(StateWrite(key, ids[key], "newer-hash", 9))
            elif state == "deleted":
                deleted.append(key)
            if state in ("none", "deleted") and intent != "none":
                intents.append(IntentWrite(key, 5, content_hash(canonical(body_for(key, 5)))))
        store.record_created(writes, window="before")
        if deleted:
            store.record_deleted([DeleteWrite(k, 1) for k in deleted], window="before")
        if intents:
            store.add_intents(intents, run_id="crashed", window="w0")

    return api, rows, setup


def _outcome(
    tmp: Path, keys: list[tuple[str, str, list[tuple[str, int]]]], slice_changes: int | None
) -> tuple[dict[str, int], list[Any], dict[str, int]]:
    api, rows, setup = _window(keys)
    store = SyncStateStore(f"sqlite:///{tmp / f'state-{slice_changes}.sqlite'}")
    store.create_all()
    setup(store)
    report = run(changeset(rows), api, store, batch_size=2, max_in_flight=2,
                 slice_changes=slice_changes)  # fmt: skip
    assert report.total == len(rows)
    counts = {name: asdict(report)[name] for name in REPORT_FIELDS}
    snap = store.snapshot().sort_values("business_key")
    state = [
        (r.business_key, r.content_hash, int(r.crm_version), bool(r.deleted), bool(r.contact_id))
        for r in snap.itertuples()
    ]
    held = {key: len(contacts) for key, contacts in api.by_external_id(SOURCE).items() if contacts}
    # What Genesys holds for each live state row is the content state says it holds.
    for r in snap[~snap.deleted].itertuples():
        if r.content_hash not in ("", "newer-hash", "old-hash"):
            body = payload_of(api.contacts[r.contact_id])
            assert content_hash(canonical(body)) == r.content_hash
    store.dispose()
    return counts, state, held


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(
        st.tuples(
            st.sampled_from(STATES),
            st.sampled_from(INTENTS),
            st.lists(st.tuples(st.sampled_from(OPS), st.integers(1, 9)), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=14,
    )
)
@example(  # every kind at least once
    keys=[
        ("none", "none", [("create", 2), ("create", 4)]),  # a duplicate: the older is stale
        ("none", "landed", [("create", 5)]),  # a crashed run's create landed: adopted
        ("none", "lost", [("create", 5)]),  # it never landed: created
        ("deleted", "landed", [("create", 6)]),  # landed, other content: then updated
        ("same", "none", [("update", 5)]),  # already applied
        ("other", "none", [("update", 3)]),  # updated
        ("newer", "none", [("update", 3)]),  # stale against state
        ("other", "none", [("delete", 4)]),  # deleted
        ("none", "none", [("delete", 4)]),  # a tombstone of a key never synced
        ("newer", "none", [("delete", 2), ("update", 1)]),  # stale twice
    ]
)
def test_property_accounting_is_the_same_whatever_the_slice_size(
    tmp_path_factory: pytest.TempPathFactory, keys: list[tuple[str, str, list[tuple[str, int]]]]
) -> None:
    """A mixed window (duplicates, pending intents that landed or not, stale and applied
    versions, updates, deletes, tombstones of unknown keys) ends the same, counted the same,
    planned in slices of 1, of 3, by default, or as one slice."""
    tmp = tmp_path_factory.mktemp("slices")
    outcomes = [_outcome(tmp, keys, size) for size in (None, 1, 3, 10_000)]
    first = outcomes[0]
    for other in outcomes[1:]:
        assert other == first
    counts, _, held = first
    assert all(n == 1 for n in held.values())  # never a duplicate contact
    assert counts["failed"] == 0
    rows = sum(len(changes) for _, _, changes in keys)
    assert sum(counts[b] for b in ("created", "updated", "deleted", "stale_skipped")) == rows


@pytest.mark.parametrize("slice_changes", [0, -1])
def test_slice_size_must_be_positive(tmp_path: Path, slice_changes: int) -> None:
    store = SyncStateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    store.create_all()
    with pytest.raises(ValueError, match="slice_changes"):
        run(changeset([change("A", "create", 1)]), FakeContactsApi(), store,
            slice_changes=slice_changes)  # fmt: skip


@pytest.mark.parametrize("lag", [0.0, 100.0])
def test_the_windows_own_intents_on_keys_of_a_later_slice_are_never_created_blindly(
    tmp_path: Path, lag: float
) -> None:
    # The window's pending intents are read with the first slice; their keys come up slices
    # later. Looked up then (lag 0) they are adopted or created once; not trustworthy yet (a
    # fresh intent, lookups lagging 100 s) they must wait for a later run, whichever slice
    # they are in.
    store = SyncStateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    store.create_all()
    api = FakeContactsApi(lookup_lag_seconds=lag)
    rows = [change(f"K{i:03d}", "create", 1) for i in range(11)]
    landed, lost = rows[9], rows[10]
    asyncio.run(api.bulk_add([{**body_for("K009", 1), "externalIds": _ext("K009")}]))
    api.written_at = {cid: 0.0 for cid in api.contacts}  # long enough ago for any lookup
    store.add_intents(
        [IntentWrite(r["business_key"], 1, r["content_hash"]) for r in (landed, lost)],
        run_id="crashed",
        window="w1",
    )
    api.requests.clear()
    report = run(changeset(rows), api, store, slice_changes=2, batch_size=2)
    added = [ext["value"] for c in api.contacts.values() for ext in c["externalIds"]]
    assert sorted(added) == sorted(set(added))  # never a duplicate
    if lag == 0:
        assert (report.created, report.failed, report.resolved_intents) == (11, 0, 2)
        assert store.counts()["intents_pending"] == 0
    else:
        assert (report.created, report.failed, report.deferred) == (9, 2, 2)
        assert report.failure_reasons == {"lookup_lag": 2}
        assert sorted(added) == [f"K{i:03d}" for i in range(10)]  # K010 waits, K009 as it was
        assert store.counts()["intents_pending"] == 2
