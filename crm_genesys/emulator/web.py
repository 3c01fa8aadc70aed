"""Request and response helpers shared by the API handlers (`app.py`) and the admin handlers
(`admin.py`): JSON in and out the way the platform does it, and strict query parameters
(a malformed value is a 400 ErrorBody, never a 500)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from crm_genesys.emulator.emulator import Emulator
from crm_genesys.emulator.errors import ApiError, FieldProblem


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Compact JSON, always `application/json` (the SDK ignores bodies of other types)."""
    payload = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(payload, status_code=status, headers=headers, media_type="application/json")


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.status, error.headers or None)


def emulator_of(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


async def read_json(request: Request) -> Any:
    """The JSON body (None when empty); 415 for another content type, 400 when malformed."""
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


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; 400 naming it otherwise."""
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
            f"{name} must be an integer between {low} and {high}",
            [FieldProblem(name, f"between {low} and {high}")],
        )
    return value


def bool_param(request: Request, name: str) -> bool | None:
    """A `true`/`false` query parameter (None when absent); 400 for anything else."""
    text = request.query_params.get(name)
    if text is None:
        return None
    if text.lower() not in ("true", "false"):
        raise ApiError(
            400,
            "invalid.value",
            f"{name} must be true or false",
            [FieldProblem(name, "true or false")],
        )
    return text.lower() == "true"


def list_param(request: Request, name: str, allowed: tuple[str, ...]) -> list[str]:
    """A repeated or comma-separated query parameter whose values are among `allowed`."""
    values = [v for raw in request.query_params.getlist(name) for v in raw.split(",") if v]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ApiError(
            400,
            "invalid.value",
            f"{name} must be among {', '.join(allowed)}; got {', '.join(unknown)}",
            [FieldProblem(name, f"among {', '.join(allowed)}")],
        )
    return values
