"""An isolated world per test: data dir, demo CRM, in-process emulator whose log the test reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest

from crm_genesys import runtime, settings
from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.definitions import defs
from crm_genesys.emulator import EmulatorConfig, create_app

GENESYS_ENV = (
    "GENESYS_CLIENT_ID",
    "GENESYS_CLIENT_SECRET",
    "GENESYS_REGION",
    "GENESYS_API_HOST",
    "GENESYS_BASE_URL",
)
NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
WINDOWS = ["2026-11-29-10:00", "2026-11-29-11:00"]


@dataclass
class World:
    root: Path
    crm_path: Path
    app: object  # the emulator app; `.emulator` is its state and request log
    instance: dg.DagsterInstance

    @property
    def emulator(self):
        return self.app.emulator  # type: ignore[attr-defined]

    def materialize(self, partition_key: str, *, raise_on_error: bool = True):
        return dg.materialize(
            defs.assets,  # type: ignore[arg-type]
            partition_key=partition_key,
            instance=self.instance,
            resources=defs.resources,
            raise_on_error=raise_on_error,
        )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name in GENESYS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRM_GENESYS_DATA_DIR", str(tmp_path))
    for name in ("CRM_DATABASE_URL", "SYNC_STATE_URL", "CRM_MAPPING"):
        monkeypatch.delenv(name, raising=False)
    crm_path = settings.demo_crm_path()
    generate_demo_crm(
        crm_path, rows=600, seed=3, now=NOW, windows=len(WINDOWS), window=timedelta(hours=1)
    )
    app = create_app(EmulatorConfig(db_path=settings.emulator_db_path()))
    # One emulator for the whole test, so its request log spans every run.
    monkeypatch.setattr(
        runtime, "embedded_transport", lambda db_path=None: httpx.ASGITransport(app=app)
    )
    with dg.instance_for_test() as instance:
        yield World(tmp_path, crm_path, app, instance)
