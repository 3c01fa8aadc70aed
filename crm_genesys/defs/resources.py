"""Resources: the CRM, Genesys and the sync-state store, each carrying its settings as fields.

`*.from_env()` builds each resource from the environment, in one place (`definitions.py` calls
them); tests build them with explicit fields instead. Secrets are `dg.EnvVar` fields: Dagster
resolves them in the run's process and shows only the variable's name in the UI, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from crm_genesys import settings
from crm_genesys.contacts.mapping import Mapping, load_mapping
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.genesys.settings import GENESYS_CONNECTION_VARS, configured_connection_vars
from crm_genesys.genesys.target import GenesysTarget
from crm_genesys.state.store import SyncStateStore

# Genesys connection settings that are secrets (or identify one): EnvVar fields, never values.
_SECRET_VARS = ("GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET")


class CrmResource(dg.ConfigurableResource):
    """The CRM database (any SQLAlchemy URL) and the mapping registry that reads it."""

    database_url: str
    mapping_path: str
    lookback_minutes: int = 5

    @classmethod
    def from_env(cls) -> CrmResource:
        return cls(
            database_url=settings.crm_database_url(),
            mapping_path=str(settings.crm_mapping_path()),
            lookback_minutes=int(settings.get("CRM_GENESYS_LOOKBACK_MINUTES")),
        )

    def mapping(self) -> Mapping:
        return load_mapping(Path(self.mapping_path))

    def mapping_hash(self) -> str:
        """A digest of what the mapping means (not of its file's comments or layout): dead
        letters built with another mapping are due for a retry."""
        import hashlib

        return hashlib.sha256(self.mapping().model_dump_json().encode()).hexdigest()[:32]

    def source(self, mapping: Mapping) -> SqlCrmSource:
        return SqlCrmSource.from_mapping(self.database_url, mapping)

    @property
    def lookback(self) -> timedelta:
        return timedelta(minutes=self.lookback_minutes)

    def describe(self) -> str:
        return f"{settings.display_url(self.database_url)} (mapping {self.mapping_path})"


class SyncStateResource(dg.ConfigurableResource):
    """The sync-state store (what Genesys holds from us): SQLite by default, PostgreSQL in prod."""

    url: str

    @classmethod
    def from_env(cls) -> SyncStateResource:
        return cls(url=settings.sync_state_url())

    def store(self) -> SyncStateStore:
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        store = SyncStateStore(self.url)
        store.create_all()
        return store


class GenesysResource(dg.ConfigurableResource):
    """Which Genesys the sync writes to, chosen explicitly (see `crm_genesys.genesys.target`).

    `target` is `emulator` (the embedded emulator over the org file `emulator_db_path`) or
    `genesys` (real Genesys Cloud from `env`: the `GENESYS_*` settings present when the
    definitions were loaded; the client id and secret as `dg.EnvVar`s). A `genesys` target whose
    settings are incomplete or invalid fails the run before the CRM is read, naming the variable.
    """

    target: str = "emulator"
    emulator_db_path: str = ""
    emulator_realism: str = "basic"
    env: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: AbcMapping[str, str] | None = None) -> GenesysResource:
        import os

        source = os.environ if environ is None else environ
        if not configured_connection_vars(source):
            return cls(
                target="emulator",
                emulator_db_path=str(settings.emulator_db_path()),
                emulator_realism=str(settings.get("CRM_GENESYS_EMULATOR_REALISM")),
            )
        env: dict[str, Any] = {
            name: value.strip()
            for name, value in source.items()
            if name.startswith("GENESYS_") and name not in _SECRET_VARS and value.strip()
        }
        for name in _SECRET_VARS:
            if source.get(name, "").strip():
                env[name] = dg.EnvVar(name)
        return cls(target="genesys", env=env)

    def resolve(self) -> GenesysTarget:
        """The target of this run; raises `ConfigurationError` naming what is missing."""
        if self.target == "emulator":
            path = Path(self.emulator_db_path) if self.emulator_db_path else None
            return GenesysTarget.embedded(
                path or settings.emulator_db_path(), self.emulator_realism
            )
        if self.target == "genesys":
            return GenesysTarget.genesys(self.env)
        from crm_genesys.genesys.errors import ConfigurationError

        raise ConfigurationError(
            f"GenesysResource.target must be 'emulator' or 'genesys', not {self.target!r}"
        )


__all__ = [
    "GENESYS_CONNECTION_VARS",
    "CrmResource",
    "GenesysResource",
    "SyncStateResource",
]
