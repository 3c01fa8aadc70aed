"""The full sync in Dagster: the `genesys_full_sync` asset, `full_sync_job`, and the
`cutover_windows` sensor that launches the windows the full sync hands over to.

The asset streams the whole CRM through the one path (`crm_genesys.sync.full`), logs its progress
(contacts done, requests, rate, ETA) and records it as observations while it runs, and
materializes with the same accounting as a window. A run that fails or is killed is resumed by
the next run from the last recorded chunk.

Cutover: the full sync's T0 (when its first attempt started) is kept in the sync state. The run
is tagged with `crm_genesys/cutover_from`, the window holding T0 - lookback; every window before
it is covered by the full sync, and after a successful full sync `cutover_windows` requests the
windows from that one up to the last closed window (later ones are run by `sync_schedule`).
A dry run materializes nothing and hands nothing over.
"""

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg

from crm_genesys import settings
from crm_genesys.defs import liveness
from crm_genesys.defs.assets import GROUP
from crm_genesys.defs.automation import sync_job
from crm_genesys.defs.dry_run import preview_metadata
from crm_genesys.defs.partitions import (
    first_window_start,
    partition_key_for,
    sync_windows,
    window_name,
)
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.defs.stopping import run_async
from crm_genesys.sync.breakers import BreakerTripped
from crm_genesys.sync.full import (
    MIRROR_CONFIRM_KEY,
    CrmChunks,
    FullSyncIncomplete,
    FullSyncOptions,
    FullSyncResult,
    Progress,
    run_full_sync,
)
from crm_genesys.sync.window import bind_window_length

CUTOVER_TAG = "crm_genesys/cutover_from"
T0_TAG = "crm_genesys/full_sync_t0"
# The sync state's lease name for the full sync: one at a time.
LEASE = "full-sync"


class FullSyncConfig(dg.Config):
    """Run config of `full_sync_job` (`ops: genesys_full_sync: config: ...`)."""

    dry_run: bool = False  # count and sample what would change; send and record nothing
    mirror: bool = True  # delete from Genesys the live keys the CRM no longer has
    confirm_deletes: int = 0  # mass-delete breaker: the exact mirror delete count, confirmed
    restart: bool = False  # abandon an unfinished full sync instead of resuming it
    chunk_rows: int = 0  # CRM rows per chunk; 0: CRM_GENESYS_FULL_SYNC_CHUNK_ROWS
    max_clear_reads: int = 1_000  # dry run: contacts read from Genesys to find clears


def max_delete_share() -> float:
    return float(settings.get("CRM_GENESYS_MAX_DELETE_SHARE"))


def cutover_window(t0: datetime, crm: CrmResource) -> str:
    """The first window that must run after a full sync started at `t0`: the one holding
    t0 - lookback (rows committed late with an earlier stamp are what the lookback catches)."""
    moment = max(t0 - crm.lookback, first_window_start())
    return partition_key_for(moment)


def cutover_keys(start: str) -> list[str]:
    """Closed windows from `start` on (the newest is the last one that has closed)."""
    keys = sync_windows.get_partition_keys()
    return keys[keys.index(start) :] if start in keys else []


def _options(config: FullSyncConfig) -> FullSyncOptions:
    return FullSyncOptions(
        chunk_rows=config.chunk_rows or int(settings.get("CRM_GENESYS_FULL_SYNC_CHUNK_ROWS")),
        dry_run=config.dry_run,
        mirror=config.mirror,
        confirm_deletes=config.confirm_deletes,
        max_delete_share=max_delete_share(),
        restart=config.restart,
        max_clear_reads=config.max_clear_reads,
    )


def summary_metadata(result: FullSyncResult, crm: CrmResource) -> dict[str, Any]:
    """The final summary: the window accounting, the sink's figures, the mirror, the cutover."""
    totals = result.totals
    seconds = max(result.duration_s, 1e-9)
    data: dict[str, Any] = dict(totals.counts)
    data["accounted"] = totals.accounted
    data["chunks"] = result.sync.chunks
    data["resumed_from_chunk"] = result.resumed_from_chunk
    data["chunks_this_run"] = result.chunks_this_run
    data["duration_s"] = round(result.duration_s, 1)
    data["contacts_per_s"] = round(totals["writes"] / seconds, 1)
    data["target"] = result.target
    data.update({f"sink/{k}": v for k, v in result.client.items()})
    mirror = result.mirror
    data["mirror_ran"] = mirror.ran
    data["mirror_candidates"] = mirror.candidates
    data["mirror_deleted"] = mirror.deleted
    data["cutover_t0"] = result.started_at.isoformat()
    start = cutover_window(result.started_at, crm)
    pending = cutover_keys(start)
    data["cutover_from_window"] = start
    data["covered_by_full_sync"] = (
        f"every window before {start}: rows modified before "
        f"{(result.started_at - crm.lookback).isoformat()} (T0 - lookback)"
    )
    data["windows_to_run_after"] = dg.MetadataValue.md(
        f"{len(pending)} window(s) from {start} to {pending[-1] if pending else start} "
        "(launched by the `cutover_windows` sensor), then each new window by `sync_schedule`"
    )
    return data


@dg.asset(
    group_name=GROUP,
    kinds={"sql", "genesys"},
    pool="genesys_api",
    output_required=False,
    description="Genesys holds the whole CRM as of the full sync's start (T0): every row read "
    "in chunks, normalized, diffed and sent; keys the CRM no longer has deleted (the mirror).",
)
def genesys_full_sync(
    context: dg.AssetExecutionContext,
    config: FullSyncConfig,
    crm: CrmResource,
    genesys: GenesysResource,
    state: SyncStateResource,
) -> Iterator[dg.MaterializeResult]:
    """The full sync (see the module docstring)."""
    target = genesys.resolve()
    mapping = crm.mapping()
    options = _options(config)
    run_id = context.run.run_id

    def progress(step: Progress) -> None:
        context.log.info(step.line())
        context.log_event(
            dg.AssetObservation(asset_key=context.asset_key, metadata=step.as_metadata())
        )

    with state.store() as store, crm.source(mapping) as source:
        if not options.dry_run:
            bind_window_length(store, window_name())
            holder = liveness.claim_window(context.instance, store, LEASE, run_id)
            if holder is not None:
                raise dg.Failure(
                    description=f"a full sync is running already (run {holder.holder}, pid "
                    f"{holder.pid} on {holder.host}); this run stops without sending anything",
                    allow_retries=False,
                )
        try:
            chunks = CrmChunks(source, mapping, options.chunk_rows)
            context.log.info(
                f"full sync of {crm.describe()} into {target.describe()}: "
                f"{chunks.total_rows():,} CRM rows, {options.chunk_rows:,} per chunk"
                + (" (dry run: nothing is sent)" if options.dry_run else "")
            )
            result = run_async(
                run_full_sync(
                    chunks, store, target, run_id=run_id, options=options, on_progress=progress
                )
            )
        except BreakerTripped as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={**exc.verdict.as_metadata(), "confirm_with": MIRROR_CONFIRM_KEY},
                allow_retries=False,
            ) from None
        except FullSyncIncomplete as exc:
            raise dg.Failure(description=str(exc)) from None
        finally:
            if not options.dry_run:
                store.release_window(LEASE, run_id)
    if result.preview is not None:
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                metadata=preview_metadata(result.preview, "Full sync"),
            )
        )
        context.log.info(f"full sync dry run: {result.preview.as_metadata()}")
        return
    metadata = summary_metadata(result, crm)
    if not result.totals.accounted:
        raise dg.Failure(description="rows of the full sync are unaccounted for", metadata=metadata)
    context.instance.add_run_tags(
        run_id,
        {CUTOVER_TAG: metadata["cutover_from_window"], T0_TAG: metadata["cutover_t0"]},
    )
    context.log.info(
        f"full sync done: {result.totals['extracted']:,} rows, "
        f"{result.totals['writes']:,} written, {result.mirror.deleted:,} mirror deletes; the "
        f"windows from {metadata['cutover_from_window']} on take over"
    )
    yield dg.MaterializeResult(metadata=metadata)


full_sync_job = dg.define_asset_job(
    "full_sync_job",
    selection=[genesys_full_sync],
    description="The whole CRM into Genesys in chunks (resumable), then the mirror of hard "
    "deletes; the windows take over from its start.",
)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[full_sync_job],
    request_job=sync_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def cutover_windows(context: dg.RunStatusSensorContext) -> Iterator[dg.RunRequest]:
    """After a successful full sync, the windows from the one holding T0 - lookback up to the
    last closed one: rows modified while the full sync read may have been read before their
    change. A dry run (no cutover tag) hands nothing over."""
    run = context.dagster_run
    start = run.tags.get(CUTOVER_TAG)
    if not start:
        return
    for key in cutover_keys(start):
        yield dg.RunRequest(partition_key=key, run_key=f"cutover:{run.run_id}:{key}")


def run_full_sync_job(
    dagster_instance: dg.DagsterInstance,
    definitions: dg.Definitions | None = None,
    *,
    config: FullSyncConfig | None = None,
    log_level: str = "INFO",
) -> dg.ExecuteInProcessResult:
    """Run `full_sync_job` in this process on `dagster_instance` (the command line), as
    `execution.run_window` runs a window: dead runs of this host are failed first, the run is
    tagged with this process, SIGTERM stops it like Ctrl-C (the next run resumes)."""
    from crm_genesys.defs.execution import sigterm_as_interrupt

    if definitions is None:
        from crm_genesys.definitions import defs

        definitions = defs
    liveness.reap_dead_runs(dagster_instance)
    job = definitions.resolve_job_def(full_sync_job.name)
    run_config = {
        "loggers": {"console": {"config": {"log_level": log_level}}},
        "ops": {genesys_full_sync.op.name: {"config": (config or FullSyncConfig()).model_dump()}},
    }
    with sigterm_as_interrupt():
        return job.execute_in_process(
            instance=dagster_instance,
            raise_on_error=False,
            run_config=run_config,
            tags=liveness.process_tags(),
        )


def full_sync_summary(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The final summary metadata of a full-sync run (its materialization, or its failure's)."""
    from crm_genesys.defs.execution import failure_metadata

    events = result.asset_materializations_for_node(genesys_full_sync.op.name)
    metadata = dict(events[0].metadata) if events else failure_metadata(result)
    if not events:
        for event in result.all_events:
            if event.event_type_value == "ASSET_OBSERVATION":
                metadata = dict(event.asset_observation_data.asset_observation.metadata)
    return {k: getattr(v, "value", v) for k, v in metadata.items()}
