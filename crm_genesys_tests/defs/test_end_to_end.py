"""The whole sync through Dagster into the in-process emulator, checked against an independent
reading of the CRM (`crm_genesys_tests.oracle`, which shares no code with the pipeline)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime

from crm_genesys import settings
from crm_genesys.defs.resources import CrmResource
from crm_genesys.sync.accounting import BUCKETS
from crm_genesys_tests.defs.conftest import WINDOWS, World
from crm_genesys_tests.oracle import expected_contacts

WRITE_PATHS = ("/bulk/contacts/add", "/bulk/contacts/update", "/bulk/contacts/remove")


def _key_of(contact: dict) -> str:
    (external_id,) = contact["externalIds"]
    return external_id["value"]


def _writes(world: World, since: int) -> list:
    return [
        r
        for r in world.emulator.requests(since=since)
        if r.method in ("POST", "PUT", "PATCH", "DELETE")
        and (r.path.endswith(WRITE_PATHS) or r.path.rstrip("/").endswith("/contacts"))
    ]


def _sync_metadata(result) -> dict:
    (event,) = result.asset_materializations_for_node("genesys_sync")
    return {k: v.value for k, v in event.metadata.items()}


def test_two_windows_reach_genesys_exactly_as_the_crm_says(world: World) -> None:
    summaries = [_sync_metadata(world.materialize(key)) for key in WINDOWS]

    start = datetime.strptime(WINDOWS[0], "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
    end = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    # Consecutive dots make an address invalid (RFC 5321 dot-atom): such rows are quarantined.
    expected = expected_contacts(world.crm_path, start, end, strict_dots=True)
    contacts = world.emulator.all_contacts()
    keys = Counter(_key_of(c) for c in contacts)

    assert keys, "nothing reached the emulator"
    assert max(keys.values()) == 1, "a business key has two contacts"
    assert set(keys) == set(expected)
    for contact in contacts:
        want = expected[_key_of(contact)]
        assert contact.get("firstName") == want.first_name
        assert contact.get("lastName") == want.last_name

    for summary in summaries:
        assert summary["accounted"] is True
        assert summary["failed"] == 0
        assert summary["extracted"] == sum(summary[bucket] for bucket in BUCKETS)
    assert sum(s["created"] for s in summaries) >= len(expected)


def test_no_pii_value_reaches_genesys(world: World) -> None:
    for key in WINDOWS:
        world.materialize(key)
    with sqlite3.connect(world.crm_path) as conn:
        pii = conn.execute(
            "SELECT account_number, national_id, date_of_birth FROM contacts"
        ).fetchall()
    stored = {_key_of(c): json.dumps(c, ensure_ascii=False) for c in world.emulator.all_contacts()}
    national_ids = {n.strip() for _, n, _ in pii if n and n.strip()}
    everything = "\n".join(stored.values())
    assert national_ids
    assert not [n for n in national_ids if n in everything]
    # A birth date could equal some other customer's purchase date; a contact never carries its own.
    for account, _, birth in pii:
        key = (account or "").strip()
        if key in stored and birth:
            assert str(birth).strip() not in stored[key]


def test_a_second_run_sends_no_writes(world: World) -> None:
    for key in WINDOWS:
        world.materialize(key)
    mark = max(r.seq for r in world.emulator.requests())
    again = [_sync_metadata(world.materialize(key)) for key in WINDOWS]

    assert _writes(world, since=mark) == []
    # Unchanged contacts cost nothing at all: not even a token request.
    assert world.emulator.requests(since=mark) == []
    assert all(s["created"] == s["updated"] == s["deleted"] == 0 for s in again)
    assert all(s["accounted"] for s in again)


def test_a_mapping_that_names_a_pii_column_never_runs(world: World) -> None:
    mapping = settings.DEMO_MAPPING.read_text()
    evil = world.root / "evil.yaml"
    evil.write_text(mapping.replace("title: job_title", "title: national_id"))
    crm = CrmResource(database_url=world.crm.database_url, mapping_path=str(evil))

    result = world.but(crm=crm).materialize(WINDOWS[0], raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "national_id" in str(failure.step_failure_data.error)
    assert world.emulator.all_contacts() == []
