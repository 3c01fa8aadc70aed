"""`make prod`'s supervisor for real: webserver and daemon over the test PostgreSQL, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from crm_genesys_tests.conftest import PostgresServer
from crm_genesys_tests.deploy.prod_process import (
    STARTUP_DEADLINE_S,
    graphql,
    healthy_daemons,
    kill_tree,
    poll,
    start_supervisor,
)
from deploy.services import free_port
from deploy.supervise import dagster_url

STOP_DEADLINE_S = 10.0
JOBS = """{ repositoriesOrError { ... on RepositoryConnection {
    nodes { name jobs { name } } } } }"""


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
        proc = start_supervisor(env, tmp_path / "supervisor.log")
        try:
            yield proc, port, tmp_path / "supervisor.log"
        finally:
            kill_tree(proc)


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
