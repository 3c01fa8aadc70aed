"""Fixtures for every test package: databases on SQLite and PostgreSQL, Dagster instances on
either, and a Redis server.

Where the servers come from
- `CRM_GENESYS_TEST_POSTGRES_URL` (a SQLAlchemy URL of a database on a server where its user may
  CREATE DATABASE, e.g. `postgresql+psycopg://postgres@127.0.0.1:5432/postgres`) and
  `CRM_GENESYS_TEST_REDIS_URL` (`redis://127.0.0.1:6379/0`): servers someone else runs; `.ci/run`
  starts both (`python3 -m deploy.services start DIR`) and sets these.
- Otherwise each test process (each xdist worker) starts its own private server the first time a
  test needs it (`deploy.services.LocalPostgres`: initdb + pg_ctl from
  /usr/lib/postgresql/*/bin, as the `postgres` user when we are root; `LocalRedis`:
  redis-server), and stops it at the end of the session.
- Neither possible (binaries missing): the tests that need the server are skipped with the reason,
  or FAIL with it when `CRM_GENESYS_REQUIRE_SERVICES=1` (CI sets it, so a missing service can
  never pass as a skip).

Fixtures
- `db_backend`: "sqlite" or "postgresql"; parametrized, so any test using a fixture below that
  depends on it runs once per backend (test ids `[sqlite]`, `[postgresql]`). Pin one backend
  with `@pytest.mark.parametrize("db_backend", ["postgresql"])`.
- `new_db_url()`: a callable; each call gives the SQLAlchemy URL of a fresh, empty database on
  `db_backend` (a file under tmp_path, or CREATE DATABASE on the server, dropped after the test).
  For property tests that need a clean database per example.
- `db_url`: one such URL (`new_db_url()`), e.g. `SyncStateStore(db_url)`.
- `postgres_server`: the session's PostgreSQL server (`PostgresServer`: `.url`, `.database()`,
  `.create_database()`, `.drop_database()`); `postgres_url`: a fresh database on it, whatever
  `db_backend`.
- `make_instance(overrides=None)`: a context manager giving a Dagster instance
  (`dg.instance_for_test`) whose run, event-log and schedule storage are on `db_backend`:
  SQLite files under a temporary DAGSTER_HOME, or dagster-postgres on a fresh database (copied
  from a template that already holds Dagster's schema, so it costs a CREATE DATABASE, not
  migrations). `overrides` is merged into the instance config (`concurrency`, `run_monitoring`,
  ...); `instance` is `make_instance()` entered for the test. `postgres_instance` is the same on
  PostgreSQL whatever `db_backend`.
- `redis_url`: `redis://127.0.0.1:PORT/0` of the session's Redis server (FLUSHALL is the test's
  business; the server has no persistence).

Example: `def test_sync_on_both(make_instance, db_url): with make_instance() as instance: ...`
runs twice: instance and sync state on SQLite, then both on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest
import sqlalchemy as sa

from deploy.services import (
    POSTGRES_URL_ENV,
    REDIS_URL_ENV,
    LocalPostgres,
    LocalRedis,
    ServiceUnavailable,
    redis_ping,
)

REQUIRE_SERVICES_ENV = "CRM_GENESYS_REQUIRE_SERVICES"
# dagster-postgres needs psycopg2 (see deploy.supervise.dagster_url); the sync state uses psycopg 3.
DAGSTER_DRIVER = "psycopg2"
DB_BACKENDS = ("sqlite", "postgresql")


def services_required() -> bool:
    """Whether a missing service fails the test instead of skipping it."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "") == "1"


def service_unavailable(reason: str) -> None:
    """Skip the test with `reason`, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server reachable at SQLAlchemy URL `url` (a maintenance database)."""

    url: str

    def _admin(self) -> sa.Engine:
        return sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)

    def database_url(self, name: str, *, driver: str | None = None) -> str:
        """The URL of database `name` on this server, with `driver` when given
        (`"psycopg2"` for dagster-postgres)."""
        url = sa.make_url(self.url).set(database=name)
        if driver is not None:
            url = url.set(drivername="postgresql+" + driver if driver else "postgresql")
        return url.render_as_string(hide_password=False)

    def create_database(self, *, template: str = "template0", prefix: str = "t") -> str:
        """CREATE DATABASE with a unique name (copied from `template`); returns the name."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        engine = self._admin()
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            engine.dispose()
        return name

    def drop_database(self, name: str) -> None:
        """DROP DATABASE, closing whatever sessions are still connected to it."""
        engine = self._admin()
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def database(self, *, template: str = "template0") -> Iterator[str]:
        """A fresh database for the block; its name. Dropped afterwards."""
        name = self.create_database(template=template)
        try:
            yield name
        finally:
            self.drop_database(name)


def _private_dir(prefix: str) -> Path:
    # Not under pytest's tmp_path: its parents are private to root, and PostgreSQL runs as another
    # user when we are root.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (see the module docstring)."""
    given = os.environ.get(POSTGRES_URL_ENV)
    if given:
        server = PostgresServer(given)
        try:
            server._admin().connect().close()
        except sa.exc.OperationalError as exc:
            service_unavailable(f"{POSTGRES_URL_ENV} does not answer: {exc.orig}")
        yield server
        return
    root = _private_dir("crm-genesys-test-pg-")
    try:
        local = LocalPostgres(root, durable=False).start()
    except ServiceUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        service_unavailable(f"no PostgreSQL for the tests: {exc}")
    try:
        yield PostgresServer(local.url())
    finally:
        local.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL (psycopg 3) of a fresh, empty database, dropped after the test."""
    with postgres_server.database() as name:
        yield postgres_server.database_url(name)


@pytest.fixture(params=DB_BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this run of the test: "sqlite" or "postgresql"."""
    return str(request.param)


@pytest.fixture
def new_db_url(
    db_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """Each call: the SQLAlchemy URL of a fresh, empty database on `db_backend`."""
    created: list[str] = []
    server = request.getfixturevalue("postgres_server") if db_backend == "postgresql" else None

    def new() -> str:
        if server is None:
            path = tmp_path / f"db-{uuid.uuid4().hex[:12]}.sqlite"
            return f"sqlite:///{path}"
        name = server.create_database()
        created.append(name)
        return server.database_url(name)

    yield new
    if server is not None:
        for name in created:
            server.drop_database(name)


@pytest.fixture
def db_url(new_db_url: Callable[[], str]) -> str:
    """The SQLAlchemy URL of a fresh, empty database on `db_backend`."""
    return new_db_url()


@pytest.fixture(scope="session")
def dagster_template(postgres_server: PostgresServer) -> Iterator[str]:
    """A database holding Dagster's (dagster-postgres) schema, to copy per test."""
    from dagster_postgres import DagsterPostgresStorage

    name = postgres_server.create_database(prefix="dagster_template")
    storage = DagsterPostgresStorage(postgres_server.database_url(name, driver=DAGSTER_DRIVER))
    for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
        part.dispose()
    try:
        yield name
    finally:
        postgres_server.drop_database(name)


def postgres_storage(url: str) -> dict[str, Any]:
    """The `storage` section of a dagster.yaml putting runs, events and schedules at `url`."""
    return {"storage": {"postgres": {"postgres_url": url}}}


InstanceFactory = Callable[..., contextlib.AbstractContextManager[dg.DagsterInstance]]


def _instance_factory(backend: str, request: pytest.FixtureRequest) -> Iterator[InstanceFactory]:
    stack = contextlib.ExitStack()
    if backend == "postgresql":
        # Resolved now, so that a missing server skips (or fails) the test at setup.
        server: PostgresServer = request.getfixturevalue("postgres_server")
        template: str = request.getfixturevalue("dagster_template")

    @contextlib.contextmanager
    def make(overrides: Mapping[str, Any] | None = None) -> Iterator[dg.DagsterInstance]:
        config: dict[str, Any] = {}
        if backend == "postgresql":
            name = stack.enter_context(server.database(template=template))
            config.update(postgres_storage(server.database_url(name, driver=DAGSTER_DRIVER)))
        config.update(overrides or {})
        with dg.instance_for_test(overrides=config) as instance:
            yield instance

    with stack:
        yield make


@pytest.fixture
def make_instance(db_backend: str, request: pytest.FixtureRequest) -> Iterator[InstanceFactory]:
    """`make_instance(overrides=None)`: a context manager, a Dagster instance on `db_backend`."""
    yield from _instance_factory(db_backend, request)


@pytest.fixture
def instance(make_instance: InstanceFactory) -> Iterator[dg.DagsterInstance]:
    """A Dagster test instance on `db_backend`."""
    with make_instance() as inst:
        yield inst


@pytest.fixture
def make_postgres_instance(request: pytest.FixtureRequest) -> Iterator[InstanceFactory]:
    """`make_postgres_instance(overrides=None)`: a Dagster instance on dagster-postgres."""
    yield from _instance_factory("postgresql", request)


@pytest.fixture
def postgres_instance(make_postgres_instance: InstanceFactory) -> Iterator[dg.DagsterInstance]:
    """A Dagster test instance whose storage is on a fresh PostgreSQL database."""
    with make_postgres_instance() as inst:
        yield inst


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """`redis://127.0.0.1:PORT/0` of the session's Redis server (see the module docstring)."""
    given = os.environ.get(REDIS_URL_ENV)
    if given:
        where = urlsplit(given)
        if not redis_ping(where.port or 6379, where.hostname or "127.0.0.1"):
            service_unavailable(f"{REDIS_URL_ENV} does not answer PING")
        yield given
        return
    root = _private_dir("crm-genesys-test-redis-")
    try:
        local = LocalRedis(root).start()
    except ServiceUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        service_unavailable(f"no Redis for the tests: {exc}")
    try:
        yield local.url()
    finally:
        local.stop()
        shutil.rmtree(root, ignore_errors=True)
