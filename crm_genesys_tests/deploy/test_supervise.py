"""`make prod`'s supervisor for real: webserver and daemon over the test PostgreSQL, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from crm_genesys_tests.conftest import PostgresServer
from deploy.services import free_port
from deploy.supervise import REPO, dagster_url

STARTUP_DEADLINE_S = 180.0
STOP_DEADLINE_S = 10.0
DAEMON_HEALTH = """{ instance { daemonHealth { allDaemonStatuses {
    daemonType required healthy } } } }"""
JOBS = """{ repositoriesOrError { ... on RepositoryConnection {
    nodes { name jobs { name } } } } }"""


def poll(predicate: Callable[[], Any], deadline_s: float, what: str, proc: subprocess.Popen) -> Any:
    """`predicate()`'s first truthy value, polling until `deadline_s` (fails early if `proc`
    died)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the supervisor exited ({proc.returncode}) before {what}"
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"no {what} within {deadline_s:.0f} s")


def graphql(port: int, query: str) -> dict[str, Any] | None:
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=5)
    except httpx.TransportError:
        return None
    return response.json().get("data") if response.status_code == 200 else None


def healthy_daemons(port: int) -> list[str] | None:
    """The required daemons, once the webserver answers and all of them are healthy."""
    data = graphql(port, DAEMON_HEALTH)
    if not data:
        return None
    statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    required = [s for s in statuses if s["required"]]
    if not required or not all(s["healthy"] for s in required):
        return None
    return sorted(s["daemonType"] for s in required)


@pytest.fixture
def supervisor(
    tmp_path: Path, postgres_server: PostgresServer
) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    """The supervisor on free ports, its instance and sync state on fresh test databases."""
    port = free_port()
    with postgres_server.database() as instance_db, postgres_server.database() as state_db:
        env = {
            **os.environ,
            "CRM_GENESYS_PROD_DIR": str(tmp_path / "prod"),
            "DAGSTER_HOME": str(tmp_path / "prod" / "dagster_home"),
            "CRM_GENESYS_DATA_DIR": str(tmp_path / "prod" / "data"),
            "DAGSTER_WEBSERVER_PORT": str(port),
            "DAGSTER_PG_URL": dagster_url(postgres_server.database_url(instance_db)),
            "SYNC_STATE_URL": postgres_server.database_url(state_db),
            # Stragglers are killed after 7 s, inside the 10 s the test allows.
            "CRM_GENESYS_PROD_STOP_GRACE_S": "7",
        }
        log = tmp_path / "supervisor.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deploy.supervise"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            yield proc, port, log
        finally:
            if proc.poll() is None:
                proc.kill()
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.wait()


def test_prod_serves_the_ui_with_healthy_daemons_and_stops_on_sigterm(
    supervisor: tuple[subprocess.Popen, int, Path],
) -> None:
    proc, port, log = supervisor
    daemons = poll(lambda: healthy_daemons(port), STARTUP_DEADLINE_S, "healthy daemons", proc)
    # Run queue, run monitoring, schedules and sensors all run in the daemon.
    assert {"QUEUED_RUN_COORDINATOR", "MONITORING", "SCHEDULER", "SENSOR"} <= set(daemons)
    jobs = graphql(port, JOBS)
    assert jobs is not None
    names = {job["name"] for repo in jobs["repositoriesOrError"]["nodes"] for job in repo["jobs"]}
    assert "sync_job" in names

    tree = psutil.Process(proc.pid).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in tree]
    assert any("dagster-webserver" in c for c in commands)
    assert any("dagster-daemon" in c for c in commands)

    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the supervisor still runs {STOP_DEADLINE_S:.0f} s after SIGTERM")
    _gone, alive = psutil.wait_procs(tree, timeout=1)
    assert alive == [], [" ".join(p.cmdline()) for p in alive]
    assert status == 0, log.read_text()[-3000:]
    assert "stopped" in log.read_text()
