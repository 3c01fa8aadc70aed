"""The expected-contacts oracle, on a tiny hand-made CRM where every rule has its own row."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crm_genesys.crm import _pools as pools
from crm_genesys.crm.demo import CREATE_CONTACTS, DemoMeta
from crm_genesys_tests.oracle import (
    email_is_valid,
    expected_contacts,
    expected_keys,
    region_of,
    trim,
)

START = datetime(2024, 6, 1, 0, tzinfo=UTC)
END = datetime(2024, 6, 1, 12, tzinfo=UTC)
US_MOBILE = "(201) 555-0123"
DE_NATIONAL = "030 123456"


def make_db(path: Path, rows: list[dict[str, object]]) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(CREATE_CONTACTS)
    for i, row in enumerate(rows, start=1):
        values = {"id": i, "is_deleted": 0, **row}
        names = ", ".join(values)
        conn.execute(
            f"INSERT INTO contacts ({names}) VALUES ({', '.join('?' * len(values))})",
            list(values.values()),
        )
    conn.commit()
    conn.close()
    return path


def t(hour: int, minute: int = 0) -> str:
    return f"2024-06-01 {hour:02d}:{minute:02d}:00.000000"


def person(key: str | None, at: str, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "account_number": key,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "country": "US",
        "mobile_phone": US_MOBILE,
        "modified_at": at,
    }
    return {**base, **extra}


@pytest.fixture
def crm(tmp_path: Path) -> Path:
    rows = [
        person("AC-1", t(1)),  # plain: expected
        person(None, t(1)),  # no key
        person("   ", t(1)),  # blank key
        person(" AC-2\t", t(1), first_name=" \u200bZoe\u0301 ", last_name="\x07Smith"),  # trims
        person("AC-3", t(1)),
        person("AC-3", t(2), is_deleted=1),  # latest is a tombstone
        person("AC-4", t(1), is_deleted=1),
        person("AC-4", t(3), first_name="Back"),  # revived after a tombstone
        person("AC-5", t(1), first_name="Old"),
        person("AC-5", t(2), first_name="New"),  # later version wins
        person("AC-6", t(2), first_name="Low id"),
        person("AC-6", t(2), first_name="High id"),  # tie on time: higher id wins
        person("AC-7", t(1), first_name=None, last_name=" "),  # no name
        person("AC-8", t(1), first_name=None),  # last name alone is enough
        person("AC-9", t(1), mobile_phone="N/A"),  # no reachable phone, no e-mail
        person("AC-10", t(1), mobile_phone="N/A", email=" ada@example.com "),  # e-mail saves it
        person("AC-11", t(1), mobile_phone=None, email="ada@example"),  # no dot in domain
        person("AC-12", t(1), mobile_phone=None, email="ada@@example.com"),
        person("AC-13", t(1), mobile_phone=DE_NATIONAL, country="Germany"),  # name → DE
        person("AC-14", t(1), mobile_phone=DE_NATIONAL, country=" de "),  # lower, padded
        person("AC-15", t(1), mobile_phone=DE_NATIONAL, country=None),  # US default: invalid
        person("AC-16", t(1), mobile_phone="+49 30 123456", country=None),  # E.164-ish: valid
        person("AC-17", t(1), mobile_phone=None, fax=US_MOBILE + " ext. 45"),  # fax counts
        person("AC-18", t(12)),  # at END: outside
        person("AC-19", "2024-05-31 23:59:59.999999"),  # before START: outside
        person("AC-20", t(1), mobile_phone=None, other_email="a..b@example.com"),
        person("AC-21", t(11, 59)),
    ]
    return make_db(tmp_path / "tiny.sqlite", rows)


def test_the_rules_row_by_row(crm: Path) -> None:
    got = expected_contacts(crm, START, END)
    assert set(got) == {
        "AC-1", "AC-2", "AC-4", "AC-5", "AC-6", "AC-8", "AC-10", "AC-13", "AC-14", "AC-16",
        "AC-17", "AC-20", "AC-21",
    }  # fmt: skip
    assert expected_keys(crm, START, END) == set(got)
    assert (got["AC-2"].first_name, got["AC-2"].last_name) == ("Zoé", "Smith")
    assert got["AC-2"].first_name == "Zo\u00e9"  # NFC, not "Zoe" + combining accent
    assert got["AC-4"].first_name == "Back"
    assert got["AC-5"].first_name == "New"
    assert got["AC-6"].first_name == "High id"
    assert got["AC-8"].first_name is None and got["AC-8"].last_name == "Lovelace"
    assert got["AC-5"].modified_at == t(2)


def test_strict_dots_and_range(crm: Path) -> None:
    assert "AC-20" not in expected_keys(crm, START, END, strict_dots=True)
    # Naive bounds are UTC; a narrower range sees only its own rows' latest versions.
    narrow = expected_contacts(crm, datetime(2024, 6, 1, 2), datetime(2024, 6, 1, 4))
    assert set(narrow) == {"AC-4", "AC-5", "AC-6"}  # AC-3's tombstone at 02:00 is latest → out


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a@example.com", True),
        (" A.B@Example.COM\t", True),
        ("a@example", False),
        ("a@@example.com", False),
        ("a b@example.com", False),
        ("@example.com", False),
        ("a@.com", False),
        ("a@example.", False),
        ("aexample.com", False),
        (None, False),
        ("", False),
    ],
)
def test_email_rule(value: str | None, ok: bool) -> None:
    assert email_is_valid(value) is ok


def test_trim_and_region() -> None:
    assert trim(" \u200b\x07 x y \t\r\n") == "x y"
    assert trim(None) == ""
    assert region_of("gb") == "GB" and region_of("United Kingdom") == "GB"
    assert region_of("Atlantis") is None and region_of("  ") is None


def test_every_country_spelling_of_the_demo_is_understood() -> None:
    """The oracle keeps its own name table; it must cover what the generator writes."""
    for code, _, _, name in pools.COUNTRIES:
        assert region_of(name) == code
        assert region_of(code.lower()) == code
    for code, aliases in pools.COUNTRY_ALIASES.items():
        for alias in aliases:
            assert region_of(alias) == code


def test_on_the_demo_most_live_keys_are_expected(demo_db: tuple[Path, DemoMeta]) -> None:
    path, meta = demo_db
    got = expected_contacts(path, meta.first_window_start, meta.end)
    conn = sqlite3.connect(path)
    (keys,) = conn.execute(
        "SELECT COUNT(DISTINCT trim(account_number)) FROM contacts WHERE trim(account_number) != ''"
    ).fetchone()
    conn.close()
    # ~2.5 % of keys end deleted and a few % are unsyncable: the rest must be expected.
    assert 0.85 * keys < len(got) < 0.99 * keys
    assert all(c.first_name or c.last_name for c in got.values())
    assert all(c.business_key == c.business_key.strip() for c in got.values())
