"""`make prod`: dagster-webserver and dagster-daemon as separate processes over PostgreSQL.

The supervisor
1. prepares the deployment directory (`CRM_GENESYS_PROD_DIR`, default `.prod`): DAGSTER_HOME with
   deploy/dagster.yaml copied in, the data directory, and, unless `DAGSTER_PG_URL` is given, a
   local PostgreSQL server under `<dir>/postgres` holding the databases `dagster` (the instance)
   and `sync_state` (the sync-state store, unless `SYNC_STATE_URL` is given);
2. fails the runs that a dead deployment left STARTED (`fail_orphaned_runs`), so that their
   windows can run again and their pool slots are free;
3. starts the daemon and the webserver, each in a process group of its own, on the workspace
   `workspace.yaml`;
4. on SIGTERM, SIGINT (Ctrl-C) or SIGHUP, or when one of them exits, sends SIGTERM to both groups
   (the code servers and run workers in them too: an interrupted run is reported failed, and the
   retry sensor re-runs its window), waits `CRM_GENESYS_PROD_STOP_GRACE_S` seconds, SIGKILLs
   what is left, then stops its PostgreSQL. A second signal skips the grace period. It is the
   children's subreaper: nothing it started outlives it.

Environment (all optional): `CRM_GENESYS_PROD_DIR`, `DAGSTER_HOME` (`<dir>/dagster_home`),
`CRM_GENESYS_DATA_DIR` (`<dir>/data`), `DAGSTER_WEBSERVER_HOST` (127.0.0.1),
`DAGSTER_WEBSERVER_PORT` (3000), `DAGSTER_PG_URL`, `SYNC_STATE_URL`, `CRM_GENESYS_PROD_PG_PORT`
(the local server's port; a free one by default), `CRM_GENESYS_PROD_STOP_GRACE_S` (8); every
other variable (`CRM_DATABASE_URL`, `GENESYS_*`, ...) reaches the processes unchanged.

Exit status: 0 after a requested stop, 1 when a child exited on its own or startup failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from deploy.services import LocalPostgres, ServiceUnavailable

if TYPE_CHECKING:
    import dagster as dg

REPO = Path(__file__).resolve().parent.parent
INSTANCE_CONFIG = Path(__file__).resolve().parent / "dagster.yaml"
WORKSPACE = REPO / "workspace.yaml"
DAGSTER_DB = "dagster"
STATE_DB = "sync_state"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_CHILD_SUBREAPER = 36

log = logging.getLogger("crm_genesys.supervise")


class StartupError(RuntimeError):
    """The deployment cannot start; the message says why and what to change."""


@dataclass(frozen=True)
class Settings:
    """Where the deployment lives and what it talks to (see the module docstring)."""

    root: Path
    dagster_home: Path
    data_dir: Path
    host: str
    port: int
    dagster_pg_url: str | None
    sync_state_url: str | None
    local_pg_port: int | None
    stop_grace_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        root = Path(env.get("CRM_GENESYS_PROD_DIR") or REPO / ".prod").resolve()

        def number(name: str, default: str, kind: type[int] | type[float]) -> float:
            raw = env.get(name) or default
            try:
                value = kind(raw)
            except ValueError:
                raise StartupError(f"{name}={raw!r} is not a number") from None
            if value < 0:
                raise StartupError(f"{name}={raw!r} must not be negative")
            return value

        pg_port = env.get("CRM_GENESYS_PROD_PG_PORT")
        return cls(
            root=root,
            dagster_home=Path(env.get("DAGSTER_HOME") or root / "dagster_home").resolve(),
            data_dir=Path(env.get("CRM_GENESYS_DATA_DIR") or root / "data").resolve(),
            host=env.get("DAGSTER_WEBSERVER_HOST") or "127.0.0.1",
            port=int(number("DAGSTER_WEBSERVER_PORT", "3000", int)),
            dagster_pg_url=env.get("DAGSTER_PG_URL") or None,
            sync_state_url=env.get("SYNC_STATE_URL") or None,
            local_pg_port=int(number("CRM_GENESYS_PROD_PG_PORT", "0", int)) if pg_port else None,
            stop_grace_s=number("CRM_GENESYS_PROD_STOP_GRACE_S", "8", float),
        )


def dagster_url(url: str) -> str:
    """`url` with the psycopg2 driver, which dagster-postgres needs.

    SQLAlchemy 2.1 maps a plain `postgresql://` to psycopg 3, and dagster-postgres's webserver
    tuning (`set_pg_statement_timeout`: `with conn:`) closes a psycopg 3 connection: every UI query
    then fails with "the connection is closed".
    """
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise StartupError("DAGSTER_PG_URL must be a postgresql:// URL")
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def _ensure_database(server: LocalPostgres, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if exists is None:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the in-progress runs whose worker is gone; their ids.

    A run launched by the DefaultRunLauncher carries the address of the code server that runs
    it (tag `.dagster/grpc_info`). When that server no longer answers, nothing will ever finish
    the run: it would hold its pool slots and, through the `dagster/partition` tag limit, block
    its window forever. Such runs are reported failed and their slots freed. Runs without the tag
    (executed in process, e.g. from the command line) are not ours to judge.
    """
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
    from dagster._core.storage.tags import GRPC_INFO_TAG
    from dagster._grpc.client import DagsterGrpcClient

    statuses = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    failed: list[str] = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=statuses)):
        run = record.dagster_run
        raw = run.tags.get(GRPC_INFO_TAG)
        if not raw:
            continue
        info = json.loads(raw)
        client = DagsterGrpcClient(
            port=info.get("port"),
            socket=info.get("socket"),
            host=info.get("host", "localhost"),
            use_ssl=bool(info.get("use_ssl", False)),
        )
        try:
            client.ping("supervisor")
            continue
        except DagsterUserCodeUnreachableError:
            pass
        message = (
            "The code server running this run no longer answers (its deployment was stopped "
            "without a clean shutdown): run marked failed by the supervisor."
        )
        instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed


class Supervisor:
    """Runs the deployment described by `settings` until a stop signal (see the module
    docstring)."""

    def __init__(self, settings: Settings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.base_env = dict(env)
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.postgres: LocalPostgres | None = None
        self.stop_requested = 0
        self._stopping = False
        self.urgent = False

    # ------------------------------------------------------------ signals

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # A signal while stopping already: skip the grace period.
        if self._stopping:
            self.urgent = True
        self.stop_requested = signum

    # ------------------------------------------------------------ startup

    def prepare(self) -> dict[str, str]:
        """Directories, instance config, PostgreSQL; the children's environment."""
        s = self.settings
        for path in (s.root, s.dagster_home, s.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(INSTANCE_CONFIG, s.dagster_home / "dagster.yaml")
        pg_url, state_url = s.dagster_pg_url, s.sync_state_url
        if pg_url is None or state_url is None:
            try:
                self.postgres = LocalPostgres(s.root / "postgres", port=s.local_pg_port).start()
            except ServiceUnavailable as exc:
                raise StartupError(
                    f"{exc}\nor point DAGSTER_PG_URL and SYNC_STATE_URL at a PostgreSQL server"
                ) from exc
            for name in (DAGSTER_DB, STATE_DB):
                _ensure_database(self.postgres, name)
            pg_url = pg_url or self.postgres.url(DAGSTER_DB)
            state_url = state_url or self.postgres.url(STATE_DB)
        env = {
            **self.base_env,
            "DAGSTER_HOME": str(s.dagster_home),
            "DAGSTER_PG_URL": dagster_url(pg_url),
            "SYNC_STATE_URL": state_url,
            "CRM_GENESYS_DATA_DIR": str(s.data_dir),
        }
        return env

    def sweep(self, env: Mapping[str, str]) -> None:
        import dagster as dg

        saved = dict(os.environ)
        os.environ.update(env)
        try:
            with dg.DagsterInstance.from_config(str(self.settings.dagster_home)) as instance:
                for run_id in fail_orphaned_runs(instance):
                    log.warning("run %s was left running by a dead deployment: failed", run_id)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def spawn(self, env: Mapping[str, str]) -> None:
        s = self.settings
        bin_dir = Path(sys.executable).parent
        commands: Sequence[tuple[str, list[str]]] = (
            ("dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(WORKSPACE)]),
            (
                "dagster-webserver",
                [
                    str(bin_dir / "dagster-webserver"),
                    "-w",
                    str(WORKSPACE),
                    "-h",
                    s.host,
                    "-p",
                    str(s.port),
                ],
            ),
        )
        for name, argv in commands:
            # A session of its own: a terminal's Ctrl-C reaches only us, and we stop the group.
            child = subprocess.Popen(argv, cwd=REPO, env=dict(env), start_new_session=True)
            self.children.append((name, child))
            log.info("started %s (pid %d)", name, child.pid)

    # ------------------------------------------------------------ running and stopping

    def _reap(self) -> None:
        """Collect exited descendants (we are their subreaper) so their groups can empty; our
        own children through their Popen, which keeps their exit status."""
        ours = {child.pid: child for _name, child in self.children}
        while True:
            try:
                exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if exited is None:
                return
            if exited.si_pid in ours:
                ours.pop(exited.si_pid).wait()
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(exited.si_pid, 0)

    def _group_alive(self, pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _signal_groups(self, signum: int) -> None:
        for _name, child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

    def _wait_groups(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            if not any(self._group_alive(child.pid) for _n, child in self.children):
                return True
            if self.urgent or time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def wait(self) -> int:
        """Until a stop signal (0) or a child's own exit (1)."""
        while not self.stop_requested:
            for name, child in self.children:
                code = child.poll()
                if code is not None:
                    log.error("%s exited on its own (status %s): stopping", name, code)
                    return 1
            self._reap()
            time.sleep(0.2)
        log.info("received %s: stopping", signal.Signals(self.stop_requested).name)
        return 0

    def stop(self) -> None:
        self._stopping = True
        self._signal_groups(signal.SIGTERM)
        if not self._wait_groups(self.settings.stop_grace_s):
            log.warning("still running after the grace period: killing")
            self._signal_groups(signal.SIGKILL)
            self._wait_groups(10.0)
        if self.postgres is not None:
            self.postgres.stop()
            self._reap()
        log.info("stopped")

    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        with contextlib.suppress(OSError, AttributeError):
            # Orphaned grandchildren (code servers, run workers) become ours to reap and to see.
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        status = 1
        try:
            env = self.prepare()
            self.sweep(env)
            if not self.stop_requested:
                self.spawn(env)
                log.info(
                    "Dagster UI on http://%s:%d (DAGSTER_HOME=%s)",
                    self.settings.host,
                    self.settings.port,
                    self.settings.dagster_home,
                )
                status = self.wait()
            else:
                status = 0
        except StartupError as exc:
            log.error("%s", exc)
        finally:
            self.stop()
        return status


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervise %(message)s")
    try:
        settings = Settings.from_env(os.environ)
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    return Supervisor(settings, os.environ).run()


if __name__ == "__main__":
    sys.exit(main())
