"""Errors of reading a CRM: a short hierarchy, so callers catch what they mean.

```
CrmError
└── MissingColumnsError    a column the mapping (or the caller) reads is not in the CRM table
```
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence


class CrmError(Exception):
    """Base of every error a CRM source raises on purpose."""


class MissingColumnsError(CrmError):
    """Columns that must be read are absent from the CRM table (a typo in the mapping, a column
    renamed in the CRM). Raised before any row is read, so nothing of the window is sent.

    `missing` maps each absent column to where it is used (`phones.workPhone
    (mappings/crm.yaml:31)`); `available` holds the table's columns, from which the message
    suggests the closest name.
    """

    def __init__(
        self, table: str, missing: Mapping[str, Sequence[str]], available: Sequence[str]
    ) -> None:
        self.table = table
        self.missing = {column: list(uses) for column, uses in missing.items()}
        self.available = list(available)
        lines = [
            f"CRM table {table!r} has no column {column!r}, which is read by "
            + ", ".join(uses or ["the caller"])
            + _suggestion(column, self.available)
            for column, uses in self.missing.items()
        ]
        super().__init__(
            "\n".join(lines)
            + "\nNothing was read: correct the mapping (or the table) and run the window again."
        )


def _suggestion(column: str, available: Sequence[str]) -> str:
    close = difflib.get_close_matches(column, available, n=1, cutoff=0.6)
    if not close:
        folded = {c.casefold(): c for c in available}
        close = [folded[column.casefold()]] if column.casefold() in folded else []
    return f" (the table has {close[0]!r}: renamed?)" if close else ""
