"""A stop signal that arrives while a step's event loop runs interrupts the step, and is never
lost inside an asyncio callback (as it is with a plain `asyncio.run`)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from crm_genesys.defs import stopping
from crm_genesys.defs.stopping import STOP_SIGNALS, run_async


class Interrupted(BaseException):
    """What Dagster's handler raises during a step (DagsterExecutionInterruptedError)."""


def _raising(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


@contextmanager
def step_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM handled as during a Dagster step."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raising)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def no_hard_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test process must not exit: the orderly path is what is under test.
    monkeypatch.setattr(stopping, "arm_hard_stop", lambda: None)


def _long_send(finished: list[bool]):
    async def work() -> str:
        # The signal lands while a plain loop callback runs (not inside the coroutine).
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.sleep(1.0)
        finished.append(True)
        return "finished"

    return work()


def test_a_plain_asyncio_run_loses_the_stop_request() -> None:
    """Why `run_async` exists: the handler's exception is raised in a callback, which asyncio
    logs and drops; the work runs on to its end."""
    finished: list[bool] = []
    with step_handlers():
        assert asyncio.run(_long_send(finished)) == "finished"
    assert finished


def test_run_async_cancels_the_work_and_interrupts_the_step() -> None:
    finished: list[bool] = []
    with step_handlers():
        with pytest.raises(Interrupted):
            run_async(_long_send(finished))
        assert signal.getsignal(signal.SIGTERM) is _raising  # the step's handlers are back
        assert signal.getsignal(signal.SIGINT) is _raising
    assert finished == [], "the work ran on after the stop request"


def test_run_async_returns_the_result_when_no_signal_comes() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    with step_handlers():
        assert run_async(work()) == 7
