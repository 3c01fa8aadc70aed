"""Alerts: a failed window run and a failed blocking check each reach a local webhook receiver
as one short JSON message, with nothing of the window's contacts in it; off when unset."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crm_genesys.defs.alerts import (
    WEBHOOK_VAR,
    AlertConfigError,
    AlertDeliveryError,
    webhook_from_env,
)
from crm_genesys.emulator.faults import FaultConfig
from crm_genesys_tests.defs.conftest import World, make_world, windows_before
from crm_genesys_tests.deploy.webhook_receiver import Receiver, webhook_receiver

RUN_ALERT = "alert_on_run_failure"
CHECK_ALERT = "alert_on_check_failure"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with webhook_receiver() as rx:
        monkeypatch.setenv(WEBHOOK_VAR, rx.url)
        yield rx


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Two hourly windows of a demo CRM just before now, on the embedded emulator."""
    yield from make_world(tmp_path, monkeypatch, datetime.now(UTC))


def tick(world: World, name: str, cursor: str | None) -> dg.SensorExecutionData:
    """One evaluation of sensor `name` against the world's instance, as the daemon does it."""
    definitions = world.definitions
    context = dg.build_sensor_context(
        instance=world.instance, definitions=definitions, cursor=cursor
    )
    return definitions.resolve_sensor_def(name).evaluate_tick(context)


def crm_values(world: World) -> set[str]:
    """Every business key, name, phone and e-mail of the demo CRM (what must never be sent)."""
    conn = sqlite3.connect(world.crm_path)
    try:
        columns = "account_number, first_name, last_name, work_phone, mobile_phone, email"
        rows = conn.execute(f"SELECT {columns} FROM contacts").fetchall()
    finally:
        conn.close()
    return {str(v).strip() for row in rows for v in row if v is not None and len(str(v)) > 4}


def assert_no_contact_data(world: World, message: dict) -> None:
    text = json.dumps(message)
    leaked = [value for value in crm_values(world) if value in text]
    assert leaked == [], leaked


def test_a_failed_window_run_posts_one_short_alert(world: World, receiver: Receiver) -> None:
    first_tick = tick(world, RUN_ALERT, None)  # the daemon's first tick: from now on
    assert receiver.snapshot() == []
    window = windows_before(world.now, 1)[0]
    world.emulator.set_faults(FaultConfig(p_item_failure=1.0))
    result = world.materialize(window, raise_on_error=False)
    assert not result.success

    second_tick = tick(world, RUN_ALERT, first_tick.cursor)
    [message] = receiver.snapshot()
    assert message == {
        "source": "crm-genesys",
        "alert": "run_failed",
        "text": (
            f"crm-genesys: sync_job failed for window {window} (genesys_sync: Failure); "
            f"run {result.run_id}"
        ),
        "job": "sync_job",
        "partition": window,
        "run_id": result.run_id,
        "reason": "STEP_FAILURE",
        "steps": [{"step": "genesys_sync", "error": "Failure"}],
        "error": "Failure",
    }
    assert_no_contact_data(world, message)
    # The same failure is announced once.
    tick(world, RUN_ALERT, second_tick.cursor)
    assert len(receiver.snapshot()) == 1


def test_a_failed_blocking_check_posts_an_alert_naming_the_check_and_window(
    world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_tick = tick(world, CHECK_ALERT, None)
    assert first_tick.skip_message and "first tick" in first_tick.skip_message
    # Every demo window quarantines a few rows: a zero tolerance fails the blocking check.
    monkeypatch.setenv("CRM_GENESYS_MAX_QUARANTINE_RATE", "0")
    window = windows_before(world.now, 1)[0]
    result = world.materialize(window, raise_on_error=False)
    assert not result.success
    assert world.emulator.all_contacts() == []  # the check stopped the window before the sink

    second_tick = tick(world, CHECK_ALERT, first_tick.cursor)
    [message] = receiver.snapshot()
    assert message == {
        "source": "crm-genesys",
        "alert": "check_failed",
        "text": (
            f"crm-genesys: blocking check normalized_contacts/quarantine_rate failed for window "
            f"{window}: nothing downstream was sent; run {result.run_id}"
        ),
        "asset": "normalized_contacts",
        "check": "quarantine_rate",
        "severity": "ERROR",
        "blocking": True,
        "partition": window,
        "job": "sync_job",
        "run_id": result.run_id,
    }
    assert_no_contact_data(world, message)
    third_tick = tick(world, CHECK_ALERT, second_tick.cursor)
    assert len(receiver.snapshot()) == 1
    assert third_tick.cursor == second_tick.cursor


def test_a_refused_check_alert_fails_the_tick_and_is_sent_by_the_next(
    world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_tick = tick(world, CHECK_ALERT, None)
    monkeypatch.setenv("CRM_GENESYS_MAX_QUARANTINE_RATE", "0")
    world.materialize(windows_before(world.now, 1)[0], raise_on_error=False)

    receiver.status = 503
    with pytest.raises(Exception, match="answered HTTP 503") as failed:
        tick(world, CHECK_ALERT, first_tick.cursor)
    # Tried three times; the error names the host, never the token in the URL's path.
    assert len(receiver.messages) == 3
    assert "127.0.0.1" in str(failed.value) and "T0KEN" not in str(failed.value)

    receiver.status = 200
    tick(world, CHECK_ALERT, first_tick.cursor)  # the cursor did not move: sent now
    assert [m["check"] for m in receiver.snapshot()] == ["quarantine_rate"]


def test_alerting_is_off_without_a_webhook(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEBHOOK_VAR, raising=False)
    assert webhook_from_env() is None
    assert "alerting is off" in (tick(world, CHECK_ALERT, None).skip_message or "")
    first = tick(world, RUN_ALERT, None)
    monkeypatch.setenv("CRM_GENESYS_MAX_QUARANTINE_RATE", "0")  # a quick way to fail a run
    assert not world.materialize(windows_before(world.now, 1)[0], raise_on_error=False).success
    second = tick(world, RUN_ALERT, first.cursor)
    # The failed run was seen (the cursor moved past it) and skipped, without an error.
    assert "alerting is off" in (second.skip_message or "")
    assert second.cursor != first.cursor
    assert not second.dagster_run_reactions


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/services/T0KEN", "https://hooks.example.com/…"),
        ("http://127.0.0.1:8099/T0KEN", "http://127.0.0.1:8099/…"),
        ("http://[::1]:8099/T0KEN", "http://::1:8099/…"),
        ("http://localhost/T0KEN", "http://localhost/…"),
    ],
)
def test_https_webhooks_and_loopback_http_ones_are_accepted(url: str, shown: str) -> None:
    hook = webhook_from_env({WEBHOOK_VAR: url})
    assert hook is not None and hook.url == url
    assert hook.where == shown


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/services/T0KEN", "must use https"),
        ("http://10.0.0.8/services/T0KEN", "must use https"),
        ("ftp://hooks.example.com/T0KEN", "https:// URL with a host"),
        ("hooks.example.com/T0KEN", "https:// URL with a host"),
        ("https://hooks.example.com:port/T0KEN", "is not a URL"),
    ],
)
def test_other_webhooks_are_refused_without_showing_their_path(url: str, reason: str) -> None:
    with pytest.raises(AlertConfigError, match=reason) as refused:
        webhook_from_env({WEBHOOK_VAR: url})
    assert "T0KEN" not in str(refused.value)


def test_an_unreachable_webhook_is_a_delivery_error_naming_only_its_host() -> None:
    with webhook_receiver() as rx:
        url = rx.url  # the receiver is gone once the block ends: nothing listens on its port
    hook = webhook_from_env({WEBHOOK_VAR: url})
    assert hook is not None
    with pytest.raises(AlertDeliveryError, match="unreachable") as failed:
        hook.post({"alert": "test"})
    assert "T0KEN" not in str(failed.value)
