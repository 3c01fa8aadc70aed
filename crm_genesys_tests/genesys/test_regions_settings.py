"""Regions by name/host, base-URL overrides, discovery; settings from the environment; secrets."""

from __future__ import annotations

import asyncio
import logging
import pickle
import re
import ssl
from pathlib import Path

import httpx
import pytest

import crm_genesys
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.errors import AuthError, ConfigurationError
from crm_genesys.genesys.regions import REGIONS, base_urls_for, discover_region, resolve_region
from crm_genesys.genesys.settings import (
    GENESYS_CONNECTION_VARS,
    GenesysSettings,
    Secret,
    configured_connection_vars,
    genesys_configured,
    mask_url,
)
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
    assert (s.rate_share, s.lookup_lag_seconds) == (0.8, 5.0)
    creds = {k: v for k, v in env.items() if k != "GENESYS_REGION"}
    host = GenesysSettings.from_env({**creds, "GENESYS_API_HOST": "api.mypurecloud.de"})
    assert host.region_name == "eu_central_1"
    same = GenesysSettings.from_env({**env, "GENESYS_API_HOST": "usw2.pure.cloud"})
    assert same.region_name == "us_west_2"  # two names of one target are fine
    base = GenesysSettings.from_env(
        {
            **creds,
            "GENESYS_BASE_URL": "http://127.0.0.1:9999",
            "GENESYS_RATE_LIMIT_PER_MINUTE": "600",
            "GENESYS_RATE_SHARE": "0.5",
            "GENESYS_BATCH_SIZE": "50",
            "GENESYS_MAX_IN_FLIGHT": "4",
            "GENESYS_LOOKUP_LAG_SECONDS": "0",
        }
    )
    assert base.api_base_url == base.login_base_url == "http://127.0.0.1:9999"
    assert (base.rate_limit_per_minute, base.batch_size, base.max_in_flight) == (600, 50, 4)
    assert (base.rate_share, base.lookup_lag_seconds) == (0.5, 0.0)


CREDS = {"GENESYS_CLIENT_ID": "c", "GENESYS_CLIENT_SECRET": "s"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GENESYS_REGION": "us_east_1"},
            "^GENESYS_CLIENT_ID is not set; GENESYS_CLIENT_SECRET is not set$",
        ),
        (
            {"GENESYS_CLIENT_ID": "c"},
            "^GENESYS_CLIENT_SECRET is not set; no Genesys region: set GENESYS_REGION",
        ),
        (CREDS, "^no Genesys region: set GENESYS_REGION .*, GENESYS_API_HOST .* or GENES"),
        ({**CREDS, "GENESYS_REGION": "x"}, "GENESYS_REGION: unknown Genesys Cloud region"),
        (
            {**CREDS, "GENESYS_REGION": "us_east_1", "GENESYS_BASE_URL": "http://127.0.0.1:1"},
            "GENESYS_REGION, GENESYS_BASE_URL name different Genesys targets",
        ),
        (
            {**CREDS, "GENESYS_REGION": "us_east_1", "GENESYS_RATE_LIMIT": "100"},
            "GENESYS_RATE_LIMIT is not a Genesys setting "
            r"\(did you mean GENESYS_RATE_LIMIT_PER_MINUTE\?\)",
        ),
    ],
)
def test_settings_errors_name_every_missing_or_wrong_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        GenesysSettings.from_env(env)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("GENESYS_RATE_LIMIT_PER_MINUTE", "0"),
        ("GENESYS_RATE_LIMIT_PER_MINUTE", "300.5"),
        ("GENESYS_RATE_LIMIT_PER_MINUTE", "lots"),
        ("GENESYS_RATE_SHARE", "0"),
        ("GENESYS_RATE_SHARE", "1.2"),
        ("GENESYS_RATE_SHARE", "nan"),
        ("GENESYS_RATE_SHARE", "80%"),
        ("GENESYS_BATCH_SIZE", "many"),
        ("GENESYS_BATCH_SIZE", "1001"),
        ("GENESYS_MAX_IN_FLIGHT", "-2"),
        ("GENESYS_LOOKUP_LAG_SECONDS", "-1"),
        ("GENESYS_LOOKUP_LAG_SECONDS", "inf"),
    ],
)
def test_an_unusable_value_is_an_error_naming_the_variable(var: str, raw: str) -> None:
    env = {**CREDS, "GENESYS_REGION": "us_east_1", var: raw}
    with pytest.raises(ConfigurationError, match=f"^{var} must be .*, got '{re.escape(raw)}'$"):
        GenesysSettings.from_env(env)


def test_every_problem_is_named_at_once() -> None:
    env = {"GENESYS_CLIENT_ID": "c", "GENESYS_BATCH_SIZE": "0", "GENESYS_RATE_SHARE": "2"}
    with pytest.raises(ConfigurationError) as caught:
        GenesysSettings.from_env(env)
    text = str(caught.value)
    for name in ("GENESYS_CLIENT_SECRET", "GENESYS_BATCH_SIZE", "GENESYS_RATE_SHARE", "region"):
        assert name in text


def test_the_connection_settings_choose_the_target() -> None:
    assert GENESYS_CONNECTION_VARS == (
        "GENESYS_CLIENT_ID",
        "GENESYS_CLIENT_SECRET",
        "GENESYS_REGION",
        "GENESYS_API_HOST",
        "GENESYS_BASE_URL",
    )
    assert configured_connection_vars({}) == []
    assert configured_connection_vars({"GENESYS_BATCH_SIZE": "5", "PATH": "/bin"}) == []
    env = {"GENESYS_CLIENT_SECRET": "s", "GENESYS_REGION": " ", "GENESYS_BASE_URL": "http://x"}
    assert configured_connection_vars(env) == ["GENESYS_CLIENT_SECRET", "GENESYS_BASE_URL"]
    assert not genesys_configured({})
    assert not genesys_configured({"GENESYS_CLIENT_ID": " ", "GENESYS_MAX_IN_FLIGHT": "3"})
    # Any one connection setting means real Genesys (and then from_env must succeed).
    assert genesys_configured({"GENESYS_CLIENT_SECRET": "y"})
    assert genesys_configured({"GENESYS_REGION": "us_east_1"})


@pytest.mark.parametrize(
    "url", ["http://api.example.com", "http://10.0.0.5:8080", "http://emulator.corp:80"]
)
def test_plain_http_to_another_machine_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(ConfigurationError, match="only over https"):
        GenesysSettings.from_env({**CREDS, "GENESYS_BASE_URL": url})
    with pytest.raises(ConfigurationError, match="only over https"):
        GenesysSettings.from_env({**CREDS, "GENESYS_API_HOST": url})
    settings = GenesysSettings.for_base_url(url, "c", "s")
    with pytest.raises(ConfigurationError, match="only over https"):
        GenesysClient(settings)  # the network transport: refused before it exists
    with pytest.raises(ConfigurationError, match="only over https"):
        GenesysClient(settings, transport=httpx.AsyncHTTPTransport())
    # In-process transports put nothing on a network (the embedded emulator).
    GenesysClient(settings, transport=httpx.MockTransport(lambda r: httpx.Response(500)))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8089", "http://127.9.0.1", "http://[::1]:8089", "http://localhost"]
)
def test_plain_http_is_allowed_to_this_machine(url: str) -> None:
    settings = GenesysSettings.from_env({**CREDS, "GENESYS_BASE_URL": url})
    GenesysClient(settings)


def test_tls_verification_stays_on() -> None:
    settings = GenesysSettings.for_region("eu_central_1", "c", "s")
    client = GenesysClient(settings)
    pool = client._http._transport._pool  # type: ignore[attr-defined]
    context = pool._ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    package = Path(crm_genesys.__file__).parent
    for path in package.rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"verify\s*=\s*False", source), path
        assert "CERT_NONE" not in source and "_create_unverified_context" not in source, path


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GENESYS_BASE_URL", "https://admin:hunter2-xyz@api.example.com/"),
        ("GENESYS_API_HOST", "https://admin:hunter2-xyz@api.mypurecloud.de"),
        ("GENESYS_API_HOST", "admin:hunter2-xyz@mypurecloud.de"),
        ("GENESYS_REGION", "admin:hunter2-xyz@eu_central_1"),
    ],
)
def test_credentials_in_a_url_are_masked_everywhere(
    var: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigurationError) as caught:
        GenesysSettings.from_env({**CREDS, var: value})
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value)
    assert "***@" in str(caught.value) and var in str(caught.value)
    with pytest.raises(ConfigurationError) as direct:
        GenesysSettings(
            api_base_url="https://admin:hunter2-xyz@api.example.com",
            login_base_url="https://login.example.com",
            client_id="c",
            client_secret=Secret("s"),
        )
    assert "hunter2" not in str(direct.value)
    with pytest.raises(ConfigurationError) as built:
        GenesysSettings.for_base_url("http://admin:hunter2-xyz@127.0.0.1:1", "c", "s")
    assert "hunter2" not in str(built.value)
    assert "hunter2" not in caplog.text


def test_mask_url() -> None:
    assert mask_url("https://u:p@h:1/x?y=1") == "https://***@h:1/x?y=1"
    assert mask_url("u:p@h") == "***@h"
    assert mask_url("https://h/a@b") == "https://h/a@b"  # an @ in the path is no credential


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
