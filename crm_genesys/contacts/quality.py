"""Data-quality facts for asset checks, as plain values the lead turns into AssetCheckResults.

Every function is pure and returns a `QualityFact` (passed, severity "ERROR" or "WARN",
description, metadata of plain values: numbers, text, lists of text, `{label: count}` counts and
`Rows` tables). Samples are masked with `contacts.masking`; counts come first so a reviewer can
act: which column drifted, which reason dominates the quarantine, which identifier two customers
share. A fact that is `informational` never fails: it describes the data, nobody must act.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from crm_genesys.contacts.mapping import Mapping
from crm_genesys.contacts.masking import mask_email, mask_key, mask_phone
from crm_genesys.contacts.normalize import NormalizationResult

Severity = Literal["ERROR", "WARN"]
# Where a person confirms a window's quarantine (`quarantine_rate`).
CONFIRM_QUARANTINED_KEY = "ops.normalized_contacts.config.confirm_quarantined"
_SAMPLES = 5


@dataclass(frozen=True)
class Rows:
    """A small table of plain values (samples, counts by group), shown as a table in the UI."""

    columns: tuple[str, ...]
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class QualityFact:
    """One check's verdict: `passed`, how bad a failure is, and what a reviewer needs to act."""

    name: str
    passed: bool
    severity: Severity
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 1.0


def e164_coverage(result: NormalizationResult, min_coverage: float = 0.8) -> QualityFact:
    """Share of non-blank CRM phones of synced rows that became valid E.164 (WARN below
    `min_coverage`): the numbers screen pops can match. A CRM always holds some unusable
    numbers; a coverage far below the usual says the default country or the phone mapping is
    wrong."""
    r = result.report
    coverage = _ratio(r.phones_valid, r.phones_present)
    samples = [
        {"reason": reason, "sample_masked": sample}
        for reason, found in sorted(r.phones_dropped_samples.items())
        for sample in found
    ]
    slots = [
        {"slot": slot, **{k: int(v) for k, v in stats.items()}}
        for slot, stats in r.phones_by_slot.items()
    ]
    slot_columns = ("slot", *sorted({k for row in slots for k in row if k != "slot"}))
    return QualityFact(
        name="e164_coverage",
        passed=coverage >= min_coverage,
        severity="WARN",
        description=(
            f"{r.phones_valid} of {r.phones_present} phones normalized to E.164 "
            f"({coverage:.1%}, at least {min_coverage:.0%} expected); dropped numbers are "
            "listed by reason with masked samples"
        ),
        metadata={
            "coverage": coverage,
            "min_coverage": min_coverage,
            "phones_present": r.phones_present,
            "phones_valid": r.phones_valid,
            "duplicate_slots_removed": r.phones_duplicate_slots,
            "phones_dropped": dict(r.phones_dropped),
            "dropped_samples": Rows(("reason", "sample_masked"), samples),
            "by_slot": Rows(slot_columns, slots),
        },
    )


def quarantine_blocks(counted: int, rows: int, max_rate: float, min_rows: int) -> bool:
    """Whether a quarantine stops its window (or live range): the rows the breaker counts
    (`breaker_counted`) are more than `max_rate` of its `rows`, and it has at least `min_rows`
    rows. A few rows are too few to tell a broken mapping or extract from a few bad records (one
    bad row of three is a third): they are a warning."""
    return rows >= min_rows and _ratio(counted, rows) > max_rate


def breaker_counted(quarantine: pd.DataFrame, synced: Collection[str] | None) -> int:
    """The quarantined rows the breaker counts. On a sync that holds no contact yet (`synced`
    None): all of them. Once it holds contacts: the rows without a business key, and the rows of
    keys in `synced` (contacts it created, whose rows normalized before): what a broken mapping
    or extract makes of the contacts it already syncs. A quarantined row of a key never synced is
    a bad CRM record; the survivors of a window run late (its valid rows edited again since,
    into later windows) are mostly such records, and they must not stop it."""
    if synced is None or not len(quarantine):
        return len(quarantine)
    keys = quarantine["business_key"]
    keyless = keys.isna() | (keys.astype(str).str.strip() == "")
    return int(keyless.sum() + keys[~keyless].astype(str).isin(set(synced)).sum())


def quarantine_rate(
    result: NormalizationResult,
    max_rate: float,
    min_rows: int,
    synced: Collection[str] | None = None,
    confirmed: int = 0,
) -> QualityFact:
    """Over `max_rate` of the window's rows quarantined: a failure. Blocking (ERROR) when the
    rows the breaker counts (`breaker_counted`, with `synced` the quarantined keys the sync holds
    contacts of, None on a sync with none yet) are over the share in a window of at least
    `min_rows` rows: that usually means a broken mapping or extract, not bad customers. Otherwise
    a warning (WARN), and the window's valid rows are sent. A person who reviewed the window
    confirms its quarantine with `confirmed` equal to its quarantined rows (run config
    `CONFIRM_QUARANTINED_KEY`): then a stop is a warning too."""
    r = result.report
    rate = _ratio(r.quarantined, r.rows_in) if r.rows_in else 0.0
    by_reason = dict(sorted(r.quarantine_reasons.items(), key=lambda kv: -kv[1]))
    top = next(iter(by_reason), None)
    counted = breaker_counted(result.quarantine, synced)
    stops = quarantine_blocks(counted, r.rows_in, max_rate, min_rows)
    accepted = stops and confirmed == r.quarantined
    blocks = stops and not accepted
    sent = ": a warning, the valid rows were sent"
    if blocks:
        why = (
            "; to send the valid rows anyway once reviewed, re-run the window with "
            f"{CONFIRM_QUARANTINED_KEY}: {r.quarantined}"
        )
    elif accepted:
        why = f"; confirmed in run config ({CONFIRM_QUARANTINED_KEY}: {confirmed})" + sent
    elif rate <= max_rate:
        why = ""
    elif r.rows_in < min_rows:
        why = f"; too few rows to stop the window (fewer than {min_rows})" + sent
    else:
        why = (
            f"; only {counted} of them are contacts synced before or rows without a key "
            "(the others never synced: bad CRM records, not a broken mapping)" + sent
        )
    return QualityFact(
        name="quarantine_rate",
        passed=rate <= max_rate,
        severity="ERROR" if blocks or rate <= max_rate else "WARN",
        description=(
            f"{r.quarantined} of {r.rows_in} rows quarantined ({rate:.2%}, limit {max_rate:.2%})"
            + (f"; most often {top}" if top else "")
            + why
        ),
        metadata={
            "rate": rate,
            "max_rate": max_rate,
            "min_rows": min_rows,
            "rows_in": r.rows_in,
            "quarantined": r.quarantined,
            "counted_by_breaker": counted,
            "confirmed": confirmed,
            "by_reason": by_reason,
            "samples": quarantine_samples(result.quarantine),
        },
    )


def quarantine_samples(quarantine: pd.DataFrame, per_reason: int = _SAMPLES) -> Rows:
    """A few quarantined rows of each reason: the masked key, the CRM's internal id (to find
    the record), the reason and its detail (which never holds a phone or an e-mail)."""
    columns = ("reason", "business_key_masked", "crm_id", "detail")
    if not len(quarantine):
        return Rows(columns, [])
    picked = quarantine.groupby("reason", sort=True, group_keys=False).head(per_reason)
    rows = [
        {
            "reason": str(row.reason),
            "business_key_masked": mask_key(row.business_key)
            if isinstance(row.business_key, str)
            else "",
            "crm_id": str(row.crm_id),
            "detail": str(row.detail),
        }
        for row in picked.sort_values("reason", kind="stable").itertuples(index=False)
    ]
    return Rows(columns, rows)


def schema_drift(columns: Iterable[Any], mapping: Mapping) -> QualityFact:
    """CRM columns the mapping does not name (WARN): new data nobody decided about yet. Denied
    columns are not drift (they are reported by `denied_columns_seen`)."""
    names = [str(c) for c in columns]
    used = set(mapping.column_uses())
    unmapped = sorted(c for c in names if c not in used and mapping.denial_reason(c) is None)
    missing = sorted(c for c in used if c not in set(names))
    return QualityFact(
        name="schema_drift",
        passed=not unmapped and not missing,
        severity="WARN",
        description=(
            f"{len(unmapped)} CRM column(s) not in the mapping, "
            f"{len(missing)} mapped column(s) absent from the CRM"
        ),
        metadata={"unmapped_columns": unmapped, "missing_columns": missing},
    )


def denied_columns_seen(columns: Iterable[Any], mapping: Mapping) -> QualityFact:
    """PII columns present in what was extracted (WARN): they are never sent, but an extract that
    reads them holds PII it does not need (read `mapping.source_columns()` instead)."""
    seen = sorted({str(c) for c in columns if mapping.denial_reason(c) is not None})
    return QualityFact(
        name="denied_columns_seen",
        passed=not seen,
        severity="WARN",
        description=(
            f"{len(seen)} denied column(s) in the extract; never read by normalization"
            if seen
            else "no denied column in the extract"
        ),
        metadata={
            "denied_columns": seen,
            "reasons": {c: mapping.denial_reason(c) for c in seen},
        },
    )


def identifier_collisions(contacts: pd.DataFrame) -> QualityFact:
    """Phones or e-mails shared by two or more business keys among the window's live contacts
    (informational: households and switchboards share numbers, and nobody must act on each
    window). A screen pop on such a number cannot know who calls: `screen_pop_ready` reports
    the shared numbers it meets in Genesys with every key."""
    live = contacts[~contacts["is_deleted"].to_numpy(dtype=bool)]
    frames = []
    for kind, cols in (
        ("phone", ["work_phone", "cell_phone", "home_phone", "other_phone"]),
        ("email", ["work_email", "personal_email", "other_email"]),
    ):
        present = [c for c in cols if c in live.columns]
        if not present:
            continue
        long = live.melt(id_vars=["business_key"], value_vars=present, value_name="value")
        long = long[long["value"].notna()]
        if kind == "email":
            long = long.assign(value=long["value"].str.casefold())
        long = long.drop_duplicates(["business_key", "value"]).assign(kind=kind)
        frames.append(long[["kind", "value", "business_key"]])
    if frames:
        ids = pd.concat(frames, ignore_index=True)
        counts = ids.groupby(["kind", "value"], sort=False)["business_key"].transform("size")
        shared = ids[counts.to_numpy() > 1]
    else:
        shared = pd.DataFrame(columns=["kind", "value", "business_key"])
    per_value = shared.groupby(["kind", "value"], sort=False)["business_key"].agg(list)
    n_values = len(per_value)
    samples = []
    for (kind, value), keys in per_value.head(_SAMPLES).items():
        masked = mask_phone(value) if kind == "phone" else mask_email(value)
        shown = ", ".join(mask_key(k) for k in sorted(keys)[:_SAMPLES])
        samples.append(
            {"kind": kind, "value_masked": masked, "keys": len(keys), "business_keys_masked": shown}
        )
    by_kind = (
        {str(k): int(v) for k, v in per_value.index.get_level_values(0).value_counts().items()}
        if n_values
        else {}
    )
    return QualityFact(
        name="identifier_collisions",
        passed=True,
        severity="WARN",
        description=(
            f"{n_values} phone/e-mail value(s) shared by more than one business key (informational)"
        ),
        metadata={
            "shared_values": n_values,
            "by_kind": by_kind,
            "keys_involved": int(shared["business_key"].nunique()) if n_values else 0,
            "samples": Rows(("kind", "value_masked", "keys", "business_keys_masked"), samples),
        },
    )


def all_facts(
    result: NormalizationResult,
    mapping: Mapping,
    crm_columns: Iterable[Any],
    extracted_columns: Iterable[Any] | None = None,
    *,
    max_quarantine_rate: float,
    min_quarantine_rows: int,
    min_e164_coverage: float = 0.8,
    synced: Collection[str] | None = None,
    confirmed_quarantined: int = 0,
) -> list[QualityFact]:
    """Every fact above for one window. Drift is judged on the CRM table's columns
    (`crm_columns`); denied columns on what the extract read (`extracted_columns`, the CRM
    table's when not given): a denied column in the table is expected, reading it is not."""
    cols = list(crm_columns)
    read = list(extracted_columns) if extracted_columns is not None else cols
    return [
        e164_coverage(result, min_e164_coverage),
        quarantine_rate(
            result, max_quarantine_rate, min_quarantine_rows, synced, confirmed_quarantined
        ),
        schema_drift(cols, mapping),
        denied_columns_seen(read, mapping),
        identifier_collisions(result.contacts),
    ]


__all__ = [
    "QualityFact",
    "Rows",
    "all_facts",
    "breaker_counted",
    "denied_columns_seen",
    "e164_coverage",
    "identifier_collisions",
    "quarantine_blocks",
    "quarantine_rate",
    "quarantine_samples",
    "schema_drift",
]
