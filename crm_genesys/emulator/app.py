"""The emulator as a Starlette app: `create_app(config)`.

Every `/api/v2/...` request passes a gate before routing (`EmulatorApp.__call__`): body read and
413 check, bearer-token check (401), the per-token budget (429 + `inin-ratelimit-*` headers),
then the fault decision (latency, injected status, dropped connection). `/oauth/token` is never
faulted or rate limited; `/__emulator/...` is the unauthenticated admin surface for tests.

Dropped connections: served by uvicorn, the socket is closed without a response; in-process
(`httpx.ASGITransport`), `httpx.RemoteProtocolError` is raised from the app, which the transport
hands to the client as the same transport error a real drop causes (keep the transport's default
`raise_app_exceptions=True`).
"""

from __future__ import annotations

import base64
import binascii
import json
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

from crm_genesys.emulator.config import EmulatorConfig, FaultConfig
from crm_genesys.emulator.emulator import API, Emulator, RequestLogEntry
from crm_genesys.emulator.errors import ApiError, FieldProblem, error_body
from crm_genesys.emulator.faults import decide
from crm_genesys.emulator.ratelimit import RateDecision

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


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Compact JSON, always `application/json` (the SDK ignores bodies of other types)."""
    payload = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(payload, status_code=status, headers=headers, media_type="application/json")


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.status, error.headers or None)


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


def _emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


async def _json(request: Request) -> Any:
    raw = await request.body()
    ctype = request.headers.get("content-type", "")
    if raw and "json" not in ctype.lower():
        raise ApiError(415, "unsupported.media.type", "Content-Type must be application/json.")
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise ApiError(
            400,
            "bad.request",
            "The request body is not valid JSON.",
            [FieldProblem("body", "JSON")],
        ) from None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400,
            "invalid.value",
            f"{name} must be between {low} and {high}",
            [FieldProblem(name, f"between {low} and {high}")],
        )
    return value


# --- handlers --------------------------------------------------------------------------------


async def oauth_token(request: Request) -> Response:
    emulator = _emulator(request)
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
    emulator = _emulator(request)
    ctx = _ctx(request)
    assert ctx.token is not None
    if request.method == "DELETE":
        auth = request.headers.get("authorization", "")
        emulator.revoke_token(auth[7:].strip())
        return Response(status_code=204)
    return json_response(emulator.token_info(ctx.token[0]))


async def sources(request: Request) -> Response:
    emulator = _emulator(request)
    if request.method == "POST":
        return json_response(emulator.create_source(await _json(request)))
    active_text = request.query_params.get("active")
    active = None if active_text is None else active_text.lower() == "true"
    limit = _int_param(request, "limit", 100, 10, 200)
    return json_response(
        emulator.list_sources(
            request.query_params.get("name"), active, limit, request.query_params.get("cursor")
        )
    )


async def source(request: Request) -> Response:
    emulator = _emulator(request)
    source_id = request.path_params["source_id"]
    if request.method == "GET":
        return json_response(emulator.get_source(source_id))
    if request.method == "PUT":
        return json_response(emulator.update_source(source_id, await _json(request)))
    emulator.delete_source(source_id)
    return json_response({})


async def contacts(request: Request) -> Response:
    return json_response(_emulator(request).create_contact(await _json(request)))


async def contact(request: Request) -> Response:
    emulator = _emulator(request)
    contact_id = request.path_params["contact_id"]
    if request.method == "GET":
        return json_response(emulator.get_contact(contact_id))
    if request.method == "PUT":
        return json_response(emulator.update_contact(contact_id, await _json(request)))
    if request.method == "PATCH":
        return json_response(emulator.patch_contact(contact_id, await _json(request)))
    emulator.delete_contact(contact_id)
    return json_response({})


def _bulk(op: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        emulator = _emulator(request)
        ctx = _ctx(request)
        body = await _json(request)
        if isinstance(body, dict) and isinstance(body.get("entities"), list):
            ctx.entities = len(body["entities"])
        rng = ctx.decision.rng if ctx.decision is not None else decide(FaultConfig(), 0).rng
        if op == "fetch":
            response = emulator.bulk_fetch(body, rng)
        else:
            response, ctx.item_failures = getattr(emulator, f"bulk_{op}")(body, rng)
        ctx.error_count = response["errorCount"]
        return json_response(response)

    return handler


async def identifier_lookup(request: Request) -> Response:
    return json_response(_emulator(request).identifier_lookup(await _json(request)))


async def reverse_whitepages(request: Request) -> Response:
    return json_response(
        _emulator(request).reverse_whitepages(request.query_params.get("lookupVal"))
    )


async def scan(request: Request) -> Response:
    limit = _int_param(request, "limit", 100, 10, 200)
    return json_response(_emulator(request).scan(limit, request.query_params.get("cursor")))


async def schemas(request: Request) -> Response:
    emulator = _emulator(request)
    if request.method == "POST":
        return json_response(emulator.create_schema(await _json(request)))
    return json_response(emulator.list_schemas())


async def schema(request: Request) -> Response:
    emulator = _emulator(request)
    schema_id = request.path_params["schema_id"]
    if request.method == "PUT":
        return json_response(emulator.update_schema(schema_id, await _json(request)))
    return json_response(emulator.get_schema(schema_id))


async def schema_versions(request: Request) -> Response:
    return json_response(_emulator(request).schema_versions(request.path_params["schema_id"]))


async def schema_version(request: Request) -> Response:
    try:
        version = int(request.path_params["version"])
    except ValueError:
        raise ApiError(404, "not.found", "No such schema version.") from None
    return json_response(_emulator(request).get_schema(request.path_params["schema_id"], version))


# --- admin -----------------------------------------------------------------------------------


async def admin_requests(request: Request) -> Response:
    since = int(request.query_params.get("since", "0"))
    return json_response([e.to_dict() for e in _emulator(request).requests(since)])


async def admin_stats(request: Request) -> Response:
    return json_response(_emulator(request).stats())


async def admin_contacts(request: Request) -> Response:
    return json_response(_emulator(request).all_contacts())


async def admin_faults(request: Request) -> Response:
    emulator = _emulator(request)
    if request.method == "PUT":
        body = await _json(request)
        try:
            emulator.set_faults(FaultConfig.from_dict(body if isinstance(body, dict) else {}))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "invalid.value", str(exc)) from None
    return json_response(emulator.faults.to_dict())


async def admin_latency(request: Request) -> Response:
    """PUT {"ms": N}: the latency added to every API request."""
    emulator = _emulator(request)
    if request.method == "PUT":
        body = await _json(request)
        try:
            ms = float(body["ms"])
            emulator.set_faults(
                FaultConfig.from_dict({**emulator.faults.to_dict(), "latency_ms": ms})
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "invalid.value", f"need {{'ms': number >= 0}}: {exc}") from None
    return json_response({"ms": emulator.faults.latency_ms})


async def admin_settings(request: Request) -> Response:
    emulator = _emulator(request)
    if request.method == "PUT":
        body = await _json(request)
        try:
            emulator.update_settings(body if isinstance(body, dict) else {})
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "invalid.value", str(exc)) from None
    return json_response(emulator.settings())


async def admin_reset(request: Request) -> Response:
    """POST {"data": bool, "log": bool} (both default true)."""
    body = await _json(request) or {}
    _emulator(request).reset(data=bool(body.get("data", True)), log=bool(body.get("log", True)))
    return json_response({"reset": True})


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
        elif path == "/oauth/token":
            await self._logged(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

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
        body = await _read_body(receive)
        refusal, rate = self._admit(scope, ctx, entry)
        if refusal is not None:
            await _send_with(refusal, rate, scope, send, entry)
            return
        assert rate is not None
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
        limit = emulator.config.max_request_bytes
        if len(body) > limit:
            too_large = ApiError(
                413,
                "request.entity.too.large",
                f"The request body of {len(body)} bytes exceeds the limit of {limit} bytes.",
            )
            await _send_with(error_response(too_large), rate, scope, send, entry)
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
        rate = emulator.limiter.check(token)
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


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer " and text[7:].strip():
                return text[7:].strip()
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Dropped
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


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
    routes = [
        Route("/oauth/token", oauth_token, methods=["POST"]),
        Route("/api/v2/tokens/me", tokens_me, methods=["GET", "DELETE"]),
        Route(f"{API}/externalsources", sources, methods=["GET", "POST"]),
        Route(f"{API}/externalsources/{{source_id}}", source, methods=["GET", "PUT", "DELETE"]),
        Route(f"{API}/contacts", contacts, methods=["POST"]),
        Route(f"{API}/contacts/schemas", schemas, methods=["GET", "POST"]),
        Route(f"{API}/contacts/schemas/{{schema_id}}", schema, methods=["GET", "PUT"]),
        Route(f"{API}/contacts/schemas/{{schema_id}}/versions", schema_versions, methods=["GET"]),
        Route(
            f"{API}/contacts/schemas/{{schema_id}}/versions/{{version}}",
            schema_version,
            methods=["GET"],
        ),
        Route(f"{API}/contacts/{{contact_id}}", contact, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route(f"{API}/bulk/contacts", _bulk("fetch"), methods=["POST"]),
        Route(f"{API}/bulk/contacts/add", _bulk("add"), methods=["POST"]),
        Route(f"{API}/bulk/contacts/update", _bulk("update"), methods=["POST"]),
        Route(f"{API}/bulk/contacts/remove", _bulk("remove"), methods=["POST"]),
        Route(f"{API}/identifierlookup/contacts", identifier_lookup, methods=["POST"]),
        Route(f"{API}/reversewhitepageslookup", reverse_whitepages, methods=["GET"]),
        Route(f"{API}/scan/contacts", scan, methods=["GET"]),
        Route("/__emulator/requests", admin_requests, methods=["GET"]),
        Route("/__emulator/stats", admin_stats, methods=["GET"]),
        Route("/__emulator/contacts", admin_contacts, methods=["GET"]),
        Route("/__emulator/faults", admin_faults, methods=["GET", "PUT"]),
        Route("/__emulator/latency", admin_latency, methods=["GET", "PUT"]),
        Route("/__emulator/settings", admin_settings, methods=["GET", "PUT"]),
        Route("/__emulator/reset", admin_reset, methods=["POST"]),
    ]
    app = EmulatorApp(
        routes=routes,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.state.emulator = Emulator(config)
    return app
