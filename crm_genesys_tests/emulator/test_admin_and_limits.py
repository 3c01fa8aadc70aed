"""The admin surface needs the admin token (and only it); bodies over the limit are refused
before they are buffered; malformed query values are 400s with an ErrorBody, never 500s."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys_tests.emulator.conftest import (
    API,
    Org,
    Server,
    make_org,
    run,
    start_server,
    stop_server,
    token,
)
from crm_genesys_tests.emulator_server import admin_headers

ADMIN_PATHS = [
    ("GET", "/__emulator/requests"),
    ("GET", "/__emulator/stats"),
    ("GET", "/__emulator/contacts"),
    ("GET", "/__emulator/faults"),
    ("PUT", "/__emulator/faults"),
    ("GET", "/__emulator/settings"),
    ("PUT", "/__emulator/latency"),
    ("GET", "/__emulator/ratelimit"),
    ("POST", "/__emulator/merge"),
    ("POST", "/__emulator/foreign-writer"),
    ("POST", "/__emulator/reset"),
]


def test_admin_endpoints_need_the_admin_token_and_api_tokens_do_not_open_them(org: Org) -> None:
    async def go() -> None:
        client = org.client()
        api = await token(client)
        for method, path in ADMIN_PATHS:
            for headers in (
                {},
                api,
                {"Authorization": "Bearer wrong"},
                {"Authorization": "Basic x"},
            ):
                r = await client.request(method, path, json={}, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["code"] == "authentication.required"
        # Nothing happened behind the refusals.
        assert org.app.emulator.requests() == [] or all(
            e.path == "/oauth/token" for e in org.app.emulator.requests()
        )
        admin = org.admin()
        assert (await admin.get("/__emulator/stats")).status_code == 200
        # ... and the admin token does not open the API.
        assert (await admin.get(f"{API}/externalsources")).status_code == 401

    run(go())


def test_the_admin_token_is_configurable(tmp_path: Path) -> None:
    org = make_org(admin_token="s3cret-admin")

    async def go() -> None:
        client = org.client()
        assert (await client.get("/__emulator/stats", headers=admin_headers())).status_code == 401
        ok = await client.get("/__emulator/stats", headers=admin_headers("s3cret-admin"))
        assert ok.status_code == 200

    run(go())
    for args, env in (
        (("--admin-token", "from-flag"), {}),
        ((), {"CRM_GENESYS_EMULATOR_ADMIN_TOKEN": "from-env"}),
    ):
        server = start_server(*args, env=env)
        try:
            expected = args[1] if args else env["CRM_GENESYS_EMULATOR_ADMIN_TOKEN"]
            default = httpx.get(f"{server.url}/__emulator/stats", headers=admin_headers())
            assert default.status_code == 401
            good = httpx.get(f"{server.url}/__emulator/stats", headers=admin_headers(expected))
            assert good.status_code == 200
        finally:
            stop_server(server)


def _raw_request(server: Server, head: str, body: bytes) -> tuple[int, bytes]:
    """Send a request head and part of a body; the status line and what came back, or a
    timeout if the server waits for the rest."""
    url = urllib.parse.urlsplit(server.url)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)  # raises TimeoutError if the server waits for the body
            if not chunk:
                break
            received += chunk
    status = int(received.split(b" ", 2)[1])
    return status, received


def _api_token(server: Server) -> str:
    grant = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("demo-client", "demo-secret"),
    )
    return str(grant.json()["access_token"])


def test_a_huge_content_length_gets_413_without_the_server_waiting_for_the_body() -> None:
    server = start_server()
    try:
        bearer = _api_token(server)
        for path, auth in (
            (f"{API}/bulk/contacts/add", f"Bearer {bearer}"),
            ("/oauth/token", "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ="),
            ("/__emulator/reset", f"Bearer {admin_headers()['Authorization'][7:]}"),
        ):
            head = (
                f"POST {path} HTTP/1.1\r\nHost: emulator\r\nAuthorization: {auth}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000000"
            )
            status, raw = _raw_request(server, head, b'{"entities": [')
            assert status == 413, raw[:300]
            assert b"request.entity.too.large" in raw or b"Content-Length" in raw or status == 413
    finally:
        stop_server(server)


def test_a_chunked_body_is_refused_as_soon_as_it_goes_over_the_limit() -> None:
    server = start_server("--max-request-bytes", "1000")
    try:
        bearer = _api_token(server)
        head = (
            f"POST {API}/bulk/contacts/add HTTP/1.1\r\nHost: emulator\r\n"
            f"Authorization: Bearer {bearer}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked"
        )
        chunk = b"x" * 600
        # Two chunks (1,200 bytes) and no terminating chunk: the server must not wait for it.
        body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2
        status, raw = _raw_request(server, head, body)
        assert status == 413, raw[:300]
        assert server.get("/__emulator/stats")["contacts"] == 0
    finally:
        stop_server(server)


def test_an_in_process_stream_is_not_read_past_the_limit() -> None:
    org = make_org(max_request_bytes=10_000)
    sent: list[int] = []

    async def stream() -> AsyncIterator[bytes]:
        for i in range(1000):
            sent.append(i)
            yield b"x" * 1000

    async def go() -> None:
        client = org.client()
        h = await token(client)
        r = await client.post(
            f"{API}/bulk/contacts/add",
            content=stream(),
            headers={**h, "Content-Type": "application/json"},
        )
        assert r.status_code == 413 and r.json()["code"] == "request.entity.too.large"
        assert "inin-ratelimit-count" in r.headers
        assert len(sent) <= 12  # 10,000 bytes and one chunk over, not the 1,000,000 sent

    run(go())


MALFORMED = [
    f"{API}/externalsources?limit=abc",
    f"{API}/externalsources?limit=5",
    f"{API}/externalsources?active=maybe",
    f"{API}/scan/contacts?limit=-1",
    f"{API}/scan/contacts?limit=1e3",
    f"{API}/scan/contacts?cursor=!!!",
    f"{API}/scan/contacts?cursor=YWJj",
    f"{API}/contacts?pageSize=-1",
    f"{API}/contacts?pageSize=abc",
    f"{API}/contacts?pageNumber=0",
    f"{API}/contacts?pageSize=100&pageNumber=11",
    f"{API}/contacts/some-id?expand=everything",
    "/api/v2/authorization/divisions?pageSize=-1",
    "/api/v2/authorization/divisions?pageNumber=x",
]


@pytest.mark.parametrize("path", MALFORMED)
def test_malformed_query_values_are_400_error_bodies(path: str) -> None:
    org = make_org()

    async def go() -> None:
        client = org.client()
        h = await token(client)
        r = await client.get(path, headers=h)
        assert r.status_code == 400, r.text
        assert {"message", "code", "status", "contextId"} <= set(r.json())

    run(go())


def test_a_malformed_admin_query_is_a_400(org: Org) -> None:
    async def go() -> None:
        admin = org.admin()
        for since in ("abc", "-1", "1.5"):
            r = await admin.get("/__emulator/requests", params={"since": since})
            assert r.status_code == 400 and r.json()["code"] == "invalid.value"

    run(go())


_QUERY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    endpoint=st.sampled_from(
        [
            f"{API}/externalsources",
            f"{API}/scan/contacts",
            f"{API}/contacts",
            "/api/v2/authorization/divisions",
        ]
    ),
    params=st.dictionaries(
        st.sampled_from(["limit", "cursor", "pageSize", "pageNumber", "active", "name", "q"]),
        _QUERY_TEXT,
        max_size=4,
    ),
)
def test_no_query_value_makes_a_500(endpoint: str, params: dict[str, str]) -> None:
    org = make_org()

    async def go() -> None:
        client = org.client()
        h = await token(client)
        r = await client.get(endpoint, params=params, headers=h)
        assert r.status_code in (200, 400), (r.status_code, r.text)

    run(go())


def test_settings_switch_realism_schema_limits_and_divisions_at_runtime(org: Org) -> None:
    async def go() -> None:
        admin = org.admin()
        client = org.client()
        h = await token(client)
        assert (await admin.get("/__emulator/settings")).json()["realism"][
            "strict_divisions"
        ] is False
        changed = await admin.put(
            "/__emulator/settings",
            json={
                "realism": {"profile": "realistic", "lag_max_s": 0.0, "interaction_contacts": 0},
                "schema_limits": {"max_number_of_fields_per_schema": 4},
                "divisions": [{"id": "home-1", "name": "Home"}, {"id": "d-2", "name": "Two"}],
            },
        )
        assert changed.status_code == 200, changed.text
        settings = changed.json()
        assert settings["realism"]["rate_limit_scope"] == "client"
        assert settings["schema_limits"]["max_number_of_fields_per_schema"] == 4
        unknown = await client.post(
            f"{API}/contacts", json={"firstName": "X", "division": {"id": "d-9"}}, headers=h
        )
        assert unknown.status_code == 400 and "d-9" in unknown.json()["message"]
        home = await client.post(f"{API}/contacts", json={"firstName": "X"}, headers=h)
        assert home.json()["division"]["id"] == "home-1"
        limits = (await client.get(f"{API}/contacts/schemas/limits", headers=h)).json()
        assert limits["maxNumberOfFieldsPerSchema"] == 4
        for bad in (
            {"realism": {"merged_read": "sometimes"}},
            {"realism": {"lag_max_s": "five"}},
            {"realism": "realistic"},
            {"schema_limits": {"no_such_limit": 1}},
            {"divisions": []},
            {"nonsense": 1},
        ):
            assert (await admin.put("/__emulator/settings", json=bad)).status_code == 400, bad

    run(go())
