"""Per-distinct-value processing gives exactly what value-by-value processing gives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.contacts import text
from crm_genesys.contacts.keys import truthy
from crm_genesys.contacts.models import validate_contacts
from crm_genesys.contacts.text import clean_text, factorize, json_string, strip_html

_POOL = [
    None, np.nan, "", "  ", "\x00abc", "\x00xyz", "a\x00", True, False, 1, 1.0, 0, -0.0, 2.5,
    10**17, 1e17, b"ab", "<b>x</b>&amp;", " Ann ", "Ann", "a\tb\nc", "\u200bz", "e\u0301",
    "\ud800", "😀", "x" * 40, ["a"], "yes", "1",
]  # fmt: skip


def test_factorize_keeps_strings_apart_after_a_nul() -> None:
    # pandas' string hash table cuts at NUL: "\x00abc", "\x00xyz" and "" would be one value.
    codes, uniques = factorize(np.array(["\x00abc", "", "\x00xyz", None, "", "a"], dtype=object))
    assert codes.tolist() == [0, 1, 2, -1, 1, 3]
    assert uniques.tolist() == ["\x00abc", "", "\x00xyz", "a"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(_POOL), min_size=1, max_size=60))
def test_distinct_path_equals_value_by_value(values: list[Any]) -> None:
    col = pd.Series(values, dtype=object)
    saved = text.DISTINCT_MIN_ROWS
    try:
        text.DISTINCT_MIN_ROWS = 10**9  # value by value
        slow = [clean_text(col), clean_text(col, keep_newlines=True), strip_html(text.as_text(col))]
        slow.append(json_string(slow[0]))
        text.DISTINCT_MIN_ROWS = 0  # per distinct value (when the sample repeats)
        fast = [clean_text(col), clean_text(col, keep_newlines=True), strip_html(text.as_text(col))]
        fast.append(json_string(fast[0]))
    finally:
        text.DISTINCT_MIN_ROWS = saved
    for a, b in zip(slow, fast, strict=True):
        pd.testing.assert_series_equal(a, b, check_exact=True)
    d = text.distinct_text(col, force=True)
    assert d is not None
    assert d.expand(d.values.to_numpy(object)).tolist() == text.as_text(col).tolist()


def test_truthy_per_distinct_value() -> None:
    raw = pd.Series(
        [1, "yes", " Deleted ", None, 0, True, 1.0, "\x00yes", "x", np.nan], dtype=object
    )
    assert truthy(raw).tolist() == [True, True, True, False, False, True, True, False, True, False]


def test_text_dtype_still_rejects_non_strings() -> None:
    frame = pd.DataFrame(
        {
            "business_key": ["AC-1"], "crm_id": [5], "crm_version": [1], "is_deleted": [True],
            "content_hash": [""], "payload": [""], "first_name": [None], "last_name": [None],
            "work_phone": [None], "cell_phone": [None], "home_phone": [None],
            "other_phone": [None], "work_email": [None], "personal_email": [None],
            "other_email": [None],
        }
    ).astype({"crm_id": object})  # fmt: skip
    with pytest.raises(pandera.errors.SchemaErrors) as err:
        validate_contacts(frame)
    assert "crm_id" in str(err.value) and "dtype('str')" in str(err.value)
    frame["crm_id"] = "5"
    validate_contacts(frame)
