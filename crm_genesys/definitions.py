"""The one Definitions of crm-genesys, its resources and executor built from the environment in
one place."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from crm_genesys import settings
from crm_genesys.defs.alerts import ALERT_SENSORS
from crm_genesys.defs.assets import contact_changes, crm_contacts, genesys_sync, normalized_contacts
from crm_genesys.defs.automation import retry_failed_windows, sync_job, sync_schedule
from crm_genesys.defs.dead_letters import dead_letters_job, drain_dead_letters
from crm_genesys.defs.full_sync import cutover_windows, full_sync_job, genesys_full_sync
from crm_genesys.defs.live import genesys_live_sync, live_sync_job, sync_live_changes
from crm_genesys.defs.reconciliation import reconcile_job, reconcile_schedule
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.defs.storage import FramesIOManager, FrameStore


def frame_resources(frames: FrameStore | None = None) -> dict[str, Any]:
    """Where intermediate frames live (`frames`, the environment's by default) and the IO
    manager that keeps them there as Parquet."""
    store = frames if frames is not None else FrameStore.from_env()
    return {"frames": store, "io_manager": FramesIOManager(store=store)}


CELERY_VARS = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


def resources_from_env() -> dict[str, Any]:
    """The CRM, Genesys, sync-state and frame resources as the environment configures them."""
    return {
        "crm": CrmResource.from_env(),
        "genesys": GenesysResource.from_env(),
        "state": SyncStateResource.from_env(),
        **frame_resources(),
    }


def executor_from_env() -> dg.ExecutorDefinition | None:
    """The executor of launched runs that `CRM_GENESYS_EXECUTOR` names.

    `multiprocess`: None, Dagster's default (each step in a process of its own, on the machine of
    the run). `celery`: dagster-celery's executor, steps queued to Celery workers through
    `CELERY_BROKER_URL`, events back through `CELERY_RESULT_BACKEND`; both are read from the
    environment of the run's process when it starts (never stored in config or shown), and the
    workers read the same two variables. Runs executed in process (`crm-genesys sync`) ignore it.
    Raises `SettingError` when celery is asked for without both URLs or without dagster-celery.
    """
    if settings.get("CRM_GENESYS_EXECUTOR") == "multiprocess":
        return None
    missing = [name for name in CELERY_VARS if not settings.get(name)]
    if missing:
        raise settings.SettingError(
            f"CRM_GENESYS_EXECUTOR=celery needs {' and '.join(missing)} (e.g. "
            "redis://127.0.0.1:6379/0), the same for the run's process and the Celery workers"
        )
    try:
        from dagster_celery import celery_executor
    except ImportError:
        raise settings.SettingError(
            "CRM_GENESYS_EXECUTOR=celery needs dagster-celery: pip install 'crm-genesys[celery]'"
        ) from None
    config = {"broker": {"env": CELERY_VARS[0]}, "backend": {"env": CELERY_VARS[1]}}
    return celery_executor.configured(config, name="celery")


def make_definitions(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The Definitions with `resources` (tests, the command line) or those of the environment.
    Given resources without `frames` get the environment's frame store (and its IO manager)."""
    chosen = dict(resources) if resources is not None else resources_from_env()
    if "frames" not in chosen:
        chosen.update(frame_resources())
    elif "io_manager" not in chosen:
        chosen["io_manager"] = FramesIOManager(store=chosen["frames"])
    return dg.Definitions(
        assets=[
            crm_contacts,
            normalized_contacts,
            contact_changes,
            genesys_sync,
            genesys_full_sync,
            genesys_live_sync,
        ],
        jobs=[sync_job, full_sync_job, reconcile_job, dead_letters_job, live_sync_job],
        schedules=[sync_schedule, reconcile_schedule],
        sensors=[
            retry_failed_windows,
            cutover_windows,
            drain_dead_letters,
            sync_live_changes,
            *ALERT_SENSORS,
        ],
        resources=chosen,
        executor=executor_from_env(),
    )


defs = make_definitions()
