"""Custom field values typed as the Genesys contact schema declares them.

`coerce_custom_field(raw, spec)` turns a raw CRM column into JSON literals of the field's type:
checkbox -> true/false, integer -> int, number -> float, date -> "YYYY-MM-DD", datetime ->
"YYYY-MM-DDTHH:MM:SS.sssZ", tag -> list of strings, dropdown -> one of the options, text types ->
cleaned (HTML stripped) strings within the type's limit. A value that is not of the type, or too
long, is handled by the field's rule: `truncate`, `reject` (the value is dropped, the contact still
syncs) or `quarantine` (the whole row). Never raises on any input.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crm_genesys.contacts.mapping import INTEGER_MAX, INTEGER_MIN, TAG_MAX_ITEMS, CustomFieldSpec
from crm_genesys.contacts.text import (
    as_text,
    clean_one,
    clean_text,
    json_string,
    over_limit,
    plain_text,
    to_text,
    truncate_one,
)


@dataclass
class FieldOutcome:
    """Per row: the JSON literal to send (or None) and what the rules did."""

    json: np.ndarray  # object: JSON literal or None
    invalid: np.ndarray  # bool: a value was present but not of the type
    too_long: np.ndarray  # bool: a value was over the limit (truncated, rejected or quarantined)
    quarantine: np.ndarray  # bool: the field's rule sends the whole row to quarantine


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on", "x", "checked"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", "unchecked"})
_INT_RE = re.compile(r"\s*([+-]?\d{1,19})(?:\.0*)?\s*")
_DATE_RE = re.compile(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ][0-9:.,+\-Z ]*)?\s*")
_URL_RE = re.compile(r"(?i)https?://[^\s/?#<>\"]+[^\s<>\"]*")
_BARE_HOST_RE = re.compile(
    r"(?i)(?:www\.)?[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)+(?:/\S*)?"
)
_TAG_SPLIT = re.compile(r"[,;|\n\x1f]")


def _empty(n: int) -> FieldOutcome:
    return FieldOutcome(
        json=np.full(n, None, dtype=object),
        invalid=np.zeros(n, dtype=bool),
        too_long=np.zeros(n, dtype=bool),
        quarantine=np.zeros(n, dtype=bool),
    )


def _map_unique(text: pd.Series, fn: Any) -> np.ndarray:
    """`fn` over the distinct non-null values of `text` (object), broadcast back."""
    out = np.full(len(text), None, dtype=object)
    present = text.notna().to_numpy()
    if present.any():
        codes, uniques = pd.factorize(text[present])
        mapped = np.empty(len(uniques), dtype=object)
        mapped[:] = [fn(u) for u in uniques]
        out[present] = mapped[codes]
    return out


def _text_like(raw: pd.Series, spec: CustomFieldSpec) -> pd.Series:
    keep_newlines = spec.type == "textarea"
    if spec.strips_html:
        return plain_text(raw, keep_newlines=keep_newlines)
    return clean_text(as_text(raw), keep_newlines=keep_newlines)


def _apply_length(values: pd.Series, spec: CustomFieldSpec, out: FieldOutcome) -> pd.Series:
    limit = spec.limit
    if limit is None:
        return values
    long_mask = over_limit(values, limit)
    if not long_mask.any():
        return values
    out.too_long |= long_mask
    values = values.copy()
    rule = spec.too_long_rule
    if rule == "truncate":
        values[long_mask] = [truncate_one(v, limit) for v in values[long_mask].to_numpy(object)]
    else:
        values[long_mask] = None
        if rule == "quarantine":
            out.quarantine |= long_mask
    return values


def _reject_invalid(bad: np.ndarray, spec: CustomFieldSpec, out: FieldOutcome) -> None:
    out.invalid |= bad
    if spec.on_invalid == "quarantine":
        out.quarantine |= bad


def _checkbox(value: str) -> str | None:
    v = value.strip().casefold()
    if v in _TRUE:
        return "true"
    if v in _FALSE:
        return "false"
    return None


def _integer(spec: CustomFieldSpec) -> Any:
    lo = max(INTEGER_MIN, spec.minimum if spec.minimum is not None else INTEGER_MIN)
    hi = min(INTEGER_MAX, spec.maximum if spec.maximum is not None else INTEGER_MAX)

    def conv(value: str) -> str | None:
        m = _INT_RE.fullmatch(value)
        if m is None:
            return None
        n = int(m.group(1))
        return str(n) if lo <= n <= hi else None

    return conv


def _date(value: str) -> str | None:
    m = _DATE_RE.fullmatch(value)
    if m is None:
        return None
    try:
        d = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None
    return f'"{d.isoformat()}"'


def _tag_items(value: Any) -> list[str]:
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        parts = [to_text(v) for v in value]
        raw = "\x1f".join(p for p in parts if p)
    else:
        raw = to_text(value) or ""
    items: list[str] = []
    for piece in _TAG_SPLIT.split(raw):
        item = clean_one(piece, keep_newlines=False)
        if item and item not in items:
            items.append(item)
    return items


def coerce_custom_field(raw: pd.Series, spec: CustomFieldSpec) -> FieldOutcome:
    """The field's JSON literals for every row of `raw` (see the module docstring)."""
    n = len(raw)
    out = _empty(n)
    if n == 0:
        return out
    kind = spec.type
    if kind in ("text", "textarea", "identifier"):
        values = _apply_length(_text_like(raw, spec), spec, out)
        out.json = json_string(values).to_numpy(dtype=object)
        return out
    if kind == "url":
        text = clean_text(as_text(raw))
        present = text.notna().to_numpy()
        ok = text.str.fullmatch(_URL_RE).to_numpy(dtype=bool, na_value=False)
        bare = (
            ~ok & present & text.str.fullmatch(_BARE_HOST_RE).to_numpy(dtype=bool, na_value=False)
        )
        values = text.copy()
        if bare.any():
            # A host without a scheme is a link everyone reads as https; anything else is invalid.
            values[bare] = "https://" + text[bare]
        bad = present & ~ok & ~bare
        values[bad] = None
        _reject_invalid(bad, spec, out)
        values = _apply_length(values, spec, out)
        out.json = json_string(values).to_numpy(dtype=object)
        return out
    if kind == "dropdown":
        options = {o.casefold(): o for o in spec.options or []}
        text = clean_text(as_text(raw))
        mapped = _map_unique(text, lambda v: options.get(v.casefold()))
        bad = text.notna().to_numpy() & pd.isna(mapped)
        _reject_invalid(bad, spec, out)
        out.json = json_string(pd.Series(mapped, index=raw.index, dtype=object)).to_numpy(object)
        return out
    text = as_text(raw) if kind != "tag" else raw
    present = (
        pd.notna(text).to_numpy()
        if kind != "tag"
        else np.array([_tag_present(v) for v in raw.to_numpy(dtype=object)], dtype=bool)
    )
    if kind == "checkbox":
        out.json = _map_unique(text, _checkbox)
    elif kind == "integer":
        out.json = _map_unique(text, _integer(spec))
    elif kind == "number":
        out.json = _numbers(text, spec)
    elif kind == "date":
        out.json = _map_unique(text, _date)
    elif kind == "datetime":
        out.json = _datetimes(text)
    elif kind == "tag":
        out.json = _tags(raw, spec, out)
    bad = present & pd.isna(out.json)
    if kind != "tag":
        _reject_invalid(bad, spec, out)
    return out


def _tag_present(value: Any) -> bool:
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return len(value) > 0
    return to_text(value) is not None and bool((to_text(value) or "").strip())


def _tags(raw: pd.Series, spec: CustomFieldSpec, out: FieldOutcome) -> np.ndarray:
    limit = spec.limit or 100
    max_items = spec.max_items or TAG_MAX_ITEMS
    rule = spec.too_long_rule
    result = np.full(len(raw), None, dtype=object)
    for i, value in enumerate(raw.to_numpy(dtype=object)):
        if not _tag_present(value):
            continue
        items = _tag_items(value)
        long_items = [t for t in items if len(t.encode("utf-16-le")) // 2 > limit]
        if long_items or len(items) > max_items:
            out.too_long[i] = True
            if rule == "quarantine":
                out.quarantine[i] = True
                continue
            if rule == "truncate":
                items = [truncate_one(t, limit) for t in items]
            else:
                items = [t for t in items if t not in long_items]
            items = list(dict.fromkeys(items))[:max_items]
        if items:
            result[i] = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
    return result


def _numbers(text: pd.Series, spec: CustomFieldSpec) -> np.ndarray:
    nums = pd.to_numeric(text.str.strip(), errors="coerce").astype("float64")
    arr = nums.to_numpy(dtype="float64", na_value=np.nan)
    ok = np.isfinite(arr)
    if spec.minimum is not None:
        ok &= arr >= spec.minimum
    if spec.maximum is not None:
        ok &= arr <= spec.maximum
    out = np.full(len(arr), None, dtype=object)
    # repr(float) is exactly how json.dumps writes a float.
    out[ok] = [repr(float(v)) for v in arr[ok]]
    return out


def _datetimes(text: pd.Series) -> np.ndarray:
    out = np.full(len(text), None, dtype=object)
    present = text.notna().to_numpy()
    if not present.any():
        return out
    parsed = pd.to_datetime(text[present].str.strip(), format="ISO8601", utc=True, errors="coerce")
    good = parsed.notna().to_numpy()
    stamps = parsed[good].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.slice(0, 23)
    pos = np.flatnonzero(present)[good]
    out[pos] = ('"' + stamps + 'Z"').to_numpy(dtype=object)
    return out
