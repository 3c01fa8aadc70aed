"""Settings of the Genesys client, read from the environment.

| variable | meaning |
|---|---|
| `GENESYS_BASE_URL` | explicit API base URL (emulator server, proxy); wins over the others |
| `GENESYS_API_HOST` | a region host: `mypurecloud.de`, `api.mypurecloud.de` |
| `GENESYS_REGION` | a region name: `eu_central_1`, `eu-central-1` |
| `GENESYS_CLIENT_ID`, `GENESYS_CLIENT_SECRET` | client-credentials OAuth client |
| `GENESYS_RATE_LIMIT_PER_MINUTE` | the request budget of the token (300) |
| `GENESYS_BATCH_SIZE` | entities per bulk request (100) |
| `GENESYS_MAX_IN_FLIGHT` | requests in flight at once (16) |

Real Genesys is used only when client id and secret are both set (`genesys_configured`);
otherwise the project runs its embedded emulator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import httpx

from crm_genesys.genesys.errors import ConfigurationError
from crm_genesys.genesys.regions import base_urls_for, discover_region, resolve_region


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


@dataclass(frozen=True)
class GenesysSettings:
    """Everything the client needs. Immutable; `replace(settings, ...)` for variants.

    Timeouts are seconds. `retry_attempts` counts every attempt of one request (first one
    included); `retry_max_elapsed` bounds the time one request may spend retrying.
    `token_refresh_margin` is how long before expiry a token is replaced (at least half the
    lifetime is always used). `max_request_bytes` mirrors the platform's `request.bytes.max`:
    bulk batches are cut below it so that 413s are the exception, not the rule.
    """

    api_base_url: str
    login_base_url: str
    client_id: str
    client_secret: Secret = field(repr=True)
    rate_limit_per_minute: int = 300
    batch_size: int = 100
    max_in_flight: int = 16
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
        checks = {
            "rate_limit_per_minute": self.rate_limit_per_minute >= 1,
            "batch_size": 1 <= self.batch_size <= 1000,
            "max_in_flight": self.max_in_flight >= 1,
            "retry_attempts": self.retry_attempts >= 1,
            "max_request_bytes": self.max_request_bytes >= 1024,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigurationError(f"invalid Genesys settings: {', '.join(bad)}")

    @classmethod
    def for_base_url(
        cls, base_url: str, client_id: str, client_secret: str | Secret, **overrides: object
    ) -> GenesysSettings:
        """Settings for an explicit base URL (the emulator: `http://127.0.0.1:PORT`)."""
        api, login = base_urls_for(base_url)
        secret = client_secret if isinstance(client_secret, Secret) else Secret(client_secret)
        settings = cls(api_base_url=api, login_base_url=login, client_id=client_id,
                       client_secret=secret)  # fmt: skip
        return replace(settings, **overrides)  # type: ignore[arg-type]

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
        """Settings from `GENESYS_*` variables. Raises `ConfigurationError` (in plain words)
        when credentials or the region are missing; see `from_env_discovering` for the latter."""
        env = os.environ if environ is None else environ
        client_id, secret = _credentials(env)
        tuning = _tuning(env)
        if base := env.get("GENESYS_BASE_URL", "").strip():
            return cls.for_base_url(base, client_id, secret, **tuning)
        host = env.get("GENESYS_API_HOST", "").strip() or env.get("GENESYS_REGION", "").strip()
        if not host:
            raise ConfigurationError(
                "no Genesys region: set GENESYS_REGION (e.g. eu_central_1), GENESYS_API_HOST "
                "(e.g. mypurecloud.de) or GENESYS_BASE_URL"
            )
        if "://" in host:
            return cls.for_base_url(host, client_id, secret, **tuning)
        return cls.for_region(host, client_id, secret, **tuning)

    @classmethod
    async def from_env_discovering(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> GenesysSettings:
        """Like `from_env`, but when no region is configured, find it from the credentials by
        trying every region's token endpoint (see `regions.discover_region`)."""
        env = os.environ if environ is None else environ
        if any(env.get(k, "").strip() for k in _REGION_VARS):
            return cls.from_env(env)
        client_id, secret = _credentials(env)
        region = await discover_region(client_id, secret.reveal(), transport=transport)
        return cls.for_region(region.name, client_id, secret, **_tuning(env))


_REGION_VARS = ("GENESYS_BASE_URL", "GENESYS_API_HOST", "GENESYS_REGION")
# The connection settings: any of them present means "real Genesys", and then all must be right.
GENESYS_CONNECTION_VARS = ("GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET", *_REGION_VARS)


def configured_connection_vars(environ: Mapping[str, str] | None = None) -> list[str]:
    """The Genesys connection settings present (non-empty) in `environ`."""
    env = os.environ if environ is None else environ
    return [name for name in GENESYS_CONNECTION_VARS if env.get(name, "").strip()]


def genesys_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when real Genesys credentials are configured (`GENESYS_CLIENT_ID` and
    `GENESYS_CLIENT_SECRET` both non-empty). When False the project runs the embedded emulator."""
    env = os.environ if environ is None else environ
    return bool(env.get("GENESYS_CLIENT_ID", "").strip()) and bool(
        env.get("GENESYS_CLIENT_SECRET", "").strip()
    )


def _credentials(env: Mapping[str, str]) -> tuple[str, Secret]:
    client_id = env.get("GENESYS_CLIENT_ID", "").strip()
    secret = env.get("GENESYS_CLIENT_SECRET", "").strip()
    missing = [n for n, v in (("GENESYS_CLIENT_ID", client_id),
                              ("GENESYS_CLIENT_SECRET", secret)) if not v]  # fmt: skip
    if missing:
        raise ConfigurationError(f"Genesys credentials missing: set {' and '.join(missing)}")
    return client_id, Secret(secret)


def _tuning(env: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for var, name in (
        ("GENESYS_RATE_LIMIT_PER_MINUTE", "rate_limit_per_minute"),
        ("GENESYS_BATCH_SIZE", "batch_size"),
        ("GENESYS_MAX_IN_FLIGHT", "max_in_flight"),
    ):
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            out[name] = int(raw)
        except ValueError:
            raise ConfigurationError(f"{var} must be a whole number, got {raw!r}") from None
    return out
