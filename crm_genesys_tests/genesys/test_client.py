"""GenesysClient against the in-memory fake: bulk ops, matching, outcome-unknown, 413 split,
retries, token refresh, lookups, scan, external sources, schemas, secrets."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.errors import (
    AuthError,
    PermissionDeniedError,
    RateLimitedError,
    RequestRejectedError,
)
from crm_genesys.genesys.settings import GenesysSettings
from crm_genesys.genesys.types import ContactsApi
from crm_genesys_tests.genesys.fakes import (
    CLIENT_ID,
    CLIENT_SECRET,
    FakeGenesys,
    fail_nth,
    run_virtual,
)

T = TypeVar("T")
SOURCE = "src-1"
BASE = "https://api.mypurecloud.de"


def settings(**overrides: Any) -> GenesysSettings:
    return GenesysSettings.for_region("eu_central_1", CLIENT_ID, CLIENT_SECRET, **overrides)


def contact(key: str, **extra: Any) -> dict[str, Any]:
    return {
        "firstName": f"First {key}",
        "lastName": f"Last {key}",
        "externalIds": [{"externalSource": {"id": SOURCE}, "value": key}],
        **extra,
    }


def run(
    fake: FakeGenesys, body: Callable[[GenesysClient], Awaitable[T]], **overrides: Any
) -> tuple[T, GenesysClient]:
    """Run `body(client)` in virtual time against `fake` (which shares the virtual clock)."""
    holder: dict[str, GenesysClient] = {}

    async def main() -> T:
        loop = asyncio.get_running_loop()
        fake.clock = loop.time
        async with GenesysClient(
            settings(**overrides), transport=fake.transport(), clock=loop.time
        ) as client:
            holder["client"] = client
            return await body(client)

    result, _ = run_virtual(main)
    return result, holder["client"]


def bulk_paths(fake: FakeGenesys, op: str) -> list[httpx.Request]:
    return [r for r in fake.requests if r.url.path.endswith(f"/bulk/contacts/{op}")]


def test_bulk_add_update_remove_round_trip_with_shuffled_results() -> None:
    fake = FakeGenesys(shuffle=True)
    keys = [f"K{i:04d}" for i in range(250)]

    async def body(client: GenesysClient) -> None:
        api: ContactsApi = client  # the sink's contract, checked by mypy
        assert api is client
        added = await client.bulk_add([contact(k) for k in keys])
        assert [r.success for r in added] == [True] * len(keys)
        # Results come back shuffled; request order and ExternalId matching must hold.
        for key, result in zip(keys, added, strict=True):
            assert result.contact_id is not None
            assert fake.contacts[result.contact_id]["externalIds"][0]["value"] == key
        ids = [r.contact_id or "" for r in added]
        updates = [{**fake.contacts[i], "title": "Dr"} for i in ids[:120]]
        updated = await client.bulk_update(updates)
        assert [r.contact_id for r in updated] == ids[:120]
        assert all(r.success for r in updated)
        removed = await client.bulk_remove(ids[::2])
        assert [r.contact_id for r in removed] == ids[::2]
        assert all(r.success for r in removed)

    _, client = run(fake, body)
    assert len(fake.contacts) == 125
    assert len(bulk_paths(fake, "add")) == 3  # 250 in batches of 100
    meta = client.metrics.as_metadata()
    assert meta["genesys_contacts_added"] == 250
    assert meta["genesys_contacts_updated"] == 120
    assert meta["genesys_contacts_removed"] == 125
    assert meta["genesys_429s"] == 0
    elapsed = meta["genesys_elapsed_s"]
    assert elapsed > 0
    assert meta["genesys_contacts_per_s"] == pytest.approx((250 + 120 + 125) / elapsed, rel=0.01)


def test_item_failures_matched_by_error_indexes_and_keys() -> None:
    fake = FakeGenesys(shuffle=True)

    async def body(client: GenesysClient) -> None:
        entities = [contact(f"K{i}") for i in range(10)]
        # Nameless entities fail item by item; their error echoes the entity.
        for i in (2, 7):
            entities[i] = {"externalIds": entities[i]["externalIds"]}
        results = await client.bulk_add(entities)
        assert [r.success for r in results] == [i not in (2, 7) for i in range(10)]
        assert results[2].status == 400 and results[2].error_code == "invalid.value"
        assert not results[2].retryable and not results[2].outcome_unknown

        ids = [r.contact_id or "" for r in results if r.success]
        gone = ids[3]
        await client.bulk_remove([gone])
        updates = [{"id": i, "lastName": "X"} for i in ids]
        updated = await client.bulk_update(updates)
        # The vanished contact stays a 404 failure (the sink turns it into a create).
        assert [r.success for r in updated] == [i != gone for i in ids]
        assert updated[3].status == 404 and not updated[3].retryable
        assert updated[3].contact_id == gone
        # Removing what is already gone is a success.
        again = await client.bulk_remove([gone, ids[0]])
        assert [(r.success, r.status) for r in again] == [(True, 404), (True, 200)]

    run(fake, body)


def test_add_with_dropped_connection_is_not_resent_and_flagged_unknown() -> None:
    fake = FakeGenesys(
        process_first=True,
        faults=[
            fail_nth("/bulk/contacts/add", {1}, lambda: httpx.RemoteProtocolError("server hung up"))
        ],
    )

    async def body(client: GenesysClient) -> list[Any]:
        return await client.bulk_add([contact(f"K{i}") for i in range(5)])

    results, client = run(fake, body)
    assert len(bulk_paths(fake, "add")) == 1  # never resent
    assert all(r.outcome_unknown and not r.success and r.retryable for r in results)
    assert len(fake.contacts) == 5  # the platform did create them
    assert client.metrics.outcome_unknown == 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_add_after_ambiguous_5xx_is_not_resent(status: int) -> None:
    fake = FakeGenesys(
        faults=[fail_nth("/bulk/contacts/add", {1}, lambda: httpx.Response(status, json={}))]
    )
    results, _ = run(fake, lambda c: c.bulk_add([contact("A"), contact("B")]))
    assert len(bulk_paths(fake, "add")) == 1
    assert all(r.outcome_unknown and r.status == status for r in results)


@pytest.mark.parametrize(
    "outcome",
    [
        lambda: httpx.Response(503, json={"code": "service.unavailable"}),
        lambda: httpx.Response(429, headers={"Retry-After": "2"}, json={}),
        lambda: httpx.ConnectError("refused"),
    ],
)
def test_add_is_resent_when_the_request_never_reached_the_platform(
    outcome: Callable[[], Any],
) -> None:
    fake = FakeGenesys(faults=[fail_nth("/bulk/contacts/add", {1, 2}, outcome)])
    results, client = run(fake, lambda c: c.bulk_add([contact("A")]))
    assert len(bulk_paths(fake, "add")) == 3
    assert results[0].success and not results[0].outcome_unknown
    assert client.metrics.retries == 2
    assert len(fake.contacts) == 1


def test_update_is_retried_after_dropped_connection() -> None:
    fake = FakeGenesys(
        faults=[fail_nth("/bulk/contacts/update", {1}, lambda: httpx.ReadTimeout("slow"))]
    )

    async def body(client: GenesysClient) -> list[Any]:
        added = await client.bulk_add([contact("A")])
        return await client.bulk_update([{"id": added[0].contact_id, "lastName": "B"}])

    results, _ = run(fake, body)
    assert results[0].success
    assert len(bulk_paths(fake, "update")) == 2


def test_413_splits_the_batch_until_it_fits() -> None:
    fake = FakeGenesys(max_bytes=4_000)
    entities = [contact(f"K{i}", title="x" * 150) for i in range(40)]
    # The client's own byte budget is larger than the fake's, so only 413s can split.
    results, client = run(fake, lambda c: c.bulk_add(entities), max_request_bytes=512_000)
    assert all(r.success for r in results)
    assert len(fake.contacts) == 40
    assert client.metrics.batch_splits > 0
    assert all(len(r.content) <= 4_000 for r in bulk_paths(fake, "add")[-3:])


def test_a_single_entity_too_large_fails_alone() -> None:
    fake = FakeGenesys(max_bytes=2_000)
    entities = [contact("small"), contact("big", title="x" * 3_000), contact("small2")]
    results, _ = run(fake, lambda c: c.bulk_add(entities))
    assert [r.success for r in results] == [True, False, True]
    assert results[1].status == 413 and not results[1].retryable


def test_batches_are_cut_below_the_byte_limit_up_front() -> None:
    fake = FakeGenesys(max_bytes=10_000)
    entities = [contact(f"K{i}", title="y" * 200) for i in range(60)]
    results, client = run(fake, lambda c: c.bulk_add(entities), max_request_bytes=10_000)
    assert all(r.success for r in results)
    assert client.metrics.batch_splits == 0  # no 413 was needed
    assert all(len(r.content) <= 10_000 for r in bulk_paths(fake, "add"))


def test_retry_after_is_honoured_and_retries_stop_at_the_bound() -> None:
    fake = FakeGenesys(
        faults=[
            fail_nth(
                "/scan/contacts",
                set(range(1, 100)),
                lambda: httpx.Response(429, headers={"Retry-After": "7"}, json={}),
            )
        ]
    )
    times: list[float] = []

    async def body(client: GenesysClient) -> None:
        loop = asyncio.get_running_loop()
        fake.faults.insert(0, lambda request, n: times.append(loop.time()))  # type: ignore[func-returns-value]
        with pytest.raises(RateLimitedError) as caught:
            async for _ in client.scan_contacts():
                pass
        assert caught.value.retry_after == 7

    run(fake, body, retry_attempts=4, retry_max_elapsed=1000)
    assert len(times) == 4  # the attempts bound
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(7 <= g <= 9 for g in gaps), gaps


def test_retries_stop_at_the_elapsed_time_bound() -> None:
    fake = FakeGenesys(
        faults=[
            fail_nth(
                "/scan/contacts",
                set(range(1, 100)),
                lambda: httpx.Response(503, headers={"Retry-After": "10"}, json={}),
            )
        ]
    )

    async def body(client: GenesysClient) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(Exception, match="HTTP 503"):
            async for _ in client.scan_contacts():
                pass
        return loop.time() - start

    elapsed, _ = run(fake, body, retry_attempts=100, retry_max_elapsed=35)
    assert 20 <= elapsed <= 35
    assert fake.path_calls["/api/v2/externalcontacts/scan/contacts"] in (3, 4)


def test_token_refreshed_once_on_401_and_before_expiry() -> None:
    fake = FakeGenesys(token_lifetime=600)

    async def body(client: GenesysClient) -> None:
        await client.lookup_by_external_id(SOURCE, "nobody")
        assert fake.token_requests == 1
        fake.tokens.clear()  # the platform revokes every token
        assert await client.lookup_by_external_id(SOURCE, "nobody") is None
        assert fake.token_requests == 2
        # Margin 300 of lifetime 600: refreshed after 300 s, before the platform would 401.
        await asyncio.sleep(301)
        before_401s = sum(1 for r in fake.requests if r.url.path == "/oauth/token")
        await client.lookup_by_external_id(SOURCE, "nobody")
        assert fake.token_requests == before_401s + 1

    run(fake, body)
    statuses = [r for r in fake.requests if r.url.path.endswith("/identifierlookup/contacts")]
    assert len(statuses) == 4  # one 401 + three answered lookups


def test_single_refresh_under_concurrency() -> None:
    fake = FakeGenesys()

    async def body(client: GenesysClient) -> None:
        await client.get_contact("warm-up")
        fake.tokens.clear()
        results = await asyncio.gather(*(client.get_contact(f"c{i}") for i in range(30)))
        assert results == [None] * 30

    run(fake, body, max_in_flight=10)
    assert fake.token_requests == 2


def test_persistent_401_raises_auth_error_without_secret() -> None:
    fake = FakeGenesys(
        faults=[
            fail_nth(
                "/contacts/x", set(range(1, 10)), lambda: httpx.Response(401, json={"code": "bad"})
            )
        ]
    )
    with pytest.raises(AuthError) as caught:
        run(fake, lambda c: c.get_contact("x"))
    assert CLIENT_SECRET not in str(caught.value)
    assert "tok-" not in str(caught.value)


def test_wrong_credentials_raise_auth_error_and_never_leak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeGenesys()
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wrong = GenesysSettings.for_region("eu_central_1", CLIENT_ID, "wrong-secret-xyz")
        async with GenesysClient(wrong, transport=fake.transport(), clock=loop.time) as client:
            assert "wrong-secret-xyz" not in repr(client)
            assert "wrong-secret-xyz" not in repr(wrong)
            await client.get_contact("x")

    with pytest.raises(AuthError) as caught:
        run_virtual(main)
    assert "wrong-secret-xyz" not in str(caught.value)
    assert "wrong-secret-xyz" not in caplog.text


def test_no_secret_or_token_in_logs_exceptions_or_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeGenesys(
        faults=[
            fail_nth("/contacts/c1", {1, 2, 3, 4}, lambda: httpx.ReadTimeout("boom")),
            fail_nth("/contacts/c2", {1}, lambda: httpx.Response(403, json={"code": "x"})),
        ]
    )

    async def body(client: GenesysClient) -> list[str]:
        texts = []
        for cid in ("c1", "c2"):
            try:
                await client.get_contact(cid)
            except Exception as exc:
                texts.append(f"{exc!s} {exc!r}")
        return texts

    texts, client = run(fake, body, retry_attempts=3)
    tokens = list(fake.tokens)
    assert tokens
    everything = " ".join([*texts, caplog.text, repr(client.metrics.as_metadata())])
    for secret in [CLIENT_SECRET, *tokens]:
        assert secret not in everything
    assert len(texts) == 2


def test_permission_denied_is_raised_from_bulk() -> None:
    fake = FakeGenesys(
        faults=[
            fail_nth(
                "/bulk/contacts/add",
                {1},
                lambda: httpx.Response(403, json={"code": "missing.permissions"}),
            )
        ]
    )
    with pytest.raises(PermissionDeniedError):
        run(fake, lambda c: c.bulk_add([contact("A")]))


@pytest.mark.parametrize(
    ("op", "status", "code"),
    [
        ("add", 400, "invalid.value"),  # every split down to one entity is refused too
        ("update", 422, "unprocessable"),
        ("update", 409, "conflict"),
        ("remove", 404, "not.found"),  # the bulk path itself: no such endpoint
        ("fetch", 400, "invalid.value"),
    ],
)
def test_a_request_refused_as_a_whole_raises_with_the_platforms_reason(
    op: str, status: int, code: str
) -> None:
    suffix = "/bulk/contacts" if op == "fetch" else f"/bulk/contacts/{op}"
    refusal = {"code": code, "message": "division d-9 does not exist", "status": status}
    fake = FakeGenesys(
        faults=[fail_nth(suffix, set(range(1, 100)), lambda: httpx.Response(status, json=refusal))]
    )

    async def body(client: GenesysClient) -> object:
        added = await client.bulk_add([contact(f"K{i}") for i in range(4)]) if op != "add" else []
        ids = [r.contact_id or "" for r in added] or ["x1", "x2", "x3", "x4"]
        call = {
            "add": lambda: client.bulk_add([contact(f"K{i}") for i in range(4)]),
            "update": lambda: client.bulk_update([{"id": i, "lastName": "B"} for i in ids]),
            "remove": lambda: client.bulk_remove(ids),
            "fetch": lambda: client.bulk_fetch(ids),
        }[op]
        with pytest.raises(RequestRejectedError) as caught:
            await call()
        return caught.value

    error, client = run(fake, body)
    assert isinstance(error, RequestRejectedError)
    assert (error.status, error.code, error.operation) == (status, code, op)
    assert "division d-9 does not exist" in str(error)
    assert "Bearer" not in str(error) and CLIENT_SECRET not in str(error)
    refused = [r for r in fake.requests if r.url.path.endswith(suffix)]
    # 400/422 are split to isolate a bad entity (4 -> 2 + 2 -> 1 ...); 404/409 are not.
    assert len(refused) >= (3 if status in (400, 422) else 1)
    assert client.metrics.item_failures[op] == 0  # not turned into per-item failures


def test_bulk_fetch_reads_contacts_by_id() -> None:
    fake = FakeGenesys(shuffle=True)

    async def body(client: GenesysClient) -> list[Any]:
        added = await client.bulk_add([contact(f"K{i}") for i in range(3)])
        ids = [added[0].contact_id, "gone", added[2].contact_id]
        return await client.bulk_fetch([i or "" for i in ids])

    results, client = run(fake, body)
    assert [r.success for r in results] == [True, False, True]
    assert results[0].entity is not None and results[0].entity["lastName"] == "Last K0"
    assert results[2].entity is not None and results[2].entity["lastName"] == "Last K2"
    assert results[1].status == 404 and results[1].contact_id == "gone"
    assert client.metrics.contacts_fetched == 2
    assert client.metrics.contacts_written["add"] == 3  # a fetch is no write
    assert [r.url.path for r in fake.requests][-1] == "/api/v2/externalcontacts/bulk/contacts"


def test_lookup_get_and_scan() -> None:
    fake = FakeGenesys()

    async def body(client: GenesysClient) -> None:
        added = await client.bulk_add([contact(f"K{i:03d}") for i in range(450)])
        found = await client.lookup_by_external_id(SOURCE, "K007")
        assert found is not None and found["id"] == added[7].contact_id
        assert await client.lookup_by_external_id(SOURCE, "missing") is None
        assert await client.lookup_by_external_id("other-source", "K007") is None
        got = await client.get_contact(added[0].contact_id or "")
        assert got is not None and got["lastName"] == "Last K000"
        assert await client.get_contact("nope") is None
        scanned = [c["id"] async for c in client.scan_contacts()]
        assert sorted(scanned) == sorted(fake.contacts)

    run(fake, body)
    scans = [r for r in fake.requests if r.url.path.endswith("/scan/contacts")]
    assert len(scans) == 3  # 200 + 200 + 50
    assert scans[1].url.params["cursor"] == "200"


def test_ensure_external_source_exact_match_and_create_once() -> None:
    fake = FakeGenesys()
    fake.sources["s0"] = {"id": "s0", "name": "crm-genesys-old", "active": True}

    async def body(client: GenesysClient) -> None:
        first = await client.ensure_external_source("crm-genesys", "https://crm/{{externalId}}")
        assert first != "s0"  # a prefix match is not a match
        assert fake.sources[first]["linkConfiguration"]["uriTemplate"].startswith("https://crm")
        assert await client.ensure_external_source("crm-genesys") == first

    run(fake, body)

    async def again(client: GenesysClient) -> str:
        return await client.ensure_external_source("crm-genesys")

    second, _ = run(fake, again)
    assert len(fake.sources) == 2 and second in fake.sources


def test_ensure_external_source_resolves_unknown_create_by_listing() -> None:
    fake = FakeGenesys(
        process_first=True,
        faults=[fail_nth("/externalsources", {2}, lambda: httpx.ReadTimeout("lost"))],
    )
    source_id, _ = run(fake, lambda c: c.ensure_external_source("crm"))
    assert list(fake.sources) == [source_id]


def test_upsert_contact_schema_creates_then_updates_with_version() -> None:
    fake = FakeGenesys()
    schema = {"name": "crm", "enabled": True, "jsonSchema": {"properties": {}}}

    async def body(client: GenesysClient) -> None:
        created = await client.upsert_contact_schema(schema)
        assert created["version"] == 1
        updated = await client.upsert_contact_schema({**schema, "enabled": False})
        assert updated["version"] == 2 and updated["id"] == created["id"]

    run(fake, body)
    assert len(fake.schemas) == 1
