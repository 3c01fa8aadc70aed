"""Shared fixtures: one small generated demo CRM per test module (read-only), fixed clock."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_genesys.crm.demo import DemoMeta, generate_demo_crm

NOW = datetime(2024, 6, 1, 12, 34, 56, tzinfo=UTC)
ROWS = 4_000


def rows_of(path: Path) -> list[dict[str, object]]:
    """Every row of the demo CRM's `contacts` table, by internal id."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM contacts ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DemoMeta]]:
    """A 4,000-row demo CRM over 12 hourly windows; tests must not modify it."""
    path = tmp_path_factory.mktemp("demo") / "demo_crm.sqlite"
    meta = generate_demo_crm(
        path, rows=ROWS, seed=7, now=NOW, windows=12, window=timedelta(hours=1)
    )
    yield path, meta


@pytest.fixture
def demo_copy(demo_db: tuple[Path, DemoMeta], tmp_path: Path) -> tuple[Path, DemoMeta]:
    """A private, writable copy of the module's demo CRM."""
    path, meta = demo_db
    copy = tmp_path / "demo_copy.sqlite"
    shutil.copy(path, copy)
    return copy, meta
