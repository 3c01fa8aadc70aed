"""The quarantine breaker on a window (or live range) of a few rows: one bad row of three is a
third of the window, not a broken mapping. Such a window sends its valid rows with a warning;
the breaker stops only windows of at least CRM_GENESYS_QUARANTINE_MIN_ROWS rows.

Found by the live benchmark: a window whose valid rows had all changed again later held only a
few rows, mostly bad ones, and its run failed on the blocking check."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import dagster as dg
import pytest

from crm_genesys.crm.demo import format_modified
from crm_genesys_tests.defs.conftest import World
from crm_genesys_tests.defs.test_live import live_run, materialization

# A window the demo CRM holds no row of (its rows lie in 10:00 and 11:00).
QUIET = "2026-11-29-08:00"
QUIET_AT = datetime.fromisoformat("2026-11-29T08:20:00+00:00")


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
