"""The reconciliation job: the sync state and the CRM against a full scan of Genesys, repairing
Genesys on request (see `crm_genesys.sync.reconcile`).

Without `repair` it is a dry run: the findings (contacts deleted or edited by hand, duplicates,
unknown contacts) and a preview of what a repair would send, nothing sent, the state untouched.
With `repair` the contacts are re-sent from the CRM's current rows through the sink, duplicates
are deleted through the mass-delete breaker, and with `remove_unknown` so are contacts carrying
our External Source that no CRM key explains. A scan costs one request per 200 contacts.
"""

from typing import Any

import dagster as dg

from crm_genesys import settings
from crm_genesys.contacts.masking import mask_key
from crm_genesys.defs.dry_run import preview_metadata
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.defs.stopping import run_async
from crm_genesys.sync.breakers import BreakerTripped
from crm_genesys.sync.full import CrmChunks, check_target
from crm_genesys.sync.reconcile import CONFIRM_KEY, ReconcileOptions, ReconcileReport, reconcile
from crm_genesys.sync.window import prepare_writes


class ReconcileConfig(dg.Config):
    repair: bool = False  # re-send from the CRM and resolve duplicates (else: dry run)
    remove_unknown: bool = False  # with repair: delete contacts no CRM key explains
    confirm_deletes: int = 0  # mass-delete breaker: the exact delete count, confirmed
    chunk_rows: int = 0  # CRM rows per chunk; 0: CRM_GENESYS_FULL_SYNC_CHUNK_ROWS
    max_clear_reads: int = 1_000  # dry run: contacts read to find fields a repair would clear


async def _reconcile(
    config: ReconcileConfig,
    crm: CrmResource,
    genesys: GenesysResource,
    state: SyncStateResource,
    run_id: str,
) -> ReconcileReport:
    mapping = crm.mapping()
    target = genesys.resolve()
    options = ReconcileOptions(
        repair=config.repair,
        remove_unknown=config.remove_unknown,
        confirm_deletes=config.confirm_deletes,
        max_delete_share=float(settings.get("CRM_GENESYS_MAX_DELETE_SHARE")),
        chunk_rows=config.chunk_rows or int(settings.get("CRM_GENESYS_FULL_SYNC_CHUNK_ROWS")),
        max_clear_reads=config.max_clear_reads,
    )
    async with target.client() as client:
        with state.store() as store, crm.source(mapping) as source:
            chunks = CrmChunks(source, mapping, options.chunk_rows)
            if options.repair:
                source_id, schema = await prepare_writes(client, target, store, mapping)
            else:
                await check_target(client, target, store)
                found = await client.find_external_source(mapping.external_source.name)
                if found is None:
                    return ReconcileReport()  # nothing of ours in this org yet
                source_id, schema = found, None
            return await reconcile(
                client,
                store,
                chunks,
                source_id=source_id,
                options=options,
                schema=schema,
                run_id=run_id,
            )


@dg.op(pool="genesys_api")
def reconcile_genesys(
    context: dg.OpExecutionContext,
    config: ReconcileConfig,
    crm: CrmResource,
    genesys: GenesysResource,
    state: SyncStateResource,
) -> dg.Output[dict[str, int]]:
    """One scan of Genesys compared with the sync state and the CRM; findings as metadata."""
    try:
        report = run_async(_reconcile(config, crm, genesys, state, context.run.run_id))
    except BreakerTripped as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={**exc.verdict.as_metadata(), "confirm_with": CONFIRM_KEY},
            allow_retries=False,
        ) from None
    summary = report.as_metadata()
    verdict = "in parity" if report.in_parity else "drift found"
    context.log.info(
        f"reconciliation: {verdict}: {summary} (the scan cost {report.scan_requests} requests)"
    )
    metadata: dict[str, Any] = {
        **summary,
        "in_parity": report.in_parity,
        **{f"sample_{k}": [mask_key(key) for key in v] for k, v in report.samples.items()},
    }
    if report.preview is not None:
        metadata.update(preview_metadata(report.preview, "Reconciliation repair"))
    if report.sent.failed:
        raise dg.Failure(
            description=f"{report.sent.failed} repair(s) still fail after retries; re-run",
            metadata=metadata,
        )
    return dg.Output(summary, metadata=metadata)


@dg.job(description="The sync state and the CRM against a full scan of Genesys; repair on request.")
def reconcile_job() -> None:
    reconcile_genesys()


# A full scan costs one request per 200 contacts: off by default, turn it on in the UI.
reconcile_schedule = dg.ScheduleDefinition(
    job=reconcile_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
