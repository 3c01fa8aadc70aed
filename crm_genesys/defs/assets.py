"""The four assets of a sync window. Each reads as: fetch, shape, report; the logic lives in the
plain packages (`crm`, `contacts`, `state`, `sync`) so that it is tested without Dagster."""

import asyncio

import dagster as dg
import pandas as pd

from crm_genesys import runtime
from crm_genesys.contacts.diff import ChangeSet, diff
from crm_genesys.contacts.keys import truthy
from crm_genesys.contacts.normalize import NormalizationResult, normalize
from crm_genesys.defs import checks
from crm_genesys.defs.partitions import sync_windows, window_bounds
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource

GROUP = "crm_to_genesys"


@dg.asset(partitions_def=sync_windows, group_name=GROUP, kinds={"sql", "pandas"})
def crm_contacts(context: dg.AssetExecutionContext, crm: CrmResource) -> dg.Output[pd.DataFrame]:
    """CRM rows modified in the window (plus the lookback), one row per record version,
    tombstones included; only the columns the mapping reads (denied columns are never read)."""
    start, end = window_bounds(context.partition_key)
    mapping = crm.mapping()
    with crm.source(mapping) as source:
        frame = source.extract(start - crm.lookback, end, mapping.source_columns())
    deleted = mapping.source.deleted_column
    tombstones = int(truthy(frame[deleted]).sum()) if deleted in frame else 0
    return dg.Output(
        frame,
        metadata={
            "rows": len(frame),
            "tombstones": tombstones,
            "columns_read": len(frame.columns),
            "extract_from": (start - crm.lookback).isoformat(),
            "extract_to": end.isoformat(),
        },
    )


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


@dg.asset(partitions_def=sync_windows, group_name=GROUP, kinds={"pandas"})
def contact_changes(
    normalized_contacts: NormalizationResult, state: SyncStateResource
) -> dg.Output[ChangeSet]:
    """What Genesys must be told: creates, updates and deletes against the sync state; unchanged
    and stale rows dropped."""
    contacts = normalized_contacts.contacts
    with state.store() as store:
        snapshot = store.snapshot(contacts["business_key"].tolist())
    changes = diff(contacts, snapshot)
    ops = changes.changes["op"].value_counts().to_dict() if len(changes.changes) else {}
    return dg.Output(
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


@dg.asset(
    partitions_def=sync_windows,
    group_name=GROUP,
    kinds={"genesys"},
    pool="genesys_api",
    check_specs=checks.SYNC_CHECK_SPECS,
)
def genesys_sync(
    context: dg.AssetExecutionContext,
    crm_contacts: pd.DataFrame,
    normalized_contacts: NormalizationResult,
    contact_changes: ChangeSet,
    crm: CrmResource,
    genesys: GenesysResource,
    state: SyncStateResource,
):
    """Genesys External Contacts brought in line with the window: bulk writes, paced to the rate
    budget, exactly once. Materializes only when every CRM row of the window is accounted for."""
    settings, transport = genesys.connection()
    with state.store() as store:
        report = asyncio.run(
            runtime.sync_changes(
                contact_changes,
                crm.mapping(),
                store,
                context.partition_key,
                settings=settings,
                transport=transport,
            )
        )
    summary = runtime.summarize(
        context.partition_key, len(crm_contacts), normalized_contacts, contact_changes, report
    )
    metadata = checks.summary_metadata(summary)
    if summary.failed or not summary.accounted:
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
