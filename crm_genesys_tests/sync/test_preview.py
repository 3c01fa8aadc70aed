"""The owned-field comparison a reconciliation and a dry run use: phones on e164, e-mails without
case, empties ignored; what an update would clear."""

from __future__ import annotations

import json

from crm_genesys import settings
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.sync.preview import cleared, edited, owned_view, payload_view

MAPPING = load_mapping(settings.DEMO_MAPPING)
PAYLOAD = json.dumps(
    {
        "firstName": "María",
        "workPhone": {"display": "+34810120400", "normalizationCountryCode": "ES"},
        "workEmail": "Maria@Globex.example",
        "customFields": {"customer_tier_enum": "Gold"},
    }
)


def held(**changes: object) -> dict[str, object]:
    """The contact as Genesys returns it: display reformatted, e164 computed, extra fields."""
    contact: dict[str, object] = {
        "id": "c-1",
        "firstName": "María",
        "workPhone": {"display": "+34 810 12 04 00", "e164": "+34810120400", "countryCode": "ES"},
        "workEmail": "maria@globex.example",
        "customFields": {"customer_tier_enum": "Gold"},
        "externalIds": [{"externalSource": {"id": "s"}, "value": "AC-1"}],
        "modifyDate": "2026-11-29T12:00:00Z",
        "surveyOptOut": False,
    }
    contact.update(changes)
    return contact


def test_a_contact_as_genesys_formats_it_is_not_edited() -> None:
    assert not edited(owned_view(held(), MAPPING), payload_view(PAYLOAD, MAPPING))


def test_a_hand_edit_of_an_owned_field_is_seen() -> None:
    crm = payload_view(PAYLOAD, MAPPING)
    assert edited(owned_view(held(firstName="Edited"), MAPPING), crm)
    phone = {"display": "+34 810 99 99 99", "e164": "+34810999999"}
    assert edited(owned_view(held(workPhone=phone), MAPPING), crm)


def test_fields_genesys_holds_that_the_crm_blanks_would_be_cleared() -> None:
    genesys = owned_view(held(lastName="Pérez", title="Buyer"), MAPPING)
    assert sorted(cleared(genesys, payload_view(PAYLOAD, MAPPING))) == ["lastName", "title"]
    assert cleared(owned_view(held(), MAPPING), payload_view(PAYLOAD, MAPPING)) == []


def test_what_other_writers_hold_is_neither_an_edit_nor_a_clear() -> None:
    """A custom field the mapping does not own (another integration's, an agent's) is not
    ours to compare: the contact is not 'edited' and nothing is 'cleared'."""
    crm = payload_view(PAYLOAD, MAPPING)
    theirs = held(customFields={"customer_tier_enum": "Gold", "loyalty_points_number": 12})
    assert not edited(owned_view(theirs, MAPPING), crm)
    assert cleared(owned_view(theirs, MAPPING), crm) == []
