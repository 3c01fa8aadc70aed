"""Async work of a step that stops when asked: SIGTERM or Ctrl-C during `run_async` cancel the
work and then interrupt the step the way Dagster expects.

Dagster routes SIGTERM to its SIGINT handler while it executes, and during a step that handler
raises `DagsterExecutionInterruptedError` in whatever frame runs. Inside an asyncio event loop
that frame is often a callback, and asyncio logs and drops any exception of a callback that is
not KeyboardInterrupt or SystemExit: the stop request would be lost and the run would carry on.
So while the loop runs, both signals are handled by the loop itself (`loop.add_signal_handler`):
the work is cancelled (the sink's tasks end; intents written before each create make a re-run
resolve what was in flight), and once the loop is closed the signal goes to the handler that
was installed before, outside the loop, so Dagster records the step as interrupted. Should the
cancellation hang, every thread's stack goes to stderr and the process exits after
`STOP_GRACE_SECONDS`: as after SIGKILL, the state is safe and the next run reclaims the window.
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# After a stop request, how long the orderly stop may take before the process exits hard.
STOP_GRACE_SECONDS = 7.0


def arm_hard_stop() -> None:
    """Exit the process (after dumping every thread's stack) unless it ends within the grace."""
    faulthandler.dump_traceback_later(STOP_GRACE_SECONDS, exit=True)


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`, stoppable by SIGINT and SIGTERM (see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(work)
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    received: list[int] = []

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            if not received:
                arm_hard_stop()
            received.append(signum)
            task.cancel()

        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        return await work

    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        if not received:
            raise
        _interrupt(received[0], previous)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if received:  # the work finished anyway: the stop request still stands
        _interrupt(received[0], previous)
    return result


def _interrupt(signum: int, previous: dict[signal.Signals, Any]) -> None:
    """Hand the stop request to the handler installed before (Dagster's raises its interrupt
    error; Python's default raises KeyboardInterrupt)."""
    handler = previous.get(signal.Signals(signum))
    if callable(handler):
        handler(signum, None)
    raise KeyboardInterrupt(f"signal {signum}")
