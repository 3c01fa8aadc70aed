"""The Genesys client's exceptions: a short hierarchy so that callers catch what they mean.

```
GenesysError
├── ConfigurationError          settings or region cannot be used
├── AuthError                   credentials rejected (token endpoint, or a 401 after a refresh)
├── RetryableError              may succeed later; raised once the retry bounds are spent
│   ├── RateLimitedError        429 too.many.requests
│   ├── ServerError             5xx
│   └── TransportError          the network failed (connect, read, timeout, dropped connection)
└── PermanentError              the platform refused the request; resending will not help
    ├── PermissionDeniedError   403 (missing.permissions)
    ├── NotFoundError           404
    ├── RequestTooLargeError    413 (request.bytes.max)
    └── RequestRejectedError    a bulk request refused as a whole (400/422 for one entity
                                after splitting, 404, 409, ...): the window fails with it
```

`RetryableError.outcome_unknown` says whether the request may have been acted on although no
answer came back (read timeout, dropped connection, 500/502/504): a non-idempotent request
(`bulk/contacts/add`) with an unknown outcome must be resolved by lookup, never resent.

Exception text is built from the method, path, status and the platform's error code/message only:
never from request headers, so no bearer token or client secret can reach a log or a traceback.
"""

from __future__ import annotations


class GenesysError(Exception):
    """Base of every error the Genesys client raises.

    `status` is the HTTP status when there was a response, `code` the platform's error code
    (e.g. `missing.permissions`), `correlation_id` the platform's `contextId` (quote it to support).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.correlation_id = correlation_id

    def __str__(self) -> str:
        parts = [self.message]
        if self.correlation_id:
            parts.append(f"(correlation id {self.correlation_id})")
        return " ".join(parts)


class ConfigurationError(GenesysError):
    """The settings cannot be used (unknown region, missing credentials, bad number)."""


class AuthError(GenesysError):
    """The client credentials were rejected, or a request stayed 401 after a token refresh."""


class RetryableError(GenesysError):
    """A failure that may go away by itself; raised only after the retry bounds are spent.

    `outcome_unknown` is True when the request may have reached the platform and been acted on.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
        outcome_unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, correlation_id=correlation_id)
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """429: the rate budget is spent; `retry_after` is the platform's hint in seconds, if any."""


class ServerError(RetryableError):
    """A 5xx answer. 503 means refused before acting; 500/502/504 leave the outcome unknown."""


class TransportError(RetryableError):
    """No HTTP answer: connection refused or dropped, or a timeout.

    A connect failure never reached the platform (`outcome_unknown` False); a dropped connection
    or a read timeout after the request was sent did (`outcome_unknown` True).
    """


class PermanentError(GenesysError):
    """The platform refused the request (4xx other than 401/429); resending the same request
    will fail the same way."""


class PermissionDeniedError(PermanentError):
    """403: the OAuth client's roles lack a permission (`missing.permissions`)."""


class NotFoundError(PermanentError):
    """404: the addressed resource does not exist."""


class RequestTooLargeError(PermanentError):
    """413: the body exceeded `request.bytes.max`; bulk calls split the batch and retry."""


class RequestRejectedError(PermanentError):
    """The platform refused a whole bulk request (not its items one by one), and splitting the
    batch did not help: a 400/422 for a single entity, or a 404/409 (or any other 4xx but 401,
    403, 413, 429) for the request. Nothing of it was applied. `operation` is the bulk operation
    (`add`, `update`, `remove`, `fetch`); `status`, `code` and the message are the platform's.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
        operation: str = "",
    ) -> None:
        super().__init__(message, status=status, code=code, correlation_id=correlation_id)
        self.operation = operation

    @classmethod
    def from_error(cls, error: PermanentError, operation: str) -> RequestRejectedError:
        """The same refusal, named for the bulk operation it stopped."""
        return cls(
            error.message,
            status=error.status,
            code=error.code,
            correlation_id=error.correlation_id,
            operation=operation,
        )
