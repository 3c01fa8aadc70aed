"""The emulator served over HTTP in a subprocess: the official Genesys SDK as the client, shared
state between processes, the admin endpoints, dropped connections and clean shutdown."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, TypeVar

import httpx
import PureCloudPlatformClientV2 as sdk
import pytest
from PureCloudPlatformClientV2.rest import ApiException

from crm_genesys.emulator import EmulatorConfig, create_app
from crm_genesys_tests.emulator.conftest import API, Server, run, start_server, stop_server
from crm_genesys_tests.emulator_server import admin_headers

T = TypeVar("T")


def m(cls: type[T], **attrs: Any) -> T:
    """An SDK model with attributes set (the generated models take no constructor arguments)."""
    obj = cls()
    for name, value in attrs.items():
        setattr(obj, name, value)
    return obj


def _sdk_client(url: str) -> sdk.ApiClient:
    return sdk.ApiClient(host=url).get_client_credentials_token("demo-client", "demo-secret")


def _sdk_api(url: str) -> sdk.ExternalContactsApi:
    return sdk.ExternalContactsApi(_sdk_client(url))


def test_official_sdk_contract(server: Server) -> None:
    client = _sdk_client(server.url)
    api = sdk.ExternalContactsApi(client)
    org = sdk.OrganizationApi(client).get_organizations_me()
    assert org.id and org.name and org.state == "active"

    source = api.post_externalcontacts_externalsources(
        m(sdk.ExternalSource, name="crm", active=True)
    )
    assert source.id and source.name == "crm"
    listed = api.get_externalcontacts_externalsources(name="cr")
    assert [s.id for s in listed.entities] == [source.id]
    assert api.get_externalcontacts_externalsource(source.id).name == "crm"

    ext = [m(sdk.ExternalId, external_source=m(sdk.ExternalSource, id=source.id), value="AC-1")]
    created = api.post_externalcontacts_contacts(
        m(
            sdk.ExternalContact,
            first_name="Ada",
            last_name="Lovelace",
            work_phone=m(sdk.PhoneNumber, display="(317) 222-2222"),
            cell_phone=m(sdk.PhoneNumber, display="0151 23456789", normalization_country_code="DE"),
            work_email="ada@example.com",
            address=m(sdk.ContactAddress, city="London", country_code="GB"),
            external_ids=ext,
        )
    )
    assert created.id and created.type == "Curated" and created.create_date is not None
    assert created.work_phone.e164 == "+13172222222"
    assert created.cell_phone.e164 == "+4915123456789"
    assert created.work_phone.user_input == "(317) 222-2222"

    got = api.get_externalcontacts_contact(created.id, expand=["externalSources"])
    assert got.first_name == "Ada" and got.external_ids[0].value == "AC-1"

    got.title = "Countess"
    updated = api.put_externalcontacts_contact(created.id, got)
    assert updated.title == "Countess" and updated.work_phone.e164 == "+13172222222"

    with pytest.raises(ApiException) as missing:
        api.put_externalcontacts_contact("no-such-id", m(sdk.ExternalContact, first_name="X"))
    assert missing.value.status == 404

    found = api.post_externalcontacts_identifierlookup_contacts(
        m(
            sdk.ContactIdentifier,
            type="ExternalId",
            value="AC-1",
            external_source=m(sdk.ExternalSource, id=source.id),
        )
    )
    assert found.id == created.id
    with pytest.raises(ApiException) as miss:
        api.post_externalcontacts_identifierlookup_contacts(
            m(
                sdk.ContactIdentifier,
                type="ExternalId",
                value="AC-404",
                external_source=m(sdk.ExternalSource, id=source.id),
            )
        )
    assert miss.value.status == 404
    pages = api.get_externalcontacts_reversewhitepageslookup("+13172222222")
    assert [c.id for c in pages.contacts] == [created.id]

    entities = [
        m(
            sdk.ExternalContact,
            first_name=f"Bulk {i}",
            work_phone=m(sdk.PhoneNumber, display=f"+1 317 555 {i:04d}"),
            external_ids=[
                m(
                    sdk.ExternalId,
                    external_source=m(sdk.ExternalSource, id=source.id),
                    value=f"B-{i}",
                )
            ],
        )
        for i in range(25)
    ]
    added = api.post_externalcontacts_bulk_contacts_add(
        m(sdk.BulkContactsRequest, entities=entities)
    )
    assert added.error_count == 0 and len(added.results) == 25
    by_key = {r.entity.external_ids[0].value: r for r in added.results}
    assert set(by_key) == {f"B-{i}" for i in range(25)}
    assert by_key["B-3"].entity.work_phone.e164 == "+13175550003"

    remove_ids = [by_key[f"B-{i}"].id for i in range(5)] + ["ghost"]
    removed = api.post_externalcontacts_bulk_contacts_remove(
        m(sdk.BulkIdsRequest, entities=[m(sdk.ExternalContactsEntity, id=i) for i in remove_ids])
    )
    assert removed.error_count == 1 and removed.error_indexes == [5]
    assert {r.id: r.success for r in removed.results}["ghost"] is False

    seen: list[str] = []
    cursor = None
    while True:
        page = (
            api.get_externalcontacts_scan_contacts(limit=10, cursor=cursor)
            if cursor
            else api.get_externalcontacts_scan_contacts(limit=10)
        )
        seen += [c.id for c in page.entities]
        cursor = page.cursors.after if page.cursors else None
        if not cursor:
            break
    assert len(seen) == 21 and created.id in seen

    api.delete_externalcontacts_contact(created.id)
    with pytest.raises(ApiException) as gone:
        api.get_externalcontacts_contact(created.id)
    assert gone.value.status == 404

    log = server.get("/__emulator/requests")
    assert [e["status"] for e in log][:2] == [200, 200]
    bulk = [e for e in log if e["path"].endswith("/bulk/contacts/add")]
    assert bulk[0]["entities"] == 25
    stats = server.get("/__emulator/stats")
    assert stats["contacts"] == 20
    assert len(server.get("/__emulator/contacts")) == 20


def test_official_sdk_reads_the_realistic_endpoints(tmp_path: Path) -> None:
    server = start_server(
        "--data", str(tmp_path), "--realism", "realistic", "--lag-max-s", "0",
        "--interaction-contacts", "0",
    )  # fmt: skip
    try:
        client = _sdk_client(server.url)
        api = sdk.ExternalContactsApi(client)
        divisions = sdk.AuthorizationApi(client).get_authorization_divisions(page_size=10)
        home = next(d for d in divisions.entities if d.home_division)
        limits = api.get_externalcontacts_contacts_schemas_limits()
        assert limits.max_number_of_fields_per_schema == 100
        source = api.post_externalcontacts_externalsources(m(sdk.ExternalSource, name="crm"))

        def new(key: str) -> sdk.ExternalContact:
            ext = m(sdk.ExternalId, external_source=m(sdk.ExternalSource, id=source.id), value=key)
            body = m(
                sdk.ExternalContact,
                first_name=key,
                work_phone=m(sdk.PhoneNumber, display="(317) 222-2222"),
                division=m(sdk.WritableStarrableDivision, id=home.id),
                external_ids=[ext],
            )
            return api.post_externalcontacts_contacts(body)

        a, b = new("A"), new("B")
        assert a.division.id == home.id and a.work_phone.display == "+1 3172222222"
        claimed = api.patch_externalcontacts_contact_identifiers(
            a.id,
            m(
                sdk.IdentifierClaimRequest,
                operation="Claim",
                identifier=m(sdk.ContactIdentifier, type="Cookie", value="c-1"),
            ),
        )
        assert claimed.value == "c-1" and claimed.date_created is not None
        listed = api.get_externalcontacts_contact_identifiers(a.id)
        assert [i.value for i in listed.entities] == ["c-1"]
        with pytest.raises(ApiException) as taken:
            api.patch_externalcontacts_contact_identifiers(
                b.id,
                m(
                    sdk.IdentifierClaimRequest,
                    operation="Claim",
                    identifier=m(sdk.ContactIdentifier, type="Cookie", value="c-1"),
                ),
            )
        assert taken.value.status == 409
        fetched = api.post_externalcontacts_bulk_contacts(
            m(sdk.BulkIdsRequest, entities=[m(sdk.ExternalContactsEntity, id=a.id)])
        )
        assert fetched.results[0].entity.id == a.id
        found = api.get_externalcontacts_contacts(page_size=10, q="a")
        assert a.id in [c.id for c in found.entities]

        merged = api.post_externalcontacts_contacts_merge(
            m(sdk.MergeContactsRequest, contact_ids=[a.id, b.id])
        )
        assert {r.id for r in merged.merged_from} == {a.id, b.id}
        assert merged.canonical_contact.id == merged.id and len(merged.merge_set) == 3
        assert [i.value for i in merged.identifiers] == ["c-1"]
        ancestor = api.get_externalcontacts_contact_unresolved(a.id)
        assert ancestor.merged_to.id == merged.id
        with pytest.raises(ApiException) as gone:
            api.get_externalcontacts_contact(a.id)
        assert gone.value.status == 404
        survivor = api.get_externalcontacts_contact(merged.id)
        survivor.division = m(sdk.WritableStarrableDivision, id=home.id)
        assert api.put_externalcontacts_contact(merged.id, survivor).division.id == home.id
        survivor.division = m(sdk.WritableStarrableDivision, id="nowhere")
        with pytest.raises(ApiException) as moved:
            api.put_externalcontacts_contact(merged.id, survivor)
        assert moved.value.status == 400 and "cannot change division" in moved.value.body
    finally:
        stop_server(server)


def test_two_processes_see_the_same_org(tmp_path: Path) -> None:
    first = start_server("--data", str(tmp_path))
    second = start_server("--data", str(tmp_path))
    try:
        api_a, api_b = _sdk_api(first.url), _sdk_api(second.url)
        source = api_a.post_externalcontacts_externalsources(m(sdk.ExternalSource, name="crm"))
        made = api_a.post_externalcontacts_contacts(
            m(
                sdk.ExternalContact,
                first_name="Shared",
                external_ids=[
                    m(
                        sdk.ExternalId,
                        external_source=m(sdk.ExternalSource, id=source.id),
                        value="S",
                    )
                ],
            )
        )
        assert api_b.get_externalcontacts_contact(made.id).first_name == "Shared"
        api_b.delete_externalcontacts_contact(made.id)
        with pytest.raises(ApiException):
            api_a.get_externalcontacts_contact(made.id)
    finally:
        stop_server(first)
        stop_server(second)
    # And the data outlives the processes: an in-process app on the same file sees the source.
    app = create_app(EmulatorConfig(db_path=tmp_path / "emulator.sqlite"))
    assert app.emulator.store.get_source(source.id) is not None


def test_starts_fast_and_stops_cleanly_on_sigterm_and_sigint(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        started = time.monotonic()
        server = start_server("--data", str(tmp_path))
        assert time.monotonic() - started < 3.0
        assert server.get("/__emulator/stats")["contacts"] == 0
        server.process.send_signal(sig)
        assert server.process.wait(timeout=10) == 0


def test_server_drops_connections_without_a_response(tmp_path: Path) -> None:
    server = start_server("--data", str(tmp_path), "--faults", "none", "--seed", "3")
    try:
        with (
            httpx.Client(base_url=server.url) as client,
            httpx.Client(base_url=server.url, headers=admin_headers()) as admin,
        ):
            auth = client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("demo-client", "demo-secret"),
            )
            headers = {"Authorization": f"Bearer {auth.json()['access_token']}"}
            source = client.post(f"{API}/externalsources", json={"name": "s"}, headers=headers)
            source_id = source.json()["id"]
            admin.put("/__emulator/faults", json={"p_drop_after_write": 1.0})
            body = {
                "firstName": "Written",
                "externalIds": [{"externalSource": {"id": source_id}, "value": "W"}],
            }
            with pytest.raises(httpx.RemoteProtocolError):
                client.post(f"{API}/contacts", json=body, headers=headers)
            # The write happened although the client never heard back.
            stored = admin.get("/__emulator/contacts").json()
            assert [c["firstName"] for c in stored] == ["Written"]
            admin.put("/__emulator/faults", json={"p_drop": 1.0})
            with pytest.raises(httpx.RemoteProtocolError):
                client.post(f"{API}/contacts", json=body, headers=headers)
            assert len(admin.get("/__emulator/contacts").json()) == 1
            admin.put("/__emulator/faults", json={"profile": "none"})
            assert client.get(f"{API}/externalsources", headers=headers).status_code == 200
            faults = [e["fault"] for e in admin.get("/__emulator/requests").json()]
            assert faults.count("drop_after_write") == 1 and faults.count("drop") == 1
    finally:
        assert stop_server(server) == 0
    assert "Exception" not in (server.process.stderr.read() if server.process.stderr else "")


def test_client_secret_from_the_environment(tmp_path: Path) -> None:
    server = start_server(env={"CRM_GENESYS_EMULATOR_CLIENT_SECRET": "from-env"})
    try:
        grant = {"grant_type": "client_credentials"}
        bad = httpx.post(
            f"{server.url}/oauth/token", data=grant, auth=("demo-client", "demo-secret")
        )
        assert bad.status_code == 401
        good = httpx.post(f"{server.url}/oauth/token", data=grant, auth=("demo-client", "from-env"))
        assert good.status_code == 200
    finally:
        stop_server(server)


def test_in_process_app_over_the_same_file_as_a_server(tmp_path: Path) -> None:
    server = start_server("--data", str(tmp_path))
    try:
        app = create_app(EmulatorConfig(db_path=tmp_path / "emulator.sqlite"))

        async def add_in_process() -> None:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://emulator"
            ) as client:
                tok = await client.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=("demo-client", "demo-secret"),
                )
                h = {"Authorization": f"Bearer {tok.json()['access_token']}"}
                r = await client.post(f"{API}/contacts", json={"firstName": "Local"}, headers=h)
                assert r.status_code == 200

        run(add_in_process())
        names = [c["firstName"] for c in server.get("/__emulator/contacts")]
        assert names == ["Local"]
    finally:
        stop_server(server)
