"""The sync against the `realistic` emulator: lookups lag writes (0–5 s), contacts are merged by
others, divisions are strict, other writers edit the contacts, requests may be refused whole.

Each scenario runs through Dagster (`sync_job`) across several seeds and ends with the same
promise: nothing of others destroyed, nothing duplicated, and a window that cannot be done right
fails with the platform's reason instead of pretending.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest

from crm_genesys import settings
from crm_genesys.defs.resources import CrmResource
from crm_genesys.emulator.faults import FaultConfig
from crm_genesys_tests.defs.conftest import WINDOWS, World

ACTIVITY = "2026-11-29-12:00"
IN_ACTIVITY = "2026-11-29 12:10:00.000000"


def _ours(contacts: list[dict]) -> dict[str, list[dict]]:
    """Contacts by our business key (the ExternalIds of the demo's External Source)."""
    out: dict[str, list[dict]] = {}
    for c in contacts:
        for ext in c.get("externalIds") or []:
            if str(ext.get("value", "")).startswith("AC-"):
                out.setdefault(str(ext["value"]), []).append(c)
    return out


def _sync_until_done(world: World, window: str, attempts: int = 6) -> None:
    """Run a window until it materializes, as the retry sensor would."""
    for _ in range(attempts):
        if world.materialize(window, raise_on_error=False).success:
            return
    raise AssertionError(f"window {window} did not complete in {attempts} runs")


def _touch(world: World, keys: list[str]) -> None:
    """The CRM updates these contacts (a new last name) in the activity window."""
    with sqlite3.connect(world.crm_path) as conn:
        for key in keys:
            conn.execute(
                "UPDATE contacts SET last_name = last_name || ' Jr', modified_at = ? "
                "WHERE trim(account_number) = ? AND is_deleted = 0",
                (IN_ACTIVITY, key),
            )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agent_edits_and_other_integrations_survive_every_later_update(
    world: World, seed: int
) -> None:
    real = world.realistic()
    _sync_until_done(real, WINDOWS[0])
    edits = real.emulator.run_foreign_writer(seed=seed, edits=25, merges=0)
    assert len(edits) >= 20
    by_id = {c["id"]: c for c in real.emulator.all_contacts()}
    edited_keys = sorted(
        {
            str(ext["value"])
            for e in edits
            for ext in by_id[e.contact_id].get("externalIds") or []
            if str(ext.get("value", "")).startswith("AC-")
        }
    )
    _touch(real, edited_keys)
    _sync_until_done(real, WINDOWS[1])
    _sync_until_done(real, ACTIVITY)

    after = {c["id"]: c for c in real.emulator.all_contacts()}
    with sqlite3.connect(world.root / "sync_state.sqlite") as conn:
        live_ids = {
            i for (i,) in conn.execute("SELECT contact_id FROM contact_state WHERE NOT deleted")
        }
    # A contact the CRM deleted is gone with its edits; every other edited contact is the same
    # contact (never deleted and re-created) and still holds what the other writer put there.
    gone = [e for e in edits if e.contact_id not in after]
    assert not [e for e in gone if e.contact_id in live_ids]
    lost = [e for e in edits if e.contact_id in after and not e.survives_in(after[e.contact_id])]
    assert not lost, f"foreign edits erased by the sync: {lost[:3]}"
    assert len(gone) < len(edits) // 2
    updated = [k for k in edited_keys if _ours(list(after.values())).get(k)]
    # The suffix the CRM added is there (a blank CRM last name becomes "Jr" once trimmed).
    assert all(
        _ours(list(after.values()))[k][0].get("lastName", "").endswith("Jr") for k in updated
    ), "the CRM's own update did not land"


@pytest.mark.parametrize("seed", [4, 5])
def test_lookup_lag_and_dropped_connections_never_duplicate_a_contact(
    world: World, seed: int
) -> None:
    real = world.realistic()
    real.emulator.set_faults(FaultConfig(seed=seed, p_drop_after_write=0.15, p_drop=0.05))
    for window in WINDOWS:
        _sync_until_done(real, window)
    real.emulator.set_faults(FaultConfig())

    keys = Counter(
        k for k, contacts in _ours(real.emulator.all_contacts()).items() for _ in contacts
    )
    duplicates = {k: n for k, n in keys.items() if n > 1}
    assert not duplicates, f"duplicated contacts: {duplicates}"
    with sqlite3.connect(world.root / "sync_state.sqlite") as conn:
        live = {
            k for (k,) in conn.execute("SELECT business_key FROM contact_state WHERE NOT deleted")
        }
        (pending,) = conn.execute(
            "SELECT count(*) FROM create_intents WHERE status = 'pending'"
        ).fetchone()
    assert live == set(keys)
    assert pending == 0


def test_an_update_of_a_merged_away_contact_lands_on_the_survivor(world: World) -> None:
    real = world.realistic()
    for window in WINDOWS:
        _sync_until_done(real, window)
    ours = _ours(real.emulator.all_contacts())
    pairs = list(zip(sorted(ours)[0:10:2], sorted(ours)[1:10:2], strict=True))
    for away, survivor in pairs:
        real.emulator.merge_contacts([ours[away][0]["id"]], into=ours[survivor][0]["id"])
    before = len(real.emulator.all_contacts())
    _touch(real, [away for away, _ in pairs])
    _sync_until_done(real, ACTIVITY)

    contacts = real.emulator.all_contacts()
    assert len(contacts) == before, "an update of a merged-away contact created a new contact"
    now = _ours(contacts)
    for away, survivor in pairs:
        (holder,) = now[away]
        assert holder["id"] == ours[survivor][0]["id"]
        assert holder.get("lastName", "").endswith(" Jr")


def test_a_division_the_org_does_not_have_fails_the_window_with_the_reason(
    world: World,
) -> None:
    mapping = world.root / "division.yaml"
    mapping.write_text(settings.DEMO_MAPPING.read_text() + "\ndivision: no-such-division\n")
    crm = CrmResource(database_url=world.crm.database_url, mapping_path=str(mapping))
    real = world.realistic().but(crm=crm)

    result = real.materialize(WINDOWS[0], raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = str(failure.step_failure_data.error)
    assert "no-such-division" in text and "Home" in text
    assert _ours(real.emulator.all_contacts()) == {}


@pytest.mark.parametrize(
    ("path", "status"), [("bulk/contacts/add", 403), ("bulk/contacts/add", 409)]
)
def test_a_request_refused_as_a_whole_fails_the_window_instead_of_dead_lettering(
    world: World, path: str, status: int
) -> None:
    real = world.realistic()
    real.emulator.set_faults(FaultConfig(refuse_path=path, refuse_status=status))

    result = real.materialize(WINDOWS[0], raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert str(status) in str(failure.step_failure_data.error)
    with sqlite3.connect(world.root / "sync_state.sqlite") as conn:
        (letters,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert letters == 0, "a refused request was dead-lettered item by item"
