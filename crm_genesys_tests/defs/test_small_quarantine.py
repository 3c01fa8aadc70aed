"""The quarantine breaker on the windows that fooled it.

- A window (or live range) of a few rows: one bad row of three is a third of the window, not a
  broken mapping. Such a window sends its valid rows with a warning; the breaker stops only
  windows of at least CRM_GENESYS_QUARANTINE_MIN_ROWS rows.
- A window run late: its valid rows were edited again since (into later windows), so what is
  left is mostly bad records that never synced. Once the sync holds contacts, the breaker counts
  what a broken mapping or extract makes: quarantined contacts it already syncs, and rows
  without a key. On a sync that holds none yet, every quarantined row counts.

Both found by the live benchmark: its windows, run after the live phase, failed on the blocking
check."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import dagster as dg
import pytest

from crm_genesys.crm.demo import format_modified
from crm_genesys_tests.defs.conftest import WINDOWS, World
from crm_genesys_tests.defs.test_live import live_run, materialization, window_start

# A window the demo CRM holds no row of (its rows lie in 10:00 and 11:00).
QUIET = "2026-11-29-08:00"
QUIET_AT = datetime.fromisoformat("2026-11-29T08:20:00+00:00")
# A window after them, as a late run finds it.
LATER = "2026-11-29-13:00"
LATER_AT = datetime.fromisoformat("2026-11-29T13:20:00+00:00")
CONTACT_POINTS = (
    "work_phone", "mobile_phone", "home_phone", "fax", "email", "personal_email", "other_email"
)  # fmt: skip


def _few_rows_mostly_bad(world: World, when: datetime) -> str:
    """Move three rows (distinct keys, an e-mail each) to `when`, two of them without a key:
    a range of one valid row and two quarantined. The valid row's account number."""
    with sqlite3.connect(world.crm_path) as conn:
        rows = conn.execute(
            "SELECT id, account_number FROM contacts WHERE is_deleted = 0 AND email LIKE '%@%' "
            "AND account_number IN (SELECT account_number FROM contacts "
            "GROUP BY account_number HAVING COUNT(*) = 1) ORDER BY id LIMIT 3"
        ).fetchall()
        stamp = format_modified(when)
        conn.executemany(
            "UPDATE contacts SET modified_at = ?, account_number = ? WHERE id = ?",
            [(stamp, key if n == 0 else None, row_id) for n, (row_id, key) in enumerate(rows)],
        )
    return str(rows[0][1]).strip()


def _quarantine_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_rate"
    ]
    return evaluation


def _held_keys(world: World) -> set[str]:
    return {
        ext["value"] for c in world.emulator.all_contacts() for ext in c.get("externalIds") or []
    }


def test_a_window_of_a_few_rows_mostly_bad_sends_its_valid_row_with_a_warning(
    world: World,
) -> None:
    valid = _few_rows_mostly_bad(world, QUIET_AT)
    result = world.materialize(QUIET, raise_on_error=False)

    assert result.success, "a window of three rows failed on its quarantine share"
    check = _quarantine_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "too few rows" in (check.description or "")
    summary = materialization(result, "genesys_sync")
    assert (summary["extracted"], summary["created"], summary["quarantined"]) == (3, 1, 2)
    assert valid in _held_keys(world)


def test_the_same_window_is_stopped_when_it_has_the_least_rows(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_GENESYS_QUARANTINE_MIN_ROWS", "3")
    valid = _few_rows_mostly_bad(world, QUIET_AT)
    result = world.materialize(QUIET, raise_on_error=False)

    assert not result.success
    check = _quarantine_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert valid not in _held_keys(world)


def test_a_live_range_of_a_few_rows_mostly_bad_is_sent_not_held(world: World) -> None:
    valid = _few_rows_mostly_bad(world, QUIET_AT)
    live = live_run(world, QUIET_AT - timedelta(seconds=1), QUIET_AT + timedelta(seconds=1))

    facts = materialization(live, "genesys_live_sync")
    assert facts["held"] == 0, "a live range of three rows was held for its quarantine share"
    assert facts["changes_sent"] == 1 and facts["quarantined"] == 2
    assert valid in _held_keys(world)


@pytest.mark.parametrize(
    ("quarantined", "rows", "min_rows", "blocks"),
    [
        (2, 3, 50, False),  # a third of three rows: too few to tell
        (0, 0, 1, False),  # an empty window
        (11, 50, 50, True),  # 22 % of the least rows
        (10, 50, 50, False),  # exactly the share is allowed
        (49, 49, 50, False),  # every row bad, one row short of the least
        (3, 3, 3, True),
    ],
)
def test_quarantine_blocks_on_the_share_of_enough_rows(
    quarantined: int, rows: int, min_rows: int, blocks: bool
) -> None:
    from crm_genesys.contacts.quality import quarantine_blocks

    assert quarantine_blocks(quarantined, rows, 0.2, min_rows) is blocks


def _rows_to_later(
    world: World,
    window: str,
    count: int,
    bad: int,
    *,
    keyless: bool = False,
    only: set[str] | None = None,
) -> list[str]:
    """Move `count` rows of single-row keys with an e-mail, modified in `window` (and of keys in
    `only`, when given), to LATER_AT; the first `bad` of them lose every contact point (or,
    `keyless`, their key). The keys of the bad rows."""
    start = window_start(window)
    with sqlite3.connect(world.crm_path) as conn:
        rows = [
            (row_id, str(key).strip())
            for row_id, key in conn.execute(
                "SELECT id, account_number FROM contacts WHERE is_deleted = 0 "
                "AND email LIKE '%@%' AND modified_at >= ? AND modified_at < ? "
                "AND account_number IN (SELECT account_number FROM contacts "
                "GROUP BY account_number HAVING COUNT(*) = 1) ORDER BY id",
                (format_modified(start), format_modified(start + timedelta(hours=1))),
            )
            if only is None or str(key).strip() in only
        ][:count]
        assert len(rows) == count
        conn.executemany(
            "UPDATE contacts SET modified_at = ? WHERE id = ?",
            [(format_modified(LATER_AT), row_id) for row_id, _ in rows],
        )
        broken = (
            "account_number = NULL" if keyless else ", ".join(f"{c} = NULL" for c in CONTACT_POINTS)
        )
        conn.executemany(
            f"UPDATE contacts SET {broken} WHERE id = ?", [(row_id,) for row_id, _ in rows[:bad]]
        )
    return [key for _, key in rows[:bad]]


def test_a_late_window_of_records_that_never_synced_sends_its_valid_rows(world: World) -> None:
    # An established sync; a window whose 60 rows include 30 bad records never synced.
    assert world.materialize(WINDOWS[0]).success
    _rows_to_later(world, WINDOWS[1], 60, 30)
    result = world.materialize(LATER, raise_on_error=False)

    assert result.success, "bad records that never synced stopped the window"
    check = _quarantine_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["counted_by_breaker"].value == 0
    assert "never synced" in (check.description or "")
    summary = materialization(result, "genesys_sync")
    assert summary["extracted"] == 60 and summary["quarantined"] >= 30
    assert summary["created"] == 60 - summary["quarantined"]


def test_the_same_window_on_a_sync_that_holds_nothing_yet_is_stopped(world: World) -> None:
    _rows_to_later(world, WINDOWS[1], 60, 30)
    result = world.materialize(LATER, raise_on_error=False)

    assert not result.success, "a first load half quarantined was sent"
    check = _quarantine_check(result)
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert _held_keys(world) == set()


def test_contacts_synced_before_that_no_longer_normalize_stop_the_window(world: World) -> None:
    assert world.materialize(WINDOWS[0]).success
    synced = _held_keys(world)
    broken = _rows_to_later(world, WINDOWS[0], 60, 30, only=synced)
    assert set(broken) <= synced  # rows of contacts the sync holds
    result = world.materialize(LATER, raise_on_error=False)

    assert not result.success
    check = _quarantine_check(result)
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["counted_by_breaker"].value == 30


def test_rows_without_a_key_stop_an_established_sync(world: World) -> None:
    assert world.materialize(WINDOWS[0]).success
    _rows_to_later(world, WINDOWS[1], 60, 30, keyless=True)
    result = world.materialize(LATER, raise_on_error=False)

    assert not result.success
    assert _quarantine_check(result).severity == dg.AssetCheckSeverity.ERROR


def test_a_person_confirms_a_stopped_window_with_its_quarantined_count(world: World) -> None:
    assert world.materialize(WINDOWS[0]).success
    synced = _held_keys(world)
    broken = _rows_to_later(world, WINDOWS[0], 60, 30, only=synced)
    stopped = world.materialize(LATER, raise_on_error=False)
    assert not stopped.success
    check = _quarantine_check(stopped)
    count = int(check.metadata["quarantined"].value)
    assert f"confirm_quarantined: {count}" in (check.description or "")  # the fix, named

    def confirmed(n: int) -> dict:
        return {"ops": {"normalized_contacts": {"config": {"confirm_quarantined": n}}}}

    # A count other than what was reviewed confirms nothing.
    wrong = world.materialize(LATER, raise_on_error=False, run_config=confirmed(count - 1))
    assert not wrong.success
    assert _quarantine_check(wrong).severity == dg.AssetCheckSeverity.ERROR

    accepted = world.materialize(LATER, raise_on_error=False, run_config=confirmed(count))
    assert accepted.success
    check = _quarantine_check(accepted)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "confirmed in run config" in (check.description or "")
    summary = materialization(accepted, "genesys_sync")
    assert summary["quarantined"] == count and summary["accounted"] is True
    # The quarantined rows were not sent: Genesys keeps those contacts as they were.
    assert set(broken) <= {k for k, c in _by_key(world).items() if _has_contact_point(c)}


def _by_key(world: World) -> dict[str, dict]:
    return {
        ext["value"]: c for c in world.emulator.all_contacts() for ext in c.get("externalIds") or []
    }


def _has_contact_point(contact: dict) -> bool:
    slots = ("workPhone", "cellPhone", "homePhone", "otherPhone")
    emails = ("workEmail", "personalEmail", "otherEmail")
    return any(contact.get(s) for s in (*slots, *emails))
