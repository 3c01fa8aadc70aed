"""Country values as the CRM holds them (`us`, `DE`, `Germany`, `UK`, `Deutschland`, blank) to
ISO 3166 alpha-2 regions phonenumbers knows. Unknown spellings resolve to None (the caller uses
the default country for phones and reports them); a mapping adds its own `country_aliases`."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import phonenumbers
from phonenumbers.geocoder import _region_display_name

from crm_genesys.contacts.text import clean_text

# Common spellings that are neither alpha-2 codes nor phonenumbers' English names.
_ALIASES: dict[str, str] = {
    "usa": "US", "u.s.": "US", "u.s.a.": "US", "united states of america": "US", "america": "US",
    "uk": "GB", "u.k.": "GB", "great britain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB",
    "deutschland": "DE", "allemagne": "DE", "españa": "ES", "espana": "ES", "italia": "IT",
    "nederland": "NL", "holland": "NL", "the netherlands": "NL", "brasil": "BR", "méxico": "MX",
    "schweiz": "CH", "suisse": "CH", "svizzera": "CH", "österreich": "AT", "osterreich": "AT",
    "sverige": "SE", "norge": "NO", "danmark": "DK", "suomi": "FI", "polska": "PL",
    "россия": "RU", "russia": "RU", "日本": "JP", "nippon": "JP", "中国": "CN", "prc": "CN",
    "south korea": "KR", "korea": "KR", "대한민국": "KR", "india": "IN", "भारत": "IN",
    "uae": "AE", "türkiye": "TR", "turkey": "TR", "czech republic": "CZ", "czechia": "CZ",
    "ivory coast": "CI", "viet nam": "VN", "vietnam": "VN",
    # ISO alpha-3 codes of the most common CRM countries.
    "gbr": "GB", "deu": "DE", "fra": "FR", "esp": "ES", "ita": "IT", "nld": "NL",
    "bel": "BE", "che": "CH", "aut": "AT", "swe": "SE", "nor": "NO", "dnk": "DK", "fin": "FI",
    "irl": "IE", "prt": "PT", "pol": "PL", "can": "CA", "mex": "MX", "bra": "BR", "arg": "AR",
    "aus": "AU", "nzl": "NZ", "jpn": "JP", "chn": "CN", "ind": "IN", "zaf": "ZA", "sgp": "SG",
    "kor": "KR", "rus": "RU", "tur": "TR", "are": "AE", "sau": "SA", "isr": "IL", "egy": "EG",
    "nga": "NG", "ken": "KE", "col": "CO", "chl": "CL", "per": "PE", "phl": "PH", "idn": "ID",
    "mys": "MY", "tha": "TH", "vnm": "VN", "hkg": "HK", "twn": "TW", "cze": "CZ", "hun": "HU",
    "rou": "RO", "grc": "GR", "ukr": "UA",
}  # fmt: skip


@lru_cache(maxsize=1)
def _names() -> dict[str, str]:
    table: dict[str, str] = {}
    for code in phonenumbers.SUPPORTED_REGIONS:
        name = _region_display_name(code, "en")
        if name:
            table[name.casefold()] = code
    table.update(_ALIASES)
    return table


def resolve_country(value: str | None, aliases: dict[str, str] | None = None) -> str | None:
    """One cleaned value to an alpha-2 region, or None when blank or unknown."""
    if not value:
        return None
    v = value.strip()
    code = v.upper()
    if len(code) == 2 and code in phonenumbers.SUPPORTED_REGIONS:
        return code
    folded = v.casefold().strip(" .")
    if aliases:
        for alias, target in aliases.items():
            if alias.casefold() == folded:
                return target
    return _names().get(folded) or _names().get(v.casefold())


def resolve_countries(values: pd.Series, aliases: dict[str, str] | None = None) -> pd.Series:
    """Alpha-2 region per row (object; None when blank or unknown), one lookup per value."""
    text = clean_text(values)
    out = np.full(len(text), None, dtype=object)
    present = text.notna().to_numpy()
    if present.any():
        codes, uniques = pd.factorize(text[present])
        mapped = np.empty(len(uniques), dtype=object)
        mapped[:] = [resolve_country(u, aliases) for u in uniques]
        out[present] = mapped[codes]
    return pd.Series(out, index=values.index, dtype=object)
