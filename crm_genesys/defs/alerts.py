"""Alerts: a short JSON message to a webhook for each failed run and each failed blocking check.

`CRM_GENESYS_ALERT_WEBHOOK_URL` turns them on (https, or http on a loopback host); when it is
empty both sensors skip. A message names what failed and where to look — the job, the window
(partition), the run id, the failed steps with the class of their error, or the asset check —
and nothing else: no error text, no metadata, no secret, no contact data; those stay in the
Dagster UI. Each message also carries a one-line `text` (what chat webhooks display).

The webhook URL is a secret (chat webhooks carry their token in the path): errors and logs show
its scheme and host only. A message the webhook does not take (transport error, 429, 5xx) is sent
again twice within the tick. Still refused: a check alert's tick fails and keeps its cursor, so
the next tick sends it again (at least once); a run alert is recorded as the sensor's error on
the tick and on the run's event log and not sent again (Dagster's run-status sensors move their
cursor past a run whatever the outcome).
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import httpx

from crm_genesys import settings

WEBHOOK_VAR = "CRM_GENESYS_ALERT_WEBHOOK_URL"
SOURCE = "crm-genesys"
# A tick sends at most this many check alerts; the rest are counted in one more message.
MAX_CHECK_ALERTS_PER_TICK = 20
TIMEOUT_S = 5.0
# Pauses between the attempts to deliver one message.
RETRY_DELAYS_S = (0.5, 1.5)
# How often the daemon evaluates the alert sensors (Dagster's own default).
INTERVAL_S = 30


class AlertConfigError(ValueError):
    """The webhook setting cannot be used; the message shows no more of the URL than its host."""


class AlertDeliveryError(RuntimeError):
    """The webhook did not take a message (the tick fails and the next one sends it again)."""


def _where(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Webhook:
    """Where alerts go. `where` is the URL as it may be shown (scheme and host)."""

    url: str

    @property
    def where(self) -> str:
        return _where(self.url)

    def post(self, message: Mapping[str, Any]) -> None:
        """Send one message, retrying transport errors, 429 and 5xx answers a few times;
        `AlertDeliveryError` (naming only the host) when it is not taken."""
        problem = ""
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = httpx.post(self.url, json=dict(message), timeout=TIMEOUT_S)
            except httpx.HTTPError as exc:
                problem = f"unreachable ({type(exc).__name__})"
            else:
                if response.is_success:
                    return
                problem = f"answered HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            if delay is not None:
                time.sleep(delay)
        raise AlertDeliveryError(f"alert webhook {self.where} {problem}")


def webhook_from_env(environ: Mapping[str, str] | None = None) -> Webhook | None:
    """The configured webhook, None when alerting is off; `AlertConfigError` for a URL that is
    not https (or http on a loopback host)."""
    raw = str(settings.get(WEBHOOK_VAR, os.environ if environ is None else environ))
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise AlertConfigError(f"{WEBHOOK_VAR} is not a URL") from None
    if not host or parts.scheme not in ("https", "http"):
        raise AlertConfigError(f"{WEBHOOK_VAR} must be an https:// URL with a host")
    if parts.scheme == "http" and not _loopback(host):
        raise AlertConfigError(
            f"{WEBHOOK_VAR} ({_where(raw)}) must use https: plain http is accepted only on a "
            "loopback host (127.0.0.1, ::1, localhost)"
        )
    return Webhook(raw)


# ----------------------------------------------------------------------------- messages


def root_error_class(error: Any) -> str | None:
    """The class name of the innermost cause of a `SerializableErrorInfo` (what went wrong,
    beneath Dagster's wrappers); None without an error."""
    if error is None:
        return None
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return str(error.cls_name) if error.cls_name else None


def run_failure_message(
    run: dg.DagsterRun, run_error: Any, step_failures: list[tuple[str, str | None]]
) -> dict[str, Any]:
    """The alert for a failed run: job, window, run id, failed steps and their error classes."""
    partition = run.tags.get("dagster/partition")
    steps = [{"step": step, "error": error} for step, error in step_failures]
    error = root_error_class(run_error)
    where = f" for window {partition}" if partition else ""
    what = ", ".join(f"{s['step']}: {s['error'] or 'failed'}" for s in steps) or error or "failed"
    return {
        "source": SOURCE,
        "alert": "run_failed",
        "text": f"{SOURCE}: {run.job_name} failed{where} ({what}); run {run.run_id}",
        "job": run.job_name,
        "partition": partition,
        "run_id": run.run_id,
        "reason": run.tags.get("dagster/failure_reason"),
        "steps": steps,
        "error": error,
    }


def check_failure_message(
    key: dg.AssetCheckKey, severity: str, run: dg.DagsterRun | None, run_id: str
) -> dict[str, Any]:
    """The alert for a failed blocking check: asset, check, severity, window, job and run id."""
    partition = run.tags.get("dagster/partition") if run is not None else None
    where = f" for window {partition}" if partition else ""
    asset = key.asset_key.to_user_string()
    return {
        "source": SOURCE,
        "alert": "check_failed",
        "text": (
            f"{SOURCE}: blocking check {asset}/{key.name} failed{where}: nothing downstream "
            f"was sent; run {run_id}"
        ),
        "asset": asset,
        "check": key.name,
        "severity": severity,
        "blocking": True,
        "partition": partition,
        "job": run.job_name if run is not None else None,
        "run_id": run_id,
    }


# ----------------------------------------------------------------------------- sensors


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    minimum_interval_seconds=INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Posts a short JSON message per failed run to {WEBHOOK_VAR} (off when unset).",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    hook = webhook_from_env()
    if hook is None:
        return dg.SkipReason(f"alerting is off: {WEBHOOK_VAR} is not set")
    failures = [
        (str(event.step_key), root_error_class(event.step_failure_data.error))
        for event in context.get_step_failure_events()
    ]
    run_error = getattr(context.failure_event.event_specific_data, "error", None)
    hook.post(run_failure_message(context.dagster_run, run_error, failures))
    return None


def _blocking_checks(context: dg.SensorEvaluationContext) -> list[dg.AssetCheckKey]:
    graph = context.repository_def.asset_graph  # type: ignore[union-attr]
    keys = [key for key in graph.asset_check_keys if graph.get_check_spec(key).blocking]
    return sorted(keys, key=lambda k: k.to_user_string())


def _failed_since(
    instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], after: int
) -> Iterator[tuple[int, dg.AssetCheckKey, str, str]]:
    """(record id, check, severity, run id) of each failed evaluation after record `after`."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    failed = {AssetCheckExecutionRecordStatus.FAILED}
    found = []
    for key in keys:
        history = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=MAX_CHECK_ALERTS_PER_TICK * 5, status=failed
        )
        for record in history:
            if record.id <= after:
                continue
            evaluation = record.event.asset_check_evaluation if record.event else None
            severity = evaluation.severity.value if evaluation is not None else "ERROR"
            # A blocking check stops what follows only at ERROR severity.
            if severity == "ERROR":
                found.append((record.id, key, severity, record.run_id))
    yield from sorted(found, key=lambda f: f[0])


def _newest_record(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]) -> int:
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return max((record.id for record in latest.values()), default=0)


@dg.sensor(
    name="alert_on_check_failure",
    minimum_interval_seconds=INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Posts a short JSON message to "
        f"{WEBHOOK_VAR} for each failed blocking asset check (quarantine rate, mass clear): "
        "the window sent nothing past it. Off when unset."
    ),
)
def alert_on_check_failure(context: dg.SensorEvaluationContext) -> dg.SkipReason | None:
    """Alerts on failed evaluations of blocking checks recorded after the cursor (the newest
    record seen). The first tick only sets the cursor: what failed before alerting was switched
    on is not announced."""
    hook = webhook_from_env()
    if hook is None:
        return dg.SkipReason(f"alerting is off: {WEBHOOK_VAR} is not set")
    keys = _blocking_checks(context)
    if context.cursor is None:
        context.update_cursor(str(_newest_record(context.instance, keys)))
        return dg.SkipReason("first tick: alerting on check failures from now on")
    failures = list(_failed_since(context.instance, keys, int(context.cursor)))
    for _record, key, severity, run_id in failures[:MAX_CHECK_ALERTS_PER_TICK]:
        run = context.instance.get_run_by_id(run_id)
        hook.post(check_failure_message(key, severity, run, run_id))
    if len(failures) > MAX_CHECK_ALERTS_PER_TICK:
        more = len(failures) - MAX_CHECK_ALERTS_PER_TICK
        hook.post(
            {
                "source": SOURCE,
                "alert": "check_failed_more",
                "text": f"{SOURCE}: {more} more blocking check failures (see the Dagster UI)",
                "count": more,
            }
        )
    if failures:
        context.update_cursor(str(failures[-1][0]))
        return None
    return dg.SkipReason("no blocking check failed since the last tick")


ALERT_SENSORS = [alert_on_run_failure, alert_on_check_failure]
