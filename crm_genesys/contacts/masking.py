"""Masking of phones and e-mails for logs, reports and asset-check metadata.

This is the one place masking is done: every other package imports these functions, so a reviewer
sees the same masked form everywhere and no raw identifier leaks through a hand-rolled variant.
The masked form keeps enough to recognise a value you already hold (country code and a few
digits, the first letter and the domain) and never enough to dial or mail it.
"""

from __future__ import annotations

from typing import Any

_STAR = "*"


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value != value:  # NaN
        return ""
    return str(value)


def mask_phone(value: Any) -> str:
    """`+18005550199` -> `+1800****199`: first five and last three characters kept.

    Whitespace is dropped first so that formatting cannot widen what is shown. Values shorter than
    ten characters keep only their first and last two (six to nine characters) or nothing at all:
    a short value is mostly secret, and a short number shown whole would be the number itself.
    """
    text = "".join(_as_text(value).split())
    n = len(text)
    if n == 0:
        return ""
    if n >= 10:
        return text[:5] + _STAR * (n - 8) + text[-3:]
    if n >= 6:
        return text[:2] + _STAR * (n - 4) + text[-2:]
    return _STAR * n


def mask_email(value: Any) -> str:
    """`john.doe@example.com` -> `j***@example.com`: the first character of the local part and the
    domain are kept (the domain tells a reviewer which system a bad address came from).

    A value without `@` is masked like an opaque token: first character and `***`.
    """
    text = _as_text(value).strip()
    if not text:
        return ""
    local, sep, domain = text.rpartition("@")
    if not sep:
        return text[0] + _STAR * 3
    if not local:
        return _STAR * 3 + "@" + domain
    return local[0] + _STAR * 3 + "@" + domain


def mask_key(value: Any) -> str:
    """A business key as samples show it: `AC-0012345` -> `AC-0****45` (first four and last two
    characters of keys of ten or more; a shorter key keeps its first and last character). A key
    may be built from contact data (an e-mail, a phone), so it is never shown whole."""
    text = _as_text(value).strip()
    n = len(text)
    if n >= 10:
        return text[:4] + _STAR * (n - 6) + text[-2:]
    if n >= 3:
        return text[0] + _STAR * (n - 2) + text[-1]
    return _STAR * n
