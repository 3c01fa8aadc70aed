"""Time is read as time on PostgreSQL: text columns (bytewise, whatever the collation),
`timestamptz` and `timestamp` (in the mapping's zone) give the same windows and versions.

They run on the suite's PostgreSQL server (`postgres_server` of the top-level conftest: the
server CRM_GENESYS_TEST_POSTGRES_URL names, else a private one from Debian's packages); each
test works in a schema of its own and drops it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_genesys.contacts.keys import crm_versions
from crm_genesys.crm.instants import from_micros, to_micros
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.crm.time_report import BEFORE_FIRST_WINDOW, IN_FUTURE, MISSING, UNREADABLE
from crm_genesys_tests.conftest import PostgresServer

from .time_tables import NEAR_T0, OFFSET, render_all, said, windows_around

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def engine(postgres_server: PostgresServer) -> Iterator[sa.Engine]:
    with postgres_server.database() as name:
        engine = sa.create_engine(postgres_server.database_url(name))
        yield engine
        engine.dispose()


@pytest.fixture
def schema(engine: sa.Engine) -> Iterator[str]:
    name = f"crm_time_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    yield name
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')


def _url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _icu_collation(conn: sa.Connection) -> str | None:
    """A linguistic collation (punctuation and case weigh less than letters), when the server
    has ICU: text compared in it does not sort like the bytes."""
    return conn.execute(
        sa.text(
            "SELECT collname FROM pg_collation WHERE collprovider = 'i' AND collname LIKE 'en-%' "
            "ORDER BY collname LIMIT 1"
        )
    ).scalar()


def make_table(
    engine: sa.Engine, schema: str, name: str, column: str, values: list[object], index: str = ""
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE "{schema}"."{name}" (id integer PRIMARY KEY, modified_at {column},'
            " payload text)"
        )
        conn.exec_driver_sql(f'CREATE INDEX ON "{schema}"."{name}" (modified_at{index})')
        if values:
            conn.execute(
                sa.text(
                    f'INSERT INTO "{schema}"."{name}" (id, modified_at, payload) '
                    "VALUES (:i, :m, 'x')"
                ),
                [{"i": i, "m": v} for i, v in enumerate(values, start=1)],
            )


def sources(
    engine: sa.Engine, schema: str, rows: list[tuple[int, int, int]]
) -> dict[str, SqlCrmSource]:
    """The rows' instants as text (default and linguistic collation, with a bytewise index),
    as timestamptz, as timestamp in UTC and as timestamp in Berlin wall clock."""
    texts = render_all(rows)
    truth = [from_micros(said(u, s)) for u, s, _ in rows]
    out: dict[str, SqlCrmSource] = {}

    def source(name: str, zone: ZoneInfo | None = None) -> SqlCrmSource:
        return SqlCrmSource(
            _url(engine), name, "modified_at", None, "id", schema=schema, engine=engine,
            timezone=zone or UTC,
        )  # fmt: skip

    make_table(engine, schema, "text_default", "text", list(texts))
    make_table(engine, schema, "text_c_index", "text", list(texts), ' COLLATE "C"')
    out["text_default"] = source("text_default")
    out["text_c_index"] = source("text_c_index")
    with engine.connect() as conn:
        icu = _icu_collation(conn)
    if icu:
        make_table(engine, schema, "text_icu", f'text COLLATE "{icu}"', list(texts))
        out["text_icu"] = source("text_icu")
    make_table(engine, schema, "aware", "timestamptz", list(truth))
    make_table(engine, schema, "naive_utc", "timestamp", [t.replace(tzinfo=None) for t in truth])
    make_table(
        engine,
        schema,
        "naive_berlin",
        "timestamp",
        [t.astimezone(BERLIN).replace(tzinfo=None) for t in truth],
    )
    out["aware"] = source("aware")
    out["naive_utc"] = source("naive_utc")
    out["naive_berlin"] = source("naive_berlin", BERLIN)
    return out


ROWS = st.lists(st.tuples(NEAR_T0, st.integers(0, 11), OFFSET), min_size=1, max_size=25)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=ROWS,
    window=st.sampled_from([timedelta(minutes=15), HOUR]),
    odd=st.lists(st.tuples(NEAR_T0, st.integers(1, 86_400_000_000)), max_size=3),
)
def test_every_representation_gives_the_same_windows_and_versions(
    engine: sa.Engine,
    rows: list[tuple[int, int, int]],
    window: timedelta,
    odd: list[tuple[int, int]],
) -> None:
    name = f"crm_time_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    try:
        truth = [said(u, s) for u, s, _ in rows]
        by_kind = sources(engine, name, rows)
        spans = windows_around(truth, window)
        # Windows on no boundary at all: their bounds' texts end in seconds or fractions.
        spans += [(from_micros(us), from_micros(us + length)) for us, length in odd]
        for start, end in spans:
            want = sorted(
                (i, us)
                for i, us in enumerate(truth, start=1)
                if to_micros(start) <= us < to_micros(end)
            )
            for kind, source in by_kind.items():
                frame = source.extract(start, end)
                versions = crm_versions(frame["modified_at"], source.zone).tolist()
                got = sorted(zip(frame["id"].tolist(), versions, strict=True))
                assert got == want, kind
                assert versions == sorted(versions), kind
                assert source.count(start, end) == len(want), kind
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')


def test_kinds_of_columns_are_told_apart(engine: sa.Engine, schema: str) -> None:
    by_kind = sources(engine, schema, [(to_micros(datetime(2024, 6, 1, 10)), 0, 0)])
    kinds = {name: source.time_kind() for name, source in by_kind.items()}
    assert kinds["text_default"] == kinds["text_c_index"] == "text"
    assert kinds["aware"] == "aware" and kinds["naive_utc"] == kinds["naive_berlin"] == "naive"


FIRST = datetime(2024, 6, 1, tzinfo=UTC)
NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_time_report_on_text(engine: sa.Engine, schema: str) -> None:
    values: list[object] = [
        "2024-06-01 01:00:00",
        None,
        "",
        "junk",
        "2024-06-01 10:99:00",
        "2024-05-31T23:00:00Z",
        "2024-06-01T00:30:00-14:00",
    ]
    make_table(engine, schema, "t", "text", values)
    source = SqlCrmSource(
        _url(engine), "t", "modified_at", None, "id", schema=schema, engine=engine
    )
    report = source.time_report(FIRST, NOW)
    assert report.counts == {MISSING: 2, UNREADABLE: 2, BEFORE_FIRST_WINDOW: 1, IN_FUTURE: 1}


def test_time_report_on_timestamps(engine: sa.Engine, schema: str) -> None:
    values: list[object] = [
        datetime(2024, 6, 1, 1, tzinfo=UTC),
        None,
        datetime(2024, 5, 31, 23, 59, tzinfo=UTC),
        datetime(2024, 6, 1, 13, tzinfo=UTC),
    ]
    make_table(engine, schema, "aware", "timestamptz", values)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO \"{schema}\".aware VALUES (5, 'infinity', 'x'), (6, '-infinity', 'x')"
        )
    source = SqlCrmSource(
        _url(engine), "aware", "modified_at", None, "id", schema=schema, engine=engine
    )
    report = source.time_report(FIRST, NOW)
    # ±infinity are no instant: reported with their text, never an exception.
    assert report.counts == {MISSING: 1, UNREADABLE: 2, BEFORE_FIRST_WINDOW: 1, IN_FUTURE: 1}
    assert {s.value for s in report.samples[UNREADABLE]} == {"'infinity'", "'-infinity'"}
    naive = [None if v is None else v.astimezone(BERLIN).replace(tzinfo=None) for v in values]
    make_table(engine, schema, "naive", "timestamp", naive)
    berlin = SqlCrmSource(
        _url(engine),
        "naive",
        "modified_at",
        None,
        "id",
        schema=schema,
        engine=engine,
        timezone=BERLIN,
    )
    report = berlin.time_report(FIRST, NOW)
    assert report.counts == {MISSING: 1, UNREADABLE: 0, BEFORE_FIRST_WINDOW: 1, IN_FUTURE: 1}
    assert berlin.extract(FIRST, NOW)["id"].tolist() == [1]


def test_text_is_compared_bytewise_whatever_the_columns_collation(
    engine: sa.Engine, schema: str
) -> None:
    """In a linguistic collation `+` sorts after `:` (in bytes, before): the text 00:15+14:00
    would fall outside the window's last range, whose bound ends in seconds."""
    with engine.connect() as conn:
        icu = _icu_collation(conn)
    if icu is None:
        pytest.skip("the server has no ICU collation")
    make_table(engine, schema, "t", f'text COLLATE "{icu}"', ["2024-06-02T00:15+14:00"])
    source = SqlCrmSource(
        _url(engine), "t", "modified_at", None, "id", schema=schema, engine=engine
    )
    start = datetime(2024, 6, 1, 8, tzinfo=UTC)
    end = datetime(2024, 6, 1, 10, 15, 30, tzinfo=UTC)  # the text's instant is 10:15
    assert source.extract(start, end)["id"].tolist() == [1]
