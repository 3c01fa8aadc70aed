"""Asset checks: their specs on the partitioned assets and the results a reviewer reads in the UI.

Checks are declared as `check_specs` on the assets (a separate partitioned `@asset_check` would load
every partition). The facts come from `crm_genesys.contacts.quality`; this module only turns them
into Dagster results. Check history shows no partition, so every result names its window: in its
description (first words) and as `window` metadata. Samples are tables, masked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import dagster as dg
import pandas as pd

from crm_genesys import settings
from crm_genesys.contacts import quality
from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.masking import mask_key, mask_phone
from crm_genesys.contacts.normalize import NormalizationResult
from crm_genesys.crm.time_report import TimeReport
from crm_genesys.defs import review
from crm_genesys.sync.accounting import WindowAccount
from crm_genesys.sync.breakers import MassClear
from crm_genesys.sync.screenpop import ScreenPopReport

NORMALIZED = dg.AssetKey("normalized_contacts")
SYNC = dg.AssetKey("genesys_sync")

NORMALIZED_CHECK_SPECS = [
    dg.AssetCheckSpec(
        "e164_coverage",
        asset=NORMALIZED,
        description=(
            "Share of CRM phones that became valid E.164 (screen pops match on them); warns "
            "below CRM_GENESYS_MIN_E164_COVERAGE: check the mapping's default country."
        ),
    ),
    dg.AssetCheckSpec(
        "quarantine_rate",
        asset=NORMALIZED,
        blocking=True,
        description=(
            "Quarantined share of rows under CRM_GENESYS_MAX_QUARANTINE_RATE; above it nothing "
            "is sent (blocking): a broken mapping or extract, fix it and re-run the window. "
            "Once contacts are synced it counts the quarantined rows of synced contacts and "
            "rows without a key; a window of fewer than CRM_GENESYS_QUARANTINE_MIN_ROWS rows, "
            "or over the share only by records that never synced, is a warning; so is a "
            "window a person confirmed (ops.normalized_contacts.config.confirm_quarantined: "
            "its quarantined count)."
        ),
    ),
    dg.AssetCheckSpec(
        "schema_drift",
        asset=NORMALIZED,
        description=(
            "CRM columns that no mapping names (dropped, never sent), and mapped columns the "
            "CRM lacks: decide about them in the mapping."
        ),
    ),
    dg.AssetCheckSpec(
        "identifier_collisions",
        asset=NORMALIZED,
        description=(
            "Informational: phones and e-mails shared by several business keys in the window "
            "(a screen pop cannot tell them apart)."
        ),
    ),
    dg.AssetCheckSpec(
        "denied_columns_seen",
        asset=NORMALIZED,
        description=(
            "Denied (PII) columns the extract read; they never leave, but reading them means "
            "the extract holds PII it does not need."
        ),
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
        description=(
            "Changes of the window Genesys rejected permanently, grouped by reason: fix the CRM "
            "row or the mapping (the drain retries them), or ask for a retry (dead_letters_job)."
        ),
    ),
    dg.AssetCheckSpec(
        "screen_pop_ready",
        asset=SYNC,
        description=(
            "A sample of the contacts this run wrote, looked up as a CTI screen pop does "
            "(identifier lookup by Phone, reverse lookup), from every form a caller may dial: "
            "each finds "
            "exactly its contact. Shared numbers are listed with every key."
        ),
    ),
]


def _metadata_value(value: Any) -> Any:
    if isinstance(value, quality.Rows):
        return review.records_table(value.rows, value.columns)
    if isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
        return review.counts_table({str(k): int(v) for k, v in value.items()}, "value", "count")
    if isinstance(value, dict):
        return dg.MetadataValue.json(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value) if value else "none"
    return value


def _result(asset: dg.AssetKey, fact: Any, window: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=fact.name,
        passed=bool(fact.passed),
        severity=dg.AssetCheckSeverity(fact.severity),
        metadata={"window": window, **{k: _metadata_value(v) for k, v in fact.metadata.items()}},
        description=f"window {window}: {fact.description}",
    )


def normalization_metadata(result: NormalizationResult) -> dict[str, Any]:
    """The same keys on every materialization; reasons and samples as tables."""
    reasons = result.quarantine["reason"].value_counts().to_dict() if len(result.quarantine) else {}
    return {
        "rows_in": result.report.rows_in,
        "contacts": len(result.contacts),
        "tombstones": int(result.contacts["is_deleted"].sum()) if len(result.contacts) else 0,
        "quarantined": len(result.quarantine),
        "superseded": result.superseded,
        "phones_valid": result.report.phones_valid,
        "phones_present": result.report.phones_present,
        "quarantine_reasons": review.counts_table(
            {str(k): int(v) for k, v in reasons.items()}, "reason", "rows"
        ),
        "quarantine_samples": _metadata_value(quality.quarantine_samples(result.quarantine)),
    }


def normalized_check_results(
    result: NormalizationResult,
    crm_columns: list[str],
    extracted_columns: list[str],
    mapping: Mapping,
    window: str,
    synced: Collection[str] | None = None,
    confirmed_quarantined: int = 0,
) -> Iterator[dg.AssetCheckResult]:
    """Check results of one window: drift from the CRM table's columns, denied columns from
    what the extract read, the rest from the frame (`synced`: the quarantined keys the sync
    holds contacts of, None when it holds none; see `quality.breaker_counted`)."""
    facts = quality.all_facts(
        result,
        mapping,
        crm_columns,
        extracted_columns,
        max_quarantine_rate=max_quarantine_rate(),
        min_quarantine_rows=min_quarantine_rows(),
        synced=synced,
        confirmed_quarantined=confirmed_quarantined,
        min_e164_coverage=float(settings.get("CRM_GENESYS_MIN_E164_COVERAGE")),
    )
    for fact in facts:
        yield _result(NORMALIZED, fact, window)


def max_quarantine_rate() -> float:
    """`CRM_GENESYS_MAX_QUARANTINE_RATE`: above this share of quarantined rows nothing is sent."""
    return float(settings.get("CRM_GENESYS_MAX_QUARANTINE_RATE"))


def min_quarantine_rows() -> int:
    """`CRM_GENESYS_QUARANTINE_MIN_ROWS`: the least rows on which the quarantine share stops."""
    return int(settings.get("CRM_GENESYS_QUARANTINE_MIN_ROWS"))


def sync_check_results(
    summary: WindowAccount,
    letters: pd.DataFrame,
    all_letters: pd.DataFrame,
    screen_pop: ScreenPopReport | None,
    sample_size: int,
) -> Iterator[dg.AssetCheckResult]:
    """The `dead_letters` and `screen_pop_ready` results of one window. `letters` and
    `all_letters` are `SyncStateStore.dead_letter_summary()` of the window and of every window."""
    window = summary.window
    open_here = int(letters["letters"].sum()) if len(letters) else 0
    open_all = int(all_letters["letters"].sum()) if len(all_letters) else 0
    yield dg.AssetCheckResult(
        asset_key=SYNC,
        check_name="dead_letters",
        passed=open_here == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "window": window,
            "dead_lettered_now": summary.dead_lettered,
            "open_in_window": open_here,
            "open_in_all_windows": open_all,
            "by_reason": review.frame_table(_letters_view(letters)),
            "by_reason_all_windows": review.frame_table(_letters_view(all_letters)),
        },
        description=(
            f"window {window}: {open_here} dead letter(s) open ({open_all} in all windows)"
            + ("" if not open_here else "; fix the CRM rows or the mapping, or ask for a retry")
        ),
    )
    yield screen_pop_result(window, screen_pop, sample_size)


def _letters_view(summary: pd.DataFrame) -> pd.DataFrame:
    view = summary.copy()
    if len(view):
        view["oldest"] = view["oldest"].astype(str)
        view["status"] = view["status"].astype("Int64").astype(str)
    return view


def _some_keys(keys: list[str], shown: int = 5) -> str:
    masked = [k if k.startswith("contact ") else mask_key(k) for k in keys[:shown]]
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(masked) + more


def screen_pop_result(
    window: str, report: ScreenPopReport | None, sample_size: int
) -> dg.AssetCheckResult:
    """The screen-pop verdicts of one window as a check result with a masked table."""
    if report is None or not report.verdicts:
        why = (
            "CRM_GENESYS_SCREENPOP_SAMPLE is 0"
            if sample_size == 0
            else "this run created or updated no contact with a phone"
        )
        return dg.AssetCheckResult(
            asset_key=SYNC,
            check_name="screen_pop_ready",
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"window": window, "contacts": 0, "numbers": 0, "failing": 0, "shared": 0},
            description=f"window {window}: nothing looked up ({why})",
        )
    rows = [
        {
            "business_key_masked": mask_key(v.number.business_key),
            "slot": v.number.slot,
            "e164_masked": mask_phone(v.number.e164),
            "verdict": v.verdict,
            "forms_reaching_it": f"{v.forms_matching}/{v.forms}",
            "found_keys_masked": _some_keys(v.found),
            "detail": v.detail,
        }
        for v in sorted(report.verdicts, key=lambda v: (v.verdict == "ok", v.verdict))
    ]
    failing, shared = len(report.failing), report.count("shared")
    return dg.AssetCheckResult(
        asset_key=SYNC,
        check_name="screen_pop_ready",
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR if failing else dg.AssetCheckSeverity.WARN,
        metadata={
            "window": window,
            "contacts": report.contacts,
            "numbers": len(report.verdicts),
            "failing": failing,
            "shared": shared,
            "unverified": report.count("unverified"),
            "lookups": report.lookups,
            "numbers_checked": review.records_table(rows, list(rows[0])),
        },
        description=(
            f"window {window}: {len(report.verdicts) - failing} of {len(report.verdicts)} "
            f"sampled number(s) of {report.contacts} contact(s) pop their contact"
            + (f"; {failing} do not (see numbers_checked)" if failing else "")
            + (f"; {shared} shared with other contacts" if shared else "")
        ),
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
            (f"window {window}: {verdict.refusal()}" if verdict.refusal() else "")
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
    samples = [
        {"kind": kind, "crm_id": s.crm_id or "", "value": s.value}
        for kind, found in report.samples.items()
        for s in found
    ]
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
            "samples": review.records_table(samples, ("kind", "crm_id", "value")),
        },
    )
