"""Resources: the CRM, Genesys and the sync-state store, each configured from the environment.

Secrets never pass through Dagster config (they would show in the UI's launchpad and run config):
Genesys credentials are read from the environment by `GenesysSettings.from_env()` when the sync
opens its client.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import httpx

from crm_genesys import runtime, settings
from crm_genesys.contacts.mapping import Mapping, load_mapping
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.genesys.settings import GenesysSettings
from crm_genesys.state.store import SyncStateStore


class CrmResource(dg.ConfigurableResource):
    """The CRM database (any SQLAlchemy URL) and the mapping registry that reads it."""

    database_url: str = ""  # empty: CRM_DATABASE_URL, else the demo CRM
    mapping_path: str = ""  # empty: CRM_MAPPING, else the demo CRM's mapping
    lookback_minutes: int = 5  # rows committed late into the previous window are still extracted

    def mapping(self) -> Mapping:
        return load_mapping(
            Path(self.mapping_path) if self.mapping_path else settings.crm_mapping_path()
        )

    def source(self, mapping: Mapping) -> SqlCrmSource:
        return SqlCrmSource(
            self.database_url or settings.crm_database_url(),
            table=mapping.source.table,
            modified_column=mapping.source.modified_column,
            deleted_column=mapping.source.deleted_column,
            internal_id_column=mapping.source.internal_id_column,
        )

    @property
    def lookback(self) -> timedelta:
        return timedelta(minutes=self.lookback_minutes)


class SyncStateResource(dg.ConfigurableResource):
    """The sync-state store (what Genesys holds from us): SQLite by default, PostgreSQL in prod."""

    url: str = ""  # empty: SYNC_STATE_URL, else SQLite in the data dir

    def store(self) -> SyncStateStore:
        return runtime.open_state(self.url or None)


class GenesysResource(dg.ConfigurableResource):
    """Which Genesys to talk to: real Genesys when GENESYS_* credentials are set, else the emulator.

    `emulator_db_path` points the embedded emulator at another org file (tests, demos).
    """

    emulator_db_path: str = ""

    def connection(self) -> tuple[GenesysSettings, httpx.AsyncBaseTransport | None]:
        """Settings and transport for the client: the default transport for real Genesys."""
        return runtime.genesys_connection(
            Path(self.emulator_db_path) if self.emulator_db_path else None
        )
