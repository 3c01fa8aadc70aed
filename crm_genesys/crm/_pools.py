"""Value pools for the demo CRM: names in many scripts, addresses, phones, e-mail parts.

Everything here is constant or derived deterministically (fixed seeds, pinned `phonenumbers`
metadata), so the generator built on it is reproducible. Pools are built once per process.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import numpy as np
import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

# (alpha-2, weight, name group, how the country column spells its name when it does).
COUNTRIES: tuple[tuple[str, float, str, str], ...] = (
    ("US", 0.30, "en", "United States"),
    ("CA", 0.05, "en", "Canada"),
    ("GB", 0.08, "en", "United Kingdom"),
    ("DE", 0.07, "de", "Germany"),
    ("FR", 0.05, "fr", "France"),
    ("IN", 0.05, "hi", "India"),
    ("AU", 0.04, "en", "Australia"),
    ("JP", 0.04, "ja", "Japan"),
    ("BR", 0.04, "pt", "Brazil"),
    ("MX", 0.04, "es", "Mexico"),
    ("ES", 0.03, "es", "Spain"),
    ("IT", 0.03, "it", "Italy"),
    ("NL", 0.03, "nl", "Netherlands"),
    ("SG", 0.02, "zh", "Singapore"),
    ("ZA", 0.02, "en", "South Africa"),
    ("RU", 0.02, "ru", "Russia"),
    ("GR", 0.02, "el", "Greece"),
    ("KR", 0.02, "ko", "South Korea"),
    ("AE", 0.02, "ar", "United Arab Emirates"),
    ("CN", 0.03, "zh", "China"),
)
COUNTRY_CODES: tuple[str, ...] = tuple(c[0] for c in COUNTRIES)
COUNTRY_WEIGHTS = np.array([c[1] for c in COUNTRIES]) / sum(c[1] for c in COUNTRIES)
# Extra spellings seen in real CRMs besides the English name.
COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "US": ("USA",),
    "GB": ("UK",),
    "DE": ("Deutschland",),
}


def _latin(words: str) -> list[tuple[str, str]]:
    """Space-separated Latin names; the ASCII form is derived later (diacritics stripped)."""
    return [(w, w) for w in words.split()]


# Name groups: (first names, last names) as (native, ASCII for e-mail local parts).
_NAMES: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "en": (
        _latin(
            "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William "
            "Barbara Olivia Liam Noah Emma Sophia Mason Chloe Ethan"
        ),
        _latin(
            "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Moore "
            "Jackson Martin Thompson White Harris Clark O'Brien MacDonald Nguyen"
        ),
    ),
    "de": (
        _latin("Jürgen Björn Günther Lukas Sören Jörg Anna Lena Käthe Mia"),
        _latin("Müller Schröder Schäfer Weiß Groß Köhler Krüger Bäcker Fischer Wagner"),
    ),
    "fr": (
        _latin("François Hélène Zoé Chloé Jérôme Loïc Gaëlle Noël Renée Amélie"),
        _latin("Lefèvre Dupré Béranger Gérard Fontaine Lemaître Côté Benoît Mercier Rousseau"),
    ),
    "es": (
        _latin("José María Íñigo Begoña Jesús Lucía Sofía Martín Raúl Inés"),
        _latin("García Fernández González Rodríguez López Martínez Sánchez Pérez Muñoz Ibáñez"),
    ),
    "pt": (
        _latin("João Conceição Gonçalo Luís Thaís Antônio Júlia Sebastião Vitória Caio"),
        _latin("Gonçalves Magalhães Araújo Simões Brandão Falcão Assunção Lima Souza Carvalho"),
    ),
    "it": (
        _latin("Niccolò Lucia Giuseppe Francesca Chiara Andrea Matteo Giulia"),
        [
            *_latin("Rossi Esposito Bianchi Romano Colombo Ricci Marino Greco D'Angelo"),
            ("De Luca", "DeLuca"),
        ],
    ),
    "nl": (
        _latin("Daan Sanne Bram Lieke Joris Fleur Sem Anouk"),
        [
            ("de Vries", "deVries"),
            ("van den Berg", "vandenBerg"),
            ("van Dijk", "vanDijk"),
            *_latin("Jansen Bakker Visser Smit"),
        ],
    ),
    "ru": (
        [
            ("Александр", "aleksandr"),
            ("Дмитрий", "dmitriy"),
            ("Мария", "mariya"),
            ("Анна", "anna"),
            ("Сергей", "sergey"),
            ("Ольга", "olga"),
            ("Иван", "ivan"),
            ("Наталья", "natalya"),
        ],
        [
            ("Иванов", "ivanov"),
            ("Смирнов", "smirnov"),
            ("Кузнецов", "kuznetsov"),
            ("Попов", "popov"),
            ("Петрова", "petrova"),
            ("Соколова", "sokolova"),
        ],
    ),
    "el": (
        [
            ("Γιώργος", "giorgos"),
            ("Μαρία", "maria"),
            ("Νίκος", "nikos"),
            ("Ελένη", "eleni"),
            ("Δημήτρης", "dimitris"),
            ("Κατερίνα", "katerina"),
        ],
        [
            ("Παπαδόπουλος", "papadopoulos"),
            ("Παπαδοπούλου", "papadopoulou"),
            ("Βασιλείου", "vasileiou"),
            ("Γεωργίου", "georgiou"),
            ("Οικονόμου", "oikonomou"),
        ],
    ),
    "ja": (
        [
            ("太郎", "taro"),
            ("花子", "hanako"),
            ("翔太", "shota"),
            ("陽菜", "hina"),
            ("大輔", "daisuke"),
            ("さくら", "sakura"),
        ],
        [
            ("佐藤", "sato"),
            ("鈴木", "suzuki"),
            ("高橋", "takahashi"),
            ("田中", "tanaka"),
            ("渡辺", "watanabe"),
            ("伊藤", "ito"),
        ],
    ),
    "zh": (
        [
            ("伟", "wei"),
            ("芳", "fang"),
            ("娜", "na"),
            ("敏", "min"),
            ("静", "jing"),
            ("强", "qiang"),
        ],
        [
            ("王", "wang"),
            ("李", "li"),
            ("张", "zhang"),
            ("刘", "liu"),
            ("陈", "chen"),
            ("杨", "yang"),
        ],
    ),
    "ar": (
        [
            ("محمد", "mohammed"),
            ("فاطمة", "fatima"),
            ("أحمد", "ahmed"),
            ("عائشة", "aisha"),
            ("علي", "ali"),
            ("مريم", "maryam"),
        ],
        [
            ("العلي", "alali"),
            ("الحسن", "alhassan"),
            ("المنصوري", "almansouri"),
            ("الهاشمي", "alhashimi"),
            ("الكعبي", "alkaabi"),
        ],
    ),
    "hi": (
        [
            ("राहुल", "rahul"),
            ("प्रिया", "priya"),
            ("अमित", "amit"),
            ("अनीता", "anita"),
            ("Rahul", "rahul"),
            ("Priya", "priya"),
            ("Vikram", "vikram"),
        ],
        [
            ("शर्मा", "sharma"),
            ("वर्मा", "verma"),
            ("गुप्ता", "gupta"),
            ("सिंह", "singh"),
            ("Patel", "patel"),
            ("Iyer", "iyer"),
        ],
    ),
    "ko": (
        [
            ("민준", "minjun"),
            ("서연", "seoyeon"),
            ("지훈", "jihun"),
            ("하은", "haeun"),
            ("도윤", "doyun"),
        ],
        [
            ("김", "kim"),
            ("이", "lee"),
            ("박", "park"),
            ("최", "choi"),
            ("정", "jung"),
            ("강", "kang"),
        ],
    ),
}
NAME_GROUPS: tuple[str, ...] = tuple(_NAMES)

# Per country: (street names, (city, region, postal code) triples). Street number goes after the
# name where that is the local custom.
_NUMBER_AFTER = {"DE", "FR", "ES", "IT", "NL", "BR", "MX", "RU", "GR"}
_ADDRESSES: dict[str, tuple[list[str], list[tuple[str, str, str]]]] = {
    "US": (
        ["Main St", "Oak Avenue", "Maple Dr.", "Elm Street", "Sunset Blvd"],
        [
            ("Springfield", "IL", "62701"),
            ("Austin", "TX", "73301"),
            ("Boston", "MA", "02108"),
            ("Seattle", "WA", "98101-1234"),
        ],
    ),
    "CA": (
        ["Queen St W", "rue Sainte-Catherine", "Yonge Street"],
        [("Toronto", "ON", "M5H 2N2"), ("Montréal", "QC", "H3B 1A7"), ("Halifax", "NS", "B3H1A1")],
    ),
    "GB": (
        ["High Street", "Station Road", "Church Lane"],
        [
            ("London", "England", "SW1A 1AA"),
            ("Manchester", "", "M1 1AE"),
            ("Edinburgh", "Scotland", "EH1 1YZ"),
        ],
    ),
    "DE": (
        ["Hauptstraße", "Schloßallee", "Bahnhofstr."],
        [("Berlin", "BE", "10115"), ("München", "Bayern", "80331"), ("Köln", "NRW", "50667")],
    ),
    "FR": (
        ["rue de la Paix", "avenue des Champs-Élysées", "boulevard Saint-Michel"],
        [
            ("Paris", "Île-de-France", "75002"),
            ("Lyon", "", "69001"),
            ("Marseille", "PACA", "13001"),
        ],
    ),
    "IN": (
        ["MG Road", "Nehru Place", "Park Street"],
        [
            ("Mumbai", "MH", "400001"),
            ("Bengaluru", "Karnataka", "560001"),
            ("Delhi", "DL", "110001"),
        ],
    ),
    "AU": (
        ["George St", "Collins Street", "Queen St"],
        [("Sydney", "NSW", "2000"), ("Melbourne", "VIC", "3000"), ("Brisbane", "QLD", "4000")],
    ),
    "JP": (
        ["千代田1-1", "銀座4-5-6", "Shibuya 2-21-1"],
        [
            ("東京都", "東京", "100-0001"),
            ("大阪市", "大阪府", "530-0001"),
            ("Kyoto", "Kyoto", "600-8216"),
        ],
    ),
    "BR": (
        ["Avenida Paulista", "Rua Augusta", "Rua das Flores"],
        [("São Paulo", "SP", "01310-100"), ("Rio de Janeiro", "RJ", "20040-020")],
    ),
    "MX": (
        ["Avenida Reforma", "Calle Madero"],
        [("Ciudad de México", "CDMX", "06600"), ("Guadalajara", "Jalisco", "44100")],
    ),
    "ES": (
        ["Calle Mayor", "Gran Vía", "Paseo de Gràcia"],
        [("Madrid", "Madrid", "28013"), ("Barcelona", "Cataluña", "08007")],
    ),
    "IT": (
        ["Via Roma", "Corso Vittorio Emanuele", "Via della Conciliazione"],
        [("Roma", "RM", "00184"), ("Milano", "MI", "20121"), ("Napoli", "NA", "80133")],
    ),
    "NL": (
        ["Kerkstraat", "Damrak", "Prinsengracht"],
        [("Amsterdam", "NH", "1012 JS"), ("Rotterdam", "ZH", "3011AD")],
    ),
    "SG": (
        ["Orchard Road", "Raffles Place"],
        [("Singapore", "", "238801"), ("Singapore", "", "048616")],
    ),
    "ZA": (
        ["Long Street", "Main Road"],
        [("Cape Town", "WC", "8001"), ("Johannesburg", "GP", "2001")],
    ),
    "RU": (
        ["ул. Тверская", "Невский проспект"],
        [("Москва", "Москва", "125009"), ("Санкт-Петербург", "", "191186")],
    ),
    "GR": (
        ["Οδός Ερμού", "Λεωφόρος Αλεξάνδρας"],
        [("Αθήνα", "Αττική", "105 63"), ("Θεσσαλονίκη", "", "546 24")],
    ),
    "KR": (["세종대로", "테헤란로"], [("서울", "서울특별시", "04524"), ("부산", "", "48058")]),
    "AE": (["Sheikh Zayed Road", "شارع الشيخ زايد"], [("Dubai", "Dubai", ""), ("أبو ظبي", "", "")]),
    "CN": (["长安街", "南京路"], [("北京", "北京市", "100006"), ("上海", "上海市", "200001")]),
}

SALUTATIONS = ["Mr.", "Ms.", "Mrs.", "Dr.", "Herr", "Frau", "M.", "Mme", "Sr.", "Sra.", "Prof."]
JOB_TITLES = [
    "Purchasing Manager",
    "CTO",
    "Head of Operations",
    "Einkaufsleiterin",
    "Directeur commercial",
    "Office Manager",
    "Software Engineer",
    "部長",
    "Owner",
    "Procurement Lead",
    "Gerente de Compras",
]
COMPANIES = [
    "Acme Corp",
    "Globex Ltd",
    "Initech",
    "Müller & Söhne KG",
    "株式会社サンプル",
    "Société Générale d'Exemple SA",
    "Umbrella Holdings plc",
    "Vandelay Industries",
    "Soylent B.V.",
    "Stark & Wayne LLP",
    "Tyrell Pty Ltd",
    "ООО Пример",
]
# One company name longer than a Genesys text field accepts (the mapping truncates it).
LONG_COMPANY = "Consolidated " + " & ".join(f"Subsidiary Number {i} Holdings" for i in range(12))
TIERS = ["Bronze", "Silver", "Gold", "Platinum"]
LANGUAGES = [
    "en",
    "de",
    "fr",
    "es",
    "pt",
    "it",
    "nl",
    "ja",
    "zh",
    "ko",
    "ru",
    "el",
    "ar",
    "hi",
    "en-US",
    "EN",
]
NOTES = [
    "<p>VIP customer &amp; long-time partner.</p>",
    "<script>alert('x')</script>Call after 5pm",
    "<b>Prefers</b> e-mail &lt;not phone&gt;",
    "Met at trade show&nbsp;2023<br/>Follow up in Q3",
    '<div style="color:red">Overdue invoice</div><!-- internal -->',
    "plain text note, no markup",
    "<ul><li>Needs quote</li><li>Asked for &quot;demo&quot;</li></ul>",
    "<p>Ünïcödé note — ≈ fine 👍</p>",
]
LONG_NOTE = "<p>" + " ".join(["Long history of the account."] * 150) + "</p>"
EMAIL_DOMAINS = [
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
    "acme.example",
    "globex.example",
    "corp.example.co.uk",
]
GARBAGE_PHONES = [
    "N/A",
    "n/a",
    "call me",
    "unknown",
    "-",
    "none",
    "TBD",
    "see notes",
    "?",
    "0000000000",
    "123-456-7890",
    "+1 (555) 555-5555",
    "999",
]
EXTENSIONS = [" x123", " ext. 45", ";ext=9", " ext 4567", " x7"]
# Characters that pad names and e-mails in real exports: spaces, tabs, NBSP, zero-width, BEL, CR.
PADDING = [" ", "  ", "\t", "\u00a0", "\u200b", "\x07", "\r\n", " \u200b"]


@dataclass(frozen=True)
class NamePool:
    """Flat name arrays with per-group offsets, so a row's name is one vectorized gather."""

    first: np.ndarray  # object: native spelling
    first_ascii: np.ndarray  # object: lowercase ASCII for e-mail local parts
    first_offset: np.ndarray  # int64 per group
    first_size: np.ndarray
    last: np.ndarray
    last_ascii: np.ndarray
    last_offset: np.ndarray
    last_size: np.ndarray
    group_of_country: np.ndarray  # int64 per country index


def _ascii(text: str) -> str:
    stripped = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z]", "", stripped).lower()


def _flatten(entries: list[list[tuple[str, str]]]) -> tuple[np.ndarray, ...]:
    native: list[str] = []
    ascii_: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    for group in entries:
        offsets.append(len(native))
        sizes.append(len(group))
        for name, asc in group:
            # Pools are kept in NFC; the generator decomposes some on purpose.
            native.append(unicodedata.normalize("NFC", name))
            ascii_.append(_ascii(asc) or "x")
    return (
        np.array(native, dtype=object),
        np.array(ascii_, dtype=object),
        np.array(offsets, dtype=np.int64),
        np.array(sizes, dtype=np.int64),
    )


@cache
def name_pool() -> NamePool:
    firsts = _flatten([_NAMES[g][0] for g in NAME_GROUPS])
    lasts = _flatten([_NAMES[g][1] for g in NAME_GROUPS])
    groups = np.array([NAME_GROUPS.index(c[2]) for c in COUNTRIES], dtype=np.int64)
    return NamePool(
        first=firsts[0],
        first_ascii=firsts[1],
        first_offset=firsts[2],
        first_size=firsts[3],
        last=lasts[0],
        last_ascii=lasts[1],
        last_offset=lasts[2],
        last_size=lasts[3],
        group_of_country=groups,
    )


@dataclass(frozen=True)
class AddressPool:
    """Per country: street names and (city, region, postal code), as padded 2-D object arrays."""

    streets: np.ndarray  # (countries, S) object, cycled to fill
    places: np.ndarray  # (countries, P, 3) object
    number_after: np.ndarray  # bool per country


@cache
def address_pool() -> AddressPool:
    s_width = max(len(v[0]) for v in _ADDRESSES.values())
    p_width = max(len(v[1]) for v in _ADDRESSES.values())
    streets = np.empty((len(COUNTRIES), s_width), dtype=object)
    places = np.empty((len(COUNTRIES), p_width, 3), dtype=object)
    for i, code in enumerate(COUNTRY_CODES):
        names, triples = _ADDRESSES[code]
        for j in range(s_width):
            streets[i, j] = names[j % len(names)]
        for j in range(p_width):
            places[i, j, :] = triples[j % len(triples)]
    after = np.array([c in _NUMBER_AFTER for c in COUNTRY_CODES])
    return AddressPool(streets, places, after)


# --- phones --------------------------------------------------------------------------------

PHONE_POOL_SIZE = 16
_TYPES = (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE)
# Column order of PhonePool.valid[..., f]; every cell parses valid for its own country.
PHONE_FORMATS = (
    "e164",
    "international",
    "national",
    "digits",
    "dashes",
    "dots",
    "plus_less",
    "idd",
    "international_dashes",
    "trunk_1_or_parens",
)


@dataclass(frozen=True)
class PhonePool:
    """Valid and invalid phone strings per (country, type, number[, format]).

    `valid[c, t, i, f]` is number i of type t (0 fixed, 1 mobile) of country c written in
    format f; each cell was checked valid by `phonenumbers` when parsed with country c (cells whose
    format does not survive parsing fall back to E.164). `e164[c, t, i]` and `international`
    parse valid with any region. `invalid[c, t, i]` is a near-miss (one digit short or long)
    checked invalid for country c. `idd[c]` is a prefix that dials out of country c ("011 ",
    "00") or "" when none is safe, used to write foreign numbers the way a local would.
    """

    valid: np.ndarray
    e164: np.ndarray
    international: np.ndarray
    invalid: np.ndarray
    idd: np.ndarray


def _formats(num: phonenumbers.PhoneNumber, region: str, idd: str) -> list[str]:
    e164 = phonenumbers.format_number(num, PhoneNumberFormat.E164)
    intl = phonenumbers.format_number(num, PhoneNumberFormat.INTERNATIONAL)
    natl = phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL)
    bare = re.sub(r"[()]", "", natl).strip()
    if region in ("US", "CA"):
        extra = "1-" + re.sub(r"\D", "-", bare).replace("--", "-")  # trunk prefix 1
    else:
        extra = intl.replace(f"+{num.country_code} ", f"+{num.country_code} (0)", 1)
    return [
        e164,
        intl,
        natl,
        re.sub(r"\D", "", natl),
        re.sub(r"[ ]+", "-", bare),
        re.sub(r"[ -]+", ".", bare),
        e164[1:],
        (idd or "00") + e164[1:],
        intl.replace(" ", "-"),
        extra,
    ]


def _is_valid(text: str, region: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, region))
    except phonenumbers.NumberParseException:
        return False


def _near_miss(e164: str, region: str) -> str:
    """`e164` with digits dropped or added until `phonenumbers` calls it invalid (some
    countries, e.g. DE, accept several lengths)."""
    for candidate in (e164[:-1], e164[:-2], e164 + "9", e164 + "99", e164 + "999", e164[:-4]):
        if not _is_valid(candidate, region):
            return candidate
    raise AssertionError(f"no invalid near-miss for {e164}")


@cache
def phone_pool() -> PhonePool:
    rng = np.random.default_rng(20240601)  # fixed: pools never depend on the caller's seed
    n_c, n_t, n_f = len(COUNTRIES), len(_TYPES), len(PHONE_FORMATS)
    valid = np.empty((n_c, n_t, PHONE_POOL_SIZE, n_f), dtype=object)
    e164 = np.empty((n_c, n_t, PHONE_POOL_SIZE), dtype=object)
    intl = np.empty((n_c, n_t, PHONE_POOL_SIZE), dtype=object)
    invalid = np.empty((n_c, n_t, PHONE_POOL_SIZE), dtype=object)
    idd = np.empty(n_c, dtype=object)
    for c, region in enumerate(COUNTRY_CODES):
        probe = "4930123456"  # a German fixed line, dialled from abroad
        if _is_valid("011 " + probe, region):
            idd[c] = "011 "
        elif _is_valid("00" + probe, region):
            idd[c] = "00"
        else:
            idd[c] = ""
        for t, ntype in enumerate(_TYPES):
            example = phonenumbers.example_number_for_type(region, ntype)
            assert example is not None, (region, ntype)
            nsn = phonenumbers.national_significant_number(example)
            found: list[phonenumbers.PhoneNumber] = []
            seen: set[str] = set()
            for _ in range(PHONE_POOL_SIZE * 40):
                if len(found) == PHONE_POOL_SIZE:
                    break
                k = min(4, len(nsn) - 3)
                digits = nsn[:-k] + "".join(str(d) for d in rng.integers(0, 10, k))
                candidate = phonenumbers.parse(f"+{example.country_code}{digits}")
                if digits not in seen and phonenumbers.is_valid_number(candidate):
                    seen.add(digits)
                    found.append(candidate)
            assert found, region
            for i in range(PHONE_POOL_SIZE):
                num = found[i % len(found)]
                cells = _formats(num, region, idd[c])
                for f, text in enumerate(cells):
                    valid[c, t, i, f] = text if _is_valid(text, region) else cells[0]
                e164[c, t, i] = cells[0]
                intl[c, t, i] = cells[1]
                invalid[c, t, i] = _near_miss(cells[0], region)
    return PhonePool(valid, e164, intl, invalid, idd)
