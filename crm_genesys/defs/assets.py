"""The four assets of a sync window. Each reads as: fetch, shape, report; the logic lives in the
plain packages (`crm`, `contacts`, `state`, `sync`) so that it is tested without Dagster."""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from crm_genesys import settings
from crm_genesys.contacts.diff import diff
from crm_genesys.contacts.keys import truthy
from crm_genesys.contacts.normalize import NormalizationResult, normalize
from crm_genesys.defs import checks, liveness, review
from crm_genesys.defs.dry_run import preview_metadata
from crm_genesys.defs.partitions import (
    first_window_start,
    sync_windows,
    window_bounds,
    window_name,
)
from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource
from crm_genesys.defs.stopping import run_async
from crm_genesys.defs.storage import FrameStore
from crm_genesys.sync.accounting import account
from crm_genesys.sync.breakers import judge_clears
from crm_genesys.sync.ownership import Ownership
from crm_genesys.sync.preview import preview_window
from crm_genesys.sync.screenpop import PHONE_SLOTS, check_screen_pops, sample_numbers
from crm_genesys.sync.window import bind_window_length, sync_window

GROUP = "crm_to_genesys"
OWNERS = list(settings.get("CRM_GENESYS_OWNERS"))


class SyncConfig(dg.Config):
    """Run config of `genesys_sync` (`ops: genesys_sync: config: ...` on `sync_job`)."""

    dry_run: bool = False  # preview the window's changes; send nothing, record nothing
    max_clear_reads: int = 1_000  # dry run: contacts read from Genesys to find clears


@dg.asset(
    partitions_def=sync_windows,
    group_name=GROUP,
    kinds={"sql", "pandas"},
    check_specs=checks.CRM_CHECK_SPECS,
    owners=OWNERS,
    description=(
        "CRM rows modified in the window (plus the lookback), one row per record version, "
        "tombstones included; only the columns the mapping reads (denied columns are never "
        "read). Kept as Parquet until the window succeeds."
    ),
)
def crm_contacts(context: dg.AssetExecutionContext, crm: CrmResource, genesys: GenesysResource):
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
    context.log.info(
        f"window {context.partition_key}: {len(frame):,} CRM row(s) read, "
        f"{tombstones:,} tombstone(s), from {crm.describe()}"
    )
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


class NormalizeConfig(dg.Config):
    """Run config of `normalized_contacts`: what a person confirmed after reviewing the window."""

    # The window's quarantined rows a person reviewed and accepts: when it equals their count,
    # the quarantine breaker lets the window send its valid rows (a warning).
    confirm_quarantined: int = 0


@dg.asset(
    partitions_def=sync_windows,
    group_name=GROUP,
    kinds={"pandas", "pandera"},
    owners=OWNERS,
    check_specs=checks.NORMALIZED_CHECK_SPECS,
    metadata={"dagster/column_schema": review.normalized_column_schema()},
    description=(
        "Contacts as Genesys needs them (E.164 phones, valid e-mails, typed custom fields, "
        "stable business keys, content hashes), one row per business key, validated by the "
        "pandera model `NormalizedContacts`; rows that cannot sync are quarantined with a "
        "reason (samples in the metadata and the quarantine_rate check)."
    ),
)
def normalized_contacts(
    context: dg.AssetExecutionContext,
    config: NormalizeConfig,
    crm_contacts: pd.DataFrame,
    crm: CrmResource,
    state: SyncStateResource,
):
    mapping = crm.mapping()
    result = normalize(crm_contacts, mapping)
    context.log.info(
        f"window {context.partition_key}: {len(result.contacts):,} contact(s), "
        f"{len(result.quarantine):,} quarantined, {result.superseded:,} superseded"
    )
    yield dg.Output(result, metadata=checks.normalization_metadata(result))
    # Drift is judged on the CRM table itself; denied columns on what the extract read.
    with crm.source(mapping) as source:
        crm_columns = source.columns()
    # The quarantine breaker counts the quarantined contacts the sync already holds.
    with state.store() as store:
        synced = store.synced_among(result.quarantine["business_key"].dropna().astype(str))
    yield from checks.normalized_check_results(
        result,
        crm_columns,
        [str(c) for c in crm_contacts.columns],
        mapping,
        context.partition_key,
        synced,
        config.confirm_quarantined,
    )


class ChangesConfig(dg.Config):
    """Run config of `contact_changes`: what a person confirmed after reviewing the window."""

    # Owned fields whose clearing on many contacts is intended (the mass-clear breaker);
    # "*" confirms every field.
    confirm_clears: list[str] = Field(default_factory=list)


@dg.asset(
    partitions_def=sync_windows,
    group_name=GROUP,
    kinds={"pandas"},
    owners=OWNERS,
    check_specs=checks.CHANGES_CHECK_SPECS,
    metadata={"dagster/column_schema": review.changes_column_schema()},
    description=(
        "What Genesys must be told: creates, updates and deletes against the sync state; "
        "unchanged and stale rows dropped. Updates that would clear a field on many contacts "
        "stop here (the mass-clear breaker, a blocking check) until a person confirms them in "
        "run config (ops.contact_changes.config.confirm_clears)."
    ),
)
def contact_changes(
    context: dg.AssetExecutionContext,
    config: ChangesConfig,
    normalized_contacts: NormalizationResult,
    crm: CrmResource,
    state: SyncStateResource,
):
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
    context.log.info(
        f"window {context.partition_key}: {len(changes.changes):,} change(s) to send "
        f"({ops}), {changes.unchanged:,} unchanged, {changes.stale:,} stale"
    )
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
    owners=OWNERS,
    pool="genesys_api",
    deps=[contact_changes],
    check_specs=checks.SYNC_CHECK_SPECS,
    output_required=False,
    description=(
        "Genesys External Contacts brought in line with the window: bulk writes, paced to the "
        "rate budget, exactly once. Materializes only when every CRM row of the window is "
        "accounted for (extracted = created + updated + deleted + unchanged + stale + "
        "quarantined + dead_lettered); a summary in markdown and the same figures every time. "
        "A dry run (run config dry_run: true) only records what it would send, as an observation."
    ),
)
def genesys_sync(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    normalized_contacts: NormalizationResult,
    crm: CrmResource,
    genesys: GenesysResource,
    state: SyncStateResource,
    frames: FrameStore,
):
    """One run at a time syncs a window (a lease in the sync state). Under the lease the changes
    are diffed again against the state as it is now: what another run of the window did while
    this one waited counts as unchanged here, never twice. After the writes, a sample of the
    window's contacts is looked up as a screen pop does; then the window's frames are removed.

    A dry run (`dry_run: true`) records what the window would create, update, delete, clear
    and quarantine as an observation (counts and masked samples) and does not materialize:
    nothing is sent, the sync state is not changed."""
    window = context.partition_key
    run_id = context.run.run_id
    target = genesys.resolve()
    mapping = crm.mapping()
    if config.dry_run:
        contacts = normalized_contacts.contacts
        with state.store() as store:
            changes = diff(contacts, store.snapshot(contacts["business_key"].tolist()))
            preview = run_async(
                preview_window(
                    target, store, mapping, normalized_contacts, changes, config.max_clear_reads
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
        # Check results are required of every run; a dry run sends nothing, so judges nothing.
        for spec in checks.SYNC_CHECK_SPECS:
            yield dg.AssetCheckResult(
                check_name=spec.name,
                passed=True,
                metadata={"dry_run": True},
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
            context.log.info(f"window {window}: sending {len(changes.changes):,} change(s)")
            report = run_async(
                sync_window(changes, mapping, store, window, target, progress=context.log.info)
            )
        finally:
            store.release_window(window, run_id)
        store.stamp_dead_letters(window, crm.mapping_hash())
        cleared = store.clear_resolved_dead_letters()
        letters, all_letters = store.dead_letter_summary(window), store.dead_letter_summary()
        live = store.snapshot(contacts["business_key"].tolist())
    summary = account(window, normalized_contacts, changes, report)
    budget = target.settings.rate_limit_per_minute
    if not summary.done:
        # The watermark: the window stays unmaterialized until a re-run accounts for every row.
        raise dg.Failure(
            description=(
                f"window {window}: {summary.failed} change(s) still failing after retries; "
                "the window will be re-run and will only send what is missing."
                if summary.failed
                else f"window {window}: rows are unaccounted for"
            ),
            metadata=review.sync_metadata(
                summary,
                budget_per_minute=budget,
                target=target.describe(),
                dead_letters_cleared=cleared,
            ),
        )
    sample_size = int(settings.get("CRM_GENESYS_SCREENPOP_SAMPLE"))
    rows = _screen_pop_rows(contacts, live, changes.changes, sample_size)
    numbers = sample_numbers(rows, PHONE_SLOTS, sample_size)
    screen_pop, pop_client = run_async(
        check_screen_pops(target, mapping.external_source.name, numbers)
    )
    metadata = review.sync_metadata(
        summary,
        budget_per_minute=budget,
        target=target.describe(),
        screen_pop=screen_pop,
        screen_pop_client=pop_client,
        dead_letters_cleared=cleared,
    )
    context.log.info(
        f"window {window}: synced; {metadata['requests']} request(s), "
        f"{len(screen_pop.verdicts)} number(s) looked up as screen pops"
    )
    yield dg.MaterializeResult(metadata=metadata)
    yield from checks.sync_check_results(summary, letters, all_letters, screen_pop, sample_size)
    removed = frames.after_success(window)
    context.log.info(f"window {window}: {removed} intermediate frame output(s) removed")


def _screen_pop_rows(
    contacts: pd.DataFrame, state: pd.DataFrame, changes: pd.DataFrame, size: int
) -> list[dict]:
    """Up to `size` contacts this run created or updated that now hold their content in state,
    with their contact id and phones, in a stable pseudo-random order (by content hash). A run
    that wrote nothing looks nothing up: a re-run of many windows costs no lookups."""
    written = set(changes.loc[changes["op"].isin(["create", "update"]), "business_key"])
    live = state[~state["deleted"].astype(bool) & state["contact_id"].notna()]
    held = {
        key: (contact_id, content_hash)
        for key, contact_id, content_hash in zip(
            live["business_key"], live["contact_id"], live["content_hash"], strict=True
        )
        if key in written
    }
    rows = contacts[contacts["business_key"].isin(held.keys())]
    rows = rows[rows[list(PHONE_SLOTS)].notna().any(axis=1)]
    same = [
        held[k][1] == h for k, h in zip(rows["business_key"], rows["content_hash"], strict=True)
    ]
    rows = rows[np.array(same, dtype=bool)]
    out = []
    for row in rows.sort_values("content_hash").head(size).to_dict("records"):
        out.append(
            {
                "business_key": row["business_key"],
                "contact_id": held[row["business_key"]][0],
                **{column: row[column] for column in PHONE_SLOTS},
            }
        )
    return out
