"""The emulator as a Starlette app: `create_app(config)`.

Every request's body is limited before it is buffered: a `Content-Length` over
`max_request_bytes` is answered 413 without reading the body, and a body without one (chunked)
is counted while it streams and refused as soon as it goes over.

Every `/api/v2/...` request passes a gate before routing (`EmulatorApp.__call__`): bearer-token
check (401), the budget (429 + `inin-ratelimit-*` headers; per token or per OAuth client, see
`RealismConfig.rate_limit_scope`), the body limit (413), then the fault decision (latency,
injected status, dropped connection). `/oauth/token` is never faulted or rate limited;
`/__emulator/...` is the admin surface (`admin.py`), which needs the admin token.

Dropped connections: served by uvicorn, the socket is closed without a response; in-process
(`httpx.ASGITransport`), `httpx.RemoteProtocolError` is raised from the app, which the transport
hands to the client as the same transport error a real drop causes (keep the transport's default
`raise_app_exceptions=True`).
"""

from __future__ import annotations

import base64
import binascii
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crm_genesys.emulator import admin
from crm_genesys.emulator.config import EmulatorConfig, FaultConfig
from crm_genesys.emulator.emulator import API, Emulator, RequestLogEntry
from crm_genesys.emulator.errors import ApiError, error_body
from crm_genesys.emulator.faults import decide
from crm_genesys.emulator.ratelimit import RateDecision
from crm_genesys.emulator.web import (
    bool_param,
    emulator_of,
    error_response,
    int_param,
    json_response,
    list_param,
    read_json,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_INJECTED_MESSAGES = {
    "429": ("too.many.requests", "Rate limit exceeded the maximum. Retry the request later."),
    "500": ("internal.server.error", "The server encountered an unexpected condition."),
    "502": ("bad.gateway", "The server received an invalid response from an upstream server."),
    "503": ("service.unavailable", "The service is currently unavailable."),
    "504": ("gateway.timeout", "The server did not receive a timely response."),
}
# `expand` values of GET /contacts/{id} (SDK `get_externalcontacts_contact`).
_CONTACT_EXPANDS = (
    "externalOrganization",
    "externalDataSources",
    "identifiers",
    "externalSources",
    "division",
)


class _Ctx:
    """Per-request facts the handlers pass back to the gate for the request log."""

    __slots__ = ("decision", "entities", "error_count", "item_failures", "token")

    def __init__(self) -> None:
        self.decision: Any = None
        self.entities: int | None = None
        self.item_failures = 0
        self.error_count = 0
        self.token: tuple[str, float] | None = None


def _ctx(request: Request) -> _Ctx:
    ctx = request.scope.get("emulator.ctx")
    return ctx if isinstance(ctx, _Ctx) else _Ctx()


# --- handlers --------------------------------------------------------------------------------


async def oauth_token(request: Request) -> Response:
    emulator = emulator_of(request)
    form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    grant = (form.get("grant_type") or [""])[0]
    client_id, client_secret = form.get("client_id", [""])[0], form.get("client_secret", [""])[0]
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
            client_id, _, client_secret = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id, client_secret = "", ""
    if grant != "client_credentials":
        raise ApiError(400, "bad.request", "grant_type must be client_credentials.")
    return json_response(emulator.issue_token(client_id, client_secret))


async def tokens_me(request: Request) -> Response:
    emulator = emulator_of(request)
    ctx = _ctx(request)
    assert ctx.token is not None
    if request.method == "DELETE":
        auth = request.headers.get("authorization", "")
        emulator.revoke_token(auth[7:].strip())
        return Response(status_code=204)
    return json_response(emulator.token_info(ctx.token[0]))


async def organization_me(request: Request) -> Response:
    return json_response(emulator_of(request).organization())


async def divisions(request: Request) -> Response:
    page_size = int_param(request, "pageSize", 25, 1, 1000)
    page_number = int_param(request, "pageNumber", 1, 1, 1_000_000)
    return json_response(emulator_of(request).divisions(page_size, page_number))


async def sources(request: Request) -> Response:
    emulator = emulator_of(request)
    if request.method == "POST":
        return json_response(emulator.create_source(await read_json(request)))
    active = bool_param(request, "active")
    limit = int_param(request, "limit", 100, 10, 200)
    return json_response(
        emulator.list_sources(
            request.query_params.get("name"), active, limit, request.query_params.get("cursor")
        )
    )


async def source(request: Request) -> Response:
    emulator = emulator_of(request)
    source_id = request.path_params["source_id"]
    if request.method == "GET":
        return json_response(emulator.get_source(source_id))
    if request.method == "PUT":
        return json_response(emulator.update_source(source_id, await read_json(request)))
    emulator.delete_source(source_id)
    return json_response({})


async def contacts(request: Request) -> Response:
    emulator = emulator_of(request)
    if request.method == "POST":
        return json_response(emulator.create_contact(await read_json(request)))
    page_size = int_param(request, "pageSize", 20, 1, 1000)
    page_number = int_param(request, "pageNumber", 1, 1, 1000)
    return json_response(emulator.search(request.query_params.get("q"), page_size, page_number))


async def contact(request: Request) -> Response:
    emulator = emulator_of(request)
    contact_id = request.path_params["contact_id"]
    if request.method == "GET":
        list_param(request, "expand", _CONTACT_EXPANDS)
        return json_response(emulator.get_contact(contact_id))
    if request.method == "PUT":
        return json_response(emulator.update_contact(contact_id, await read_json(request)))
    if request.method == "PATCH":
        return json_response(emulator.patch_contact(contact_id, await read_json(request)))
    emulator.delete_contact(contact_id)
    return json_response({})


async def contact_unresolved(request: Request) -> Response:
    list_param(request, "expand", _CONTACT_EXPANDS)
    return json_response(emulator_of(request).get_unresolved(request.path_params["contact_id"]))


async def contact_identifiers(request: Request) -> Response:
    emulator = emulator_of(request)
    contact_id = request.path_params["contact_id"]
    if request.method == "GET":
        return json_response(emulator.list_identifiers(contact_id))
    return json_response(emulator.claim_identifier(contact_id, await read_json(request)))


async def contacts_merge(request: Request) -> Response:
    """`POST /contacts/merge` (`MergeContactsRequest`): merge into a new contact."""
    body = await read_json(request)
    ids = body.get("contactIds") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "invalid.value", "contactIds must be a list of contact ids")
    return json_response(emulator_of(request).merge_contacts(ids, None, body.get("valueOverride")))


def _bulk(op: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        emulator = emulator_of(request)
        ctx = _ctx(request)
        body = await read_json(request)
        if isinstance(body, dict) and isinstance(body.get("entities"), list):
            ctx.entities = len(body["entities"])
        rng = ctx.decision.rng if ctx.decision is not None else decide(FaultConfig(), 0).rng
        if op in ("fetch", "unresolved"):
            response = emulator.bulk_fetch(body, rng, unresolved=op == "unresolved")
        else:
            response, ctx.item_failures = getattr(emulator, f"bulk_{op}")(body, rng)
        ctx.error_count = response["errorCount"]
        return json_response(response)

    return handler


async def identifier_lookup(request: Request) -> Response:
    return json_response(emulator_of(request).identifier_lookup(await read_json(request)))


async def reverse_whitepages(request: Request) -> Response:
    return json_response(
        emulator_of(request).reverse_whitepages(request.query_params.get("lookupVal"))
    )


async def scan(request: Request) -> Response:
    limit = int_param(request, "limit", 100, 10, 200)
    return json_response(emulator_of(request).scan(limit, request.query_params.get("cursor")))


async def schemas(request: Request) -> Response:
    emulator = emulator_of(request)
    if request.method == "POST":
        return json_response(emulator.create_schema(await read_json(request)))
    return json_response(emulator.list_schemas())


async def schema_limits(request: Request) -> Response:
    return json_response(emulator_of(request).schema_limits())


async def schema(request: Request) -> Response:
    emulator = emulator_of(request)
    schema_id = request.path_params["schema_id"]
    if request.method == "PUT":
        return json_response(emulator.update_schema(schema_id, await read_json(request)))
    return json_response(emulator.get_schema(schema_id))


async def schema_versions(request: Request) -> Response:
    return json_response(emulator_of(request).schema_versions(request.path_params["schema_id"]))


async def schema_version(request: Request) -> Response:
    try:
        version = int(request.path_params["version"])
    except ValueError:
        raise ApiError(404, "not.found", "No such schema version.") from None
    return json_response(emulator_of(request).get_schema(request.path_params["schema_id"], version))


# --- the app ---------------------------------------------------------------------------------


class _Dropped(Exception):
    """Raised inside the gate to abandon a request without answering."""


class EmulatorApp(Starlette):
    """Starlette with the platform gate in front of `/api/v2`; `state.emulator` is the org."""

    @property
    def emulator(self) -> Emulator:
        emulator: Emulator = self.state.emulator
        return emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/api/v2/"):
            await self._gated(scope, receive, send)
            return
        limit = self.emulator.config.max_request_bytes
        is_admin = path.startswith(admin.PREFIX)
        if is_admin and not admin.authorized(scope["headers"], self.emulator.config.admin_token):
            refused: ApiError | None = admin.refusal()
        else:
            refused = _declared_too_large(scope, limit)
        if refused is not None:
            await error_response(refused)(scope, _replay(b""), send)
        elif path == "/oauth/token":
            await self._logged(scope, _limited(receive, limit), send)
        else:
            await super().__call__(scope, _limited(receive, limit), send)

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        emulator = self.emulator
        seq = emulator.next_request_number()
        started = time.perf_counter()
        status = 0

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await super().__call__(scope, receive, capture)
        emulator.record(
            RequestLogEntry(
                seq,
                emulator.clock.time(),
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )
        )

    async def _gated(self, scope: Scope, receive: Receive, send: Send) -> None:
        emulator = self.emulator
        seq = emulator.next_request_number()
        started = time.perf_counter()
        entry = RequestLogEntry(seq, emulator.clock.time(), scope["method"], scope["path"], 0, 0.0)
        ctx = _Ctx()
        dropped = False
        try:
            await self._process(scope, receive, send, entry, ctx)
        except _Dropped:
            dropped = True
            entry.status = 0
        finally:
            _finish(entry, ctx, started)
            emulator.record(entry)
        if dropped:
            _drop_connection(send)

    async def _process(
        self, scope: Scope, receive: Receive, send: Send, entry: RequestLogEntry, ctx: _Ctx
    ) -> None:
        """Gate, then route. Raises `_Dropped` when the connection is to be dropped."""
        emulator = self.emulator
        refusal, rate = self._admit(scope, ctx, entry)
        if refusal is not None:
            await _send_with(refusal, rate, scope, send, entry)
            return
        assert rate is not None
        limit = emulator.config.max_request_bytes
        too_large = _declared_too_large(scope, limit)
        body = b"" if too_large is not None else await _read_body(receive, limit)
        if too_large is not None or body is None:
            error = too_large or _too_large(limit)
            await _send_with(error_response(error), rate, scope, send, entry)
            return
        refuse = emulator.faults.refuse_path
        if refuse and str(scope.get("path", "")).endswith(refuse):
            entry.fault = "refused"
            status = emulator.faults.refuse_status
            code, message = _REFUSALS.get(status, ("bad.request", "The request was refused."))
            refused = ApiError(status, code, message)
            await _send_with(error_response(refused), rate, scope, send, entry)
            return
        ctx.decision = decision = decide(emulator.faults, entry.seq)
        if decision.delay_s > 0:
            if decision.slow:
                entry.slow_ms = round(decision.delay_s * 1000, 3)
            await emulator.clock.sleep(decision.delay_s)
        if decision.kind == "drop":
            entry.fault = "drop"
            raise _Dropped
        if decision.kind in _INJECTED_MESSAGES:
            entry.fault = decision.kind
            code, message = _INJECTED_MESSAGES[decision.kind]
            status = int(decision.kind)
            headers = {}
            if status in (429, 503):
                headers["Retry-After"] = str(emulator.faults.retry_after_s)
            injected = ApiError(status, code, message, headers=headers)
            await _send_with(error_response(injected), rate, scope, send, entry)
            return
        scope["emulator.ctx"] = ctx
        replay = _replay(body)
        if decision.kind == "drop_after_write":
            entry.fault = "drop_after_write"

            async def swallow(message: Message) -> None:
                if message["type"] == "http.response.start":
                    entry.status = message["status"]

            await super().__call__(scope, replay, swallow)
            raise _Dropped
        await super().__call__(scope, replay, _with_headers(send, rate.headers(), entry))

    def _admit(
        self, scope: Scope, ctx: _Ctx, entry: RequestLogEntry
    ) -> tuple[Response | None, RateDecision | None]:
        """Authentication and the rate budget: (refusal or None, rate decision)."""
        emulator = self.emulator
        token = _bearer(scope)
        if token is None:
            return error_response(
                ApiError(
                    401, "authentication.required", "No authentication bearer token specified."
                )
            ), None
        try:
            ctx.token = emulator.authenticate(token)
        except ApiError as refused:
            if refused.headers.pop("x-emulator-fault", None):
                entry.fault = "token_revoked"
            return error_response(refused), None
        rate = emulator.limiter.check(emulator.rate_key(token, ctx.token[0]))
        if not rate.allowed:
            entry.rate_limited = True
            err = ApiError(
                429,
                "too.many.requests",
                f"Rate limit exceeded the maximum. Retry the request in [{rate.reset_s}] seconds",
                headers={"Retry-After": str(rate.reset_s)},
            )
            return error_response(err), rate
        return None, rate


# Whole-request refusals (`FaultConfig.refuse_path`): the platform's codes for each status.
_REFUSALS: dict[int, tuple[str, str]] = {
    400: ("bad.request", "The request could not be understood by the server."),
    403: ("missing.permissions", "Unable to perform the requested action: missing permissions."),
    404: ("not.found", "The requested resource was not found."),
    409: ("conflict", "The request conflicts with the current state of the resource."),
    422: ("invalid.value", "The request was well-formed but contained invalid values."),
}


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer " and text[7:].strip():
                return text[7:].strip()
    return None


def _too_large(limit: int, size: int | None = None) -> ApiError:
    told = f"of {size} bytes " if size is not None else ""
    return ApiError(
        413,
        "request.entity.too.large",
        f"The request body {told}exceeds the limit of {limit} bytes.",
    )


def _declared_too_large(scope: Scope, limit: int) -> ApiError | None:
    """The refusal of a request whose `Content-Length` says its body is over `limit` (or is
    not a length at all), decided before a byte of the body is read."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                size = int(value)
            except ValueError:
                size = -1
            if size < 0:
                return ApiError(400, "bad.request", "Content-Length is not a byte count.")
            if size > limit:
                return _too_large(limit, size)
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it goes over `limit` (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Dropped
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive` that raises a 413 `ApiError` once the body read so far is over `limit`."""
    size = 0

    async def limited() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise _too_large(limit)
        return message

    return limited


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _with_headers(send: Send, headers: dict[str, str], entry: RequestLogEntry) -> Send:
    extra = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            entry.status = message["status"]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _send_with(
    response: Response, rate: RateDecision | None, scope: Scope, send: Send, entry: RequestLogEntry
) -> None:
    headers = rate.headers() if rate is not None else {}
    await response(scope, _replay(b""), _with_headers(send, headers, entry))


def _finish(entry: RequestLogEntry, ctx: _Ctx, started: float) -> None:
    entry.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    entry.entities = ctx.entities
    entry.item_failures = ctx.item_failures
    entry.error_count = ctx.error_count


def _drop_connection(send: Send) -> None:
    """Close the client's connection without a response.

    Under uvicorn, `send` is bound to the protocol's request cycle, which owns the socket's
    transport: closing it is what a crashed load balancer looks like to the client. Anywhere
    else (in-process ASGI), raise the transport error a client would see.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(transport, "close"):
        transport.close()
        # Tell uvicorn not to answer with a 500 of its own for a response never started.
        if cycle is not None and hasattr(cycle, "disconnected"):
            cycle.disconnected = True
        return
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not.found", 405: "method.not.allowed"}.get(exc.status_code, "bad.request")
    return json_response(error_body(exc.status_code, code, str(exc.detail)), exc.status_code)


def create_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    """A Starlette app serving one emulated org; `app.state.emulator` is its `Emulator`."""
    config = config or EmulatorConfig()
    contact_path = f"{API}/contacts/{{contact_id}}"
    routes = [
        Route("/oauth/token", oauth_token, methods=["POST"]),
        Route("/api/v2/tokens/me", tokens_me, methods=["GET", "DELETE"]),
        Route("/api/v2/organizations/me", organization_me, methods=["GET"]),
        Route("/api/v2/authorization/divisions", divisions, methods=["GET"]),
        Route(f"{API}/externalsources", sources, methods=["GET", "POST"]),
        Route(f"{API}/externalsources/{{source_id}}", source, methods=["GET", "PUT", "DELETE"]),
        Route(f"{API}/contacts", contacts, methods=["GET", "POST"]),
        Route(f"{API}/contacts/merge", contacts_merge, methods=["POST"]),
        Route(f"{API}/contacts/schemas", schemas, methods=["GET", "POST"]),
        Route(f"{API}/contacts/schemas/limits", schema_limits, methods=["GET"]),
        Route(f"{API}/contacts/schemas/{{schema_id}}", schema, methods=["GET", "PUT"]),
        Route(f"{API}/contacts/schemas/{{schema_id}}/versions", schema_versions, methods=["GET"]),
        Route(
            f"{API}/contacts/schemas/{{schema_id}}/versions/{{version}}",
            schema_version,
            methods=["GET"],
        ),
        Route(contact_path, contact, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route(f"{contact_path}/unresolved", contact_unresolved, methods=["GET"]),
        Route(f"{contact_path}/identifiers", contact_identifiers, methods=["GET", "PATCH"]),
        Route(f"{API}/bulk/contacts", _bulk("fetch"), methods=["POST"]),
        Route(f"{API}/bulk/contacts/unresolved", _bulk("unresolved"), methods=["POST"]),
        Route(f"{API}/bulk/contacts/add", _bulk("add"), methods=["POST"]),
        Route(f"{API}/bulk/contacts/update", _bulk("update"), methods=["POST"]),
        Route(f"{API}/bulk/contacts/remove", _bulk("remove"), methods=["POST"]),
        Route(f"{API}/identifierlookup/contacts", identifier_lookup, methods=["POST"]),
        Route(f"{API}/reversewhitepageslookup", reverse_whitepages, methods=["GET"]),
        Route(f"{API}/scan/contacts", scan, methods=["GET"]),
        *admin.routes(),
    ]
    app = EmulatorApp(
        routes=routes,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.state.emulator = Emulator(config)
    return app
