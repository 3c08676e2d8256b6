"""Shared fixtures: an app on a migrated database, on SQLite and on PostgreSQL.

`database_url` is parametrized over both backends, so every test that uses it (or `app`,
`client`, `runner`, `db`, `make_clinic`) runs twice; the PostgreSQL runs are marked
`postgres`. Each backend is migrated once per session: SQLite tests get a copy of a migrated
file, PostgreSQL tests a database whose tables were emptied before the test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import make_url

from service import create_app
from service.config import ENV_VARS
from service.store import Database, get_db, make_engine
from service.store.models import Base, Clinic

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


class PostgresServer:
    """Creates uniquely named databases on the test server and drops them at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"triage_test_{uuid.uuid4().hex[:8]}"
        self._count = itertools.count(1)
        self._created: list[str] = []

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def check(self) -> None:
        with self._admin() as connection:
            connection.execute("SELECT 1")

    def create_database(self) -> str:
        name = f"{self.prefix}_{next(self._count)}"
        with self._admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._created:
            self._created.remove(name)

    def drop_all(self) -> None:
        for name in list(self._created):
            self.drop_database(
                make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)
            )


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no DATABASE_URL, TWILIO_*, ... from the shell that runs them."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(POSTGRES_ADMIN_URL)
    problem = None
    try:
        server.check()
    except psycopg.Error as exc:
        problem = str(exc).splitlines()[0]
    if problem is not None:
        # CI guarantees a server: a missing one is a failure, never a skip.
        shown = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)
        pytest.fail(
            f"PostgreSQL at {shown} is unreachable ({problem}); start it, set "
            "TEST_POSTGRES_URL, or deselect with -m 'not postgres'",
            pytrace=False,
        )
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service.store import migrate

    path = tmp_path_factory.mktemp("sqlite-template") / "triage.db"
    migrate.upgrade(f"sqlite:///{path}")
    # Fold the write-ahead log into the file so that copying the one file copies everything.
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture(scope="session")
def _postgres_migrated(postgres_server: PostgresServer) -> Iterator[tuple[str, sa.Engine]]:
    from service.store import migrate

    url = postgres_server.create_database()
    migrate.upgrade(url)
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


def _truncate_all(engine: sa.Engine) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
        connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of its own for this test."""
    if request.param == "sqlite":
        path = tmp_path / "triage.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url, engine = request.getfixturevalue("_postgres_migrated")
    _truncate_all(engine)
    return url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (to test migrations)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def app_config(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """The test configuration; override this fixture in a module to change it."""
    return {
        "TESTING": True,
        "ENV": "development",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key",
        "BROKER_DIR": str(tmp_path / "broker"),
        "SPOOL_DIR": str(tmp_path / "spool"),
        "SIMULATOR_ENABLED": True,
    }


# On top of app_config, what ENV=production refuses to start without (service.config); such
# tests run on PostgreSQL only: @pytest.mark.parametrize("database_url", ["postgresql"],
# indirect=True). The Redis key prefix keeps anything enqueued out of other runs' queues.
PRODUCTION = {
    "ENV": "production", "SIMULATOR_ENABLED": False, "SECRET_KEY": "prod-secret-key-123",
    "PUBLIC_BASE_URL": "https://triage.example", "REDIS_URL": "redis://127.0.0.1:6379/0",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "prod-auth-token",
}


def production(**extra: Any) -> dict[str, Any]:
    """PRODUCTION with `extra` on top and a Redis key prefix of its own."""
    return {**PRODUCTION, "REDIS_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}:", **extra}


@pytest.fixture
def make_app(app_config: dict[str, Any]) -> Iterator[Callable[..., Flask]]:
    """make_app(**overrides) -> a new app on the test configuration; disposed after the test."""
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app({**app_config, **overrides})
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_db(app).dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture
def db(app: Flask) -> Database:
    return get_db(app)


@pytest.fixture
def make_clinic(db: Database) -> Callable[..., Clinic]:
    """make_clinic(**kw) -> a committed Clinic (detached, attributes loaded).

    Keywords are those of service.accounts.clinics.create_clinic; by default a unique name and one
    unique Twilio number (+1 617 555 01nn).
    """
    from service.accounts.clinics import create_clinic

    counter = itertools.count(100)

    def make(**kw: Any) -> Clinic:
        n = next(counter)
        kw.setdefault("name", f"Test Clinic {n}")
        kw.setdefault("numbers", [f"+1617555{n:04d}"])
        with db.transaction() as session:
            return create_clinic(session, **kw)

    return make
