"""Raw CRM rows to the normalized contact frame: `normalize(raw, mapping) -> NormalizationResult`.

Contract (docs/internals.md, "Frames"):
- `contacts`: one row per business key (the latest `crm_version` of the window wins; ties go to
  the row that comes later in `raw`), validated by `NormalizedContacts`. `payload` is the canonical
  JSON (sorted keys, no whitespace) of the ExternalContact body exactly as it will be sent, without
  `id`, `externalIds`, `division` and `schema` (the sink adds those); `content_hash` is the SHA-256
  of exactly that string. Tombstones carry "" for both.
- `quarantine`: rows that cannot be synced, one reason each (see `models.QUARANTINE_REASONS`),
  with a detail that never shows an unmasked phone or e-mail.
- `superseded`: rows dropped as older versions of a key in the same window.
- Invariant: `len(raw) == len(contacts) + len(quarantine) + superseded`.
- It never raises on bad data: any unicode, nulls, huge strings, wrong types, missing columns.
- A raw column whose name is denied (PII) is never read, even when the mapping names it.

Order of work: identity first (key, version, tombstone flag) for every row, then de-duplication,
then the costly normalization only for the live rows that survive it. That last step runs in
chunks of at most `CHUNK_ROWS` live rows, so the per-field JSON members of only one chunk are held
at a time; with `workers` >= 2 and at least `PARALLEL_MIN_ROWS` live rows the chunks go to a pool
of worker processes. Every step is element-wise per row, and the data-quality report is merged
from per-chunk facts in row order, so the result is identical whatever the chunking or the number
of processes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from crm_genesys import settings
from crm_genesys.contacts.countries import resolve_countries
from crm_genesys.contacts.custom import coerce_custom_field
from crm_genesys.contacts.keys import business_keys, crm_versions, truthy
from crm_genesys.contacts.mapping import (
    ADDRESS_FIELD_LIMITS,
    EMAIL_MAX_LENGTH,
    SCALAR_FIELD_LIMITS,
    Mapping,
)
from crm_genesys.contacts.masking import mask_email, mask_phone
from crm_genesys.contacts.phones import distinct_phones
from crm_genesys.contacts.text import (
    as_text,
    clean_text,
    factorize,
    json_string,
    normalize_emails,
    over_limit,
    per_distinct,
    plain_text,
    truncate_one,
)

CONTACT_COLUMNS = [
    "business_key",
    "crm_id",
    "crm_version",
    "is_deleted",
    "content_hash",
    "payload",
    "first_name",
    "last_name",
    "work_phone",
    "cell_phone",
    "home_phone",
    "other_phone",
    "work_email",
    "personal_email",
    "other_email",
]
QUARANTINE_COLUMNS = ["business_key", "crm_id", "crm_version", "reason", "detail"]
_REVIEW_PHONE = {
    "workPhone": "work_phone",
    "cellPhone": "cell_phone",
    "homePhone": "home_phone",
    "otherPhone": "other_phone",
}
_REVIEW_EMAIL = {
    "workEmail": "work_email",
    "personalEmail": "personal_email",
    "otherEmail": "other_email",
}
_SAMPLES = 5
# Live rows normalized at a time: bounds the memory of the per-field JSON members.
CHUNK_ROWS = 40_000
# Below this many live rows one process does it all (worker start-up and pickling cost more).
PARALLEL_MIN_ROWS = 150_000


@dataclass
class NormalizationReport:
    """Data-quality facts of one normalization, as plain JSON values (no unmasked identifiers)."""

    rows_in: int = 0
    contacts: int = 0
    live: int = 0
    tombstones: int = 0
    quarantined: int = 0
    superseded: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    unmapped_columns: list[str] = field(default_factory=list)
    denied_columns_seen: list[str] = field(default_factory=list)
    denied_columns_blocked: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    countries_unresolved: int = 0
    countries_unresolved_samples: list[str] = field(default_factory=list)
    phones_present: int = 0
    phones_valid: int = 0
    phones_dropped: dict[str, int] = field(default_factory=dict)
    phones_dropped_samples: dict[str, list[str]] = field(default_factory=dict)
    phones_duplicate_slots: int = 0
    phones_by_slot: dict[str, dict[str, int]] = field(default_factory=dict)
    emails_present: int = 0
    emails_valid: int = 0
    emails_dropped: dict[str, int] = field(default_factory=dict)
    emails_dropped_samples: dict[str, list[str]] = field(default_factory=dict)
    fields_truncated: dict[str, int] = field(default_factory=dict)
    fields_rejected: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NormalizationResult:
    """What `normalize` returns (see the module docstring)."""

    contacts: pd.DataFrame
    quarantine: pd.DataFrame
    superseded: int
    report: NormalizationReport


class _Columns:
    """Reads raw columns by name, refusing denied ones and noting missing ones."""

    def __init__(self, raw: pd.DataFrame, mapping: Mapping, report: NormalizationReport) -> None:
        self._raw = raw
        self._mapping = mapping
        self._report = report
        self.n = len(raw)
        # The first column of each (stringified) name: duplicate names must not break selection.
        self._positions: dict[str, int] = {}
        for pos, name in enumerate(raw.columns):
            self._positions.setdefault(str(name), pos)

    def get(self, name: str | None) -> pd.Series:
        empty = pd.Series(np.full(self.n, None, dtype=object))
        if not name:
            return empty
        if self._mapping.denial_reason(name) is not None:
            if name not in self._report.denied_columns_blocked:
                self._report.denied_columns_blocked.append(name)
            return empty
        pos = self._positions.get(name)
        if pos is None:
            if name not in self._report.missing_columns:
                self._report.missing_columns.append(name)
            return empty
        return self._raw.iloc[:, pos]

    def arrays(self) -> dict[str, np.ndarray]:
        """The columns the mapping names and may read, as arrays (first column of a name)."""
        used = self._mapping.column_uses()
        return {
            name: self._raw.iloc[:, pos].to_numpy()
            for name, pos in self._positions.items()
            if name in used and self._mapping.denial_reason(name) is None
        }


class _ChunkColumns:
    """One chunk of live rows (plain arrays by name, picklable), read like `_Columns`: denied
    names are refused and absent ones noted, in `blocked` and `missing`."""

    def __init__(self, arrays: dict[str, np.ndarray], n: int, mapping: Mapping) -> None:
        self._arrays = arrays
        self._mapping = mapping
        self.n = n
        self.blocked: list[str] = []
        self.missing: list[str] = []

    def get(self, name: str | None) -> pd.Series:
        empty = pd.Series(np.full(self.n, None, dtype=object))
        if not name:
            return empty
        if self._mapping.denial_reason(name) is not None:
            if name not in self.blocked:
                self.blocked.append(name)
            return empty
        values = self._arrays.get(name)
        if values is None:
            if name not in self.missing:
                self.missing.append(name)
            return empty
        return pd.Series(values, name=name)


# reason -> (rows, first distinct masked samples), in order of first appearance
_Reasons = dict[str, tuple[int, list[str]]]


def _first_seen(values: list[Any]) -> list[Any]:
    """The first `_SAMPLES` distinct values (by equality), in order."""
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
            if len(seen) >= _SAMPLES:
                break
    return seen


def _merge_reasons(into: _Reasons, later: _Reasons) -> None:
    for r, (count, found) in later.items():
        if r in into:
            before, samples = into[r]
            into[r] = (before + count, _first_seen(samples + found))
        else:
            into[r] = (count, found)


def _count(counter: dict[str, int], key: str, by: Any) -> None:
    counter[key] = counter.get(key, 0) + int(by)


@dataclass
class _LiveFacts:
    """What the live rows of one chunk add to the report. `merge` appends a later chunk (row
    order) and `apply` writes them to the report exactly as one pass over all rows would: counts
    add up, and the first distinct samples of all rows are the first distinct ones among the
    chunks' own first distinct samples, taken in row order."""

    blocked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    truncated: dict[str, int] = field(default_factory=dict)  # in field order, zeros included
    rejected: dict[str, int] = field(default_factory=dict)
    countries_unresolved: int = 0
    country_samples: list[Any] = field(default_factory=list)  # pd.unique order
    phones: dict[str, tuple[dict[str, int], _Reasons]] = field(default_factory=dict)
    emails: dict[str, tuple[int, int, _Reasons]] = field(default_factory=dict)

    def merge(self, later: _LiveFacts) -> None:
        self.blocked += [c for c in later.blocked if c not in self.blocked]
        self.missing += [c for c in later.missing if c not in self.missing]
        for key, by in later.truncated.items():
            _count(self.truncated, key, by)
        for key, by in later.rejected.items():
            _count(self.rejected, key, by)
        self.countries_unresolved += later.countries_unresolved
        both = np.empty(len(self.country_samples) + len(later.country_samples), dtype=object)
        both[:] = self.country_samples + later.country_samples
        self.country_samples = list(pd.unique(both)[:_SAMPLES])
        for slot, (stats, reasons) in later.phones.items():
            if slot not in self.phones:
                self.phones[slot] = (stats, reasons)
                continue
            mine, my_reasons = self.phones[slot]
            for key, by in stats.items():
                _count(mine, key, by)
            _merge_reasons(my_reasons, reasons)
        for eslot, (present, valid, ereasons) in later.emails.items():
            if eslot not in self.emails:
                self.emails[eslot] = (present, valid, ereasons)
                continue
            p0, v0, my_ereasons = self.emails[eslot]
            _merge_reasons(my_ereasons, ereasons)
            self.emails[eslot] = (p0 + present, v0 + valid, my_ereasons)

    def apply(self, report: NormalizationReport) -> None:
        for c in self.blocked:
            if c not in report.denied_columns_blocked:
                report.denied_columns_blocked.append(c)
        for c in self.missing:
            if c not in report.missing_columns:
                report.missing_columns.append(c)
        for key, by in self.truncated.items():
            _bump(report.fields_truncated, key, by)
        for key, by in self.rejected.items():
            _bump(report.fields_rejected, key, by)
        report.countries_unresolved += self.countries_unresolved
        for v in self.country_samples:
            if v not in report.countries_unresolved_samples:
                report.countries_unresolved_samples.append(str(v)[:40])
        for slot, (stats, reasons) in self.phones.items():
            report.phones_duplicate_slots += stats["duplicate"]
            report.phones_present += stats["present"]
            report.phones_valid += stats["valid"]
            for r, (count, found) in reasons.items():
                _bump(report.phones_dropped, r, count)
                samples = report.phones_dropped_samples.setdefault(r, [])
                for s in found:
                    if s not in samples and len(samples) < _SAMPLES:
                        samples.append(s)
            report.phones_by_slot[slot] = stats
        for present, valid, ereasons in self.emails.values():
            report.emails_present += present
            report.emails_valid += valid
            for r, (count, found) in ereasons.items():
                _bump(report.emails_dropped, r, count)
                samples = report.emails_dropped_samples.setdefault(r, [])
                for s in found:
                    if s not in samples and len(samples) < _SAMPLES:
                        samples.append(s)


@dataclass
class _ChunkResult:
    """`_normalize_live` of one chunk: per row payload and content hash ("" when quarantined),
    quarantine reason and detail, the review columns it sets, and the report facts."""

    payload: np.ndarray
    content_hash: np.ndarray
    reason: np.ndarray
    detail: np.ndarray
    review: dict[str, np.ndarray]
    facts: _LiveFacts


def _fragments(key: str, literals: Any) -> np.ndarray:
    """`,"key":literal` per value, "" where the literal is None (a member of a JSON object)."""
    lit = np.asarray(literals, dtype=object)
    out = np.full(len(lit), "", dtype=object)
    present = pd.notna(lit)
    if present.any():
        out[present] = f',"{key}":' + lit[present]
    return out


def _kept(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` where `mask`, else None (object)."""
    out = np.full(len(values), None, dtype=object)
    out[mask] = values[mask]
    return out


def _join_object(fragments: list[np.ndarray], n: int, key: str | None = None) -> np.ndarray:
    """`{member,member}` per row from `_fragments` columns in key order, one join per row.

    Rows where every fragment is "" get None (the object is omitted by the caller). With `key`,
    the object comes as a member itself (`,"key":{...}`, "" when omitted), built in one step.
    """
    empty = None if key is None else ""
    head = "{" if key is None else f',"{key}":{{'
    out = np.full(n, empty, dtype=object)
    if fragments:
        joined = map("".join, zip(*fragments, strict=True))
        out[:] = [head + s[1:] + "}" if s else empty for s in joined]
    return out


def _sample(values: pd.Series | np.ndarray, mask: np.ndarray, masker: Any) -> list[str]:
    vals = np.asarray(values, dtype=object)[mask]
    seen: list[str] = []
    for v in vals:
        m = masker(v)
        if m and m not in seen:
            seen.append(m)
        if len(seen) >= _SAMPLES:
            break
    return seen


def _bump(counter: dict[str, int], key: str, by: int) -> None:
    if by:
        counter[key] = counter.get(key, 0) + int(by)


def normalize(
    raw: pd.DataFrame, mapping: Mapping, *, workers: int | None = None
) -> NormalizationResult:
    """Normalize one window of raw CRM rows (see the module docstring for the contract).

    `workers`: processes for the live rows' chunks (None: `default_workers()`, 1 unless
    `CRM_GENESYS_WORKERS` says otherwise). With 2 or more and at least `PARALLEL_MIN_ROWS` live
    rows, the chunks go to a pool of that many spawned processes and this one only assembles: on
    two free cores the live work takes about two thirds of the time, for about 0.9 GiB more
    memory in the workers (1M demo rows). The output is the same either way.
    """
    if workers is None:
        workers = default_workers()
    if workers > 1 and len(raw) >= PARALLEL_MIN_ROWS:
        # Spawned (the caller may be a threaded Dagster or test process), and started now so
        # that they are ready once the identity work below is done.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for _ in range(workers):
                pool.submit(_ready)
            return _normalize(raw, mapping, workers, pool)
    return _normalize(raw, mapping, workers, None)


def default_workers() -> int:
    """Processes for `normalize`: the `CRM_GENESYS_WORKERS` setting (1 by default: one process
    keeps the 1M-row pipeline within its memory budget; see `normalize`)."""
    return int(settings.get("CRM_GENESYS_WORKERS"))


def _ready() -> None:
    """A worker's first task: it has started and imported this module."""


def _normalize(
    raw: pd.DataFrame, mapping: Mapping, workers: int, pool: ProcessPoolExecutor | None
) -> NormalizationResult:
    report = NormalizationReport(rows_in=len(raw))
    n = len(raw)
    # Positional work throughout: a RangeIndex without copying the (wide) frame.
    frame = raw.set_axis(pd.RangeIndex(n), axis=0, copy=False)
    cols = _Columns(frame, mapping, report)
    used = set(mapping.column_uses())
    for name in map(str, frame.columns):
        if mapping.denial_reason(name) is not None:
            if name not in report.denied_columns_seen:
                report.denied_columns_seen.append(name)
        elif name not in used and name not in report.unmapped_columns:
            report.unmapped_columns.append(name)

    src = mapping.source
    crm_id = clean_text(cols.get(src.internal_id_column)).fillna("")
    version = crm_versions(cols.get(src.version_column), src.zone, src.max_offset)
    deleted = (
        truthy(cols.get(src.deleted_column)) if src.deleted_column else np.zeros(n, dtype=bool)
    )
    key = business_keys([cols.get(c) for c in mapping.business_key.columns], mapping.business_key)

    reason = np.full(n, None, dtype=object)
    detail = np.full(n, "", dtype=object)
    no_key = key.isna().to_numpy()
    reason[no_key] = "missing_business_key"
    detail[no_key] = "blank " + "/".join(mapping.business_key.columns)
    bad_version = version.isna().to_numpy() & ~no_key
    reason[bad_version] = "invalid_version"
    detail[bad_version] = f"{src.version_column} is not a timestamp"

    superseded_mask = _superseded(key, version, pd.isna(reason))
    superseded = int(superseded_mask.sum())
    survivors = pd.isna(reason) & ~superseded_mask
    live_pos = np.flatnonzero(survivors & ~deleted)

    review: dict[str, np.ndarray] = {
        c: np.full(n, None, dtype=object)
        for c in ("first_name", "last_name", *_REVIEW_PHONE.values(), *_REVIEW_EMAIL.values())
    }
    payload = np.full(n, "", dtype=object)
    hashes = np.full(n, "", dtype=object)
    facts: _LiveFacts | None = None
    for rows, part in _live_chunks(cols, mapping, live_pos, workers, pool):
        reason[rows] = part.reason
        detail[rows] = part.detail
        payload[rows] = part.payload
        hashes[rows] = part.content_hash
        for c, values in part.review.items():
            review[c][rows] = values
        if facts is None:
            facts = part.facts
        else:
            facts.merge(part.facts)
        del part
    if facts is not None:
        facts.apply(report)

    is_contact = survivors & pd.isna(reason)
    quarantined = pd.notna(reason)
    keys = key.to_numpy(dtype=object)
    ids = crm_id.to_numpy(dtype=object)
    quarantine = pd.DataFrame(
        {
            "business_key": keys[quarantined],
            "crm_id": ids[quarantined],
            "crm_version": pd.array(version.to_numpy(dtype=object)[quarantined], dtype="Int64"),
            "reason": reason[quarantined],
            "detail": detail[quarantined],
        },
        columns=QUARANTINE_COLUMNS,
    )
    # Column by column, each full-window array let go once taken (a million rows each).
    columns: dict[str, np.ndarray] = {
        "business_key": keys[is_contact],
        "crm_id": ids[is_contact],
        "crm_version": version.to_numpy(dtype="int64", na_value=0)[is_contact],
        "is_deleted": deleted[is_contact],
    }
    del keys, ids, key, crm_id, reason, detail
    columns["content_hash"] = hashes[is_contact]
    del hashes
    columns["payload"] = payload[is_contact]
    del payload
    for c in CONTACT_COLUMNS[6:]:
        columns[c] = review.pop(c)[is_contact]
    # Fresh arrays: no consolidated copy of the whole frame.
    contacts = pd.DataFrame(columns, columns=CONTACT_COLUMNS, copy=False)
    del columns
    report.contacts = len(contacts)
    report.tombstones = int(contacts["is_deleted"].sum())
    report.live = report.contacts - report.tombstones
    report.quarantined = len(quarantine)
    report.superseded = superseded
    report.quarantine_reasons = dict(Counter(quarantine["reason"].tolist()))
    return NormalizationResult(
        contacts=contacts, quarantine=quarantine, superseded=superseded, report=report
    )


def _superseded(key: pd.Series, version: pd.Series, candidate: np.ndarray) -> np.ndarray:
    """Rows that are older versions of a key among the `candidate` rows: the latest version per
    key wins, and among equal versions the row that comes later."""
    superseded = np.zeros(len(candidate), dtype=bool)
    candidates = np.flatnonzero(candidate)
    if len(candidates):
        k_codes, _ = factorize(key.to_numpy(dtype=object)[candidates])
        v = version.to_numpy(dtype="int64", na_value=0)[candidates]
        # By key, then version, then position: the last row of each key wins.
        order = np.lexsort((candidates, v, k_codes))
        k_sorted = k_codes[order]
        dup = np.empty(len(order), dtype=bool)
        dup[:-1] = k_sorted[:-1] == k_sorted[1:]
        dup[-1] = False
        superseded[candidates[order[dup]]] = True
    return superseded


def _live_chunks(
    cols: _Columns,
    mapping: Mapping,
    live_pos: np.ndarray,
    workers: int,
    pool: ProcessPoolExecutor | None,
) -> Iterator[tuple[np.ndarray, _ChunkResult]]:
    """`_normalize_live` over `live_pos` in chunks of at most `CHUNK_ROWS` rows, yielded in row
    order with their positions; over `pool` (`workers` processes) when there are at least
    `PARALLEL_MIN_ROWS` rows."""
    m = len(live_pos)
    if not m:
        return
    parallel = pool is not None and m >= PARALLEL_MIN_ROWS
    count = -(-m // CHUNK_ROWS)
    if parallel:
        count = -(-count // workers) * workers  # equal shares for the processes
    size = -(-m // count)
    chunks = [live_pos[a : a + size] for a in range(0, m, size)]
    sources = cols.arrays()

    def chunk_args(rows: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        return {name: values[rows] for name, values in sources.items()}, len(rows)

    if pool is None or not parallel:
        for rows in chunks:
            yield rows, _live_chunk(*chunk_args(rows), mapping)
        return
    # At most one chunk waits per process: the pickled chunks in flight cost memory.
    pending: list[tuple[np.ndarray, Future[_ChunkResult]]] = []
    for rows in chunks:
        pending.append((rows, pool.submit(_live_chunk, *chunk_args(rows), mapping)))
        if len(pending) > workers:
            done, future = pending.pop(0)
            yield done, _share_raw(future.result(), done, sources, mapping)
    for done, future in pending:
        yield done, _share_raw(future.result(), done, sources, mapping)


def _share_raw(
    part: _ChunkResult, rows: np.ndarray, sources: dict[str, np.ndarray], mapping: Mapping
) -> _ChunkResult:
    """The review e-mails a worker returns that equal the raw value, as the raw (caller's) str
    objects rather than the worker's copies, as in one process: the same values in less memory."""
    for eslot, column in mapping.emails.items():
        got = part.review.get(_REVIEW_EMAIL[eslot])
        raw_values = sources.get(column)
        if got is None or raw_values is None:
            continue
        present = np.flatnonzero(pd.notna(got))
        original = raw_values[rows[present]]
        same = [type(a) is str and a == b for a, b in zip(original, got[present], strict=True)]
        if any(same):
            got[present[same]] = original[same]
    return part


def _live_chunk(arrays: dict[str, np.ndarray], n: int, mapping: Mapping) -> _ChunkResult:
    """`_normalize_live` of one chunk of live rows (runs in a worker process when parallel)."""
    return _normalize_live(_ChunkColumns(arrays, n, mapping), mapping)


def _normalize_live(cols: _ChunkColumns, mapping: Mapping) -> _ChunkResult:
    """Payload JSON, content hash, quarantine reason and detail for each live row of a chunk.

    Column work runs once per distinct value (`per_distinct`) and yields each field's JSON
    member (`,"key":literal` or ""); each row's payload is then joined once.
    """
    m = cols.n
    reason = np.full(m, None, dtype=object)
    detail = np.full(m, "", dtype=object)
    top: dict[str, np.ndarray] = {}  # target -> JSON member per row
    facts = _LiveFacts()
    review: dict[str, np.ndarray] = {}

    # Names and other scalar fields.
    names: dict[str, np.ndarray] = {}
    for target, column in mapping.fields.items():
        values, long_mask, member = per_distinct(
            cols.get(column), _limited_text(target, SCALAR_FIELD_LIMITS[target])
        )
        _count(facts.truncated, target, long_mask.sum())
        names[target] = values
        top[target] = member
    for target, col in (("firstName", "first_name"), ("lastName", "last_name")):
        if target in names:
            review[col] = names[target]

    # Country: the record's region for phones, ISO code for the address.
    if mapping.country_column:
        aliases = mapping.country_aliases

        def _country(u: pd.Series) -> tuple[np.ndarray, np.ndarray]:
            return (
                clean_text(u).to_numpy(dtype=object),
                resolve_countries(u, aliases).to_numpy(dtype=object),
            )

        country_col = cols.get(mapping.country_column)
        raw_country, countries = per_distinct(country_col, _country)
        unresolved = pd.notna(raw_country) & pd.isna(countries)
        facts.countries_unresolved += int(unresolved.sum())
        facts.country_samples = list(pd.unique(raw_country[unresolved])[:_SAMPLES])
    else:
        countries = np.full(m, None, dtype=object)
    regions = pd.Series(np.where(pd.isna(countries), mapping.default_country, countries))

    # Phones: E.164, the same number in two slots kept once (first slot wins).
    kept: list[tuple[Any, Any]] = []
    any_phone = np.zeros(m, dtype=bool)
    for slot, column in mapping.phones.items():
        raw_col = cols.get(column)
        # One process per chunk: a chunk is far below `phones.PARALLEL_MIN_DISTINCT`.
        dp = distinct_phones(raw_col, regions, mapping.default_country, workers=1)
        e164 = dp.expand("e164")
        ext = dp.expand("extension")
        why = dp.expand("reason")
        valid: np.ndarray = np.asarray(pd.notna(e164), dtype=bool)
        stats = {"present": int((pd.notna(why) | valid).sum()), "valid": int(valid.sum())}
        dup = np.zeros(m, dtype=bool)
        for prev_e, prev_x in kept:
            dup |= valid & (prev_e == e164) & (pd.isna(prev_x) & pd.isna(ext) | (prev_x == ext))
        stats["duplicate"] = int(dup.sum())
        keep: np.ndarray = valid & ~dup
        kept.append((_kept(keep, e164), _kept(keep, ext)))
        any_phone |= keep
        facts.phones[slot] = (
            stats,
            {
                r: (count, _sample(raw_col, why == r, mask_phone))
                for r, count in Counter(why[pd.notna(why)].tolist()).items()
            },
        )
        review[_REVIEW_PHONE[slot]] = _kept(keep, e164)
        member = np.full(m, "", dtype=object)
        if keep.any():
            # The PhoneNumber object once per distinct number, broadcast to the rows keeping it.
            table = dp.table
            literal = _join_object(
                [
                    _fragments("display", json_string(table["e164"]).to_numpy(object)),
                    _fragments(
                        "extension",
                        [None if x is None else str(x) for x in table["extension"].tolist()],
                    ),
                    _fragments(
                        "normalizationCountryCode",
                        json_string(table["region"].where(table["e164"].notna(), None)).to_numpy(
                            object
                        ),
                    ),
                ],
                len(table),
            )
            member_u = np.append(_fragments(slot, literal), np.array([""], dtype=object))
            member = np.where(keep, member_u[dp.codes], "")
        top[slot] = member

    # E-mails.
    any_email = np.zeros(m, dtype=bool)
    for eslot, column in mapping.emails.items():
        raw_col = cols.get(column)
        res = normalize_emails(raw_col, EMAIL_MAX_LENGTH)
        email = res["email"].to_numpy(dtype=object)
        why = res["reason"].to_numpy(dtype=object)
        valid = pd.notna(email)
        any_email |= valid
        ereasons = Counter(why[pd.notna(why)].tolist())
        text = as_text(raw_col) if ereasons else raw_col
        facts.emails[eslot] = (
            int((valid | pd.notna(why)).sum()),
            int(valid.sum()),
            {r: (count, _sample(text, why == r, mask_email)) for r, count in ereasons.items()},
        )
        review[_REVIEW_EMAIL[eslot]] = email
        top[eslot] = _fragments(eslot, json_string(pd.Series(email, dtype=object)).to_numpy(object))

    # Address.
    addr_parts: list[np.ndarray] = []
    for atarget, column in sorted(mapping.address.items()):
        addr_key = str(atarget)
        resolve = addr_key == "countryCode" and column == mapping.country_column
        _, long_mask, member = per_distinct(
            cols.get(column),
            _limited_text(
                addr_key,
                ADDRESS_FIELD_LIMITS[addr_key],
                # The ISO code when the CRM's spelling is known, else the CRM's text as is.
                country_aliases=mapping.country_aliases if resolve else None,
            ),
        )
        _count(facts.truncated, f"address.{addr_key}", long_mask.sum())
        addr_parts.append(member)
    if addr_parts:
        top["address"] = _join_object(addr_parts, m, key="address")

    # Custom fields.
    custom_parts: list[np.ndarray] = []
    field_quarantine: dict[str, np.ndarray] = {}
    for f in sorted(mapping.custom_field_list(), key=lambda f: f.key):
        outcome = coerce_custom_field(cols.get(f.spec.column), f.spec)
        ctarget = f"customFields.{f.key}"
        truncated = outcome.too_long & pd.notna(outcome.json)
        _count(facts.truncated, ctarget, truncated.sum())
        rejected = (outcome.invalid | outcome.too_long) & ~truncated
        _count(facts.rejected, ctarget, rejected.sum())
        if outcome.quarantine.any():
            field_quarantine[f.key] = outcome.quarantine
        custom_parts.append(_fragments(f.key, outcome.json))
    if custom_parts:
        top["customFields"] = _join_object(custom_parts, m, key="customFields")

    # Quarantine: one reason per row, in this order.
    has_name = np.zeros(m, dtype=bool)
    for target in ("firstName", "lastName"):
        if target in names:
            has_name |= pd.notna(names[target])
    if not mapping.fields.keys() & {"firstName", "lastName"}:
        has_name[:] = True  # a registry without names cannot require them
    open_ = pd.isna(reason)
    r = open_ & ~has_name
    reason[r], detail[r] = "missing_name", "no first or last name"
    open_ = pd.isna(reason)
    r = open_ & ~any_phone & ~any_email
    reason[r], detail[r] = "no_contact_point", "no valid phone or e-mail"
    for fkey, mask in field_quarantine.items():
        r = pd.isna(reason) & mask
        reason[r], detail[r] = "custom_field_rejected", f"customFields.{fkey} broke its rule"

    members = [top.pop(k) for k in sorted(top)]
    payload = _join_object(members, m)
    del members
    payload[pd.isna(payload)] = "{}"
    ok = pd.isna(reason)
    payload[~ok] = ""
    content_hash = np.full(m, "", dtype=object)
    content_hash[ok] = [hashlib.sha256(p.encode("utf-8")).hexdigest() for p in payload[ok].tolist()]
    facts.blocked, facts.missing = cols.blocked, cols.missing
    return _ChunkResult(payload, content_hash, reason, detail, review, facts)


def _limited_text(key: str, limit: int, *, country_aliases: dict[str, str] | None = None) -> Any:
    """The chain of a text field, for `per_distinct`: cleaned values, over-limit mask (values
    truncated to the limit) and the JSON member. With `country_aliases`, a country column: the
    ISO code where the spelling is known."""

    def chain(u: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = plain_text(u)
        if country_aliases is not None:
            countries = resolve_countries(u, country_aliases)
            values = countries.where(countries.notna(), values)
        long_mask = over_limit(values, limit)
        if long_mask.any():
            values = values.copy()
            values[long_mask] = [truncate_one(v, limit) for v in values[long_mask]]
        member = _fragments(key, json_string(values).to_numpy(dtype=object))
        return values.to_numpy(dtype=object), long_mask, member

    return chain
