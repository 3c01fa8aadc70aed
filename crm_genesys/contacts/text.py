"""Text as Genesys can store it: any CRM value to clean Unicode text, e-mails, HTML, limits.

Every function takes and returns pandas objects aligned on the input index, never raises on any
value (bytes, numbers, NaN, lone surrogates, huge strings) and does the costly work only on the
values that need it: plain printable ASCII takes a vectorised fast path.

CRM columns repeat a handful of values (cities, titles, tiers, notes): `distinct_text` factorizes
a column into codes and its distinct values as text, so that element-wise work (`clean_text`,
`json_string`, `strip_html`, a whole chain of them) runs once per distinct value and is broadcast
back by the codes. Columns of mostly distinct values (e-mails, identifiers) skip the factorization,
which would cost more than it saves. Results are identical either way: every function here is
element-wise.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

# Control characters (C0, DEL, C1), every format character (Unicode category Cf: zero-width,
# bidi embeddings and isolates, soft hyphen, tags, BOM, ...) and lone surrogates: none of them
# belongs in a field an agent reads, and a lone surrogate cannot even be encoded.
FORMAT_CHARACTERS = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{FORMAT_CHARACTERS}\ud800-\udfff]")
_CONTROL_ALL = re.compile(f"[\x00-\x1f\x7f-\x9f{FORMAT_CHARACTERS}\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n\r\x0b\x0c\x85\u2028\u2029]")
_SPACES = re.compile(r"[^\S\n]+")
_ALL_SPACES = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(\n\s*)+")
_NEEDS_WORK = re.compile(r"[^\x20-\x7e]|  ")
_JSON_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def to_text(value: Any) -> str | None:
    """Any scalar as text, or None for nothing (None, NaN, NaT, empty containers)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            return None
        # REAL columns holding identifiers or phones: 18005550199.0 means the digits.
        return str(int(f)) if f.is_integer() and abs(f) < 1e17 else repr(f)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if value is pd.NaT:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    try:
        return str(value)
    except Exception:  # a hostile __str__ must not stop the batch
        return None


def as_text(values: pd.Series) -> pd.Series:
    """A column as object text (str or None), whatever it held."""
    if values.dtype == object:
        kind = infer_dtype(values, skipna=True)
        if kind in ("string", "empty"):
            return values.where(values.notna(), None)
        if kind == "integer":
            # ints and numpy integers (no bools, no nulls besides None/NaN): `str(int(v))` is
            # `str(v)`, and pandas' `astype(str)` does that in one loop.
            present = values.notna().to_numpy()
            out = np.full(len(values), None, dtype=object)
            out[present] = values[present].astype(str).to_numpy(dtype=object)
            return pd.Series(out, index=values.index, dtype=object)
    return pd.Series(
        [to_text(v) for v in values.to_numpy(dtype=object)], index=values.index, dtype=object
    )


# Below this many rows a column is processed value by value (factorizing costs more).
DISTINCT_MIN_ROWS = 4096
# A column whose evenly spaced sample of this many values is more than this share distinct is
# processed value by value.
_DISTINCT_SAMPLE = 2048
_DISTINCT_MAX_SHARE = 0.5
# Value kinds (pandas `infer_dtype`) whose equal values always have the same `to_text`, so the
# raw values can be factorized before conversion. Not "mixed-integer-float" (10**17 == 1e17 but
# their texts differ), nor mixed kinds (True == 1), nor Decimal ("1.5" == "1.50").
_FACTORIZE_RAW = frozenset({"string", "integer", "floating", "boolean", "bytes"})


@dataclass
class Distinct:
    """A column as `codes` (one per row, intp) into `values` (its distinct values as text, a
    RangeIndex object Series, None for a null included). `expand` broadcasts per-value results
    back to rows."""

    codes: np.ndarray
    values: pd.Series

    def expand(self, per_value: Any) -> np.ndarray:
        arr = np.asarray(per_value)
        if arr.dtype != bool:
            arr = np.asarray(per_value, dtype=object)
        return arr[self.codes]


def factorize(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Like `pd.factorize` (codes, -1 for nulls, and distinct values in order of appearance) for
    an object array of hashable scalars, by Python equality. pandas' string hash table cuts a
    string at its first NUL character, so it would take "\\x00abc" and "" for one value."""
    arr = np.asarray(values, dtype=object)
    if len(arr) and infer_dtype(arr, skipna=True) == "string":
        # pandas' table, checked: where it took two strings for one, a value differs from its
        # unique and the exact way below decides.
        codes, uniques = pd.factorize(arr)
        present = codes >= 0
        if bool((uniques[codes[present]] == arr[present]).all()):
            return codes.astype(np.intp, copy=False), uniques
    codes = np.full(len(arr), -1, dtype=np.intp)
    present = ~pd.isna(arr)
    seen: dict[Any, int] = {}
    if present.any():
        setdefault = seen.setdefault
        codes[present] = np.array([setdefault(v, len(seen)) for v in arr[present]], dtype=np.intp)
    uniques = np.empty(len(seen), dtype=object)
    uniques[:] = list(seen)
    return codes, uniques


def _mostly_distinct(arr: np.ndarray) -> bool:
    step = max(1, len(arr) // _DISTINCT_SAMPLE)
    sample = arr[::step]
    return len(pd.unique(sample)) > _DISTINCT_MAX_SHARE * len(sample)


def distinct_text(values: pd.Series, *, force: bool = False) -> Distinct | None:
    """`values` as text (as `as_text` gives it), factorized; None when the column is too short or
    mostly distinct to be worth it (unless `force`)."""
    if not force and len(values) < DISTINCT_MIN_ROWS:
        return None
    arr = values.to_numpy(dtype=object)
    kind = infer_dtype(arr, skipna=True)
    raw = kind in _FACTORIZE_RAW or kind == "empty"
    if not raw:
        # Anything else (mixed kinds, unhashable lists, Decimals, dates): to text first.
        arr = as_text(values).to_numpy(dtype=object)
    if not force and _mostly_distinct(arr):
        return None
    codes, texts = factorize(arr)
    if raw and kind != "string":
        texts = np.array([to_text(v) for v in texts] + [None], dtype=object)[:-1]
    null = codes < 0
    if null.any():
        codes[null] = len(texts)
        texts = np.append(texts, np.array([None], dtype=object))
    return Distinct(codes=codes, values=pd.Series(texts, dtype=object))


def per_distinct(
    values: pd.Series, fn: Callable[[pd.Series], tuple[Any, ...]], *, force: bool = False
) -> tuple[np.ndarray, ...]:
    """`fn` (element-wise: text Series -> tuple of per-value arrays) over the distinct values of
    `values`, broadcast back to rows; over the rows themselves when factorizing does not pay."""
    d = distinct_text(values, force=force)
    if d is None:
        return tuple(
            a if isinstance(a, np.ndarray) else np.asarray(a, dtype=object)
            for a in fn(as_text(values))
        )
    return tuple(d.expand(a) for a in fn(d.values))


def _series_per_distinct(
    values: pd.Series, fn: Callable[[pd.Series], pd.Series]
) -> pd.Series | None:
    d = distinct_text(values)
    if d is None:
        return None
    return pd.Series(
        d.expand(fn(d.values).to_numpy(dtype=object)), index=values.index, dtype=object
    )


def clean_one(value: str, keep_newlines: bool) -> str | None:
    v = unicodedata.normalize("NFC", value)
    if keep_newlines:
        v = v.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
        v = _CONTROL.sub("", v)
        v = _SPACES.sub(" ", v)
        v = "\n".join(line.strip() for line in v.split("\n"))
        v = _BLANK_LINES.sub("\n\n", v).strip()
    else:
        v = _LINE_BREAKS.sub(" ", v)
        v = _CONTROL_ALL.sub("", v)
        v = _ALL_SPACES.sub(" ", v).strip()
    return v or None


def clean_text(values: pd.Series, *, keep_newlines: bool = False) -> pd.Series:
    """NFC, control and invisible formatting characters removed, whitespace runs collapsed,
    trimmed; blank becomes None. `keep_newlines` keeps line structure (for textarea fields)."""
    once = _series_per_distinct(values, lambda u: _clean_rows(u, keep_newlines))
    return once if once is not None else _clean_rows(values, keep_newlines)


def _clean_rows(values: pd.Series, keep_newlines: bool) -> pd.Series:
    text = as_text(values)
    present = text.notna().to_numpy()
    if not present.any():
        return text
    sub = text[present]
    needs = sub.str.contains(_NEEDS_WORK, regex=True).to_numpy(dtype=bool)
    out = sub.str.strip()
    if needs.any():
        fixed = [clean_one(v, keep_newlines) for v in sub[needs].to_numpy(dtype=object)]
        out[needs] = fixed
    out = out.where(out.str.len() > 0, None)
    result = text.copy()
    result[present] = out
    return result


_HTML_BLOCKS = re.compile(
    r"(?is)<(script|style|head|template)\b.*?</\1\s*>|<!--.*?-->|<!\[CDATA\[.*?\]\]>"
)
_HTML_BREAKS = re.compile(r"(?i)<\s*(br|/p|/div|/li|/h[1-6]|/tr|p|div|li|tr)\b[^>]*>")
_HTML_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
_HTML_HINT = re.compile(r"[<&]")


def _strip_html_one(value: str) -> str:
    v = _HTML_BLOCKS.sub(" ", value)
    v = _HTML_BREAKS.sub("\n", v)
    v = _HTML_TAG.sub("", v)
    return html.unescape(v)


def strip_html(values: pd.Series) -> pd.Series:
    """Markup removed (scripts/styles/comments dropped, block ends become line breaks, entities
    decoded). Values without `<` or `&` are returned untouched. Clean the result afterwards."""
    once = _series_per_distinct(values, _strip_html_rows)
    return once if once is not None else _strip_html_rows(values)


def _strip_html_rows(values: pd.Series) -> pd.Series:
    present = values.notna().to_numpy()
    if not present.any():
        return values
    sub = values[present]
    hint = sub.str.contains(_HTML_HINT, regex=True).to_numpy(dtype=bool)
    if not hint.any():
        return values
    out = values.copy()
    idx = sub.index[hint]
    out.loc[idx] = [_strip_html_one(v) for v in sub[hint].to_numpy(dtype=object)]
    return out


# Markup a later pass still removes: comment marks and tags of elements a browser acts on, as
# decoding entities can reveal them ("&lt;b&gt;"); "<not phone>" is prose and stays.
_MARKUP_TAG = re.compile(
    r"(?i)<!--|-->|<\s*/?\s*(?:a|abbr|b|big|blink|body|br|button|center|code|del|div|em|embed|"
    r"font|form|h[1-6]|head|hr|html|i|iframe|img|input|ins|label|li|link|marquee|meta|object|"
    r"ol|option|p|pre|s|script|select|small|span|strike|strong|style|sub|sup|svg|table|tbody|"
    r"td|template|textarea|th|tr|u|ul|video)(?=[\s/>])[^<>]*>"
)
_MARKUP_CHARS = re.compile("[<>&]")
# Passes of tag removal + entity decoding before the markup characters themselves are dropped
# (entities nested deeper than this are an attack, not a CRM value).
_PLAIN_PASSES = 6


def _plain_more(value: str | None, keep_newlines: bool) -> str | None:
    """A stripped and cleaned value until no markup or entity is left in it."""
    v = value
    for _ in range(_PLAIN_PASSES):
        if v is None or (not _MARKUP_TAG.search(v) and html.unescape(v) == v):
            return v
        v = clean_one(html.unescape(_MARKUP_TAG.sub("", v)), keep_newlines)
    return None if v is None else clean_one(_MARKUP_CHARS.sub("", v), keep_newlines)


def plain_text(values: pd.Series, *, keep_newlines: bool = False) -> pd.Series:
    """Text as a person reads it: markup stripped (`strip_html`), cleaned (`clean_text`), and
    again while decoding revealed markup, an entity or an invisible character, so the result
    holds no tag of a known element, no decodable entity, no control or format character."""
    once = _series_per_distinct(values, lambda u: _plain_rows(u, keep_newlines))
    return once if once is not None else _plain_rows(values, keep_newlines)


def _plain_rows(values: pd.Series, keep_newlines: bool) -> pd.Series:
    text = _clean_rows(_strip_html_rows(as_text(values)), keep_newlines)
    hint = text.str.contains(_HTML_HINT, regex=True).to_numpy(dtype=bool, na_value=False)
    if hint.any():
        text = text.copy()
        text[hint] = [_plain_more(v, keep_newlines) for v in text[hint].to_numpy(dtype=object)]
    return text


def utf16_length(values: pd.Series) -> pd.Series:
    """Length as Genesys (Java) counts it: UTF-16 code units, astral characters count two."""
    lens = values.str.len()
    astral = values.str.contains(r"[^\x00-\uffff]", regex=True).to_numpy(dtype=bool, na_value=False)
    maybe = (lens > 0).to_numpy(dtype=bool) & astral
    if maybe.any():
        lens = lens.copy()
        lens[maybe] = lens[maybe] + values[maybe].str.count(_ASTRAL.pattern)
    return lens


def truncate_one(value: str, limit: int) -> str:
    """`value` cut to at most `limit` UTF-16 units, never splitting a surrogate pair."""
    units = 0
    for i, ch in enumerate(value):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return value[:i].rstrip()
    return value


def over_limit(values: pd.Series, limit: int) -> np.ndarray:
    """Boolean mask of non-null values longer than `limit` UTF-16 units."""
    lens = values.str.len()
    cand = (lens > limit // 2).to_numpy(dtype=bool, na_value=False)
    mask = np.zeros(len(values), dtype=bool)
    if cand.any():
        mask[cand] = (utf16_length(values[cand]) > limit).to_numpy(dtype=bool)
    return mask


def json_string(values: pd.Series) -> pd.Series:
    """Each non-null str as its JSON literal, exactly as `json.dumps(v, ensure_ascii=False)`."""
    once = _series_per_distinct(values, _json_rows)
    return once if once is not None else _json_rows(values)


def _json_rows(values: pd.Series) -> pd.Series:
    present = values.notna().to_numpy()
    out = pd.Series(np.full(len(values), None, dtype=object), index=values.index)
    if not present.any():
        return out
    sub = values[present]
    esc = sub.str.contains(_JSON_ESCAPE, regex=True).to_numpy(dtype=bool)
    quoted = ('"' + sub + '"').to_numpy(dtype=object)
    if esc.any():
        quoted[esc] = [json.dumps(v, ensure_ascii=False) for v in sub[esc].to_numpy(dtype=object)]
    out[present] = quoted
    return out


# -- e-mail -------------------------------------------------------------------------------------

EMAIL_INVALID = "invalid_email"
EMAIL_TOO_LONG = "email_too_long"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_RE = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}))"
)
# Already canonical (lower-case domain, nothing to trim): accepted without per-value Python.
_EMAIL_CANONICAL = re.compile(
    rf"(?=[^@]{{1,64}}@)(?:{_ATOM}(?:\.{_ATOM})*)@(?=[^@]{{1,253}}\Z)"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)
_MAILTO = re.compile(r"(?i)^\s*mailto:")
_ANGLE = re.compile(r"<([^<>]*)>\s*$")


def _email_one(value: str, limit: int) -> tuple[str | None, str | None]:
    v = _MAILTO.sub("", value.strip())
    m = _ANGLE.search(v)
    if m:
        v = _MAILTO.sub("", m.group(1))
    v = v.strip().rstrip(".")
    if "@" in v:
        local, _, domain = v.rpartition("@")
        domain = domain.strip().rstrip(".")
        if domain and not domain.isascii():
            try:
                domain = domain.encode("idna").decode("ascii")
            except (UnicodeError, ValueError):
                return None, EMAIL_INVALID
        v = f"{local.strip()}@{domain.lower()}"
    m2 = _EMAIL_RE.fullmatch(v)
    if m2 is None or len(m2.group("local")) > 64 or len(m2.group("domain")) > 253:
        return None, EMAIL_INVALID
    if len(v) > limit:
        return None, EMAIL_TOO_LONG
    return v, None


def normalize_emails(values: pd.Series, limit: int = 256) -> pd.DataFrame:
    """E-mails trimmed, `mailto:` and `Name <addr>` unwrapped, domain lower-cased (IDN domains
    punycoded), validated (ASCII local part), at most `limit` characters. Returns `email` and
    `reason` (None when valid or blank)."""
    text = as_text(values)
    n = len(text)
    email = np.full(n, None, dtype=object)
    reason = np.full(n, None, dtype=object)
    present = text.notna().to_numpy() & (text.str.strip().str.len() > 0).to_numpy(
        dtype=bool, na_value=False
    )
    if present.any():
        sub = text[present]
        fast = sub.str.fullmatch(_EMAIL_CANONICAL).to_numpy(dtype=bool) & (
            sub.str.len() <= limit
        ).to_numpy(dtype=bool)
        pos = np.flatnonzero(present)
        email[pos[fast]] = sub.to_numpy(dtype=object)[fast]
        rest = ~fast
        if rest.any():
            codes, uniques = pd.factorize(sub[rest])
            res = [_email_one(u, limit) for u in uniques]
            ue = np.array([r[0] for r in res], dtype=object)
            ur = np.array([r[1] for r in res], dtype=object)
            email[pos[rest]] = ue[codes]
            reason[pos[rest]] = ur[codes]
    return pd.DataFrame({"email": email, "reason": reason}, index=values.index)
