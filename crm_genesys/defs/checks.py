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
from crm_genesys.crm.time_report import TimeReport
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

CRM = dg.AssetKey("crm_contacts")

CRM_CHECK_SPECS = [
    dg.AssetCheckSpec(
        "crm_times",
        asset=CRM,
        description=(
            "CRM rows no window will ever extract: a modification time that is missing or "
            "unreadable (fix the row), before the first window (the full sync covers those) or "
            "in the future (a clock or zone mistake)."
        ),
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


def crm_times_result(report: TimeReport, window: str) -> dg.AssetCheckResult:
    """The CRM table's time report as a check: rows with a missing or unreadable modification
    time fail it (ERROR: nothing syncs them until they are fixed); rows only before the first
    window or in the future warn."""
    from crm_genesys.crm.time_report import IN_FUTURE, MISSING, UNREADABLE

    broken = report.counts.get(MISSING, 0) + report.counts.get(UNREADABLE, 0)
    rows = [
        dg.TableRecord({"kind": kind, "crm_id": s.crm_id or "", "value": s.value})
        for kind, samples in report.samples.items()
        for s in samples
    ]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("kind", "string"),
            dg.TableColumn("crm_id", "string"),
            dg.TableColumn("value", "string"),
        ]
    )
    counts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.counts.items() if n)
    return dg.AssetCheckResult(
        asset_key=CRM,
        check_name="crm_times",
        passed=report.ok,
        severity=dg.AssetCheckSeverity.ERROR if broken else dg.AssetCheckSeverity.WARN,
        description=(
            f"window {window}: "
            + (
                f"{report.problems} of {report.rows} CRM rows lie in no window ({counts})"
                if report.problems
                else f"every one of the {report.rows} CRM rows lies in a window"
            )
            + (
                "; rows with a future time usually mean a clock or time-zone mistake"
                if report.counts.get(IN_FUTURE)
                else ""
            )
        ),
        metadata={
            "window": window,
            "rows": report.rows,
            "scanned": report.scanned,
            **{kind: int(n) for kind, n in report.counts.items()},
            "samples": dg.MetadataValue.table(rows, schema=schema),
        },
    )
