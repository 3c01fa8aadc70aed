"""The demo CRM: a deterministic SQLite database with the mess real CRMs have.

`generate_demo_crm` writes table `contacts` (columns in `CONTACT_COLUMNS`, as specified in
docs/internals.md) and a key/value table `demo_meta`. The same arguments always give the same
bytes of data: every random choice comes from one `numpy` generator seeded by `seed`, and the value
pools (`_pools`) are fixed. Generation is vectorized, so a million rows take seconds.

What the data holds, by design (rates are of primary rows unless stated):
- one primary row per business key `account_number` (`AC-0000001` …); ~0.3 % blank keys
  (NULL, "" or spaces) and ~0.5 % keys padded with whitespace;
- ~1 % of rows are a second, later version of a key in the SAME window (tier, mobile phone and
  sometimes e-mail changed; the new phone is in international format, so the later version is
  syncable whenever the earlier one was);
- ~2 % of rows are tombstones (`is_deleted=1`) of a key whose live version is in an EARLIER
  window; ~0.5 % of primary rows are tombstones of keys never live in the range; some tombstones
  carry only the key (the CRM blanked the rest);
- phones of 20 countries in E.164, international, national (spaces, dashes, dots,
  parentheses), without "+", with the country's own international prefix (00, 011), with a
  trunk 0 / 1 / "(0)", with extensions (" x123", " ext. 45", ";ext=9"), foreign numbers, and
  deliberately bad ones (garbage words, too short, one digit short/long);
- the country column as alpha-2, lower case, an English name or alias, padded, or blank;
- e-mails that are missing, mixed case, padded, without "@", with "..", "@@", inner spaces, or a
  domain without a dot;
- names in Latin with diacritics (some decomposed NFD), Cyrillic, Greek, CJK, Arabic,
  Devanagari and Hangul, some padded with spaces/control/format characters at the ends, ~1 %
  without any name and ~1 % without any usable phone or e-mail;
- HTML notes (with `<script>`, entities, one very long), a company name too long for Genesys,
  and PII columns `national_id` and `date_of_birth`;
- `modified_at` spread uniformly over the `windows` most recent complete windows before `now`
  (windows aligned to multiples of `window` since the Unix epoch, UTC), in the demo's own text
  form `YYYY-MM-DD HH:MM:SS.ffffff` (UTC) — or, with `mixed_times`, each row in one of
  `TIME_STYLES` (`T` or space, `Z`, offsets `+02:00` / `-0500` / `+05:30`, whole seconds): the
  same instants as a CRM that writes times every which way would hold them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from crm_genesys.crm import _pools as pools
from crm_genesys.crm.instants import as_utc, to_micros, window_floor

CONTACT_COLUMNS: tuple[str, ...] = (
    "id", "account_number", "salutation", "first_name", "middle_name", "last_name", "job_title",
    "company", "country", "work_phone", "mobile_phone", "home_phone", "fax", "email",
    "personal_email", "other_email", "street", "street2", "city", "region", "postal_code",
    "customer_tier", "preferred_language", "sms_consent", "lifetime_value", "last_purchase_date",
    "loyalty_id", "website", "notes", "national_id", "date_of_birth", "modified_at", "is_deleted",
)  # fmt: skip
_INTEGER_COLUMNS = {"id", "sms_consent", "is_deleted"}
_REAL_COLUMNS = {"lifetime_value"}


def _sql_type(column: str) -> str:
    return (
        "INTEGER" if column in _INTEGER_COLUMNS else "REAL" if column in _REAL_COLUMNS else "TEXT"
    )


CREATE_CONTACTS = (
    "CREATE TABLE contacts (\n  "
    + ",\n  ".join(
        "id INTEGER PRIMARY KEY"
        if c == "id"
        else "modified_at TEXT NOT NULL"
        if c == "modified_at"
        else "is_deleted INTEGER NOT NULL DEFAULT 0"
        if c == "is_deleted"
        else f"{c} {_sql_type(c)}"
        for c in CONTACT_COLUMNS
    )
    + "\n)"
)

MODIFIED_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # the demo CRM's own text form of `modified_at`
_US = np.timedelta64(1, "us")

# Shares of the data set; see the module docstring.
_DUP_SHARE = 0.01
_TOMB_LATER_SHARE = 0.02
_CHUNK_ROWS = 50_000


# --- the demo CRM's text form of times ---------------------------------------------------


def format_modified(moment: datetime) -> str:
    """The demo CRM's text form of a timestamp: `YYYY-MM-DD HH:MM:SS.ffffff` in UTC."""
    return as_utc(moment).strftime(MODIFIED_FORMAT)


def parse_modified(text: str) -> datetime:
    """Inverse of `format_modified`: an aware UTC datetime."""
    return datetime.strptime(text, MODIFIED_FORMAT).replace(tzinfo=UTC)


def format_micros(us: np.ndarray) -> np.ndarray:
    """Microseconds since the epoch (int64) → `modified_at` strings (object array)."""
    if len(us) == 0:
        return np.empty(0, dtype=object)
    text = us.astype("datetime64[us]").astype("U26")  # 'YYYY-MM-DDTHH:MM:SS.ffffff'
    return np.char.replace(text, "T", " ").astype(object)


# Representations of one instant a CRM may hold (`format_styled`); `WHOLE_SECONDS` writes no
# fraction, so it is only given to instants on a whole second.
TIME_STYLES: tuple[str, ...] = (
    "demo",  # 2024-06-01 10:00:00.000000 (UTC)
    "iso",  # 2024-06-01T10:00:00.000000
    "zulu",  # 2024-06-01T10:00:00.000000Z
    "whole_seconds",  # 2024-06-01 10:00:00
    "plus_two",  # 2024-06-01T12:00:00.000000+02:00
    "minus_five",  # 2024-06-01 05:00:00.000000-0500
    "plus_five_thirty",  # 2024-06-01T15:30:00.000000+05:30
)
WHOLE_SECONDS = TIME_STYLES.index("whole_seconds")
_STYLE_SHIFT_US = {"plus_two": 120, "minus_five": -300, "plus_five_thirty": 330}


def format_styled(us: np.ndarray, styles: np.ndarray) -> np.ndarray:
    """Microseconds since the epoch → `modified_at` strings, row i in `TIME_STYLES[styles[i]]`
    (object array)."""
    out = np.empty(len(us), dtype=object)
    for k, style in enumerate(TIME_STYLES):
        rows = np.flatnonzero(styles == k)
        if not len(rows):
            continue
        minutes = _STYLE_SHIFT_US.get(style, 0)
        local = (us[rows] + minutes * 60_000_000).astype("datetime64[us]")
        text = local.astype("datetime64[s]" if style == "whole_seconds" else "datetime64[us]")
        iso = text.astype("U26").astype(object)  # 'YYYY-MM-DDTHH:MM:SS[.ffffff]'
        if style in ("demo", "whole_seconds", "minus_five"):
            iso = np.char.replace(iso.astype(str), "T", " ").astype(object)
        suffix = {"zulu": "Z", "plus_two": "+02:00", "minus_five": "-0500"}.get(style, "")
        suffix = "+05:30" if style == "plus_five_thirty" else suffix
        out[rows] = iso + suffix if suffix else iso
    return out


def style_stamps(
    rng: np.random.Generator, stamps: np.ndarray, floor_us: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(stamps, styles): a random style per stamp; stamps given whole seconds are floored to the
    second, unless that would not stay above `floor_us` (a key's previous version), in which
    case they keep the demo style."""
    styles = rng.integers(0, len(TIME_STYLES), len(stamps))
    whole = stamps - stamps % 1_000_000
    allowed = styles == WHOLE_SECONDS
    if floor_us is not None:
        allowed &= whole > floor_us
    styles = np.where((styles == WHOLE_SECONDS) & ~allowed, 0, styles)
    return np.where(allowed, whole, stamps), styles


# --- metadata -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoMeta:
    """What `generate_demo_crm` (and later `simulate_activity` calls) put in a demo CRM.

    Generated rows have `modified_at` in [`first_window_start`, `end`), `end` being the start of
    the window holding `now`. `activity_windows` are the starts of windows that the simulator
    wrote into, in call order (repeats removed).
    """

    seed: int
    rows: int
    now: datetime
    windows: int
    window: timedelta
    activity_windows: tuple[datetime, ...] = field(default=())
    mixed_times: bool = False

    @property
    def end(self) -> datetime:
        return window_floor(self.now, self.window)

    @property
    def first_window_start(self) -> datetime:
        return self.end - self.windows * self.window

    def generated_windows(self) -> list[tuple[datetime, datetime]]:
        """The half-open windows the generator filled, oldest first."""
        start = self.first_window_start
        return [
            (start + i * self.window, start + (i + 1) * self.window) for i in range(self.windows)
        ]

    def data_windows(self) -> list[tuple[datetime, datetime]]:
        """Every window holding data: generated ones, then those the simulator wrote into."""
        spans = self.generated_windows()
        for start in self.activity_windows:
            span = (start, start + self.window)
            if span not in spans:
                spans.append(span)
        return sorted(spans)


def _meta_items(meta: DemoMeta) -> dict[str, str]:
    return {
        "seed": str(meta.seed),
        "rows": str(meta.rows),
        "now": as_utc(meta.now).isoformat(),
        "windows": str(meta.windows),
        "window_us": str(meta.window // timedelta(microseconds=1)),
        "activity_windows": json.dumps([as_utc(w).isoformat() for w in meta.activity_windows]),
        "mixed_times": "1" if meta.mixed_times else "0",
        "generator": "crm_genesys.crm.demo/1",
    }


def write_demo_meta(conn: sqlite3.Connection, meta: DemoMeta) -> None:
    """Replace the `demo_meta` rows (table created if missing); the caller commits."""
    conn.execute("CREATE TABLE IF NOT EXISTS demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany(
        "INSERT OR REPLACE INTO demo_meta (key, value) VALUES (?, ?)", _meta_items(meta).items()
    )


def meta_from_items(items: Mapping[str, str]) -> DemoMeta:
    return DemoMeta(
        seed=int(items["seed"]),
        rows=int(items["rows"]),
        now=datetime.fromisoformat(items["now"]),
        windows=int(items["windows"]),
        window=timedelta(microseconds=int(items["window_us"])),
        activity_windows=tuple(
            datetime.fromisoformat(w) for w in json.loads(items.get("activity_windows", "[]"))
        ),
        mixed_times=items.get("mixed_times", "0") == "1",
    )


def read_demo_meta(path: str | os.PathLike[str]) -> DemoMeta:
    """The `demo_meta` of the demo CRM at `path` (raises if it is not a generated demo CRM)."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        items = dict(conn.execute("SELECT key, value FROM demo_meta").fetchall())
    finally:
        conn.close()
    return meta_from_items(items)


# --- vectorized column builders -----------------------------------------------------------


def _pick(rng: np.random.Generator, values: Sequence[str | None], n: int) -> np.ndarray:
    """`n` values drawn uniformly from `values` (object array)."""
    pool = np.empty(len(values), dtype=object)
    pool[:] = list(values)
    return pool[rng.integers(0, len(values), int(n))]


def where(mask: np.ndarray, a: Any, b: Any) -> np.ndarray:
    """`np.where` into an object array (keeps None and Python str; typed for mypy)."""
    return np.asarray(np.where(mask, a, b), dtype=object)


def _with_nulls(rng: np.random.Generator, values: np.ndarray, present: float) -> np.ndarray:
    out = values.astype(object)
    out[rng.random(len(out)) >= present] = None
    return out


def _apply(values: np.ndarray, mask: np.ndarray, fn: Callable[[str], str]) -> None:
    """values[mask] = fn(v) for each masked value, skipping None (in place; masks are small)."""
    idx = np.flatnonzero(mask)
    values[idx] = np.array(
        [None if values[i] is None else fn(values[i]) for i in idx], dtype=object
    )


def _pad(
    rng: np.random.Generator,
    values: np.ndarray,
    mask: np.ndarray,
    padding: Sequence[str] = pools.PADDING,
) -> None:
    """Surround masked values with `padding` strings (whitespace, control, format characters)."""
    idx = np.flatnonzero(mask)
    before = _pick(rng, padding, len(idx))
    after = _pick(rng, padding, len(idx))
    side = rng.integers(0, 3, len(idx))  # 0 before, 1 after, 2 both
    for k, i in enumerate(idx):
        if values[i] is not None:
            values[i] = (
                (before[k] if side[k] != 1 else "") + values[i] + (after[k] if side[k] != 0 else "")
            )


def _phone_column(
    rng: np.random.Generator, country: np.ndarray, mobile_first: bool, present: float
) -> np.ndarray:
    """One phone slot: mostly valid numbers of the row's country in many formats, some mess."""
    pp = pools.phone_pool()
    n = len(country)
    kind = rng.choice(6, n, p=[0.83, 0.05, 0.04, 0.03, 0.025, 0.025])
    ptype = np.where(rng.random(n) < 0.15, int(not mobile_first), int(mobile_first))
    i = rng.integers(0, pools.PHONE_POOL_SIZE, n)
    f = rng.integers(0, len(pools.PHONE_FORMATS), n)
    out = pp.valid[country, ptype, i, f].astype(object)
    # Extensions, appended to an otherwise valid number.
    m = kind == 1
    out[m] = out[m] + _pick(rng, pools.EXTENSIONS, int(m.sum()))
    # Foreign numbers: written internationally, or with this country's way of dialling out.
    m = kind == 2
    foreign = rng.integers(0, len(pools.COUNTRIES), n)
    style = rng.integers(0, 3, n)
    e164 = pp.e164[foreign, ptype, i]
    intl = pp.international[foreign, ptype, i]
    idd = pp.idd[country]
    for k in np.flatnonzero(m):
        if style[k] == 0:
            out[k] = e164[k]
        elif style[k] == 1 or not idd[k]:
            out[k] = intl[k]
        else:
            out[k] = idd[k] + e164[k][1:]
    m = kind == 3
    out[m] = _pick(rng, pools.GARBAGE_PHONES, int(m.sum()))
    m = kind == 4
    short = ["".join(map(str, rng.integers(0, 10, int(k)))) for k in rng.integers(3, 7, 64)] + [
        "555-01",
        "+1 555",
        "12 34",
    ]
    out[m] = _pick(rng, short, int(m.sum()))
    m = kind == 5
    out[m] = pp.invalid[country[m], ptype[m], i[m]]
    absent = rng.random(n) >= present
    out[absent] = where(rng.random(int(absent.sum())) < 0.1, "", None)
    return out


_EMAIL_KINDS = np.array([0.82, 0.05, 0.04, 0.025, 0.02, 0.015, 0.01, 0.01, 0.01])


def _email_column(
    rng: np.random.Generator, first_ascii: np.ndarray, last_ascii: np.ndarray, present: float
) -> np.ndarray:
    """One e-mail slot; kinds: valid, mixed case, padded, no @, '..', no dot in domain, '@@',
    inner space, blank."""
    n = len(first_ascii)
    sep = _pick(rng, [".", "_", ""], n)
    num = where(rng.random(n) < 0.3, rng.integers(1, 100, n).astype(str), "").astype(object)
    domain = _pick(rng, pools.EMAIL_DOMAINS, n)
    local = first_ascii + sep + last_ascii + num
    out = local + "@" + domain
    kind = rng.choice(len(_EMAIL_KINDS), n, p=_EMAIL_KINDS / _EMAIL_KINDS.sum())
    for k in np.flatnonzero(kind > 0):
        lo, dom = local[k], domain[k]
        match kind[k]:
            case 1:
                out[k] = lo.title() + "@" + dom.upper()
            case 2:
                out[k] = "  " + out[k] + " "
            case 3:
                out[k] = lo + dom if k % 2 else lo + " at " + dom
            case 4:
                out[k] = first_ascii[k] + ".." + last_ascii[k] + "@" + dom
            case 5:
                out[k] = lo + "@" + dom.split(".")[0]
            case 6:
                out[k] = lo + "@@" + dom
            case 7:
                out[k] = first_ascii[k] + " " + last_ascii[k] + "@" + dom
            case _:
                out[k] = ""
    out[rng.random(n) >= present] = None
    return out


def valid_email(
    rng: np.random.Generator, first_ascii: np.ndarray, last_ascii: np.ndarray
) -> np.ndarray:
    """Well-formed lower-case e-mails (used where a later version must stay syncable)."""
    n = len(first_ascii)
    num = rng.integers(100, 1000, n).astype(str).astype(object)
    return first_ascii + "." + last_ascii + num + "@" + _pick(rng, pools.EMAIL_DOMAINS, n)


def international_phone(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    """Valid mobile numbers of `country` in E.164 or international format (valid for any region)."""
    pp = pools.phone_pool()
    n = len(country)
    i = rng.integers(0, pools.PHONE_POOL_SIZE, n)
    return where(
        rng.random(n) < 0.5, pp.e164[country, 1, i], pp.international[country, 1, i]
    ).astype(object)


def _digits_pool(rng: np.random.Generator, pattern: str, size: int = 512) -> list[str]:
    """Strings following `pattern` ('9' → digit, 'A' → letter A-D, 'L' → letter A-Z)."""
    out = []
    for _ in range(size):
        chars = []
        for ch in pattern:
            if ch == "9":
                chars.append(str(rng.integers(0, 10)))
            elif ch == "A":
                chars.append("ABCD"[rng.integers(0, 4)])
            elif ch == "L":
                chars.append(chr(65 + int(rng.integers(0, 26))))
            else:
                chars.append(ch)
        out.append("".join(chars))
    return out


def people(rng: np.random.Generator, n: int, today: date) -> dict[str, np.ndarray]:
    """`n` new contacts: every content column of `contacts` (all but id, account_number,
    modified_at, is_deleted) as object arrays, plus helper arrays `_country` (index into
    `_pools.COUNTRIES`), `_first_ascii` and `_last_ascii`."""
    names = pools.name_pool()
    addr = pools.address_pool()
    n_c = len(pools.COUNTRIES)
    country = rng.choice(n_c, n, p=pools.COUNTRY_WEIGHTS)
    group = np.where(
        rng.random(n) < 0.15,
        rng.integers(0, len(pools.NAME_GROUPS), n),
        names.group_of_country[country],
    )
    fi = names.first_offset[group] + (rng.random(n) * names.first_size[group]).astype(np.int64)
    li = names.last_offset[group] + (rng.random(n) * names.last_size[group]).astype(np.int64)
    mi = names.first_offset[group] + (rng.random(n) * names.first_size[group]).astype(np.int64)
    first = names.first[fi].copy()
    last = names.last[li].copy()
    middle = _with_nulls(rng, names.first[mi], 0.1)
    first_ascii, last_ascii = names.first_ascii[fi], names.last_ascii[li]

    def nfd(s: str) -> str:
        return unicodedata.normalize("NFD", s)

    _apply(first, rng.random(n) < 0.03, nfd)
    _apply(last, rng.random(n) < 0.03, nfd)
    _pad(rng, first, rng.random(n) < 0.04)
    _pad(rng, last, rng.random(n) < 0.04)
    # Name presence: both, only last, only first, none at all (quarantined).
    presence = rng.choice(4, n, p=[0.965, 0.015, 0.01, 0.01])
    blank = _pick(rng, [None, "", "  "], n)
    first[presence == 1] = blank[presence == 1]
    last[presence == 2] = blank[presence == 2]
    for col in (first, last, middle):
        col[presence == 3] = blank[presence == 3]

    codes = np.array(pools.COUNTRY_CODES, dtype=object)[country]
    country_col = codes.copy()
    shown = rng.choice(5, n, p=[0.84, 0.05, 0.05, 0.02, 0.04])
    country_col[shown == 1] = np.array([c.lower() for c in codes[shown == 1]], dtype=object)
    names_en = np.array([c[3] for c in pools.COUNTRIES], dtype=object)
    country_col[shown == 2] = names_en[country[shown == 2]]
    for k in np.flatnonzero(shown == 3):
        aliases = pools.COUNTRY_ALIASES.get(codes[k])
        country_col[k] = aliases[0] if aliases and k % 2 else f" {codes[k]} "
    country_col[shown == 4] = _pick(rng, [None, "", " "], int((shown == 4).sum()))

    cols: dict[str, np.ndarray] = {
        "salutation": _with_nulls(rng, _pick(rng, pools.SALUTATIONS, n), 0.6),
        "first_name": first,
        "middle_name": middle,
        "last_name": last,
        "job_title": _with_nulls(rng, _pick(rng, pools.JOB_TITLES, n), 0.5),
        "company": _with_nulls(rng, _pick(rng, pools.COMPANIES, n), 0.6),
        "country": country_col,
        "work_phone": _phone_column(rng, country, False, 0.7),
        "mobile_phone": _phone_column(rng, country, True, 0.8),
        "home_phone": _phone_column(rng, country, False, 0.3),
        "fax": _phone_column(rng, country, False, 0.1),
        "email": _email_column(rng, first_ascii, last_ascii, 0.8),
        "personal_email": _email_column(rng, first_ascii, last_ascii, 0.4),
        "other_email": _email_column(rng, first_ascii, last_ascii, 0.1),
    }
    cols["company"][rng.random(n) < 0.002] = pools.LONG_COMPANY
    # ~1 % cannot be reached at all: phones absent or garbage, e-mails absent or without "@".
    unreachable = rng.random(n) < 0.01
    n_unreachable = int(unreachable.sum())
    for slot in ("work_phone", "mobile_phone", "home_phone", "fax"):
        cols[slot][unreachable] = _pick(rng, [None, None, "N/A", "call me", "12345"], n_unreachable)
    for slot in ("email", "personal_email", "other_email"):
        cols[slot][unreachable] = where(
            rng.random(n_unreachable) < 0.7, None, (first_ascii[unreachable] + "-at-example.com")
        )

    # Address: house number before or after the street, as the country writes it.
    street_name = addr.streets[country, rng.integers(0, addr.streets.shape[1], n)]
    house = rng.integers(1, 300, n).astype(str).astype(object)
    street = where(
        addr.number_after[country], street_name + " " + house, house + " " + street_name
    ).astype(object)
    place = rng.integers(0, addr.places.shape[1], n)
    has_address = rng.random(n) < 0.95
    cols["street"] = where(has_address, street, None)
    cols["street2"] = where(
        has_address & (rng.random(n) < 0.1),
        _pick(rng, ["Suite 100", "Apt 4B", "2. OG", "Bldg 7"], n),
        None,
    )
    for j, name in enumerate(("city", "region", "postal_code")):
        cols[name] = where(has_address, addr.places[country, place, j], None)

    tier = np.array(pools.TIERS, dtype=object)[rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])]
    tier_kind = rng.random(n)
    tier[tier_kind < 0.05] = None
    lower = (tier_kind >= 0.05) & (tier_kind < 0.07)
    tier[lower] = np.array([t.lower() for t in tier[lower]], dtype=object)
    cols["customer_tier"] = tier
    cols["preferred_language"] = _with_nulls(rng, _pick(rng, pools.LANGUAGES, n), 0.9)
    sms = rng.integers(0, 2, n).astype(object)
    sms[rng.random(n) < 0.2] = None
    cols["sms_consent"] = sms
    ltv = np.round(rng.gamma(2.0, 500.0, n), 2).astype(object)
    ltv[rng.random(n) < 0.15] = None
    cols["lifetime_value"] = ltv
    today64 = np.datetime64(today, "D")
    purchase = (today64 - rng.integers(0, 3650, n).astype("timedelta64[D]")).astype(str)
    cols["last_purchase_date"] = _with_nulls(rng, purchase, 0.8)
    loyalty = np.char.add("LY", np.char.zfill(rng.integers(0, 10**8, n).astype(str), 8))
    cols["loyalty_id"] = _with_nulls(rng, loyalty, 0.4)
    site = "https://www." + _pick(rng, ["example.com", "example.org"], n) + "/" + last_ascii
    site_kind = rng.random(n)
    no_scheme = site_kind < 0.01
    site[no_scheme] = "www." + last_ascii[no_scheme] + ".example"
    site[(site_kind >= 0.01) & (site_kind < 0.012)] = "https://www.example.com/" + "x" * 300
    site[site_kind >= 0.2] = None
    cols["website"] = site
    notes = _with_nulls(rng, _pick(rng, pools.NOTES, n), 0.3)
    notes[rng.random(n) < 0.005] = pools.LONG_NOTE
    cols["notes"] = notes

    us_ssn = np.array(_digits_pool(rng, "999-99-9999"), dtype=object)
    gb_nino = np.array(_digits_pool(rng, "LL999999A"), dtype=object)
    other_id = np.array(_digits_pool(rng, "99999999999"), dtype=object)
    pick = rng.integers(0, 512, n)
    nid = where(
        codes == "US", us_ssn[pick], where(codes == "GB", gb_nino[pick], other_id[pick])
    ).astype(object)
    cols["national_id"] = _with_nulls(rng, nid, 0.7)
    dob = np.datetime64("1940-01-01") + rng.integers(0, 65 * 365, n).astype("timedelta64[D]")
    cols["date_of_birth"] = _with_nulls(rng, dob.astype(str), 0.8)

    cols["_country"] = country
    cols["_first_ascii"] = first_ascii
    cols["_last_ascii"] = last_ascii
    return cols


def account_numbers(numbers: np.ndarray) -> np.ndarray:
    """Business keys `AC-0000001` … for the given integers (object array)."""
    return np.char.add("AC-", np.char.zfill(numbers.astype(str), 7)).astype(object)


# --- writing ------------------------------------------------------------------------------


def insert_rows(conn: sqlite3.Connection, table: str, columns: dict[str, np.ndarray]) -> None:
    """executemany INSERT of column arrays in chunks; the caller owns the transaction."""
    names = list(columns)
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    n = len(next(iter(columns.values())))
    for start in range(0, n, _CHUNK_ROWS):
        chunk = [columns[c][start : start + _CHUNK_ROWS].tolist() for c in names]
        conn.executemany(sql, zip(*chunk, strict=True))


def generate_demo_crm(
    path: str | os.PathLike[str],
    *,
    rows: int = 10_000,
    seed: int = 7,
    now: datetime,
    windows: int = 12,
    window: timedelta = timedelta(hours=1),
    mixed_times: bool = False,
) -> DemoMeta:
    """Write a fresh demo CRM of exactly `rows` rows to `path` (replacing any file there).

    Same (`rows`, `seed`, `now`, `windows`, `window`, `mixed_times`) → identical table contents.
    Every `modified_at` lies in the `windows` complete windows before the window holding `now`.
    With `mixed_times`, each `modified_at` is written in a random one of `TIME_STYLES` (drawn
    from a generator of its own, so every other column is as without it; rows written in whole
    seconds have their instant floored to the second). The file is built beside `path` and
    renamed into place, so readers never see half a database.
    """
    if rows < 1 or windows < 1:
        raise ValueError("rows and windows must be positive")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = DemoMeta(
        seed=seed,
        rows=rows,
        now=as_utc(now),
        windows=windows,
        window=window,
        mixed_times=mixed_times,
    )
    rng = np.random.default_rng(seed)
    window_us = window // timedelta(microseconds=1)
    first_us = to_micros(meta.first_window_start)

    n_dup = int(rows * _DUP_SHARE)
    n_tomb = int(rows * _TOMB_LATER_SHARE) if windows > 1 else 0
    n_primary = rows - n_dup - n_tomb

    cols = people(rng, n_primary, meta.end.date())
    canonical = account_numbers(np.arange(1, n_primary + 1))
    key = canonical.copy()
    key_kind = rng.random(n_primary)
    blank_key = key_kind < 0.003
    key[blank_key] = _pick(rng, [None, "", "   "], int(blank_key.sum()))
    padded = (key_kind >= 0.003) & (key_kind < 0.008)
    _pad(rng, key, padded, [" ", "  ", "\t"])  # keys: plain whitespace only
    win = rng.integers(0, windows, n_primary)
    stamp = first_us + win * window_us + rng.integers(0, window_us, n_primary)
    deleted = (rng.random(n_primary) < 0.005).astype(np.int64)
    cols["account_number"] = key
    cols["is_deleted"] = deleted

    # Candidates for later versions: live rows with a usable key (and room left in the window).
    live = (deleted == 0) & ~blank_key
    window_end = first_us + (win + 1) * window_us
    dup_src = rng.choice(np.flatnonzero(live & (stamp < window_end - 1)), n_dup, replace=False)
    tomb_src = rng.choice(np.flatnonzero(live & (win < windows - 1)), n_tomb, replace=False)

    def copy_rows(src: np.ndarray) -> dict[str, np.ndarray]:
        out = {c: v[src].copy() for c, v in cols.items()}
        out["account_number"] = canonical[src].copy()
        return out

    dup = copy_rows(dup_src)
    gap = window_end[dup_src] - stamp[dup_src] - 1
    dup_stamp = stamp[dup_src] + 1 + (rng.random(n_dup) * gap).astype(np.int64)
    old_tier = np.array(
        [pools.TIERS.index(t) if t in pools.TIERS else 0 for t in dup["customer_tier"]],
        dtype=np.int64,  # an empty list would otherwise be float and not index anything
    )
    dup["customer_tier"] = np.array(pools.TIERS, dtype=object)[
        (old_tier + rng.integers(1, 4, n_dup)) % 4
    ]
    dup["mobile_phone"] = international_phone(rng, dup["_country"])
    new_mail = rng.random(n_dup) < 0.5
    dup["email"] = where(
        new_mail, valid_email(rng, dup["_first_ascii"], dup["_last_ascii"]), dup["email"]
    )

    tomb = copy_rows(tomb_src)
    tomb["is_deleted"] = np.ones(n_tomb, dtype=np.int64)
    tomb_win = (
        win[tomb_src] + 1 + (rng.random(n_tomb) * (windows - 1 - win[tomb_src])).astype(np.int64)
    )
    tomb_stamp = first_us + tomb_win * window_us + rng.integers(0, window_us, n_tomb)
    minimal = rng.random(n_tomb) < 0.3
    for c in tomb:
        if c not in ("account_number", "is_deleted") and not c.startswith("_"):
            tomb[c][minimal] = None

    everything = {
        c: np.concatenate([cols[c], dup[c], tomb[c]]) for c in CONTACT_COLUMNS if c in cols
    }
    if mixed_times:
        styler = np.random.default_rng([seed, 1])  # its own stream: other columns unchanged
        stamp, styles = style_stamps(styler, stamp)
        tomb_stamp, tomb_styles = style_stamps(styler, tomb_stamp)
        # Second versions keep their microseconds: floored, one could fall before the first.
        dup_stamp, dup_styles = style_stamps(styler, dup_stamp, floor_us=dup_stamp)
        everything["modified_at"] = format_styled(
            np.concatenate([stamp, dup_stamp, tomb_stamp]),
            np.concatenate([styles, dup_styles, tomb_styles]),
        )
    else:
        everything["modified_at"] = format_micros(np.concatenate([stamp, dup_stamp, tomb_stamp]))
    # Internal ids in no particular relation to keys or times, as after years of CRM use.
    ids = rng.permutation(rows) + 1
    order = np.argsort(ids)
    table = {"id": ids[order].astype(object)}
    for c in CONTACT_COLUMNS:
        if c != "id":
            table[c] = everything[c][order].astype(object)

    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")  # a fresh file: nothing to roll back to
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.execute(CREATE_CONTACTS)
        insert_rows(conn, "contacts", table)
        conn.execute("CREATE INDEX ix_contacts_modified_at ON contacts (modified_at)")
        conn.execute("CREATE INDEX ix_contacts_account_number ON contacts (account_number)")
        write_demo_meta(conn, meta)
        conn.execute("COMMIT")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm", "-journal"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    os.replace(tmp, target)
    return meta
