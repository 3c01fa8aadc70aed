"""The private PostgreSQL and Redis servers (deploy/services.py) and the fixtures built on them."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from crm_genesys_tests.conftest import REQUIRE_SERVICES_ENV, service_unavailable
from deploy.services import (
    LocalPostgres,
    LocalRedis,
    ServiceUnavailable,
    postgres_bin_dir,
    redis_ping,
    redis_server_bin,
)


@pytest.fixture
def server_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="crm-genesys-test-services-"))
    path.chmod(0o755)  # PostgreSQL runs as another user when we are root
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_redis_fixture_is_a_real_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"crm-genesys-test:{uuid.uuid4().hex}"
    try:
        client.set(key, "window", ex=60)
        assert client.get(key) == b"window"
    finally:
        client.delete(key)
        client.close()


def test_local_servers_answer_until_stopped(server_dir: Path) -> None:
    if postgres_bin_dir() is None or redis_server_bin() is None:
        service_unavailable("PostgreSQL or Redis binaries not installed")
    postgres = LocalPostgres(server_dir / "pg", durable=False)
    broker = LocalRedis(server_dir / "redis")
    try:
        try:
            postgres.start()
            broker.start()
        except ServiceUnavailable as exc:
            service_unavailable(str(exc))
        engine = sa.create_engine(postgres.url(), poolclass=sa.NullPool)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_setting('listen_addresses')").scalar() == (
                "127.0.0.1"
            )
        engine.dispose()
        assert redis_ping(broker.port)
        # Starting what runs already is a no-op.
        assert postgres.start().is_running() and broker.start().port == broker.port
    finally:
        postgres.stop()
        broker.stop()
    assert not postgres.is_running()
    assert not redis_ping(broker.port)
    postgres.stop()  # stopping a stopped server is a no-op
    broker.stop()


def test_a_missing_service_skips_unless_services_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(REQUIRE_SERVICES_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        service_unavailable("no server")
    monkeypatch.setenv(REQUIRE_SERVICES_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="no server"):
        service_unavailable("no server")
