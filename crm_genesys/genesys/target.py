"""Where a run writes: real Genesys Cloud or the embedded emulator, chosen once, explicitly.

A `GenesysTarget` is the answer to "which Genesys?": the client settings, and for the embedded
emulator the in-process transport into its org file. It is built by the Dagster Genesys resource
(`crm_genesys.defs.resources.GenesysResource`) and by the command line from the same rule:

* no `GENESYS_*` connection setting at all → the embedded emulator over the data directory's org;
* any connection setting present → real Genesys, and every required one must be there
  (`GenesysSettings.from_env` names each missing variable); never a silent fall-back.

`identify` asks the platform which org the credentials belong to (`GET /api/v2/tokens/me`, which a
client-credentials token may always read), so that the sync state can be bound to that org.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.errors import PermanentError
from crm_genesys.genesys.settings import (
    GenesysSettings,
    configured_connection_vars,
)

EMBEDDED_API_URL = "http://127.0.0.1"  # never dialled: the transport is in-process (ASGI)
EMBEDDED_CLIENT_ID = "demo-client"
EMBEDDED_CLIENT_SECRET = "demo-secret"  # the emulator's documented demo credential, not a secret

TargetKind = Literal["emulator", "genesys"]

_apps: dict[tuple[Path, str], Any] = {}
_apps_lock = threading.Lock()


def embedded_app(db_path: Path, realism: str = "basic") -> Any:
    """The in-process emulator app serving the org file `db_path`, one per file and process,
    with the emulator's `realism` profile (`basic` or `realistic`, see docs/emulator.md).

    Like a server, it outlives a run: its request log, rate-limit window and fault settings span
    every run of this process (tests read them through `embedded_app(path).emulator`).
    """
    from crm_genesys.emulator import EmulatorConfig, create_app
    from crm_genesys.emulator.config import RealismConfig

    path = db_path.resolve()
    with _apps_lock:
        app = _apps.get((path, realism))
        if app is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            config = EmulatorConfig(db_path=path, realism=RealismConfig.profile(realism))
            app = _apps[(path, realism)] = create_app(config)
        return app


@dataclass(frozen=True)
class OrgIdentity:
    """The org a target's credentials belong to: `key` is what the sync state is bound to."""

    kind: TargetKind
    org_id: str
    org_name: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.org_id}"

    @property
    def label(self) -> str:
        where = "the embedded emulator" if self.kind == "emulator" else "Genesys Cloud"
        return f"{where} org {self.org_name!r} ({self.org_id})"


@dataclass(frozen=True)
class GenesysTarget:
    """The Genesys a run writes to. Build it with `from_env`, `embedded` or `genesys`."""

    kind: TargetKind
    settings: GenesysSettings
    emulator_db: Path | None = None
    emulator_realism: str = "basic"

    @classmethod
    def embedded(cls, db_path: Path, realism: str = "basic", **overrides: Any) -> GenesysTarget:
        """The embedded emulator whose org is the SQLite file `db_path`, `realism` its profile."""
        settings = GenesysSettings.for_base_url(
            EMBEDDED_API_URL, EMBEDDED_CLIENT_ID, EMBEDDED_CLIENT_SECRET, **overrides
        )
        return cls("emulator", settings, db_path.resolve(), realism)

    @classmethod
    def genesys(cls, environ: Mapping[str, str]) -> GenesysTarget:
        """Real Genesys from `GENESYS_*` values; raises `ConfigurationError` naming every
        missing or invalid variable."""
        return cls("genesys", GenesysSettings.from_env(environ))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], emulator_db: Path, realism: str = "basic"
    ) -> GenesysTarget:
        """The rule of the module docstring, applied to `environ`."""
        if configured_connection_vars(environ):
            return cls.genesys(environ)
        return cls.embedded(emulator_db, realism)

    @property
    def is_embedded(self) -> bool:
        return self.kind == "emulator"

    def transport(self) -> httpx.AsyncBaseTransport | None:
        """The in-process transport for the emulator; None (the network) for real Genesys."""
        if self.emulator_db is None:
            return None
        return httpx.ASGITransport(app=embedded_app(self.emulator_db, self.emulator_realism))

    def describe(self) -> str:
        """One line for logs and run metadata; never a secret."""
        if self.is_embedded:
            return (
                f"embedded Genesys emulator ({self.emulator_realism}), org file {self.emulator_db}"
            )
        region = f"region {self.settings.region_name}, " if self.settings.region_name else ""
        return f"Genesys Cloud, {region}{self.settings.api_base_url}"

    @asynccontextmanager
    async def client(self) -> AsyncIterator[GenesysClient]:
        async with GenesysClient(self.settings, transport=self.transport()) as client:
            yield client


async def identify(client: GenesysClient, kind: TargetKind) -> OrgIdentity:
    """The org `client`'s credentials belong to (`GET /api/v2/tokens/me`: `organization`)."""
    body = (await client.request("GET", "/api/v2/tokens/me")).json()
    org = body.get("organization") or body.get("homeOrganization") or {}
    org_id = str(org.get("id") or "")
    if not org_id:
        raise PermanentError("GET /api/v2/tokens/me did not name an organization")
    return OrgIdentity(kind, org_id, str(org.get("name") or "unnamed"))
