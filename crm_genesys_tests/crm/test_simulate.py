"""The activity simulator: each kind of activity, stamped in the window holding `now`."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from crm_genesys.crm.demo import DemoMeta, parse_modified, read_demo_meta
from crm_genesys.crm.instants import window_floor
from crm_genesys.crm.simulate import next_window_now, simulate_activity
from crm_genesys.crm.source import SqlCrmSource

from .conftest import NOW, rows_of

BUSINESS = (
    "account_number", "first_name", "last_name", "country", "work_phone", "mobile_phone",
    "email", "customer_tier", "notes", "national_id",
)  # fmt: skip


def latest_by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["modified_at"], r["id"])):
        key = (r["account_number"] or "").strip()
        if key:
            out[key] = r
    return out


def test_each_activity_lands_in_the_window_of_now(demo_copy: tuple[Path, DemoMeta]) -> None:
    path, meta = demo_copy
    before = rows_of(path)
    old = latest_by_key(before)
    summary = simulate_activity(
        path, now=NOW, seed=5, updates=40, deletes=8, reindex=20, creates=15, new_column="segment"
    )
    after = rows_of(path)
    new = latest_by_key(after)
    start = window_floor(NOW, meta.window)
    assert (summary.window_start, summary.window_end) == (start, start + meta.window)
    assert (summary.updates, summary.deletes, summary.reindexes, summary.creates) == (40, 8, 20, 15)
    sets = [
        set(summary.updated_keys),
        set(summary.deleted_keys),
        set(summary.reindexed),
        set(summary.created_keys),
    ]
    assert sum(map(len, sets)) == len(set().union(*sets))  # disjoint

    touched = [r for r in after if start <= parse_modified(r["modified_at"]) < start + meta.window]
    assert len(touched) == summary.rows_touched
    assert all(parse_modified(r["modified_at"]) <= NOW for r in touched)
    assert len(after) == len(before) + 15

    for key in summary.updated_keys:
        assert new[key]["customer_tier"] != old[key]["customer_tier"]
        assert new[key]["id"] == old[key]["id"]
        assert (new[key]["mobile_phone"], new[key]["email"]) != (
            old[key]["mobile_phone"],
            old[key]["email"],
        )
        assert new[key]["segment"] is not None
        assert new[key]["modified_at"] > old[key]["modified_at"]
    for key in summary.deleted_keys:
        assert old[key]["is_deleted"] == 0 and new[key]["is_deleted"] == 1
        assert new[key]["first_name"] == old[key]["first_name"]  # row kept
    for key, (old_id, new_id) in summary.reindexed.items():
        assert old[key]["id"] == old_id and new[key]["id"] == new_id and new_id != old_id
        assert {c: new[key][c] for c in BUSINESS} == {c: old[key][c] for c in BUSINESS}
        assert new[key]["segment"] is None  # drift values only on updated/created rows
    ids = [r["id"] for r in after]
    assert len(ids) == len(set(ids))
    for key in summary.created_keys:
        assert key not in old and new[key]["is_deleted"] == 0 and new[key]["segment"]


def test_drift_column_is_visible_to_the_source(demo_copy: tuple[Path, DemoMeta]) -> None:
    path, _ = demo_copy
    source = SqlCrmSource(f"sqlite:///{path}", "contacts", "modified_at", "is_deleted", "id")
    assert "loyalty_band" not in source.columns()
    summary = simulate_activity(path, now=NOW, seed=1, new_column="loyalty_band")
    assert source.columns()[-1] == "loyalty_band"
    frame = source.extract(summary.window_start, summary.window_end)
    assert len(frame) == summary.rows_touched
    assert frame["loyalty_band"].notna().sum() == summary.updates + summary.creates
    # A second round with the same column adds no second column.
    simulate_activity(path, now=next_window_now(path, NOW), seed=2, new_column="loyalty_band")
    assert source.columns().count("loyalty_band") == 1


def test_rounds_record_their_windows_and_versions_move_forward(
    demo_copy: tuple[Path, DemoMeta],
) -> None:
    path, meta = demo_copy
    first = simulate_activity(path, now=NOW, seed=1, updates=30, deletes=0, reindex=0, creates=0)
    # Same window again, earlier `now`: stamps must still beat the versions written before.
    early = window_floor(NOW, meta.window) + timedelta(seconds=1)
    rows_before = latest_by_key(rows_of(path))
    second = simulate_activity(
        path, now=early, seed=2, updates=300, deletes=0, reindex=0, creates=0
    )
    rows_after = latest_by_key(rows_of(path))
    for key in set(first.updated_keys) & set(second.updated_keys):
        assert rows_after[key]["modified_at"] > rows_before[key]["modified_at"]
    later = next_window_now(path, NOW)
    simulate_activity(path, now=later, seed=3)
    stored = read_demo_meta(path)
    assert stored.activity_windows == (first.window_start, window_floor(later, meta.window))
    assert len(stored.data_windows()) == meta.windows + 2


def test_same_seed_same_activity(demo_db: tuple[Path, DemoMeta], tmp_path: Path) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    shutil.copy(demo_db[0], a)
    shutil.copy(demo_db[0], b)
    sa_ = simulate_activity(a, now=NOW, seed=9, new_column="x1")
    sb = simulate_activity(b, now=NOW, seed=9, new_column="x1")
    assert sa_ == sb
    assert rows_of(a) == rows_of(b)


def test_bad_arguments_change_nothing(demo_copy: tuple[Path, DemoMeta]) -> None:
    path, _ = demo_copy
    before = rows_of(path)
    with pytest.raises(ValueError):
        simulate_activity(path, now=NOW, seed=1, new_column="x; DROP TABLE contacts")
    with pytest.raises(ValueError):
        simulate_activity(path, now=NOW, seed=1, updates=10**6)
    assert rows_of(path) == before


def test_hard_deletes_remove_every_row_and_moved_phones_change_country(
    demo_copy: tuple[Path, DemoMeta],
) -> None:
    import phonenumbers

    path, _ = demo_copy
    old = latest_by_key(rows_of(path))
    summary = simulate_activity(
        path, now=NOW, seed=9, updates=30, deletes=3, reindex=5, creates=2,
        hard_deletes=6, phone_moves=10,
    )  # fmt: skip
    after = rows_of(path)
    keys = {(r["account_number"] or "").strip() for r in after}
    assert len(summary.hard_deleted_keys) == 6 and not keys & set(summary.hard_deleted_keys)
    assert not set(summary.hard_deleted_keys) & (
        set(summary.updated_keys) | set(summary.deleted_keys) | set(summary.reindexed)
    )
    new = latest_by_key(after)
    assert set(summary.moved_keys) <= set(summary.updated_keys) and len(summary.moved_keys) == 10
    for key in summary.moved_keys:
        country = (old[key]["country"] or "").strip().upper()
        for column in ("mobile_phone", "work_phone"):
            number = phonenumbers.parse(new[key][column])
            assert phonenumbers.is_valid_number(number)
            assert phonenumbers.region_code_for_number(number) != country or country == ""
