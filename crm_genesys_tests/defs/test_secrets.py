"""After failing runs, neither the client secret nor any bearer token appears in the Dagster event
log (messages, metadata, errors), in Python logging or on the terminal."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from crm_genesys.defs.resources import GenesysResource
from crm_genesys.emulator import EmulatorConfig, create_app
from crm_genesys.emulator.faults import FaultConfig
from crm_genesys_tests.defs.conftest import WINDOWS, World
from crm_genesys_tests.threaded_server import serve_in_thread

SECRET = "s3cr3t-Zq9-never-print-me"


def _event_log_text(instance: dg.DagsterInstance) -> str:
    runs = instance.get_runs()
    assert runs
    return "\n".join(
        serialize_value(entry) for run in runs for entry in instance.all_logs(run.run_id)
    )


def test_secrets_never_leave_after_failing_runs(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    app = create_app(
        EmulatorConfig(
            db_path=world.root / "org.sqlite",
            client_id="sync-client",
            client_secret=SECRET,
            faults=FaultConfig(p_item_failure=1.0, p_500=0.2, seed=5),
        )
    )
    tokens: list[str] = []
    issue = app.emulator.issue_token

    def recording_issue(*args: Any, **kwargs: Any) -> dict[str, Any]:
        body = issue(*args, **kwargs)
        tokens.append(body["access_token"])
        return body

    # Instruments the emulator (the other side), not the code under test.
    monkeypatch.setattr(app.emulator, "issue_token", recording_issue)
    monkeypatch.setenv("GENESYS_CLIENT_SECRET", SECRET)
    with serve_in_thread(app) as url:
        genesys = GenesysResource(
            target="genesys",
            env={
                "GENESYS_BASE_URL": url,
                "GENESYS_CLIENT_ID": "sync-client",
                "GENESYS_CLIENT_SECRET": dg.EnvVar("GENESYS_CLIENT_SECRET"),  # type: ignore[dict-item]
            },
        )
        real = world.but(genesys=genesys)
        # 1. Every item fails retryably: the window fails after its retries.
        assert not real.materialize(WINDOWS[0], raise_on_error=False).success
        # 2. The org refuses our credentials: an authentication error ends the run.
        monkeypatch.setenv("GENESYS_CLIENT_SECRET", SECRET + "-rotated")
        assert not real.materialize(WINDOWS[1], raise_on_error=False).success

    assert tokens, "the first run never authenticated"
    out, err = capfd.readouterr()
    log = _event_log_text(world.instance)
    haystacks = [log, caplog.text, out, err]
    for needle in [SECRET, *tokens]:
        for text in haystacks:
            assert needle not in text
    assert "bad.credentials" in log or "401" in log
