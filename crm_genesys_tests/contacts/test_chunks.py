"""normalize in chunks, in one process or a pool, gives exactly what one pass gives."""

from __future__ import annotations

import json
import random
from typing import Any

import pandas as pd
import pytest

from crm_genesys.contacts import normalize as normalize_module
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.contacts.normalize import NormalizationResult, normalize
from crm_genesys.settings import DEMO_MAPPING

MAPPING = load_mapping(DEMO_MAPPING)
COLUMNS = [*MAPPING.column_uses(), "national_id"]

_VALUES: list[Any] = [
    None, "", "  ", 1, 2.5, -0.0, True, b"\xff", "x" * 300, "<b>Hi</b> &amp; bye", "Ann", " Bob ",
    "Jürgen", "李", "e\u0301", "US", "de", "Germany", "Atlantis", "Narnia", "ZZ", "gold", "Tin",
    "yes", "12.50", "2024-03-05", "example.com/a", "+1 212 555 0123", "(212) 555-0123 x12",
    "0018005550199", "911", "12", "555", "+44 20 7946 0958", "030 1234567", "N/A", "a@b.co",
    " Bob@Example.COM ", "bad@", "x@gmail", "nope", "u@bücher.de", "a,b;c", "L0001",
]  # fmt: skip


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rnd = random.Random(seed)
    data: dict[str, list[Any]] = {}
    for c in COLUMNS:
        pool = rnd.sample(_VALUES, rnd.randint(3, 20))
        data[c] = [rnd.choice(pool) for _ in range(rows)]
    # Distinct bad phones and e-mails in every part of the window: samples merge across chunks.
    data["fax"] = [f"9{i:03d}" if rnd.random() < 0.5 else None for i in range(rows)]
    data["other_email"] = [f"user{i}@" if rnd.random() < 0.3 else None for i in range(rows)]
    data["account_number"] = [f"AC-{rnd.randint(0, rows)}" for _ in range(rows)]
    data["modified_at"] = [f"2024-01-0{rnd.randint(1, 9)} 00:00:00.{i:06d}" for i in range(rows)]
    data["is_deleted"] = [rnd.choice([0, 0, 0, 1]) for _ in range(rows)]
    return pd.DataFrame(data, columns=COLUMNS).astype(object)


def _same(a: NormalizationResult, b: NormalizationResult) -> None:
    pd.testing.assert_frame_equal(a.contacts, b.contacts, check_exact=True)
    pd.testing.assert_frame_equal(a.quarantine, b.quarantine, check_exact=True)
    assert a.superseded == b.superseded
    # Same facts in the same order (the report is written out as JSON).
    assert json.dumps(a.report.as_dict()) == json.dumps(b.report.as_dict())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunks_in_one_process_equal_one_pass(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _frame(900, seed)
    whole = normalize(raw, MAPPING, workers=1)
    assert whole.report.phones_dropped_samples and whole.report.emails_dropped_samples
    monkeypatch.setattr(normalize_module, "CHUNK_ROWS", 61)
    _same(whole, normalize(raw, MAPPING, workers=1))


def test_chunks_in_a_pool_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _frame(1200, 3)
    whole = normalize(raw, MAPPING, workers=1)
    monkeypatch.setattr(normalize_module, "CHUNK_ROWS", 150)
    monkeypatch.setattr(normalize_module, "PARALLEL_MIN_ROWS", 0)
    _same(whole, normalize(raw, MAPPING, workers=2))


def test_default_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_GENESYS_WORKERS", raising=False)
    assert normalize_module.default_workers() == 1
    monkeypatch.setenv("CRM_GENESYS_WORKERS", "2")
    assert normalize_module.default_workers() == 2
