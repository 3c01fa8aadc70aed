"""Shared helpers: an in-process emulator with a manual clock, a client bound to it, and an
emulator server in a subprocess on a free port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from crm_genesys.emulator import (
    EmulatorApp,
    EmulatorConfig,
    ManualClock,
    RealismConfig,
    create_app,
)
from crm_genesys_tests.emulator_server import Server, admin_headers, start_server

T = TypeVar("T")
API = "/api/v2/externalcontacts"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Org:
    """An in-process emulator, its clock, and an authenticated async client factory."""

    app: EmulatorApp
    clock: ManualClock

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://emulator"
        )

    def admin(self) -> httpx.AsyncClient:
        """A client of the admin endpoints (it carries the default admin token)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://emulator",
            headers=admin_headers(),
        )


def make_org(**config: Any) -> Org:
    clock = config.pop("clock", None) or ManualClock()
    return Org(create_app(EmulatorConfig(clock=clock, **config)), clock)


def realistic(**knobs: Any) -> RealismConfig:
    """The `realistic` profile, without interaction contacts unless asked (tests count)."""
    return RealismConfig.profile("realistic", **{"interaction_contacts": 0, **knobs})


async def session(org: Org) -> tuple[httpx.AsyncClient, dict[str, str], str]:
    """A client of `org`, the Authorization header of a fresh token, and a new source's id."""
    client = org.client()
    headers = await token(client)
    return client, headers, await new_source(client, headers)


async def token(
    client: httpx.AsyncClient, cid: str = "demo-client", secret: str = "demo-secret"
) -> dict[str, str]:
    """Authorization header of a fresh token."""
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(cid, secret)
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def new_source(client: httpx.AsyncClient, headers: dict[str, str], name: str = "crm") -> str:
    response = await client.post(
        f"{API}/externalsources", json={"name": name, "active": True}, headers=headers
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def contact(source_id: str, key: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "firstName": f"First {key}",
        "lastName": "Last",
        "externalIds": [{"externalSource": {"id": source_id}, "value": key}],
    }
    body.update(fields)
    return body


Session = Callable[[httpx.AsyncClient, dict[str, str], str], Awaitable[None]]


@pytest.fixture
def org() -> Org:
    return make_org()


def stop_server(server: Server) -> int:
    return server.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = start_server("--data", str(tmp_path))
    yield started
    stop_server(started)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
