"""Private PostgreSQL and Redis servers from the Debian packages: for tests, CI and `make prod`.

Each server lives in a directory of its own, listens on 127.0.0.1 only, and is stopped cleanly
(`pg_ctl stop -m fast`; SIGTERM to redis, which exits without saving: it is started with no
persistence). PostgreSQL refuses to run as root, so when we are root, `initdb` and the server run
as the `postgres` system user (created by Debian's postgresql package), else as `nobody`; the
server's directory is handed to that user and every directory above it must be traversable.

Standard library only: `.ci/run` uses it before the virtual environment exists.

    python3 -m deploy.services start DIR   # start both; prints (and writes DIR/services.env)
                                           # CRM_GENESYS_TEST_POSTGRES_URL=... and ..._REDIS_URL=...
    python3 -m deploy.services stop DIR    # stop both
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POSTGRES_URL_ENV = "CRM_GENESYS_TEST_POSTGRES_URL"
REDIS_URL_ENV = "CRM_GENESYS_TEST_REDIS_URL"
# The superuser initdb creates; trust authentication on loopback (a throwaway, private server).
POSTGRES_USER = "postgres"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class ServiceUnavailable(RuntimeError):
    """A server cannot be started here: its binaries are missing, or it failed (the message says
    which, with the end of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin_dir() -> Path | None:
    """The newest `/usr/lib/postgresql/<major>/bin` holding initdb and pg_ctl (or the directory of
    `pg_ctl` on PATH); None when PostgreSQL's server binaries are not installed."""

    def major(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else -1

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").exists():
        return Path(on_path).resolve().parent
    return None


def _tail(path: Path, chars: int = 2_000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceUnavailable("running as root and neither a `postgres` nor a `nobody` user exists")


def _check_traversable(path: Path, user: pwd.struct_passwd) -> None:
    """Raise unless `user` may enter every directory above `path` (PostgreSQL, run as that user,
    must reach its data directory)."""
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == user.pw_gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            raise ServiceUnavailable(
                f"PostgreSQL runs as {user.pw_name!r} (not as root), which cannot enter {parent}: "
                f"put the server under another directory or `chmod o+x {parent}`"
            )


class LocalPostgres:
    """A PostgreSQL server whose files are all under `root` (`root/data` is the cluster,
    `root/postgres.log` its log), on 127.0.0.1:`port`.

    `durable=False` turns fsync, synchronous commit and full-page writes off: for tests, where
    a crash only loses a throwaway database. `start()` initializes the cluster on first use and
    is a no-op on a running server; `stop()` is a fast shutdown (open sessions are rolled back)
    and a no-op on a stopped one. The server runs in a session of its own, so a Ctrl-C in the
    terminal reaches whoever owns it (who stops it last), not the server itself.
    """

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        durable: bool = True,
        bin_dir: Path | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = port if port is not None else free_port()
        self.durable = durable
        found = bin_dir or postgres_bin_dir()
        if found is None:
            raise ServiceUnavailable(
                "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb): "
                "install the Debian package `postgresql`"
            )
        self.bin_dir = found
        self._user = _server_user()

    def url(self, database: str = "postgres", *, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of `database` (`driver=""` gives the plain libpq form that
        dagster-postgres takes)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{POSTGRES_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            start_new_session=True,
            **kwargs,
        )

    def is_running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def start(self) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _check_traversable(self.root, self._user)
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            done = self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                POSTGRES_USER,
                "--auth=trust",
                "--no-locale",
                "--encoding=UTF8",
                "--no-instructions",
                *([] if self.durable else ["--no-sync"]),
                check=False,
            )
            if done.returncode != 0:
                raise ServiceUnavailable(f"initdb failed in {self.data}: {done.stderr[-2_000:]}")
        if self.is_running():
            return self
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            f"-c unix_socket_directories={self.data}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        done = self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(int(START_TIMEOUT_S)),
            "-o",
            " ".join(options),
            check=False,
        )
        if done.returncode != 0:
            raise ServiceUnavailable(
                f"PostgreSQL did not start on 127.0.0.1:{self.port}: {done.stderr.strip()}\n"
                f"{_tail(self.log)}"
            )
        return self

    def stop(self) -> None:
        if not self.is_running():
            return
        timeout = str(int(STOP_TIMEOUT_S))
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", timeout)


def redis_server_bin() -> str | None:
    """Path of `redis-server` (Debian package `redis-server`), or None."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def redis_ping(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at `host`:`port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is dead for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


class LocalRedis:
    """A Redis server under `root` (pid file, log), on 127.0.0.1:`port`, without persistence
    (no RDB snapshots, no AOF): a broker whose queue dies with it. `start()` daemonizes it, so
    another process can `stop()` it from the pid file."""

    def __init__(self, root: Path, *, port: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.port = port if port is not None else free_port()
        self.pidfile = self.root / "redis.pid"
        self.log = self.root / "redis.log"
        binary = redis_server_bin()
        if binary is None:
            raise ServiceUnavailable(
                "redis-server not found: install the Debian package `redis-server`"
            )
        self.binary = binary

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> LocalRedis:
        self.root.mkdir(parents=True, exist_ok=True)
        if redis_ping(self.port):
            return self
        subprocess.run(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.log),
            ],
            check=True,
            capture_output=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not redis_ping(self.port):
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"redis-server did not answer on 127.0.0.1:{self.port}\n{_tail(self.log)}"
                )
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)


def _state_file(root: Path) -> Path:
    return root / "services.env"


def start_services(root: Path) -> dict[str, str]:
    """Start PostgreSQL (durable=False) and Redis under `root`; the environment that points the
    tests at them, also written to `root/services.env` (KEY=VALUE lines)."""
    root.mkdir(parents=True, exist_ok=True)
    postgres = LocalPostgres(root / "postgres", durable=False).start()
    try:
        redis = LocalRedis(root / "redis").start()
    except BaseException:
        postgres.stop()
        raise
    env = {POSTGRES_URL_ENV: postgres.url(), REDIS_URL_ENV: redis.url()}
    _state_file(root).write_text(
        "".join(f"{k}={v}\n" for k, v in env.items())
        + f"CRM_GENESYS_SERVICES_POSTGRES_PORT={postgres.port}\n"
        + f"CRM_GENESYS_SERVICES_REDIS_PORT={redis.port}\n"
    )
    return env


def stop_services(root: Path) -> None:
    """Stop what `start_services(root)` started (whatever of it is still running)."""
    values: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in _state_file(root).read_text().splitlines():
            key, _, value = line.partition("=")
            values[key] = value
    if (root / "postgres" / "data").exists():
        port = int(values.get("CRM_GENESYS_SERVICES_POSTGRES_PORT", "0")) or None
        LocalPostgres(root / "postgres", port=port).stop()
    if (root / "redis").exists() and redis_server_bin() is not None:
        port = int(values.get("CRM_GENESYS_SERVICES_REDIS_PORT", "0")) or None
        LocalRedis(root / "redis", port=port).stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.services", description=__doc__)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("root", type=Path, help="directory holding the servers' files")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            for key, value in start_services(args.root).items():
                print(f"{key}={value}")
        else:
            stop_services(args.root)
    except ServiceUnavailable as exc:
        print(f"deploy.services: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
