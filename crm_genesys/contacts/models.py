"""The normalized contact frame, declared once: the contract between normalization and diff.

`NormalizedContacts` is the pandera model of `NormalizationResult.contacts` (one row per business
key); `QuarantinedRows` of `NormalizationResult.quarantine`; `ContactSnapshot` of the sync-state
snapshot `diff` compares against. Checks are vectorised column operations so that validating a
million rows stays a small share of a run. Validate with `validate_contacts(frame)` (lazy: every
failure is collected, then one `pandera.errors.SchemaErrors` is raised).
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

QUARANTINE_REASONS = (
    "missing_business_key",
    "invalid_version",
    "missing_name",
    "no_contact_point",
    "custom_field_rejected",
)


class NormalizedContacts(pa.DataFrameModel):
    """One row per business key; tombstones carry only identity (empty payload and hash)."""

    business_key: Series[str] = pa.Field(unique=True, str_length={"min_value": 1, "max_value": 255})
    crm_id: Series[str]
    crm_version: Series[int] = pa.Field(ge=0)
    is_deleted: Series[bool]
    content_hash: Series[str]
    payload: Series[str]
    first_name: Series[str] = pa.Field(nullable=True)
    last_name: Series[str] = pa.Field(nullable=True)
    work_phone: Series[str] = pa.Field(nullable=True, str_startswith="+")
    cell_phone: Series[str] = pa.Field(nullable=True, str_startswith="+")
    home_phone: Series[str] = pa.Field(nullable=True, str_startswith="+")
    other_phone: Series[str] = pa.Field(nullable=True, str_startswith="+")
    work_email: Series[str] = pa.Field(nullable=True, str_contains="@")
    personal_email: Series[str] = pa.Field(nullable=True, str_contains="@")
    other_email: Series[str] = pa.Field(nullable=True, str_contains="@")

    class Config:
        strict = True
        ordered = True

    @pa.dataframe_check(error="a tombstone has an empty payload and hash; a live row has both")
    def payload_matches_liveness(cls, df: pd.DataFrame) -> pd.Series:
        empty = df["payload"].str.len().eq(0) & df["content_hash"].str.len().eq(0)
        full = df["payload"].str.startswith("{") & df["content_hash"].str.len().gt(0)
        return df["is_deleted"].where(empty, ~df["is_deleted"] & full)


class QuarantinedRows(pa.DataFrameModel):
    """Rows that cannot be synced, one reason each."""

    business_key: Series[str] = pa.Field(nullable=True)
    crm_id: Series[str]
    crm_version: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    reason: Series[str] = pa.Field(isin=list(QUARANTINE_REASONS))
    detail: Series[str]

    class Config:
        strict = True
        ordered = True


class ContactSnapshot(pa.DataFrameModel):
    """What the sync-state store holds: one row per business key."""

    business_key: Series[str] = pa.Field(unique=True)
    contact_id: Series[str] = pa.Field(nullable=True)
    content_hash: Series[str] = pa.Field(nullable=True)
    crm_version: Series[int]
    deleted: Series[bool]

    class Config:
        strict = "filter"


def validate_contacts(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate the normalized frame lazily; raise `pandera.errors.SchemaErrors` on failure."""
    return NormalizedContacts.validate(frame, lazy=True)


def validate_quarantine(frame: pd.DataFrame) -> pd.DataFrame:
    return QuarantinedRows.validate(frame, lazy=True)
