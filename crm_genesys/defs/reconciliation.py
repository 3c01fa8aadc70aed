"""The reconciliation job: the sync state against what Genesys really holds, by a full scan.

It catches what no CRM window shows: a contact deleted in Genesys by hand, a contact carrying our
ExternalId that state does not know, a contact id that changed. With `repair`, state is corrected
so that the next window's diff fixes Genesys through the normal exactly-once path.
"""

import asyncio

import dagster as dg

from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.sync.reconcile import ReconcileReport, reconcile


class ReconcileConfig(dg.Config):
    repair: bool = False  # correct the state so that the next windows repair Genesys
    remove_duplicates: bool = False  # delete extra contacts carrying one business key


async def _reconcile(
    config: ReconcileConfig, crm: CrmResource, genesys: GenesysResource, state: SyncStateResource
) -> ReconcileReport:
    mapping = crm.mapping()
    async with genesys.resolve().client() as client:
        source_id = await client.ensure_external_source(
            mapping.external_source.name, mapping.external_source.uri_template
        )
        with state.store() as store:
            return await reconcile(
                client,
                store,
                source_id=source_id,
                repair=config.repair,
                remove_duplicates=config.remove_duplicates,
            )


@dg.op(pool="genesys_api")
def reconcile_genesys(
    context: dg.OpExecutionContext,
    config: ReconcileConfig,
    crm: CrmResource,
    genesys: GenesysResource,
    state: SyncStateResource,
) -> dg.Output[dict[str, int]]:
    """One scan of Genesys compared with the sync state; findings as metadata."""
    report = asyncio.run(_reconcile(config, crm, genesys, state))
    summary = report.as_metadata()
    verdict = "in parity" if report.in_parity else "drift found"
    context.log.info(f"reconciliation: {verdict}: {summary}")
    return dg.Output(
        summary,
        metadata={
            **summary,
            "in_parity": report.in_parity,
            "sample_missing": report.missing[:20],
            "sample_orphans": report.orphans[:20],
            "sample_moved": report.moved[:20],
        },
    )


@dg.job(description="Compare the sync state with a full scan of Genesys; repair on request.")
def reconcile_job() -> None:
    reconcile_genesys()


# A full scan costs one request per 200 contacts: off by default, turn it on in the UI.
reconcile_schedule = dg.ScheduleDefinition(
    job=reconcile_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
