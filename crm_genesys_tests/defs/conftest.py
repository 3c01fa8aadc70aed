"""An isolated world per test: a demo CRM, an embedded emulator org, a sync state and a Dagster
test instance, wired through explicit resources (never by patching module internals)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from crm_genesys import settings
from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.definitions import make_definitions
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.genesys.settings import GENESYS_CONNECTION_VARS
from crm_genesys.genesys.target import embedded_app

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
WINDOWS = ["2026-11-29-10:00", "2026-11-29-11:00"]


@dataclass(frozen=True)
class World:
    root: Path
    now: datetime
    crm_path: Path
    instance: dg.DagsterInstance
    crm: CrmResource
    genesys: GenesysResource
    state: SyncStateResource

    @property
    def resources(self) -> dict[str, Any]:
        return {"crm": self.crm, "genesys": self.genesys, "state": self.state}

    @property
    def definitions(self) -> dg.Definitions:
        return make_definitions(self.resources)

    @property
    def emulator_db(self) -> Path:
        return Path(self.genesys.emulator_db_path)

    @property
    def emulator(self):
        """The embedded emulator's state and request log (one app per org file and process)."""
        return embedded_app(self.emulator_db, self.genesys.emulator_realism).emulator

    def realistic(self) -> World:
        """This world on the `realistic` emulator (lagging lookups, merges, divisions, one budget
        per OAuth client): the platform's harsher plausible behaviour."""
        return self.but(
            genesys=GenesysResource(
                target="emulator",
                emulator_db_path=self.genesys.emulator_db_path,
                emulator_realism="realistic",
            )
        )

    def but(self, **resources: Any) -> World:
        """This world with some resources replaced (`crm=`, `genesys=`, `state=`)."""
        return dataclasses.replace(self, **resources)

    def materialize(
        self,
        partition_key: str,
        *,
        raise_on_error: bool = True,
        run_config: dict[str, Any] | None = None,
    ):
        """Run `sync_job` for one window, as the schedule and the sensor do."""
        return self.definitions.resolve_job_def("sync_job").execute_in_process(
            partition_key=partition_key,
            instance=self.instance,
            raise_on_error=raise_on_error,
            run_config=run_config,
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
    # Nothing of the developer's environment may leak in: no real Genesys, no other CRM.
    for name in (*GENESYS_CONNECTION_VARS, "CRM_DATABASE_URL", "SYNC_STATE_URL", "CRM_MAPPING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRM_GENESYS_DATA_DIR", str(tmp_path))
    crm_path = settings.demo_crm_path()
    generate_demo_crm(
        crm_path, rows=600, seed=3, now=now, windows=len(WINDOWS), window=timedelta(hours=1)
    )
    with dg.instance_for_test() as instance:
        yield World(
            root=tmp_path,
            now=now,
            crm_path=crm_path,
            instance=instance,
            crm=CrmResource(
                database_url=settings.sqlite_url(crm_path),
                mapping_path=str(settings.DEMO_MAPPING),
            ),
            genesys=GenesysResource(
                target="emulator", emulator_db_path=str(settings.emulator_db_path())
            ),
            state=SyncStateResource(url=settings.sqlite_url(tmp_path / "sync_state.sqlite")),
        )
