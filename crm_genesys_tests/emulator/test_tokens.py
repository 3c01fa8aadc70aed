"""OAuth client credentials, token expiry and revocation."""

from __future__ import annotations

from crm_genesys.emulator import FaultConfig
from crm_genesys_tests.emulator.conftest import API, make_org, run, token

ERROR_KEYS = {"message", "code", "status", "messageWithParams", "contextId", "details", "errors"}


def test_bad_credentials_get_401_error_body() -> None:
    org = make_org(client_secret="right")

    async def go() -> None:
        client = org.client()
        r = await client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("demo-client", "wrong")
        )
        assert r.status_code == 401
        assert set(r.json()) >= ERROR_KEYS and r.json()["code"] == "bad.credentials"
        assert "right" not in r.text and "wrong" not in r.text
        ok = await client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("demo-client", "right")
        )
        assert ok.status_code == 200 and ok.json()["expires_in"] == 86400
        r = await client.get(f"{API}/externalsources")
        assert r.status_code == 401 and r.json()["code"] == "authentication.required"

    run(go())


def test_expired_token_gets_401() -> None:
    org = make_org(token_ttl_s=300)

    async def go() -> None:
        client = org.client()
        h = await token(client)
        me = await client.get("/api/v2/tokens/me", headers=h)
        assert me.status_code == 200 and me.json()["OAuthClient"]["id"] == "demo-client"
        org.clock.advance(299)
        assert (await client.get(f"{API}/externalsources", headers=h)).status_code == 200
        org.clock.advance(1)
        r = await client.get(f"{API}/externalsources", headers=h)
        assert r.status_code == 401
        assert set(r.json()) >= ERROR_KEYS and r.json()["status"] == 401
        assert h["Authorization"][7:] not in r.text

    run(go())


def test_revoked_token_gets_401() -> None:
    org = make_org()

    async def go() -> None:
        client = org.client()
        h = await token(client)
        assert (await client.delete("/api/v2/tokens/me", headers=h)).status_code == 204
        assert (await client.get(f"{API}/externalsources", headers=h)).status_code == 401
        fresh = await token(client)
        assert (await client.get(f"{API}/externalsources", headers=fresh)).status_code == 200

    run(go())


def test_fault_revokes_tokens_after_n_seconds_but_token_endpoint_keeps_working() -> None:
    org = make_org(faults=FaultConfig(revoke_tokens_after_s=60, p_500=1.0))

    async def go() -> None:
        client = org.client()
        h = await token(client)
        org.clock.advance(61)
        r = await client.get(f"{API}/externalsources", headers=h)
        assert r.status_code == 401
        # Even with every API call failing, tokens are still issued.
        h = await token(client)
        assert (await client.get(f"{API}/externalsources", headers=h)).status_code == 500
        log = org.app.emulator.requests()
        assert [e.fault for e in log if e.path.startswith("/api")] == ["token_revoked", "500"]

    run(go())
