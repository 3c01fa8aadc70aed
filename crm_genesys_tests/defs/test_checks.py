"""The data-quality checks a reviewer reads in the UI, and the blocking one that stops a window."""

from __future__ import annotations

import pytest

from crm_genesys_tests.defs.conftest import WINDOWS, World

NORMALIZED_CHECKS = {
    "e164_coverage",
    "quarantine_rate",
    "schema_drift",
    "identifier_collisions",
    "denied_columns_seen",
}


def _evaluations(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_every_check_reports_with_metadata(world: World) -> None:
    evaluations = _evaluations(world.materialize(WINDOWS[0]))

    assert NORMALIZED_CHECKS | {
        "crm_times",
        "mass_clear",
        "dead_letters",
        "screen_pop_ready",
    } == set(evaluations)
    quarantine = evaluations["quarantine_rate"]
    assert quarantine.passed
    assert quarantine.metadata["quarantined"].value > 0
    # The demo CRM has PII columns: the extract never reads them, so a healthy window passes.
    denied = evaluations["denied_columns_seen"]
    assert denied.passed and "national_id" not in str(denied.metadata)
    # Every result names the window it judged (check history shows no partition).
    for evaluation in evaluations.values():
        assert (evaluation.description or "").startswith(f"window {WINDOWS[0]}")
        assert evaluation.metadata["window"].value == WINDOWS[0]


def test_schema_drift_is_reported_when_the_crm_grows_a_column(world: World) -> None:
    import sqlite3

    with sqlite3.connect(world.crm_path) as conn:
        conn.execute("ALTER TABLE contacts ADD COLUMN loyalty_tier TEXT")
    drift = _evaluations(world.materialize(WINDOWS[0]))["schema_drift"]
    assert not drift.passed
    assert "loyalty_tier" in str(drift.metadata)


def test_a_quarantine_rate_over_the_threshold_blocks_the_window(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_GENESYS_MAX_QUARANTINE_RATE", "0.0")
    result = world.materialize(WINDOWS[0], raise_on_error=False)

    assert not result.success
    assert not _evaluations(result)["quarantine_rate"].passed
    assert world.emulator.all_contacts() == []
    assert result.asset_materializations_for_node("genesys_sync") == []


def test_rows_whose_time_no_window_reads_are_reported_never_skipped(world: World) -> None:
    import sqlite3

    with sqlite3.connect(world.crm_path) as conn:
        ids = [i for (i,) in conn.execute("SELECT id FROM contacts ORDER BY id LIMIT 4")]
        conn.execute("UPDATE contacts SET modified_at = 'yesterday noon' WHERE id = ?", (ids[0],))
        conn.execute("UPDATE contacts SET modified_at = '  ' WHERE id = ?", (ids[1],))  # blank
        conn.execute(
            "UPDATE contacts SET modified_at = '2026-11-29 10:30:00+25:00' WHERE id = ?",
            (ids[2],),
        )
        conn.execute(
            "UPDATE contacts SET modified_at = '2099-01-01T00:00:00Z' WHERE id = ?", (ids[3],)
        )

    result = world.materialize(WINDOWS[0], raise_on_error=False)

    check = _evaluations(result)["crm_times"]
    assert not check.passed
    assert check.metadata["unreadable"].value == 2
    assert check.metadata["missing"].value == 1
    assert check.metadata["in_future"].value == 1
    assert "window 2026-11-29-10:00" in (check.description or "")
    samples = {r.data["crm_id"] for r in check.metadata["samples"].value.records}
    assert {str(i) for i in ids} <= samples
    assert result.success  # reported, not blocking: the other rows still sync
