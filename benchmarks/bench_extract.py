"""Extract benchmark: a 1,000,000-row demo CRM, read back whole and window by window.

Compares `SqlCrmSource.extract` with the obvious baseline, `pandas.read_sql_query` over a plain
`sqlite3` connection with the same SQL, in the same process. Also times `time_report` over the
whole table, thorough and quick (its rows figure is the table's rows). The demo CRM is
generated in a child process so its memory does not inflate the peak RSS measured here. Peak
RSS is sampled (every 10 ms, with psutil) while each read runs; the figure reported is the peak
minus the RSS just before the read, plus the process's absolute peak.

Usage: python -m benchmarks.bench_extract [--rows N] [--db PATH] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.crm.demo import DemoMeta, format_modified, generate_demo_crm, read_demo_meta
from crm_genesys.crm.source import SqlCrmSource
from crm_genesys.settings import DEMO_MAPPING

RESULTS = Path(__file__).parent / "results" / "extract.json"
NOW = datetime(2024, 6, 1, 12, 34, tzinfo=UTC)


@dataclass
class Measure:
    name: str
    rows: int
    seconds: float
    rows_per_second: float
    peak_rss_delta_mb: float
    peak_rss_mb: float


class _RssSampler:
    """Peak RSS of this process while a block runs, sampled on a thread."""

    def __init__(self, interval: float = 0.01) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start_rss = 0
        self.peak_rss = 0

    def __enter__(self) -> _RssSampler:
        self.start_rss = self.peak_rss = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)


def _measure(name: str, read: Callable[[], int]) -> Measure:
    with _RssSampler() as rss:
        started = time.perf_counter()
        rows = read()
        seconds = time.perf_counter() - started
    return Measure(
        name=name,
        rows=rows,
        seconds=round(seconds, 3),
        rows_per_second=round(rows / seconds) if seconds else 0,
        peak_rss_delta_mb=round((rss.peak_rss - rss.start_rss) / 2**20, 1),
        peak_rss_mb=round(rss.peak_rss / 2**20, 1),
    )


def _generate(path: str, rows: int) -> None:
    generate_demo_crm(path, rows=rows, seed=7, now=NOW)


def _generate_in_child(path: Path, rows: int) -> float:
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=_generate, args=(str(path), rows))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"demo CRM generation failed (exit code {child.exitcode})")
    return time.perf_counter() - started


def _baseline_read(path: Path, start: datetime, end: datetime) -> int:
    conn = sqlite3.connect(path)
    try:
        frame = pd.read_sql_query(
            "SELECT * FROM contacts WHERE modified_at >= ? AND modified_at < ?"
            " ORDER BY modified_at",
            conn,
            params=(format_modified(start), format_modified(end)),
        )
    finally:
        conn.close()
    return len(frame)


def run(rows: int, db: Path | None) -> dict[str, Any]:
    """Generate (unless `db` already holds a demo CRM of `rows` rows) and time the reads."""
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        path = db or Path(tmp) / "demo_crm.sqlite"
        generate_seconds: float | None = None
        if not (path.exists() and read_demo_meta(path).rows == rows):
            generate_seconds = _generate_in_child(path, rows)
        meta: DemoMeta = read_demo_meta(path)
        # As the assets read it: through the demo's mapping (which says its times carry no
        # offset, so each window reads its own index range only).
        source = SqlCrmSource.from_mapping(f"sqlite:///{path}", load_mapping(DEMO_MAPPING))
        start, end = meta.first_window_start, meta.end

        def ours_whole() -> int:
            return len(source.extract(start, end))

        def ours_windows() -> int:
            return sum(len(source.extract(a, b)) for a, b in meta.generated_windows())

        def ours_chunks() -> int:
            return sum(len(chunk) for chunk in source.extract_all(chunk_rows=100_000))

        def report(thorough: bool) -> Callable[[], int]:
            def run() -> int:
                result = source.time_report(start, meta.now, thorough=thorough)
                assert result.ok, result.counts
                return result.rows

            return run

        measures = [
            _measure("SqlCrmSource.extract (whole range)", ours_whole),
            _measure(
                "baseline pandas.read_sql_query (whole range)",
                lambda: _baseline_read(path, start, end),
            ),
            _measure(f"SqlCrmSource.extract ({meta.windows} windows)", ours_windows),
            _measure("SqlCrmSource.extract_all (100k chunks)", ours_chunks),
            _measure("SqlCrmSource.time_report (thorough)", report(True)),
            _measure("SqlCrmSource.time_report (quick)", report(False)),
        ]
        source.dispose()
        assert len({m.rows for m in measures}) == 1, "every read must see every row"
        return {
            "benchmark": "extract",
            "rows": rows,
            "generate_seconds": None if generate_seconds is None else round(generate_seconds, 2),
            "generate_rows_per_second": (
                None if generate_seconds is None else round(rows / generate_seconds)
            ),
            "db_size_mb": round(path.stat().st_size / 2**20, 1),
            "window": str(meta.window),
            "measures": [asdict(m) for m in measures],
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def _print(result: dict[str, Any]) -> None:
    print(
        f"demo CRM: {result['rows']:,} rows, {result['db_size_mb']} MB; generated in "
        f"{result['generate_seconds']} s ({result['generate_rows_per_second']} rows/s)"
    )
    print(f"{'read':<48} {'rows':>10} {'s':>8} {'rows/s':>10} {'ΔRSS MB':>9} {'RSS MB':>8}")
    for m in result["measures"]:
        print(
            f"{m['name']:<48} {m['rows']:>10,} {m['seconds']:>8.2f} {m['rows_per_second']:>10,} "
            f"{m['peak_rss_delta_mb']:>9.1f} {m['peak_rss_mb']:>8.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="reuse/keep the demo CRM at this path")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.rows, args.db)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print(result)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
