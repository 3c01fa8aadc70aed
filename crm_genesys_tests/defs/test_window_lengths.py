"""Every window length the README lists loads, schedules and runs; `--window` takes only real
partition keys; and a deployment's window length cannot silently change under its state.

The window length is read when the definitions are imported, so each length runs in a fresh
process, exactly as a deployment configured with it would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.defs.partitions import WindowKeyError, check_window_key
from crm_genesys_tests.emulator_server import REPO

SCHEDULE_PROBE = """
import json, sys
from datetime import datetime, UTC
import dagster as dg
from crm_genesys.definitions import defs
dg.Definitions.validate_loadable(defs)
schedule = defs.resolve_schedule_def("sync_schedule")
out = {"cron": schedule.cron_schedule, "keys": []}
for moment in sys.argv[1:]:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime.fromisoformat(moment),
        repository_def=defs.get_repository_def(),
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    out["keys"].append(request.partition_key)
print(json.dumps(out))
"""


def _env(tmp_path: Path, window: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GENESYS_", "CRM_", "SYNC_STATE", "DAGSTER_"))
    }
    env.update(
        {
            "CRM_GENESYS_WINDOW": window,
            "CRM_GENESYS_DATA_DIR": str(tmp_path / "data"),
            "DAGSTER_HOME": str(tmp_path / "home"),
            "CRM_GENESYS_PARTITION_START": "2026-11-01-00:00",
        }
    )
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("window", "moments", "keys", "cron"),
    [
        (
            "15min",
            ["2026-11-29T10:17:00+00:00", "2026-11-29T10:02:00+00:00"],
            ["2026-11-29-10:00", "2026-11-29-09:45"],
            "2-59/15 * * * *",
        ),
        ("hourly", ["2026-11-29T12:05:00+00:00"], ["2026-11-29-11:00"], "5 * * * *"),
        ("daily", ["2026-11-29T00:05:00+00:00"], ["2026-11-28-00:00"], "5 0 * * *"),
    ],
)
def test_each_window_length_loads_and_schedules_the_window_that_just_closed(
    tmp_path: Path, window: str, moments: list[str], keys: list[str], cron: str
) -> None:
    done = _run(["-c", SCHEDULE_PROBE, *moments], _env(tmp_path, window))
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe == {"cron": cron, "keys": keys}


@pytest.mark.parametrize(("window", "length"), [("15min", 15), ("daily", 24 * 60)])
def test_each_window_length_runs_a_window(tmp_path: Path, window: str, length: int) -> None:
    env = _env(tmp_path, window)
    now = datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
    (tmp_path / "data").mkdir()
    generate_demo_crm(
        tmp_path / "data" / "demo_crm.sqlite",
        rows=150,
        seed=2,
        now=now,
        windows=1,
        window=timedelta(minutes=length),
    )
    key = (now - timedelta(minutes=length)).strftime("%Y-%m-%d-%H:%M")
    done = _run(["-m", "crm_genesys.cli", "sync", "--window", key], env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert key in done.stdout and "ok" in done.stdout

    # The same state under another window length would read old keys as other windows.
    other = "hourly" if window == "15min" else "15min"
    refused = _run(
        ["-m", "crm_genesys.cli", "sync", "--window", "2026-11-28-22:00"],
        {**env, "CRM_GENESYS_WINDOW": other},
    )
    assert refused.returncode != 0
    assert "CRM_GENESYS_WINDOW" in refused.stdout + refused.stderr
    assert f"{window} windows" in refused.stdout + refused.stderr


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("2026-11-29 10:00", "not a window key"),
        ("yesterday", "not a window key"),
        ("2025-12-31-23:00", "before the first window"),
        ("2026-11-29-10:30", "not the start of a window"),
        ("2026-11-29-12:00", "still open"),
    ],
)
def test_window_keys_that_name_no_partition_are_refused_in_plain_words(key: str, why: str) -> None:
    with pytest.raises(WindowKeyError, match=why):
        check_window_key(key, now=datetime(2026, 11, 29, 12, 30, tzinfo=UTC))


def test_a_closed_window_key_is_accepted() -> None:
    now = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
    assert check_window_key("2026-11-29-11:00", now=now) == "2026-11-29-11:00"
