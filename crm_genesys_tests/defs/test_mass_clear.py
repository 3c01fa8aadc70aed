"""The mass-clear breaker: a window whose updates would blank a field on many contacts stops
before anything is sent, shows the field, the counts and masked samples, and goes through once a
person confirms it in run config."""

from __future__ import annotations

import sqlite3

from crm_genesys_tests.defs.conftest import WINDOWS, World

LATER = "2026-11-29 11:30:00.000000"  # inside WINDOWS[1]


def _blank_work_phones(world: World) -> set[str]:
    """The CRM loses every work phone of WINDOWS[0]'s rows (a broken export, a renamed column
    filled with blanks): each row becomes a newer version without it. Their business keys."""
    where = (
        "modified_at >= '2026-11-29 10:00' AND modified_at < '2026-11-29 11:00' "
        "AND work_phone IS NOT NULL AND is_deleted = 0"
    )
    with sqlite3.connect(world.crm_path) as conn:
        keys = {
            k.strip()
            for (k,) in conn.execute(f"SELECT account_number FROM contacts WHERE {where}")
            if k
        }
        conn.execute(
            f"UPDATE contacts SET work_phone = NULL, modified_at = ? WHERE {where}", (LATER,)
        )
        # A key with another row that still has a work phone (a CRM duplicate) keeps it.
        kept = {
            k.strip()
            for (k,) in conn.execute(
                "SELECT account_number FROM contacts WHERE work_phone IS NOT NULL"
            )
            if k
        }
    return keys - kept - {""}


def _work_phones(world: World, keys: set[str]) -> int:
    """How many contacts of `keys` Genesys holds a work phone for."""
    return sum(
        1
        for c in world.emulator.all_contacts()
        if c.get("workPhone") and {e["value"] for e in c.get("externalIds") or []} & keys
    )


def test_a_window_that_would_clear_a_field_on_most_contacts_stops_until_confirmed(
    world: World,
) -> None:
    assert world.materialize(WINDOWS[0]).success
    keys = _blank_work_phones(world)
    held = _work_phones(world, keys)
    assert held > 20
    mark = max(r.seq for r in world.emulator.requests())

    stopped = world.materialize(WINDOWS[1], raise_on_error=False)

    assert not stopped.success
    (check,) = [e for e in stopped.get_asset_check_evaluations() if e.check_name == "mass_clear"]
    assert not check.passed
    assert "workPhone" in (check.description or "")
    assert "confirm_clears" in (check.description or "")
    table = check.metadata["clears"].value
    row = next(r for r in table.records if r.data["field"] == "workPhone")  # type: ignore[union-attr]
    assert row.data["contacts"] > 20 and row.data["over_limit"] is True
    assert "AC-0" in row.data["samples"] and "*" in row.data["samples"]
    writes = [r for r in world.emulator.requests(since=mark) if "/bulk/contacts/update" in r.path]
    assert writes == [], "an update was sent although the breaker stopped the window"
    assert _work_phones(world, keys) == held

    confirmed = world.materialize(
        WINDOWS[1],
        run_config={"ops": {"contact_changes": {"config": {"confirm_clears": ["workPhone"]}}}},
    )
    assert confirmed.success
    # Rows left with no phone or e-mail at all are quarantined: Genesys keeps their contact.
    quarantined = set(confirmed.output_for_node("normalized_contacts").quarantine["business_key"])
    assert _work_phones(world, keys - quarantined) == 0


def test_a_few_cleared_fields_pass(world: World) -> None:
    assert world.materialize(WINDOWS[0]).success
    with sqlite3.connect(world.crm_path) as conn:
        conn.execute(
            "UPDATE contacts SET work_phone = NULL, modified_at = ? WHERE rowid IN ("
            "SELECT rowid FROM contacts WHERE work_phone IS NOT NULL AND is_deleted = 0 "
            "AND modified_at >= '2026-11-29 10:00' AND modified_at < '2026-11-29 11:00' "
            "LIMIT 2)",
            (LATER,),
        )
    result = world.materialize(WINDOWS[1])
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "mass_clear"]
    assert check.passed
