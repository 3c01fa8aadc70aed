"""The one Definitions of crm-genesys."""

import dagster as dg

from crm_genesys.defs.assets import contact_changes, crm_contacts, genesys_sync, normalized_contacts
from crm_genesys.defs.automation import retry_failed_windows, sync_job, sync_schedule
from crm_genesys.defs.reconciliation import reconcile_job, reconcile_schedule
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource

defs = dg.Definitions(
    assets=[crm_contacts, normalized_contacts, contact_changes, genesys_sync],
    jobs=[sync_job, reconcile_job],
    schedules=[sync_schedule, reconcile_schedule],
    sensors=[retry_failed_windows],
    resources={
        "crm": CrmResource(),
        "genesys": GenesysResource(),
        "state": SyncStateResource(),
    },
)
