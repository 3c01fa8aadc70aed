"""Settings of the Genesys client, read from the environment, that cannot be misread.

| variable | meaning | default |
|---|---|---|
| `GENESYS_CLIENT_ID`, `GENESYS_CLIENT_SECRET` | client-credentials OAuth client | required |
| `GENESYS_REGION` | a region name: `eu_central_1`, `eu-central-1` | one of the three |
| `GENESYS_API_HOST` | a region host: `mypurecloud.de`, `api.mypurecloud.de` | |
| `GENESYS_BASE_URL` | explicit API base URL (emulator server, proxy) | |
| `GENESYS_RATE_LIMIT_PER_MINUTE` | the OAuth client's request budget (all its consumers) | 300 |
| `GENESYS_RATE_SHARE` | share of that budget this sync may use, in (0, 1] | 0.8 |
| `GENESYS_BATCH_SIZE` | entities per bulk request, 1..1000 | 100 |
| `GENESYS_MAX_IN_FLIGHT` | requests in flight at once | 16 |
| `GENESYS_LOOKUP_LAG_SECONDS` | how long identifier lookups may lag writes, >= 0 | 5 |

The first five are the connection settings (`GENESYS_CONNECTION_VARS`): with none of them set
the project runs its embedded emulator; as soon as one is set, `GenesysSettings.from_env` needs
the credentials and exactly one target, and names every variable that is missing. A value that
cannot be used (a number that is not one, out of range, an unknown `GENESYS_*` name) is a
`ConfigurationError` naming the variable, never ignored. Each default is declared once, on the
`GenesysSettings` field. The region is found by discovery only in `from_env_discovering` (the
`crm-genesys check` command), never in a sync run.

Secrets travel only over TLS: a plain `http://` URL is refused for any host but this machine
(127.0.0.0/8, ::1, `localhost`) before any request is sent (`require_tls`), and TLS verification
is httpx's default (on). A URL that embeds credentials (`https://user:pass@host`) is refused, and
every message that quotes a URL masks them (`mask_url`).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from crm_genesys.genesys.errors import ConfigurationError
from crm_genesys.genesys.regions import base_urls_for, discover_region, resolve_region

CLIENT_ID_VAR = "GENESYS_CLIENT_ID"
CLIENT_SECRET_VAR = "GENESYS_CLIENT_SECRET"
# Where the API is; one target may be named (several only when they agree).
TARGET_VARS = ("GENESYS_REGION", "GENESYS_API_HOST", "GENESYS_BASE_URL")
GENESYS_CONNECTION_VARS: tuple[str, ...] = (CLIENT_ID_VAR, CLIENT_SECRET_VAR, *TARGET_VARS)
# Tuning variables -> the `GenesysSettings` field each one sets (its default lives there).
TUNING_VARS: dict[str, str] = {
    "GENESYS_RATE_LIMIT_PER_MINUTE": "rate_limit_per_minute",
    "GENESYS_RATE_SHARE": "rate_share",
    "GENESYS_BATCH_SIZE": "batch_size",
    "GENESYS_MAX_IN_FLIGHT": "max_in_flight",
    "GENESYS_LOOKUP_LAG_SECONDS": "lookup_lag_seconds",
}
GENESYS_SETTINGS_VARS: tuple[str, ...] = (*GENESYS_CONNECTION_VARS, *TUNING_VARS)


class Secret:
    """A string that never shows itself: repr/str/format give a mask; `reveal()` gives the value.

    Equality compares values so that settings stay comparable in tests; hashing is by value too.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value. Call it only where the value is sent (the token request)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __format__(self, spec: str) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # Pickling (e.g. Dagster multiprocess) must keep the value; it is not a display path.
        return (Secret, (self._value,))


# ---------------------------------------------------------------- URLs


def mask_url(url: str) -> str:
    """`url` with any embedded credentials (`user:pass@`) replaced by `***@`, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    ends = [i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0]
    authority_end = min(ends, default=len(rest))
    authority = rest[:authority_end]
    if "@" in authority:
        rest = "***@" + authority.rsplit("@", 1)[1] + rest[authority_end:]
    return f"{scheme}{sep}{rest}"


def _has_credentials(url: str) -> bool:
    return mask_url(url) != url


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`: traffic that never leaves this machine."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> None:
    """Refuse (`ConfigurationError`, naming `what`) a URL that is not http(s) with a host, or
    that embeds credentials. The URL is quoted masked."""
    if _has_credentials(url):
        raise ConfigurationError(
            f"{what} ({mask_url(url)}) carries credentials: remove them from the URL and set "
            f"{CLIENT_ID_VAR} and {CLIENT_SECRET_VAR} instead"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} ({url}) is not an http(s) URL like https://host[:port]")


def require_tls(url: str, what: str) -> None:
    """Refuse plain `http://` to any host but this machine: the client id and secret, and the
    bearer token, travel only over TLS. Called before any request is sent."""
    check_url(url, what)
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        raise ConfigurationError(
            f"{what} ({url}) is plain http to another machine: Genesys credentials travel only "
            "over https (plain http is allowed for 127.0.0.1, ::1 and localhost, e.g. the "
            "emulator server)"
        )


# ---------------------------------------------------------------- numbers


def _whole(value: object, minimum: int, maximum: int | None = None) -> bool:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        return False
    return maximum is None or value <= maximum


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# Field -> (is the value usable, what a usable value is).
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "rate_limit_per_minute": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "rate_share": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1], e.g. 0.8"),
    "batch_size": (lambda v: _whole(v, 1, 1000), "a whole number from 1 to 1000"),
    "max_in_flight": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "lookup_lag_seconds": (lambda v: _real(v) and v >= 0, "a number of seconds >= 0"),
    "retry_attempts": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "max_request_bytes": (lambda v: _whole(v, 1024), "a whole number >= 1024"),
}


@dataclass(frozen=True)
class GenesysSettings:
    """Everything the client needs. Immutable; `replace(settings, ...)` for variants.

    Timeouts are seconds. `retry_attempts` counts every attempt of one request (first one
    included); `retry_max_elapsed` bounds the time one request may spend retrying.
    `token_refresh_margin` is how long before expiry a token is replaced (at least half the
    lifetime is always used). `max_request_bytes` mirrors the platform's `request.bytes.max`:
    bulk batches are cut below it so that 413s are the exception, not the rule.
    `rate_limit_per_minute` is the OAuth client's budget, shared by every consumer of the
    client; the client paces to `rate_share` of it, less when others spend more (see
    `pacing`). `lookup_lag_seconds` is how long identifier lookups may lag writes (the sink
    never trusts a miss younger than that).
    """

    api_base_url: str
    login_base_url: str
    client_id: str
    client_secret: Secret = field(repr=True)
    rate_limit_per_minute: int = 300
    rate_share: float = 0.8
    batch_size: int = 100
    max_in_flight: int = 16
    lookup_lag_seconds: float = 5.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    write_timeout: float = 30.0
    retry_attempts: int = 8
    retry_max_elapsed: float = 180.0
    retry_initial_delay: float = 0.5
    retry_max_delay: float = 30.0
    token_refresh_margin: float = 300.0
    max_request_bytes: int = 512_000
    region_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.client_secret, Secret):
            object.__setattr__(self, "client_secret", Secret(str(self.client_secret)))
        check_url(self.api_base_url, "the Genesys API URL")
        check_url(self.login_base_url, "the Genesys login URL")
        bad = [
            f"{name} must be {rule} (got {getattr(self, name)!r})"
            for name, (ok, rule) in _RULES.items()
            if not ok(getattr(self, name))
        ]
        if bad:
            raise ConfigurationError(f"invalid Genesys settings: {'; '.join(bad)}")

    @classmethod
    def for_base_url(
        cls, base_url: str, client_id: str, client_secret: str | Secret, **overrides: object
    ) -> GenesysSettings:
        """Settings for an explicit base URL (the emulator: `http://127.0.0.1:PORT`)."""
        check_url(base_url.strip(), "the Genesys base URL")
        api, login = base_urls_for(base_url)
        secret = client_secret if isinstance(client_secret, Secret) else Secret(client_secret)
        fields: dict[str, Any] = {
            "api_base_url": api,
            "login_base_url": login,
            "client_id": client_id,
            "client_secret": secret,
            **overrides,
        }
        return cls(**fields)

    @classmethod
    def for_region(
        cls, region: str, client_id: str, client_secret: str | Secret, **overrides: object
    ) -> GenesysSettings:
        """Settings for a region given by name or host."""
        r = resolve_region(region)
        secret = client_secret if isinstance(client_secret, Secret) else Secret(client_secret)
        settings = cls(api_base_url=r.api_base_url, login_base_url=r.login_base_url,
                       client_id=client_id, client_secret=secret, region_name=r.name)  # fmt: skip
        return replace(settings, **overrides)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GenesysSettings:
        """Settings from `GENESYS_*` variables (see the module docstring).

        Raises `ConfigurationError` naming every problem at once: each missing required
        variable ("GENESYS_CLIENT_SECRET is not set; ..."), the target when none or several
        disagreeing ones are set, each unusable value, each unknown `GENESYS_*` name. Plain
        http to another machine is refused here, before any request.
        """
        env = os.environ if environ is None else environ
        problems = _unknown_vars(env) + _missing_credentials(env)
        tuning = _tuning(env, problems)
        target = _target(env, problems)
        if problems:
            raise ConfigurationError("; ".join(problems))
        assert target is not None
        var, value = target
        client_id, secret = env[CLIENT_ID_VAR].strip(), Secret(env[CLIENT_SECRET_VAR].strip())
        if var == "GENESYS_BASE_URL" or "://" in value:
            require_tls(value, var)
            return cls.for_base_url(value, client_id, secret, **tuning)
        return cls.for_region(value, client_id, secret, **tuning)

    @classmethod
    async def from_env_discovering(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> GenesysSettings:
        """Like `from_env`, but when no target is configured, find the region from the
        credentials by trying every region's token endpoint (see `regions.discover_region`).
        Only `crm-genesys check` does this; a sync run never guesses its target."""
        env = os.environ if environ is None else environ
        if any(env.get(k, "").strip() for k in TARGET_VARS):
            return cls.from_env(env)
        problems = _unknown_vars(env) + _missing_credentials(env)
        tuning = _tuning(env, problems)
        if problems:
            raise ConfigurationError("; ".join(problems))
        client_id, secret = env[CLIENT_ID_VAR].strip(), env[CLIENT_SECRET_VAR].strip()
        region = await discover_region(client_id, secret, transport=transport)
        return cls.for_region(region.name, client_id, Secret(secret), **tuning)


def configured_connection_vars(environ: Mapping[str, str] | None = None) -> list[str]:
    """The connection settings (`GENESYS_CONNECTION_VARS`) present and non-empty, in that order.
    Empty: the embedded emulator is the target; otherwise real Genesys, fully configured."""
    env = os.environ if environ is None else environ
    return [name for name in GENESYS_CONNECTION_VARS if env.get(name, "").strip()]


def genesys_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when any Genesys connection setting is present: then real Genesys is the target and
    `GenesysSettings.from_env` must succeed (it names what is missing). False: the emulator."""
    return bool(configured_connection_vars(environ))


def _missing_credentials(env: Mapping[str, str]) -> list[str]:
    names = (CLIENT_ID_VAR, CLIENT_SECRET_VAR)
    return [f"{name} is not set" for name in names if not env.get(name, "").strip()]


def _unknown_vars(env: Mapping[str, str]) -> list[str]:
    problems = []
    for name in sorted(n for n in env if n.startswith("GENESYS_")):
        if name not in GENESYS_SETTINGS_VARS:
            close = difflib.get_close_matches(name, GENESYS_SETTINGS_VARS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name} is not a Genesys setting{hint}")
    return problems


def _target(env: Mapping[str, str], problems: list[str]) -> tuple[str, str] | None:
    """The one variable naming where the API is, and its value; problems appended."""
    given = [(var, env[var].strip()) for var in TARGET_VARS if env.get(var, "").strip()]
    for var, value in given:
        if _has_credentials(value):
            problems.append(
                f"{var} ({mask_url(value)}) carries credentials: remove them and set "
                f"{CLIENT_ID_VAR} and {CLIENT_SECRET_VAR} instead"
            )
            return None
    if not given:
        problems.append(
            "no Genesys region: set GENESYS_REGION (e.g. eu_central_1), GENESYS_API_HOST "
            "(e.g. mypurecloud.de) or GENESYS_BASE_URL"
        )
        return None
    urls = set()
    for var, value in given:
        try:
            urls.add(_api_url(var, value))
        except ConfigurationError as exc:
            problems.append(f"{var}: {exc.message}")
            return None
    if len(urls) > 1:
        names = ", ".join(var for var, _ in given)
        problems.append(f"{names} name different Genesys targets: set only one of them")
        return None
    return given[0]


def _api_url(var: str, value: str) -> str:
    if var == "GENESYS_BASE_URL" or "://" in value:
        return base_urls_for(value)[0]
    return resolve_region(value).api_base_url


def _tuning(env: Mapping[str, str], problems: list[str]) -> dict[str, object]:
    """Overrides of `GenesysSettings` fields from the tuning variables; problems appended."""
    fields = {f.name: f for f in dataclasses.fields(GenesysSettings)}
    out: dict[str, object] = {}
    for var, name in TUNING_VARS.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        ok, rule = _RULES[name]
        parse: Callable[[str], object] = int if fields[name].type == "int" else float
        try:
            value = parse(raw)
        except ValueError:
            value = None
        if value is None or not ok(value):
            problems.append(f"{var} must be {rule}, got {raw!r}")
        else:
            out[name] = value
    return out
