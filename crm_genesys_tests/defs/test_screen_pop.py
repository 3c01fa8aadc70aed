"""Screen-pop readiness: callers' forms of a number map to the E.164 Genesys holds, and both CTI
lookups find exactly that contact; a stored number that is not that E.164 fails the check."""

from __future__ import annotations

import asyncio
from collections import Counter

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.defs.checks import screen_pop_result
from crm_genesys.sync.screenpop import (
    SampledNumber,
    as_cti_e164,
    caller_forms,
    check_screen_pops,
)
from crm_genesys_tests.defs.conftest import WINDOWS, World

REGIONS = ["AU", "BR", "DE", "ES", "FR", "GB", "IN", "IT", "JP", "NL", "US"]


@settings(max_examples=60, deadline=None)
@given(region=st.sampled_from(REGIONS), kind=st.sampled_from(["mobile", "fixed"]))
def test_every_form_a_caller_dials_maps_back_to_the_number(region: str, kind: str) -> None:
    example = (
        phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if kind == "mobile"
        else phonenumbers.example_number(region)
    )
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    forms = caller_forms(e164)
    assert {"e164", "national", "international_00"} <= {f.form for f in forms}
    assert all(as_cti_e164(f) == e164 for f in forms), forms


def _synced(world: World) -> tuple[list[SampledNumber], dict]:
    """Window 1 synced; its screen-pop sample as the asset builds it, and the org's contacts."""
    result = world.materialize(WINDOWS[0])
    check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "screen_pop_ready"
    )
    assert check.passed and check.metadata["numbers"].value > 0
    contacts = {c["id"]: c for c in world.emulator.all_contacts()}
    with world.state.store() as store:
        snapshot = store.snapshot()
    # Numbers held by one contact only: the demo CRM shares some (the identifier_collisions
    # check), and a shared number's lookup rightly finds the other contact too.
    held = Counter(
        (c.get(slot) or {}).get("e164")
        for c in contacts.values()
        for slot in ("workPhone", "cellPhone", "homePhone", "otherPhone")
    )
    numbers = []
    for row in snapshot[~snapshot["deleted"]].sort_values("business_key").itertuples():
        contact = contacts[row.contact_id]
        phone = contact.get("workPhone") or contact.get("cellPhone")
        if phone and phone.get("e164") and held[phone["e164"]] == 1:
            numbers.append(
                SampledNumber(row.business_key, row.contact_id, "workPhone", phone["e164"])
            )
    # A few numbers, one of them outside North America (where a missing country breaks it).
    abroad = [n for n in numbers if not n.e164.startswith("+1")][:2]
    home = [n for n in numbers if n.e164.startswith("+1")][:1]
    return abroad + home, contacts


def _check(world: World, numbers: list[SampledNumber]):
    target = world.genesys.resolve()
    mapping = world.crm.mapping()
    report, client = asyncio.run(check_screen_pops(target, mapping.external_source.name, numbers))
    return report, client, screen_pop_result(WINDOWS[0], report, len(numbers))


def test_the_check_fails_when_the_stored_number_is_not_what_callers_map_to(world: World) -> None:
    numbers, contacts = _synced(world)
    healthy, client, result = _check(world, numbers)
    assert result.passed and healthy.lookups == 2 * len({n.e164 for n in numbers})
    assert client["genesys_requests"] >= healthy.lookups  # counted in the run's requests

    # Someone stores the first number as it was typed, without the country: Genesys assumes +1.
    victim = numbers[0]
    body = dict(contacts[victim.contact_id])
    national = phonenumbers.format_number(
        phonenumbers.parse(victim.e164), phonenumbers.PhoneNumberFormat.NATIONAL
    )
    for slot in ("workPhone", "cellPhone", "homePhone", "otherPhone"):
        if (body.get(slot) or {}).get("e164") == victim.e164:
            body[slot] = {"display": national}
    world.emulator.update_contact(victim.contact_id, body)

    report, _, result = _check(world, numbers)
    assert not result.passed
    (bad,) = report.failing
    assert bad.number.business_key == victim.business_key and bad.verdict == "missing"
    table = str(result.metadata["numbers_checked"].value)
    assert "missing" in table and victim.e164 not in table  # masked
    assert (result.description or "").startswith(f"window {WINDOWS[0]}")


def test_a_number_shared_by_two_contacts_is_reported_with_both_keys(world: World) -> None:
    numbers, contacts = _synced(world)
    first, second = numbers[0], numbers[1]
    body = dict(contacts[second.contact_id])
    body["otherPhone"] = {"display": first.e164}
    world.emulator.update_contact(second.contact_id, body)

    report, _, result = _check(world, [first])
    (verdict,) = report.verdicts
    assert verdict.verdict == "shared"
    assert {first.business_key, second.business_key} <= set(verdict.found)
    assert result.passed and result.metadata["shared"].value == 1
