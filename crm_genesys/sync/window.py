"""Applying one window's changes to a Genesys target: the step between the diff and the sink.

`sync_window` records what needs no API call (version bumps, tombstones of keys never held),
and when something must be sent: binds the sync state to the target's org (refusing another),
ensures the External Source and the contact schema, and hands the changes to the sink. A window
with nothing to send makes no request at all, not even a token request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from crm_genesys.contacts.diff import ChangeSet
from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.schema import build_contact_schema
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.errors import PermissionDeniedError
from crm_genesys.genesys.target import GenesysTarget, identify
from crm_genesys.state.store import BindingMismatch, DeleteWrite, SyncStateStore
from crm_genesys.sync.concurrency import WINDOW, Lane
from crm_genesys.sync.ownership import Ownership
from crm_genesys.sync.sink import SyncReport, apply_changes

ORG_BINDING = "genesys_org"
WINDOW_BINDING = "window_length"


class TargetMismatch(RuntimeError):
    """The sync state belongs to another org than the one this run would write to."""


class ContactSchemaMissing(RuntimeError):
    """Contacts carry custom fields but the org has no contact schema for them."""


def record_version_bumps(store: SyncStateStore, changes: ChangeSet, window: str) -> None:
    """Write what the diff learnt without any API call: newer versions of unchanged contacts,
    and tombstones of keys Genesys never held (so a replayed older window cannot revive them)."""
    bumps = changes.version_bumps
    if bumps.empty:
        return
    tombstones = bumps[bumps["deleted"].astype(bool)]
    store.record_deleted(
        [
            DeleteWrite(k, int(v))
            for k, v in zip(tombstones["business_key"], tombstones["crm_version"], strict=True)
        ],
        window=window,
    )
    store.bump_versions(bumps[~bumps["deleted"].astype(bool)][["business_key", "crm_version"]])


def bind_window_length(store: SyncStateStore, name: str) -> None:
    """Bind `store` to the window length its partition keys mean (`15min`, `hourly`, `daily`).

    Keys name a window's start only, so under another length the same key is another window:
    changing the length of a deployment would reinterpret every old key. It is refused."""
    try:
        store.bind(WINDOW_BINDING, name, f"{name} windows")
    except BindingMismatch as exc:
        raise TargetMismatch(
            f"the sync state at {store.display_url} was built with {exc.held} "
            f"(CRM_GENESYS_WINDOW), but this deployment is configured for {exc.given}: its "
            "partition keys would be read as other windows. Set CRM_GENESYS_WINDOW back, or "
            "start a new deployment (a new, empty SYNC_STATE_URL and Dagster instance) for the "
            "new length and run a full sync there."
        ) from None


async def bind_to_target(
    client: GenesysClient, target: GenesysTarget, store: SyncStateStore
) -> str:
    """Bind `store` to the org `client` talks to, or raise `TargetMismatch` naming both orgs and
    the fix. Returns the org's label."""
    org = await identify(client, target.kind)
    try:
        store.bind(ORG_BINDING, org.key, org.label)
    except BindingMismatch as exc:
        raise TargetMismatch(
            f"the sync state at {store.display_url} was built against {exc.held}, but this run "
            f"targets {exc.given} ({target.describe()}). One state drives one org: to start over "
            "against this org, point SYNC_STATE_URL at a new, empty store (the old one keeps the "
            "other org's contact ids); to keep syncing the old org, restore its settings."
        ) from None
    return org.label


async def contact_schema_ref(
    client: GenesysClient, mapping: Mapping, *, push_if_missing: bool
) -> dict[str, Any] | None:
    """The `schema` reference of contacts with custom fields; None when the mapping has none.

    On real Genesys a missing schema is an error that names the fix (`crm-genesys schema push`):
    changing an org's configuration is a deliberate act. The embedded emulator gets it pushed.
    """
    if mapping.custom_fields is None or not mapping.custom_fields.fields:
        return None
    name = mapping.custom_fields.schema_name
    schema = await client.find_contact_schema(name)
    if schema is None:
        if not push_if_missing:
            raise ContactSchemaMissing(
                f"Genesys has no contact schema {name!r} for the mapping's custom fields: "
                "run `crm-genesys schema push` once, then re-run the window"
            )
        schema = await client.upsert_contact_schema(build_contact_schema(mapping))
    return {"id": schema["id"], "version": int(schema["version"])}


class UnknownDivision(RuntimeError):
    """The mapping names a division the org does not have."""


async def check_division(client: GenesysClient, division_id: str) -> None:
    """Refuse a run whose mapping names a division the org lacks (every create would be refused
    item by item). `GET /api/v2/authorization/divisions`; a client not allowed to list divisions
    is trusted (the platform's own 400 then names the division)."""
    known: dict[str, str] = {}
    page = 1
    try:
        while True:
            body = (
                await client.request(
                    "GET",
                    "/api/v2/authorization/divisions",
                    params={"pageSize": 100, "pageNumber": page},
                )
            ).json()
            known.update({str(d.get("id")): str(d.get("name")) for d in body.get("entities") or []})
            if page >= int(body.get("pageCount") or 1):
                break
            page += 1
    except PermissionDeniedError:
        return
    if division_id not in known:
        names = ", ".join(f"{name} ({i})" for i, name in sorted(known.items())) or "none"
        raise UnknownDivision(
            f"the mapping's division {division_id!r} is not a division of this org "
            f"(the org has: {names}); set `division:` in the mapping to one of them, or remove "
            "it to create contacts in the home division"
        )


async def prepare_writes(
    client: GenesysClient, target: GenesysTarget, store: SyncStateStore, mapping: Mapping
) -> tuple[str, dict[str, Any] | None]:
    """What every writing run does first, before it sends a change: bind the state to the org
    (`bind_to_target`), ensure the mapping's External Source, find the contact schema of its
    custom fields (pushed on the embedded emulator only) and refuse a division the org lacks.
    The External Source's id and the schema reference."""
    await bind_to_target(client, target, store)
    source_id = await client.ensure_external_source(
        mapping.external_source.name, mapping.external_source.uri_template
    )
    schema = await contact_schema_ref(client, mapping, push_if_missing=target.is_embedded)
    if mapping.division is not None:
        await check_division(client, mapping.division)
    return source_id, schema


async def _report_progress(
    client: GenesysClient, total: int, progress: Callable[[str], None], every: float
) -> None:
    """Every `every` seconds, one line of what the client has done so far."""
    while True:
        await asyncio.sleep(every)
        m = client.metrics
        written = sum(m.contacts_written.values())
        progress(
            f"{written:,} of {total:,} change(s) written so far, {m.requests:,} request(s), "
            f"{m.rate_limited} answered 429, {m.elapsed:.0f} s"
        )


async def sync_window(
    changes: ChangeSet,
    mapping: Mapping,
    store: SyncStateStore,
    window: str,
    target: GenesysTarget,
    progress: Callable[[str], None] | None = None,
    progress_every: float = 15.0,
    *,
    lane: Lane = WINDOW,
    run_id: str | None = None,
) -> SyncReport:
    """Apply a window's changes to `target` (see the module docstring). `window` labels what
    the sink records; `lane` and `run_id` name the sink among those that run at once
    (`sync.concurrency`). `progress`, when given, receives a line of progress every
    `progress_every` seconds while changes are sent."""
    record_version_bumps(store, changes, window)
    if changes.changes.empty and not store.pending_intents(window=window):
        return SyncReport()
    async with target.client() as client:
        reporter = (
            asyncio.create_task(
                _report_progress(client, len(changes.changes), progress, progress_every)
            )
            if progress is not None
            else None
        )
        try:
            return await _send(
                client, changes, mapping, store, window, target, lane=lane, run_id=run_id
            )
        finally:
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter


async def _send(
    client: GenesysClient,
    changes: ChangeSet,
    mapping: Mapping,
    store: SyncStateStore,
    window: str,
    target: GenesysTarget,
    *,
    lane: Lane,
    run_id: str | None,
) -> SyncReport:
    """Prepare the org for the writes (`prepare_writes`), then apply the changes."""
    source_id, schema = await prepare_writes(client, target, store, mapping)
    return await apply_changes(
        changes,
        client,
        store,
        source_id=source_id,
        window=window,
        batch_size=client.settings.batch_size,
        max_in_flight=client.settings.max_in_flight,
        schema=schema,
        ownership=Ownership.from_mapping(mapping),
        division_id=mapping.division,
        lane=lane,
        run_id=run_id,
    )
