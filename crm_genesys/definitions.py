"""The one Definitions of crm-genesys, its resources built from the environment in one place."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from crm_genesys.defs.assets import contact_changes, crm_contacts, genesys_sync, normalized_contacts
from crm_genesys.defs.automation import retry_failed_windows, sync_job, sync_schedule
from crm_genesys.defs.dead_letters import dead_letters_job, drain_dead_letters
from crm_genesys.defs.full_sync import cutover_windows, full_sync_job, genesys_full_sync
from crm_genesys.defs.reconciliation import reconcile_job, reconcile_schedule
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.defs.storage import FramesIOManager, FrameStore


def frame_resources(frames: FrameStore | None = None) -> dict[str, Any]:
    """Where intermediate frames live (`frames`, the environment's by default) and the IO
    manager that keeps them there as Parquet."""
    store = frames if frames is not None else FrameStore.from_env()
    return {"frames": store, "io_manager": FramesIOManager(store=store)}


def resources_from_env() -> dict[str, Any]:
    """The CRM, Genesys, sync-state and frame resources as the environment configures them."""
    return {
        "crm": CrmResource.from_env(),
        "genesys": GenesysResource.from_env(),
        "state": SyncStateResource.from_env(),
        **frame_resources(),
    }


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
        ],
        jobs=[sync_job, full_sync_job, reconcile_job, dead_letters_job],
        schedules=[sync_schedule, reconcile_schedule],
        sensors=[retry_failed_windows, cutover_windows, drain_dead_letters],
        resources=chosen,
    )


defs = make_definitions()
