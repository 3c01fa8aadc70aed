"""A window synced by Dagster's Celery executor: a real Redis broker, two Celery workers on this
machine, the instance and the sync state on the test PostgreSQL, intermediate data in one store
directory both workers see, and an emulator server standing in for Genesys.

The executor is chosen by configuration alone (`CRM_GENESYS_EXECUTOR=celery`): the launching
process (`dagster job execute`) only queues steps; each step runs in a worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys_tests.cli_deployment import CLIENT_ID, CLIENT_SECRET
from crm_genesys_tests.conftest import DAGSTER_DRIVER, PostgresServer
from crm_genesys_tests.emulator_server import REPO, Server, start_server
from crm_genesys_tests.oracle import expected_keys
from deploy.supervise import INSTANCE_CONFIG

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
WINDOW = "2026-11-29-11:00"
WORKERS = ("crm-genesys-w1", "crm-genesys-w2")
STEPS = {"crm_contacts", "normalized_contacts", "contact_changes", "genesys_sync"}
READY_DEADLINE_S = 90.0
RUN_DEADLINE_S = 240.0
# Variables of the developer's shell that would point the processes elsewhere.
FOREIGN = ("GENESYS_", "CRM_", "SYNC_STATE", "DAGSTER_", "CELERY_")


@dataclass
class CeleryDeployment:
    root: Path
    env: dict[str, str]
    server: Server
    workers: list[subprocess.Popen[bytes]]

    @property
    def store(self) -> Path:
        return self.root / "shared-store"

    @property
    def crm_path(self) -> Path:
        return self.root / "data" / "demo_crm.sqlite"

    def worker_pids(self) -> set[int]:
        """The workers' main processes and their pool processes (where tasks run)."""
        pids = set()
        for worker in self.workers:
            main = psutil.Process(worker.pid)
            pids |= {main.pid, *(child.pid for child in main.children(recursive=True))}
        return pids


def _worker_db(redis_url: str) -> str:
    """The broker URL on a Redis database of this test process's own (xdist workers may share
    one server: a task must reach only this test's Celery workers)."""
    return redis_url.rsplit("/", 1)[0] + f"/{1 + os.getpid() % 15}"


def _start_worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # What `dagster-celery worker start -A dagster_celery.app` runs, with the broker taken from
    # CELERY_BROKER_URL instead of a generated config file; one task at a time per worker.
    argv = [
        sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker",
        "-Q", "dagster", "--prefetch-multiplier=1", "--concurrency=1", "--loglevel=INFO",
        "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each worker (a warm shutdown: it stops its pool), then SIGKILL to the process
    groups of those still there after 15 s."""
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15.0
    for worker in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=5.0)


def _wait_ready(logs: list[Path], workers: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        for log, worker in zip(logs, workers, strict=True):
            assert worker.poll() is None, f"worker exited: {log.read_text()[-2000:]}"
        if all(" ready." in log.read_text() for log in logs):
            return
        time.sleep(0.2)
    pytest.fail("the Celery workers were not ready within the deadline")


@pytest.fixture
def deployment(
    tmp_path: Path,
    postgres_server: PostgresServer,
    dagster_template: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CeleryDeployment]:
    root = tmp_path
    home = root / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(INSTANCE_CONFIG.read_text())
    # The store of intermediate data (the IO manager's files): one directory both workers see.
    config["local_artifact_storage"] = {
        "module": "dagster.core.storage.root",
        "class": "LocalArtifactStorage",
        "config": {"base_dir": str(root / "shared-store")},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    server = start_server("--data", str(root / "emulator"), "--rate-limit-per-minute", "30000")
    generate_demo_crm(
        root / "data" / "demo_crm.sqlite",
        rows=300,
        seed=11,
        now=NOW,
        windows=1,
        window=timedelta(hours=1),
    )
    workers: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        instance_db = stack.enter_context(postgres_server.database(template=dagster_template))
        state_db = stack.enter_context(postgres_server.database())
        stack.callback(_stop, workers)
        broker = _worker_db(redis_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
        env.update(
            {
                "DAGSTER_HOME": str(home),
                "DAGSTER_PG_URL": postgres_server.database_url(instance_db, driver=DAGSTER_DRIVER),
                "SYNC_STATE_URL": postgres_server.database_url(state_db),
                "CRM_GENESYS_DATA_DIR": str(root / "data"),
                "GENESYS_BASE_URL": server.url,
                "GENESYS_CLIENT_ID": CLIENT_ID,
                "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
                "GENESYS_RATE_LIMIT_PER_MINUTE": "30000",
                "GENESYS_BATCH_SIZE": "50",
                "CRM_GENESYS_EXECUTOR": "celery",
                "CELERY_BROKER_URL": broker,
                "CELERY_RESULT_BACKEND": broker,
                # The frames between steps live in the shared store; kept after the window's
                # success so that the test can see that the workers wrote them there.
                "CRM_GENESYS_FRAMES_URL": str(root / "shared-store" / "frames"),
                "CRM_GENESYS_FRAMES_RETENTION_HOURS": "1",
            }
        )
        monkeypatch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])
        pushed = subprocess.run(
            [sys.executable, "-m", "crm_genesys.cli", "schema", "push"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr[-2000:]
        logs = [root / f"{name}.log" for name in WORKERS]
        workers += [_start_worker(n, env, log) for n, log in zip(WORKERS, logs, strict=True)]
        _wait_ready(logs, workers)
        yield CeleryDeployment(root, env, server, workers)


def test_a_window_syncs_through_two_celery_workers(deployment: CeleryDeployment) -> None:
    tags = json.dumps({"dagster/partition": WINDOW})
    launcher = subprocess.Popen(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "crm_genesys.definitions",
         "-j", "sync_job", "--tags", tags],
        cwd=REPO, env=deployment.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = launcher.communicate(timeout=RUN_DEADLINE_S)
    except subprocess.TimeoutExpired:
        launcher.kill()
        output, _ = launcher.communicate()
        pytest.fail(f"the run did not end within {RUN_DEADLINE_S:.0f} s: {output[-3000:]!r}")
    assert launcher.returncode == 0, output.decode(errors="replace")[-4000:]
    workers = deployment.worker_pids()

    instance = dg.DagsterInstance.from_config(str(deployment.env["DAGSTER_HOME"]))
    try:
        [record] = instance.get_run_records()
        run = record.dagster_run
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == WINDOW
        events = list(instance.all_logs(run.run_id))
        status = instance.get_status_by_partition(dg.AssetKey("genesys_sync"), [WINDOW], _windows())
    finally:
        instance.dispose()
    started = {e.step_key: e.dagster_event.pid for e in events if _is(e, "STEP_START")}
    assert set(started) == STEPS
    # Every step ran in a worker's process, none in the process that launched the run.
    assert launcher.pid not in started.values()
    assert set(started.values()) <= workers, (started, workers)
    by_worker = Counter(
        str(e.dagster_event.engine_event_data.metadata["Celery worker"].value).split("@")[0]
        for e in events
        if _is(e, "ENGINE_EVENT") and "in celery worker" in e.message
    )
    assert sum(by_worker.values()) == len(STEPS) and set(by_worker) <= set(WORKERS), by_worker
    assert status == {WINDOW: dg.AssetPartitionStatus.MATERIALIZED}

    # Intermediate data went through the shared store (Parquet frames written by the workers).
    for asset in ("crm_contacts", "normalized_contacts", "contact_changes"):
        frames = deployment.store / "frames" / asset / WINDOW
        assert any(frames.glob("*.parquet")), asset

    # Genesys holds exactly the window's syncable contacts, each once.
    start = datetime(2026, 11, 29, 11, tzinfo=UTC)
    wanted = expected_keys(deployment.crm_path, start - timedelta(minutes=5), start + _HOUR)
    held = Counter(
        ext["value"]
        for contact in deployment.server.get("/__emulator/contacts")
        for ext in contact.get("externalIds") or []
    )
    assert wanted and set(held) == wanted
    assert max(held.values()) == 1


_HOUR = timedelta(hours=1)


def _is(entry: dg.EventLogEntry, kind: str) -> bool:
    return entry.dagster_event is not None and entry.dagster_event.event_type_value == kind


def _windows() -> dg.TimeWindowPartitionsDefinition:
    from crm_genesys.defs.partitions import build_sync_windows

    return build_sync_windows("hourly", "2026-01-01-00:00")
