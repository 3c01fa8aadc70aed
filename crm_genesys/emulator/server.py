"""The emulator over HTTP: `serve(config, host, port)` runs uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
from types import FrameType

import uvicorn

from crm_genesys.emulator.app import create_app
from crm_genesys.emulator.config import EmulatorConfig


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8900) -> None:
    """Serve the emulated org on `host:port` (port 0: any free port) until SIGTERM or SIGINT.

    Prints `emulator listening on http://HOST:PORT` (the real port) once it accepts connections,
    so a parent process can wait for that line. The socket is bound before uvicorn starts so
    the announced port is the one in use even when 0 was asked for.
    """
    app = create_app(config)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # Keep connections alive across a sync's bursts, like the platform's gateways do.
            timeout_keep_alive=30,
        )
    )

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"emulator listening on http://{host}:{bound_port}", flush=True)

    async def main() -> None:
        announcer = asyncio.create_task(announce())
        try:
            # uvicorn installs SIGTERM/SIGINT handlers and shuts down gracefully on them.
            await server.serve(sockets=[sock])
        finally:
            announcer.cancel()
            app.state.emulator.store.close()

    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the
        # handler that was installed before it: make that handler a clean exit (status 0).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _exit_cleanly)
    asyncio.run(main())
    sys.stdout.flush()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
