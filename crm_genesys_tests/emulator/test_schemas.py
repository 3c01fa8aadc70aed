"""Contact schemas (versions), typed custom field validation, and the org's schema limits."""

from __future__ import annotations

from typing import Any

import phonenumbers
import PureCloudPlatformClientV2 as sdk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.emulator import SchemaLimits
from crm_genesys.emulator.errors import EntityError
from crm_genesys.emulator.validation import ContactValidator
from crm_genesys_tests.emulator.conftest import API, make_org, realistic, run, token


def _prop(kind: str, **extra: Any) -> dict[str, Any]:
    return {"allOf": [{"$ref": f"#/definitions/{kind}"}], "title": kind, **extra}


SCHEMA = {
    "name": "crm",
    "enabled": True,
    "jsonSchema": {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "crm",
        "description": "CRM fields",
        "properties": {
            "tier_enum": _prop("enum", enum=["Bronze", "Silver", "Gold"]),
            "sms_checkbox": _prop("checkbox"),
            "ltv_number": _prop("number"),
            "visits_integer": _prop("integer", minimum=0),
            "lastPurchase_date": _prop("date"),
            "seen_datetime": _prop("datetime"),
            "loyalty_identifier": _prop("identifier", maxLength=100),
            "lang_text": _prop("text", maxLength=10),
            "notes_longtext": _prop("longtext", maxLength=1000),
            "labels_tag": _prop("tag"),
            "site_url": _prop("url", maxLength=200),
        },
    },
}

VALID = {
    "tier_enum": "Gold",
    "sms_checkbox": True,
    "ltv_number": 12.5,
    "visits_integer": 3,
    "lastPurchase_date": "2024-02-29",
    "seen_datetime": "2024-02-29T10:00:00.000Z",
    "loyalty_identifier": "L-1",
    "lang_text": "en",
    "notes_longtext": "n" * 1000,
    "labels_tag": ["a", "b"],
    "site_url": "https://example.com/x",
}

INVALID = [
    ("tier_enum", "Diamond"),
    ("sms_checkbox", "yes"),
    ("ltv_number", "12"),
    ("visits_integer", 1.5),
    ("visits_integer", -1),
    ("lastPurchase_date", "2023-02-29"),
    ("seen_datetime", "yesterday"),
    ("loyalty_identifier", "x" * 101),
    ("lang_text", "x" * 11),
    ("notes_longtext", "x" * 1001),
    ("labels_tag", [str(i) for i in range(11)]),
    ("site_url", "not a url"),
    ("unknown_text", "x"),
]


def test_schema_versions_and_custom_field_validation() -> None:
    org = make_org()

    async def go() -> None:
        client = org.client()
        h = await token(client)
        created = (await client.post(f"{API}/contacts/schemas", json=SCHEMA, headers=h)).json()
        assert created["version"] == 1 and created["appliesTo"] == ["CONTACT"]
        ref = {"id": created["id"], "version": 1}
        ok = await client.post(
            f"{API}/contacts",
            json={"firstName": "A", "schema": ref, "customFields": VALID},
            headers=h,
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["customFields"] == VALID and ok.json()["schema"] == ref
        for name, value in INVALID:
            fields = {**VALID, name: value}
            r = await client.post(
                f"{API}/contacts",
                json={"firstName": "A", "schema": ref, "customFields": fields},
                headers=h,
            )
            assert r.status_code == 400, (name, value)
            assert [d["fieldName"] for d in r.json()["details"]] == [f"customFields.{name}"]
        no_schema = await client.post(
            f"{API}/contacts", json={"firstName": "A", "customFields": VALID}, headers=h
        )
        assert no_schema.status_code == 400

        # PUT needs the current version and stores version + 1.
        wider = {**SCHEMA, "version": 1}
        wider["jsonSchema"] = {
            **SCHEMA["jsonSchema"],  # type: ignore[dict-item]
            "properties": {**SCHEMA["jsonSchema"]["properties"], "extra_text": _prop("text")},  # type: ignore[index]
        }
        put = await client.put(f"{API}/contacts/schemas/{created['id']}", json=wider, headers=h)
        assert put.status_code == 200 and put.json()["version"] == 2
        stale = await client.put(f"{API}/contacts/schemas/{created['id']}", json=wider, headers=h)
        assert stale.status_code == 409
        latest = (await client.get(f"{API}/contacts/schemas/{created['id']}", headers=h)).json()
        assert latest["version"] == 2
        listing = (await client.get(f"{API}/contacts/schemas", headers=h)).json()
        assert listing["total"] == 1 and listing["entities"][0]["version"] == 2
        v1 = await client.get(f"{API}/contacts/schemas/{created['id']}/versions/1", headers=h)
        assert "extra_text" not in v1.json()["jsonSchema"]["properties"]
        # Version 1 still validates old contacts; version 2 knows the new field.
        extra = {**VALID, "extra_text": "hi"}
        r = await client.post(
            f"{API}/contacts",
            json={"firstName": "A", "schema": ref, "customFields": extra},
            headers=h,
        )
        assert r.status_code == 400
        ref2 = {"id": created["id"], "version": 2}
        r = await client.post(
            f"{API}/contacts",
            json={"firstName": "A", "schema": ref2, "customFields": extra},
            headers=h,
        )
        assert r.status_code == 200

    run(go())


@pytest.mark.parametrize(
    "properties",
    [
        {"x_enum": _prop("enum", enum=[str(i) for i in range(51)])},
        {"x_text": _prop("text", maxLength=101)},
        {"x_url": _prop("url", maxLength=201)},
        {"x_blob": _prop("blob")},
    ],
)
def test_schema_limits(properties: dict[str, Any]) -> None:
    org = make_org()

    async def go() -> None:
        client = org.client()
        h = await token(client)
        body = {**SCHEMA, "jsonSchema": {**SCHEMA["jsonSchema"], "properties": properties}}  # type: ignore[dict-item]
        r = await client.post(f"{API}/contacts/schemas", json=body, headers=h)
        assert r.status_code == 400
        assert r.json()["details"][0]["fieldName"].startswith("jsonSchema.properties.x_")

    run(go())


_validator = ContactValidator(lambda _: True, lambda _id, _v: None)
_US_NUMBERS = st.from_regex(r"[2-9][0-8][0-9][2-9][0-9]{6}", fullmatch=True)
_FORMATS = st.sampled_from(["{a}{b}{c}", "({a}) {b}-{c}", "{a}-{b}-{c}", "{a}.{b}.{c}"])


@settings(max_examples=200, deadline=None)
@given(digits=_US_NUMBERS, fmt=_FORMATS)
def test_numbers_without_country_are_read_as_north_american(digits: str, fmt: str) -> None:
    display = fmt.format(a=digits[:3], b=digits[3:6], c=digits[6:])
    phone = _validator.validate({"workPhone": {"display": display}})["workPhone"]
    assert phone["e164"] == "+1" + digits
    assert phone["userInput"] == display


@pytest.mark.parametrize("region", ["DE", "GB", "FR", "JP", "BR", "IN", "AU", "ZA"])
def test_normalization_country_is_used_for_national_numbers(region: str) -> None:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
    phone = _validator.validate(
        {"cellPhone": {"display": national, "normalizationCountryCode": region}}
    )["cellPhone"]
    assert phone["e164"] == phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    assert phone["countryCode"] == region


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from([("firstName", 1000), ("title", 1000), ("externalSystemUrl", 1000)]),
    length=st.integers(0, 1100),
)
def test_string_limits_are_exact(field: tuple[str, int], length: int) -> None:
    name, limit = field
    body = {name: "x" * length}
    if length <= limit:
        assert _validator.validate(body)[name] == "x" * length
    else:
        with pytest.raises(EntityError) as err:
            _validator.validate(body)
        assert err.value.status == 400 and err.value.problems[0].field_name == name


def _schema(name: str, properties: dict[str, Any], **body: Any) -> dict[str, Any]:
    document = {"title": name, "description": "d", "properties": properties}
    return {"name": name, "enabled": True, "jsonSchema": document, **body}


def test_schema_quantity_limits_are_published_with_the_sdk_names() -> None:
    org = make_org(schema_limits=SchemaLimits(max_number_of_fields_per_schema=7))

    async def go() -> None:
        client = org.client()
        h = await token(client)
        limits = (await client.get(f"{API}/contacts/schemas/limits", headers=h)).json()
        sdk_names = set(sdk.SchemaQuantityLimits().attribute_map.values())
        assert set(limits) == sdk_names
        assert limits["maxNumberOfFieldsPerSchema"] == 7

    run(go())


def test_schema_limits_are_enforced_in_the_realistic_profile() -> None:
    limits = SchemaLimits(
        max_number_of_fields_per_schema=3,
        max_number_of_fields_per_org=5,
        max_field_name_characters=20,
        max_field_title_characters=10,
        max_number_of_schemas_per_org=2,
        max_schema_name_characters=12,
    )
    org = make_org(realism=realistic(), schema_limits=limits)

    async def go() -> None:
        client = org.client()
        h = await token(client)

        async def create(body: dict[str, Any]) -> Any:
            return await client.post(f"{API}/contacts/schemas", json=body, headers=h)

        four = {f"f{i}_text": _prop("text") for i in range(4)}
        too_many = await create(_schema("crm", four))
        assert too_many.status_code == 400 and "3 fields per schema" in too_many.json()["message"]
        long_name = await create(_schema("crm", {"a_very_long_field_name_text": _prop("text")}))
        assert long_name.status_code == 400
        assert long_name.json()["details"][0]["fieldName"].endswith("a_very_long_field_name_text")
        long_title = await create(_schema("crm", {"x_text": {**_prop("text"), "title": "T" * 11}}))
        assert long_title.status_code == 400
        assert (
            await create(_schema("a-name-too-long", {"x_text": _prop("text")}))
        ).status_code == 400
        three = {f"f{i}_text": _prop("text") for i in range(3)}
        assert (await create(_schema("crm", three))).status_code == 200
        # Fields of the whole org: 3 here + 3 more would be 6 > 5.
        org_wide = await create(_schema("other", {f"g{i}_text": _prop("text") for i in range(3)}))
        assert org_wide.status_code == 400 and "org" in org_wide.json()["message"]
        assert (await create(_schema("second", {"g_text": _prop("text")}))).status_code == 200
        third = await create(_schema("third", {"h_text": _prop("text")}))
        assert third.status_code == 400 and "schemas" in third.json()["message"]

    run(go())


def test_a_fields_type_cannot_change_in_a_schema_update() -> None:
    org = make_org(realism=realistic())

    async def go() -> None:
        client = org.client()
        h = await token(client)
        made = await client.post(
            f"{API}/contacts/schemas", json=_schema("crm", {"tier": _prop("text")}), headers=h
        )
        sid = made.json()["id"]
        changed = await client.put(
            f"{API}/contacts/schemas/{sid}",
            json=_schema("crm", {"tier": _prop("integer")}, version=1),
            headers=h,
        )
        assert changed.status_code == 400
        assert "type cannot change" in changed.json()["message"]
        assert changed.json()["details"][0]["fieldName"] == "jsonSchema.properties.tier"
        # Adding a field (and keeping the others' types) is an ordinary new version.
        grown = await client.put(
            f"{API}/contacts/schemas/{sid}",
            json=_schema("crm", {"tier": _prop("text"), "visits": _prop("integer")}, version=1),
            headers=h,
        )
        assert grown.status_code == 200 and grown.json()["version"] == 2

    run(go())


def test_the_basic_profile_lets_a_field_change_type() -> None:
    org = make_org()

    async def go() -> None:
        client = org.client()
        h = await token(client)
        made = await client.post(
            f"{API}/contacts/schemas", json=_schema("crm", {"tier": _prop("text")}), headers=h
        )
        changed = await client.put(
            f"{API}/contacts/schemas/{made.json()['id']}",
            json=_schema("crm", {"tier": _prop("integer")}, version=1),
            headers=h,
        )
        assert changed.status_code == 200

    run(go())
