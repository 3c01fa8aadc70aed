"""Phone numbers to E.164, as telephony looks them up for a screen pop.

Contract of `normalize_phones(raw, regions, default_region)` (and of the scalar `normalize_phone`):

- A number is interpreted, in this order, until one interpretation is a *valid* number
  (`phonenumbers.is_valid_number`): (1) as written, in the record's region (a leading `+` means
  international; the region's own exit code and trunk prefix are understood, so `1 800 ...` and
  `011 44 ...` in the US, `030 ...` and `0044 ...` in Germany work); (2) in the default region.
- An exit code is the dialling plan's: `00` is none in the NANP (its code is `011`), `011` none in
  most of the world. A number that is valid only after another plan's exit code (`0034810127744`
  on a US record) is dropped with `REASON_FOREIGN_EXIT`, never given the country it might mean.
- An extension (`x12`, `ext. 12`, `extension 12`, `#12`, `;ext=12`) goes to `extension` (int).
- The result carries the region the number belongs to (`normalizationCountryCode`), which is the
  record's region only when the number is from there (`+44...` on a US record is `GB`).
- Nothing is guessed: an invalid number (short codes, local-only numbers without an area code,
  wrong lengths, unknown country codes) is dropped with a reason, never padded or re-prefixed.

Speed: the work is done once per distinct (raw value, region). Simple ASCII inputs (digits, spaces
and `+-.()/[]`) go through a vectorised re-implementation of `phonenumbers.parse` +
`is_valid_number` built from phonenumbers' own metadata (same regular expressions, same
national-prefix and country-code rules); anything it is not certain about (letters, non-ASCII
digits, unknown or non-geographic country codes) falls back to phonenumbers itself, and so
does the reason a rejected number is dropped for (a foreign exit code is tried on the same
path). The test-suite checks that both paths agree, on numbers and on reasons.
"""

from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import phonenumbers
from pandas.api.types import infer_dtype
from phonenumbers import PhoneMetadata

from crm_genesys import settings
from crm_genesys.contacts.text import factorize

# Below this many distinct values a second process costs more (start-up, pickling) than it saves.
PARALLEL_MIN_DISTINCT = 400_000
MAX_INPUT_LENGTH = 250  # phonenumbers' own cap on input strings
_MIN_NSN = 2
_MAX_NSN = 17

REASON_INVALID = "invalid_number"
REASON_NOT_A_NUMBER = "not_a_number"
REASON_TOO_LONG = "input_too_long"
# Written after an exit code that is not the region's own (`00...` on a US record): not guessed.
REASON_FOREIGN_EXIT = "exit_code_not_of_region"

# An extension at the end of the value. Digits only, at most 10 (Genesys stores an int).
_EXT_RE = re.compile(
    r"^(?P<body>.*?\d[^0-9]*?)[\s,;]*"
    r"(?:e?xt(?:ension|n)?\.?|x|#|;?\s*ext=)\s*[:.#=]?\s*(?P<ext>\d{1,10})\s*#?\s*$",
    re.IGNORECASE,
)
_HAS_EXT_HINT = re.compile(r"[A-Za-z#;]")
_ANY_DIGIT = re.compile(r"\d")
# Exit codes of other dialling plans, recognised only to name why such a number is dropped.
_FOREIGN_EXITS = ("011", "00")

_UNKNOWN = -1  # fast-path status: not certain, ask phonenumbers
_INVALID = 0
_VALID = 1

# _test_number_length results, as in phonenumbers.
_POSSIBLE, _TOO_SHORT, _TOO_LONG, _INVALID_LENGTH, _LOCAL_ONLY = range(5)


@dataclass(frozen=True)
class PhoneResult:
    """One normalized phone: `e164` and `region` are set for a valid number, `reason` otherwise."""

    e164: str | None
    extension: int | None
    region: str | None
    reason: str | None

    def payload(self) -> dict[str, Any] | None:
        """The Genesys `PhoneNumber` body (`display`, `extension`, `normalizationCountryCode`)."""
        if self.e164 is None:
            return None
        out: dict[str, Any] = {"display": self.e164}
        if self.extension is not None:
            out["extension"] = self.extension
        if self.region:
            out["normalizationCountryCode"] = self.region
        return out


# -- metadata, compiled once per region ---------------------------------------------------------


def _lengths_re(lengths: tuple[int, ...] | list[int]) -> str | None:
    good = [n for n in lengths if n > 0]
    if not lengths:
        return None  # no constraint
    if not good:
        return "(?!)"  # the type exists nowhere in this region
    return "(?:" + "|".join(f"[0-9]{{{n}}}" for n in sorted(set(good))) + r")\Z"


def _desc_re(desc: Any) -> str | None:
    if desc is None or not desc.national_number_pattern:
        return None
    lens = _lengths_re(tuple(desc.possible_length))
    body = f"(?:{desc.national_number_pattern})"
    return (f"(?={lens})" if lens else "") + body


_TYPE_ATTRS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)


@dataclass(frozen=True)
class _Region:
    code: str
    cc: int
    cc_str: str
    idd: re.Pattern[str] | None
    npp: re.Pattern[str] | None  # national prefix for parsing, anchored at the start
    transform_rule: str | None  # trunk prefix rewritten (Argentina, Brazil, Japan, ...)
    gd: re.Pattern[str] | None  # general description pattern (no length check)
    valid: re.Pattern[str]  # general desc + any number type, with lengths: is_valid for region
    leading: re.Pattern[str] | None
    lengths: tuple[int, ...]
    local_lengths: frozenset[int]
    length_class: tuple[int, ...]


@lru_cache(maxsize=512)
def _region(code: str) -> _Region | None:
    md = PhoneMetadata.metadata_for_region(code, None)
    if md is None or md.general_desc is None or md.country_code is None:
        return None
    gd = md.general_desc
    type_res = [_desc_re(getattr(md, a)) for a in _TYPE_ATTRS]
    if not md.same_mobile_and_fixed_line_pattern:
        type_res.append(_desc_re(md.mobile))
    alts = [r for r in type_res if r]
    gd_re = _desc_re(gd)
    lengths = tuple(sorted(gd.possible_length))
    local = frozenset(gd.possible_length_local_only)
    if gd_re is None or not alts:
        valid = re.compile("(?!)")
    else:
        valid = re.compile(f"(?=(?:{gd_re})\\Z)(?:" + "|".join(f"(?:{a})" for a in alts) + ")")
    return _Region(
        code=code,
        cc=md.country_code,
        cc_str=str(md.country_code),
        idd=re.compile(md.international_prefix) if md.international_prefix else None,
        npp=re.compile(f"(?:{md.national_prefix_for_parsing})")
        if md.national_prefix_for_parsing
        else None,
        transform_rule=md.national_prefix_transform_rule or None,
        gd=re.compile(gd.national_number_pattern) if gd.national_number_pattern else None,
        valid=valid,
        leading=re.compile(md.leading_digits) if md.leading_digits else None,
        lengths=lengths,
        local_lengths=local,
        length_class=_length_classes(lengths, local),
    )


def _length_classes(reg_lengths: tuple[int, ...], local: frozenset[int]) -> tuple[int, ...]:
    """phonenumbers' _test_number_length (type UNKNOWN) for every length 0..40."""
    out = []
    for n in range(41):
        if not reg_lengths:
            out.append(_INVALID_LENGTH)
        elif n in local:
            out.append(_LOCAL_ONLY)
        elif n == reg_lengths[0] or n in reg_lengths:
            out.append(_POSSIBLE)
        elif n < reg_lengths[0]:
            out.append(_TOO_SHORT)
        elif n > reg_lengths[-1]:
            out.append(_TOO_LONG)
        else:
            out.append(_INVALID_LENGTH)
    return tuple(out)


def _length_class(n: int, reg: _Region) -> int:
    return reg.length_class[n] if n <= 40 else (_TOO_LONG if reg.lengths else _INVALID_LENGTH)


@lru_cache(maxsize=1024)
def _cc_regions(cc: int) -> tuple[_Region, ...]:
    out = []
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc, ()):
        reg = _region(code) if code != "001" else None
        if reg is not None:
            out.append(reg)
    return tuple(out)


@lru_cache(maxsize=1024)
def _main(cc: int) -> _Region | None:
    """Metadata phonenumbers parses a number of calling code `cc` with (its main region)."""
    codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc, ())
    if not codes or codes[0] == "001":
        return None  # non-geographic codes: left to phonenumbers
    return _region(codes[0])


_CC_BY_PREFIX = {str(cc): cc for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}

_Fast = tuple[int, str | None, str | None]  # (status, e164, region of the number)
_FAST_INVALID: _Fast = (_INVALID, None, None)
_FAST_UNKNOWN: _Fast = (_UNKNOWN, None, None)
_BAD_LENGTHS = (_TOO_SHORT, _LOCAL_ONLY, _INVALID_LENGTH)


def _strip_one(v: str, reg: _Region) -> str:
    """phonenumbers' _maybe_strip_national_prefix_carrier_code: the number without its trunk
    prefix (or rewritten by the region's transform rule), unless that would spoil a number whose
    original form already fits the region's general pattern."""
    m = reg.npp.match(v) if reg.npp is not None else None
    if m is None:
        return v
    gd = reg.gd
    orig_ok = gd is not None and gd.fullmatch(v) is not None
    groups = m.groups()
    if reg.transform_rule and groups and groups[-1] is not None:
        candidate = m.expand(reg.transform_rule) + v[m.end() :]
    else:
        candidate = v[m.end() :]
    if orig_ok and (gd is None or gd.fullmatch(candidate) is None):
        return v
    return candidate


def _valid(cc: int, nsn: str) -> _Fast:
    """is_valid_number + region_code_for_number for a national significant number of `cc`."""
    regs = _cc_regions(cc)
    if len(regs) == 1:
        reg = regs[0]
        if reg.valid.fullmatch(nsn) is not None:
            return (_VALID, f"+{cc}{nsn}", reg.code)
        return _FAST_INVALID
    for reg in regs:
        if reg.leading is not None:
            if reg.leading.match(nsn) is not None:
                if reg.valid.fullmatch(nsn) is not None:
                    return (_VALID, f"+{cc}{nsn}", reg.code)
                return _FAST_INVALID
        elif reg.valid.fullmatch(nsn) is not None:
            return (_VALID, f"+{cc}{nsn}", reg.code)
    return _FAST_INVALID


def _tail(cc: int, nnn: str, reg: _Region) -> _Fast:
    """The end of phonenumbers.parse (trunk prefix, length rules) with metadata `reg`, then
    validity."""
    if len(nnn) < _MIN_NSN:
        return _FAST_INVALID
    if reg.npp is not None:
        pot = _strip_one(nnn, reg)
        if pot is not nnn and _length_class(len(pot), reg) not in _BAD_LENGTHS:
            nnn = pot
    if len(nnn) > _MAX_NSN or len(nnn) < _MIN_NSN:
        return _FAST_INVALID
    return _valid(cc, nnn)


def _split_cc(digits: str) -> tuple[int, str]:
    """Country calling code and the rest, as phonenumbers' _extract_country_code."""
    if not digits or digits[0] == "0":
        return 0, digits
    for n in (1, 2, 3):
        cc = _CC_BY_PREFIX.get(digits[:n])
        if cc is not None and len(digits) >= n:
            return cc, digits[n:]
    return 0, digits


def _fast_international(d: str) -> _Fast:
    """`phonenumbers.parse('+' + d)` + validity, or _UNKNOWN when not certain."""
    if len(d) <= _MIN_NSN:
        return _FAST_INVALID  # TOO_SHORT_AFTER_IDD
    cc, rest = _split_cc(d)
    if cc == 0:
        return _FAST_UNKNOWN  # phonenumbers retries such a number as a national one
    reg = _main(cc)
    if reg is None:
        return _FAST_UNKNOWN
    return _tail(cc, rest, reg)


def _fast_national(d: str, reg: _Region) -> _Fast:
    """`phonenumbers.parse(d, reg.code)` + validity for ASCII digits without `+`."""
    if reg.idd is not None:
        m = reg.idd.match(d)
        if m is not None:
            rest = d[m.end() :]
            # phonenumbers does not take the prefix as an IDD when the next digit is 0.
            if not rest or rest[0] != "0":
                return _fast_international(rest)
    if d.startswith(reg.cc_str):
        pot = _strip_one(d[len(reg.cc_str) :], reg)
        gd = reg.gd
        full_ok = gd is not None and gd.fullmatch(d) is not None
        pot_ok = gd is not None and gd.fullmatch(pot) is not None
        if (not full_ok and pot_ok) or _length_class(len(d), reg) == _TOO_LONG:
            main = _main(reg.cc)
            if main is None:
                return _FAST_UNKNOWN
            return _tail(reg.cc, pot, main)
    return _tail(reg.cc, d, reg)


def _fast_chain(d: str, plus: bool, reg: _Region, default: _Region) -> _Fast:
    """The contract's interpretation chain on ASCII digits, or _UNKNOWN when not certain."""
    if plus:
        return _fast_international(d)
    hit = _fast_national(d, reg)
    if hit[0] != _INVALID:
        return hit
    if default is not reg:
        return _fast_national(d, default)
    return _FAST_INVALID


# -- the slow path: phonenumbers itself ---------------------------------------------------------


def _pn_valid(text: str, region: str) -> tuple[str, str, str | None] | None:
    """(E.164, region of the number, extension phonenumbers found) when `text` is valid."""
    try:
        num = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(num):
        return None
    code = phonenumbers.region_code_for_number(num)
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return e164, (code if code and code != "001" else region), (num.extension or None)


def slow_chain(body: str, region: str, default_region: str) -> tuple[str, str, str | None] | None:
    """The interpretation chain of the module contract, with phonenumbers only (the reference).

    Returns (E.164, region of the number, extension found by phonenumbers) or None.
    """
    hit = _pn_valid(body, region)
    if hit:
        return hit
    if default_region != region:
        return _pn_valid(body, default_region)
    return None


def _invalid_reason(body: str, region: str) -> str:
    """Why `body`, which no interpretation made valid, is dropped (a rejected number only)."""
    if not _ANY_DIGIT.search(body):
        return REASON_NOT_A_NUMBER
    plus = body.lstrip(" \t-.()/[]").startswith(("+", "\uff0b"))
    return _fast_invalid_reason(phonenumbers.normalize_digits_only(body), plus, region)


def _fast_invalid_reason(d: str, plus: bool, region: str) -> str:
    """Why a rejected number with ASCII digits `d` (after the `+` when `plus`) is dropped: a
    foreign exit code is tried on the fast path, phonenumbers only when that is not certain."""
    if plus:
        return REASON_INVALID
    for code in _FOREIGN_EXITS:
        if d.startswith(code):
            rest = d[len(code) :]
            status = _fast_international(rest)[0]
            if status == _VALID or (status == _UNKNOWN and _pn_valid("+" + rest, region)):
                return REASON_FOREIGN_EXIT
    return REASON_INVALID


# -- the public, vectorised entry point ---------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        # A number stored as REAL: 18005550199.0 is the digits, not a fraction.
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, np.floating):
        return _text(float(value))
    return str(value)


# Formatting characters a simple number may carry (all are phonenumbers punctuation).
_DROP_PUNCT = str.maketrans("", "", " \t\n\r\u00a0\u2009\u202f-.()/[]")


def _resolve_unique(
    texts: list[str], regions: list[str], default_region: str
) -> tuple[list[str | None], list[int | None], list[str | None], list[str | None]]:
    """Normalize distinct (text, region) pairs. Returns e164, extension, region, reason lists.

    Every region must be supported by phonenumbers (callers resolve unknown ones to the default).
    """
    n = len(texts)
    e164: list[str | None] = [None] * n
    ext: list[int | None] = [None] * n
    out_region: list[str | None] = [None] * n
    reason: list[str | None] = [None] * n
    default = _region(default_region)
    if default is None:
        raise ValueError(f"unsupported default region {default_region!r}")
    slow: list[tuple[int, str]] = []
    for i, raw in enumerate(texts):
        t = raw.strip()
        if len(t) > MAX_INPUT_LENGTH:
            reason[i] = REASON_TOO_LONG
            continue
        x: int | None = None
        u = t.translate(_DROP_PUNCT)
        plus = u.startswith("+")
        if plus:
            u = u[1:]
        if not (u.isascii() and u.isdigit()):
            # Not plain digits: an extension, letters, other scripts' digits, stray symbols.
            m = _EXT_RE.match(t) if _HAS_EXT_HINT.search(t) else None
            if m is not None:
                t = m.group("body")
                x = int(m.group("ext"))
                u = t.translate(_DROP_PUNCT)
                plus = u.startswith("+")
                if plus:
                    u = u[1:]
            if not (u.isascii() and u.isdigit()):
                slow.append((i, t))
                ext[i] = x
                continue
        reg = _region(regions[i]) or default
        status, number, code = _fast_chain(u, plus, reg, default)
        if status == _VALID:
            e164[i], out_region[i], ext[i] = number, code, x
        elif status == _INVALID:
            reason[i] = _fast_invalid_reason(u, plus, regions[i])
        else:
            slow.append((i, t))
            ext[i] = x
    # Anything the fast path was unsure about: phonenumbers, the whole chain.
    for i, body in slow:
        hit = slow_chain(body, regions[i], default_region)
        if hit is None:
            reason[i] = _invalid_reason(body, regions[i])
            ext[i] = None
        else:
            e164[i], out_region[i], pn_ext = hit
            if ext[i] is None and pn_ext and pn_ext.isdigit() and len(pn_ext) <= 10:
                ext[i] = int(pn_ext)
    return e164, ext, out_region, reason


def _resolve_parallel(
    texts: list[str], regions: list[str], default_region: str, workers: int | None
) -> tuple[list[str | None], list[int | None], list[str | None], list[str | None]]:
    """`_resolve_unique`, split over worker processes when there is enough work to pay for them.

    The caller's process takes the first chunk itself, so `workers=2` starts one child process.
    Children are spawned (not forked): the caller may be a threaded Dagster or test process.
    """
    n = len(texts)
    if workers is None:
        workers = default_workers()
    if workers <= 1 or n < PARALLEL_MIN_DISTINCT:
        return _resolve_unique(texts, regions, default_region)
    size = -(-n // workers)
    bounds = [(k, min(k + size, n)) for k in range(0, n, size)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(bounds) - 1, mp_context=ctx) as pool:
        futures = [
            pool.submit(_resolve_unique, texts[a:b], regions[a:b], default_region)
            for a, b in bounds[1:]
        ]
        a, b = bounds[0]
        parts = [_resolve_unique(texts[a:b], regions[a:b], default_region)]
        parts.extend(f.result() for f in futures)
    e164: list[str | None] = []
    ext: list[int | None] = []
    reg: list[str | None] = []
    why: list[str | None] = []
    for pe, px, pr, pw in parts:
        e164 += pe
        ext += px
        reg += pr
        why += pw
    return e164, ext, reg, why


def default_workers() -> int:
    """Processes used for large phone columns: the `CRM_GENESYS_WORKERS` setting."""
    return int(settings.get("CRM_GENESYS_WORKERS"))


@dataclass
class DistinctPhones:
    """A phone column resolved once per distinct (value, region): `codes` per row (-1 for a blank
    value) into `table` (columns `e164`, `extension`, `region`, `reason`, one row per distinct)."""

    codes: np.ndarray
    table: pd.DataFrame

    def expand(self, column: str) -> np.ndarray:
        values = np.append(self.table[column].to_numpy(dtype=object), np.array([None], object))
        return values[self.codes]


def _phone_texts(values: np.ndarray) -> np.ndarray:
    """`_text` of every value (object: str or None)."""
    if infer_dtype(values, skipna=True) in ("string", "empty"):
        out = values.copy()
        out[pd.isna(values)] = None
        return out
    out = np.empty(len(values), dtype=object)
    out[:] = [v if type(v) is str else _text(v) for v in values]
    return out


def distinct_phones(
    raw: pd.Series, regions: pd.Series, default_region: str, workers: int | None = None
) -> DistinctPhones:
    """`normalize_phones` before broadcasting to rows (same contract)."""
    values = raw.to_numpy(dtype=object, na_value=None)
    regs = regions.to_numpy(dtype=object, na_value=None)
    texts = _phone_texts(values)
    n = len(values)
    codes = np.full(n, -1, dtype=np.intp)
    text_s = pd.Series(texts, dtype=object)
    stripped = text_s.str.strip()
    present = (stripped.str.len() > 0).to_numpy(dtype=bool, na_value=False)
    if not present.any():
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in _PHONE_COLUMNS})
        return DistinctPhones(codes=codes, table=empty)
    pos = np.flatnonzero(present)
    # Region only matters for numbers written without '+': sharing it widens the dedup.
    plus = stripped[present].str.startswith("+").to_numpy(dtype=bool)
    reg_sub = regs[pos].copy()
    reg_sub[pd.isna(reg_sub)] = default_region
    reg_sub[plus] = ""
    t_codes, t_uniques = factorize(texts[pos])
    r_codes, r_uniques = factorize(reg_sub)
    pair = t_codes.astype(np.int64) * max(1, len(r_uniques)) + r_codes
    p_codes, p_uniques = pd.factorize(pair)
    p_uniques = np.asarray(p_uniques, dtype=np.int64)
    u_texts = t_uniques[p_uniques // max(1, len(r_uniques))].tolist()
    u_regs = [r or default_region for r in r_uniques[p_uniques % max(1, len(r_uniques))].tolist()]
    e, x, r, why = _resolve_parallel(u_texts, u_regs, default_region, workers)
    table = pd.DataFrame(
        {
            "e164": np.asarray(e, dtype=object),
            "extension": _objects(x),
            "region": np.asarray(r, dtype=object),
            "reason": np.asarray(why, dtype=object),
        }
    )
    codes[pos] = p_codes
    return DistinctPhones(codes=codes, table=table)


_PHONE_COLUMNS = ("e164", "extension", "region", "reason")


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def normalize_phones(
    raw: pd.Series, regions: pd.Series, default_region: str, workers: int | None = None
) -> pd.DataFrame:
    """Normalize a column of raw phones, each with its record's region (ISO alpha-2).

    `regions` must hold supported region codes (callers resolve blanks and unknown countries to
    `default_region` first). Returns a frame aligned with `raw` with columns `e164`, `extension`
    (object: int or None), `region` (normalizationCountryCode) and `reason` (None when valid or
    when the value was blank; else why the value was dropped). Never raises on any input value.
    Distinct values are resolved once; above `PARALLEL_MIN_DISTINCT` of them the work is split
    over `workers` processes (default `default_workers()`).
    """
    d = distinct_phones(raw, regions, default_region, workers)
    return pd.DataFrame({c: d.expand(c) for c in _PHONE_COLUMNS}, index=raw.index)


def normalize_phone(raw: Any, region: str | None = None, default_region: str = "US") -> PhoneResult:
    """Normalize one value (same rules and code path as `normalize_phones`)."""
    default = default_region.upper()
    reg = (region or "").strip().upper()
    if reg not in phonenumbers.SUPPORTED_REGIONS:
        reg = default
    frame = normalize_phones(pd.Series([raw], dtype=object), pd.Series([reg]), default)
    row = frame.iloc[0]
    return PhoneResult(
        e164=row["e164"],
        extension=row["extension"],
        region=row["region"],
        reason=row["reason"],
    )
