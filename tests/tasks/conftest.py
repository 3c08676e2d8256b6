"""Fixtures of the task tests: a real Celery worker (in this process, thread pool) on the local
Redis and PostgreSQL, the real `twilio` client on a fake HTTP client, and a clock moved through
`TRIAGE_FAKE_NOW` (read by service.clock in the webhook and in the worker alike).

Redis isolation: database REDIS_DB of the shared server, every key under a prefix unique to
this run (`global_keyprefix`), deleted at the end. Nothing is flushed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from service.clock import FAKE_NOW
from service.config import load_config
from service.messaging.senders import TwilioSender
from tests.conftest import _truncate_all
from tests.support.phones import PUBLIC_BASE_URL, WEBHOOK_CONFIG
from tests.support.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
CLINIC_TZ = "America/New_York"


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"triage-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str:
    """Task tests run on PostgreSQL (the subprocess test on SQLite makes its own file)."""
    url, engine = request.getfixturevalue("_postgres_migrated")
    _truncate_all(engine)
    return url


@pytest.fixture
def app_config(app_config: dict[str, Any], redis_prefix: str) -> dict[str, Any]:
    # No REDIS_URL for the web: its "send now" message would run tasks behind a test's back
    # (test_oncall turns it on where that is what is tested).
    return {**app_config, **WEBHOOK_CONFIG, "REDIS_KEY_PREFIX": redis_prefix}


@dataclass
class WorkerEnv:
    app: Any
    api: FakeTwilio
    config: dict[str, Any]
    prefix: str
    redis: redis.Redis

    def idle(self) -> bool:
        from celery.worker import state

        return (self.redis.llen(f"{self.prefix}celery") == 0 and not state.active_requests
                and not state.reserved_requests)

    def wait_idle(self, timeout: float = 60) -> None:
        deadline, quiet = time.monotonic() + timeout, 0
        while quiet < 3:
            quiet = quiet + 1 if self.idle() else 0
            if time.monotonic() > deadline:
                raise AssertionError("the worker did not go idle")
            time.sleep(0.05)


@pytest.fixture(scope="package")
def worker_env(_postgres_migrated, redis_prefix, tmp_path_factory) -> Iterator[WorkerEnv]:
    from celery.contrib.testing.worker import start_worker

    from tasks.celery_app import make_celery

    url, _engine = _postgres_migrated
    tmp = tmp_path_factory.mktemp("worker")
    config = load_config({
        "DATABASE_URL": url, "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": redis_prefix,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL, "SEND_RATE_PER_SECOND": 50, "SECRET_KEY": "x",
        "BROKER_DIR": str(tmp / "broker"), "SPOOL_DIR": str(tmp / "spool"),
    }, environ={"ENV": "development"})
    api = FakeTwilio()
    sender = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, http_client=api.http_client())
    app = make_celery(
        config, sender=sender,
        result_backend=REDIS_URL,
        result_backend_transport_options={"global_keyprefix": redis_prefix},
        task_ignore_result=False, result_expires=600,
        worker_hijack_root_logger=False)
    client = redis.Redis.from_url(REDIS_URL)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                      shutdown_timeout=30, loglevel="WARNING"):
        env = WorkerEnv(app, api, config, redis_prefix, client)
        yield env
        env.wait_idle()
    app.triage.db.dispose()
    client.close()


@pytest.fixture
def worker(worker_env: WorkerEnv) -> Iterator[WorkerEnv]:
    """The worker, idle, with a fresh fake Twilio; waits for it to go idle again after."""
    worker_env.wait_idle()
    worker_env.api.reset()
    yield worker_env
    worker_env.wait_idle()


class Clock:
    """The service clock, frozen at `now` (TRIAGE_FAKE_NOW) for the webhook and the worker."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._mp = monkeypatch
        self.now: datetime | None = None

    def set(self, when: datetime) -> datetime:
        assert when.tzinfo is not None
        self.now = when
        self._mp.setenv(FAKE_NOW, when.isoformat())
        return when

    def local(self, year, month, day, hour, minute=0, tz: str = CLINIC_TZ) -> datetime:
        return self.set(datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)))

    def advance(self, **delta) -> datetime:
        return self.set(self.now + timedelta(**delta))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)
