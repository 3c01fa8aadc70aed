"""Field ownership: the merge of the CRM's owned fields into the contact as Genesys holds it.

Property tests over any current contact (agent edits, other ExternalIds, identifiers, foreign
schemas, server-owned fields), any CRM body and any ownership: what lies outside the owned fields
survives, the owned fields equal the CRM's, merging twice equals merging once.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.contacts.mapping import EMAIL_SLOTS, PHONE_SLOTS, parse_mapping
from crm_genesys.sync.ownership import (
    ADDRESS_PARTS,
    PHONE_SERVER_OWNED,
    SCALAR_FIELDS,
    SERVER_OWNED,
    Ownership,
    merge_contact,
    phone_number,
    writable,
)

SOURCE = "src-ours"
KEY = "AC-1"
OUR_SCHEMA = {"id": "schema-ours", "version": 3}
CUSTOM_KEYS = ("tier_enum", "notes_longtext", "loyalty_identifier", "other_text")
NUMBERS = ("+4930123456", "+14155550100", "+442071838750")

text = st.text(alphabet="abcXYZ 1", min_size=1, max_size=6)


@st.composite
def phones(draw: st.DrawFn, server: bool) -> dict[str, Any]:
    number = draw(st.sampled_from(NUMBERS))
    phone: dict[str, Any] = {"display": number, "normalizationCountryCode": "US"}
    if draw(st.booleans()):
        phone["extension"] = draw(st.integers(1, 3))
    if server:
        # As Genesys holds it: display reformatted, read-only parts filled in.
        phone["display"] = number[:3] + " " + number[3:]
        phone["e164"] = number
        phone["countryCode"] = "US"
        phone["userInput"] = number
        if draw(st.booleans()):
            phone["acceptsSMS"] = draw(st.booleans())
    return phone


def subset(options: tuple[str, ...]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(options))


@st.composite
def current_contacts(draw: st.DrawFn) -> dict[str, Any]:
    contact: dict[str, Any] = {"id": "c-1"}
    for name in draw(subset(SCALAR_FIELDS)):
        contact[name] = draw(text)
    for slot in draw(subset(PHONE_SLOTS)):
        contact[slot] = draw(phones(server=True))
    for slot in draw(subset(EMAIL_SLOTS)):
        contact[slot] = f"{draw(text).replace(' ', '')}@example.com"
    parts = draw(subset(ADDRESS_PARTS))
    if parts:
        contact["address"] = {p: draw(text) for p in parts}
    for name in draw(subset(SERVER_OWNED[1:])):
        contact[name] = draw(st.sampled_from(["2026-01-01T00:00:00Z", [{"id": "m"}], "Curated"]))
    extras = {
        "surveyOptOut": st.booleans(),
        "externalSystemUrl": st.just("https://other.example/1"),
        "twitterId": st.just({"screenName": "ada"}),
        "identifiers": st.just([{"type": "Email", "value": "a@example.com"}]),
        "division": st.just({"id": "div-1", "name": "Home", "selfUri": "/d/div-1"}),
        "externalOrganization": st.just({"id": "org-1", "name": "ACME", "selfUri": "/o/org-1"}),
    }
    for name in draw(subset(tuple(extras))):
        contact[name] = draw(extras[name])
    ext_pool = [
        {"externalSource": {"id": SOURCE}, "value": KEY},
        {"externalSource": {"id": SOURCE}, "value": "AC-2"},  # another key merged into it
        {"externalSource": {"id": "src-billing", "name": "billing"}, "value": "B-7"},
        {"externalSource": {"id": "src-web"}, "value": "W-3"},
    ]
    externals = draw(st.lists(st.sampled_from(ext_pool), max_size=4, unique_by=str))
    if externals:
        contact["externalIds"] = externals
    older = {"id": "schema-ours", "version": 1}
    foreign = {"id": "schema-foreign", "version": 1}
    schema = draw(st.sampled_from([None, OUR_SCHEMA, older, foreign]))
    if schema is not None:
        contact["schema"] = schema
        keys = draw(subset(CUSTOM_KEYS))
        if keys:
            contact["customFields"] = {k: draw(text) for k in keys}
    return contact


@st.composite
def desired_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"externalIds": [{"externalSource": {"id": SOURCE}, "value": KEY}]}
    for name in draw(subset(SCALAR_FIELDS)):
        body[name] = draw(text)
    for slot in draw(subset(PHONE_SLOTS)):
        body[slot] = draw(phones(server=False))
    for slot in draw(subset(EMAIL_SLOTS)):
        body[slot] = f"{draw(text).replace(' ', '')}@crm.example"
    parts = draw(subset(ADDRESS_PARTS))
    if parts:
        body["address"] = {p: draw(text) for p in parts}
    keys = draw(subset(CUSTOM_KEYS))
    if keys:
        body["customFields"] = {k: draw(text) for k in keys}
        body["schema"] = dict(OUR_SCHEMA)
    return body


ownerships = st.builds(
    Ownership,
    scalars=subset(SCALAR_FIELDS),
    phones=subset(PHONE_SLOTS),
    emails=subset(EMAIL_SLOTS),
    address=subset(ADDRESS_PARTS),
    custom_fields=st.none() | subset(CUSTOM_KEYS),
)


def merge(current: dict[str, Any], desired: dict[str, Any], own: Ownership) -> dict[str, Any]:
    return merge_contact(current, desired, own, source_id=SOURCE, key=KEY, schema=OUR_SCHEMA)


def not_ours(externals: Any) -> list[dict[str, Any]]:
    ours = {"externalSource": {"id": SOURCE}, "value": KEY}
    return [e for e in externals or [] if e != ours]


def crm_custom(own: Ownership, desired: dict[str, Any]) -> dict[str, Any]:
    """The custom fields of the CRM body the sync owns."""
    fields = desired.get("customFields") or {}
    return {k: v for k, v in fields.items() if own.owns_custom_field(k)}


def owned_custom(own: Ownership, current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether the owned custom fields are ours to write on this contact."""
    held = (current.get("schema") or {}).get("id")
    return held in (None, OUR_SCHEMA["id"]) or bool(crm_custom(own, desired))


@settings(max_examples=400, deadline=None)
@given(current=current_contacts(), desired=desired_bodies(), own=ownerships)
def test_what_lies_outside_the_owned_fields_survives(
    current: dict[str, Any], desired: dict[str, Any], own: Ownership
) -> None:
    merged = merge(current, desired, own)
    kept = writable(current)
    owned_top = own.scalars | own.phones | own.emails
    special = {"id", "address", "customFields", "schema", "externalIds"}
    for name, value in kept.items():
        if name not in owned_top and name not in special:
            assert merged[name] == value, name
    for name in set(merged) - set(kept) - special:
        assert name in owned_top, name  # nothing appears that is neither ours nor theirs
    held_address = current.get("address") or {}
    for part in set(ADDRESS_PARTS) - own.address:
        assert (merged.get("address") or {}).get(part) == held_address.get(part), part
    held_fields = current.get("customFields") or {}
    held_schema = (current.get("schema") or {}).get("id")
    if held_schema in (None, OUR_SCHEMA["id"]):
        for name, value in held_fields.items():
            if not own.owns_custom_field(name):
                assert merged["customFields"][name] == value, name
    elif not crm_custom(own, desired):
        # Another schema's fields, and nothing of ours to write: untouched.
        assert merged["schema"] == current["schema"]
        assert merged.get("customFields") == current.get("customFields")
    assert not_ours(merged["externalIds"]) == not_ours(current.get("externalIds"))
    assert merged["id"] == current["id"]


@settings(max_examples=400, deadline=None)
@given(current=current_contacts(), desired=desired_bodies(), own=ownerships)
def test_the_owned_fields_equal_the_crms(
    current: dict[str, Any], desired: dict[str, Any], own: Ownership
) -> None:
    merged = merge(current, desired, own)
    for name in own.scalars | own.emails:
        assert merged.get(name) == desired.get(name), name
    for slot in own.phones:
        assert phone_number(merged.get(slot)) == phone_number(desired.get(slot)), slot
    for part in own.address:
        got = (merged.get("address") or {}).get(part)
        assert got == (desired.get("address") or {}).get(part), part
    if own.owns_custom_fields and owned_custom(own, current, desired):
        wanted = crm_custom(own, desired)
        for name in set(CUSTOM_KEYS):
            if own.owns_custom_field(name):
                assert (merged.get("customFields") or {}).get(name) == wanted.get(name), name
        if merged.get("customFields"):
            assert merged["schema"] == OUR_SCHEMA
    ours = {"externalSource": {"id": SOURCE}, "value": KEY}
    assert merged["externalIds"].count(ours) == 1
    for name in SERVER_OWNED[1:]:
        assert name not in merged
    for slot in PHONE_SLOTS:
        assert not set(merged.get(slot) or {}) & set(PHONE_SERVER_OWNED)


@settings(max_examples=400, deadline=None)
@given(current=current_contacts(), desired=desired_bodies(), own=ownerships)
def test_merging_twice_is_merging_once(
    current: dict[str, Any], desired: dict[str, Any], own: Ownership
) -> None:
    once = merge(current, desired, own)
    assert merge(once, desired, own) == once
    assert merge(current, desired, own) == once  # and the inputs were not modified


def test_a_phone_whose_number_did_not_change_keeps_the_platforms_object() -> None:
    held = {
        "display": "+49 30 123456",
        "e164": "+4930123456",
        "acceptsSMS": True,
        "userInput": "+4930123456",
        "normalizationCountryCode": "DE",
    }
    current = {"id": "c-1", "cellPhone": held}
    desired = {"cellPhone": {"display": "+4930123456", "normalizationCountryCode": "DE"}}
    merged = merge(current, desired, Ownership())
    assert merged["cellPhone"] == {
        "display": "+49 30 123456",
        "acceptsSMS": True,
        "normalizationCountryCode": "DE",
    }
    moved = {"cellPhone": {"display": "+14155550100", "normalizationCountryCode": "US"}}
    assert merge(current, moved, Ownership())["cellPhone"] == moved["cellPhone"]


def test_ownership_from_a_mapping_is_exactly_what_it_names() -> None:
    mapping = parse_mapping(
        {
            "source": {
                "table": "t",
                "internal_id_column": "id",
                "modified_column": "m",
                "version_column": "m",
            },
            "external_source": {"name": "crm"},
            "business_key": {"columns": ["acct"]},
            "default_country": "DE",
            "fields": {"lastName": "last"},
            "phones": {"workPhone": "phone"},
            "address": {"city": "city"},
            "custom_fields": {
                "schema_name": "s",
                "fields": {"tier": {"column": "tier", "type": "dropdown", "options": ["A", "B"]}},
            },
        }
    )
    own = Ownership.from_mapping(mapping)
    assert own.mode == "fields" and own.merges
    assert (own.scalars, own.phones, own.emails, own.address) == (
        {"lastName"},
        {"workPhone"},
        frozenset(),
        {"city"},
    )
    assert own.custom_fields == {"tier_enum"}
    whole = parse_mapping({**mapping.model_dump(exclude_none=True), "ownership": "contact"})
    assert not Ownership.from_mapping(whole).merges
