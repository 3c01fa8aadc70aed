"""Benchmark: normalize + validate + diff on N messy CRM rows, against a naive baseline.

    python -m benchmarks.bench_normalize [--rows N] [--naive-sample M] [--seed S] [--workers W]
                                         [--db PATH] [--no-pipeline] [--also-workers W2]

Rows are generated in-process (vectorised, seeded) with mess like the demo CRM's: phones of ten
countries in many formats (E.164, national with trunk prefix, 00/011 prefixes, extensions,
invalid short numbers), bad e-mails, HTML notes, blank keys, duplicates and tombstones. Measured
in the same process: `normalize`, pandera validation, `diff` against an empty and a half-full
snapshot, and the naive implementation (a row-wise `apply` calling phonenumbers for two phone
columns and lower-casing e-mails) on a sample, extrapolated to N and labelled as such. Prints a
table and writes `benchmarks/results/normalize.json`.

The pipeline part (skipped with `--no-pipeline`) measures the local pipeline end to end on a demo
CRM of N rows (`crm.demo.generate_demo_crm(rows=N, seed=S, windows=12)`, written to `--db` or a
temporary directory; an existing `--db` of the right size is reused): `SqlCrmSource.extract` over
the whole generated range of the columns the mapping reads (as the asset extracts), `normalize`,
pandera validation and `diff` against an empty snapshot, in a fresh child process so that its peak
RSS is its own (sampled every 20 ms, with and without the normalize worker processes). The raw
frame is released once normalized, as the asset would be. `--workers` is passed to `normalize`
(default: its own default, one process); `--also-workers W2` measures the pipeline a second time
with W2 processes, for comparison (`pipeline_workers_W2` in the results).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import phonenumbers
import psutil

from crm_genesys.contacts.diff import diff, empty_snapshot
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.contacts.models import validate_contacts
from crm_genesys.contacts.normalize import default_workers, normalize
from crm_genesys.settings import DEMO_MAPPING

RESULTS = Path(__file__).parent / "results" / "normalize.json"
DEMO_NOW = datetime(2024, 6, 1, 12, 34, tzinfo=UTC)
DEMO_WINDOWS = 12

# (region, calling code, trunk prefix, national significant number template of valid numbers)
_PLANS = [
    ("US", "1", "1", "2125550{:03d}"),
    ("US", "1", "1", "8005550{:03d}"),
    ("GB", "44", "0", "2079460{:03d}"),
    ("DE", "49", "0", "301234{:03d}"),
    ("FR", "33", "0", "6123{:05d}"),
    ("JP", "81", "0", "312{:06d}"),
    ("IN", "91", "0", "98765{:05d}"),
    ("BR", "55", "0", "1123{:06d}"),
    ("AU", "61", "0", "412{:06d}"),
    ("CA", "1", "1", "4165550{:03d}"),
]


def generate(rows: int, seed: int = 7) -> pd.DataFrame:
    """N messy CRM rows with the demo CRM's columns (vectorised; deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(rows)
    plan = rng.integers(0, len(_PLANS), rows)
    regions = np.array([p[0] for p in _PLANS], dtype=object)[plan]
    cc = np.array([p[1] for p in _PLANS], dtype=object)[plan]
    trunk = np.array([p[2] for p in _PLANS], dtype=object)[plan]

    def nsn(salt: int) -> np.ndarray:
        nums = (idx * 7919 + salt * 104729) % 1000
        wide = (idx * 31 + salt) % 100000
        out = np.empty(rows, dtype=object)
        for k, (_, _, _, tpl) in enumerate(_PLANS):
            sel = plan == k
            width = 3 if "{:03d}" in tpl else 5 if "{:05d}" in tpl else 6
            vals = nums[sel] if width == 3 else (wide[sel] if width == 5 else wide[sel] * 7)
            out[sel] = [tpl.format(int(v) % 10**width) for v in vals]
        return out

    def phone(salt: int, blank_share: float) -> np.ndarray:
        n = nsn(salt)
        fmt = rng.integers(0, 9, rows)
        s = pd.Series(n, dtype=object)
        c = pd.Series(cc, dtype=object)
        t = pd.Series(trunk, dtype=object)
        forms = [
            "+" + c + s,  # E.164 already
            "+" + c + " " + s.str[:3] + " " + s.str[3:],  # international with spaces
            t + s,  # national with trunk prefix
            "00" + c + s,  # 00 prefix
            "011 " + c + " " + s,  # 011 prefix
            "(" + s.str[:3] + ") " + s.str[3:6] + "-" + s.str[6:],  # US-style punctuation
            "+" + c + "-" + s + " x" + (idx % 900 + 10).astype(str),  # extension
            s.str[:5],  # too short: invalid
            t + "-" + s.str[:3] + "-" + s.str[3:],  # national with dashes
        ]
        out = np.empty(rows, dtype=object)
        for k, form in enumerate(forms):
            sel = fmt == k
            out[sel] = form.to_numpy(dtype=object)[sel]
        out[rng.random(rows) < blank_share] = None
        return out

    first = np.array(
        ["John", "Jürgen", "Åsa", "María", "李", "Олег", "  Ann  ", "Zoë"], dtype=object
    )
    last = np.array(
        ["Smith", "Müller", "Ng", "García", "王", "Иванов", "O'Brien", ""], dtype=object
    )
    account = pd.Series(idx % max(1, int(rows * 0.97)), dtype="int64").map("AC-{:07d}".format)
    account = account.to_numpy(dtype=object)
    account[rng.random(rows) < 0.005] = None
    email = pd.Series(np.char.mod("user%d", idx), dtype=object) + "@example.com"
    email_form = rng.integers(0, 6, rows)
    email_out = email.to_numpy(dtype=object).copy()
    email_out[email_form == 1] = (" " + email.str.upper() + " ").to_numpy(dtype=object)[
        email_form == 1
    ]
    email_out[email_form == 2] = email.str.replace("@", "", regex=False).to_numpy(dtype=object)[
        email_form == 2
    ]
    email_out[email_form == 3] = None
    # Countries as CRMs spell them: codes, lower case, names, blanks (-> default country).
    country = regions.copy()
    lower = idx % 4 == 1
    country[lower] = pd.Series(regions[lower], dtype=object).str.lower().to_numpy(dtype=object)
    named = idx % 4 == 2
    names = {"US": "", "GB": "United Kingdom", "DE": "Germany", "FR": "France", "JP": "Japan"}
    country[named] = [names.get(r, r) for r in regions[named]]
    base = pd.Timestamp("2024-01-01")
    stamps = (base + pd.to_timedelta(idx * 997 % 86_400_000_000, unit="us")).strftime(
        "%Y-%m-%d %H:%M:%S.%f"
    )
    return pd.DataFrame(
        {
            "id": idx,
            "account_number": account,
            "salutation": None,
            "first_name": first[idx % len(first)],
            "middle_name": None,
            "last_name": last[idx % len(last)],
            "job_title": "Buyer",
            "company": "ACME <b>Corp</b>",
            "country": country,
            "work_phone": phone(1, 0.1),
            "mobile_phone": phone(2, 0.3),
            "home_phone": phone(3, 0.6),
            "fax": phone(4, 0.9),
            "email": email_out,
            "personal_email": np.where(email_form == 4, "x@gmail", None),
            "other_email": None,
            "street": "1 Main St",
            "street2": None,
            "city": "Springfield",
            "region": "IL",
            "postal_code": "62701",
            "customer_tier": np.array(["Gold", "silver", "Bronze", "Platinum", "Tin"], object)[
                idx % 5
            ],
            "preferred_language": "en",
            "sms_consent": (idx % 3).astype(object),
            "lifetime_value": (idx % 1000) * 1.5,
            "last_purchase_date": "2024-03-05",
            "loyalty_id": pd.Series(idx).map("L{:08d}".format).to_numpy(dtype=object),
            "website": "www.example.com",
            "notes": "<p>Called &amp; left a message</p>",
            "national_id": "123-45-6789",
            "date_of_birth": "1970-01-01",
            "modified_at": stamps.to_numpy(dtype=object),
            "is_deleted": (rng.random(rows) < 0.01).astype(int),
        }
    ).astype(object)


def naive_normalize(raw: pd.DataFrame) -> pd.DataFrame:
    """The baseline: row-wise apply, phonenumbers on two phone columns, e-mails lower-cased."""

    def one(row: pd.Series) -> pd.Series:
        region = str(row["country"] or "US").upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            region = "US"
        out = {}
        for col in ("work_phone", "mobile_phone"):
            value = row[col]
            e164 = None
            if isinstance(value, str) and value.strip():
                try:
                    num = phonenumbers.parse(value, region)
                    if phonenumbers.is_valid_number(num):
                        e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
                except phonenumbers.NumberParseException:
                    pass
            out[col] = e164
        email = row["email"]
        out["email"] = email.strip().lower() if isinstance(email, str) else None
        return pd.Series(out)

    return raw.apply(one, axis=1)


class _PeakRss:
    """Peak resident memory of this process (sampled every 20 ms), and of it together with its
    child processes (the normalize workers)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self.peak_with_children = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        own = self._proc.memory_info().rss
        total = own
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                total += child.memory_info().rss
        self.peak = max(self.peak, own)
        self.peak_with_children = max(self.peak_with_children, total)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def run(rows: int, naive_sample: int, seed: int, workers: int | None) -> dict[str, Any]:
    mapping = load_mapping(DEMO_MAPPING)
    with _PeakRss() as rss:
        raw, t_gen = _timed(lambda: generate(rows, seed))
        result, t_norm = _timed(lambda: normalize(raw, mapping, workers=workers))
        _, t_valid = _timed(lambda: validate_contacts(result.contacts))
        contacts = result.contacts
        cs_empty, t_diff_empty = _timed(lambda: diff(contacts, empty_snapshot()))
        half = contacts.iloc[::2]
        hashes = half["content_hash"].to_numpy(dtype=object).copy()
        hashes[::3] = "stale-hash"  # a third of the known rows changed since the last sync
        snapshot = pd.DataFrame(
            {
                "business_key": half["business_key"].to_numpy(dtype=object),
                "contact_id": np.char.mod("c-%d", np.arange(len(half))).astype(object),
                "content_hash": hashes,
                "crm_version": half["crm_version"].to_numpy(dtype="int64") - 1,
                "deleted": np.zeros(len(half), dtype=bool),
            }
        )
        cs_half, t_diff_half = _timed(lambda: diff(contacts, snapshot))
    sample = raw.iloc[: min(naive_sample, rows)]
    _, t_naive_sample = _timed(lambda: naive_normalize(sample))
    naive_est = t_naive_sample * rows / max(1, len(sample))
    pipeline = t_norm + t_valid + t_diff_empty
    return {
        "rows": rows,
        "seed": seed,
        "workers": workers,
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
        "seconds": {
            "generate": round(t_gen, 3),
            "normalize": round(t_norm, 3),
            "validate": round(t_valid, 3),
            "diff_empty_snapshot": round(t_diff_empty, 3),
            "diff_half_snapshot": round(t_diff_half, 3),
            "normalize_validate_diff": round(pipeline, 3),
            "naive_sample": round(t_naive_sample, 3),
            "naive_extrapolated": round(naive_est, 3),
        },
        "naive_sample_rows": len(sample),
        "rows_per_second": {
            "normalize": round(rows / t_norm),
            "normalize_validate_diff": round(rows / pipeline),
            "naive_extrapolated": round(rows / naive_est) if naive_est else None,
        },
        "speedup_vs_naive": round(naive_est / t_norm, 2),
        "peak_rss_mib": round(rss.peak / 2**20, 1),
        "outcome": {
            "contacts": len(result.contacts),
            "quarantined": len(result.quarantine),
            "superseded": result.superseded,
            "phones_valid": result.report.phones_valid,
            "phones_present": result.report.phones_present,
            "diff_empty": cs_empty.counts(),
            "diff_half": cs_half.counts(),
        },
    }


def _make_demo(path: Path, rows: int, seed: int) -> None:
    from crm_genesys.crm.demo import generate_demo_crm

    generate_demo_crm(path, rows=rows, seed=seed, now=DEMO_NOW, windows=DEMO_WINDOWS)


def _demo_db(path: Path, rows: int, seed: int) -> float | None:
    """A demo CRM of `rows` rows at `path` (generated in a child process unless one is there).
    Returns the generation time, or None when an existing file was reused."""
    from crm_genesys.crm.demo import read_demo_meta

    if path.exists():
        try:
            meta = read_demo_meta(path)
            if meta.rows == rows and meta.seed == seed and meta.windows == DEMO_WINDOWS:
                return None
        except Exception:  # not a demo CRM: regenerate
            pass
    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    child = ctx.Process(target=_make_demo, args=(path, rows, seed))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"demo CRM generation failed (exit code {child.exitcode})")
    return time.perf_counter() - started


def _pipeline_child(db: str, workers: int | None, conn: Any) -> None:
    conn.send(_pipeline(Path(db), workers))
    conn.close()


def _pipeline(db: Path, workers: int | None) -> dict[str, Any]:
    """extract (whole range) + normalize + validate + diff on the demo CRM at `db`."""
    from crm_genesys.crm.demo import read_demo_meta
    from crm_genesys.crm.source import SqlCrmSource

    mapping = load_mapping(DEMO_MAPPING)
    meta = read_demo_meta(db)
    src = mapping.source
    source = SqlCrmSource(
        f"sqlite:///{db}",
        src.table,
        src.modified_column,
        src.deleted_column,
        src.internal_id_column,
    )
    with _PeakRss() as rss:
        started = time.perf_counter()
        # As the asset does: only the columns the mapping reads (never a denied one).
        raw, t_extract = _timed(
            lambda: source.extract(meta.first_window_start, meta.end, mapping.source_columns())
        )
        rows = len(raw)
        t = time.perf_counter()
        result = normalize(raw, mapping, workers=workers)
        t_norm = time.perf_counter() - t
        del raw  # the asset hands the raw frame on and lets it go
        gc.collect()
        _, t_valid = _timed(lambda: validate_contacts(result.contacts))
        cs, t_diff = _timed(lambda: diff(result.contacts, empty_snapshot()))
        wall = time.perf_counter() - started
    source.dispose()
    return {
        "rows": rows,
        "seconds": {
            "extract": round(t_extract, 3),
            "normalize": round(t_norm, 3),
            "validate": round(t_valid, 3),
            "diff_empty_snapshot": round(t_diff, 3),
            "wall": round(wall, 3),
        },
        "rows_per_second": {
            "normalize": round(rows / t_norm),
            "wall": round(rows / wall),
        },
        "peak_rss_mib": round(rss.peak / 2**20, 1),
        "peak_rss_with_workers_mib": round(rss.peak_with_children / 2**20, 1),
        "outcome": {
            "contacts": len(result.contacts),
            "quarantined": len(result.quarantine),
            "superseded": result.superseded,
            "diff": cs.counts(),
        },
    }


def run_pipeline(rows: int, seed: int, workers: int | None, db: Path | None) -> dict[str, Any]:
    """The pipeline measurement in a fresh spawned process (its peak RSS is its own)."""
    with tempfile.TemporaryDirectory(prefix="bench_normalize_") as tmp:
        path = db if db is not None else Path(tmp) / "demo_crm.sqlite"
        t_gen = _demo_db(path, rows, seed)
        ctx = multiprocessing.get_context("spawn")
        parent, child_conn = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_pipeline_child, args=(str(path), workers, child_conn))
        child.start()
        child_conn.close()
        out: dict[str, Any] = parent.recv()
        child.join()
    out["workers"] = workers if workers is not None else default_workers()
    out["db"] = str(db) if db is not None else "temporary"
    out["generate_db_seconds"] = None if t_gen is None else round(t_gen, 3)
    return out


def _print_pipeline(p: dict[str, Any]) -> None:
    s = p["seconds"]
    print(
        f"\npipeline on the demo CRM: {p['rows']:,} rows (SQLite, SqlCrmSource.extract), "
        f"normalize in {p['workers']} process(es)"
    )
    print(f"{'step':<40} {'seconds':>9} {'rows/s':>12}")
    for name, key in (
        ("extract (whole range)", "extract"),
        ("normalize", "normalize"),
        ("pandera validate", "validate"),
        ("diff vs empty snapshot", "diff_empty_snapshot"),
        ("extract + normalize + validate + diff", "wall"),
    ):
        sec = s[key]
        print(f"{name:<40} {sec:>9.2f} {p['rows'] / sec:>12,.0f}")
    print(
        f"peak RSS: {p['peak_rss_mib']:,} MiB "
        f"({p['peak_rss_with_workers_mib']:,} MiB with normalize worker processes)"
    )
    print(f"outcome: {json.dumps(p['outcome'])}")


def _print(res: dict[str, Any]) -> None:
    s = res["seconds"]
    rows = res["rows"]
    lines = [
        ("generate (not measured work)", s["generate"]),
        ("normalize", s["normalize"]),
        ("pandera validate", s["validate"]),
        ("diff vs empty snapshot", s["diff_empty_snapshot"]),
        ("diff vs half-full snapshot", s["diff_half_snapshot"]),
        ("normalize + validate + diff", s["normalize_validate_diff"]),
        (f"naive, {res['naive_sample_rows']:,} rows measured", s["naive_sample"]),
        (f"naive, extrapolated to {rows:,} rows", s["naive_extrapolated"]),
    ]
    print(f"\nnormalize benchmark: {rows:,} rows, seed {res['seed']}")
    print(f"{'step':<40} {'seconds':>9} {'rows/s':>12}")
    for name, sec in lines:
        rate = f"{rows / sec:,.0f}" if sec and "measured" not in name else ""
        print(f"{name:<40} {sec:>9.2f} {rate:>12}")
    print(f"speed-up of normalize over naive (extrapolated): {res['speedup_vs_naive']}x")
    print(f"peak RSS: {res['peak_rss_mib']:,} MiB")
    print(f"outcome: {json.dumps(res['outcome'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-sample", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--db", type=Path, default=None, help="demo CRM file (kept; reused)")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the demo CRM pipeline")
    parser.add_argument(
        "--also-workers", type=int, default=None, help="measure the pipeline again with W2"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    res = run(args.rows, args.naive_sample, args.seed, args.workers)
    _print(res)
    if not args.no_pipeline:
        res["pipeline"] = run_pipeline(args.rows, args.seed, args.workers, args.db)
        _print_pipeline(res["pipeline"])
        if args.also_workers is not None:
            key = f"pipeline_workers_{args.also_workers}"
            res[key] = run_pipeline(args.rows, args.seed, args.also_workers, args.db)
            _print_pipeline(res[key])
    res["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    print(f"benchmark took {res['benchmark_seconds']} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
