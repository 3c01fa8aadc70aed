"""What Genesys should hold after syncing a time range of the demo CRM — computed independently.

This is a test oracle for end-to-end tests. It reads the SQLite file row by row with the standard
library and decides with plain Python and `phonenumbers`; it deliberately shares no code with the
project's normalization (`crm_genesys.contacts`), the generator or the source, so a mistake in the
vectorized pipeline cannot hide behind the same mistake here.

The rule (`expected_contacts`), for rows whose `modified_at`, read by `datetime.fromisoformat`
(naive = UTC; `T` or space, `Z` or an offset: any representation the demo writes), lies in
[start, end):
1. Business key = `account_number` trimmed (see TRIM). Rows whose key is NULL or empty after
   trimming are ignored (they are quarantined, never synced).
2. Per key, only the latest row counts: the latest `modified_at` instant, ties broken by the
   greater `id`.
3. The key is expected in Genesys iff that latest row has `is_deleted` = 0 and is syncable:
   a. first_name or last_name is non-empty after TRIM, and
   b. at least one of work_phone, mobile_phone, home_phone, fax parses with
      `phonenumbers.parse(value, region)` and `phonenumbers.is_valid_number` is true, where region
      is the row's country (see COUNTRY) or "US" when that gives nothing; or at least one of
      email, personal_email, other_email is a valid e-mail (see EMAIL).
TRIM: strip leading/trailing characters that are whitespace (`str.isspace`) or Unicode category
Cc/Cf (control, format: TAB, BEL, zero-width space …); inner characters are kept. Names are then
NFC-normalized.
COUNTRY: the country value, TRIMmed and upper-cased, if it is a two-letter region `phonenumbers`
knows; else the English names / aliases in `COUNTRY_NAMES` (case-insensitive); else none.
EMAIL: after TRIM, no whitespace inside, exactly one "@", a non-empty local part, and a domain
containing "." with no empty label (so "a@b", "a@.com", "a@b." fail); with `strict_dots`, a ".."
anywhere also fails (default off: the brief's rule accepts "john..doe@example.com").

Why "latest version" is enough: the demo generator and simulator only ever add later versions
that stay syncable when the earlier one was (new phones are international, new e-mails
well-formed, names untouched). On other data, a later unsyncable version would leave an older
one in Genesys, which this rule does not model.
"""

from __future__ import annotations

import os
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import phonenumbers

PHONE_COLUMNS = ("work_phone", "mobile_phone", "home_phone", "fax")
EMAIL_COLUMNS = ("email", "personal_email", "other_email")
DEFAULT_REGION = "US"

# Country spellings the demo CRM uses besides alpha-2 codes (kept here, not imported, on purpose).
COUNTRY_NAMES: dict[str, str] = {
    "united states": "US",
    "usa": "US",
    "canada": "CA",
    "united kingdom": "GB",
    "uk": "GB",
    "germany": "DE",
    "deutschland": "DE",
    "france": "FR",
    "india": "IN",
    "australia": "AU",
    "japan": "JP",
    "brazil": "BR",
    "mexico": "MX",
    "spain": "ES",
    "italy": "IT",
    "netherlands": "NL",
    "singapore": "SG",
    "south africa": "ZA",
    "russia": "RU",
    "greece": "GR",
    "south korea": "KR",
    "united arab emirates": "AE",
    "china": "CN",
}


@dataclass(frozen=True)
class ExpectedContact:
    """One contact Genesys should hold: its key and the names it should carry."""

    business_key: str
    first_name: str | None  # TRIMmed, NFC; None when empty
    last_name: str | None
    crm_id: int
    modified_at: str


def trim(value: object) -> str:
    """TRIM as documented in the module docstring; None → ""."""
    if value is None:
        return ""
    text = str(value)
    start, end = 0, len(text)
    while start < end and _is_trimmed(text[start]):
        start += 1
    while end > start and _is_trimmed(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_trimmed(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")


def region_of(country: object) -> str | None:
    """COUNTRY as documented: a region code or None."""
    text = trim(country)
    if not text:
        return None
    upper = text.upper()
    if len(upper) == 2 and upper in phonenumbers.SUPPORTED_REGIONS:
        return upper
    return COUNTRY_NAMES.get(text.lower())


def phone_is_valid(value: object, region: str) -> bool:
    """True when `phonenumbers` parses `value` with `region` into a valid number."""
    text = trim(value)
    if not text:
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, region))
    except phonenumbers.NumberParseException:
        return False


def email_is_valid(value: object, *, strict_dots: bool = False) -> bool:
    """EMAIL as documented in the module docstring."""
    text = trim(value)
    if not text or any(ch.isspace() for ch in text) or text.count("@") != 1:
        return False
    local, domain = text.split("@")
    if not local or "." not in domain or "" in domain.split("."):
        return False
    return not (strict_dots and ".." in text)


def is_syncable(row: dict[str, Any], *, strict_dots: bool = False) -> bool:
    """Rule 3a and 3b for one row (a mapping of column → value)."""
    if not trim(row.get("first_name")) and not trim(row.get("last_name")):
        return False
    region = region_of(row.get("country")) or DEFAULT_REGION
    if any(phone_is_valid(row.get(c), region) for c in PHONE_COLUMNS):
        return True
    return any(email_is_valid(row.get(c), strict_dots=strict_dots) for c in EMAIL_COLUMNS)


def instant(value: object) -> datetime | None:
    """`modified_at` as an aware UTC datetime (naive = UTC), None when it is not ISO-8601."""
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _name(value: object) -> str | None:
    text = unicodedata.normalize("NFC", trim(value))
    return text or None


def expected_contacts(
    path: str | os.PathLike[str],
    start: datetime,
    end: datetime,
    *,
    strict_dots: bool = False,
) -> dict[str, ExpectedContact]:
    """Business key → expected contact, for the demo CRM at `path` synced over [start, end).

    Naive datetimes are taken as UTC. See the module docstring for the exact rule.
    """
    low = start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)
    high = end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=UTC)
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    latest: dict[str, tuple[datetime, int, dict[str, Any]]] = {}
    try:
        for record in conn.execute("SELECT * FROM contacts"):
            row = dict(record)
            moment = instant(row["modified_at"])
            key = trim(row["account_number"])
            if moment is None or not (low <= moment < high) or not key:
                continue
            seen = latest.get(key)
            if seen is None or (moment, row["id"]) > seen[:2]:
                latest[key] = (moment, row["id"], row)
    finally:
        conn.close()
    expected: dict[str, ExpectedContact] = {}
    for key, (_, _, row) in latest.items():
        if int(row["is_deleted"] or 0) != 0:
            continue
        if not is_syncable(row, strict_dots=strict_dots):
            continue
        expected[key] = ExpectedContact(
            business_key=key,
            first_name=_name(row["first_name"]),
            last_name=_name(row["last_name"]),
            crm_id=int(row["id"]),
            modified_at=str(row["modified_at"]),
        )
    return expected


def expected_keys(
    path: str | os.PathLike[str], start: datetime, end: datetime, *, strict_dots: bool = False
) -> set[str]:
    """The business keys (trimmed account numbers) Genesys should hold; see `expected_contacts`."""
    return set(expected_contacts(path, start, end, strict_dots=strict_dots))
