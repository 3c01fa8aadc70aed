"""Mapping registry: the demo file loads; bad files fail with errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from crm_genesys.contacts.mapping import MappingError, load_mapping, parse_mapping
from crm_genesys.contacts.schema import build_contact_schema
from crm_genesys.settings import DEMO_MAPPING


def _demo() -> dict[str, Any]:
    return yaml.safe_load(DEMO_MAPPING.read_text(encoding="utf-8"))


def test_demo_mapping_loads_and_never_reads_pii() -> None:
    m = load_mapping(DEMO_MAPPING)
    cols = m.source_columns()
    assert "account_number" in cols and "national_id" not in cols and "date_of_birth" not in cols
    assert m.denial_reason("national_id") and m.denial_reason("customer_ssn")
    assert m.denial_reason("Date_Of_Birth") and m.denial_reason("credit_card_number")
    assert m.denial_reason("company") is None and m.denial_reason("postal_code") is None


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda d: d["fields"].update(fistName="first_name"), "unknown Genesys field 'fistName'"),
        (lambda d: d["custom_fields"]["fields"]["notes"].update(type="blob"), "custom field type"),
        (lambda d: d["phones"].update(workPhone="national_id"), "national_id"),
        (lambda d: d["fields"].update(title="date_of_birth"), "is denied"),
        (
            lambda d: d["custom_fields"]["fields"].update(x={"column": "tax_id", "type": "text"}),
            "denied pattern",
        ),
        (lambda d: d["custom_fields"]["fields"]["customer_tier"].pop("options"), "needs `options`"),
        (lambda d: d["custom_fields"]["fields"]["notes"].update(max_length=5000), "exceeds"),
        (lambda d: d.update(default_country="XX"), "default_country"),
        (lambda d: d.update(surprise=1), "unknown key"),
        (lambda d: d["business_key"].update(columns=[]), "business_key.columns"),
        (lambda d: d["source"].update(timezone="Europe/Berln"), "source.timezone"),
        (lambda d: d["source"].update(timezone="+02:00"), "not an IANA time zone"),
        (lambda d: d["source"].update(max_offset_hours=15), "source.max_offset_hours"),
    ],
)
def test_bad_mapping_fails_with_clear_error(patch: Any, message: str, tmp_path: Path) -> None:
    data = _demo()
    patch(data)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_the_crm_time_zone_is_an_iana_name_utc_by_default(tmp_path: Path) -> None:
    assert str(load_mapping(DEMO_MAPPING).source.zone) == "UTC"
    data = _demo()
    data["source"]["timezone"] = "Europe/Berlin"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert str(load_mapping(path).source.zone) == "Europe/Berlin"


def test_a_loaded_mapping_knows_the_line_of_each_column_it_reads() -> None:
    m = load_mapping(DEMO_MAPPING)
    lines = DEMO_MAPPING.read_text(encoding="utf-8").splitlines()

    def line(text: str) -> int:
        return next(i for i, t in enumerate(lines, 1) if t.strip().startswith(text))

    assert m.origin == str(DEMO_MAPPING)
    assert m.line_of("phones.workPhone") == line("workPhone:")
    assert m.line_of("business_key.columns.0") == line("columns: [account_number]")
    where = m.column_locations()
    assert where["work_phone"] == [f"phones.workPhone ({DEMO_MAPPING}:{line('workPhone:')})"]
    assert where["country"] == [
        f"country_column ({DEMO_MAPPING}:{line('country_column:')})",
        f"address.countryCode ({DEMO_MAPPING}:{line('countryCode:')})",
    ]
    assert where["customer_tier"] == [
        f"custom_fields.customer_tier ({DEMO_MAPPING}:{line('customer_tier: {column')})"
    ]
    # Built in memory, a mapping still names the uses, without lines.
    assert parse_mapping(_demo()).column_locations()["work_phone"] == [
        "phones.workPhone (<mapping>)"
    ]


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed", encoding="utf-8")
    with pytest.raises(MappingError, match="not valid YAML"):
        load_mapping(bad)
    with pytest.raises(MappingError, match="top level"):
        parse_mapping(["a list"])


def test_schema_declares_every_custom_key_with_genesys_shape() -> None:
    m = load_mapping(DEMO_MAPPING)
    body = build_contact_schema(m)
    assert set(body) == {"name", "enabled", "jsonSchema"}
    props = body["jsonSchema"]["properties"]
    assert set(props) == {f.key for f in m.custom_field_list()}
    assert props["customer_tier_enum"]["enum"] == ["Bronze", "Silver", "Gold", "Platinum"]
    assert props["notes_longtext"]["allOf"] == [{"$ref": "#/definitions/longtext"}]
    assert props["notes_longtext"]["maxLength"] == 1000
    assert props["sms_consent_checkbox"]["allOf"] == [{"$ref": "#/definitions/checkbox"}]
