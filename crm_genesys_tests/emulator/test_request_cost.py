"""What a request costs the emulator does not grow with the org: every statement the request
path runs finds its rows through an index (no scan of contacts or their keys), one bulk request
reads each external source and contact schema it names once, new contact ids append to the id
index, and the org file, written without fsync, keeps every answered write of a killed server."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from crm_genesys.emulator.emulator import new_contact_id
from crm_genesys.emulator.store import WAL_CHECKPOINT_PAGES
from crm_genesys_tests.emulator.conftest import API, contact, make_org, realistic, run, session
from crm_genesys_tests.emulator.test_schemas import SCHEMA
from crm_genesys_tests.emulator_server import start_server

BULK = f"{API}/bulk/contacts"
ORG_TABLES = ("contacts", "contact_keys")


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def people(source: str, prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        contact(
            source,
            f"{prefix}-{i}",
            workPhone={"display": f"+1317555{i:04d}"},
            workEmail=f"{prefix}{i}@example.org",
            identifiers=[{"type": "Cookie", "value": f"{prefix}-cookie-{i}"}],
        )
        for i in range(n)
    ]


def full_scans(db: Path, statements: list[str]) -> dict[str, list[str]]:
    """The statements whose query plan reads a whole table of contacts or of their keys (or a
    whole index of one), with the plan's lines that do."""
    plans = sqlite3.connect(db)
    found: dict[str, list[str]] = {}
    try:
        for sql in dict.fromkeys(statements):
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            details = [row[3] for row in plans.execute(f"EXPLAIN QUERY PLAN {sql}")]
            scans = [d for d in details if d.startswith("SCAN") and any(t in d for t in ORG_TABLES)]
            aliased = [d for d in details if d.split(" USING")[0] in ("SCAN k", "SCAN c")]
            if scans or aliased:
                found[sql] = scans + aliased
    finally:
        plans.close()
    return found


def test_every_statement_of_the_request_path_searches_an_index(tmp_path: Path) -> None:
    """Adds, updates, fetches, lookups, claims, merges (lagging index, exclusive claims), scans
    and removes, as the sync and the org's other users make them."""
    db = tmp_path / "org.sqlite"
    org = make_org(db_path=db, realism=realistic(lag_min_s=1.0, lag_max_s=2.0))
    statements: list[str] = []
    org.app.emulator.store.trace(statements.append)

    async def go() -> None:
        client, h, source = await session(org)
        added = ok(
            await client.post(f"{BULK}/add", json={"entities": people(source, "A", 5)}, headers=h)
        )
        ids = sorted(r["id"] for r in added["results"])
        org.clock.advance(3)
        updates = [
            {**body, "id": cid, "title": "Dr"}
            for cid, body in zip(ids, people(source, "A", 5), strict=True)
        ]
        ok(await client.post(f"{BULK}/update", json={"entities": updates}, headers=h))
        ok(await client.post(BULK, json={"entities": [{"id": i} for i in ids]}, headers=h))
        lookup = {"type": "ExternalId", "value": "A-1", "externalSource": {"id": source}}
        ok(await client.post(f"{API}/identifierlookup/contacts", json=lookup, headers=h))
        org.clock.advance(3)
        ok(
            await client.get(
                f"{API}/reversewhitepageslookup", params={"lookupVal": "a2@example.org"}, headers=h
            )
        )
        ok(
            await client.get(
                f"{API}/reversewhitepageslookup", params={"lookupVal": "+13175550003"}, headers=h
            )
        )
        ok(await client.get(f"{API}/contacts/{ids[0]}", headers=h))
        one = ok(await client.get(f"{API}/contacts/{ids[1]}", headers=h))
        ok(
            await client.put(
                f"{API}/contacts/{ids[1]}", json={**one, "lastName": "Other"}, headers=h
            )
        )
        claim = {"operation": "Claim", "identifier": {"type": "Cookie", "value": "new-cookie"}}
        ok(await client.patch(f"{API}/contacts/{ids[2]}/identifiers", json=claim, headers=h))
        refused = await client.patch(f"{API}/contacts/{ids[3]}/identifiers", json=claim, headers=h)
        assert refused.status_code == 409, refused.text
        merged = ok(
            await client.post(f"{API}/contacts/merge", json={"contactIds": ids[:2]}, headers=h)
        )
        org.clock.advance(3)
        again = await client.post(
            f"{API}/contacts/merge", json={"contactIds": [merged["id"], ids[2]]}, headers=h
        )
        ok(again)
        ok(await client.get(f"{API}/contacts/{ids[0]}/unresolved", headers=h))
        ok(await client.get(f"{API}/scan/contacts", params={"limit": 10}, headers=h))
        removed = ok(
            await client.post(f"{BULK}/remove", json={"entities": [{"id": ids[4]}]}, headers=h)
        )
        assert removed["errorCount"] == 0
        assert (await client.delete(f"{API}/contacts/{ids[3]}", headers=h)).status_code == 200

    run(go())
    org.app.emulator.store.trace(None)
    tables = ("contacts", "contact_keys", "external_sources", "tokens")
    assert all(any(t in s for s in statements) for t in tables)  # the trace saw the path
    assert full_scans(db, statements) == {}


def test_a_merge_repoints_earlier_merges_through_an_index(tmp_path: Path) -> None:
    """The statement that finds the contacts merged into a merged-away one, on its own."""
    db = tmp_path / "org.sqlite"
    make_org(db_path=db)
    statement = "UPDATE contacts SET merged_into = 'b' WHERE merged_into = 'a'"
    assert full_scans(db, [statement]) == {}


def test_a_bulk_request_reads_each_source_and_schema_it_names_once(tmp_path: Path) -> None:
    org = make_org(db_path=tmp_path / "org.sqlite")
    statements: list[str] = []

    async def go() -> None:
        client, h, source = await session(org)
        schema = ok(await client.post(f"{API}/contacts/schemas", json=SCHEMA, headers=h))
        ref = {"id": schema["id"], "version": schema["version"]}
        bodies = [
            {**b, "schema": ref, "customFields": {"sms_checkbox": True}}
            for b in people(source, "S", 100)
        ]
        org.app.emulator.store.trace(statements.append)
        added = ok(await client.post(f"{BULK}/add", json={"entities": bodies}, headers=h))
        assert added["errorCount"] == 0
        ids = [r["id"] for r in added["results"]]
        updates = [{**b, "id": i} for b, i in zip(bodies, ids, strict=True)]
        assert (
            ok(await client.post(f"{BULK}/update", json={"entities": updates}, headers=h))[
                "errorCount"
            ]
            == 0
        )
        org.app.emulator.store.trace(None)

    run(go())
    sources = [s for s in statements if s.startswith("SELECT") and "FROM external_sources" in s]
    schemas = [s for s in statements if s.startswith("SELECT") and "FROM schemas" in s]
    assert len(sources) == 2  # one per request
    assert len(schemas) == 2


def test_a_bulk_request_still_sees_a_missing_source_or_schema(tmp_path: Path) -> None:
    """Asking once per request is not remembering across requests: a source deleted between
    two requests refuses the second request's contacts."""
    org = make_org(db_path=tmp_path / "org.sqlite")

    async def go() -> None:
        client, h, source = await session(org)
        assert (
            ok(
                await client.post(
                    f"{BULK}/add", json={"entities": people(source, "M", 3)}, headers=h
                )
            )["errorCount"]
            == 0
        )
        ok(await client.delete(f"{API}/externalsources/{source}", headers=h))
        refused = ok(
            await client.post(f"{BULK}/add", json={"entities": people(source, "N", 3)}, headers=h)
        )
        assert refused["errorCount"] == 3

    run(go())


def millisecond(contact_id: str) -> int:
    """The creation time a version-7 id carries (ms since the epoch)."""
    return int(contact_id.replace("-", "")[:12], 16)


def next_millisecond(after: int) -> None:
    """Return once the clock the ids read has passed millisecond `after` (5 s at most)."""
    deadline = time.monotonic() + 5
    while time.time_ns() // 1_000_000 <= after and time.monotonic() < deadline:
        pass


def test_contact_ids_are_guids_that_sort_by_the_millisecond_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_contact_id() for _ in range(1000)]
    next_millisecond(max(millisecond(i) for i in ids))
    later = new_contact_id()
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 1000
    for cid in (later, *ids):
        parsed = uuid.UUID(cid)
        assert str(parsed) == cid and parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= millisecond(cid) <= after
    assert later > max(ids)


def test_new_contacts_append_to_the_id_index(tmp_path: Path) -> None:
    """Contacts made in successive milliseconds are stored in id order: each insert into the id
    index goes after the last entry instead of onto a random page."""
    db = tmp_path / "org.sqlite"
    org = make_org(db_path=db)

    async def go() -> None:
        client, h, source = await session(org)
        for i in range(20):
            made = ok(
                await client.post(f"{API}/contacts", json=contact(source, f"K-{i}"), headers=h)
            )
            next_millisecond(millisecond(made["id"]))

    run(go())
    with sqlite3.connect(db) as conn:
        by_position = [row[0] for row in conn.execute("SELECT id FROM contacts ORDER BY seq")]
    assert len(by_position) == 20 and by_position == sorted(by_position)


def test_the_org_file_is_written_without_fsync_and_checkpointed_in_large_steps(
    tmp_path: Path,
) -> None:
    store = make_org(db_path=tmp_path / "org.sqlite").app.emulator.store
    statements: list[str] = []
    store.trace(statements.append)
    assert store.pragma("synchronous") == 0
    assert store.pragma("wal_autocheckpoint") == WAL_CHECKPOINT_PAGES
    assert store.pragma("journal_mode") == "wal"


def test_a_killed_server_keeps_every_contact_it_answered(tmp_path: Path) -> None:
    """No fsync loses nothing when the process dies: the pages are the OS's once written."""
    server = start_server("--data", str(tmp_path), "--rate-limit-per-minute", "100000")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            token = client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("demo-client", "demo-secret"),
            ).json()["access_token"]
            h = {"Authorization": f"Bearer {token}"}
            source = ok(client.post(f"{API}/externalsources", json={"name": "crm"}, headers=h))[
                "id"
            ]
            answered = set()
            for n in range(5):
                added = ok(
                    client.post(
                        f"{BULK}/add", json={"entities": people(source, f"P{n}", 100)}, headers=h
                    )
                )
                answered |= {r["id"] for r in added["results"] if r["success"]}
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert len(answered) == 500
    again = start_server("--data", str(tmp_path))
    try:
        held = again.get("/__emulator/contacts")
    finally:
        again.stop()
    ids = {c["id"] for c in (held["contacts"] if isinstance(held, dict) else held)}
    assert ids == answered
