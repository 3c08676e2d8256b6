"""Fixtures for the multi-process tests: a fresh PostgreSQL database, a private redis-server,
the fake Twilio server, and a stack of product processes that is always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.store import make_engine, migrate
from tests.e2e.harness import RedisServer, Stack
from tests.support.twilio import FakeTwilio


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def pg_url(postgres_server) -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own, dropped afterwards."""
    url = postgres_server.create_database()
    migrate.upgrade(url)
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def pg_engine(pg_url: str):
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    """The one fake Twilio, served over HTTP for the product's processes."""
    with FakeTwilio() as served:
        yield served


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def make_stack(request, pg_url, private_redis, fake, tmp_path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**kw) -> Stack:
        stack = Stack(database_url=pg_url, redis=private_redis, fake_url=fake.url,
                      account_sid=fake.account_sid, auth_token=fake.auth_token,
                      log_dir=tmp_path, **kw)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    if request.node.stash.get(_FAILED, False):
        for stack in stacks:
            print(stack.logs(60))
