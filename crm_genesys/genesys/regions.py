"""Genesys Cloud regions: name or host → API and login base URLs, and region discovery.

The 18 regions are those of the official SDK's `PureCloudRegionHosts`. The login host of a region
is `login.<domain>`, its API host `api.<domain>`. A base-URL override (the emulator, a proxy) keeps
its own host for both: `http://127.0.0.1:8080` logs in at `http://127.0.0.1:8080/oauth/token`.

Genesys has no documented way to find an org's region from credentials, but an OAuth client lives
in exactly one region: `discover_region` asks every region's token endpoint at once and the first
one that accepts the credentials wins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from crm_genesys.genesys.errors import AuthError, ConfigurationError

logger = logging.getLogger("crm_genesys.genesys")


@dataclass(frozen=True)
class Region:
    """One Genesys Cloud region: `name` as the SDK spells it, `domain` without `api.`/`login.`."""

    name: str
    domain: str

    @property
    def api_base_url(self) -> str:
        return f"https://api.{self.domain}"

    @property
    def login_base_url(self) -> str:
        return f"https://login.{self.domain}"


REGIONS: tuple[Region, ...] = (
    Region("us_east_1", "mypurecloud.com"),
    Region("eu_west_1", "mypurecloud.ie"),
    Region("ap_southeast_2", "mypurecloud.com.au"),
    Region("ap_northeast_1", "mypurecloud.jp"),
    Region("eu_central_1", "mypurecloud.de"),
    Region("us_west_2", "usw2.pure.cloud"),
    Region("ca_central_1", "cac1.pure.cloud"),
    Region("ap_northeast_2", "apne2.pure.cloud"),
    Region("eu_west_2", "euw2.pure.cloud"),
    Region("ap_south_1", "aps1.pure.cloud"),
    Region("us_east_2", "use2.us-gov-pure.cloud"),
    Region("sa_east_1", "sae1.pure.cloud"),
    Region("me_central_1", "mec1.pure.cloud"),
    Region("ap_northeast_3", "apne3.pure.cloud"),
    Region("eu_central_2", "euc2.pure.cloud"),
    Region("mx_central_1", "mxc1.pure.cloud"),
    Region("ap_southeast_1", "apse1.pure.cloud"),
    Region("eusc_de_east_1", "edee1.eusc-pure.cloud"),
)

_BY_NAME = {r.name: r for r in REGIONS}
_BY_DOMAIN = {r.domain: r for r in REGIONS}


def resolve_region(name_or_host: str) -> Region:
    """The region named `us_east_1` / `us-east-1`, or whose host is given in any of the forms
    `mypurecloud.com`, `api.mypurecloud.com`, `login.mypurecloud.com`,
    `https://api.mypurecloud.com/`. Raises `ConfigurationError` for anything else."""
    text = name_or_host.strip().lower()
    by_name = _BY_NAME.get(text.replace("-", "_"))
    if by_name is not None:
        return by_name
    host = urlsplit(text).hostname if "://" in text else text.split("/")[0].split(":")[0]
    host = (host or "").rstrip(".")
    for prefix in ("api.", "login.", "apps."):
        if host.startswith(prefix) and host[len(prefix) :] in _BY_DOMAIN:
            host = host[len(prefix) :]
            break
    region = _BY_DOMAIN.get(host)
    if region is None:
        known = ", ".join(r.name for r in REGIONS)
        raise ConfigurationError(
            f"unknown Genesys Cloud region or host {name_or_host!r}; known regions: {known}"
        )
    return region


def base_urls_for(base_url: str) -> tuple[str, str]:
    """(api_base_url, login_base_url) for an explicit base URL.

    A known region host maps to its official pair; any other host (the emulator, a proxy) keeps
    the same scheme, host and port for both, with `api.` replaced by `login.` when it starts so.
    """
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL itself is not repeated: it may carry credentials.
        raise ConfigurationError("not an http(s) base URL (https://host[:port])")
    try:
        region = resolve_region(parts.hostname)
    except ConfigurationError:
        region = None
    if region is not None and parts.scheme == "https" and parts.port is None:
        return region.api_base_url, region.login_base_url
    if parts.hostname.startswith("api."):
        return url, url.replace("//api.", "//login.", 1)
    return url, url


async def discover_region(
    client_id: str,
    client_secret: str,
    *,
    regions: Sequence[Region] = REGIONS,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 15.0,
) -> Region:
    """The region whose login host accepts these client credentials.

    Every region's `POST /oauth/token` is tried concurrently; the first success wins and the
    other attempts are cancelled. Raises `AuthError` when no region accepts them (the message
    says whether every region rejected them or some could not be reached). The token obtained
    is thrown away: the client gets its own.
    """
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:

        async def attempt(region: Region) -> Region:
            response = await http.post(
                f"{region.login_base_url}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=httpx.BasicAuth(client_id, client_secret),
            )
            if response.status_code == 200 and "access_token" in response.json():
                return region
            raise AuthError(f"{region.name}: HTTP {response.status_code}")

        tasks = {asyncio.ensure_future(attempt(r)): r for r in regions}
        failures: list[str] = []
        try:
            for finished in asyncio.as_completed(tasks):
                try:
                    region = await finished
                except AuthError as exc:
                    failures.append(exc.message)
                except (httpx.HTTPError, ValueError) as exc:
                    # Name the exception type only: its text could echo the request.
                    failures.append(f"unreachable ({type(exc).__name__})")
                else:
                    logger.info("Genesys region discovered: %s", region.name)
                    return region
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    unreachable = sum(1 for f in failures if f.startswith("unreachable"))
    detail = (
        f"{unreachable} of {len(failures)} regions could not be reached"
        if unreachable
        else "every region rejected them"
    )
    raise AuthError(
        f"no Genesys Cloud region accepts these client credentials ({detail}); "
        "check GENESYS_CLIENT_ID/GENESYS_CLIENT_SECRET or set GENESYS_REGION"
    )
