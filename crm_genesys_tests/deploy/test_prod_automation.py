"""`make prod` end to end: the daemon's scheduler runs one window, it fails against an emulator
that refuses every bulk item, an alert reaches the webhook, and once the faults are lifted the
`retry_failed_windows` sensor re-runs the window through the run queue, which then succeeds.

How the daemon is made to act now rather than on the wall clock's schedule:
- **The scheduled window.** Windows are hourly (the default; `sync_schedule` fires at minute 5)
  and the demo CRM's rows lie in the window that closed before the latest tick. Before the
  deployment starts, the instance is told that `sync_schedule` has been running since just
  before that tick: what a deployment holds whose daemon was down at the tick. The daemon's
  scheduler then launches that tick on its first iteration (Dagster's catch-up of missed ticks).
- **The sensor retry.** `retry_failed_windows` looks every minute and retries a window
  `CRM_GENESYS_RETRY_BASE_DELAY_MINUTES` after its first failure (set to 0 here); a sensor that
  has never ticked is evaluated at once when started. So it is stopped
  before the deployment starts (`dagster sensor stop`), and started through the webserver's
  GraphQL API once the window has failed and the faults are lifted, as an operator's click in
  the UI would.
Every wait polls the run records in PostgreSQL (or the webhook receiver) with a deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.remote_origin import RemoteInstigatorOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
)

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.settings import PARTITION_FORMAT
from crm_genesys_tests.cli_deployment import CLIENT_ID, CLIENT_SECRET
from crm_genesys_tests.conftest import PostgresServer
from crm_genesys_tests.deploy.prod_process import (
    STARTUP_DEADLINE_S,
    graphql,
    kill_tree,
    poll,
    start_supervisor,
)
from crm_genesys_tests.deploy.webhook_receiver import Receiver, webhook_receiver
from crm_genesys_tests.emulator_server import Server, start_server
from crm_genesys_tests.oracle import expected_keys
from deploy.services import free_port
from deploy.supervise import INSTANCE_CONFIG, REPO, WORKSPACE, dagster_url

WINDOW = timedelta(hours=1)
OFFSET = timedelta(minutes=5)  # schedule_offset_minutes("hourly")
CRON = "5 * * * *"
RUN_DEADLINE_S = 180.0
FOREIGN = ("GENESYS_", "CRM_", "SYNC_STATE", "DAGSTER_", "CELERY_")
START_SENSOR = """mutation { startSensor(sensorSelector: {repositoryLocationName:
    "crm_genesys.definitions", repositoryName: "__repository__",
    sensorName: "retry_failed_windows"}) { __typename ... on Sensor {
    sensorState { status } } ... on PythonError { message } } }"""


def latest_tick(now: datetime) -> datetime:
    """The latest time `CRON` fired at or before `now`."""
    return (now - OFFSET).replace(minute=0, second=0, microsecond=0) + OFFSET


@dataclass
class Prod:
    env: dict[str, str]
    home: Path
    crm_path: Path
    server: Server
    receiver: Receiver
    window: str
    window_start: datetime

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def runs(self) -> list[dg.DagsterRun]:
        """The sync runs of the window, oldest first (from PostgreSQL)."""
        with self.instance() as instance:
            records = instance.get_run_records(
                dg.RunsFilter(job_name="sync_job", tags={"dagster/partition": self.window})
            )
        return [r.dagster_run for r in reversed(records)]


def _cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}"


def _seed_automation(prod: Prod, tick: datetime) -> None:
    """Stop the retry sensor (it has never ticked: starting it later evaluates it at once) and
    give `sync_schedule` a running state that began just before `tick`."""
    _cli(prod.env, "-m", "dagster", "sensor", "stop", "retry_failed_windows", "-w", str(WORKSPACE))
    with prod.instance() as instance:
        [sensor] = [
            s
            for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if s.instigator_name == "retry_failed_windows"
        ]
        assert sensor.status == InstigatorStatus.STOPPED
        origin = RemoteInstigatorOrigin(sensor.origin.repository_origin, "sync_schedule")
        instance.add_instigator_state(
            InstigatorState(
                origin,
                InstigatorType.SCHEDULE,
                InstigatorStatus.RUNNING,
                ScheduleInstigatorData(CRON, start_timestamp=tick.timestamp() - 1.0),
            )
        )


@pytest.fixture
def prod(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Prod]:
    tick = latest_tick(datetime.now(UTC))
    window_start = tick - OFFSET - WINDOW
    home = tmp_path / "prod" / "dagster_home"
    data = tmp_path / "prod" / "data"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(INSTANCE_CONFIG.read_text())
    crm_path = data / "demo_crm.sqlite"
    # Every row lies in the window that closed before the tick.
    generate_demo_crm(crm_path, rows=200, seed=21, now=tick - OFFSET, windows=1, window=WINDOW)
    server = start_server("--data", str(tmp_path / "emulator"), "--rate-limit-per-minute", "30000")
    with (
        webhook_receiver() as receiver,
        postgres_server.database() as instance_db,
        postgres_server.database() as state_db,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
        env.update(
            {
                "CRM_GENESYS_PROD_DIR": str(tmp_path / "prod"),
                "DAGSTER_HOME": str(home),
                "CRM_GENESYS_DATA_DIR": str(data),
                "DAGSTER_WEBSERVER_PORT": str(free_port()),
                "DAGSTER_PG_URL": dagster_url(postgres_server.database_url(instance_db)),
                "SYNC_STATE_URL": postgres_server.database_url(state_db),
                "CRM_GENESYS_PROD_STOP_GRACE_S": "7",
                "CRM_GENESYS_WINDOW": "hourly",
                "CRM_GENESYS_PARTITION_START": (window_start - timedelta(hours=6)).strftime(
                    PARTITION_FORMAT
                ),
                "GENESYS_BASE_URL": server.url,
                "GENESYS_CLIENT_ID": CLIENT_ID,
                "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
                "GENESYS_RATE_LIMIT_PER_MINUTE": "30000",
                "CRM_GENESYS_ALERT_WEBHOOK_URL": receiver.url,
                # The sensor's first retry is due at once (by default 10 minutes later).
                "CRM_GENESYS_RETRY_BASE_DELAY_MINUTES": "0",
            }
        )
        monkeypatch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])
        try:
            _cli(env, "-m", "crm_genesys.cli", "schema", "push")
            prod = Prod(
                env=env,
                home=home,
                crm_path=crm_path,
                server=server,
                receiver=receiver,
                window=window_start.strftime(PARTITION_FORMAT),
                window_start=window_start,
            )
            _seed_automation(prod, tick)
            yield prod
        finally:
            server.stop()


def _ended(prod: Prod, tag: str, value: str) -> dg.DagsterRun | None:
    for run in prod.runs():
        if run.tags.get(tag) == value and run.is_finished:
            return run
    return None


def _enqueued(prod: Prod, run: dg.DagsterRun) -> bool:
    with prod.instance() as instance:
        return bool(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED))


def _alert_for(receiver: Receiver, run_id: str) -> dict[str, Any] | None:
    return next((m for m in receiver.snapshot() if m.get("run_id") == run_id), None)


@pytest.mark.slow  # about 2-3 minutes: three code servers, a process per step, two runs
def test_prod_runs_a_scheduled_window_and_the_sensor_retries_it(prod: Prod, tmp_path: Path) -> None:
    # Every bulk item is refused with a retryable error: the scheduled run must fail.
    prod.server.put("/__emulator/faults", {"p_item_failure": 1.0})
    proc = start_supervisor(prod.env, tmp_path / "supervisor.log")
    try:
        scheduled = poll(
            lambda: _ended(prod, "dagster/schedule_name", "sync_schedule"),
            STARTUP_DEADLINE_S + RUN_DEADLINE_S,
            "a finished scheduled run of the window",
            proc,
        )
        assert scheduled.status == dg.DagsterRunStatus.FAILURE
        assert prod.server.get("/__emulator/contacts") == []
        alert = poll(
            lambda: _alert_for(prod.receiver, scheduled.run_id), 90, "a run-failure alert", proc
        )
        assert alert["alert"] == "run_failed" and alert["partition"] == prod.window
        assert alert["steps"] == [{"step": "genesys_sync", "error": "Failure"}]

        prod.server.put("/__emulator/faults", {})
        started = graphql(int(prod.env["DAGSTER_WEBSERVER_PORT"]), START_SENSOR)
        assert started is not None, "the webserver did not answer"
        assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started

        retried = poll(
            lambda: _ended(prod, "dagster/sensor_name", "retry_failed_windows"),
            RUN_DEADLINE_S,
            "a finished retry run of the window",
            proc,
        )
        assert retried.status == dg.DagsterRunStatus.SUCCESS
        assert retried.tags["dagster/run_key"] == f"retry:{prod.window}:1"
        # Both went through the daemon's run queue, and nothing else ran the window.
        assert _enqueued(prod, scheduled) and _enqueued(prod, retried)
        assert [r.run_id for r in prod.runs()] == [scheduled.run_id, retried.run_id]
    finally:
        kill_tree(proc)

    with prod.instance() as instance:
        from crm_genesys.defs.partitions import build_sync_windows

        windows = build_sync_windows("hourly", prod.env["CRM_GENESYS_PARTITION_START"])
        status = instance.get_status_by_partition(
            dg.AssetKey("genesys_sync"), [prod.window], windows
        )
    assert status == {prod.window: dg.AssetPartitionStatus.MATERIALIZED}
    # Genesys holds exactly the window's syncable contacts (the extract's 5-minute lookback
    # holds no rows), each once.
    wanted = expected_keys(
        prod.crm_path, prod.window_start - timedelta(minutes=5), prod.window_start + WINDOW
    )
    held = Counter(
        ext["value"]
        for contact in prod.server.get("/__emulator/contacts")
        for ext in contact.get("externalIds") or []
    )
    assert wanted and set(held) == wanted
    assert max(held.values()) == 1
