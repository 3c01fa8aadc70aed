"""`make prod`'s supervisor driven from a test: started as a process, polled through the
webserver's GraphQL API, and never left behind."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from deploy.supervise import REPO

STARTUP_DEADLINE_S = 180.0
DAEMON_HEALTH = """{ instance { daemonHealth { allDaemonStatuses {
    daemonType required healthy } } } }"""


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


def start_supervisor(env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m deploy.supervise` (what `make prod` runs), its output into `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.supervise"],
            cwd=REPO,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the supervisor and everything under it, if it still runs."""
    if proc.poll() is None:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        for child in children:
            child.kill()
        proc.wait()
