"""The normalized contact frame, declared once: the contract between normalization and diff.

`NormalizedContacts` is the pandera model of `NormalizationResult.contacts` (one row per business
key); `QuarantinedRows` of `NormalizationResult.quarantine`; `ContactSnapshot` of the sync-state
snapshot `diff` compares against. Checks are vectorised column operations so that validating a
million rows stays a small share of a run. Validate with `validate_contacts(frame)` (lazy: every
failure is collected, then one `pandera.errors.SchemaErrors` is raised).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype
from pandera import dtypes
from pandera.engines import pandas_engine
from pandera.typing import Series

QUARANTINE_REASONS = (
    "missing_business_key",
    "invalid_version",
    "missing_name",
    "no_contact_point",
    "custom_field_rejected",
)


@pandas_engine.Engine.register_dtype
@dtypes.immutable
class Text(pandas_engine.NpString):
    """`str` (object column of str values, nulls allowed where the field is nullable), checked by
    one vectorised type inference instead of pandera's `isinstance` per value. A column that
    fails is checked value by value by pandera's own `str`, so failure cases read the same."""

    def check(self, pandera_dtype: Any, data_container: Any = None) -> Any:
        if (
            data_container is not None
            and getattr(data_container, "dtype", None) == np.dtype(object)
            and infer_dtype(data_container, skipna=True) in ("string", "empty")
        ):
            return True
        return super().check(pandera_dtype, data_container)


class NormalizedContacts(pa.DataFrameModel):
    """One row per business key; tombstones carry only identity (empty payload and hash)."""

    business_key: Series[Text] = pa.Field(
        unique=True, str_length={"min_value": 1, "max_value": 255}
    )
    crm_id: Series[Text]
    crm_version: Series[int] = pa.Field(ge=0)
    is_deleted: Series[bool]
    content_hash: Series[Text]
    payload: Series[Text]
    first_name: Series[Text] = pa.Field(nullable=True)
    last_name: Series[Text] = pa.Field(nullable=True)
    work_phone: Series[Text] = pa.Field(nullable=True, str_startswith="+")
    cell_phone: Series[Text] = pa.Field(nullable=True, str_startswith="+")
    home_phone: Series[Text] = pa.Field(nullable=True, str_startswith="+")
    other_phone: Series[Text] = pa.Field(nullable=True, str_startswith="+")
    work_email: Series[Text] = pa.Field(nullable=True, str_contains="@")
    personal_email: Series[Text] = pa.Field(nullable=True, str_contains="@")
    other_email: Series[Text] = pa.Field(nullable=True, str_contains="@")

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

    business_key: Series[Text] = pa.Field(nullable=True)
    crm_id: Series[Text]
    crm_version: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    reason: Series[Text] = pa.Field(isin=list(QUARANTINE_REASONS))
    detail: Series[Text]

    class Config:
        strict = True
        ordered = True


class ContactSnapshot(pa.DataFrameModel):
    """What the sync-state store holds: one row per business key."""

    business_key: Series[Text] = pa.Field(unique=True)
    contact_id: Series[Text] = pa.Field(nullable=True)
    content_hash: Series[Text] = pa.Field(nullable=True)
    crm_version: Series[int]
    deleted: Series[bool]

    class Config:
        strict = "filter"


def validate_contacts(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate the normalized frame lazily; raise `pandera.errors.SchemaErrors` on failure."""
    return NormalizedContacts.validate(frame, lazy=True)


def validate_quarantine(frame: pd.DataFrame) -> pd.DataFrame:
    return QuarantinedRows.validate(frame, lazy=True)
