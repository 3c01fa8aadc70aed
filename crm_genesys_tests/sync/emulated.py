"""The real client against the real emulator, in-process (httpx.ASGITransport) or over HTTP."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from crm_genesys.emulator import EmulatorConfig, create_app
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.settings import GenesysSettings

CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-secret"  # the emulator's documented demo credential


@dataclass
class InProcess:
    """An emulated org and a factory of real clients talking to it in-process."""

    config: EmulatorConfig

    def __post_init__(self) -> None:
        self.app = create_app(self.config)
        self.emulator = self.app.state.emulator

    def client(self, **overrides: Any) -> GenesysClient:
        overrides.setdefault("rate_limit_per_minute", self.config.rate_limit_per_minute)
        overrides.setdefault("retry_initial_delay", 0.01)
        overrides.setdefault("retry_max_delay", 0.05)
        settings = GenesysSettings.for_base_url(
            "http://emulator.test", CLIENT_ID, CLIENT_SECRET, **overrides
        )
        return GenesysClient(settings, transport=httpx.ASGITransport(app=self.app))

    def api_requests(self) -> Counter[str]:
        """Count of logged API requests by path tail (`bulk/contacts/add`, ...)."""
        counts: Counter[str] = Counter()
        for entry in self.emulator.requests():
            path = entry.path
            if "/externalcontacts/" in path:
                counts[path.split("/externalcontacts/", 1)[1]] += 1
        return counts


def contacts_by_external_id(contacts: list[dict[str, Any]], source_id: str) -> dict[str, list]:
    out: dict[str, list[dict[str, Any]]] = {}
    for contact in contacts:
        for ext in contact.get("externalIds") or []:
            if (ext.get("externalSource") or {}).get("id") == source_id:
                out.setdefault(ext["value"], []).append(contact)
    return out


def genesys_env(url: str, **tuning: int) -> dict[str, str]:
    """Environment for a child process's `GenesysSettings.from_env()`."""
    env = {
        **os.environ,
        "GENESYS_BASE_URL": url,
        "GENESYS_CLIENT_ID": CLIENT_ID,
        "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
    }
    for key, value in tuning.items():
        env[f"GENESYS_{key.upper()}"] = str(value)
    return env
