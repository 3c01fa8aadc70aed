"""`check_connection` says in plain words what is missing."""

from __future__ import annotations

import asyncio

import httpx

from crm_genesys.genesys.check import check_connection
from crm_genesys.genesys.settings import GenesysSettings
from crm_genesys_tests.genesys.fakes import CLIENT_ID, CLIENT_SECRET, FakeGenesys, fail_nth


def _settings(secret: str = CLIENT_SECRET) -> GenesysSettings:
    return GenesysSettings.for_region("eu_west_2", CLIENT_ID, secret)


def test_missing_read_permission_is_named() -> None:
    denied = httpx.Response(
        403,
        json={
            "code": "missing.permissions",
            "message": "You are missing the following permission(s): "
            "[externalContacts:contact:view]",
            "status": 403,
        },
    )
    fake = FakeGenesys(faults=[fail_nth("/scan/contacts", set(range(1, 9)), lambda: denied)])
    report = asyncio.run(check_connection(_settings(), transport=fake.transport()))
    text = report.render()
    assert not report.ok
    assert "[FAIL] read contacts" in text
    assert "externalContacts:contact:view" in text
    assert "[ok  ] list external sources" in text
    assert "[ok  ] credentials" in text
    assert CLIENT_SECRET not in text


def test_rejected_credentials_stop_early_and_suggest_the_region() -> None:
    fake = FakeGenesys()
    report = asyncio.run(check_connection(_settings("wrong"), transport=fake.transport()))
    assert not report.ok
    assert [s.name for s in report.steps] == ["credentials"]
    assert "another region" in report.render()
    assert fake.api_requests == 0


def test_unreachable_login_host_is_reported() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route to host")

    report = asyncio.run(check_connection(_settings(), transport=httpx.MockTransport(handler)))
    assert not report.ok
    assert "cannot get a token" in report.render()


def test_all_good_on_the_fake() -> None:
    fake = FakeGenesys(rate_limit=250)
    report = asyncio.run(check_connection(_settings(), transport=fake.transport()))
    assert report.ok, report.render()
    # The platform's lower budget is noticed and reported.
    assert "allows 250" in report.render()
