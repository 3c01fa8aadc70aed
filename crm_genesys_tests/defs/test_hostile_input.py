"""Hostile CRM rows through the whole window job into the emulator.

Rows built by hypothesis (any unicode, bidi and invisible characters, NULs, huge strings, markup
as tags and as entities, injection-looking strings, bytes and numbers where text belongs,
duplicated keys, unreadable and out-of-range times) are written into a demo CRM and synced with
`sync_job`. Whatever they hold: the run succeeds, every extracted row is accounted for, every
quarantined row has a reason, rows whose time is unreadable or out of range are reported by the
`crm_times` check, and no text a person reads in Genesys holds markup or invisible characters.
"""

from __future__ import annotations

import html
import re
import sqlite3
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from crm_genesys.sync.accounting import BUCKETS
from crm_genesys_tests.defs.conftest import NOW, WINDOWS, World, make_world
from crm_genesys_tests.oracle import instant

WINDOW = WINDOWS[1]
WINDOW_START = datetime.strptime(WINDOW, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(hours=1)

# Invisible and control characters a CRM export or a paste from a web page can carry.
INVISIBLES = (
    "\x00\x01\x07\x08\x0b\x0c\x1b\x7f\x85\x9f\u00ad\u061c\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2066\u2067\u2068\u2069\ufeff"
    "\ufff9\ufffa\ufffb\U000e0001\U000e0041\U0001d173"
)
MARKUP = (
    "<script>alert(1)</script>",
    "<b>bold</b>",
    "<img src=x onerror=alert(1)>",
    "<!-- note -->",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&amp;lt;b&amp;gt;",
    "&#60;i&#62;",
    "&#x3c;svg onload=alert(1)&#x3e;",
    "&l\u200bt;b&g\u200bt;",
    "<<b>b>",
    "&nbsp;&copy;&#0;&#x202e;",
)
INJECTIONS = (
    "'; DROP TABLE contacts; --",
    '" OR "1"="1',
    "{{7*7}}",
    "${jndi:ldap://example.invalid/a}",
    '=HYPERLINK("http://example.invalid")',
    "../../etc/passwd",
    "%s%s%n",
    "\\u0000",
    '{"$where": "1"}',
    "AC-1\r\nX-Injected: 1",
)
TEXT_COLUMNS = (
    "salutation", "first_name", "middle_name", "last_name", "job_title", "company", "country",
    "work_phone", "mobile_phone", "home_phone", "fax", "email", "personal_email", "other_email",
    "street", "street2", "city", "region", "postal_code", "customer_tier", "preferred_language",
    "sms_consent", "lifetime_value", "last_purchase_date", "loyalty_id", "website", "notes",
)  # fmt: skip

_invisible = st.text(alphabet=st.sampled_from(INVISIBLES + "ab <>&;#"), max_size=12)
_huge = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["x", "é", "\U0001d518", "<b>", "&amp;", "\u202e", " "]),
    st.integers(300, 20_000),
)
_mixed = st.builds(
    lambda parts: "".join(parts),
    st.lists(
        st.one_of(
            st.text(max_size=8), st.sampled_from(MARKUP), st.sampled_from(INJECTIONS), _invisible
        ),
        max_size=4,
    ),
)
hostile_value = st.one_of(
    st.none(),
    st.text(),
    _mixed,
    _invisible,
    st.sampled_from(MARKUP + INJECTIONS),
    st.sampled_from(["Ana", "+1 317 222 2222", "ana@example.com", "Gold", "DE", "de"]),
    _huge,
    st.binary(max_size=12),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
# Keys from a small pool, so that one batch holds several versions of one key, plus odd ones.
hostile_key = st.one_of(
    st.sampled_from(["HX-1", "HX-2", "HX-3", " HX-1 ", "HX-1\u200b", "\u202eHX-2"]),
    st.none(),
    st.sampled_from(["", "   ", "<b>HX-4</b>", "HX-'; DROP TABLE contacts; --", "K" * 400]),
    st.text(min_size=1, max_size=20),
)


def _in_window(offset_us: int, style: int) -> str:
    moment = WINDOW_START + timedelta(microseconds=offset_us)
    if style == 0:
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    if style == 1:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


UNREADABLE = ("not a date", "2026-02-30 10:00:00", "2026-11-29 25:00:00", "11/29/2026", "\x00")
MISSING = ("", "   ")  # the demo table declares modified_at NOT NULL
OUT_OF_RANGE = ("9999-12-31 23:59:59", "0001-01-01 00:00:00", "2999-01-01 00:00:00.000001")

# Kind of time → values; the test knows which kind each row got.
hostile_time = st.one_of(
    st.tuples(
        st.just("in_window"),
        st.builds(_in_window, st.integers(0, 3_600_000_000 - 1_000_000), st.integers(0, 2)),
    ),
    st.tuples(st.just("unreadable"), st.sampled_from(UNREADABLE)),
    st.tuples(st.just("missing"), st.sampled_from(MISSING)),
    st.tuples(st.just("out_of_range"), st.sampled_from(OUT_OF_RANGE)),
)


@st.composite
def hostile_row(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind, stamp = draw(hostile_time)
    row: dict[str, Any] = {c: draw(hostile_value) for c in TEXT_COLUMNS}
    # Mostly a reachable address, so that the hostile rest of the row reaches Genesys.
    row["email"] = draw(st.one_of(st.just("ana@example.com"), st.just(" Ana@Example.COM\u200b"),
                                  hostile_value))  # fmt: skip
    row["account_number"] = draw(hostile_key)
    row["modified_at"] = stamp
    row["is_deleted"] = draw(st.sampled_from([0, 0, 0, 1, "1", "yes", 2, -1]))
    return kind, row


def _insert(crm_path: Path, rows: list[dict[str, Any]]) -> None:
    with sqlite3.connect(crm_path) as conn:
        (top,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM contacts").fetchone()
        for k, row in enumerate(rows):
            columns = ["id", *row]
            conn.execute(
                f"INSERT INTO contacts ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                [top + 1 + k, *row.values()],
            )


def _rows_in(crm_path: Path, start: datetime, end: datetime) -> int:
    """Rows of the table whose time lies in [start, end), read independently of the pipeline."""
    with sqlite3.connect(crm_path) as conn:
        values = [v for (v,) in conn.execute("SELECT modified_at FROM contacts")]
    inside = 0
    for value in values:
        moment = instant(value) if isinstance(value, str) else None
        if moment is not None and start <= moment < end:
            inside += 1
    return inside


@contextmanager
def fresh_world() -> Iterator[World]:
    """A world of its own per hypothesis example (function fixtures are shared by examples)."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as monkeypatch:
        worlds = make_world(Path(tmp), monkeypatch, NOW)
        try:
            yield next(worlds)
        finally:
            worlds.close()


# Where people read text: every string of a contact but identifiers, addresses and links
# (ExternalIds carry the CRM key as it is; e-mails, phones and URLs are validated formats).
_NOT_PROSE = {"id", "externalIds", "workEmail", "personalEmail", "otherEmail", "schema",
              "division", "workPhone", "cellPhone", "homePhone", "otherPhone", "website_url",
              "loyalty_id_identifier", "createDate", "modifyDate", "selfUri"}  # fmt: skip
# Tags of HTML elements (and comments) a browser would act on; "<not phone>" is prose.
_TAG = re.compile(
    r"(?i)<!--|<\s*/?\s*(?:a|abbr|b|big|blink|body|br|button|center|code|del|div|em|embed|font|"
    r"form|h[1-6]|head|hr|html|i|iframe|img|input|ins|label|li|link|marquee|meta|object|ol|"
    r"option|p|pre|s|script|select|small|span|strike|strong|style|sub|sup|svg|table|tbody|td|"
    r"template|textarea|th|tr|u|ul|video)(?=[\s/>])[^<>]*>"
)
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def text_problems(contact: dict[str, Any]) -> list[str]:
    """What in a contact an agent would see that is not plain text: invisible or control
    characters (anywhere but a textarea's line breaks), tags or decodable entities in prose."""
    problems = []
    for path, text in _strings(contact):
        bad = [
            f"U+{ord(ch):04X}"
            for ch in text
            if unicodedata.category(ch) in _INVISIBLE_CATEGORIES and ch != "\n"
        ]
        if bad:
            problems.append(f"{path}: invisible {sorted(set(bad))[:5]} in {text[:60]!r}")
        top = path.split(".")[0].split("[")[0]
        field = path.split(".")[-1]
        if top in _NOT_PROSE or field in _NOT_PROSE:
            continue
        if _TAG.search(text) or html.unescape(text) != text:
            problems.append(f"{path}: markup in {text[:80]!r}")
    return problems


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    # Each example is a whole Dagster run: shrinking would take minutes; a failure prints its rows.
    phases=(Phase.explicit, Phase.generate),
)
@given(st.lists(hostile_row(), min_size=1, max_size=25))
@example(
    [
        (
            "in_window",
            {
                **dict.fromkeys(TEXT_COLUMNS),
                "account_number": "HX-9",
                "first_name": "Ana\u2066\u00ad\U000e0041",
                "last_name": "&lt;script&gt;alert(1)&lt;/script&gt;Diaz",
                "job_title": "&l\u200bt;b&g\u200bt;Boss",
                "company": "&amp;lt;b&amp;gt;ACME",
                "city": "<<b>b>Paris",
                "street": "&#x3c;svg onload=alert(1)&#x3e; 1 Main St",
                "notes": "&lt;i&gt;VIP&lt;/i&gt;\u2067 call &#x202e;back",
                "email": "ana@example.com",
                "modified_at": _in_window(5_000_000, 0),
                "is_deleted": 0,
            },
        )
    ]
)
def test_hostile_rows_sync_without_crash_loss_or_markup(
    rows: list[tuple[str, dict[str, Any]]],
) -> None:
    with fresh_world() as world:
        _insert(world.crm_path, [row for _, row in rows])

        result = world.materialize(WINDOW, raise_on_error=False)
        assert result.success, [
            e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"
        ]
        (extract,) = result.asset_materializations_for_node("crm_contacts")
        extract_from = datetime.fromisoformat(str(extract.metadata["extract_from"].value))
        expected_extracted = _rows_in(world.crm_path, extract_from, WINDOW_END)

        (sync,) = result.asset_materializations_for_node("genesys_sync")
        account = {k: v.value for k, v in sync.metadata.items()}
        assert account["accounted"] is True
        assert account["failed"] == 0
        assert account["extracted"] == expected_extracted
        assert account["extracted"] == sum(account[b] for b in BUCKETS)

        (normalized,) = result.asset_materializations_for_node("normalized_contacts")
        meta = {k: v.value for k, v in normalized.metadata.items()}
        reasons = {r.data["reason"]: r.data["rows"] for r in meta["quarantine_reasons"].records}
        assert sum(reasons.values()) == account["quarantined"] == meta["quarantined"]
        assert all(str(reason).strip() for reason in reasons)

        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        times = {k: v.value for k, v in checks["crm_times"].metadata.items()}
        kinds = [kind for kind, _ in rows]
        assert times.get("unreadable", 0) == kinds.count("unreadable")
        assert times.get("missing", 0) == kinds.count("missing")
        assert times.get("before_first_window", 0) + times.get("in_future", 0) == kinds.count(
            "out_of_range"
        )
        assert checks["crm_times"].passed == (kinds.count("in_window") == len(kinds))

        problems = [p for c in world.emulator.all_contacts() for p in text_problems(c)]
        assert not problems, problems[:10]


def test_the_text_check_sees_markup_and_invisible_characters() -> None:
    """The predicate above fails on what it must catch (so a clean run means something)."""
    assert text_problems({"firstName": "Ana\u2066"})
    assert text_problems({"lastName": "&lt;b&gt;"})
    assert text_problems({"address": {"city": "<b>Paris</b>"}})
    assert text_problems({"customFields": {"notes_text": "a\x00b"}})
    assert not text_problems({"customFields": {"notes_text": "line one\nline two"}})
    assert not text_problems({"lastName": "Smith & Sons <3"})
    assert not text_problems({"customFields": {"notes_text": "Prefers e-mail <not phone>"}})
    assert text_problems({"title": "<!-- x -->"})
    assert not text_problems({"externalIds": [{"value": "<b>HX-4</b>"}]})
