"""A small in-memory Genesys for `httpx.MockTransport`, with the real response shapes, plus a
virtual-time event loop so that pacing and backoff tests never wait for real.

`FakeGenesys` serves the token endpoint and the External Contacts paths the client uses. Its
knobs (`shuffle`, `rate_limit`, `faults`, `max_bytes`, ...) make it misbehave the way the platform
can; it records every request so tests can assert on what was (not) sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import selectors
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx

T = TypeVar("T")

CLIENT_ID = "test-client"
CLIENT_SECRET = "s3cr3t-Value-never-shown"


class VirtualClockSelector(selectors.DefaultSelector):
    """A selector that, when nothing is ready, advances virtual time instead of blocking."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("virtual-time loop would block forever (deadlock in the test)")
        self.now += max(0.0, timeout)
        return []


def run_virtual(
    coro_factory: Callable[[], Coroutine[Any, Any, T]],
    selector: VirtualClockSelector | None = None,
) -> tuple[T, float]:
    """Run a coroutine on an event loop whose clock is virtual; return (result, virtual secs).

    `loop.time()` (used by asyncio.sleep and timeouts) is the virtual clock, so code given
    `clock=loop.time` and `sleep=asyncio.sleep` runs minutes of pacing in milliseconds.
    """
    selector = selector or VirtualClockSelector()

    def factory() -> asyncio.AbstractEventLoop:
        loop = asyncio.SelectorEventLoop(selector)
        loop.time = lambda: selector.now  # type: ignore[method-assign]
        return loop

    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(coro_factory())
    return result, selector.now


class VirtualEmulatorClock:
    """The emulator's `Clock` protocol on the virtual loop's time (epoch-like offset)."""

    def __init__(self, selector: VirtualClockSelector) -> None:
        self._selector = selector

    def time(self) -> float:
        return 1_700_000_000.0 + self._selector.now

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


Fault = Callable[[httpx.Request, int], "httpx.Response | Exception | None"]


@dataclass
class FakeGenesys:
    """In-memory External Contacts org. `handler` is the MockTransport callback.

    * `token_lifetime`: `expires_in` of issued tokens; `clock` decides expiry (virtual or fake).
    * `shuffle`: bulk results in random order.
    * `rate_limit`: requests per fixed 60 s window (0 = none); over it: 429 + Retry-After.
    * `max_bytes`: bodies above it get 413.
    * `faults`: callables (request, n-th call of that path) → a Response to return instead, an
      exception to raise (after the request was "processed" when `process_first`), or None.
    * `latency`: seconds each API request takes (virtual time).
    """

    clock: Callable[[], float] = lambda: 0.0
    token_lifetime: int = 86400
    shuffle: bool = False
    rate_limit: int = 0
    max_bytes: int = 512_000
    latency: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    process_first: bool = False
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)
    token_requests: int = 0
    path_calls: dict[str, int] = field(default_factory=dict)
    window_start: float = 0.0
    window_count: int = 0
    rate_limited: int = 0
    api_requests: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/oauth/token":
            return self._token(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        self.api_requests += 1
        n = self.path_calls[path] = self.path_calls.get(path, 0) + 1
        for fault in self.faults:
            outcome = fault(request, n)
            if isinstance(outcome, httpx.Response):
                return outcome
            if isinstance(outcome, Exception):
                if self.process_first:
                    self._route(request)
                raise outcome
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        expires = self.tokens.get(token)
        if expires is None or self.clock() >= expires:
            return _error(401, "authentication.required", "token invalid or expired")
        limited = self._count_rate()
        if limited is not None:
            return limited
        if len(request.content) > self.max_bytes:
            return _error(413, "request.bytes.max", "request too large")
        response = self._route(request)
        response.headers.update(self._rate_headers())
        return response

    # ------------------------------------------------------------------ plumbing
    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests += 1
        if request.headers.get("authorization") != basic(CLIENT_ID, CLIENT_SECRET):
            return httpx.Response(401, json={"error": "invalid_client"})
        if parse_qs(request.content.decode()).get("grant_type") != ["client_credentials"]:
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        token = f"tok-{uuid.uuid4().hex}"
        self.tokens[token] = self.clock() + self.token_lifetime
        return httpx.Response(
            200,
            json={"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime},
        )

    def _count_rate(self) -> httpx.Response | None:
        if not self.rate_limit:
            return None
        now = self.clock()
        if now - self.window_start >= 60:
            self.window_start = now - (now - self.window_start) % 60
            self.window_count = 0
        if self.window_count >= self.rate_limit:
            self.rate_limited += 1
            reset = self.window_start + 60 - now
            response = _error(429, "too.many.requests", "rate limit exceeded")
            response.headers.update(self._rate_headers())
            response.headers["Retry-After"] = str(max(1, round(reset)))
            return response
        self.window_count += 1
        return None

    def _rate_headers(self) -> dict[str, str]:
        if not self.rate_limit:
            return {}
        reset = self.window_start + 60 - self.clock()
        return {
            "inin-ratelimit-allowed": str(self.rate_limit),
            "inin-ratelimit-count": str(self.window_count),
            "inin-ratelimit-reset": f"{max(0.0, reset):.3f}",
        }

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v2/externalcontacts")
        body: Any = json.loads(request.content) if request.content else None
        method = request.method
        if path.startswith("/contacts/schemas"):
            return self._schemas(request, path, body)
        if method == "POST" and path.startswith("/bulk/contacts/"):
            return self._bulk(path.rsplit("/", 1)[1], body["entities"])
        if method == "POST" and path == "/bulk/contacts":
            return self._bulk("fetch", body["entities"])
        if method == "POST" and path == "/identifierlookup/contacts":
            for contact in self.contacts.values():
                for ext in contact.get("externalIds", []):
                    if ext["value"] == body["value"] and (
                        ext["externalSource"]["id"] == body["externalSource"]["id"]
                    ):
                        return httpx.Response(200, json=contact)
            return _error(404, "not.found", "no contact with that identifier")
        if method == "GET" and path.startswith("/contacts/") and path.count("/") == 2:
            found = self.contacts.get(path.split("/")[2])
            return httpx.Response(200, json=found) if found else _error(404, "not.found", "")
        if method == "POST" and path == "/contacts":
            contact = {**body, "id": str(uuid.uuid4())}
            self.contacts[contact["id"]] = contact
            return httpx.Response(200, json=contact)
        if method == "GET" and path == "/scan/contacts":
            return self._scan(request)
        if path == "/externalsources":
            return self._sources(request, body)
        return _error(404, "not.found", f"no route {method} {path}")

    def _bulk(self, op: str, entities: list[dict[str, Any]]) -> httpx.Response:
        results: list[dict[str, Any]] = []
        for entity in entities:
            if op == "add":
                if not entity.get("lastName") and not entity.get("firstName"):
                    err = {"code": "invalid.value", "message": "name required", "status": 400,
                           "retryable": False, "entity": entity}  # fmt: skip
                    results.append({"success": False, "status": 400, "error": err})
                    continue
                contact = {**entity, "id": str(uuid.uuid4())}
                self.contacts[contact["id"]] = contact
                results.append({"id": contact["id"], "success": True, "status": 200,
                                "entity": contact})  # fmt: skip
            elif op == "update":
                if entity["id"] not in self.contacts:
                    err = {"code": "not.found", "message": "contact not found", "status": 404,
                           "retryable": False}  # fmt: skip
                    results.append({"id": entity["id"], "success": False, "status": 404,
                                    "error": err})  # fmt: skip
                    continue
                self.contacts[entity["id"]] = dict(entity)
                results.append({"id": entity["id"], "success": True, "status": 200,
                                "entity": entity})  # fmt: skip
            elif op == "fetch":
                found = self.contacts.get(entity["id"])
                if found is None:
                    err = {"code": "not.found", "message": "contact not found", "status": 404}
                    results.append({"id": entity["id"], "success": False, "status": 404,
                                    "error": err})  # fmt: skip
                else:
                    results.append({"id": entity["id"], "success": True, "status": 200,
                                    "entity": found})  # fmt: skip
            else:
                if self.contacts.pop(entity["id"], None) is None:
                    err = {"code": "not.found", "message": "contact not found", "status": 404}
                    results.append({"id": entity["id"], "success": False, "status": 404,
                                    "error": err})  # fmt: skip
                else:
                    results.append({"id": entity["id"], "success": True, "status": 200})
        order = list(range(len(results)))
        if self.shuffle:
            self.rng.shuffle(order)
        shuffled = [results[i] for i in order]
        return httpx.Response(
            200,
            json={
                "results": shuffled,
                "errorCount": sum(1 for r in results if not r["success"]),
                # Positions of failed entities in the request.
                "errorIndexes": [i for i, r in enumerate(results) if not r["success"]],
            },
        )

    def _scan(self, request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params.get("limit", "100"))
        start = int(request.url.params.get("cursor", "0"))
        ids = sorted(self.contacts)
        page = [self.contacts[i] for i in ids[start : start + limit]]
        body: dict[str, Any] = {"entities": page}
        if start + limit < len(ids):
            body["cursors"] = {"after": str(start + limit)}
        return httpx.Response(200, json=body)

    def _sources(self, request: httpx.Request, body: Any) -> httpx.Response:
        if request.method == "GET":
            prefix = request.url.params.get("name", "")
            found = [s for s in self.sources.values() if s["name"].startswith(prefix)]
            return httpx.Response(200, json={"entities": found})
        if any(s["name"] == body["name"] for s in self.sources.values()):
            return _error(400, "duplicate.name", "name in use")
        source = {**body, "id": str(uuid.uuid4())}
        self.sources[source["id"]] = source
        return httpx.Response(200, json=source)

    def _schemas(self, request: httpx.Request, path: str, body: Any) -> httpx.Response:
        if request.method == "GET" and path == "/contacts/schemas":
            return httpx.Response(200, json={"total": len(self.schemas),
                                             "entities": list(self.schemas.values())})  # fmt: skip
        if request.method == "POST":
            schema = {**body, "id": str(uuid.uuid4()), "version": 1}
            self.schemas[schema["id"]] = schema
            return httpx.Response(200, json=schema)
        schema_id = path.rsplit("/", 1)[1]
        current = self.schemas.get(schema_id)
        if current is None:
            return _error(404, "not.found", "")
        if body.get("version") != current["version"]:
            return _error(409, "version.mismatch", "stale version")
        updated = {**body, "version": current["version"] + 1}
        self.schemas[schema_id] = updated
        return httpx.Response(200, json=updated)


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"message": message, "code": code, "status": status, "contextId": "ctx-123"},
    )


def fail_nth(path_suffix: str, calls: set[int], outcome: Callable[[], Any]) -> Fault:
    """A fault: on the listed calls of a path ending in `path_suffix`, return/raise `outcome()`."""

    def fault(request: httpx.Request, n: int) -> httpx.Response | Exception | None:
        if request.url.path.endswith(path_suffix) and n in calls:
            result: httpx.Response | Exception = outcome()
            return result
        return None

    return fault
