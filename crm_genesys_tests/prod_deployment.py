"""`make prod`'s deployment driven as an operator (and a hostile machine) would: for the chaos run.

`start_prod_deployment(root, *server_args, **env)` starts a PostgreSQL server (instance and sync
state), an emulator server, and `python -m deploy.supervise` (dagster-webserver + dagster-daemon:
queued run coordinator, run monitoring, schedules and sensors, `retry_failed_windows` with no
delay). `ProdDeployment` launches runs through the webserver's GraphQL API (they wait in the run
queue the daemon drains), reads run records from PostgreSQL, SIGKILLs a run's processes (its run
worker and step workers, found from the run's own events) or the daemon, and restarts the
supervisor after a daemon kill (what a process manager does). It is a `cli_deployment.Deployment`
too, so the command line and the disk scan work on it unchanged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import psutil

from crm_genesys_tests.cli_deployment import Deployment
from crm_genesys_tests.deploy.prod_process import graphql, healthy_daemons, start_supervisor
from crm_genesys_tests.emulator_server import start_server
from deploy.services import LocalPostgres, free_port
from deploy.supervise import INSTANCE_CONFIG, _ensure_database

STARTUP_DEADLINE_S = 240.0
LOCATION = {"repositoryLocationName": "crm_genesys.definitions", "repositoryName": "__repository__"}
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
    ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } } } }"""
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass
class ProdDeployment(Deployment):
    postgres: LocalPostgres | None = None
    supervisor: subprocess.Popen[bytes] | None = None
    starts: int = 0
    port: int = field(default_factory=free_port)

    def env(self) -> dict[str, str]:
        assert self.postgres is not None
        return {
            **super().env(),
            "CRM_GENESYS_PROD_DIR": str(self.root),
            "DAGSTER_PG_URL": self.postgres.url("dagster", driver="psycopg2"),
            "SYNC_STATE_URL": self.postgres.url("sync_state"),
            "DAGSTER_WEBSERVER_PORT": str(self.port),
            "CRM_GENESYS_PROD_STOP_GRACE_S": "5",
        }

    @property
    def state_url(self) -> str:
        assert self.postgres is not None
        return self.postgres.url("sync_state")

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The deployment's Dagster instance (PostgreSQL), for reading run records."""
        before = os.environ.get("DAGSTER_PG_URL")
        os.environ["DAGSTER_PG_URL"] = self.env()["DAGSTER_PG_URL"]
        try:
            with dg.DagsterInstance.from_config(str(self.dagster_home)) as instance:
                yield instance
        finally:
            if before is None:
                os.environ.pop("DAGSTER_PG_URL", None)
            else:
                os.environ["DAGSTER_PG_URL"] = before

    # ------------------------------------------------------------------ the supervisor

    def start(self) -> None:
        """Start the supervisor and wait until the webserver answers and the daemons are healthy."""
        self.starts += 1
        log = self.root / f"supervisor-{self.starts}.log"
        self.supervisor = start_supervisor(self.env(), log)
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while time.monotonic() < deadline:
            if self.supervisor.poll() is not None:
                raise AssertionError(f"the supervisor exited: {log.read_text()[-3000:]}")
            if healthy_daemons(self.port):
                return
            time.sleep(1)
        raise AssertionError(f"the deployment did not come up: {log.read_text()[-3000:]}")

    def stop_supervisor(self) -> None:
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                self.supervisor.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.supervisor.kill()
                self.supervisor.wait(timeout=10)

    def kill_daemon(self) -> None:
        """SIGKILL dagster-daemon; the supervisor then stops the rest. Then start it again."""
        assert self.supervisor is not None
        daemons = [
            p
            for p in psutil.Process(self.supervisor.pid).children(recursive=True)
            if "dagster-daemon" in " ".join(_cmdline(p))
        ]
        assert daemons, "no dagster-daemon under the supervisor"
        for p in daemons:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.supervisor.wait(timeout=120)
        self.start()

    # ------------------------------------------------------------------ runs

    def launch(
        self, job: str, *, partition: str | None = None, run_config: dict[str, Any] | None = None
    ) -> str:
        """Launch `job` through the webserver (into the run queue); the run id."""
        params = {
            "selector": {**LOCATION, "jobName": job},
            "runConfigData": run_config or {},
            "executionMetadata": {
                "tags": [{"key": "dagster/partition", "value": partition}] if partition else []
            },
            "mode": "default",
        }
        deadline = time.monotonic() + 60
        while True:
            answer = _graphql_vars(self.port, LAUNCH, {"p": params})
            launched = (answer or {}).get("launchRun") or {}
            if launched.get("__typename") == "LaunchRunSuccess":
                return str(launched["run"]["runId"])
            if time.monotonic() > deadline:
                raise AssertionError(f"launching {job} {partition}: {answer}")
            time.sleep(1)

    def job_runs(self, job: str, partition: str | None = None) -> list[dg.DagsterRun]:
        """Runs of `job` (of `partition`), oldest first."""
        tags = {"dagster/partition": partition} if partition else None
        with self.instance() as instance:
            records = instance.get_run_records(dg.RunsFilter(job_name=job, tags=tags))
        return [r.dagster_run for r in reversed(records)]

    def active_runs(self) -> int:
        with self.instance() as instance:
            return len(instance.get_run_records(dg.RunsFilter(statuses=ACTIVE)))

    def run_pids(self, run_id: str) -> list[int]:
        """The run worker's and step workers' pids, from the run's events (workers first)."""
        pids: list[int] = []
        with self.instance() as instance:
            for entry in instance.all_logs(run_id):
                event = entry.dagster_event
                data = getattr(event, "event_specific_data", None) if event else None
                metadata = getattr(data, "metadata", None) or {}
                pid = metadata.get("pid")
                if pid is not None:
                    pids.append(int(getattr(pid, "value", pid)))
        return list(dict.fromkeys(pids))

    def kill_run(self, run_id: str) -> int:
        """SIGKILL every live process of the run; how many were killed."""
        killed = 0
        for pid in self.run_pids(run_id):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                process = psutil.Process(pid)
                if "python" in " ".join(_cmdline(process)):
                    process.kill()
                    killed += 1
        return killed

    def stop(self) -> None:
        try:
            self.stop_supervisor()
        finally:
            try:
                super().stop()
            finally:
                if self.postgres is not None:
                    self.postgres.stop()


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def _graphql_vars(port: int, query: str, variables: dict[str, Any]) -> dict[str, Any] | None:
    import httpx

    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": query, "variables": variables},
            timeout=30,
        )
    except httpx.TransportError:
        return None
    return response.json().get("data") if response.status_code == 200 else None


def start_prod_deployment(root: Path, *server_args: str, **extra_env: str) -> ProdDeployment:
    """A fresh production-shaped deployment under `root` (not started: the caller generates the
    CRM, then calls `start()`)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_CONFIG.read_text())
    postgres = LocalPostgres(root / "postgres", durable=False).start()
    for name in ("dagster", "sync_state"):
        _ensure_database(postgres, name)
    server = start_server("--data", str(root / "emulator"), "--rate-limit-per-minute", "30000",
                          *server_args)  # fmt: skip
    return ProdDeployment(root, server, extra_env, postgres=postgres)


__all__ = ["ProdDeployment", "graphql", "start_prod_deployment"]
