"""Platform errors: the `ErrorBody` the real API answers with, and the exception that carries it.

Request-level errors are `ApiError` (turned into an ErrorBody response by the app). Problems with
one entity of a bulk request are `EntityError` (turned into a per-item `error` object there, and
into an ErrorBody with `details` when the entity was sent alone).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: `field_name` is a path into the request body, e.g. `workPhone.display`."""

    field_name: str
    message: str
    value: str | None = None


class ApiError(Exception):
    """A request the platform refuses as a whole."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        problems: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message, self.problems)


@dataclass
class EntityError(Exception):
    """One entity is invalid, missing or (injected) temporarily unavailable."""

    status: int
    code: str
    message: str
    problems: list[FieldProblem] = field(default_factory=list)
    retryable: bool = False

    def __str__(self) -> str:
        return self.message

    def to_api_error(self) -> ApiError:
        return ApiError(self.status, self.code, self.message, self.problems)

    def bulk_error(self) -> dict[str, Any]:
        """The `error` object of a bulk result (`BulkEntityErrorExternalContact`)."""
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "retryable": self.retryable,
        }
        if self.problems:
            error["details"] = [
                {
                    k: v
                    for k, v in (
                        ("fieldName", p.field_name),
                        ("value", p.value),
                        ("message", p.message),
                    )
                    if v is not None
                }
                for p in self.problems
            ]
        return error


def error_body(
    status: int, code: str, message: str, problems: list[FieldProblem] | None = None
) -> dict[str, Any]:
    """`ErrorBody{message, code, status, messageWithParams, messageParams, contextId, details,
    errors}`; `details` carry `{errorCode, fieldName}` for each invalid field."""
    problems = problems or []
    return {
        "message": message,
        "code": code,
        "status": status,
        "messageWithParams": message,
        "messageParams": {},
        "contextId": str(uuid.uuid4()),
        "details": [{"errorCode": code, "fieldName": p.field_name} for p in problems],
        "errors": [],
    }


def invalid(problems: list[FieldProblem]) -> EntityError:
    """The 400 for a body that fails validation, with a message naming every bad field."""
    names = ", ".join(p.field_name for p in problems)
    first = problems[0].message if problems else "invalid value"
    return EntityError(400, "invalid.value", f"Invalid value for {names}: {first}", problems)
