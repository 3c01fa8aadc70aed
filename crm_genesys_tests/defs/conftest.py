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
    now: datetime
    crm_path: Path
    app: object  # the emulator app; `.emulator` is its state and request log
    instance: dg.DagsterInstance

    @property
    def emulator(self):
        return self.app.emulator  # type: ignore[attr-defined]

    def materialize(self, partition_key: str, *, raise_on_error: bool = True):
        """Run `sync_job` for one window, as the schedule and the sensor do."""
        return defs.resolve_job_def("sync_job").execute_in_process(
            partition_key=partition_key, instance=self.instance, raise_on_error=raise_on_error
        )


def windows_before(now: datetime, count: int) -> list[str]:
    """Keys of the `count` complete hourly windows before the one holding `now`."""
    top = now.replace(minute=0, second=0, microsecond=0)
    return [(top - timedelta(hours=count - i)).strftime("%Y-%m-%d-%H:%M") for i in range(count)]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Two fixed windows (WINDOWS)."""
    yield from make_world(tmp_path, monkeypatch, NOW)


@pytest.fixture
def recent_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Two windows just before the real now (for automation that looks at recent windows)."""
    yield from make_world(tmp_path, monkeypatch, datetime.now(UTC))


def make_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now: datetime) -> Iterator[World]:
    """A demo CRM of two hourly windows before `now`, an emulator, a Dagster test instance."""
    for name in GENESYS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRM_GENESYS_DATA_DIR", str(tmp_path))
    for name in ("CRM_DATABASE_URL", "SYNC_STATE_URL", "CRM_MAPPING"):
        monkeypatch.delenv(name, raising=False)
    crm_path = settings.demo_crm_path()
    generate_demo_crm(
        crm_path, rows=600, seed=3, now=now, windows=len(WINDOWS), window=timedelta(hours=1)
    )
    app = create_app(EmulatorConfig(db_path=settings.emulator_db_path()))
    # One emulator for the whole test, so its request log spans every run.
    monkeypatch.setattr(
        runtime, "embedded_transport", lambda db_path=None: httpx.ASGITransport(app=app)
    )
    with dg.instance_for_test() as instance:
        yield World(tmp_path, now, crm_path, app, instance)
