"""The demo CRM generator: determinism, shape, windows, and that every kind of mess is there."""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import phonenumbers
import pytest

from crm_genesys.crm import _pools as pools
from crm_genesys.crm.demo import (
    CONTACT_COLUMNS,
    DemoMeta,
    format_modified,
    generate_demo_crm,
    parse_modified,
    read_demo_meta,
)
from crm_genesys.crm.instants import window_floor

from .conftest import NOW, ROWS, rows_of

MODIFIED_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")


def test_same_seed_same_rows_other_seed_other_rows(tmp_path: Path) -> None:
    now = datetime(2024, 3, 3, 3, 3, tzinfo=UTC)
    a, b, c = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "c.sqlite"
    generate_demo_crm(a, rows=1_500, seed=11, now=now)
    generate_demo_crm(b, rows=1_500, seed=11, now=now)
    generate_demo_crm(c, rows=1_500, seed=12, now=now)
    assert rows_of(a) == rows_of(b)
    assert rows_of(a) != rows_of(c)


def test_regenerating_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.sqlite"
    generate_demo_crm(path, rows=300, now=NOW)
    generate_demo_crm(path, rows=200, now=NOW)
    assert len(rows_of(path)) == 200


def test_table_shape_and_types(demo_db: tuple[Path, DemoMeta]) -> None:
    path, _ = demo_db
    conn = sqlite3.connect(path)
    info = conn.execute("PRAGMA table_info(contacts)").fetchall()
    assert tuple(r[1] for r in info) == CONTACT_COLUMNS
    assert {r[1]: r[2] for r in info}["id"] == "INTEGER"
    assert [r[5] for r in info if r[1] == "id"] == [1]  # primary key
    indexes = {r[1]: r[2] for r in conn.execute("PRAGMA index_list(contacts)")}
    cols = {name: [c[2] for c in conn.execute(f"PRAGMA index_info({name})")] for name in indexes}
    assert ["modified_at"] in cols.values()
    (count,) = conn.execute("SELECT COUNT(*) FROM contacts").fetchone()
    assert count == ROWS
    kinds = conn.execute(
        "SELECT typeof(id), typeof(is_deleted), typeof(modified_at) FROM contacts"
    ).fetchall()
    assert set(kinds) == {("integer", "integer", "text")}
    assert {r[0] for r in conn.execute("SELECT DISTINCT sms_consent FROM contacts")} <= {0, 1, None}
    ltv = {r[0] for r in conn.execute("SELECT DISTINCT typeof(lifetime_value) FROM contacts")}
    assert ltv == {"real", "null"}
    conn.close()


def test_modified_at_fills_the_complete_windows_before_now(
    demo_db: tuple[Path, DemoMeta],
) -> None:
    path, meta = demo_db
    # now=12:34:56 with hourly windows → [00:00, 01:00) … [11:00, 12:00)
    assert meta.end == datetime(2024, 6, 1, 12, tzinfo=UTC)
    assert meta.first_window_start == datetime(2024, 6, 1, 0, tzinfo=UTC)
    stamps = [str(r["modified_at"]) for r in rows_of(path)]
    assert all(MODIFIED_RE.match(s) for s in stamps)
    per_window = Counter(window_floor(parse_modified(s), meta.window) for s in stamps)
    assert sorted(per_window) == [start for start, _ in meta.generated_windows()]
    assert min(per_window.values()) > ROWS / 12 / 2  # spread, not bunched


def test_window_alignment_for_other_lengths() -> None:
    moment = datetime(2024, 6, 1, 12, 34, tzinfo=UTC)
    assert window_floor(moment, timedelta(minutes=15)) == datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    assert window_floor(moment, timedelta(days=1)) == datetime(2024, 6, 1, tzinfo=UTC)
    naive = datetime(2024, 6, 1, 12, 34)
    assert window_floor(naive, timedelta(hours=1)) == datetime(2024, 6, 1, 12, tzinfo=UTC)
    assert parse_modified(format_modified(moment)) == moment


def test_meta_round_trip(demo_db: tuple[Path, DemoMeta]) -> None:
    path, meta = demo_db
    stored = read_demo_meta(path)
    assert stored == meta
    assert (stored.seed, stored.rows, stored.windows) == (7, ROWS, 12)
    assert stored.data_windows() == meta.generated_windows()


def test_keys_duplicates_and_tombstones(demo_db: tuple[Path, DemoMeta]) -> None:
    path, meta = demo_db
    rows = rows_of(path)
    keys = [r["account_number"] for r in rows]
    blank = [k for k in keys if k is None or not str(k).strip()]
    padded = [k for k in keys if k and str(k).strip() and str(k) != str(k).strip()]
    assert blank and padded
    assert all(re.match(r"^AC-\d{7}$", str(k).strip()) for k in keys if k and str(k).strip())

    by_key: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        if r["account_number"] and str(r["account_number"]).strip():
            by_key.setdefault(str(r["account_number"]).strip(), []).append(r)

    def window(r: dict[str, object]) -> datetime:
        return window_floor(parse_modified(str(r["modified_at"])), meta.window)

    same_window_dups = 0
    later_tombstones = 0
    for versions in by_key.values():
        live = [v for v in versions if v["is_deleted"] == 0]
        dead = [v for v in versions if v["is_deleted"] == 1]
        if len(live) > 1 and len({window(v) for v in live}) < len(live):
            same_window_dups += 1
            assert len({v["modified_at"] for v in live}) == len(live)  # distinct versions
        if any(window(d) > window(v) for d in dead for v in live):
            later_tombstones += 1
    assert same_window_dups >= ROWS // 100 * 0.9
    assert later_tombstones >= ROWS // 50 * 0.9
    never_live = [k for k, vs in by_key.items() if all(v["is_deleted"] == 1 for v in vs)]
    assert never_live
    minimal = [r for r in rows if r["is_deleted"] == 1 and r["first_name"] is None]
    assert minimal


def test_names_in_many_scripts_with_mess(demo_db: tuple[Path, DemoMeta]) -> None:
    rows = rows_of(demo_db[0])
    names = [str(r["first_name"] or "") + str(r["last_name"] or "") for r in rows]
    scripts = {
        "latin_diacritics": r"[À-ž]",
        "cyrillic": r"[\u0400-\u04FF]",
        "greek": r"[\u0370-\u03FF]",
        "cjk": r"[\u4E00-\u9FFF\u3040-\u30FF]",
        "arabic": r"[\u0600-\u06FF]",
        "devanagari": r"[\u0900-\u097F]",
        "hangul": r"[\uAC00-\uD7AF]",
    }
    for script, pattern in scripts.items():
        assert sum(bool(re.search(pattern, n)) for n in names) >= 5, script
    firsts = [r["first_name"] for r in rows if isinstance(r["first_name"], str)]
    assert any(f != unicodedata.normalize("NFC", f) for f in firsts)  # decomposed
    assert any(f != f.strip() for f in firsts)
    assert any(re.search(r"[\x00-\x1f\u200b]", f) for f in firsts)
    nameless = [
        r
        for r in rows
        if r["is_deleted"] == 0
        and not str(r["first_name"] or "").strip()
        and not str(r["last_name"] or "").strip()
    ]
    assert len(nameless) >= ROWS * 0.005


def test_phones_in_many_formats_and_some_garbage(demo_db: tuple[Path, DemoMeta]) -> None:
    rows = rows_of(demo_db[0])
    phones = [
        str(r[c]) for r in rows for c in ("work_phone", "mobile_phone", "home_phone", "fax") if r[c]
    ]
    patterns = {
        "e164": r"^\+\d{8,15}$",
        "intl_spaces": r"^\+\d{1,3} \d",
        "parens": r"^\(\d+\) ",
        "dots": r"^\d+\.\d+\.\d+",
        "dashes": r"^\d+-\d+",
        "00": r"^00\d{8,}$",
        "011": r"^011 ",
        "trunk_0": r"^0\d",
        "trunk_1": r"^1-\d{3}-",
        "(0)": r"\(0\)",
        "ext_x": r" x\d+$",
        "ext_dot": r" ext\. \d+$",
        "ext_rfc": r";ext=\d+$",
        "garbage": r"^(N/A|call me|unknown|TBD)$",
        "too_short": r"^\d{3,6}$",
    }
    for kind, pattern in patterns.items():
        assert sum(bool(re.search(pattern, p)) for p in phones) >= 5, kind
    countries = Counter(
        phonenumbers.region_code_for_number(phonenumbers.parse(p))
        for p in phones
        if p.startswith("+") and " x" not in p and "ext" not in p
    )
    assert {"US", "CA", "GB", "DE", "FR", "IN", "AU", "JP", "BR", "MX"} <= set(countries)
    assert {"ES", "IT", "NL", "SG", "ZA"} <= set(countries)


def test_most_phones_are_valid_for_the_row_country_and_some_are_not(
    demo_db: tuple[Path, DemoMeta],
) -> None:
    """With a clean country code, ~85 % of phones must be valid and a few % invalid."""
    valid = invalid = 0
    for r in rows_of(demo_db[0]):
        country = r["country"]
        if not (isinstance(country, str) and re.fullmatch(r"[A-Z]{2}", country)):
            continue
        for c in ("work_phone", "mobile_phone"):
            if not r[c]:
                continue
            try:
                ok = phonenumbers.is_valid_number(phonenumbers.parse(str(r[c]), country))
            except phonenumbers.NumberParseException:
                ok = False
            valid += ok
            invalid += not ok
    assert valid / (valid + invalid) > 0.8
    assert invalid / (valid + invalid) > 0.05


def test_phone_pool_cells_are_what_they_claim() -> None:
    pp = pools.phone_pool()
    for c, region in enumerate(pools.COUNTRY_CODES):
        for t in range(2):
            for i in range(0, pools.PHONE_POOL_SIZE, 5):
                for text in pp.valid[c, t, i]:
                    assert phonenumbers.is_valid_number(phonenumbers.parse(text, region)), text
                for text in (pp.e164[c, t, i], pp.international[c, t, i]):
                    assert phonenumbers.is_valid_number(phonenumbers.parse(text, "ZZ")), text
                bad = pp.invalid[c, t, i]
                assert not phonenumbers.is_valid_number(phonenumbers.parse(bad, region)), bad


def test_country_column_mess(demo_db: tuple[Path, DemoMeta]) -> None:
    values = Counter(r["country"] for r in rows_of(demo_db[0]))
    upper = sum(n for v, n in values.items() if isinstance(v, str) and re.fullmatch("[A-Z]{2}", v))
    lower = sum(n for v, n in values.items() if isinstance(v, str) and re.fullmatch("[a-z]{2}", v))
    named = sum(n for v, n in values.items() if isinstance(v, str) and len(v.strip()) > 3)
    blank = sum(n for v, n in values.items() if v is None or not str(v).strip())
    assert upper > ROWS * 0.7
    assert lower > ROWS * 0.02 and named > ROWS * 0.02 and blank > ROWS * 0.02


def test_email_mess(demo_db: tuple[Path, DemoMeta]) -> None:
    rows = rows_of(demo_db[0])
    emails = [str(r[c]) for r in rows for c in ("email", "personal_email") if r[c] is not None]
    checks = {
        "no_at": lambda e: e.strip() != "" and "@" not in e,
        "double_dot": lambda e: ".." in e,
        "two_at": lambda e: e.count("@") == 2,
        "padded": lambda e: e != e.strip(),
        "mixed_case": lambda e: e != e.lower(),
        "inner_space": lambda e: " " in e.strip(),
        "no_dot_domain": lambda e: e.count("@") == 1 and "." not in e.split("@")[1],
        "blank": lambda e: e == "",
    }
    for kind, check in checks.items():
        assert sum(check(e) for e in emails) >= 5, kind
    well_formed = sum(bool(re.fullmatch(r"[a-z0-9._]+@[a-z0-9.]+\.[a-z]+", e)) for e in emails)
    assert well_formed > len(emails) * 0.7
    missing = sum(r["email"] is None for r in rows)
    assert missing > ROWS * 0.1


def test_html_notes_pii_and_long_values(demo_db: tuple[Path, DemoMeta]) -> None:
    rows = rows_of(demo_db[0])
    notes = [str(r["notes"]) for r in rows if r["notes"]]
    assert any("<script>" in n for n in notes) and any("&amp;" in n for n in notes)
    ids = [str(r["national_id"]) for r in rows if r["national_id"]]
    assert sum(bool(re.fullmatch(r"\d{3}-\d{2}-\d{4}", i)) for i in ids) > 50  # SSN-like
    assert sum(bool(re.fullmatch(r"[A-Z]{2}\d{6}[A-D]", i)) for i in ids) > 20  # NINO-like
    dobs = [str(r["date_of_birth"]) for r in rows if r["date_of_birth"]]
    assert dobs and all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) for d in dobs)
    assert any(len(str(r["company"] or "")) > 255 for r in rows)


def test_unreachable_rows_exist(demo_db: tuple[Path, DemoMeta]) -> None:
    def reachable(r: dict[str, object]) -> bool:
        phones = [r[c] for c in ("work_phone", "mobile_phone", "home_phone", "fax")]
        mails = [r[c] for c in ("email", "personal_email", "other_email")]
        return any(p and re.search(r"\d{7}", re.sub(r"\D", "", str(p))) for p in phones) or any(
            m and "@" in str(m) for m in mails
        )

    live = [r for r in rows_of(demo_db[0]) if r["is_deleted"] == 0]
    assert sum(not reachable(r) for r in live) >= ROWS * 0.005


@pytest.mark.parametrize("windows", [1, 3])
def test_small_and_single_window_generations(tmp_path: Path, windows: int) -> None:
    path = tmp_path / "d.sqlite"
    meta = generate_demo_crm(path, rows=120, seed=3, now=NOW, windows=windows)
    rows = rows_of(path)
    assert len(rows) == 120
    assert sorted(int(str(r["id"])) for r in rows) == list(range(1, 121))
    starts = {window_floor(parse_modified(str(r["modified_at"])), meta.window) for r in rows}
    assert starts <= {s for s, _ in meta.generated_windows()}


def test_ids_are_not_in_key_order(demo_db: tuple[Path, DemoMeta]) -> None:
    """Internal ids say nothing about keys: sorted by key, ids are not increasing."""
    rows = [r for r in rows_of(demo_db[0]) if r["account_number"]]
    by_key = sorted(rows, key=lambda r: str(r["account_number"]).strip())
    ids = np.array([int(str(r["id"])) for r in by_key])
    assert (np.diff(ids) < 0).mean() > 0.3


@pytest.mark.parametrize("rows", [1, 7, 50])
def test_tiny_demo_crms_have_exactly_the_rows_asked_for(tmp_path: Path, rows: int) -> None:
    path = tmp_path / "tiny.sqlite"
    generate_demo_crm(
        path, rows=rows, seed=1, now=datetime(2026, 11, 29, 12, tzinfo=UTC), windows=2
    )
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == rows
