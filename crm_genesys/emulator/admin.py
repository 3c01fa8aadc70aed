"""The emulator's own admin surface, `/__emulator/...`, for tests and benchmarks.

Every admin request needs `Authorization: Bearer <admin token>` (`EmulatorConfig.admin_token`,
`--admin-token` / `$CRM_GENESYS_EMULATOR_ADMIN_TOKEN`, demo default `demo-admin-token`); API
tokens do not open it, and the admin token does not open the API. Endpoints:
- `GET requests?since=N`: the request log after sequence number N;
- `GET stats`: counters and the number of live contacts;
- `GET contacts`: every live contact;
- `GET/PUT faults`: the `FaultConfig` (PUT `{"profile": "flaky", "seed": 3, ...}`);
- `GET/PUT latency`: `{"ms": N}` added to every API request;
- `GET/PUT settings`: limits, `realism` (`{"profile": "realistic", ...knobs}`),
  `schema_limits`, `divisions`;
- `GET ratelimit`: the budget, its scope, the background share and per-second usage
  (`ours`, `ours_429`, `theirs`, `theirs_429`);
- `POST merge`: `{"contactIds": [...], "into": id}` merges contacts (without `into`: into a
  new contact), answers the survivor;
- `GET/POST foreign-writer`: POST `{"seed", "edits", "merges", "kinds", "interactions"}` makes
  the org's other users act and answers `{"edits": [...]}`; GET lists every edit since reset;
- `POST reset`: `{"data": bool, "log": bool}` (both default true).
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crm_genesys.emulator.config import FaultConfig
from crm_genesys.emulator.errors import ApiError
from crm_genesys.emulator.web import emulator_of, int_param, json_response, read_json

PREFIX = "/__emulator/"


def authorized(headers: list[tuple[bytes, bytes]], admin_token: str) -> bool:
    """Whether the request carries the admin bearer token."""
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                return secrets.compare_digest(text[7:].strip().encode(), admin_token.encode())
    return False


def refusal() -> ApiError:
    return ApiError(
        401,
        "authentication.required",
        "The emulator's admin endpoints need its admin token (Authorization: Bearer ...).",
    )


async def _object(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid.value", "The body must be a JSON object.")
    return body


async def requests(request: Request) -> Response:
    since = int_param(request, "since", 0, 0, 2**62)
    return json_response([e.to_dict() for e in emulator_of(request).requests(since)])


async def stats(request: Request) -> Response:
    return json_response(emulator_of(request).stats())


async def contacts(request: Request) -> Response:
    return json_response(emulator_of(request).all_contacts())


async def faults(request: Request) -> Response:
    emulator = emulator_of(request)
    if request.method == "PUT":
        body = await _object(request)
        try:
            emulator.set_faults(FaultConfig.from_dict(body))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "invalid.value", str(exc)) from None
    return json_response(emulator.faults.to_dict())


async def latency(request: Request) -> Response:
    """PUT {"ms": N}: the latency added to every API request."""
    emulator = emulator_of(request)
    if request.method == "PUT":
        body = await _object(request)
        try:
            ms = float(body["ms"])
            emulator.set_faults(
                FaultConfig.from_dict({**emulator.faults.to_dict(), "latency_ms": ms})
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "invalid.value", f"need {{'ms': number >= 0}}: {exc}") from None
    return json_response({"ms": emulator.faults.latency_ms})


async def settings(request: Request) -> Response:
    emulator = emulator_of(request)
    if request.method == "PUT":
        body = await _object(request)
        try:
            emulator.update_settings(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "invalid.value", str(exc)) from None
    return json_response(emulator.settings())


async def ratelimit(request: Request) -> Response:
    emulator = emulator_of(request)
    usage = [u.to_dict() for u in emulator.rate_usage()]
    totals = {k: sum(u[k] for u in usage) for k in ("ours", "ours_429", "theirs", "theirs_429")}
    return json_response(
        {
            "limit": emulator.config.rate_limit_per_minute,
            "scope": emulator.realism.rate_limit_scope,
            "background_share": emulator.realism.background_share,
            "totals": totals,
            "per_second": usage,
        }
    )


async def merge(request: Request) -> Response:
    body = await _object(request)
    ids = body.get("contactIds")
    into = body.get("into")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "invalid.value", "contactIds must be a list of contact ids")
    if into is not None and not isinstance(into, str):
        raise ApiError(400, "invalid.value", "into must be a contact id")
    return json_response(emulator_of(request).merge_contacts(ids, into=into))


async def foreign_writer(request: Request) -> Response:
    emulator = emulator_of(request)
    if request.method == "GET":
        return json_response({"edits": [e.to_dict() for e in emulator.foreign_edits()]})
    body = await _object(request)
    unknown = set(body) - {"seed", "edits", "merges", "kinds", "interactions"}
    kinds = body.get("kinds")
    numbers = {k: body.get(k, d) for k, d in (("seed", 0), ("edits", 10), ("merges", 0))}
    numbers["interactions"] = body.get("interactions", 0)
    if unknown or not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers.values()):
        raise ApiError(
            400,
            "invalid.value",
            "need {seed, edits, merges, interactions: integers; kinds: list of names}"
            + (f"; unknown: {sorted(unknown)}" if unknown else ""),
        )
    if kinds is not None and not (
        isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)
    ):
        raise ApiError(400, "invalid.value", "kinds must be a list of edit kinds")
    try:
        done = emulator.run_foreign_writer(
            numbers["seed"],
            edits=numbers["edits"],
            merges=numbers["merges"],
            kinds=kinds,
            interactions=numbers["interactions"],
        )
    except ValueError as exc:
        raise ApiError(400, "invalid.value", str(exc)) from None
    return json_response({"edits": [e.to_dict() for e in done]})


async def reset(request: Request) -> Response:
    """POST {"data": bool, "log": bool} (both default true)."""
    body = await _object(request)
    emulator_of(request).reset(data=bool(body.get("data", True)), log=bool(body.get("log", True)))
    return json_response({"reset": True})


def routes() -> list[Route]:
    return [
        Route(f"{PREFIX}requests", requests, methods=["GET"]),
        Route(f"{PREFIX}stats", stats, methods=["GET"]),
        Route(f"{PREFIX}contacts", contacts, methods=["GET"]),
        Route(f"{PREFIX}faults", faults, methods=["GET", "PUT"]),
        Route(f"{PREFIX}latency", latency, methods=["GET", "PUT"]),
        Route(f"{PREFIX}settings", settings, methods=["GET", "PUT"]),
        Route(f"{PREFIX}ratelimit", ratelimit, methods=["GET"]),
        Route(f"{PREFIX}merge", merge, methods=["POST"]),
        Route(f"{PREFIX}foreign-writer", foreign_writer, methods=["GET", "POST"]),
        Route(f"{PREFIX}reset", reset, methods=["POST"]),
    ]
