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

    assert NORMALIZED_CHECKS | {"mass_clear", "dead_letters", "screen_pop_ready"} == set(
        evaluations
    )
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
