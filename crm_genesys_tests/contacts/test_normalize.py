"""normalize: invariant, never raises, PII never leaves, payload is canonical and typed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_genesys.contacts import quality
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.contacts.masking import mask_email, mask_phone
from crm_genesys.contacts.models import validate_contacts, validate_quarantine
from crm_genesys.contacts.normalize import normalize
from crm_genesys.contacts.quality import all_facts
from crm_genesys.settings import DEMO_MAPPING

MAPPING = load_mapping(DEMO_MAPPING)
COLUMNS = [*MAPPING.column_uses(), "national_id", "date_of_birth"]


def _row(**kw: Any) -> dict[str, Any]:
    base = {
        "id": 1, "account_number": "AC-0000001", "first_name": "Ann", "last_name": "Lee",
        "country": "US", "work_phone": "(212) 555-0123", "email": "ann@example.com",
        "modified_at": "2024-01-02 03:04:05.000001", "is_deleted": 0,
        "national_id": "123-45-6789", "date_of_birth": "1970-01-01",
    }  # fmt: skip
    base.update(kw)
    return base


def _check(raw: pd.DataFrame) -> Any:
    res = normalize(raw, MAPPING, workers=1)
    assert len(raw) == len(res.contacts) + len(res.quarantine) + res.superseded
    validate_contacts(res.contacts)
    validate_quarantine(res.quarantine)
    live = res.contacts[~res.contacts["is_deleted"]]
    for payload, digest in zip(live["payload"], live["content_hash"], strict=True):
        body = json.loads(payload)
        assert (
            json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == payload
        )
        assert hashlib.sha256(payload.encode("utf-8")).hexdigest() == digest
        assert not {"id", "externalIds", "division"} & set(body)
    return res


def test_payload_is_typed_and_pii_free() -> None:
    raw = pd.DataFrame(
        [
            _row(
                mobile_phone="+1 212 555 0123",
                home_phone="011 1 800 555 0199 x12",  # the NANP exit code
                fax="911",
                customer_tier="gold",
                sms_consent="1",
                lifetime_value="12.50",
                last_purchase_date="2024-03-05",
                website="example.com/a",
                notes="<p>Hi &amp; <b>bye</b></p><script>alert(1)</script>",
                company="x" * 150,
                personal_email=" Bob@Example.COM ",
            )
        ]
    ).astype(object)
    res = _check(raw)
    body = json.loads(res.contacts["payload"][0])
    assert "123-45-6789" not in res.contacts["payload"][0]
    assert body["workPhone"] == {"display": "+12125550123", "normalizationCountryCode": "US"}
    assert "cellPhone" not in body  # the same number as workPhone is stored once
    assert body["homePhone"] == {
        "display": "+18005550199",
        "extension": 12,
        "normalizationCountryCode": "US",
    }
    assert "otherPhone" not in body
    assert body["personalEmail"] == "Bob@example.com"
    cf = body["customFields"]
    assert cf["customer_tier_enum"] == "Gold"
    assert cf["sms_consent_checkbox"] is True
    assert cf["lifetime_value_number"] == 12.5
    assert cf["last_purchase_date"] == "2024-03-05"
    assert cf["website_url"] == "https://example.com/a"
    assert cf["notes_longtext"] == "Hi & bye"
    assert len(cf["company_text"]) == 100
    assert res.report.phones_dropped == {"invalid_number": 1}
    assert res.report.denied_columns_seen == ["national_id", "date_of_birth"]


def test_denied_column_never_read_even_if_mapping_names_it() -> None:
    # Build a mapping that names a denied column by bypassing validation (defence in depth).
    evil = MAPPING.model_copy(update={"fields": {**MAPPING.fields, "title": "national_id"}})
    raw = pd.DataFrame([_row()]).astype(object)
    res = normalize(raw, evil, workers=1)
    assert "123-45-6789" not in res.contacts["payload"][0]
    assert "national_id" in res.report.denied_columns_blocked


def test_latest_version_wins_and_tombstones_need_only_a_key() -> None:
    raw = pd.DataFrame(
        [
            _row(id=1, first_name="Old", modified_at="2024-01-01 00:00:00.000000"),
            _row(id=2, first_name="New", modified_at="2024-01-03 00:00:00.000000"),
            _row(
                id=3,
                account_number="AC-2",
                first_name=None,
                last_name=None,
                email=None,
                work_phone=None,
                is_deleted=1,
            ),
            _row(id=4, account_number=" ", first_name="NoKey"),
            _row(id=5, account_number="AC-3", modified_at="yesterday"),
            _row(id=6, account_number="AC-4", work_phone="12", email="nope"),
            _row(id=7, account_number="AC-5", first_name="", last_name=None),
        ]
    ).astype(object)
    res = _check(raw)
    assert res.superseded == 1
    by_key = res.contacts.set_index("business_key")
    assert by_key.loc["AC-0000001", "first_name"] == "New"
    assert by_key.loc["AC-0000001", "crm_version"] == 1704240000000000
    assert by_key.loc["AC-2", "is_deleted"] and by_key.loc["AC-2", "payload"] == ""
    reasons = dict(zip(res.quarantine["crm_id"], res.quarantine["reason"], strict=True))
    assert reasons == {
        "4": "missing_business_key", "5": "invalid_version",
        "6": "no_contact_point", "7": "missing_name",
    }  # fmt: skip


_ANY = st.one_of(
    st.none(), st.text(max_size=30), st.integers(), st.floats(allow_nan=True),
    st.binary(max_size=10), st.booleans(), st.just("<b>x</b>&amp;"), st.just("+1 212 555 0123"),
    st.just("2024-01-02 03:04:05.000001"), st.just("AC-1"), st.just("a@b.co"),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.fixed_dictionaries({c: _ANY for c in COLUMNS}), min_size=0, max_size=8),
    drop=st.sets(st.sampled_from(COLUMNS), max_size=4),
)
def test_any_rows_normalize_or_quarantine_never_raise(rows: list[dict], drop: set[str]) -> None:
    raw = pd.DataFrame(rows, columns=COLUMNS).astype(object).drop(columns=list(drop))
    res = _check(raw)
    assert res.quarantine["reason"].notna().all()
    facts = all_facts(res, MAPPING, raw.columns, max_quarantine_rate=0.2, min_quarantine_rows=50)
    # Plain JSON values only (tables are `Rows` of plain values).
    json.dumps([f.metadata for f in facts], default=_plain_rows)


def _plain_rows(value: object) -> object:
    if isinstance(value, quality.Rows):
        return {"columns": list(value.columns), "rows": value.rows}
    raise TypeError(f"{type(value).__name__} in check metadata")


def test_masking() -> None:
    assert mask_phone("+18005550199") == "+1800****199"
    assert mask_email("john@example.com") == "j***@example.com"
    assert mask_phone(None) == "" and mask_phone("123") == "***"
    assert "5550" not in mask_phone(np.str_("+1 800 555 0199"))


def test_versions_are_instants_each_with_its_own_offset() -> None:
    """A later version written with an offset wins by its instant, not by its text, and one
    row's offset never changes another's version (pandas' ISO parser carries it over)."""
    raw = pd.DataFrame(
        [
            _row(id=1, first_name="Old", modified_at="2024-01-02T10:30:00+02:00"),  # 08:30 UTC
            _row(id=2, first_name="New", modified_at="2024-01-02 09:00:00"),  # 09:00 UTC
            _row(id=3, account_number="AC-2", modified_at="2024-01-02 09:00:00"),
        ]
    ).astype(object)
    res = _check(raw)
    by_key = res.contacts.set_index("business_key")
    assert by_key.loc["AC-0000001", "first_name"] == "New"
    assert by_key.loc["AC-2", "crm_version"] == by_key.loc["AC-0000001", "crm_version"]
    assert by_key.loc["AC-2", "crm_version"] == 1704186000000000  # 2024-01-02 09:00 UTC


def test_versions_without_an_offset_are_read_in_the_mappings_zone() -> None:
    berlin = MAPPING.model_copy(
        update={"source": MAPPING.source.model_copy(update={"timezone": "Europe/Berlin"})}
    )
    raw = pd.DataFrame([_row(modified_at="2024-01-02 10:00:00")]).astype(object)
    res = normalize(raw, berlin, workers=1)
    assert res.contacts["crm_version"].tolist() == [1704186000000000]  # 09:00 UTC
