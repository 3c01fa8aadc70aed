"""Read a CRM table through SQLAlchemy: delta windows, full chunked scans, counts.

`SqlCrmSource` works with any SQLAlchemy URL. The table is reflected (so identifiers are quoted by
the dialect and drifted columns show up on the next call). Rows are selected through untyped
column clauses, so SQLAlchemy applies no result processing: values are exactly what the driver
returns, and a million rows become one object-dtype DataFrame without per-row Python work.

The modified column may be a real timestamp (PostgreSQL `timestamp[tz]`, SQLite declared
`DATETIME`) — datetimes are bound — or text in the demo format `YYYY-MM-DD HH:MM:SS.ffffff` UTC,
whose lexicographic order is time order — formatted strings are bound. Which one is decided from
the reflected column type.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from crm_genesys.crm.demo import MODIFIED_FORMAT, as_utc, window_floor

_FETCH_ROWS = 100_000


def _records_frame(rows: Sequence[Sequence[Any]], columns: list[str]) -> pd.DataFrame:
    """Rows → DataFrame, every column object dtype, values exactly as the driver gave them.

    `dtype=object` keeps None as None and ints as ints: no float coercion of nullable integer
    columns and no per-column type inference (which costs more than the fetch itself).
    """
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    return pd.DataFrame(rows, columns=columns, dtype=object)


class SqlCrmSource:
    """A CRM table reachable by SQLAlchemy.

    `table`, `modified_column`, `deleted_column` and `internal_id_column` are names as they are in
    the database (from the mapping's `source` block); `schema` optionally qualifies the table.
    Times given to the methods may be aware (any zone) or naive (taken as UTC); times returned
    are aware UTC.
    """

    def __init__(
        self,
        url: str | sa.URL,
        table: str,
        modified_column: str,
        deleted_column: str | None = None,
        internal_id_column: str | None = None,
        *,
        schema: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.url = url
        self.table_name = table
        self.modified_column = modified_column
        self.deleted_column = deleted_column
        self.internal_id_column = internal_id_column
        self.schema = schema
        self._engine = engine if engine is not None else sa.create_engine(url)
        self._owns_engine = engine is None

    def __repr__(self) -> str:
        # The URL may hold a password: show only the table.
        return f"SqlCrmSource(table={self.table_name!r}, modified_column={self.modified_column!r})"

    @property
    def engine(self) -> Engine:
        return self._engine

    def dispose(self) -> None:
        """Close pooled connections (only those of an engine this source created)."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> SqlCrmSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    # --- schema ---------------------------------------------------------------------------

    def _reflect(self, conn: Connection) -> sa.Table:
        """The table as it is now (re-reflected each call so schema drift is seen)."""
        table = sa.Table(self.table_name, sa.MetaData(), schema=self.schema, autoload_with=conn)
        for name in (self.modified_column, self.deleted_column, self.internal_id_column):
            if name is not None and name not in table.c:
                raise KeyError(f"column {name!r} not in table {self.table_name!r}")
        return table

    def columns(self) -> list[str]:
        """Column names in table order."""
        with self._engine.connect() as conn:
            return [c.name for c in self._reflect(conn).columns]

    def _is_timestamp(self, table: sa.Table) -> bool:
        col_type = table.c[self.modified_column].type
        return isinstance(col_type, sa.DateTime | sa.Date)

    def _bound(self, table: sa.Table, moment: datetime) -> sa.BindParameter[Any]:
        """`moment` as a bind value the modified column compares correctly with."""
        col_type = table.c[self.modified_column].type
        utc = as_utc(moment)
        if self._is_timestamp(table):
            aware = bool(getattr(col_type, "timezone", False))
            value: Any = utc if aware else utc.replace(tzinfo=None)
            return sa.bindparam(None, value, type_=col_type)
        return sa.bindparam(None, utc.strftime(MODIFIED_FORMAT), type_=sa.String())

    def _to_datetime(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return as_utc(value)
        return as_utc(datetime.fromisoformat(str(value)))

    # --- reads ----------------------------------------------------------------------------

    def _raw_select(
        self, table: sa.Table, columns: Sequence[str] | None = None
    ) -> tuple[sa.Select[Any], sa.TableClause, list[str]]:
        """SELECT of `columns` (every column by default; names the table lacks are skipped) with
        no result processing (values exactly as the driver returns them), from a lightweight
        clause whose columns carry no SQL types."""
        names = [c.name for c in table.columns]
        if columns is not None:
            wanted = set(columns) | {self.modified_column}
            names = [n for n in names if n in wanted]
        raw = sa.table(self.table_name, *[sa.column(n) for n in names], schema=self.schema)
        return sa.select(*[raw.c[n] for n in names]), raw, names

    def extract(
        self, start: datetime, end: datetime, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Rows with `start <= modified < end`, tombstones included, ordered by the modified
        column, with `columns` (all by default) as read (object dtype). Columns never asked for
        are never read: that is how denied (PII) columns stay in the CRM."""
        with self._engine.connect() as conn:
            table = self._reflect(conn)
            stmt, raw, names = self._raw_select(table, columns)
            mod = raw.c[self.modified_column]
            stmt = stmt.where(mod >= self._bound(table, start), mod < self._bound(table, end))
            # Streamed in chunks: the driver's row objects of one chunk are freed before the
            # next is fetched, so the peak is ~15 % lower than one fetchall() (1M rows).
            result = conn.execution_options(yield_per=_FETCH_ROWS).execute(stmt.order_by(mod))
            parts = [_records_frame(rows, names) for rows in result.partitions()]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return _records_frame([], names)
        return pd.concat(parts, ignore_index=True, copy=False)

    def extract_all(self, chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
        """Every row of the table in DataFrames of at most `chunk_rows` rows.

        One query inside one connection/transaction, so the chunks are one consistent read
        (for reconciliation); the connection is held until the iterator is exhausted or closed.
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        with self._engine.connect() as conn:
            table = self._reflect(conn)
            stmt, _, names = self._raw_select(table)
            # yield_per streams (server-side cursor where the driver has one) in fixed chunks.
            result = conn.execution_options(yield_per=chunk_rows).execute(stmt)
            try:
                for rows in result.partitions():
                    yield _records_frame(rows, names)
            finally:
                result.close()

    def count(self, start: datetime | None = None, end: datetime | None = None) -> int:
        """Number of rows (tombstones included), optionally within [start, end)."""
        with self._engine.connect() as conn:
            table = self._reflect(conn)
            stmt = sa.select(sa.func.count()).select_from(table)
            mod = table.c[self.modified_column]
            if start is not None:
                stmt = stmt.where(mod >= self._bound(table, start))
            if end is not None:
                stmt = stmt.where(mod < self._bound(table, end))
            return int(conn.execute(stmt).scalar_one())

    def modified_range(self) -> tuple[datetime, datetime] | None:
        """(earliest, latest) modified time in the table, or None when it is empty."""
        with self._engine.connect() as conn:
            self._reflect(conn)  # validates the table and column names
            mod = self._untyped_modified()
            low, high = conn.execute(sa.select(sa.func.min(mod), sa.func.max(mod))).one()
        first, last = self._to_datetime(low), self._to_datetime(high)
        if first is None or last is None:
            return None
        return first, last

    def _untyped_modified(self) -> sa.ColumnClause[Any]:
        return sa.table(self.table_name, sa.column(self.modified_column), schema=self.schema).c[
            self.modified_column
        ]

    def windows_with_data(self, window: timedelta) -> list[datetime]:
        """Starts of the epoch-aligned windows of length `window` that hold at least one row.

        Walks the index on the modified column: one MIN() query per non-empty window, so the
        cost follows the number of windows with data, not the span of time.
        """
        starts: list[datetime] = []
        with self._engine.connect() as conn:
            table = self._reflect(conn)
            mod = self._untyped_modified()
            low = self._to_datetime(conn.execute(sa.select(sa.func.min(mod))).scalar_one())
            while low is not None:
                start = window_floor(low, window)
                starts.append(start)
                nxt = sa.select(sa.func.min(mod)).where(mod >= self._bound(table, start + window))
                low = self._to_datetime(conn.execute(nxt).scalar_one())
        return starts
