"""The emulator as a real HTTP server in a subprocess, for tests that need separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from crm_genesys.emulator import DEFAULT_ADMIN_TOKEN

REPO = Path(__file__).resolve().parents[1]
# Admin calls such as the foreign writer read the whole org: at 50,000 contacts on a loaded
# 2-core machine one takes longer than 10 s, and a timeout there ends a long run for nothing.
ADMIN_TIMEOUT_S = 120.0


def admin_headers(token: str = DEFAULT_ADMIN_TOKEN) -> dict[str, str]:
    """The header the emulator's `/__emulator/...` admin endpoints need."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Server:
    """A running emulator server; `get`/`put`/`post` call its admin endpoints."""

    url: str
    process: subprocess.Popen[str]
    admin_token: str = DEFAULT_ADMIN_TOKEN

    def get(self, path: str) -> Any:
        return self._admin("GET", path, None)

    def put(self, path: str, body: Any) -> Any:
        return self._admin("PUT", path, body)

    def post(self, path: str, body: Any) -> Any:
        return self._admin("POST", path, body)

    def _admin(self, method: str, path: str, body: Any) -> Any:
        response = httpx.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers=admin_headers(self.admin_token),
            timeout=ADMIN_TIMEOUT_S,
        )
        response.raise_for_status()
        return response.json()

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed if it does not stop within 10 s)."""
        self.process.terminate()
        try:
            return self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=5)


def start_server(*args: str, env: dict[str, str] | None = None) -> Server:
    """`python -m crm_genesys.emulator serve --port 0 ARGS`, once it announces its URL.

    Its stderr goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
    """
    with tempfile.TemporaryFile(mode="w+") as errors:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "crm_genesys.emulator", "serve", "--port", "0", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("emulator listening on "):
            process.kill()
            process.wait(timeout=5)
            errors.seek(0)
            raise AssertionError(f"emulator did not start: {line!r} {errors.read()}")
    return Server(line.split()[-1], process)
