"""What a reviewer reads on a window's materializations: the same numeric keys every time, one
request count, the budget share over the sending time, a markdown summary, and column schemas.

Every `genesys_sync` materialization carries exactly `SYNC_NUMBERS` (zeros when a window had
nothing to send), so the UI's plots are continuous; names are the reviewer's, not the sink's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
import pandas as pd

from crm_genesys.contacts.diff import CHANGE_COLUMNS
from crm_genesys.contacts.models import NormalizedContacts
from crm_genesys.sync.accounting import BUCKETS, WindowAccount
from crm_genesys.sync.screenpop import ScreenPopReport

# The numeric metadata of every genesys_sync materialization (and failure), in display order.
ACCOUNTING = ("extracted", *BUCKETS, "failed", "writes")
SYNC_NUMBERS = (
    *ACCOUNTING,
    "requests",
    "requests_bulk_writes",
    "requests_bulk_fetches",
    "requests_lookups",
    "requests_screen_pop",
    "retries",
    "rate_limited",
    "transport_errors",
    "outcome_unknown",
    "item_retries",
    "rounds",
    "resolved_intents",
    "unresolved_intents",
    "already_applied",
    "recreated",
    "relocated",
    "deferred",
    "duplicates",
    "sending_s",
    "latency_p50_s",
    "latency_p95_s",
    "contacts_per_s",
    "budget_share",
    "dead_letters_cleared",
    "screen_pop_numbers",
    "screen_pop_failing",
)
# Where the sink's and the client's figures come from (`SyncReport.as_metadata()` keys).
_FROM_SINK = {
    "requests_bulk_writes": "bulk_requests",
    "requests_bulk_fetches": "fetch_requests",
    "requests_lookups": "lookups",
    "item_retries": "item_retries",
    "rounds": "rounds",
    "resolved_intents": "resolved_intents",
    "unresolved_intents": "unresolved_intents",
    "already_applied": "already_applied",
    "recreated": "recreated",
    "relocated": "relocated",
    "deferred": "deferred",
    "duplicates": "duplicates",
    "retries": "genesys_retries",
    "rate_limited": "genesys_429s",
    "transport_errors": "genesys_transport_errors",
    "outcome_unknown": "genesys_outcome_unknown",
    "latency_p50_s": "genesys_latency_p50_s",
    "latency_p95_s": "genesys_latency_p95_s",
}


def budget_share(requests: int, sending_s: float, budget_per_minute: int) -> float:
    """Requests over what the budget allows in the sending time, counted in whole minutes of
    at least one: the platform counts per minute, so a 10-second run of 40 requests used 40
    of one minute's budget, not 40 of a sixth of it. At most 1 when the client paces."""
    minutes = max(1.0, sending_s / 60.0)
    return round(requests / (budget_per_minute * minutes), 4) if budget_per_minute else 0.0


def sync_metadata(
    summary: WindowAccount,
    *,
    budget_per_minute: int,
    target: str,
    screen_pop: ScreenPopReport | None = None,
    screen_pop_client: Mapping[str, float | int] | None = None,
    dead_letters_cleared: int = 0,
) -> dict[str, Any]:
    """The window's metadata: `SYNC_NUMBERS` (all of them, always), the failure reasons as a
    table, the target, and a markdown summary."""
    sink = summary.sink
    pop = dict(screen_pop_client or {})
    counts = summary.counts()
    numbers: dict[str, float | int] = {name: int(counts[name]) for name in ACCOUNTING}
    for name, source in _FROM_SINK.items():
        numbers[name] = sink.get(source, 0)
    numbers["requests_screen_pop"] = int(pop.get("genesys_requests", 0))
    numbers["requests"] = int(sink.get("genesys_requests", 0)) + numbers["requests_screen_pop"]
    sending = float(sink.get("genesys_elapsed_s", 0.0)) + float(pop.get("genesys_elapsed_s", 0.0))
    numbers["sending_s"] = round(sending, 3)
    numbers["contacts_per_s"] = round(summary.writes / sending, 2) if sending > 0 else 0.0
    numbers["budget_share"] = budget_share(int(numbers["requests"]), sending, budget_per_minute)
    numbers["dead_letters_cleared"] = dead_letters_cleared
    numbers["screen_pop_numbers"] = len(screen_pop.verdicts) if screen_pop else 0
    numbers["screen_pop_failing"] = len(screen_pop.failing) if screen_pop else 0
    reasons = {
        k.removeprefix("failure:"): int(v) for k, v in sink.items() if k.startswith("failure:")
    }
    return {
        "summary": dg.MetadataValue.md(summary_markdown(summary, numbers, budget_per_minute)),
        **{name: numbers[name] for name in SYNC_NUMBERS},
        "accounted": summary.accounted,
        "failure_reasons": counts_table(reasons, "reason", "changes"),
        "target": target,
    }


def summary_markdown(
    summary: WindowAccount, numbers: Mapping[str, float | int], budget_per_minute: int
) -> str:
    """A few lines a reviewer reads first: the verdict, where the rows went, what it cost."""
    if summary.done:
        verdict = f"**Window {summary.window}: synced.** Every extracted row is accounted for."
    elif summary.failed:
        verdict = (
            f"**Window {summary.window}: not done.** {summary.failed} change(s) still fail "
            "retryably; the retry sensor re-runs the window, which sends only what is missing."
        )
    else:
        verdict = f"**Window {summary.window}: not done.** Rows are unaccounted for."
    rows = "\n".join(f"| {name.replace('_', ' ')} | {numbers[name]:,} |" for name in ACCOUNTING)
    cost = (
        f"{numbers['requests']:,} request(s) to Genesys ({numbers['requests_screen_pop']:,} of "
        f"them screen-pop lookups), {numbers['rate_limited']:,} answered 429, "
        f"{numbers['budget_share']:.0%} of the {budget_per_minute}/min budget over "
        f"{numbers['sending_s']:.1f} s of sending."
    )
    extra = []
    if numbers["dead_lettered"]:
        extra.append(
            f"{numbers['dead_lettered']} change(s) dead-lettered: see the `dead_letters` check."
        )
    if numbers["screen_pop_failing"]:
        extra.append(
            f"{numbers['screen_pop_failing']} sampled number(s) do not pop the right contact: "
            "see the `screen_pop_ready` check."
        )
    return "\n\n".join([verdict, "| rows | count |\n|---|---|\n" + rows, cost, *extra])


def counts_table(counts: Mapping[str, int], name: str, count: str) -> dg.MetadataValue:
    """`{label: n}` as a two-column table, largest first."""
    rows = [
        dg.TableRecord({name: str(k), count: int(v)})
        for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(name, "string"), dg.TableColumn(count, "int")])
    return dg.MetadataValue.table(rows, schema=schema)


def records_table(records: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> dg.MetadataValue:
    """Rows of plain values as a table with `columns` (types from the values)."""
    names = list(columns)
    rows = [dict(r) for r in records]
    kinds = {n: _kind([r.get(n) for r in rows]) for n in names}
    table_rows = [dg.TableRecord({n: _cell(r.get(n), kinds[n]) for n in names}) for r in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(n, kinds[n]) for n in names])
    return dg.MetadataValue.table(table_rows, schema=schema)


def _kind(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return "" if kind == "string" else None
    if kind == "string":
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return str(value)
    return value


def frame_table(frame: pd.DataFrame, limit: int = 20) -> dg.MetadataValue:
    """The first `limit` rows of a small frame of plain values as a table."""
    return records_table(
        frame.head(limit).astype(object).where(frame.head(limit).notna(), None).to_dict("records"),
        [str(c) for c in frame.columns],
    )


def normalized_column_schema() -> dg.TableSchema:
    """The column schema of `normalized_contacts.contacts`, read from the pandera model."""
    columns = []
    for name, column in NormalizedContacts.to_schema().columns.items():
        checks = [_describe_check(c) for c in column.checks]
        columns.append(
            dg.TableColumn(
                name,
                str(column.dtype),
                description=_COLUMN_NOTES.get(name, ""),
                constraints=dg.TableColumnConstraints(
                    nullable=bool(column.nullable), unique=bool(column.unique), other=checks
                ),
            )
        )
    return dg.TableSchema(columns=columns)


def changes_column_schema() -> dg.TableSchema:
    """The column schema of `contact_changes.changes`."""
    return dg.TableSchema(
        columns=[dg.TableColumn(c, "string", description=_CHANGE_NOTES[c]) for c in CHANGE_COLUMNS]
    )


def _describe_check(check: Any) -> str:
    stats = getattr(check, "statistics", None) or {}
    name = getattr(check, "name", None) or str(check)
    args = ", ".join(f"{k}={v!r}" for k, v in stats.items())
    return f"{name}({args})" if args else str(name)


_COLUMN_NOTES = {
    "business_key": "stable key of the customer (never the CRM's internal id); our ExternalId",
    "crm_id": "the CRM's volatile internal id, for finding the record",
    "crm_version": "microseconds since the epoch of the version column",
    "is_deleted": "a tombstone: the CRM deleted the record",
    "content_hash": "SHA-256 of payload; empty for tombstones",
    "payload": "the ExternalContact body as sent (canonical JSON)",
    "work_phone": "E.164",
    "cell_phone": "E.164",
    "home_phone": "E.164",
    "other_phone": "E.164",
}
_CHANGE_NOTES = {
    "business_key": "stable key of the customer",
    "op": "create, update or delete",
    "contact_id": "the Genesys contact id (empty for a create)",
    "crm_id": "the CRM's internal id",
    "crm_version": "the CRM version being applied (int, microseconds)",
    "content_hash": "SHA-256 of payload",
    "payload": "the ExternalContact body to send",
}
