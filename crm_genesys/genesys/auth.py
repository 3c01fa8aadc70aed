"""Client-credentials tokens: fetched on demand, refreshed before expiry and once on a 401.

`POST {login}/oauth/token` with Basic auth and form `grant_type=client_credentials` answers
`{access_token, expires_in, token_type}`. The lifetime is whatever `expires_in` says (the OAuth
client's setting, 300..172800 s, 86400 by default — never assume 3600). A token is replaced at
`expires_in − margin`, but never before half its lifetime, so a short-lived token with a large
margin is not refreshed on every call.

However many requests are in flight, at most one refresh runs: callers queue on one lock and
the ones behind it find the fresh token already there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from crm_genesys.genesys.errors import (
    AuthError,
    RateLimitedError,
    RetryableError,
    ServerError,
    TransportError,
)
from crm_genesys.genesys.retry import RetryPolicy
from crm_genesys.genesys.settings import Secret

logger = logging.getLogger("crm_genesys.genesys")


@dataclass
class _Token:
    value: str = field(repr=False)
    refresh_at: float
    expires_at: float


class TokenManager:
    """Holds the current bearer token of one client. `await token()` gives a valid one;
    `await refresh_after_401(rejected)` replaces the token a 401 was answered to (once, however
    many requests saw that 401). `refreshes` counts token requests that succeeded."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        login_base_url: str,
        client_id: str,
        client_secret: Secret,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._http = http
        self._url = f"{login_base_url.rstrip('/')}/oauth/token"
        self._client_id = client_id
        self._secret = client_secret
        self._margin = refresh_margin
        self._clock = clock
        self._retry = retry or RetryPolicy(attempts=4, max_elapsed=60.0, clock=clock)
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"TokenManager(url={self._url!r}, client_id={self._client_id!r})"

    async def token(self) -> str:
        """A token valid now (fetching or refreshing it if needed)."""
        current = self._token
        if current is not None and self._clock() < current.refresh_at:
            return current.value
        async with self._lock:
            current = self._token
            if current is not None and self._clock() < current.refresh_at:
                return current.value  # another caller refreshed while we waited
            return await self._fetch()

    async def refresh_after_401(self, rejected: str) -> str:
        """Replace `rejected` (the token a 401 came back for) unless that already happened."""
        async with self._lock:
            current = self._token
            if current is not None and current.value != rejected:
                return current.value
            self._token = None
            return await self._fetch()

    def invalidate(self) -> None:
        """Forget the current token (the next call fetches a new one)."""
        self._token = None

    async def _fetch(self) -> str:
        budget = self._retry.start()
        while True:
            try:
                token = await self._request_token()
            except RetryableError as exc:
                if not await budget.wait(exc.retry_after):
                    raise
                logger.info("retrying Genesys token request after %s", type(exc).__name__)
                continue
            self._token = token
            self.refreshes += 1
            return token.value

    async def _request_token(self) -> _Token:
        sent_at = self._clock()
        try:
            response = await self._http.post(
                self._url,
                data={"grant_type": "client_credentials"},
                auth=httpx.BasicAuth(self._client_id, self._secret.reveal()),
            )
        except httpx.TransportError as exc:
            # The exception's text may quote the request; keep only its type.
            raise TransportError(
                f"token request to {self._url} failed: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = _seconds(response.headers.get("retry-after"))
            cls: type[RetryableError] = RateLimitedError if status == 429 else ServerError
            raise cls(
                f"token request to {self._url}: HTTP {status}",
                status=status,
                retry_after=retry_after,
            )
        if status != 200:
            code = _error_code(response)
            raise AuthError(
                f"Genesys rejected the client credentials at {self._url}: HTTP {status}"
                + (f" ({code})" if code else "")
                + "; check the client id and secret and the region",
                status=status,
                code=code,
            )
        try:
            body = response.json()
            value = str(body["access_token"])
            lifetime = float(body.get("expires_in", 0)) or 86400.0
        except (ValueError, KeyError, TypeError):
            raise AuthError(f"token response from {self._url} is not a token") from None
        refresh_in = max(lifetime - self._margin, lifetime / 2)
        logger.info(
            "Genesys token obtained; valid %.0fs, refreshed after %.0fs", lifetime, refresh_in
        )
        return _Token(value=value, refresh_at=sent_at + refresh_in, expires_at=sent_at + lifetime)


def _seconds(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    code = body.get("error") or body.get("code")
    return str(code)[:100] if code else None
