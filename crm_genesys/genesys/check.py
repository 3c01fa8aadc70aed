"""`crm-genesys check`: can this configuration sync, and if not, what exactly is missing?

Every probe is a read-only call. The write permissions the sync also needs (contact add/edit/
delete, external source add) cannot be proven without writing, so the report lists them as
"not verified" instead of pretending.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import httpx

from crm_genesys.genesys.client import API, GenesysClient
from crm_genesys.genesys.errors import (
    AuthError,
    GenesysError,
    PermissionDeniedError,
    RetryableError,
    TransportError,
)
from crm_genesys.genesys.settings import GenesysSettings

WRITE_PERMISSIONS = (
    "externalContacts:contact:add",
    "externalContacts:contact:edit",
    "externalContacts:contact:delete",
    "externalContacts:externalSource:add",
    "externalContacts:customFields:add / :edit (only for `crm-genesys schema push`)",
)


@dataclass(frozen=True)
class CheckStep:
    """One probe: `ok` None means "not verified"."""

    name: str
    ok: bool | None
    detail: str


@dataclass
class CheckReport:
    """The outcome of `check_connection`; `ok` when every verified step passed."""

    api_base_url: str
    login_base_url: str
    region: str | None
    steps: list[CheckStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(step.ok is not False for step in self.steps) and any(
            step.ok for step in self.steps
        )

    def render(self) -> str:
        """Plain text for the terminal, one line per step."""
        marks = {True: "ok  ", False: "FAIL", None: "----"}
        where = f"region {self.region}" if self.region else "custom base URL"
        lines = [f"Genesys Cloud at {self.api_base_url} ({where}; login {self.login_base_url})"]
        lines += [f"  [{marks[s.ok]}] {s.name}: {s.detail}" for s in self.steps]
        lines.append("  => ready to sync" if self.ok else "  => NOT ready: fix the FAIL lines")
        return "\n".join(lines)


# (step name, method, path, params, the permission a 403 most likely means)
_PROBES: tuple[tuple[str, str, str, dict[str, str | int], str], ...] = (
    ("list external sources", "GET", f"{API}/externalsources", {"limit": 10},
     "externalContacts:externalSource:view"),
    ("read contacts", "GET", f"{API}/scan/contacts", {"limit": 10},
     "externalContacts:contact:view"),
    ("read contact schemas", "GET", f"{API}/contacts/schemas", {},
     "externalContacts:customFields:view"),
)  # fmt: skip


async def check_connection(
    settings: GenesysSettings, transport: httpx.AsyncBaseTransport | None = None
) -> CheckReport:
    """Verify credentials (a token), the region (the login host answers and accepts them) and
    the read permissions the sync needs; say in plain words what is missing. Never raises for
    a platform answer: every problem becomes a FAIL step."""
    # A check answers in seconds: few, short retries.
    quick = replace(settings, retry_attempts=3, retry_max_elapsed=20.0, retry_initial_delay=0.2)
    report = CheckReport(settings.api_base_url, settings.login_base_url, settings.region_name)
    async with GenesysClient(quick, transport=transport) as client:
        started = time.monotonic()
        try:
            await client.tokens.token()
        except AuthError as exc:
            report.steps.append(
                CheckStep(
                    "credentials",
                    False,
                    f"{exc.message}. If the id and secret are right, the OAuth client may live "
                    "in another region: unset GENESYS_REGION/GENESYS_API_HOST to discover it.",
                )
            )
            return report
        except GenesysError as exc:
            report.steps.append(
                CheckStep(
                    "login host",
                    False,
                    f"cannot get a token from {settings.login_base_url}: {exc.message} "
                    "(network, proxy or wrong region host?)",
                )
            )
            return report
        report.steps.append(
            CheckStep(
                "credentials",
                True,
                f"token obtained from {settings.login_base_url} "
                f"in {time.monotonic() - started:.2f}s",
            )
        )
        report.steps.append(await _whoami(client))
        for name, method, path, params, permission in _PROBES:
            report.steps.append(await _probe(client, name, method, path, params, permission))
        budget = client.pacer.budget_per_minute
        detail = f"pacing to {budget} requests/minute"
        if budget < settings.rate_limit_per_minute:
            detail += (
                f" (the platform allows {budget}, less than the configured "
                f"{settings.rate_limit_per_minute}: lower GENESYS_RATE_LIMIT_PER_MINUTE)"
            )
        report.steps.append(CheckStep("rate budget", True, detail))
    needs = ", ".join(WRITE_PERMISSIONS)
    report.steps.append(
        CheckStep("write permissions", None, f"not verified (read-only check); needs {needs}")
    )
    return report


async def _whoami(client: GenesysClient) -> CheckStep:
    try:
        body = (await client.request("GET", "/api/v2/tokens/me")).json()
    except GenesysError as exc:
        # Informational only: the sync does not need this endpoint.
        return CheckStep("organization", None, f"not shown ({_short(exc)})")
    org = body.get("organization") or body.get("homeOrganization") or {}
    name = org.get("name") or org.get("id") or "unknown"
    oauth = (body.get("OAuthClient") or {}).get("name")
    return CheckStep(
        "organization", True, f"{name}" + (f" (OAuth client {oauth!r})" if oauth else "")
    )


async def _probe(
    client: GenesysClient,
    name: str,
    method: str,
    path: str,
    params: dict[str, str | int],
    permission: str,
) -> CheckStep:
    try:
        await client.request(method, path, params=params)
    except PermissionDeniedError as exc:
        return CheckStep(
            name,
            False,
            f"permission denied ({_short(exc)}); the OAuth client's role likely lacks {permission}",
        )
    except (RetryableError, TransportError) as exc:
        return CheckStep(name, False, f"no answer within the retry bounds ({_short(exc)})")
    except GenesysError as exc:
        return CheckStep(name, False, _short(exc))
    return CheckStep(name, True, f"{method} {path.removeprefix('/api/v2')} answered")


def _short(exc: GenesysError) -> str:
    text = exc.message
    return text if len(text) <= 240 else text[:237] + "..."
