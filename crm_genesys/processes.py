"""Which process this is, and whether another one still runs: a host name, a pid and the
process's start time, so that a reused pid is never mistaken for the process that had it.

Used wherever a record names the process that holds something (window leases, the sinks of the
sync state) and a later process must tell whether that holder is gone. No Dagster here.
"""

from __future__ import annotations

import os
import socket


def this_host() -> str:
    return socket.gethostname()


def process_started(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux `/proc`); 0 where `/proc`
    is missing (then only the pid is compared); None when no such process exists."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # Field 22 (starttime), counted after the parenthesised command name.
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        return None if os.path.isdir("/proc") else (0 if _pid_exists(pid) else None)
    except (OSError, IndexError, ValueError):
        return 0 if _pid_exists(pid) else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_alive(pid: int, started: int) -> bool:
    """Whether the process `pid` that started at `started` (see `process_started`) still runs."""
    now = process_started(pid)
    return now is not None and (started == 0 or now == 0 or now == started)


def this_process() -> tuple[str, int, int]:
    """(host, pid, start time) of this process."""
    pid = os.getpid()
    return this_host(), pid, process_started(pid) or 0
