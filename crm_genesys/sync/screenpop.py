"""Screen-pop readiness: do callers' numbers find the contact an agent should see?

A CTI integration (a screen pop) takes the caller's number (ANI) as the carrier delivers it and
asks Genesys for the contact: `POST /api/v2/externalcontacts/identifierlookup/contacts` with
`{"type": "Phone", "value": <E.164>}` and `GET /api/v2/externalcontacts/reversewhitepageslookup
?lookupVal=<E.164>`. Both take E.164 only (the platform's documented contract: "Phone, with +
and the country code"; reverse lookup by "e164 phone numbers"), so a caller's number in another
form (national, with the trunk prefix, with the 00 or 011 international prefix) reaches the
contact only through the E.164 it maps to from where it was dialled.

`caller_forms(e164)` lists the forms a caller may dial and where from; `verify_numbers` maps each
to E.164 as a CTI does (phonenumbers, with the caller's region), looks each distinct E.164 up
both ways and judges every number of the sample:

- `ok`: every form maps to the number, and both lookups find exactly the contact;
- `shared`: other contacts hold the number too (listed with their keys; with 25 or more, the
  reverse lookup's limit, ours may not be among those returned): a screen pop on that number
  cannot know who calls. Reported, not a failure of the sync;
- `missing`: a lookup does not find the contact (what Genesys holds is not the E.164 the
  caller's forms map to, or nothing at all);
- `other_contact`: a lookup finds only other contacts;
- `form_mismatch`: a form a caller dials maps to another E.164 than the stored one;
- `unverified`: a lookup failed temporarily (retried by the client first): not judged.

The check passes when no number is `missing`, `other_contact` or `form_mismatch`. Each distinct
E.164 costs two requests (both lookups).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import phonenumbers

from crm_genesys.genesys.client import API, GenesysClient
from crm_genesys.genesys.errors import NotFoundError, PermanentError, RetryableError
from crm_genesys.genesys.target import GenesysTarget

Verdict = Literal["ok", "shared", "missing", "other_contact", "form_mismatch", "unverified"]
FAILING: frozenset[str] = frozenset({"missing", "other_contact", "form_mismatch"})
# The most contacts a reverse whitepages lookup returns.
REVERSE_LOOKUP_LIMIT = 25
# Normalized frame column -> the Genesys phone slot it fills.
PHONE_SLOTS = {
    "work_phone": "workPhone",
    "cell_phone": "cellPhone",
    "home_phone": "homePhone",
    "other_phone": "otherPhone",
}
# Where callers of a number dial the international forms from: 00 from most of the world
# (from Germany, or from the UK for German numbers), 011 from the North American plan.
_FROM_00 = ("DE", "GB")
_FROM_011 = ("US", "CA")


@dataclass(frozen=True)
class DialForm:
    """A number as a caller dials it (`dialled`) from `region`; `form` names the form."""

    form: str
    dialled: str
    region: str


def caller_forms(e164: str) -> list[DialForm]:
    """The forms of `e164` a caller may dial: E.164 itself, the national format and the digits
    with the trunk prefix (from the number's own country), and with the 00 and 011 international
    prefixes (from a country that uses them). Empty when `e164` is not a valid number."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return []
    region = phonenumbers.region_code_for_number(number)
    if region is None or region == "001":
        return [DialForm("e164", e164, "ZZ")]
    nsn = phonenumbers.national_significant_number(number)
    cc = number.country_code
    forms = [
        DialForm("e164", e164, region),
        DialForm(
            "national",
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
            region,
        ),
    ]
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    trunk = metadata.national_prefix if metadata is not None else None
    if trunk:
        forms.append(DialForm("trunk_prefix", f"{trunk}{nsn}", region))
    abroad_00 = next(r for r in _FROM_00 if r != region)
    forms.append(DialForm("international_00", f"00 {cc} {nsn}", abroad_00))
    if cc != 1:  # within the North American plan a caller dials 1, not 011
        abroad_011 = next(r for r in _FROM_011 if r != region)
        forms.append(DialForm("international_011", f"011 {cc} {nsn}", abroad_011))
    return forms


def as_cti_e164(form: DialForm) -> str | None:
    """The E.164 a CTI integration derives from the dialled form (None: not a number)."""
    try:
        number = phonenumbers.parse(form.dialled, None if form.region == "ZZ" else form.region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class SampledNumber:
    """One number of a synced contact: its key, the Genesys contact id state holds, the slot
    (`workPhone`, ...) and the E.164 we sent."""

    business_key: str
    contact_id: str
    slot: str
    e164: str


@dataclass
class NumberVerdict:
    """What the lookups said about one sampled number."""

    number: SampledNumber
    verdict: Verdict
    forms: int
    forms_matching: int
    # Business keys (or `contact <id>` for contacts without our ExternalId) the lookups found.
    found: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class ScreenPopReport:
    """The verdicts of a sample and what they cost."""

    contacts: int = 0
    verdicts: list[NumberVerdict] = field(default_factory=list)
    lookups: int = 0

    def count(self, verdict: str) -> int:
        return sum(v.verdict == verdict for v in self.verdicts)

    @property
    def failing(self) -> list[NumberVerdict]:
        return [v for v in self.verdicts if v.verdict in FAILING]

    @property
    def passed(self) -> bool:
        return not self.failing


def _key_of(contact: dict[str, Any], source_id: str) -> str:
    for ext in contact.get("externalIds") or []:
        source = ext.get("externalSource") or {}
        if source.get("id") == source_id and ext.get("value"):
            return str(ext["value"])
    return f"contact {contact.get('id')}"


async def _identifier_lookup(client: GenesysClient, e164: str) -> list[dict[str, Any]]:
    try:
        response = await client.request(
            "POST", f"{API}/identifierlookup/contacts", json={"type": "Phone", "value": e164}
        )
    except NotFoundError:
        return []
    return [response.json()]


async def _reverse_lookup(client: GenesysClient, e164: str) -> list[dict[str, Any]]:
    response = await client.request(
        "GET", f"{API}/reversewhitepageslookup", params={"lookupVal": e164}
    )
    return list(response.json().get("contacts") or [])


async def verify_numbers(
    client: GenesysClient, source_id: str, numbers: Sequence[SampledNumber]
) -> ScreenPopReport:
    """Judge every sampled number (see the module docstring); lookups one after the other (they
    are few, and the sync's writes are done)."""
    report = ScreenPopReport(contacts=len({n.business_key for n in numbers}))
    answers: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]] | str] = {}
    for number in numbers:
        forms = caller_forms(number.e164)
        mapped = [as_cti_e164(f) for f in forms]
        matching = sum(m == number.e164 for m in mapped)
        if not forms or matching < len(forms):
            bad = [f.form for f, m in zip(forms, mapped, strict=True) if m != number.e164]
            report.verdicts.append(
                NumberVerdict(
                    number,
                    "form_mismatch",
                    len(forms),
                    matching,
                    detail="forms that reach another number: " + ", ".join(bad or ["all"]),
                )
            )
            continue
        if number.e164 not in answers:
            try:
                by_id = await _identifier_lookup(client, number.e164)
                report.lookups += 1
                reverse = await _reverse_lookup(client, number.e164)
                report.lookups += 1
                answers[number.e164] = (by_id, reverse)
            except RetryableError as exc:
                answers[number.e164] = f"lookup failed temporarily ({type(exc).__name__})"
            except PermanentError as exc:
                answers[number.e164] = f"lookup refused: HTTP {exc.status} {exc.code or ''}"
        answer = answers[number.e164]
        if isinstance(answer, str):
            verdict: Verdict = "missing" if answer.startswith("lookup refused") else "unverified"
            report.verdicts.append(NumberVerdict(number, verdict, len(forms), matching, [], answer))
            continue
        report.verdicts.append(_judge(number, len(forms), answer, source_id))
    return report


def _judge(
    number: SampledNumber,
    forms: int,
    answer: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    source_id: str,
) -> NumberVerdict:
    by_id, reverse = answer
    ids_by_id = {str(c.get("id")) for c in by_id}
    ids_reverse = {str(c.get("id")) for c in reverse}
    found = sorted({_key_of(c, source_id) for c in [*by_id, *reverse]})
    ours = number.contact_id
    others = (ids_by_id | ids_reverse) - {ours}
    # The reverse lookup answers at most 25 contacts: a full answer may leave ours out.
    truncated = len(reverse) >= REVERSE_LOOKUP_LIMIT
    if others and (ours in ids_by_id | ids_reverse or truncated):
        pops = "this contact" if ours in ids_by_id else "another one"
        many = f"at least {len(reverse)}" if truncated else str(len(others) + 1)
        detail = f"{many} contacts hold this number; the identifier lookup returns {pops}"
        return NumberVerdict(number, "shared", forms, forms, found, detail)
    if others:
        return NumberVerdict(
            number, "other_contact", forms, forms, found, "the lookups find only other contacts"
        )
    if ours in ids_by_id and ours in ids_reverse:
        return NumberVerdict(number, "ok", forms, forms, found)
    if not ids_by_id and not ids_reverse:
        return NumberVerdict(
            number, "missing", forms, forms, found, "no contact holds this E.164 in Genesys"
        )
    missing_in = "identifier lookup" if ours not in ids_by_id else "reverse lookup"
    return NumberVerdict(number, "missing", forms, forms, found, f"not found by the {missing_in}")


def sample_numbers(
    rows: Iterable[dict[str, Any]], slots: dict[str, str], size: int
) -> list[SampledNumber]:
    """The numbers of the first `size` rows that hold a contact id and at least one phone;
    `rows` carry `business_key`, `contact_id` and the phone columns named by `slots` (column ->
    Genesys slot)."""
    out: list[SampledNumber] = []
    contacts = 0
    for row in rows:
        if contacts >= size:
            break
        phones = [
            (slot, str(row[column]))
            for column, slot in slots.items()
            if isinstance(row.get(column), str) and row[column]
        ]
        if not phones or not row.get("contact_id"):
            continue
        contacts += 1
        seen: set[str] = set()
        for slot, e164 in phones:
            if e164 not in seen:
                seen.add(e164)
                out.append(
                    SampledNumber(str(row["business_key"]), str(row["contact_id"]), slot, e164)
                )
    return out


async def check_screen_pops(
    target: GenesysTarget, source_name: str, numbers: Sequence[SampledNumber]
) -> tuple[ScreenPopReport, dict[str, float | int]]:
    """Verify `numbers` on `target` with a client of its own (after the window's writes); the
    report and that client's metrics (`ClientMetrics.as_metadata()`: its requests count in the
    window's request figures). Nothing to verify: no client, no request."""
    if not numbers:
        return ScreenPopReport(), {}
    async with target.client() as client:
        source_id = await client.find_external_source(source_name)
        if source_id is None:
            report = ScreenPopReport(contacts=len({n.business_key for n in numbers}))
        else:
            report = await verify_numbers(client, source_id, numbers)
        return report, client.metrics.as_metadata()
