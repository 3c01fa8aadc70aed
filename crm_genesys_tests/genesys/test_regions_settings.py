"""Regions by name/host, base-URL overrides, discovery; settings from the environment; secrets."""

from __future__ import annotations

import asyncio
import pickle

import httpx
import pytest

from crm_genesys.genesys.errors import AuthError, ConfigurationError
from crm_genesys.genesys.regions import REGIONS, base_urls_for, discover_region, resolve_region
from crm_genesys.genesys.settings import GenesysSettings, Secret, genesys_configured
from crm_genesys_tests.genesys.fakes import basic


def test_eighteen_regions_matching_the_sdk() -> None:
    from PureCloudPlatformClientV2 import PureCloudRegionHosts  # the oracle

    sdk = {r.name: r.get_api_host() for r in PureCloudRegionHosts}
    ours = {r.name: r.api_base_url for r in REGIONS}
    assert len(ours) == 18
    assert ours == sdk


@pytest.mark.parametrize(
    "text",
    [
        "eu_central_1",
        "eu-central-1",
        "EU-Central-1",
        "mypurecloud.de",
        "api.mypurecloud.de",
        "login.mypurecloud.de",
        "https://api.mypurecloud.de/",
    ],
)
def test_resolve_region_by_name_or_host(text: str) -> None:
    region = resolve_region(text)
    assert region.name == "eu_central_1"
    assert region.api_base_url == "https://api.mypurecloud.de"
    assert region.login_base_url == "https://login.mypurecloud.de"


def test_similar_domains_are_not_confused() -> None:
    assert resolve_region("mypurecloud.com").name == "us_east_1"
    assert resolve_region("mypurecloud.com.au").name == "ap_southeast_2"
    assert resolve_region("api.use2.us-gov-pure.cloud").name == "us_east_2"


def test_unknown_region_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="known regions"):
        resolve_region("mars_north_1")


def test_base_url_overrides() -> None:
    assert base_urls_for("http://127.0.0.1:8080/") == (
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8080",
    )
    assert base_urls_for("https://api.example.test") == (
        "https://api.example.test",
        "https://login.example.test",
    )
    assert base_urls_for("https://api.mypurecloud.ie") == (
        "https://api.mypurecloud.ie",
        "https://login.mypurecloud.ie",
    )
    with pytest.raises(ConfigurationError):
        base_urls_for("ftp://x")


def _discovery_transport(home: str, *, unreachable: set[str] | None = None) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if unreachable and host in unreachable:
            raise httpx.ConnectError("no route")
        # Other regions answer slower, to show the winner does not wait for them.
        if host != f"login.{home}":
            await asyncio.sleep(0.01)
            return httpx.Response(400, json={"error": "invalid_client"})
        if request.headers["authorization"] != basic("cid", "sec"):
            return httpx.Response(401, json={"error": "invalid_client"})
        return httpx.Response(200, json={"access_token": "t", "expires_in": 86400})

    return httpx.MockTransport(handler)


def test_discover_region_finds_the_home_region() -> None:
    transport = _discovery_transport("mypurecloud.jp", unreachable={"login.mypurecloud.ie"})
    region = asyncio.run(discover_region("cid", "sec", transport=transport))
    assert region.name == "ap_northeast_1"


def test_discover_region_fails_in_plain_words_without_the_secret() -> None:
    transport = _discovery_transport("mypurecloud.jp")
    with pytest.raises(AuthError, match="every region rejected") as caught:
        asyncio.run(discover_region("cid", "wrong-s3cret", transport=transport))
    assert "wrong-s3cret" not in str(caught.value)


def test_settings_from_env_region_host_and_base_url() -> None:
    env = {
        "GENESYS_CLIENT_ID": "cid",
        "GENESYS_CLIENT_SECRET": "sec",
        "GENESYS_REGION": "us-west-2",
    }
    s = GenesysSettings.from_env(env)
    assert s.api_base_url == "https://api.usw2.pure.cloud"
    assert s.login_base_url == "https://login.usw2.pure.cloud"
    assert s.rate_limit_per_minute == 300 and s.batch_size == 100
    host = GenesysSettings.from_env({**env, "GENESYS_API_HOST": "api.mypurecloud.de"})
    assert host.region_name == "eu_central_1"
    base = GenesysSettings.from_env(
        {
            **env,
            "GENESYS_BASE_URL": "http://127.0.0.1:9999",
            "GENESYS_RATE_LIMIT_PER_MINUTE": "600",
            "GENESYS_BATCH_SIZE": "50",
            "GENESYS_MAX_IN_FLIGHT": "4",
        }
    )
    assert base.api_base_url == base.login_base_url == "http://127.0.0.1:9999"
    assert (base.rate_limit_per_minute, base.batch_size, base.max_in_flight) == (600, 50, 4)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GENESYS_REGION": "us_east_1"}, "GENESYS_CLIENT_ID and GENESYS_CLIENT_SECRET"),
        ({"GENESYS_CLIENT_ID": "c", "GENESYS_CLIENT_SECRET": "s"}, "no Genesys region"),
        (
            {"GENESYS_CLIENT_ID": "c", "GENESYS_CLIENT_SECRET": "s", "GENESYS_REGION": "x"},
            "unknown Genesys Cloud region",
        ),
        (
            {
                "GENESYS_CLIENT_ID": "c",
                "GENESYS_CLIENT_SECRET": "s",
                "GENESYS_REGION": "us_east_1",
                "GENESYS_BATCH_SIZE": "many",
            },
            "GENESYS_BATCH_SIZE must be a whole number",
        ),
    ],
)
def test_settings_errors_are_plain(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        GenesysSettings.from_env(env)


def test_from_env_discovering_uses_discovery_only_without_a_region() -> None:
    env = {"GENESYS_CLIENT_ID": "cid", "GENESYS_CLIENT_SECRET": "sec"}
    transport = _discovery_transport("euc2.pure.cloud")
    s = asyncio.run(GenesysSettings.from_env_discovering(env, transport=transport))
    assert s.region_name == "eu_central_2"
    given = asyncio.run(
        GenesysSettings.from_env_discovering({**env, "GENESYS_REGION": "sa_east_1"})
    )
    assert given.region_name == "sa_east_1"


def test_genesys_configured() -> None:
    assert not genesys_configured({})
    assert not genesys_configured({"GENESYS_CLIENT_ID": "x", "GENESYS_CLIENT_SECRET": " "})
    assert genesys_configured({"GENESYS_CLIENT_ID": "x", "GENESYS_CLIENT_SECRET": "y"})


def test_secret_never_shows() -> None:
    secret = Secret("hunter2-top")
    s = GenesysSettings.for_region("us_east_1", "cid", secret)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr(s), str(s)):
        assert "hunter2-top" not in text
    assert secret.reveal() == "hunter2-top"
    assert pickle.loads(pickle.dumps(s)).client_secret.reveal() == "hunter2-top"
    # A plain string given as the secret is wrapped too.
    plain = GenesysSettings(
        api_base_url="https://a", login_base_url="https://l", client_id="c",
        client_secret="plain-secret-9",  # type: ignore[arg-type]
    )  # fmt: skip
    assert "plain-secret-9" not in repr(plain)
