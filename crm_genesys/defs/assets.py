"""The four assets of a sync window. Each reads as: fetch, shape, report; the logic lives in the
plain packages (`crm`, `contacts`, `state`, `sync`) so that it is tested without Dagster."""

import asyncio
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from crm_genesys import settings
from crm_genesys.contacts.diff import diff
from crm_genesys.contacts.keys import truthy
from crm_genesys.contacts.normalize import NormalizationResult, normalize
from crm_genesys.defs import checks, liveness
from crm_genesys.defs.dry_run import preview_metadata
from crm_genesys.defs.partitions import (
    first_window_start,
    sync_windows,
    window_bounds,
    window_name,
)
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.sync.accounting import account
from crm_genesys.sync.breakers import judge_clears
from crm_genesys.sync.ownership import Ownership
from crm_genesys.sync.preview import preview_window
from crm_genesys.sync.window import bind_window_length, sync_window

GROUP = "crm_to_genesys"


class SyncConfig(dg.Config):
    """Run config of `genesys_sync` (`ops: genesys_sync: config: ...` on `sync_job`)."""

    dry_run: bool = False  # preview the window's changes; send nothing, record nothing
    max_clear_reads: int = 1_000  # dry run: contacts read from Genesys to find clears


@dg.asset(
    partitions_def=sync_windows,
    group_name=GROUP,
    kinds={"sql", "pandas"},
    check_specs=checks.CRM_CHECK_SPECS,
)
def crm_contacts(context: dg.AssetExecutionContext, crm: CrmResource, genesys: GenesysResource):
    """CRM rows modified in the window (plus the lookback), one row per record version,
    tombstones included; only the columns the mapping reads (denied columns are never read)."""
    # Where this run would write is settled first: a half-configured Genesys fails here,
    # before the CRM is read, naming what is missing.
    target = genesys.resolve()
    start, end = window_bounds(context.partition_key)
    mapping = crm.mapping()
    with crm.source(mapping) as source:
        frame = source.extract(start - crm.lookback, end, mapping.source_columns())
        times = source.time_report(first_window_start(), datetime.now(UTC))
    deleted = mapping.source.deleted_column
    tombstones = int(truthy(frame[deleted]).sum()) if deleted in frame else 0
    yield dg.Output(
        frame,
        metadata={
            "rows": len(frame),
            "tombstones": tombstones,
            "columns_read": len(frame.columns),
            "extract_from": (start - crm.lookback).isoformat(),
            "extract_to": end.isoformat(),
            "crm": crm.describe(),
            "target": target.describe(),
        },
    )
    yield checks.crm_times_result(times, context.partition_key)


@dg.asset(
    partitions_def=sync_windows,
    group_name=GROUP,
    kinds={"pandas", "pandera"},
    check_specs=checks.NORMALIZED_CHECK_SPECS,
)
def normalized_contacts(
    context: dg.AssetExecutionContext, crm_contacts: pd.DataFrame, crm: CrmResource
):
    """Contacts as Genesys needs them (E.164 phones, valid e-mails, typed custom fields, stable
    business keys, content hashes), validated by the pandera model; rows that cannot sync are
    quarantined with a reason."""
    mapping = crm.mapping()
    result = normalize(crm_contacts, mapping)
    yield dg.Output(result, metadata=checks.normalization_metadata(result))
    # Drift and denied columns are judged on the CRM table itself, not on what was read.
    with crm.source(mapping) as source:
        crm_columns = source.columns()
    yield from checks.normalized_check_results(result, crm_columns, mapping)


class ChangesConfig(dg.Config):
    """Run config of `contact_changes`: what a person confirmed after reviewing the window."""

    # Owned fields whose clearing on many contacts is intended (the mass-clear breaker);
    # "*" confirms every field.
    confirm_clears: list[str] = Field(default_factory=list)


@dg.asset(
    partitions_def=sync_windows,
    group_name=GROUP,
    kinds={"pandas"},
    check_specs=checks.CHANGES_CHECK_SPECS,
)
def contact_changes(
    context: dg.AssetExecutionContext,
    config: ChangesConfig,
    normalized_contacts: NormalizationResult,
    crm: CrmResource,
    state: SyncStateResource,
):
    """What Genesys must be told: creates, updates and deletes against the sync state; unchanged
    and stale rows dropped. Updates that would clear a field on many contacts stop here (the
    mass-clear breaker, a blocking check) until a person confirms them in run config."""
    contacts = normalized_contacts.contacts
    with state.store() as store:
        changes = diff(contacts, store.snapshot(contacts["business_key"].tolist()))
        updates = changes.changes[changes.changes["op"] == "update"]
        previous = store.owned_fields(updates["business_key"].tolist())
    verdict = judge_clears(
        updates,
        previous,
        Ownership.from_mapping(crm.mapping()),
        max_share=float(settings.get("CRM_GENESYS_MAX_CLEAR_SHARE")),
        min_contacts=int(settings.get("CRM_GENESYS_MASS_CLEAR_MIN_CONTACTS")),
        confirmed=config.confirm_clears,
        config_key="ops.contact_changes.config.confirm_clears",
    )
    ops = changes.changes["op"].value_counts().to_dict() if len(changes.changes) else {}
    yield dg.Output(
        changes,
        metadata={
            "creates": int(ops.get("create", 0)),
            "updates": int(ops.get("update", 0)),
            "deletes": int(ops.get("delete", 0)),
            "unchanged": changes.unchanged,
            "stale": changes.stale,
            "version_bumps": len(changes.version_bumps),
        },
    )
    yield checks.mass_clear_result(verdict, context.partition_key)


@dg.asset(
    partitions_def=sync_windows,
    group_name=GROUP,
    kinds={"genesys"},
    pool="genesys_api",
    deps=[contact_changes],
    check_specs=checks.SYNC_CHECK_SPECS,
    output_required=False,
)
def genesys_sync(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    normalized_contacts: NormalizationResult,
    crm: CrmResource,
    genesys: GenesysResource,
    state: SyncStateResource,
):
    """Genesys External Contacts brought in line with the window: bulk writes, paced to the rate
    budget, exactly once. Materializes only when every CRM row of the window is accounted for.

    One run at a time syncs a window (a lease in the sync state). Under the lease the changes
    are diffed again against the state as it is now: what another run of the window did while
    this one waited counts as unchanged here, never twice.

    A dry run (`dry_run: true`) records what the window would create, update, delete, clear
    and quarantine as an observation (counts and masked samples) and does not materialize:
    nothing is sent, the sync state is not changed."""
    window = context.partition_key
    run_id = context.run.run_id
    target = genesys.resolve()
    if config.dry_run:
        contacts = normalized_contacts.contacts
        with state.store() as store:
            changes = diff(contacts, store.snapshot(contacts["business_key"].tolist()))
            preview = asyncio.run(
                preview_window(
                    target,
                    store,
                    crm.mapping(),
                    normalized_contacts,
                    changes,
                    config.max_clear_reads,
                )
            )
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                partition=window,
                metadata={
                    **preview_metadata(preview, f"Window {window}"),
                    "target": target.describe(),
                },
            )
        )
        context.log.info(f"dry run of window {window}: {preview.as_metadata()}")
        # Check results are required of every run; a dry run sends nothing, so rejects nothing.
        yield dg.AssetCheckResult(
            check_name="dead_letters",
            passed=True,
            metadata={"dry_run": True, "dead_lettered": 0},
            description=f"dry run of window {window}: nothing was sent",
        )
        return
    with state.store() as store:
        bind_window_length(store, window_name())
        holder = liveness.claim_window(context.instance, store, window, run_id)
        if holder is not None:
            raise dg.Failure(
                description=(
                    f"window {window} is being synced by run {holder.holder} (since "
                    f"{holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC, pid {holder.pid} on "
                    f"{holder.host}); this run stops without sending anything. Re-run the "
                    "window once that run has ended: it will send only what is still missing."
                ),
                allow_retries=False,
            )
        try:
            contacts = normalized_contacts.contacts
            changes = diff(contacts, store.snapshot(contacts["business_key"].tolist()))
            report = asyncio.run(sync_window(changes, crm.mapping(), store, window, target))
        finally:
            store.release_window(window, run_id)
    summary = account(window, normalized_contacts, changes, report)
    metadata = {**checks.summary_metadata(summary), "target": target.describe()}
    if not summary.done:
        # The watermark: the window stays unmaterialized until a re-run accounts for every row.
        raise dg.Failure(
            description=(
                f"{summary.failed} change(s) still failing after retries; "
                "the window will be re-run and will only send what is missing."
                if summary.failed
                else "rows of this window are unaccounted for"
            ),
            metadata=metadata,
        )
    yield dg.MaterializeResult(metadata=metadata)
    yield from checks.sync_check_results(summary)
