"""SqlCrmSource: half-open windows, tombstones, raw values, timestamp columns, quoting, chunks."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.crm.demo import DemoMeta, parse_modified
from crm_genesys.crm.errors import MissingColumnsError
from crm_genesys.crm.source import SqlCrmSource

T0 = datetime(2024, 6, 1, 10, tzinfo=UTC)


def text_table(path: Path) -> SqlCrmSource:
    """A demo-shaped table with rows exactly on and around the window bounds [10:00, 11:00)."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, account_number TEXT, sms INTEGER,"
        " ltv REAL, modified_at TEXT NOT NULL, is_deleted INTEGER NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO contacts VALUES (?, ?, ?, ?, ?, ?)",
        [
            (1, "AC-1", 1, 1.5, "2024-06-01 09:59:59.999999", 0),  # just before
            (2, "AC-2", None, None, "2024-06-01 10:00:00.000000", 0),  # on start: in
            (3, "AC-3", 0, 2.0, "2024-06-01 10:30:00.000000", 1),  # tombstone: in
            (4, "AC-4", 1, 3.0, "2024-06-01 10:59:59.999999", 0),  # last µs: in
            (5, "AC-5", 1, 4.0, "2024-06-01 11:00:00.000000", 0),  # on end: out
            (6, "AC-6", 1, 5.0, "2024-06-01 13:10:00.000000", 0),
        ],
    )
    conn.commit()
    conn.close()
    return SqlCrmSource(f"sqlite:///{path}", "contacts", "modified_at", "is_deleted", "id")


def test_extract_is_half_open_and_keeps_tombstones(tmp_path: Path) -> None:
    source = text_table(tmp_path / "crm.sqlite")
    frame = source.extract(T0, T0 + timedelta(hours=1))
    assert frame["id"].tolist() == [2, 3, 4]
    assert frame["is_deleted"].tolist() == [0, 1, 0]
    assert all(dtype == np.dtype(object) for dtype in frame.dtypes)
    # Values as read: NULLs stay None (not NaN), ints stay Python ints.
    assert frame.loc[0, "sms"] is None and frame.loc[0, "ltv"] is None
    assert type(frame.loc[1, "sms"]) is int
    assert frame["modified_at"].tolist()[0] == "2024-06-01 10:00:00.000000"


def test_extract_accepts_other_zones_and_naive_utc(tmp_path: Path) -> None:
    source = text_table(tmp_path / "crm.sqlite")
    plus2 = timezone(timedelta(hours=2))
    aware = source.extract(
        datetime(2024, 6, 1, 12, tzinfo=plus2), datetime(2024, 6, 1, 13, tzinfo=plus2)
    )
    naive = source.extract(datetime(2024, 6, 1, 10), datetime(2024, 6, 1, 11))
    assert aware["id"].tolist() == naive["id"].tolist() == [2, 3, 4]


def test_empty_window_keeps_columns(tmp_path: Path) -> None:
    source = text_table(tmp_path / "crm.sqlite")
    frame = source.extract(T0 - timedelta(days=1), T0 - timedelta(hours=23))
    assert frame.empty
    assert list(frame.columns) == source.columns()


def test_count_range_and_windows(tmp_path: Path) -> None:
    source = text_table(tmp_path / "crm.sqlite")
    assert source.count() == 6
    assert source.count(T0, T0 + timedelta(hours=1)) == 3
    assert source.modified_range() == (
        datetime(2024, 6, 1, 9, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 6, 1, 13, 10, tzinfo=UTC),
    )
    assert source.windows_with_data(timedelta(hours=1)) == [
        datetime(2024, 6, 1, h, tzinfo=UTC) for h in (9, 10, 11, 13)
    ]
    assert source.windows_with_data(timedelta(days=1)) == [datetime(2024, 6, 1, tzinfo=UTC)]


def test_extract_all_chunks_cover_the_table_once(tmp_path: Path) -> None:
    source = text_table(tmp_path / "crm.sqlite")
    chunks = list(source.extract_all(chunk_rows=4))
    assert [len(c) for c in chunks] == [4, 2]
    assert sorted(pd.concat(chunks)["id"].tolist()) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError):
        list(source.extract_all(chunk_rows=0))


def test_schema_drift_is_seen_without_a_new_source(tmp_path: Path) -> None:
    path = tmp_path / "crm.sqlite"
    source = text_table(path)
    before = source.columns()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE contacts ADD COLUMN loyalty_segment TEXT")
    conn.execute("UPDATE contacts SET loyalty_segment = 'gold' WHERE id = 3")
    conn.commit()
    conn.close()
    assert source.columns() == [*before, "loyalty_segment"]
    frame = source.extract(T0, T0 + timedelta(hours=1))
    assert frame["loyalty_segment"].tolist() == [None, "gold", None]


def test_missing_column_is_an_error(tmp_path: Path) -> None:
    text_table(tmp_path / "crm.sqlite")
    source = SqlCrmSource(f"sqlite:///{tmp_path / 'crm.sqlite'}", "contacts", "updated")
    with pytest.raises(MissingColumnsError, match=r"'updated'.*source\.modified_column"):
        source.extract(T0, T0 + timedelta(hours=1))


def test_timestamp_column_and_awkward_identifiers(tmp_path: Path) -> None:
    """A real DateTime column (datetimes bound) in a table whose names need quoting."""
    url = f"sqlite:///{tmp_path / 'ts.sqlite'}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        "CRM Contacts",
        meta,
        sa.Column("Id", sa.Integer, primary_key=True),
        sa.Column("Last Modified", sa.DateTime, nullable=False),
        sa.Column("select", sa.String),  # a reserved word as a column name
    )
    meta.create_all(engine)
    stamps = [
        T0 - timedelta(microseconds=1),
        T0,
        T0 + timedelta(minutes=59),
        T0 + timedelta(hours=1),
    ]
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"Id": i, "Last Modified": s.replace(tzinfo=None), "select": f"v{i}"}
                for i, s in enumerate(stamps)
            ],
        )
    source = SqlCrmSource(url, "CRM Contacts", "Last Modified", engine=engine)
    frame = source.extract(T0, T0 + timedelta(hours=1))
    assert frame["Id"].tolist() == [1, 2]
    assert frame["select"].tolist() == ["v1", "v2"]
    assert source.windows_with_data(timedelta(hours=1)) == [
        T0 - timedelta(hours=1),
        T0,
        T0 + timedelta(hours=1),
    ]
    low, high = source.modified_range() or (None, None)
    assert low == stamps[0] and high == stamps[-1]
    assert "CRM Contacts" in repr(source) and "sqlite" not in repr(source)


def test_demo_windows_partition_the_table(demo_db: tuple[Path, DemoMeta]) -> None:
    path, meta = demo_db
    source = SqlCrmSource(f"sqlite:///{path}", "contacts", "modified_at", "is_deleted", "id")
    starts = source.windows_with_data(meta.window)
    assert starts == [s for s, _ in meta.generated_windows()]
    seen: list[int] = []
    for start in starts:
        frame = source.extract(start, start + meta.window)
        stamps = [parse_modified(s) for s in frame["modified_at"]]
        assert all(start <= s < start + meta.window for s in stamps)
        assert stamps == sorted(stamps)
        seen.extend(frame["id"].tolist())
    assert sorted(seen) == list(range(1, source.count() + 1))
    full = pd.concat(list(source.extract_all(chunk_rows=1_000)))
    assert len(full) == source.count() and set(full["id"]) == set(seen)
    source.dispose()


# --- a mapped column that is missing is an error, not a blank -----------------------------

DEMO_MAPPING = Path(__file__).parents[2] / "crm_genesys" / "mappings" / "demo_crm.yaml"


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_renamed_mapped_column_fails_naming_it_its_mapping_line_and_the_new_name(
    demo_copy: tuple[Path, DemoMeta],
) -> None:
    path, meta = demo_copy
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE contacts RENAME COLUMN work_phone TO work_phone_number")
    conn.execute("ALTER TABLE contacts RENAME COLUMN customer_tier TO tier")
    conn.commit()
    conn.close()
    mapping = load_mapping(DEMO_MAPPING)
    source = SqlCrmSource.from_mapping(f"sqlite:///{path}", mapping)
    start, end = meta.generated_windows()[0]
    with pytest.raises(MissingColumnsError) as err:
        source.extract(start, end, mapping.source_columns())
    message = str(err.value)
    work_line = line_of(DEMO_MAPPING, "workPhone: work_phone")
    tier_line = line_of(DEMO_MAPPING, "customer_tier: {column: customer_tier")
    assert f"phones.workPhone ({DEMO_MAPPING}:{work_line})" in message
    assert "'work_phone'" in message and "'work_phone_number'" in message
    assert f"custom_fields.customer_tier ({DEMO_MAPPING}:{tier_line})" in message
    assert set(err.value.missing) == {"work_phone", "customer_tier"}
    # Every read of the mapped table fails the same way, before any row is produced.
    with pytest.raises(MissingColumnsError):
        source.extract(start, end)
    with pytest.raises(MissingColumnsError):
        next(source.extract_all())
    source.dispose()


def test_a_mapped_column_present_but_empty_is_fine(demo_copy: tuple[Path, DemoMeta]) -> None:
    path, meta = demo_copy
    conn = sqlite3.connect(path)
    conn.execute("UPDATE contacts SET fax = NULL")
    conn.commit()
    conn.close()
    mapping = load_mapping(DEMO_MAPPING)
    with SqlCrmSource.from_mapping(f"sqlite:///{path}", mapping) as source:
        start, end = meta.generated_windows()[0]
        frame = source.extract(start, end, mapping.source_columns())
        assert len(frame) and frame["fax"].isna().all()
        assert source.zone == mapping.source.zone


def test_columns_asked_for_without_a_mapping_must_exist(tmp_path: Path) -> None:
    source = text_table(tmp_path / "crm.sqlite")
    with pytest.raises(MissingColumnsError, match="'nickname', which is read by the caller"):
        source.extract(T0, T0 + timedelta(hours=1), ["id", "nickname"])
    with pytest.raises(MissingColumnsError, match="nickname"):
        next(source.extract_all(columns=["nickname"]))
    assert list(next(source.extract_all(columns=["sms"])).columns) == ["sms", "modified_at"]
