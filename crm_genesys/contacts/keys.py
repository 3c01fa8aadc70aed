"""Business keys, CRM versions and tombstone flags: what identifies and orders a CRM record.

- `business_keys(columns, spec)`: the configured columns' cleaned values joined with the
  separator (a separator or backslash inside a value is escaped, so different records can never
  join to the same key). Never the CRM's internal id, so a CRM re-index changes nothing. A key
  longer than 255 UTF-16 units (Genesys' ExternalId limit) becomes
  `<prefix>:<first 80 chars>#<sha256>`: still readable, still unique, at most 255 units.
  A blank key column gives no key (None).
- `crm_versions(values)`: microseconds since the Unix epoch (UTC) of the version column, from the
  demo CRM's `YYYY-MM-DD HH:MM:SS.ffffff` text, any ISO-8601 text, or datetimes (naive = UTC).
  Anything else (numbers, garbage, dates pandas cannot hold) is None: such a row cannot be ordered.
- `truthy(values)`: tombstone flags from 1/0, true/false, yes/no, t/f, y/n (any case), booleans.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from crm_genesys.contacts.mapping import BusinessKeySpec
from crm_genesys.contacts.text import clean_text, distinct_text, utf16_length

KEY_MAX_LENGTH = 255
_HEAD = 80  # characters of a hashed key kept readable (80 astral chars = 160 units, + 66)

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on", "deleted", "x"})


def _escape(values: pd.Series, separator: str) -> pd.Series:
    return values.str.replace("\\", "\\\\", regex=False).str.replace(
        separator, "\\" + separator, regex=False
    )


def business_keys(columns: list[pd.Series], spec: BusinessKeySpec) -> pd.Series:
    """One key per row (object str, or None when any key column is blank)."""
    if not columns:
        raise ValueError("business_keys needs at least one column")
    parts = [clean_text(c) for c in columns]
    missing = np.zeros(len(parts[0]), dtype=bool)
    for p in parts:
        missing |= p.isna().to_numpy()
    if len(parts) == 1:
        key = parts[0]
    else:
        key = _escape(parts[0], spec.separator)
        for p in parts[1:]:
            key = key + spec.separator + _escape(p, spec.separator)
    key = key.where(~missing, None)
    long_mask = (utf16_length(key.fillna("")) > KEY_MAX_LENGTH).to_numpy(dtype=bool)
    if long_mask.any():
        key = key.copy()
        key[long_mask] = [hashed_key(v, spec.prefix) for v in key[long_mask].to_numpy(object)]
    return key


def hashed_key(value: str, prefix: str) -> str:
    """The readable, bounded form of an over-long key."""
    digest = hashlib.sha256(value.encode("utf-8", errors="surrogatepass")).hexdigest()
    return f"{prefix}:{value[:_HEAD]}#{digest}"


def crm_versions(values: pd.Series) -> pd.Series:
    """Microseconds since epoch (nullable Int64), None where the value is not a point in time."""
    n = len(values)
    out = pd.array(np.zeros(n, dtype="int64"), dtype="Int64")
    if n == 0:
        return pd.Series(out, index=values.index)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = pd.to_datetime(values, utc=True)
    else:
        obj = values.astype(object)
        if infer_dtype(obj, skipna=True) == "string":
            # Text only (the usual case): the checks below, without a pass per value.
            text = obj.where(obj.notna(), None)
            is_str = text.notna().to_numpy()
        else:
            # Numbers are not versions here (seconds? millis? a counter?): refuse, not guess.
            kinds = np.array(
                [
                    isinstance(v, (int, float, np.integer, np.floating, bool))
                    for v in obj.to_numpy()
                ],
                dtype=bool,
            )
            text = obj.where(~kinds, None)
            is_str = np.array([isinstance(v, str) for v in text.to_numpy()], dtype=bool)
        if is_str.any():
            text = text.copy()
            text[is_str] = text[is_str].str.strip()
        try:
            stamps = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        except (TypeError, ValueError, OverflowError):
            stamps = pd.to_datetime(
                pd.Series([_one_stamp(v) for v in text.to_numpy()], index=values.index),
                utc=True,
                errors="coerce",
            )
    valid = stamps.notna().to_numpy()
    micros = np.zeros(n, dtype="int64")
    if valid.any():
        naive = stamps[valid].dt.tz_convert("UTC").dt.tz_localize(None)
        micros[valid] = naive.to_numpy(dtype="datetime64[us]").astype("int64")
    result = pd.Series(pd.array(micros, dtype="Int64"), index=values.index)
    result[~valid] = pd.NA
    return result


def _one_stamp(value: object) -> pd.Timestamp | None:
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if ts is pd.NaT:
        return None
    return ts if ts.tzinfo else ts.tz_localize("UTC")


def truthy(values: pd.Series) -> np.ndarray:
    """Boolean tombstone flags; blank, NaN and unknown words are False."""
    d = distinct_text(values, force=True)
    assert d is not None  # forced: always factorized
    flags = np.array(
        [u is not None and str(u).strip().casefold() in _TRUE for u in d.values.tolist()],
        dtype=np.bool_,
    )
    return d.expand(flags)
