"""The one Definitions of crm-genesys, its resources built from the environment in one place."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from crm_genesys.defs.assets import contact_changes, crm_contacts, genesys_sync, normalized_contacts
from crm_genesys.defs.automation import retry_failed_windows, sync_job, sync_schedule
from crm_genesys.defs.live import genesys_live_sync, live_sync_job, sync_live_changes
from crm_genesys.defs.reconciliation import reconcile_job, reconcile_schedule
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource


def resources_from_env() -> dict[str, Any]:
    """The CRM, Genesys and sync-state resources as the environment configures them."""
    return {
        "crm": CrmResource.from_env(),
        "genesys": GenesysResource.from_env(),
        "state": SyncStateResource.from_env(),
    }


def make_definitions(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The Definitions with `resources` (tests, the command line) or those of the environment."""
    return dg.Definitions(
        assets=[
            crm_contacts,
            normalized_contacts,
            contact_changes,
            genesys_sync,
            genesys_live_sync,
        ],
        jobs=[sync_job, reconcile_job, live_sync_job],
        schedules=[sync_schedule, reconcile_schedule],
        sensors=[retry_failed_windows, sync_live_changes],
        resources=dict(resources) if resources is not None else resources_from_env(),
    )


defs = make_definitions()
