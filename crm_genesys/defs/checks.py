"""Asset checks: their specs on the partitioned assets and the results a reviewer reads in the UI.

Checks are declared as `check_specs` on the assets (a separate partitioned `@asset_check` would load
every partition). The facts come from `crm_genesys.contacts.quality`; this module only turns them
into Dagster results.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg

from crm_genesys import settings
from crm_genesys.contacts import quality
from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.normalize import NormalizationResult
from crm_genesys.sync.accounting import WindowAccount
from crm_genesys.sync.breakers import MassClear

NORMALIZED = dg.AssetKey("normalized_contacts")
SYNC = dg.AssetKey("genesys_sync")

NORMALIZED_CHECK_SPECS = [
    dg.AssetCheckSpec(
        "e164_coverage",
        asset=NORMALIZED,
        description="Share of contacts whose phones are valid E.164 (screen pops match on them).",
    ),
    dg.AssetCheckSpec(
        "quarantine_rate",
        asset=NORMALIZED,
        blocking=True,
        description="Quarantined share of rows under the threshold; above it nothing is sent.",
    ),
    dg.AssetCheckSpec(
        "schema_drift",
        asset=NORMALIZED,
        description="CRM columns that no mapping names (dropped, never sent).",
    ),
    dg.AssetCheckSpec(
        "identifier_collisions",
        asset=NORMALIZED,
        description="Business keys sharing a phone or e-mail: a screen pop cannot tell them apart.",
    ),
    dg.AssetCheckSpec(
        "denied_columns_seen",
        asset=NORMALIZED,
        description="Denied (PII) columns present in the CRM extract; they never leave.",
    ),
]

CHANGES = dg.AssetKey("contact_changes")

CHANGES_CHECK_SPECS = [
    dg.AssetCheckSpec(
        "mass_clear",
        asset=CHANGES,
        blocking=True,
        description=(
            "No owned field is cleared on more than CRM_GENESYS_MAX_CLEAR_SHARE of the window's "
            "updated contacts unless a person confirmed it (run config confirm_clears)."
        ),
    ),
]

SYNC_CHECK_SPECS = [
    dg.AssetCheckSpec(
        "dead_letters",
        asset=SYNC,
        description="Changes Genesys rejected permanently; each has its reason in the state store.",
    ),
]


def _result(asset: dg.AssetKey, fact: Any) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=fact.name,
        passed=bool(fact.passed),
        severity=dg.AssetCheckSeverity(fact.severity),
        metadata=dict(fact.metadata),
        description=fact.description,
    )


def normalization_metadata(result: NormalizationResult) -> dict[str, Any]:
    reasons = (
        result.quarantine["reason"].value_counts().head(20).to_dict()
        if len(result.quarantine)
        else {}
    )
    return {
        "contacts": len(result.contacts),
        "tombstones": int(result.contacts["is_deleted"].sum()) if len(result.contacts) else 0,
        "quarantined": len(result.quarantine),
        "superseded": result.superseded,
        "quarantine_reasons": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
    }


def normalized_check_results(
    result: NormalizationResult, crm_columns: list[str], mapping: Mapping
) -> Iterator[dg.AssetCheckResult]:
    """Check results from the CRM table's columns (not only those extracted) and the frame."""
    facts = quality.all_facts(
        result, mapping, crm_columns, max_quarantine_rate=max_quarantine_rate()
    )
    for fact in facts:
        yield _result(NORMALIZED, fact)


def max_quarantine_rate() -> float:
    """`CRM_GENESYS_MAX_QUARANTINE_RATE`: above this share of quarantined rows nothing is sent."""
    return float(settings.get("CRM_GENESYS_MAX_QUARANTINE_RATE"))


def summary_metadata(summary: WindowAccount) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(summary.counts())
    metadata["accounted"] = summary.accounted
    metadata.update({f"sink/{k}": v for k, v in summary.sink.items()})
    return metadata


def sync_check_results(summary: WindowAccount) -> Iterator[dg.AssetCheckResult]:
    yield dg.AssetCheckResult(
        asset_key=SYNC,
        check_name="dead_letters",
        passed=summary.dead_lettered == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"dead_lettered": summary.dead_lettered},
        description="Rejected changes are listed in the state store's dead_letters table.",
    )


def mass_clear_result(verdict: MassClear, window: str) -> dg.AssetCheckResult:
    """The mass-clear breaker's verdict as a blocking check result: the fields, their counts and
    masked samples as a table a reviewer reads."""
    rows = [
        dg.TableRecord(
            {
                "field": c.field,
                "contacts": c.contacts,
                "share": round(c.share, 4),
                "over_limit": c in verdict.over_limit,
                "confirmed": c.field in verdict.confirmed or "*" in verdict.confirmed,
                "samples": ", ".join(f"{key} (crm id {crm_id})" for key, crm_id in c.samples),
            }
        )
        for c in verdict.clears
    ]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("field", "string"),
            dg.TableColumn("contacts", "int"),
            dg.TableColumn("share", "float"),
            dg.TableColumn("over_limit", "bool"),
            dg.TableColumn("confirmed", "bool"),
            dg.TableColumn("samples", "string"),
        ]
    )
    return dg.AssetCheckResult(
        asset_key=CHANGES,
        check_name="mass_clear",
        passed=verdict.allowed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            verdict.refusal()
            or f"window {window}: no field cleared on more than {verdict.max_share:.0%} of the "
            f"{verdict.judged} updated contacts (or confirmed)"
        ),
        metadata={
            "window": window,
            "updates": verdict.updates,
            "judged": verdict.judged,
            "not_known": verdict.unknown,
            "max_share": verdict.max_share,
            "min_contacts": verdict.min_contacts,
            "clears": dg.MetadataValue.table(rows, schema=schema),
        },
    )
