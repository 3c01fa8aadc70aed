"""The store's side of the dead-letter drain: stamping, due windows, retry requests, clearing
letters whose change took effect, grouped counts, and the new columns on an existing store."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from crm_genesys.state.store import DeadLetter, DeleteWrite, StateWrite, SyncStateStore


def _store(tmp_path: Path) -> SyncStateStore:
    store = SyncStateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    store.create_all()
    return store


def _letter(key: str, version: int, op: str = "create", code: str = "invalid.value") -> DeadLetter:
    return DeadLetter(key, f"id-{key}", version, op, 400, code, "rejected")


def test_letters_are_due_when_the_mapping_changes_or_a_person_asks(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.dead_letter([_letter("A", 5), _letter("B", 5, code="other")], window="w1")
    store.dead_letter([_letter("C", 7)], window="w2")
    # Not stamped yet (a run that died before stamping): never due on its own.
    assert store.due_dead_letters("m1") == {}
    assert store.stamp_dead_letters("w1", "m1") == 2
    store.stamp_dead_letters("w2", "m1")
    assert store.due_dead_letters("m1") == {}
    assert store.due_dead_letters("m2") == {"w1": ["mapping_changed"], "w2": ["mapping_changed"]}

    assert store.request_dead_letter_retry(codes=["other"]) == 1
    (why,) = store.due_dead_letters("m1")["w1"]
    assert why.startswith("requested:")
    assert "w2" not in store.due_dead_letters("m1")
    # Trying the window again clears the request.
    store.stamp_dead_letters("w1", "m1")
    assert store.due_dead_letters("m1") == {}
    assert store.request_dead_letter_retry(keys=["C"], windows=["w1"]) == 0
    assert store.request_dead_letter_retry() == 3


def test_a_letter_leaves_once_its_change_or_a_newer_one_holds(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.dead_letter(
        [_letter("A", 5), _letter("B", 5, "update"), _letter("C", 5, "delete"), _letter("D", 5)],
        window="w1",
    )
    store.record_created([StateWrite("A", "c-a", "h", 5)])  # the create took effect
    store.record_created([StateWrite("B", "c-b", "h", 4)])  # still the older version
    store.record_created([StateWrite("C", "c-c", "h", 5)])  # the delete has not happened
    assert store.clear_resolved_dead_letters() == 1
    assert sorted(store.dead_letters()["business_key"]) == ["B", "C", "D"]
    store.record_deleted([DeleteWrite("C", 5)])
    store.record_updated([StateWrite("B", "c-b", "h2", 6)])  # a newer version synced
    assert store.clear_resolved_dead_letters() == 2
    assert store.dead_letters()["business_key"].tolist() == ["D"]


def test_the_summary_groups_letters_by_operation_status_and_code(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.dead_letter([_letter("A", 1), _letter("B", 1)], window="w1")
    store.dead_letter([_letter("C", 1, code="other")], window="w2")
    summary = store.dead_letter_summary()
    assert summary[["code", "letters", "windows"]].values.tolist() == [
        ["invalid.value", 2, 1],
        ["other", 1, 1],
    ]
    assert store.dead_letter_summary("w2")["letters"].tolist() == [1]


def test_an_existing_store_gets_the_new_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, business_key VARCHAR(255) NOT "
            "NULL, crm_id VARCHAR(255), crm_version BIGINT NOT NULL, op VARCHAR(16) NOT NULL, "
            'status INTEGER, code VARCHAR(255), reason TEXT, "window" VARCHAR(64), '
            "created_at DATETIME NOT NULL, CONSTRAINT uq_dead_letters_key_version_op UNIQUE "
            "(business_key, crm_version, op))"
        )
    engine.dispose()
    store = SyncStateStore(url)
    store.create_all()
    store.dead_letter([_letter("A", 1)], window="w1")
    store.stamp_dead_letters("w1", "m1")
    assert store.due_dead_letters("m2") == {"w1": ["mapping_changed"]}
