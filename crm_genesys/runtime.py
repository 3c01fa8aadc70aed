"""The parts a sync run is assembled from, outside Dagster: which Genesys, which state, one window.

Dagster resources and the command line both call these, so the embedded defaults and production
go through the same code: with no Genesys credentials in the environment the client talks to the
in-process emulator over `httpx.ASGITransport`; with credentials it talks to real Genesys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from crm_genesys import settings as paths
from crm_genesys.contacts.diff import ChangeSet
from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.normalize import NormalizationResult
from crm_genesys.contacts.schema import build_contact_schema
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.settings import GenesysSettings, genesys_configured
from crm_genesys.state.store import DeleteWrite, SyncStateStore
from crm_genesys.sync.sink import SyncReport, apply_changes

EMBEDDED_API_URL = "http://emulator.embedded"
EMBEDDED_CLIENT_ID = "demo-client"
EMBEDDED_CLIENT_SECRET = "demo-secret"  # the emulator's documented demo credential, not a secret


def embedded_settings() -> GenesysSettings:
    """Settings for the in-process emulator (the embedded default)."""
    return GenesysSettings.for_base_url(
        EMBEDDED_API_URL, EMBEDDED_CLIENT_ID, EMBEDDED_CLIENT_SECRET
    )


def embedded_transport(db_path: Path | None = None) -> httpx.AsyncBaseTransport:
    """An ASGI transport into the emulator whose org is `db_path` (the data dir's by default)."""
    from crm_genesys.emulator import EmulatorConfig, create_app

    path = db_path or paths.emulator_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return httpx.ASGITransport(app=create_app(EmulatorConfig(db_path=path)))


def genesys_connection(
    emulator_db: Path | None = None,
) -> tuple[GenesysSettings, httpx.AsyncBaseTransport | None]:
    """Real Genesys (default transport) when GENESYS_* credentials are set; else the embedded
    emulator whose org is `emulator_db` (the data dir's by default)."""
    if genesys_configured():
        return GenesysSettings.from_env(), None
    return embedded_settings(), embedded_transport(emulator_db)


@asynccontextmanager
async def open_genesys(
    settings: GenesysSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[GenesysClient]:
    """A client for `settings`, or for what `genesys_connection()` finds when none are given."""
    if settings is None:
        settings, transport = genesys_connection()
    async with GenesysClient(settings, transport=transport) as client:
        yield client


def open_state(url: str | None = None) -> SyncStateStore:
    """The sync-state store at `url` (SYNC_STATE_URL / the data dir's SQLite by default)."""
    store_url = url or paths.sync_state_url()
    if store_url.startswith("sqlite:///"):
        Path(store_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    store = SyncStateStore(store_url)
    store.create_all()
    return store


# Where every extracted row of a window ends up; their sum is the watermark condition.
BUCKETS = ("created", "updated", "deleted", "unchanged", "stale", "quarantined", "dead_lettered")


@dataclass
class WindowSummary:
    """What happened to every CRM row of one window. `accounted` is the watermark condition."""

    window: str
    extracted: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    stale: int = 0
    quarantined: int = 0
    dead_lettered: int = 0
    failed: int = 0
    writes: int = 0
    sink: dict[str, float | int] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        return self.extracted == sum(getattr(self, bucket) for bucket in BUCKETS)

    def counts(self) -> dict[str, int]:
        data = asdict(self)
        data.pop("sink")
        data.pop("window")
        return data


def summarize(
    window: str,
    extracted: int,
    normalized: NormalizationResult,
    changes: ChangeSet,
    report: SyncReport,
) -> WindowSummary:
    """Account for every extracted row of a window from the three stages' results.

    Rows whose change failed retryably are not accounted: the window is not done until a re-run
    sends them, which is what keeps the partition (the watermark) honest.
    """
    return WindowSummary(
        window=window,
        extracted=extracted,
        created=report.created,
        updated=report.updated,
        deleted=report.deleted,
        unchanged=changes.unchanged,
        stale=changes.stale + normalized.superseded + report.stale_skipped,
        quarantined=len(normalized.quarantine),
        dead_lettered=report.dead_lettered,
        failed=report.failed,
        writes=report.created + report.updated + report.deleted,
        sink=report.as_metadata(),
    )


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


class ContactSchemaMissing(RuntimeError):
    """Contacts carry custom fields but the org has no contact schema for them."""


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


async def sync_changes(
    changes: ChangeSet,
    mapping: Mapping,
    store: SyncStateStore,
    window: str,
    settings: GenesysSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SyncReport:
    """Apply a window's changes: what needs no API call locally, the rest through the sink.

    A window with nothing to send makes no request at all, not even a token request.
    """
    record_version_bumps(store, changes, window)
    if changes.changes.empty and not store.pending_intents(window=window):
        return SyncReport()
    async with open_genesys(settings, transport) as client:
        source_id = await client.ensure_external_source(
            mapping.external_source.name, mapping.external_source.uri_template
        )
        schema = await contact_schema_ref(
            client,
            mapping,
            push_if_missing=client.settings.api_base_url == EMBEDDED_API_URL,
        )
        return await apply_changes(
            changes,
            client,
            store,
            source_id=source_id,
            window=window,
            batch_size=client.settings.batch_size,
            max_in_flight=client.settings.max_in_flight,
            schema=schema,
        )
