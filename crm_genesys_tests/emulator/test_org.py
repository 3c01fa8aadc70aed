"""`GET /api/v2/organizations/me`: one GUID per org, kept in the org's file, so two data
directories are two orgs and one file is one org across apps, processes and restarts."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import PureCloudPlatformClientV2 as sdk

from crm_genesys.emulator import EmulatorApp, EmulatorConfig, create_app
from crm_genesys_tests.emulator.conftest import run, start_server, stop_server, token


async def org_id_of(app: EmulatorApp) -> str:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e")
    h = await token(client)
    me = await client.get("/api/v2/organizations/me", headers=h)
    assert me.status_code == 200
    tokens_me = (await client.get("/api/v2/tokens/me", headers=h)).json()
    assert tokens_me["organization"]["id"] == me.json()["id"]
    return str(me.json()["id"])


def test_the_org_id_is_a_guid_generated_once_per_org_file(tmp_path: Path) -> None:
    async def go() -> None:
        one = tmp_path / "one" / "emulator.sqlite"
        first = await org_id_of(create_app(EmulatorConfig(db_path=one)))
        assert str(uuid.UUID(first)) == first
        assert await org_id_of(create_app(EmulatorConfig(db_path=one))) == first
        other = await org_id_of(create_app(EmulatorConfig(db_path=tmp_path / "two" / "e.sqlite")))
        assert other != first
        # Forgetting the data keeps the org.
        app = create_app(EmulatorConfig(db_path=one))
        app.state.emulator.reset()
        assert await org_id_of(app) == first
        # Two in-memory orgs are two orgs; an explicit id wins over the file's.
        assert await org_id_of(create_app()) != await org_id_of(create_app())
        chosen = "11111111-2222-4333-8444-555555555555"
        assert await org_id_of(create_app(EmulatorConfig(db_path=one, org_id=chosen))) == chosen

    run(go())


def test_the_org_id_survives_a_server_restart_and_reads_as_an_sdk_organization(
    tmp_path: Path,
) -> None:
    ids = []
    for _ in range(2):
        server = start_server("--data", str(tmp_path))
        try:
            client = sdk.ApiClient(host=server.url).get_client_credentials_token(
                "demo-client", "demo-secret"
            )
            org = sdk.OrganizationApi(client).get_organizations_me()
            assert isinstance(org, sdk.Organization)
            assert org.state == "active" and org.product_platform == "GenesysCloud"
            ids.append(org.id)
        finally:
            stop_server(server)
    assert ids[0] == ids[1]
    with_flag = start_server("--data", str(tmp_path), "--org-id", "flag-org")
    try:
        api = sdk.OrganizationApi(
            sdk.ApiClient(host=with_flag.url).get_client_credentials_token(
                "demo-client", "demo-secret"
            )
        )
        assert api.get_organizations_me().id == "flag-org"
    finally:
        stop_server(with_flag)
