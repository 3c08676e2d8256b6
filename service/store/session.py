"""Database engine, session factory and the unit of work; nothing connects until first use."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 5000
RACE_ATTEMPTS = 3  # Database.run: one run, and two more after lost unique-key races
POSTGRES_CONNECT_TIMEOUT_S = 5


def normalize_url(url: str) -> str:
    """Point PostgreSQL URLs at the psycopg 3 driver (`postgres://` is what many hosts give)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, sqlite_foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """An engine for SQLite or PostgreSQL; creating it does not connect.

    SQLite: WAL, busy_timeout, foreign keys on (migrations turn them off, as SQLite's table
    rebuilds require), and every transaction starts with BEGIN IMMEDIATE so that a
    read-then-write unit of work holds the write lock from its first statement: without it,
    two processes that read and then write get SQLITE_BUSY instead of waiting.
    """
    sa_url = make_url(normalize_url(url))
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        engine = sa.create_engine(sa_url, **kwargs)
        _configure_sqlite(engine, foreign_keys=sqlite_foreign_keys)
        return engine
    if backend == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}))
        if "connect_timeout" not in sa_url.query:
            connect_args.setdefault("connect_timeout", POSTGRES_CONNECT_TIMEOUT_S)
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(sa_url, connect_args=connect_args, **kwargs)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql:// URLs")


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine plus its session factory; one per app (and one per CLI or worker process)."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessionmaker: sessionmaker[Session] = sessionmaker(
            bind=self.engine, expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: commits when the block ends normally, rolls back on any error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def run(self, use_case: Callable[..., T], /, **kwargs: Any) -> T:
        """`use_case(session, **kwargs)` in its own unit of work. A lost race on a unique key
        (another transaction inserted the same row first: a duplicate webhook, a callback racing
        the sender) rolls everything back and runs again, up to RACE_ATTEMPTS times in all; the
        next run sees what the winner committed, so the use case has no second effect."""
        for attempt in range(RACE_ATTEMPTS):
            try:
                with self.transaction() as session:
                    return use_case(session, **kwargs)
            except IntegrityError:
                if attempt == RACE_ATTEMPTS - 1:
                    raise
                log.info("%s lost a race on a unique key; running it again",
                         getattr(use_case, "__name__", "a use case"))
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def ping(self) -> None:
        """Round-trip to the database; raises if it cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return (
            f"Database({make_url(normalize_url(self.url)).render_as_string(hide_password=True)!r})"
        )


def init_app(app: Flask) -> Database:
    db = Database(app.config["DATABASE_URL"])
    app.extensions["db"] = db
    return db


def get_db(app: Flask | None = None) -> Database:
    """The Database of the given app, or of the current app."""
    return (app or current_app).extensions["db"]
