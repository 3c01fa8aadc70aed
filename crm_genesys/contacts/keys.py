"""Business keys, CRM versions and tombstone flags: what identifies and orders a CRM record.

- `business_keys(columns, spec)`: the configured columns' cleaned values joined with the
  separator (a separator or backslash inside a value is escaped, so different records can never
  join to the same key). Never the CRM's internal id, so a CRM re-index changes nothing. A key
  longer than 255 UTF-16 units (Genesys' ExternalId limit) becomes
  `<prefix>:<first 80 chars>#<sha256>`: still readable, still unique, at most 255 units.
  A blank key column gives no key (None).
- `crm_versions(values, zone)`: the instants of the version column (microseconds since the Unix
  epoch), read by the one parser of CRM times (`crm.instants.parse_instants`): datetimes and
  ISO-8601 text, each value with its own offset, naive ones in the CRM's zone. Anything else
  (numbers, garbage, impossible dates) is NA: such a row cannot be ordered.
- `truthy(values)`: tombstone flags from 1/0, true/false, yes/no, t/f, y/n (any case), booleans.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, timedelta, tzinfo

import numpy as np
import pandas as pd

from crm_genesys.contacts.mapping import BusinessKeySpec
from crm_genesys.contacts.text import clean_text, distinct_text, utf16_length
from crm_genesys.crm.instants import MAX_OFFSET, parse_instants

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


def crm_versions(
    values: pd.Series, zone: tzinfo = UTC, max_offset: timedelta = MAX_OFFSET
) -> pd.Series:
    """Microseconds since epoch (nullable Int64), NA where the value is not a point in time;
    `zone` is the CRM's zone for values without an offset and `max_offset` the largest offset
    read (the mapping's `source.timezone` and `source.max_offset_hours`)."""
    return parse_instants(values, zone, max_offset)


def truthy(values: pd.Series) -> np.ndarray:
    """Boolean tombstone flags; blank, NaN and unknown words are False."""
    d = distinct_text(values, force=True)
    assert d is not None  # forced: always factorized
    flags = np.array(
        [u is not None and str(u).strip().casefold() in _TRUE for u in d.values.tolist()],
        dtype=np.bool_,
    )
    return d.expand(flags)
