"""What the sync state is bound to (one org, one window length), and the window lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from crm_genesys.state.store import BindingMismatch, SyncStateStore, WindowLease


@pytest.fixture
def store(db_url: str) -> Iterator[SyncStateStore]:
    """A fresh store on SQLite and on PostgreSQL (`db_backend`)."""
    with SyncStateStore(db_url) as s:
        s.create_all()
        yield s


def test_a_binding_holds_its_first_value_for_good(store: SyncStateStore) -> None:
    assert store.binding("genesys_org") is None
    store.bind("genesys_org", "emulator:A", "the demo org")
    store.bind("genesys_org", "emulator:A", "the demo org again")  # same value: fine
    with pytest.raises(BindingMismatch) as refused:
        store.bind("genesys_org", "genesys:B", "a real org")
    assert refused.value.held == "the demo org" and refused.value.given == "a real org"
    assert store.binding("genesys_org") == ("emulator:A", "the demo org")


def test_of_two_concurrent_first_bindings_exactly_one_wins(store: SyncStateStore) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def bind(value: str) -> None:
        barrier.wait()
        try:
            store.bind("genesys_org", value, value)
            outcomes.append(value)
        except BindingMismatch:
            outcomes.append("refused")

    threads = [threading.Thread(target=bind, args=(f"org:{i % 2}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (held, _) = store.binding("genesys_org") or ("", "")
    assert outcomes.count(held) == 4 and outcomes.count("refused") == 4


def _acquire(store: SyncStateStore, holder: str, stale: bool = False) -> WindowLease | None:
    return store.acquire_window(
        "w", holder, host="h", pid=1, pid_started=2, stale=lambda lease: stale
    )


def test_a_window_lease_has_one_holder_until_released_or_stale(store: SyncStateStore) -> None:
    assert _acquire(store, "run-1") is None
    assert _acquire(store, "run-1") is None  # re-entrant for its holder
    held = _acquire(store, "run-2")
    assert held is not None and held.holder == "run-1" and held.pid_started == 2
    assert _acquire(store, "run-2", stale=True) is None  # the holder is gone: taken over
    assert (store.window_lease("w") or held).holder == "run-2"
    store.release_window("w", "run-1")  # not the holder: no effect
    assert (store.window_lease("w") or held).holder == "run-2"
    store.release_window("w", "run-2")
    assert store.window_lease("w") is None


def test_of_many_runs_taking_a_free_lease_at_once_exactly_one_gets_it(
    store: SyncStateStore,
) -> None:
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def take(holder: str) -> None:
        barrier.wait()
        if _acquire(store, holder) is None:
            winners.append(holder)

    threads = [threading.Thread(target=take, args=(f"run-{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert (store.window_lease("w") or pytest.fail("no lease")).holder == winners[0]
