"""`GenesysClient`: the async External Contacts client the sink, the CLI and Dagster use.

Every request goes through the same path: a valid token (`auth.TokenManager`), a pacer slot
(`pacing.Pacer`), the request, then classification:

* 2xx: returned.
* 401: the token is refreshed once and the request resent (a 401 was not acted on); a second
  401 raises `AuthError`.
* 429, 503, connect failure: never acted on, so resent after backoff (`Retry-After` honoured).
* 500/502/504, read timeout, dropped connection: the outcome is unknown. Idempotent requests are
  resent; a create (`add`) is not: it raises, or comes back, with `outcome_unknown`.
* 403 / 404 / 413 / other 4xx: `PermissionDeniedError` / `NotFoundError` /
  `RequestTooLargeError` / `PermanentError`.

Bulk calls cut the entities into batches (count and byte size), send batches concurrently
(bounded by the pacer), split a batch in half on 413 (and on a batch-level 400/422 to isolate the
bad entity), and return one `BulkItemResult` per entity in request order. A batch that cannot be
sent within the retry bounds comes back as retryable item failures, not as an exception. A batch
the platform refuses as a whole (403; a 400/422 that splitting narrowed to one entity; 404, 409
or any other 4xx) raises `PermissionDeniedError` or `RequestRejectedError`, carrying the
platform's status, code and message. Per-item rejections inside an accepted request, and a
single entity too large on its own (413), are item results.

The transport is injectable: `GenesysClient(settings, transport=httpx.ASGITransport(app=app))`
runs against the emulator in-process with the same code as production.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from crm_genesys.genesys.auth import TokenManager
from crm_genesys.genesys.bulk import (
    batch_failure,
    encode_body,
    entities_body,
    match_bulk_results,
    plan_batches,
)
from crm_genesys.genesys.errors import (
    AuthError,
    GenesysError,
    NotFoundError,
    PermanentError,
    PermissionDeniedError,
    RateLimitedError,
    RequestRejectedError,
    RequestTooLargeError,
    RetryableError,
    ServerError,
    TransportError,
)
from crm_genesys.genesys.metrics import ClientMetrics
from crm_genesys.genesys.pacing import Pacer
from crm_genesys.genesys.retry import RetryPolicy
from crm_genesys.genesys.settings import GenesysSettings, require_tls
from crm_genesys.genesys.types import BulkItemResult, BulkOp, Contact

logger = logging.getLogger("crm_genesys.genesys")

API = "/api/v2/externalcontacts"
USER_AGENT = "crm-genesys/0.1 (+httpx)"

# Connect-phase failures: the request never reached the platform, so resending is always safe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# 5xx answers after which the platform may have acted on the request.
_UNKNOWN_5XX = frozenset({500, 502, 504})
# Batch-level answers that one bad entity can cause: split the batch to isolate it.
_SPLIT_STATUSES = frozenset({400, 413, 422})


class GenesysClient:
    """Async client for Genesys Cloud External Contacts; implements `types.ContactsApi`.

    Use as `async with GenesysClient(settings) as client:`. `clock`, `sleep` and `rng` are
    injectable so that tests run pacing and backoff in virtual time. `metrics` counts what the
    client did (see `metrics.ClientMetrics.as_metadata`).
    """

    def __init__(
        self,
        settings: GenesysSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        # In-process transports (the embedded emulator, tests) never put a byte on a network.
        if not isinstance(transport, httpx.ASGITransport | httpx.MockTransport):
            require_tls(settings.api_base_url, "the Genesys API URL")
            require_tls(settings.login_base_url, "the Genesys login URL")
        self.settings = settings
        self._http = httpx.AsyncClient(
            base_url=settings.api_base_url,
            transport=transport,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=settings.write_timeout,
                pool=settings.connect_timeout,
            ),
            limits=httpx.Limits(
                max_connections=settings.max_in_flight + 2,
                max_keepalive_connections=settings.max_in_flight + 2,
            ),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )
        self._retry = RetryPolicy(
            attempts=settings.retry_attempts,
            max_elapsed=settings.retry_max_elapsed,
            initial_delay=settings.retry_initial_delay,
            max_delay=settings.retry_max_delay,
            clock=clock,
            sleep=sleep,
            rng=rng or random.Random(),
        )
        self._clock = clock
        self.pacer = Pacer(
            settings.rate_limit_per_minute,
            share=settings.rate_share,
            max_in_flight=settings.max_in_flight,
            clock=clock,
            sleep=sleep,
        )
        self.tokens = TokenManager(
            self._http,
            login_base_url=settings.login_base_url,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            refresh_margin=settings.token_refresh_margin,
            clock=clock,
            retry=RetryPolicy(
                attempts=4,
                max_elapsed=60.0,
                initial_delay=settings.retry_initial_delay,
                max_delay=settings.retry_max_delay,
                clock=clock,
                sleep=sleep,
                rng=self._retry.rng,
            ),
        )
        self.metrics = ClientMetrics(settings.rate_limit_per_minute, clock=clock)
        self._source_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"GenesysClient(api={self.settings.api_base_url!r})"

    @property
    def lookup_lag_seconds(self) -> float:
        """How long after a write identifier lookups and scans can be trusted to show it."""
        return self.settings.lookup_lag_seconds

    async def __aenter__(self) -> GenesysClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---------------------------------------------------------------- the request path

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        content: bytes | None = None,
        params: Mapping[str, str | int] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one API request with token, pacing and retries; return the 2xx response.

        The body is `json` (encoded by `bulk.encode_body`), or `content` already encoded.

        `idempotent=False` (creates) forbids resending once the request may have been acted
        on: such a failure raises a `RetryableError` with `outcome_unknown=True` at once.
        Raises the `errors` hierarchy; never returns a non-2xx response.
        """
        budget = self._retry.start()
        refreshed = False
        if json is not None:
            content = encode_body(json)
        while True:
            token = await self.tokens.token()
            try:
                response = await self._attempt(method, path, content, params, token)
            except TransportError as exc:
                error: RetryableError = exc
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                if status == 401 and not refreshed:
                    refreshed = True
                    logger.info("Genesys answered 401 to %s %s; refreshing the token", method, path)
                    await self.tokens.refresh_after_401(token)
                    self.metrics.token_refreshes = self.tokens.refreshes
                    continue
                error = _error_for(method, path, response)  # raises if not retryable
            if error.outcome_unknown and not idempotent:
                self.metrics.outcome_unknown += 1
                logger.warning("%s %s: outcome unknown (%s); not resending", method, path, error)
                raise error
            if not await budget.wait(error.retry_after):
                logger.warning(
                    "%s %s: giving up after %d attempts: %s",
                    method,
                    path,
                    budget.attempts_made,
                    error,
                )
                raise error
            self.metrics.retries += 1
            logger.info("%s %s: retry %d after %s", method, path, budget.retries, error)

    async def _attempt(
        self,
        method: str,
        path: str,
        content: bytes | None,
        params: Mapping[str, str | int] | None,
        token: str,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        async with self.pacer.slot() as permit:
            started = self._clock()
            try:
                response = await self._http.request(
                    method, path, content=content, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                self.metrics.record_request(self._clock() - started, None)
                # Only the exception type: httpx messages may quote the request.
                raise TransportError(
                    f"{method} {path}: {type(exc).__name__}",
                    outcome_unknown=not isinstance(exc, _NOT_SENT),
                ) from None
            self.metrics.record_request(self._clock() - started, response.status_code)
            self.pacer.on_response(permit, response.status_code, response.headers)
        logger.debug("%s %s -> %d", method, path, response.status_code)
        return response

    # ---------------------------------------------------------------- external sources

    async def ensure_external_source(self, name: str, uri_template: str | None = None) -> str:
        """The id of the External Source named exactly `name`, created (active) on first use.

        A create whose outcome is unknown, or that loses a race with another creator, is
        resolved by listing again rather than by creating twice.
        """
        if name in self._source_ids:
            return self._source_ids[name]
        source_id = await self.find_external_source(name)
        if source_id is None:
            body: dict[str, Any] = {"name": name, "active": True}
            if uri_template:
                body["linkConfiguration"] = {"uriTemplate": uri_template}
            try:
                response = await self.request(
                    "POST", f"{API}/externalsources", json=body, idempotent=False
                )
                source_id = str(response.json()["id"])
                logger.info("created Genesys External Source %r (%s)", name, source_id)
            except (RetryableError, PermanentError) as exc:
                if isinstance(exc, PermissionDeniedError):
                    raise
                source_id = await self.find_external_source(name)
                if source_id is None:
                    raise
        self._source_ids[name] = source_id
        return source_id

    async def find_external_source(self, name: str) -> str | None:
        """The id of the External Source named exactly `name`, or None. The platform filters by
        prefix, so every page of the prefix listing is read and compared exactly."""
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"name": name, "limit": 200}
            if cursor:
                params["cursor"] = cursor
            body = (await self.request("GET", f"{API}/externalsources", params=params)).json()
            for source in body.get("entities") or []:
                if source.get("name") == name:
                    return str(source["id"])
            cursor = _next_cursor(body)
            if not cursor or not body.get("entities"):
                return None

    # ---------------------------------------------------------------- bulk operations

    async def bulk_add(self, entities: Sequence[Contact]) -> list[BulkItemResult]:
        """`POST .../bulk/contacts/add`; results in request order, matched by ExternalId.

        Never resent once it may have been acted on: those items come back with
        `outcome_unknown=True` for the caller to resolve by `lookup_by_external_id`.
        """
        return await self._bulk("add", list(entities))

    async def bulk_update(self, entities: Sequence[Contact]) -> list[BulkItemResult]:
        """`POST .../bulk/contacts/update` (entities carry `id`); a vanished contact is a
        failure with status 404 (the sink turns it into a create)."""
        return await self._bulk("update", list(entities))

    async def bulk_remove(self, contact_ids: Sequence[str]) -> list[BulkItemResult]:
        """`POST .../bulk/contacts/remove`; a 404 item is a success (already gone)."""
        return await self._bulk("remove", [{"id": cid} for cid in contact_ids])

    async def bulk_fetch(self, contact_ids: Sequence[str]) -> list[BulkItemResult]:
        """`POST .../bulk/contacts` (`BulkIdsRequest` `{entities: [{id}]}`): the contacts as
        Genesys holds them, each as the `entity` of a successful item; a contact that does not
        exist (deleted, or merged into another) is a failed item with status 404. Reads by id
        are immediate (no lookup lag)."""
        return await self._bulk("fetch", [{"id": cid} for cid in contact_ids])

    async def _bulk(self, op: BulkOp, entities: list[Contact]) -> list[BulkItemResult]:
        results: list[BulkItemResult | None] = [None] * len(entities)
        encoded = [encode_body(e) for e in entities]
        batches = plan_batches(
            entities,
            batch_size=self.settings.batch_size,
            max_bytes=self.settings.max_request_bytes,
            sizes=[len(e) for e in encoded],
        )

        async def run(indexes: list[int]) -> None:
            batch_results = await self._bulk_batch(
                op, [entities[i] for i in indexes], [encoded[i] for i in indexes]
            )
            for index, result in zip(indexes, batch_results, strict=True):
                results[index] = result

        try:
            async with asyncio.TaskGroup() as group:
                for indexes in batches:
                    group.create_task(run(indexes))
        except ExceptionGroup as failed:
            # Callers catch AuthError / PermissionDeniedError, not a group: raise the first one
            # (the other batches were cancelled; their creates are resolved by intent lookup).
            raise failed.exceptions[0] from None
        done = [r for r in results if r is not None]
        assert len(done) == len(entities)
        return done

    async def _bulk_batch(
        self, op: BulkOp, entities: list[Contact], encoded: list[bytes]
    ) -> list[BulkItemResult]:
        """One bulk request of `entities` (`encoded`: each one's `encode_body`)."""
        path = f"{API}/bulk/contacts" if op == "fetch" else f"{API}/bulk/contacts/{op}"
        try:
            response = await self.request(
                "POST", path, content=entities_body(encoded), idempotent=op != "add"
            )
        except (AuthError, PermissionDeniedError):
            raise
        except PermanentError as exc:
            if exc.status in _SPLIT_STATUSES and len(entities) > 1:
                self.metrics.batch_splits += 1
                half = len(entities) // 2
                logger.info(
                    "%s: HTTP %s for %d entities; splitting", path, exc.status, len(entities)
                )
                try:
                    # A task group: when one half is refused the other is cancelled, not lost.
                    async with asyncio.TaskGroup() as group:
                        first = group.create_task(
                            self._bulk_batch(op, entities[:half], encoded[:half])
                        )
                        second = group.create_task(
                            self._bulk_batch(op, entities[half:], encoded[half:])
                        )
                except ExceptionGroup as failed:
                    raise failed.exceptions[0] from None
                return first.result() + second.result()
            if isinstance(exc, RequestTooLargeError):
                # One entity over `request.bytes.max`: its own size, not the request's fault.
                return self._count(
                    batch_failure(
                        op,
                        entities,
                        status=exc.status or 413,
                        code=exc.code,
                        message=exc.message,
                        retryable=False,
                        outcome_unknown=False,
                    )
                )
            raise RequestRejectedError.from_error(exc, op) from None
        except RetryableError as exc:
            return self._count(
                batch_failure(
                    op,
                    entities,
                    status=exc.status or 0,
                    code=exc.code or type(exc).__name__,
                    message=exc.message,
                    retryable=True,
                    outcome_unknown=exc.outcome_unknown,
                )
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return self._count(match_bulk_results(op, entities, body))

    def _count(self, results: list[BulkItemResult]) -> list[BulkItemResult]:
        for r in results:
            if r.success and r.op == "fetch":
                self.metrics.contacts_fetched += 1
            elif r.success:
                self.metrics.contacts_written[r.op] += 1
            else:
                self.metrics.item_failures[r.op] += 1
        return results

    # ---------------------------------------------------------------- single contacts

    async def lookup_by_external_id(self, source_id: str, value: str) -> Contact | None:
        """The contact holding ExternalId `value` of source `source_id`, or None (404)."""
        body = {"type": "ExternalId", "value": value, "externalSource": {"id": source_id}}
        try:
            response = await self.request("POST", f"{API}/identifierlookup/contacts", json=body)
        except NotFoundError:
            return None
        result: Contact = response.json()
        return result

    async def get_contact(self, contact_id: str) -> Contact | None:
        """`GET .../contacts/{id}`, or None when it does not exist (404)."""
        try:
            response = await self.request("GET", f"{API}/contacts/{contact_id}")
        except NotFoundError:
            return None
        result: Contact = response.json()
        return result

    async def create_contact(self, contact: Contact) -> Contact:
        """`POST .../contacts` (one contact). Not resent once it may have been acted on."""
        response = await self.request("POST", f"{API}/contacts", json=contact, idempotent=False)
        result: Contact = response.json()
        return result

    async def scan_contacts(self, page_size: int = 200) -> AsyncIterator[Contact]:
        """Every contact of the org, page by page through `GET .../scan/contacts` cursors."""
        cursor: str | None = None
        limit = max(10, min(200, page_size))
        while True:
            params: dict[str, str | int] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            body = (await self.request("GET", f"{API}/scan/contacts", params=params)).json()
            entities = body.get("entities") or []
            for contact in entities:
                yield contact
            cursor = _next_cursor(body)
            if not cursor or not entities:
                return

    # ---------------------------------------------------------------- contact schema

    async def upsert_contact_schema(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the contact schema `body["name"]`, or update it in place.

        An update sends the current `version` (the platform refuses stale versions); on a
        version conflict (409) the schema is read again and the update retried once.
        """
        name = body.get("name")
        if not name:
            raise ValueError("a contact schema needs a name")
        for _ in range(2):
            existing = await self.find_contact_schema(str(name))
            if existing is None:
                response = await self.request(
                    "POST", f"{API}/contacts/schemas", json=dict(body), idempotent=False
                )
                created: dict[str, Any] = response.json()
                return created
            update = {**body, "id": existing["id"], "version": existing.get("version", 1)}
            try:
                response = await self.request(
                    "PUT", f"{API}/contacts/schemas/{existing['id']}", json=update
                )
            except PermanentError as exc:
                if exc.status == 409:
                    continue
                raise
            updated: dict[str, Any] = response.json()
            return updated
        raise PermanentError(f"contact schema {name!r} kept changing under us", status=409)

    async def find_contact_schema(self, name: str) -> dict[str, Any] | None:
        """The contact schema named `name` (with its current `version`), or None."""
        listing = (await self.request("GET", f"{API}/contacts/schemas")).json()
        for schema in listing.get("entities") or []:
            if schema.get("name") == name:
                found: dict[str, Any] = schema
                return found
        return None


def _next_cursor(body: Mapping[str, Any]) -> str | None:
    cursors = body.get("cursors")
    if isinstance(cursors, Mapping) and cursors.get("after"):
        return str(cursors["after"])
    next_uri = body.get("nextUri")
    if isinstance(next_uri, str) and next_uri:
        values = parse_qs(urlsplit(next_uri).query).get("cursor")
        if values:
            return values[0]
    return None


def _error_for(method: str, path: str, response: httpx.Response) -> RetryableError:
    """The error a non-2xx answer stands for: returned when retryable, raised otherwise."""
    status = response.status_code
    code, message, correlation = _error_body(response)
    text = f"{method} {path}: HTTP {status}" + (f" {code}" if code else "")
    if message:
        text += f": {message}"
    kwargs: dict[str, Any] = {"status": status, "code": code, "correlation_id": correlation}
    if status == 429:
        return RateLimitedError(
            text, retry_after=_retry_after(response.headers.get("retry-after")), **kwargs
        )
    if status >= 500:
        return ServerError(
            text,
            outcome_unknown=status in _UNKNOWN_5XX,
            retry_after=_retry_after(response.headers.get("retry-after")),
            **kwargs,
        )
    if status == 401:
        raise AuthError(text + " (after a token refresh)", **kwargs)
    if status == 403:
        raise PermissionDeniedError(text, **kwargs)
    if status == 404:
        raise NotFoundError(text, **kwargs)
    if status == 413:
        raise RequestTooLargeError(text, **kwargs)
    raise PermanentError(text, **kwargs)


def _error_body(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    code = body.get("code")
    message = body.get("message")
    correlation = body.get("contextId") or response.headers.get("inin-correlation-id")
    return (
        str(code)[:100] if code else None,
        str(message)[:300] if message else None,
        str(correlation)[:100] if correlation else None,
    )


def _retry_after(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


__all__ = ["GenesysClient", "GenesysError"]
