"""Database engine, session factory and the unit of work; nothing connects until first use."""

from __future__ import annotations

import logging
import os
import socket
import threading
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
# Every wait on the database is bounded, so that a database that hangs (a stuck server, a
# proxy that stops relaying) turns into DB_UNAVAILABLE within seconds, and the webhook spools
# the text and answers Twilio well within its 15 s. Server side, per transaction (SET LOCAL,
# which PgBouncer's transaction pooling keeps): a statement, and a wait for a row lock. Client
# side: the connect, a pool checkout, and every round trip (see _Watchdog).
POSTGRES_CONNECT_TIMEOUT_S = 2  # libpq's least
STATEMENT_TIMEOUT_MS = 3000
LOCK_TIMEOUT_MS = 2000
POOL_TIMEOUT_S = 3.0
CLIENT_GRACE_S = 1.0  # a round trip may outlive statement_timeout by this much, then is cut
PING_TIMEOUT_S = 2.0


def normalize_url(url: str) -> str:
    """Point PostgreSQL URLs at the psycopg 3 driver (`postgres://` is what many hosts give)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, sqlite_foreign_keys: bool = True,
                statement_timeout_ms: int = 0, lock_timeout_ms: int = 0,
                **kwargs: Any) -> Engine:
    """An engine for SQLite or PostgreSQL; creating it does not connect.

    PostgreSQL: connect and pool checkout are bounded. With a statement_timeout (the web and
    the worker give theirs, bounds_from_config; migrations, seeding and benchmarks run
    without), each transaction starts with it and with
    lock_timeout, and every round trip is bounded too (the server's statement_timeout cannot
    fire for a statement that never reached it).

    SQLite: WAL, busy_timeout, foreign keys on (migrations turn them off, as SQLite's table
    rebuilds require), and every transaction starts with BEGIN IMMEDIATE so that a
    read-then-write unit of work holds the write lock from its first statement: without it,
    two processes that read and then write get SQLITE_BUSY instead of waiting.

    Bound parameters (phone numbers, answers) are left out of SQLAlchemy's error messages, so
    a failed statement's traceback in the logs shows the SQL and not the patient's data.
    """
    kwargs.setdefault("hide_parameters", True)
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
        if kwargs.get("poolclass") is None:
            kwargs.setdefault("pool_timeout", POOL_TIMEOUT_S)
        engine = sa.create_engine(sa_url, connect_args=connect_args, **kwargs)
        _configure_postgres(engine, statement_timeout_ms=int(statement_timeout_ms),
                            lock_timeout_ms=int(lock_timeout_ms))
        return engine
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


def _configure_postgres(engine: Engine, *, statement_timeout_ms: int,
                        lock_timeout_ms: int) -> None:
    if statement_timeout_ms or lock_timeout_ms:
        # One round trip: set_config(..., true) is SET LOCAL, gone at commit or rollback.
        bounds = (f"SELECT set_config('statement_timeout', '{statement_timeout_ms}', true), "
                  f"set_config('lock_timeout', '{lock_timeout_ms}', true)")

        @event.listens_for(engine, "begin")
        def _on_begin(connection):
            connection.exec_driver_sql(bounds)

    if not statement_timeout_ms:
        return
    limit = statement_timeout_ms / 1000 + CLIENT_GRACE_S
    dialect = engine.dialect
    # Every call that waits for the server: statements, pre-ping, commit, rollback (also the
    # pool's reset on return). psycopg has no client-side timeout for them.
    for name in ("do_execute", "do_executemany", "do_execute_no_params", "do_commit",
                 "do_rollback"):
        setattr(dialect, name, _WATCHDOG.bounded(getattr(dialect, name), limit))
    # A pre-ping is one trivial round trip: a connection that cannot answer it within this is
    # dropped sooner, and the checkout tries a new one (bounded by connect_timeout).
    dialect.do_ping = _WATCHDOG.bounded(dialect.do_ping, min(limit, PING_TIMEOUT_S))


class _Watchdog:
    """Cuts the socket of a database round trip that outlives its limit.

    A server that hangs, or a network path that stops relaying without refusing, leaves
    psycopg waiting on a socket forever. One thread per process watches the calls in flight;
    at a call's limit it shuts the socket down, and the waiting call fails at once with
    psycopg's OperationalError ("server closed the connection"), which SQLAlchemy treats as a
    lost connection (invalidated, never reused) and the webhook as "database away".
    """

    POLL_S = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int]] = {}
        self._wake = threading.Event()
        self._pid: int | None = None
        self._count = 0
        self.cut = 0  # how many round trips this process cut (for tests and logs)

    def bounded(self, call: Callable[..., T], limit: float) -> Callable[..., T]:
        def bounded_call(target, *args, **kwargs):
            token = self.arm(_fileno(target), limit)
            try:
                return call(target, *args, **kwargs)
            finally:
                self.disarm(token)

        bounded_call.__wrapped__ = call  # type: ignore[attr-defined]
        return bounded_call

    def arm(self, fd: int | None, limit: float) -> int | None:
        if fd is None or fd < 0:
            return None
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: its own thread
                self._pid = os.getpid()
                self._armed.clear()
                threading.Thread(target=self._run, name="db-watchdog", daemon=True).start()
            self._count += 1
            token = self._count
            self._armed[token] = (time.monotonic() + limit, fd)
        self._wake.set()
        return token

    def disarm(self, token: int | None) -> None:
        if token is not None:
            # Under the lock: a socket being cut is not closed (and its number reused) meanwhile.
            with self._lock:
                self._armed.pop(token, None)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.POLL_S)
            now = time.monotonic()
            with self._lock:
                for token, (deadline, fd) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        self._cut(fd)
                if not self._armed:
                    self._wake.clear()

    def _cut(self, fd: int) -> None:
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return  # already closed
        self.cut += 1
        log.error("database round trip cut after its time limit (the database is not "
                  "answering)")


_WATCHDOG = _Watchdog()


def _fileno(target: Any) -> int | None:
    """The socket of a DBAPI connection, a pool's proxy of one, or a cursor."""
    connection = getattr(target, "dbapi_connection", None) or target
    connection = getattr(connection, "connection", connection)  # a cursor's connection
    connection = getattr(connection, "dbapi_connection", None) or connection
    try:
        return connection.fileno()
    except Exception:  # closed, or not a psycopg connection
        return None


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


def bounds_from_config(config) -> dict[str, Any]:
    """make_engine's time limits as configured (DB_STATEMENT_TIMEOUT_MS, DB_LOCK_TIMEOUT_MS,
    DB_POOL_TIMEOUT_S), defaults where a setting is absent."""
    bounds: dict[str, Any] = {
        "statement_timeout_ms": config.get("DB_STATEMENT_TIMEOUT_MS", STATEMENT_TIMEOUT_MS),
        "lock_timeout_ms": config.get("DB_LOCK_TIMEOUT_MS", LOCK_TIMEOUT_MS)}
    if make_url(normalize_url(config["DATABASE_URL"])).get_backend_name() == "postgresql":
        bounds["pool_timeout"] = config.get("DB_POOL_TIMEOUT_S", POOL_TIMEOUT_S)
    return bounds


def init_app(app: Flask) -> Database:
    db = Database(app.config["DATABASE_URL"], **bounds_from_config(app.config))
    app.extensions["db"] = db
    return db


def get_db(app: Flask | None = None) -> Database:
    """The Database of the given app, or of the current app."""
    return (app or current_app).extensions["db"]
